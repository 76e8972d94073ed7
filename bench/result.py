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


#: the range of a metric's value, by its key's first word (`fid`, `fid_dinov2`, `precision_dinov2` ...): a value
#: outside is a damaged or hand-edited file. Only PSNR may be infinite (a perfect reconstruction); "nan" (written
#: for a metric that was computed and came out undefined) passes, and the board shows it as such.
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "fid": (0, math.inf), "sfid": (0, math.inf), "rfid": (0, math.inf), "fd": (0, math.inf),
    "inception": (0, math.inf), "precision": (0, 1), "recall": (0, 1), "coverage": (0, 1), "density": (0, math.inf),
    "psnr": (0, math.inf), "ssim": (-1, 1), "cmmd": (0, math.inf), "vendi": (0, math.inf), "codebook": (0, 1),
}
MAY_BE_INFINITE = ("psnr",)

#: settings the board reads by name (bench/report/published.RUN_FIELDS): their types
SETTING_TYPES: dict[str, tuple[type, ...]] = {
    "cfg_scale": (int, float), "image_size": (int,), "eval_size": (int,), "top_k": (int, float), "top_p": (int, float),
    "num_samples": (int,), "seed": (int,), "official_weights": (bool,), "gpt_model": (str,), "model": (str, dict),
}


def _family(key: str) -> str:
    return key.split("_")[0]


def check_metric(key: str, value: Any) -> None:
    """A metric's recorded value: null, a finite number, or bench's strings for non-finite ones, inside its range."""
    if isinstance(value, float) and not math.isfinite(value):
        raise BenchError(f"metrics.{key} is {value!r}, which strict JSON cannot hold (bench writes \"inf\"/\"nan\")")
    if isinstance(value, bool):
        raise BenchError(f"metrics.{key}: {value!r} is not a number")
    number = metric_value(value)
    if number is None or math.isnan(number):
        return
    low, high = METRIC_RANGES.get(_family(key), (-math.inf, math.inf))
    if math.isinf(number) and not key.startswith(MAY_BE_INFINITE):
        raise BenchError(f"metrics.{key}: {value!r} cannot be infinite")
    if not low <= number <= high:
        raise BenchError(f"metrics.{key}: {value!r} is outside its range [{low}, {high}]")


_WORDS = {int: "an integer", float: "a number", str: "text", dict: "an object", list: "a list", bool: "true or false"}


def _expect(value: Any, types: tuple[type, ...], where: str) -> None:
    """`value` is None or one of `types` (a bool is no number; a float must be finite)."""
    if value is None:
        return
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        words = [_WORDS[t] for t in types if not (t is int and float in types)]
        raise BenchError(f"{where}: expected {' or '.join(words)}, found {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BenchError(f"{where}: {value!r} is not a finite number")


def check(result: dict[str, Any]) -> None:
    """Every field the board reads has its type and range (a `BenchError` naming the first that does not): a
    hand-edited or damaged file is skipped with that message instead of breaking the whole board."""
    if result.get("task") not in TASKS:
        raise BenchError(f"task {result.get('task')!r}: expected one of {', '.join(TASKS)}")
    for key in ("run_id", "generator", "created"):
        _expect(result.get(key), (str,), key)
    for key in ("metrics", "unavailable", "details", "noise", "reference", "samples", "settings", "provenance",
                "timing", "outputs"):
        _expect(result.get(key), (dict,), key)
    _expect(result.get("warnings"), (list,), "warnings")
    if not isinstance(result.get("metrics"), dict):
        raise BenchError("its metrics are not an object")
    for key, value in result["metrics"].items():
        check_metric(key, value)
    for key, value in (result.get("unavailable") or {}).items():
        _expect(value, (str,), f"unavailable.{key}")
    for i, warning in enumerate(result.get("warnings") or []):
        _expect(warning, (str,), f"warnings[{i}]")
    noise = result.get("noise") or {}
    _expect(noise.get("method"), (str,), "noise.method")
    _expect(noise.get("resamples"), (int,), "noise.resamples")
    _expect(noise.get("std"), (dict,), "noise.std")
    for key, value in (noise.get("std") or {}).items():
        _expect(value, (int, float), f"noise.std.{key}")
        if value is not None and value < 0:
            raise BenchError(f"noise.std.{key}: {value!r} is negative; a standard deviation cannot be")
    reference, samples = result.get("reference") or {}, result.get("samples") or {}
    for key in ("name", "path", "sha256"):
        _expect(reference.get(key), (str,), f"reference.{key}")
    for where, block, key in (("reference", reference, "resolution"), ("reference", reference, "num_ref"),
                              ("samples", samples, "num_samples"), ("samples", samples, "resolution")):
        _expect(block.get(key), (int,), f"{where}.{key}")
        if block.get(key) is not None and block[key] < 0:
            raise BenchError(f"{where}.{key}: {block[key]!r} is negative")
    _expect(samples.get("path"), (str,), "samples.path")
    settings = result.get("settings") or {}
    _expect(settings.get("generator_config"), (dict,), "settings.generator_config")
    for where, block in (("settings", settings), ("settings.generator_config", settings.get("generator_config") or {})):
        for key, types in SETTING_TYPES.items():
            _expect(block.get(key), types, f"{where}.{key}")
    provenance = result.get("provenance") or {}
    _expect(provenance.get("bench"), (str,), "provenance.bench")
    _expect(provenance.get("versions"), (dict,), "provenance.versions")
    for key, value in (result.get("timing") or {}).items():
        _expect(value, (int, float), f"timing.{key}")
    for key, value in (result.get("outputs") or {}).items():
        _expect(value, (str,), f"outputs.{key}")


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
        check(result)
    except BenchError as err:
        raise BenchError(f"{path}: {err}") from None
    return result
