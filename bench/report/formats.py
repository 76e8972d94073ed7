"""The board as terminal text, CSV, Markdown and LaTeX.

CSV is for programs: the column keys ("fid", "fid delta"), every digit, yes/no, empty cells where a run has no
value. The other three are for people: the metric registry's titles (FID, IS, FD_DINOv2), each metric at the
precision papers print it, ✓/✗ (LaTeX: yes/no) and "-" where a run has no value. Run names and settings come
from users, so each format escapes them for itself (Markdown's `|`, `*` and inline HTML; LaTeX's specials).
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

import pandas as pd

from bench.metrics.registry import OUTPUT_TITLES, OUTPUTS
from bench.report.board import UNDEFINED_WHY, Board
from bench.report.compare import NOISE_RULE

COLUMN_TITLES = {"cfg_scale": "cfg", "paper fid": "paper FID", "fid vs paper": "FID − paper",
                 "num_samples": "samples"}
#: decimals each metric is read at (papers print FIDs to 2-3 decimals, IS to 2; KID is ~1e-3 in x1 units)
DECIMALS = {"inception_score": 2, "psnr": 2, "kid": 5, "precision": 3, "recall": 3,
            **{key: 5 for key, metric in OUTPUTS.items() if metric.name.startswith("kid")}}
DEFAULT_DECIMALS = 3
#: float columns that are counts or settings, shown as written ("300", not "300.000")
PLAIN = {"epochs", "image_size", "eval_size", "params_m", "top_k", "top_p", "tokens", "codebook_usage"}
#: the published columns shown beside the runs
PAPER_COLUMNS = ["model", "image_size", "eval_size", "epochs", "cfg_scale", "fid", "sfid", "inception_score",
                 "precision", "recall", "source"]


def metric_title(key: str) -> str:
    """The registry's title of a result key ("inception_score" -> "IS", "recall" -> "Recall"); other keys as
    they are."""
    return OUTPUT_TITLES.get(key, key)


def title(column: str) -> str:
    """How a board column is headed for people: "fid delta" -> "FID Δ", "inception_score" -> "IS"."""
    if column in COLUMN_TITLES:
        return COLUMN_TITLES[column]
    for suffix, shown in ((" delta", " Δ"), (" noise", " noise")):
        if column.endswith(suffix):
            return metric_title(column.removesuffix(suffix)) + shown
    return metric_title(column)


def decimals(column: str) -> int:
    metric = column.removesuffix(" delta").removeprefix("paper ").removesuffix(" vs paper")
    return DECIMALS.get(metric, DEFAULT_DECIMALS)


def cell(column: str, value: Any, yes: str = "✓", no: str = "✗") -> str:
    """One value as people read it; "-" for a missing one."""
    if value is None or (not isinstance(value, (str, bool)) and pd.isna(value)):
        return "-"
    if isinstance(value, bool):
        return (yes if value else "") if column == "baseline" else (yes if value else no)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if column == "cfg_scale":
            return f"{value:.2f}"
        if column in PLAIN:
            return f"{value:g}"
        text = f"{value:.{decimals(column)}f}"
        return f"+{text}" if (column.endswith((" delta", " vs paper")) and value > 0) else text
    return str(value)


def short(setting: str, value: Any) -> str:
    """A setting's value for a listing: digests cut to their first 12 hex digits, as the board's reference ids."""
    return str(value)[:12] if setting.endswith("sha256") and isinstance(value, str) else str(value)


def shown(board: pd.DataFrame, run: Any, column: str, value: Any, yes: str = "✓", no: str = "✗") -> str:
    """A board cell as people read it: "NaN" where the run computed the metric and it came out undefined
    (`Board.board.attrs["missing"]` says why), "-" where it has no value."""
    if board.attrs.get("missing", {}).get((run, column)) == UNDEFINED_WHY:
        return "NaN"
    return cell(column, value, yes, no)


def _cells(board: pd.DataFrame, yes: str = "✓", no: str = "✗") -> list[list[str]]:
    runs = board["run"] if "run" in board else [None] * len(board)
    return [[shown(board, run, c, v, yes, no) for c, v in zip(board.columns, row)]
            for run, row in zip(runs, board.itertuples(index=False))]


def _numeric(board: pd.DataFrame) -> list[bool]:
    return [pd.api.types.is_numeric_dtype(board[c]) and not pd.api.types.is_bool_dtype(board[c])
            for c in board.columns]


#: the terminal table's width; the CSV and HTML keep every column
TERMINAL_WIDTH = 120
#: columns the terminal leaves out first when the table is too wide, in this order (then the metrics, last first)
TERMINAL_DROPS = ("bench", "created", "paper source", "why not comparable", "reference", "generator", "baseline",
                  "num_samples", "fid vs paper")


def _text(board: pd.DataFrame) -> str:
    return pd.DataFrame(_cells(board), columns=[title(c) for c in board.columns]).to_string(index=False)


def to_text(board: pd.DataFrame, width: int | None = None) -> str:
    """The table for a terminal; with `width`, columns are left out (said under the table) until it fits: first
    provenance and noise verdicts, then the metrics from the last."""
    text = _text(board)
    if width is None or max(map(len, text.splitlines()), default=0) <= width:
        return text
    metrics = [c for c in board.columns if c not in TERMINAL_DROPS and c not in ("run", "cfg_scale")
               and not c.endswith((" noise", " delta"))]
    order = [c for c in TERMINAL_DROPS if c in board] + [c for c in board.columns if c.endswith(" noise")]
    for metric in reversed(metrics[1:]):
        order += [c for c in (f"{metric} delta", metric, f"paper {metric}") if c in board]
    kept, dropped = board, []
    for column in order:
        kept, dropped = kept.drop(columns=[column]), dropped + [column]
        text = _text(kept)
        if max(map(len, text.splitlines()), default=0) <= width:
            break
    note = f"({len(dropped)} columns left out to fit {width} characters: {', '.join(map(title, dropped))}; the CSV " \
           "and HTML boards have every column)"
    return text + "\n" + textwrap.fill(note, width)


def to_csv(board: pd.DataFrame) -> str:
    """The table for programs: column keys, full precision, yes/no, empty where missing."""
    out = board.copy().astype({c: "object" for run, c in board.attrs.get("missing", {}) if c in board})
    for (run, column), why in board.attrs.get("missing", {}).items():
        if why == UNDEFINED_WHY:
            out.loc[out["run"] == run, column] = "nan"
    for column in out.columns:
        if pd.api.types.is_bool_dtype(out[column]):
            out[column] = out[column].map({True: "yes", False: "no"})
    return out.to_csv(index=False)


def _markdown_escape(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for char in "|*_`[]#":
        text = text.replace(char, "\\" + char)
    return " ".join(text.split())


def to_markdown(board: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned."""
    head = "| " + " | ".join(_markdown_escape(title(c)) for c in board.columns) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in _numeric(board)) + "|"
    rows = ["| " + " | ".join(_markdown_escape(v) for v in row) + " |" for row in _cells(board)]
    return "\n".join([head, rule, *rows]) + "\n"


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "Δ": r"$\Delta$", "−": r"$-$", "<": r"\textless{}", ">": r"\textgreater{}"}


def _latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(char, char) for char in " ".join(text.split()))


def to_latex(board: pd.DataFrame, caption: str | None = None) -> str:
    """A booktabs `tabular` (needs \\usepackage{booktabs}), yes/no for the flags, ready to \\input."""
    spec = "".join("r" if n else "l" for n in _numeric(board))
    lines = [r"\begin{tabular}{" + spec + "}", r"\toprule",
             " & ".join(_latex_escape(title(c)) for c in board.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(v) for v in row) + r" \\" for row in _cells(board, yes="yes", no="no")]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines = [r"\begin{table}", r"\centering", *lines, r"\caption{" + _latex_escape(caption) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def paper_table(board: Board) -> pd.DataFrame:
    """The published rows the runs match, with the columns a reader compares against."""
    return board.paper[[c for c in PAPER_COLUMNS if c in board.paper.columns]].dropna(axis=1, how="all") \
        .reset_index(drop=True)


def unrecorded_note(board: Board) -> str:
    """One line per run that records fewer settings than the others (not listed as differences)."""
    lines = [f"  {run}: {len(names)} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
             for run, names in board.unrecorded.items()]
    return "Runs that record fewer settings (those are not compared):\n" + "\n".join(lines)


def report_text(board: Board) -> str:
    """What `bench report` prints: the table, then (with --compare) the published rows matched, the settings
    that differ (keyed by run, in board order), and the warnings the runs recorded (each said once)."""
    parts = ([board.about] if board.about else []) + [to_text(board.board, TERMINAL_WIDTH)]
    if board.compared and not board.paper.empty:
        parts.append("Published numbers at the runs' settings (reports/published.csv):\n"
                     + to_text(paper_table(board)))
    if board.compared:
        if any(c.endswith(" noise") for c in board.board.columns):
            parts.append(f"Noise: a delta is 'beyond' noise when {NOISE_RULE}.")
        runs = board.board["run"].tolist()
        lines = []
        for setting, values in board.differing.items():
            shown = ", ".join(f"{run}={short(setting, values[run])}" for run in runs if run in values)
            missing = [run for run in runs if run not in values]
            lines.append(f"  {setting}: {shown}" + (f" (not recorded: {', '.join(missing)})" if missing else ""))
        parts.append("Settings that differ between runs:\n" + "\n".join(lines) if lines
                     else "Settings that differ between runs: none")
        if board.unrecorded:
            parts.append(unrecorded_note(board))
    missing = board.board.attrs.get("missing", {})
    if missing:
        parts.append("Missing values ('-': not computed, NaN: computed but undefined):\n" + "\n".join(
            f"  {run}: {metric_title(metric)} {why}" for (run, metric), why in missing.items()))
    if board.warnings:
        parts.append("Warnings recorded by the runs:\n" + "\n".join(
            f"  [{', '.join(runs)}] {warning}" for warning, runs in board.warnings.items()))
    return "\n\n".join(parts)
