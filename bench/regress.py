"""`bench regress`: an rFID regression gate for a tokenizer, cheap enough to run in CI on every change.

A tokenizer's reconstructions of a fixed validation split are scored against the split's originals: rFID
(Fréchet distance of Inception pool_3 features, reconstructions vs originals, the reading LlamaGen-derived code
reports), PSNR and SSIM (data_range 1 on [0, 1] images). The numbers are compared with a baseline file that
stores, per tokenizer preset, the values, a tolerance for each, and a fingerprint of how they were measured (the
architecture, the data and the Inception weights): a baseline for another tokenizer or another split is refused
rather than compared. The checkpoint is what the gate judges, so a new checkpoint of the same tokenizer is
compared with the baseline (the file the baseline was measured on is recorded beside it).

    bench regress --tokenizer llamagen-demo-vq --baseline reference_stats/baselines.json
    bench regress --tokenizer llamagen-vq16 --vq-ckpt mine.pt --data /imagenet/val-5k --baseline b.json --update

Tolerances absorb float rounding across CPU kinds (AVX2 vs AVX-512 GEMMs can move a nearest-codebook choice),
not real changes: the defaults are stated in `DEFAULT_TOLERANCE`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bench import atomic
from bench.batches import ArrayImages, open_images
from bench.errors import BenchError
from bench.features.cache import extract_source
from bench.generator import Generator
from bench.metrics import feature_statistics, frechet_distance, psnr, ssim

#: allowed worsening before the gate fails: rFID up by 2% + 0.05, PSNR down by 0.05 dB, SSIM down by 0.002
DEFAULT_TOLERANCE = {"rfid": {"relative": 0.02, "absolute": 0.05}, "psnr": {"absolute": 0.05},
                     "ssim": {"absolute": 0.002}}
LOWER_IS_BETTER = {"rfid": True, "psnr": False, "ssim": False}


def build_tokenizer(preset: str, vq_ckpt: str | None, device: str, allow_download: bool) -> tuple[Generator, dict]:
    """The tokenizer preset with its files resolved, verified and loaded (as `bench run` loads it); returns it and
    {file: sha256}."""
    from bench.run.executor import RunSettings, build_generator

    def check(generator: Generator) -> None:
        if not generator.can_reconstruct:
            raise BenchError(f"generator {preset!r} is not a tokenizer: the gate needs one, e.g. llamagen-demo-vq")

    settings = RunSettings(generator=preset, ckpt=vq_ckpt, device=device, allow_download=allow_download)
    generator, files = build_generator(settings, device, check=check, with_reference=False)
    return generator, {name: entry["sha256"] for name, entry in files.items()}


def load_split(data: str | None, image_size: int) -> tuple[np.ndarray, str]:
    """The validation images (uint8 NHWC) and their digest: a folder center-cropped to the tokenizer's size, an
    npz as it is, or by default the demo dataset's val split (built from scikit-image's photographs)."""
    if data is None:
        from bench.demo.photos import build_split, fingerprint

        images, labels = build_split("val")
        if images.shape[1] != image_size:
            raise BenchError(f"the demo val split is {images.shape[1]} px but the tokenizer works at {image_size}: "
                             "pass --data")
        return images, "demo-val:" + fingerprint(images, labels)
    source = open_images(data, center_crop=image_size if Path(data).is_dir() else None)
    images = np.concatenate(list(source.batches(256)))
    if images.shape[1:3] != (image_size, image_size):
        raise BenchError(f"{data}: holds {images.shape[1]}x{images.shape[2]} images; the tokenizer reconstructs "
                         f"{image_size}x{image_size}")
    return images, hashlib.sha256(images.tobytes()).hexdigest()


def measure(generator: Generator, images: np.ndarray, extractor, batch_size: int = 32) -> dict[str, float]:
    """rFID (reconstructions vs originals), mean PSNR and mean SSIM over the split, at the preset's eval size.

    The originals' features come from the activation cache after the first call (keyed by their content and
    the Inception weights), so a gate costs one Inception pass, over the reconstructions."""
    originals, recons = [], []
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch_size), desc=f"reconstruct {generator.name}", unit="batch"):
            batch = np.ascontiguousarray(images[start:start + batch_size])
            originals.append(generator.to_eval_size(batch))
            recons.append(generator.to_eval_size(generator.reconstruct(batch)))
    x, y = np.concatenate(originals), np.concatenate(recons)
    fx = extract_source(ArrayImages(x, "originals"), [extractor], batch_size)["pool"]
    fy = extractor.extract(y)["pool"]
    xf, yf = x.astype(np.float64) / 255, y.astype(np.float64) / 255
    return {"rfid": frechet_distance(*feature_statistics(fy), *feature_statistics(fx)),
            "psnr": float(np.mean(psnr(yf, xf, data_range=1.0))),
            "ssim": float(np.mean(ssim(yf, xf, data_range=1.0)))}


def allowed(metric: str, baseline: float, tolerance: dict[str, float]) -> float:
    """The worst value that still passes."""
    slack = tolerance.get("absolute", 0.0) + tolerance.get("relative", 0.0) * abs(baseline)
    return baseline + slack if LOWER_IS_BETTER[metric] else baseline - slack


@dataclass
class Verdict:
    table: list[dict[str, Any]]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def compare(current: dict[str, float], entry: dict[str, Any]) -> Verdict:
    """Current numbers against one baseline entry: a table row per metric and the reasons it fails, if any."""
    rows, failures = [], []
    for metric, value in current.items():
        base = entry["metrics"][metric]
        tolerance = entry.get("tolerance", DEFAULT_TOLERANCE)[metric]
        limit = allowed(metric, base, tolerance)
        ok = value <= limit if LOWER_IS_BETTER[metric] else value >= limit
        rows.append({"metric": metric, "baseline": base, "current": value, "delta": value - base, "limit": limit,
                     "status": "ok" if ok else "WORSE"})
        if not ok:
            failures.append(f"{metric} {value:.4f} is worse than the baseline {base:.4f} beyond the tolerance "
                            f"(limit {limit:.4f})")
    return Verdict(rows, failures)


def read_baselines(path: Path, update: bool = False) -> dict[str, Any]:
    """The baseline file's entries; a missing file is an error unless it is about to be written (`update`)."""
    if not path.exists():
        if update:
            return {}
        raise BenchError(f"--baseline {path}: no such file (record a baseline with --update)")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise BenchError(f"--baseline {path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise BenchError(f"--baseline {path}: expected an object keyed by tokenizer preset")
    return data


def check_fingerprint(preset: str, entry: dict[str, Any], fingerprint: dict[str, Any], path: Path) -> None:
    """Refuse a baseline measured on another tokenizer, another split or another Inception."""
    recorded = entry.get("fingerprint", {})
    differing = [k for k in sorted(set(recorded) | set(fingerprint)) if recorded.get(k) != fingerprint.get(k)]
    if differing:
        lines = "\n".join(f"  {k}: baseline {recorded.get(k)!r}, now {fingerprint.get(k)!r}" for k in differing)
        raise BenchError(f"--baseline {path}: the entry for {preset!r} was measured on something else:\n{lines}\n"
                         "Compare like with like, or record a new baseline with --update.")


def regress(preset: str, baseline_path: str | Path, *, vq_ckpt: str | None = None, data: str | None = None,
            update: bool = False, device: str = "cpu", allow_download: bool = True,
            extractor=None) -> tuple[Verdict | None, dict[str, float]]:
    """Measure the tokenizer; with `update`, write the baseline (atomically) and return (None, numbers);
    otherwise compare against the stored entry and return the verdict."""
    baseline_path = Path(baseline_path)
    baselines = read_baselines(baseline_path, update)
    if not update and preset not in baselines:
        known = ", ".join(sorted(baselines)) or "none"
        raise BenchError(f"--baseline {baseline_path}: no entry for {preset!r} (it has: {known}); "
                         "record one with --update")
    generator, files = build_tokenizer(preset, vq_ckpt, device, allow_download)
    images, data_digest = load_split(data, generator.image_size)
    if extractor is None:
        from bench.inception import load_extractor

        extractor = load_extractor(device=device, allow_download=allow_download)
    # What must match for numbers to compare: the architecture, the split, the scoring. The checkpoint itself is
    # what the gate judges, so its digest is recorded beside the baseline, not required to match.
    fingerprint = {"model": generator.config().get("model"), "image_size": generator.image_size,
                   "eval_size": generator.eval_size, "data": data_digest, "num_images": int(len(images)),
                   "inception_features": extractor.provenance.get("features_sha256")}
    if not update:
        check_fingerprint(preset, baselines[preset], fingerprint, baseline_path)
    current = measure(generator, images, extractor)
    if update:
        previous = baselines.get(preset, {})
        baselines[preset] = {"metrics": current, "tolerance": previous.get("tolerance", DEFAULT_TOLERANCE),
                             "fingerprint": fingerprint, "measured_files": files}
        atomic.write_json(baseline_path, baselines)
        return None, current
    return compare(current, baselines[preset]), current
