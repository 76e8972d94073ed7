"""Leaderboards: many result files in, one pandas table out (terminal, CSV, HTML).

A leaderboard is only honest if its rows were measured the same way, so `--compare` does more than subtract:
it lists every recorded setting that differs between the runs (reference batch, sample count, Inception
weights, cfg scale, ...) and marks the rows whose numbers are therefore not comparable with the baseline.
Even without it, every row shows the reference batch it was scored against and its sample count.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Iterable

import click
import pandas as pd

from bench import atomic
from bench.errors import BenchError

METRICS = ("fid", "sfid", "inception_score", "precision", "recall", "rfid", "psnr", "ssim")
LOWER_IS_BETTER = {"fid", "sfid", "rfid"}
# Recorded fields that are outcomes or names, not settings: "Settings that differ" leaves them out.
NOT_SETTINGS = ("run", "path", "run_id", "fingerprint", "wall_time_s", "images_per_s", "images_generated",
                "images_resumed", "images_processed", "reference.path", "settings.run_id", "settings.runs_dir")
NOT_SETTINGS_PREFIXES = ("provenance.versions", "timing", "outputs.", "metrics.")
# Settings that make two numbers incomparable when they differ (dotted paths into the flattened result).
COMPARABILITY_KEYS = ("num_samples", "num_ref", "reference.sha256", "provenance.inception.sha256",
                      "provenance.distances")
# How result files spell the non-finite floats strict JSON has no literal for (`bench.run.loop.json_safe`).
NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept as JSON text so they stay one cell."""
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def _metric_value(flat: dict[str, Any], metric: str) -> float | None:
    """The metric as a float (None if not recorded): a string left in the column would make sorting and deltas
    fail, and a perfect reconstruction's PSNR is stored as "inf"."""
    value = next((flat[key] for key in (metric, f"metrics.{metric}") if key in flat), None)
    if value is None:
        return None
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise BenchError(f"{metric} is {value!r}, not a number")


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """Result files named directly, or every `result*.json` below the given folders (a run folder keeps one per
    reference batch it was scored against)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(path.rglob("result*.json")))
        elif path.exists():
            found.append(path)
        else:
            raise BenchError(f"{path}: no such result file or folder")
    if not found:
        raise BenchError("no result files found (looked for result*.json below the given folders)")
    return found


def _read_row(path: Path) -> dict[str, Any]:
    """One result file as a table row: the metrics first, then every other recorded field, flattened."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BenchError(f"{path}: not a readable result file ({err})") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path}: a result file holds a JSON object, found {type(data).__name__}")
    flat = flatten(data)
    row = {"run": data.get("run_id") or path.parent.name or path.stem, "path": str(path)}
    try:
        row.update({m: _metric_value(flat, m) for m in METRICS})
    except BenchError as err:
        raise BenchError(f"{path}: not a usable result file ({err})") from None
    row.update({k: v for k, v in flat.items() if k not in METRICS and not k.startswith("metrics.")})
    return row


def load_results(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per result file. A damaged file is skipped with a warning (one bad run among fifty should not
    hide the other 49); only when none is readable is that an error."""
    rows, problems = [], []
    for path in find_results(paths):
        try:
            rows.append(_read_row(path))
        except BenchError as err:
            problems.append(str(err))
    if not rows:
        raise BenchError("no readable result file: " + "; ".join(problems))
    for problem in problems:
        click.echo(f"Warning: skipped {problem}", err=True)
    table = pd.DataFrame(rows).dropna(axis=1, how="all")
    # A field some rows lack would otherwise turn to float (50000 -> 50000.0000): keep integers integers.
    integral = [c for c in table.columns if c not in METRICS and all(
        isinstance(row[c], int) and not isinstance(row[c], bool) for row in rows if row.get(c) is not None)]
    return table.astype({c: "Int64" for c in integral})


def compare(table: pd.DataFrame, baseline: int = 0) -> tuple[pd.DataFrame, dict[str, list[Any]]]:
    """Add `<metric> delta` columns against the baseline row and a `comparable` column.

    Returns the table and the settings that differ between rows (column -> values per row), so a reader sees
    *why* two numbers differ before reading the deltas.
    """
    if not 0 <= baseline < len(table):
        raise BenchError(f"--baseline {baseline} is not a row of the {len(table)}-row table")
    out = table.copy()
    for metric in METRICS:
        if metric in out and pd.api.types.is_numeric_dtype(out[metric]):
            out[f"{metric} delta"] = out[metric] - out[metric].iloc[baseline]
    settings = [c for c in out.columns if c not in METRICS and not c.endswith(" delta")
                and c not in NOT_SETTINGS and not c.startswith(NOT_SETTINGS_PREFIXES)]
    # dropna=False: a setting recorded by one run and missing from another differs too
    differing = {c: out[c].tolist() for c in settings if out[c].astype(str).nunique(dropna=False) > 1}
    key_columns = [c for c in COMPARABILITY_KEYS if c in out.columns]  # a row missing one is not comparable
    base = out.iloc[baseline]
    out["baseline"] = [i == baseline for i in range(len(out))]  # the board is re-sorted: say which row it was
    out["comparable"] = [all(str(row[c]) == str(base[c]) for c in key_columns) for _, row in out.iterrows()]
    return out, differing


def _reference_ids(table: pd.DataFrame) -> list[str | None]:
    """`imagenet256@1a2b3c4d5e6f` per row: the reference batch's name (or file name) and sha256[:12], short
    enough for a board column. Numbers scored against different batches must not pass for one ranking."""
    def recorded(row: pd.Series, column: str) -> str:
        return str(row[column]) if column in row and pd.notna(row[column]) else ""

    ids: list[str | None] = []
    for _, row in table.iterrows():
        label = next(filter(None, (Path(recorded(row, c)).name for c in ("reference.name", "reference.path"))), "")
        ids.append("@".join(filter(None, (label, recorded(row, "reference.sha256")[:12]))) or None)
    return ids


def leaderboard(table: pd.DataFrame, sort_by: str = "fid") -> pd.DataFrame:
    """The metric columns (and deltas) ranked by `sort_by`, best first, with what each row was measured
    against: reference batch and sample count always (missing ones show as missing), cfg scale and generator
    where recorded."""
    if sort_by not in table:
        raise BenchError(f"cannot sort by {sort_by!r}: not in the results (have {', '.join(table.columns)})")
    lower_is_better = sort_by.removesuffix(" delta") in LOWER_IS_BETTER  # "fid delta" ranks like "fid"
    ranked = table.sort_values(sort_by, ascending=lower_is_better, kind="stable").reset_index(drop=True)
    columns = ["run"] + [c for c in ranked.columns if c in METRICS or c.endswith(" delta")]
    board = ranked[columns + [c for c in ("baseline", "comparable") if c in ranked]].copy()
    board["reference"] = _reference_ids(ranked)
    board["num_samples"] = ranked.get("num_samples", pd.Series(pd.NA, index=ranked.index, dtype="Int64"))
    if "config.generator_config.cfg_scale" in ranked:  # where `bench run` records the resolved setting
        board["cfg_scale"] = ranked["config.generator_config.cfg_scale"]
    if "generator" in ranked:
        board["generator"] = ranked["generator"]
    return board


def to_text(board: pd.DataFrame) -> str:
    """The board for a terminal: 4 decimals, "-" where a run has no value."""
    return _na_as_dash(board).to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.4f}")


def _na_as_dash(board: pd.DataFrame) -> pd.DataFrame:
    """pandas ignores `na_rep` for nullable integer columns (it prints <NA>): give those a "-" itself."""
    out = board.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.Int64Dtype):
            out[column] = out[column].astype(object).where(out[column].notna(), "-")
    return out


def to_html(board: pd.DataFrame, differing: dict[str, list[Any]], title: str = "bench leaderboard") -> str:
    """A standalone HTML page; every value is escaped, since run names and configs come from users."""
    body = _na_as_dash(board).to_html(index=False, escape=True, na_rep="-", float_format=lambda x: f"{x:.4f}")
    notes = "".join(
        f"<li><code>{html.escape(str(k))}</code>: {html.escape(', '.join(map(str, v)))}</li>"
        for k, v in differing.items()
    )
    notes_html = f"<h2>Settings that differ between runs</h2><ul>{notes}</ul>" if notes else ""
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}{notes_html}</body></html>\n"
    )


def write_outputs(board: pd.DataFrame, differing: dict[str, list[Any]], csv_path: str | None,
                  html_path: str | None) -> None:
    if csv_path:
        atomic.write_text(csv_path, board.to_csv(index=False))
    if html_path:
        atomic.write_text(html_path, to_html(board, differing))
