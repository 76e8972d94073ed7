"""The one schema of what `bench eval`, `bench run` and `bench run --task reconstruct` write, and `bench report` reads.

    {
      "schema_version": 1,
      "task": "eval" | "sample" | "reconstruct",
      "run_id": "llamagen-xl-1a2b3c4d5e6f" | null,      # eval: null
      "generator": "llamagen-xl" | null,
      "metrics": {"fid": 2.63, "sfid": ..., "inception_score": ..., "precision": ..., "recall": ..., "kid": ...},
      "unavailable": {"inception_score": "why it is missing"},
      "details": {"kid_std": ..., "kid_subset_size": ..., "conventions": {...}},
      "noise": {"method": "bootstrap", "resamples": 10, "std": {"fid": ...}},   # sampling-noise estimate
      "reference": {"name", "path", "sha256", "resolution", "num_ref"},
      "samples": {"path", "sha256", "resolution", "num_samples"},
      "settings": {...},         # the resolved settings: generator config, seed, labels, metrics, ...
      "provenance": {"bench", "versions", "device", "features": {network: provenance}, "checkpoints": {...},
                     "distances"},
      "timing": {"wall_time_s", "images_per_s", "images_generated", "images_resumed", "world_size"},
      "warnings": [...], "outputs": {"npz", "grid"}, "created": "2026-12-06T01:23:45Z"
    }

Metrics are always under `metrics`, flat, one number (or null) per key, so a board can rank any of them.
Files written before the schema existed (ADM-style `fid` at the top level, `bench run`'s first layout, the
reconstruct task's `vs_reference`) are upgraded on read by `upgrade`.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import atomic
from bench.errors import BenchError

SCHEMA_VERSION = 1
TASKS = ("eval", "sample", "reconstruct")
REFERENCE_KEYS = ("name", "path", "sha256", "resolution", "num_ref")


def json_safe(value: Any) -> Any:
    """Strict-JSON copy: numpy scalars and arrays as numbers and lists, inf/NaN as "inf"/"nan" strings
    (a perfect reconstruction has infinite PSNR), anything else (paths, devices) as its str."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def package_versions() -> dict[str, str]:
    """Versions of everything that can move a number, for the provenance record."""
    versions = {"python": platform.python_version(), "cuda": torch.version.cuda or "none"}
    for name in ("bench", "torch", "numpy", "scipy", "pillow", "diffusers", "tensorflow-cpu", "tensorflow"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Result:
    """A scored result. Build it with the fields you have; `to_json` makes the strict-JSON record."""

    task: str
    metrics: dict[str, Any]
    reference: dict[str, Any]
    samples: dict[str, Any]
    settings: dict[str, Any]
    provenance: dict[str, Any]
    run_id: str | None = None
    generator: str | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=now)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise BenchError(f"result task {self.task!r}: expected one of {', '.join(TASKS)}")
        self.reference = {k: self.reference.get(k) for k in REFERENCE_KEYS}

    def to_json(self) -> dict[str, Any]:
        return json_safe({"schema_version": self.schema_version, **{k: v for k, v in asdict(self).items()
                                                                   if k != "schema_version"}})

    def write(self, path: str | Path) -> Path:
        atomic.write_json(path, self.to_json())
        return Path(path)


# -- reading ------------------------------------------------------------------------------------------------
NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def metric_value(value: Any) -> float | None:
    """A recorded metric as a float (None when not computed); "inf"/"nan" strings as the floats they stand for."""
    if value is None:
        return None
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise BenchError(f"{value!r} is not a number")


def _legacy_eval(data: dict[str, Any]) -> dict[str, Any]:
    """`bench eval --json` before the schema: ADM's numbers at the top level."""
    keys = ("inception_score", "fid", "sfid", "precision", "recall", "kid")
    metrics = {k: data[k] for k in keys if k in data}
    unavailable = {k.removesuffix("_unavailable"): v for k, v in data.items() if k.endswith("_unavailable")}
    if "precision_recall" in unavailable:
        reason = unavailable.pop("precision_recall")
        unavailable.update(precision=reason, recall=reason)
    prov = dict(data.get("provenance") or {})
    reference = {**(data.get("reference") or {}), "num_ref": data.get("num_ref")}
    return {"task": "eval", "metrics": metrics, "unavailable": unavailable,
            "details": {k: data[k] for k in ("kid_std", "kid_subset_size") if k in data},
            "reference": reference,
            "samples": {"path": prov.get("sample"), "num_samples": data.get("num_samples")},
            "settings": {"distances": prov.get("distances")},
            "provenance": {"features": {"inception": prov.get("inception")}, "versions": prov.get("versions"),
                           "distances": prov.get("distances")},
            "warnings": data.get("warnings", [])}


def _legacy_run(data: dict[str, Any]) -> dict[str, Any]:
    """`bench run` results before the schema (metrics nested; reconstruct under metrics.vs_reference)."""
    metrics = dict(data.get("metrics") or {})
    details = {"conventions": metrics.pop("conventions")} if "conventions" in metrics else {}
    if data.get("task") == "reconstruct":
        vs_ref = metrics.pop("vs_reference", {}) or {}
        vs_orig = metrics.pop("vs_originals", {}) or {}
        metrics = {"rfid": metrics.get("rfid", vs_ref.get("fid")),
                   **{k: vs_ref.get(k) for k in ("sfid", "inception_score", "precision", "recall") if k in vs_ref},
                   "rfid_vs_originals": vs_orig.get("fid"), "sfid_vs_originals": vs_orig.get("sfid"),
                   "psnr": metrics.get("psnr"), "ssim": metrics.get("ssim"),
                   "ssim_llamagen": metrics.get("ssim_llamagen_convention")}
    unavailable = {k.removesuffix("_unavailable"): metrics.pop(k) for k in list(metrics) if k.endswith("_unavailable")}
    for key in ("num_ref", "num_samples"):
        metrics.pop(key, None)
    prov = dict(data.get("provenance") or {})
    config = data.get("config") or {}
    return {"task": data.get("task", "sample"), "run_id": data.get("run_id"), "generator": data.get("generator"),
            "metrics": metrics, "unavailable": unavailable, "details": details,
            "reference": {**(data.get("reference") or {}), "num_ref": data.get("num_ref")},
            "samples": {"num_samples": data.get("num_samples"), "resolution": config.get("eval_size")},
            "settings": {**config, "seed": data.get("seed"), "labels": data.get("labels")},
            "provenance": {"features": {"inception": prov.get("inception")}, "versions": prov.get("versions"),
                           "distances": prov.get("distances"), "device": data.get("device"),
                           "checkpoints": {name: {"path": None, "sha256": digest}
                                           for name, digest in (data.get("checkpoint_sha256") or {}).items()}},
            "timing": {k: data.get(k) for k in ("wall_time_s", "images_per_s", "images_generated", "images_resumed",
                                                "world_size") if k in data},
            "warnings": data.get("warnings", []), "outputs": data.get("outputs", {})}


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A result dict in the current schema; files of earlier layouts are converted (and marked as such)."""
    if "schema_version" in data:
        if data["schema_version"] != SCHEMA_VERSION:
            raise BenchError(f"schema_version {data['schema_version']}: this bench reads version {SCHEMA_VERSION}; "
                             "upgrade bench to read it")
        return data
    if "fid" in data and "metrics" not in data:
        legacy = _legacy_eval(data)
    elif isinstance(data.get("metrics"), dict) and ("config" in data or "run_id" in data):
        legacy = _legacy_run(data)
    else:
        raise BenchError("not a bench result (no schema_version, no metrics)")
    return Result(**legacy, created=data.get("created", "")).to_json() | {"upgraded_from": "pre-schema"}


def read(path: str | Path) -> dict[str, Any]:
    """One result file in the current schema; any other JSON (or a damaged file) is a `BenchError` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BenchError(f"{path}: not a readable result file ({err})") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path}: not a bench result (a JSON {type(data).__name__})")
    try:
        result = upgrade(data)
        if not isinstance(result.get("metrics"), dict):
            raise BenchError("its metrics are not an object")
        for key, value in result["metrics"].items():
            metric_value(value)
    except BenchError as err:
        raise BenchError(f"{path}: {err}") from None
    return result
