"""One leaderboard, assembled: results loaded, compared with a baseline, matched with the papers, ranked.

Every output format (terminal, CSV, Markdown, LaTeX, HTML) renders the same `Board`, so they cannot disagree
about which runs are comparable or what the paper reports. `board.board` is the table a reader sees, one row
per result file ranked by `sort_by`, best first; `board.table` holds every recorded field of the same rows in
the same order (the HTML page shows them behind each row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from bench.errors import BenchError
from bench.metrics.registry import lower_is_better
from bench.report import compare as comparing
from bench.report import published
from bench.report.load import UNDEFINED, load_results, metric_columns

#: metrics shown first, in the order papers print them; any other metric follows in the order results list it
FIRST = ("fid", "rfid", "sfid", "inception_score", "precision", "recall")


@dataclass
class Board:
    board: pd.DataFrame
    table: pd.DataFrame
    sort_by: str
    compared: bool = False
    baseline: str | None = None
    #: setting -> {run: value}, runs in board order (see `compare.differing_settings`)
    differing: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: run -> the settings others record and it does not (see `compare.unrecorded_settings`)
    unrecorded: dict[str, list[str]] = field(default_factory=dict)
    #: warning -> the runs that recorded it, in board order
    warnings: dict[str, list[str]] = field(default_factory=dict)
    #: the published rows some run matches (`reports/published.csv` columns), in board order of first match
    paper: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: files skipped, one message each naming the file
    skipped: list[str] = field(default_factory=list)
    #: one line under the title: what the board is and what to look at (the demo's says how guidance trades recall
    #: for precision)
    about: str = ""


def rank(table: pd.DataFrame, sort_by: str = "fid") -> pd.DataFrame:
    """The rows best first by `sort_by` (its metric's direction: lower FID, higher IS; "fid delta" ranks like
    "fid"); rows without a value last."""
    if sort_by not in table:
        metrics = ", ".join(metric_columns(table))
        raise BenchError(f"cannot sort by {sort_by!r}: no result has it (metrics here: {metrics})")
    return table.sort_values(sort_by, ascending=lower_is_better(sort_by), kind="stable", na_position="last")


def _metric_order(table: pd.DataFrame) -> list[str]:
    metrics = metric_columns(table)
    return [m for m in FIRST if m in metrics] + [m for m in metrics if m not in FIRST]


def _first(table: pd.DataFrame, columns: Iterable[str], dtype: str | None = None) -> pd.Series:
    """Per row, the first of `columns` that row records (missing where none)."""
    out = pd.Series(pd.NA, index=table.index, dtype="object")
    for column in columns:
        if column in table.columns:
            out = out.where(out.notna(), table[column])
    return out.astype(dtype) if dtype else out


def _reference_ids(table: pd.DataFrame) -> pd.Series:
    """`imagenet256@1a2b3c4d5e6f` per row: the reference batch's name (or file name) and sha256[:12], short
    enough for a board column. Numbers scored against different batches must not pass for one ranking."""
    names = _first(table, ["reference.name", "reference.path"])
    digests = _first(table, ["reference.sha256"])
    ids = ["@".join(filter(None, (Path(str(n)).name if not pd.isna(n) else "", str(d)[:12] if not pd.isna(d) else "")))
           for n, d in zip(names, digests)]
    return pd.Series([i or pd.NA for i in ids], index=table.index, dtype="string")


def leaderboard(table: pd.DataFrame, sort_by: str = "fid") -> pd.DataFrame:
    """The columns a reader needs, ranked by `sort_by`: the run, its generator and cfg scale; each metric (with
    its delta and noise verdict after `compare`); the paper's FID at the run's setting and the difference; the
    comparability flags; the reference batch, sample count, date and bench version of every row."""
    ranked = rank(table, sort_by)
    board = pd.DataFrame({"run": ranked["run"]})
    if "generator" in ranked and ranked["generator"].notna().any():
        board["generator"] = ranked["generator"]
    cfg = _first(ranked, published.RUN_FIELDS["cfg_scale"])
    if cfg.notna().any():
        board["cfg_scale"] = pd.to_numeric(cfg, errors="coerce")
    for metric in _metric_order(ranked):
        for column in (metric, f"{metric} delta", f"{metric} noise"):
            if column in ranked and ranked[column].notna().any():
                board[column] = ranked[column]
    matches = published.match_runs(ranked)["paper row"]
    if matches.notna().any():
        paper = published.published().reindex([-1 if pd.isna(i) else i for i in matches]).set_axis(ranked.index)
        board["paper fid"] = paper["fid"]
        if "fid" in ranked:
            board["fid vs paper"] = (ranked["fid"] - board["paper fid"]).round(12)
        board["paper source"] = paper["source"].astype("string")
    for column in ("baseline", "comparable", "why not comparable"):
        if column in ranked:
            board[column] = ranked[column]
    board["reference"] = _reference_ids(ranked)
    board["num_samples"] = _first(ranked, ["samples.num_samples"], "Int64")
    board["created"] = _first(ranked, ["created"], "string").str.slice(0, 10).replace("", pd.NA)
    board["bench"] = _first(ranked, ["provenance.bench", "provenance.versions.bench"], "string")
    board = board.dropna(axis=1, how="all").reset_index(drop=True)
    board.attrs["missing"] = why_missing(ranked, [c for c in board.columns if c in metric_columns(ranked)])
    return board


def why_missing(table: pd.DataFrame, metrics: list[str]) -> dict[tuple[str, str], str]:
    """(run, metric) -> why the cell has no number, where the result says: computed but undefined (NaN), or the
    reason it was not computed (`unavailable`). The formats show "NaN" for the first, "-" for the second."""
    out = {}
    for _, row in table.iterrows():
        undefined = row.get(UNDEFINED)
        for metric in metrics:
            if not pd.isna(row.get(metric)):
                continue
            if isinstance(undefined, tuple) and metric in undefined:
                out[row["run"], metric] = UNDEFINED_WHY
            elif isinstance(row.get(f"unavailable.{metric}"), str):
                out[row["run"], metric] = f"not computed: {row[f'unavailable.{metric}']}"
    return out


#: what a NaN metric means when the result recorded it as computed
UNDEFINED_WHY = "computed, but undefined (NaN): check the run's warnings and inputs"


def build(paths: Iterable[str | Path], compare: bool = False, baseline: int | str = 0,
          sort_by: str = "fid", default_sort: bool = True) -> Board:
    """Load, (compare,) match and rank: the board every format renders. With `default_sort`, a board without
    `sort_by` (tokenizers have rFID, not FID) is ranked by its first metric instead."""
    table = load_results(paths)
    if default_sort and sort_by not in table and _metric_order(table):
        sort_by = _metric_order(table)[0]
    skipped = list(table.attrs.get("skipped", []))
    base = None
    if compare:
        table, _ = comparing.compare(table, baseline)
        base = table.loc[table["baseline"], "run"].iloc[0]
    board = leaderboard(table, sort_by)
    ranked = rank(table, sort_by).reset_index(drop=True)
    matched = published.match_runs(ranked)["paper row"].dropna().unique()
    paper = published.published().loc[list(matched)] if compare and len(matched) else pd.DataFrame()
    return Board(board=board, table=ranked, sort_by=sort_by, compared=compare, baseline=base,
                 differing=comparing.differing_settings(ranked) if compare else {},
                 unrecorded=comparing.unrecorded_settings(ranked) if compare else {},
                 warnings=comparing.run_warnings(ranked), paper=paper, skipped=skipped)
