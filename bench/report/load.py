"""Result files in, one pandas table out: one row per file, metrics as float columns, everything else flattened.

Only files in bench's result schema become rows (`bench.result.read` upgrades the older layouts and refuses
anything else): a stray `{"foo": 1}` must not become the baseline. A folder is searched for every `*.json`
below it; a file that is not a result, or is damaged, is skipped with a warning naming it, because one bad run
among fifty should not hide the other 49. Only when nothing is readable is that an error.

Rows are named by `run_id`, else by the file's stem; names that collide get the shortest end of their path that
tells them apart ("a (result.json)", "a (result-1a2b3c4d5e6f.json)"), so no two rows share a label.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from bench import result as schema
from bench.errors import BenchError

#: JSON files bench writes beside results that are not results (a run folder's manifest, its grid record): not warned about
BOOKKEEPING = ("manifest.json", "grid.json")
#: top-level columns that are not metrics: the schema's fields, the loader's two, and `compare`'s two flags
#: (the other columns `compare` adds have a space in their name: "fid delta", "why not comparable")
NOT_METRICS = frozenset({f.name for f in dataclasses.fields(schema.Result)}
                        | {"run", "path", "upgraded_from", "comparable", "baseline"})
#: a loader column that is no setting or outcome: the metrics a row computed as NaN
UNDEFINED = "undefined metrics"


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


def find_result_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files named, and every `*.json` below the folders named (sorted), each file once."""
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        if path.is_dir():
            below = [p for p in sorted(path.rglob("*.json")) if p.is_file() and p.name not in BOOKKEEPING]
            found.update((p.resolve(), p) for p in below)
        elif path.exists():
            found.setdefault(path.resolve(), path)
        else:
            raise BenchError(f"{path}: no such result file or folder")
    if not found:
        raise BenchError("no result files found (looked for *.json files below the given folders)")
    return list(found.values())


def _row(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """One result as a table row: metrics by their bare keys, every other field by its dotted path."""
    row: dict[str, Any] = {"path": str(path)}
    row.update({key: schema.metric_value(value) for key, value in result["metrics"].items()})
    row.update(flatten({k: v for k, v in result.items() if k not in ("metrics", "warnings")}))
    row["warnings"] = tuple(str(w) for w in result.get("warnings") or ())
    # NaN in a float column reads like "not computed": say which metrics were computed and came out undefined
    row[UNDEFINED] = tuple(k for k, v in result["metrics"].items() if v is not None and math.isnan(row[k]))
    return row


def _names(paths: list[Path], wanted: list[str]) -> list[str]:
    """`wanted` made unique: a colliding name gets the shortest end of its path that no other collider shares."""
    names = list(wanted)
    for name in set(wanted):
        group = [i for i, w in enumerate(wanted) if w == name]
        if len(group) < 2:
            continue
        parts = [paths[i].resolve().parts for i in group]
        for depth in range(1, max(map(len, parts)) + 1):
            tails = ["/".join(p[-depth:]) for p in parts]
            if len(set(tails)) == len(tails):
                break
        for i, tail in zip(group, tails):
            names[i] = f"{name} ({tail})"
    return names


def load_results(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per result file, in the order found, with a unique `run` name per row.

    The files skipped (not a result, or damaged) are listed, one message each naming the file, in
    `table.attrs["skipped"]` for the caller to show; none readable at all is a `BenchError` listing them.
    """
    rows, files, skipped = [], [], []
    for path in find_result_files(paths):
        try:
            rows.append(_row(path, schema.read(path)))
            files.append(path)
        except BenchError as err:
            skipped.append(str(err))
    if not rows:
        raise BenchError("no readable result file: " + "; ".join(skipped))
    wanted = [row.get("run_id") or path.stem for row, path in zip(rows, files)]
    for row, name in zip(rows, _names(files, wanted)):
        row["run"] = name
    table = pd.DataFrame(rows)
    table = table[["run"] + [c for c in table.columns if c != "run"]].dropna(axis=1, how="all")
    # A field some rows lack would otherwise turn to float (50000 -> 50000.0000): keep integers integers.
    integral = [c for c in table.columns if c not in metric_columns(table) and all(
        isinstance(row[c], int) and not isinstance(row[c], bool) for row in rows if row.get(c) is not None)]
    table = table.astype({c: "Int64" for c in integral})
    table.attrs["skipped"] = skipped
    return table


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns (bare keys such as "fid", "kid", "rfid_vs_originals"), in the table's order."""
    return [c for c in table.columns if "." not in c and " " not in c and c not in NOT_METRICS]
