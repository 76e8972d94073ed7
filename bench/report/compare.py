"""Runs against a baseline: deltas, whether each delta is beyond sampling noise, and whether the rows are comparable.

A leaderboard is only honest if its rows were measured the same way, so comparing does more than subtract:

* `comparable` / `why not comparable`: a row scored against another reference batch, with another sample or
  reference count, other Inception weights, other Precision/Recall distances, or other DINOv2/CLIP weights than the
  baseline is not comparable with it, and the reason says which and how (a lower FID against another reference batch is not
  a better model);
* `differing_settings`: every recorded setting that differs between the rows, keyed by run; outcomes (metrics,
  timings, paths, versions, warnings) are not settings and are left out;
* `<metric> noise`: "beyond" when |delta| > 2 * sqrt(std_row^2 + std_baseline^2), from the bootstrap
  estimates results carry under `noise.std` (bench/metrics/bootstrap.py); "within" otherwise; empty when either
  side has no estimate.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.errors import BenchError
from bench.features import EXTRACTORS
from bench.features.cache import KEY_FIELDS
from bench.report.load import metric_columns

#: settings that make two numbers incomparable when they differ (dotted paths) -> what a reader calls them
COMPARABILITY = {
    "reference.sha256": "reference batch",
    "reference.num_ref": "reference images",
    "samples.num_samples": "samples",
    "provenance.features.inception.sha256": "Inception weights",
    "provenance.distances": "Precision/Recall distances",
}
#: the other feature networks' weights and preprocessing: compared where both rows used the network (a row without
#: FD_DINOv2 stays comparable on FID with one that has it)
ONLY_WHERE_BOTH = {f"provenance.features.{name}.{field}": f"{network.title} {what}"
                   for name, network in EXTRACTORS.items() if name != "inception"
                   for field, what in (("weights_sha256", "weights"), ("resize", "resize"))}
COMPARABILITY.update(ONLY_WHERE_BOTH)
#: a comparability column -> a finer one that replaces it where both rows record it: the Inception weights'
#: feature-tensor digest is the same for one set of weights in any file format (results before it: the file's)
FORMAT_INDEPENDENT = {"provenance.features.inception.sha256": "provenance.features.inception.features_sha256"}
#: how many standard deviations of the difference make a delta "beyond noise"
NOISE_SIGMAS = 2.0
NOISE_RULE = (f"|delta| > {NOISE_SIGMAS:g} x sqrt(std_run^2 + std_baseline^2), std from each result's bootstrap "
              "noise estimate (docs/metrics.md)")
#: recorded fields under these prefixes are settings (what was asked for); the rest are outcomes
SETTING_PREFIXES = ("settings.", "reference.", "samples.num_samples", "samples.resolution", "provenance.distances")
SETTING_FIELDS = ("task", "generator")
#: fields that are names or places, not choices that move a number (a file's identity is its sha256)
PLACES = ("path", "run_id", "runs_dir")


def is_setting(column: str) -> bool:
    """Whether a flattened result field is a setting: the `settings` block, the reference batch and sample count,
    and the decisive provenance of the checkpoints and feature networks (digests, backend, resize); never a
    name or a place (`run_id`, `*.path`, `*_dir`)."""
    field = column.rsplit(".", 1)[-1]
    if field in PLACES or field.endswith("_dir"):
        return False
    if column in SETTING_FIELDS or column.startswith(SETTING_PREFIXES):
        return True
    if column.startswith(("provenance.features.", "provenance.checkpoints.")):
        return field in KEY_FIELDS or field.endswith("sha256")
    return False


def setting_label(column: str) -> str:
    """How a setting is shown: the `settings.` block is the run's own settings, so its prefix is dropped."""
    return column.removeprefix("settings.")


def baseline_index(table: pd.DataFrame, baseline: int | str) -> int:
    """The row `--baseline` names: a run name, or a row number in the order the files were given."""
    names = table["run"].tolist()
    if isinstance(baseline, str) and baseline in names:
        return names.index(baseline)
    try:
        index = int(baseline)
    except ValueError:
        raise BenchError(f"--baseline {baseline!r}: no such run (runs: {', '.join(names)})") from None
    if not 0 <= index < len(table):
        raise BenchError(f"--baseline {index} is not a row of the {len(table)}-row table (0 to {len(table) - 1}, "
                         "or a run name)")
    return index


def _shown(column: str, value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "not recorded"
    return str(value)[:12] if column.endswith("sha256") else str(value)


def comparability(table: pd.DataFrame, baseline: int) -> tuple[list[bool], list[str]]:
    """Per row: comparable with the baseline row, and if not, why ("reference batch bb0123456789 vs aa0123456789
    in the baseline"). A setting the baseline records and a row does not (or the reverse) makes it not comparable."""
    keys = [c for c in COMPARABILITY if c in table.columns]
    base = table.iloc[baseline]

    def decisive(c: str, row: pd.Series) -> str:
        finer = FORMAT_INDEPENDENT.get(c)
        if finer in table.columns and "not recorded" not in (_shown(finer, row[finer]), _shown(finer, base[finer])):
            return finer
        return c

    comparable, why = [], []
    for _, row in table.iterrows():
        reasons = [f"{COMPARABILITY[c]} {_shown(k, row[k])} vs {_shown(k, base[k])} in the baseline"
                   for c in keys for k in [decisive(c, row)] if _shown(k, row[k]) != _shown(k, base[k])
                   and not (c in ONLY_WHERE_BOTH and "not recorded" in (_shown(k, row[k]), _shown(k, base[k])))]
        comparable.append(not reasons)
        why.append("; ".join(reasons))
    return comparable, why


def noise_verdict(delta: float, std_run: float | None, std_base: float | None) -> str | None:
    """"beyond" / "within" noise by NOISE_RULE; None without both estimates (or without a delta)."""
    if any(v is None or pd.isna(v) for v in (delta, std_run, std_base)):
        return None
    return "beyond" if abs(delta) > NOISE_SIGMAS * math.hypot(std_run, std_base) else "within"


def compare(table: pd.DataFrame, baseline: int | str = 0) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """The table with `<metric> delta`, `<metric> noise`, `baseline`, `comparable` and `why not comparable`
    columns, and the settings that differ (see `differing_settings`)."""
    index = baseline_index(table, baseline)
    out = table.copy()
    for metric in metric_columns(table):
        out[f"{metric} delta"] = (out[metric] - out[metric].iloc[index]).round(12)  # no 0.40000000000000036
        std = f"noise.std.{metric}"
        if std in out.columns:
            verdicts = [None if i == index else noise_verdict(d, s, out[std].iloc[index])
                        for i, (d, s) in enumerate(zip(out[f"{metric} delta"], out[std]))]
            if any(verdicts):
                out[f"{metric} noise"] = pd.Series(verdicts, index=out.index, dtype="string")
    out["baseline"] = [i == index for i in range(len(out))]  # the board is re-sorted: say which row it was
    out["comparable"], out["why not comparable"] = comparability(out, index)
    return out, differing_settings(out)


def differing_settings(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Setting -> {run: value} for every setting recorded with more than one value, runs in the table's order. A
    run that does not record it is left out of its mapping (shown as "not recorded"); a setting recorded alike by
    every run that records it is no difference (`unrecorded_settings` says who records fewer)."""
    differing: dict[str, dict[str, Any]] = {}
    for column in filter(is_setting, table.columns):
        recorded = {run: value for run, value in zip(table["run"], table[column]) if not pd.isna(value)}
        if len({str(v) for v in recorded.values()}) > 1:
            differing[setting_label(column)] = recorded
    return differing


def unrecorded_settings(table: pd.DataFrame) -> dict[str, list[str]]:
    """Run -> the settings other runs record and it does not (an eval result records no sampling settings), for
    the runs that lack any: said once per run instead of as a "difference" per setting."""
    lacking: dict[str, list[str]] = {}
    for column in filter(is_setting, table.columns):
        values = table[column]
        if values.notna().any():
            for run in table.loc[values.isna(), "run"]:
                lacking.setdefault(run, []).append(setting_label(column))
    return lacking


def run_warnings(table: pd.DataFrame) -> dict[str, list[str]]:
    """Warning text -> the runs that recorded it, in the table's order: a warning ten runs share is said once."""
    shared: dict[str, list[str]] = {}
    for run, warnings in zip(table["run"], table.get("warnings", pd.Series([()] * len(table)))):
        for warning in warnings if isinstance(warnings, tuple) else ():
            shared.setdefault(warning, []).append(run)
    return shared
