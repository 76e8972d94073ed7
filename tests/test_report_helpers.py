"""Synthetic result files for the `bench report` tests (no tests here), in the schema `bench.result` writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.result import Result

REF_A, REF_B = "a" * 64, "b" * 64
INCEPTION = "c" * 64


def write_result(folder: Path, run_id: str | None, fid: float | None, *, cfg: float | None = 1.5,
                 model: str | None = "GPT-B", image_size: int = 384, num_samples: int = 50000, ref: str = REF_A,
                 noise: dict[str, float] | None = None, warnings: tuple[str, ...] = (), name: str = "result.json",
                 grid: str | None = None, created: str = "2026-12-01T10:00:00Z", **metrics: Any) -> Path:
    """A `bench run` result of a LlamaGen-style generator (model "GPT-B" = the paper's LlamaGen-B)."""
    generator_config: dict[str, Any] = {"image_size": image_size, "eval_size": 256, "top_k": 0, "top_p": 1.0}
    if model is not None:
        generator_config["gpt_model"] = model
    if cfg is not None:
        generator_config["cfg_scale"] = cfg
    result = Result(
        task="sample", run_id=run_id, generator="llamagen-b",
        metrics={"fid": fid, "inception_score": 150.0, "precision": 0.8, "recall": 0.5, **metrics},
        reference={"name": "imagenet256", "path": "/cache/VIRTUAL_imagenet256_labeled.npz", "sha256": ref,
                   "num_ref": 10000, "resolution": 256},
        samples={"path": None, "num_samples": num_samples, "resolution": 256},
        settings={"generator_config": generator_config, "num_samples": num_samples, "seed": 0,
                  "run_id": run_id, "runs_dir": str(folder.parent)},
        provenance={"bench": "0.1.0", "versions": {"torch": "2.13.0"}, "device": "cpu",
                    "features": {"inception": {"sha256": INCEPTION, "path": "/cache/inception.pth"}},
                    "distances": "ADM float16"},
        noise={"method": "bootstrap", "resamples": 10, "std": noise} if noise else {},
        timing={"wall_time_s": 100.0 + (fid if isinstance(fid, (int, float)) else 0), "images_per_s": 500.0},
        warnings=list(warnings), outputs={"grid": grid} if grid else {}, created=created)
    folder.mkdir(parents=True, exist_ok=True)
    return result.write(folder / name)


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path
