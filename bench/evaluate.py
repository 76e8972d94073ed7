"""`bench eval`: two batches in, the selected metrics out -- by default ADM's evaluator's five numbers.

Mirrors openai/guided-diffusion `evaluations/evaluator.py`: FID/sFID statistics come from a batch's precomputed
`mu`/`sigma`/`mu_s`/`sigma_s` when it carries them, exactly as ADM does, and Precision/Recall (and KID) read
the reference's own image features. Which feature arrays are extracted follows from the selected metrics
(`bench.metrics.registry`); each network runs once per image block and its activations are cached
(`bench.features.cache`), so scoring many sample batches against one reference extracts the reference once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.batches import (FolderImages, NpzImages, has_images, open_images, read_feature_rows, read_labels,
                           read_statistics)
from bench.download import sha256_file
from bench.errors import BenchError
from bench.features import FeatureSet, weights_warnings
from bench.features.cache import extract_source
from bench.features.featureset import statistics_keys
from bench.metrics import registry
from bench.metrics.registry import PAPER_NUM_SAMPLES, Metric, ScoreOptions  # noqa: F401  (re-exported)
from bench.result import Result, metric_value, package_versions


def arrays_of(extractor) -> dict[str, int]:
    """The arrays an extractor provides (name -> width); extractors written before the registry (pool, spatial and
    logits when `has_logits`) are read as Inception."""
    arrays = getattr(extractor, "arrays", None)
    if arrays is not None:
        return dict(arrays)
    return {"pool": 2048, "spatial": 2023, **({"logits": 1008} if getattr(extractor, "has_logits", False) else {})}


def extractors_for(extractors: Sequence, arrays: Sequence[str]) -> list:
    """The extractors that provide at least one wanted array, each once."""
    return [e for e in extractors if set(arrays_of(e)) & set(arrays)]


def _unavailable_arrays(extractors: Sequence, wanted: Sequence[str]) -> dict[str, str]:
    """Wanted arrays no loaded extractor provides, with the reason (softmax weights missing, network not loaded)."""
    provided = {a for e in extractors for a in arrays_of(e)}
    reasons = {}
    for array in wanted:
        if array in provided:
            continue
        reason = next((getattr(e, "logits_unavailable_reason", None) for e in extractors
                       if array == "logits" and getattr(e, "logits_unavailable_reason", None)), None)
        reasons[array] = reason or f"no loaded feature network provides {array!r}"
    return reasons


def load_batch(path: str | Path, extractors: Sequence, arrays: dict[str, str] | Sequence[str], role: str = "reference",
               batch_size: int = 64, cache: bool = True, labels: bool = False) -> FeatureSet:
    """One batch as a `FeatureSet`: its precomputed statistics (ADM's keys, `mu_<array>` for others), the feature
    rows a reference stores (`feat_<array>`), and the features of its images for every other wanted array whose rows
    are needed or whose statistics it lacks; with `labels`, the class labels of an npz's images (`arr_1`).

    `arrays`: array -> "features" | "statistics" (what this side must provide), or a list meaning "features".
    """
    path = Path(path)
    need = dict(arrays) if isinstance(arrays, dict) else {a: "features" for a in arrays}
    stored = (read_statistics(path) or {}) if role == "reference" else {}  # ADM: samples' statistics are computed
    given = {}
    for array in need:
        mu_key, sigma_key = statistics_keys(array)
        if mu_key in stored and sigma_key in stored:
            given[array] = (stored[mu_key], stored[sigma_key])
    # rows stored with the reference take precedence over extraction, as its statistics do
    features = {k: v for k, v in (read_feature_rows(path) if role == "reference" else {}).items() if k in need}
    to_extract = [a for a, what in need.items() if a not in features and (what == "features" or a not in given)]
    num_images = None
    if has_images(path):
        source = open_images(path)
        num_images = source.num_images
        if num_images < 2:
            raise BenchError(f"{path}: the {role} batch has {num_images} image(s); at least 2 are needed for a "
                             "covariance (and ~50k samples / 10k references for paper-comparable numbers)")
        for array, rows in features.items():
            if len(rows) != num_images:
                raise BenchError(f"{path}: feat_{array} holds {len(rows)} rows for {num_images} images; stored "
                                 "features are one row per image of arr_0")
        running = extractors_for(extractors, to_extract)
        if running:
            features.update({k: v for k, v in extract_source(source, running, batch_size, cache).items() if k in need})
    elif not given and not features:
        raise BenchError(f"{path}: the {role} batch has neither images ('arr_0') nor statistics (mu, sigma, ...)")
    class_labels = read_labels(path, num_images) if labels and num_images is not None else None
    return FeatureSet(str(path), features, given, _unavailable_arrays(extractors, [a for a in need if a not in
                                                                                   features]),
                      num_images, labels=class_labels)


def distances_label(exact: bool) -> str:
    return "exact (float64)" if exact else "ADM (float16, as TensorFlow)"


def image_sizes(path: str | Path) -> set[tuple[int, int]]:
    """The distinct (height, width) of a batch's images, read from headers; empty for statistics only."""
    path = Path(path)
    if path.is_dir():
        return {(h, w) for w, h in FolderImages(path).sizes()}
    return {tuple(NpzImages(path).shape[1:3])} if has_images(path) else set()


def size_checks(ref_path: str | Path, sample_path: str | Path, force: bool) -> tuple[list[str], dict[str, int | None]]:
    """Warnings for folders of mixed sizes; batches at different resolutions are refused unless `force` (as
    `bench run` refuses them): ADM scores samples against the reference batch of their own resolution.
    Returns the warnings and each side's resolution (None when mixed or unknown)."""
    sizes = {"reference": image_sizes(ref_path), "sample": image_sizes(sample_path)}
    shown = {name: ", ".join(f"{h}x{w}" for h, w in sorted(s)) for name, s in sizes.items()}
    out = [f"the {name} images come in {len(s)} sizes ({shown[name]}): each is scored as it is, uncropped; "
           "`bench ref build` makes a batch with ADM's center crop" for name, s in sizes.items() if len(s) > 1]
    if len(sizes["reference"]) == len(sizes["sample"]) == 1 and sizes["reference"] != sizes["sample"]:
        message = (f"reference images are {shown['reference']} but samples are {shown['sample']}: ADM scores "
                   "samples against the reference batch of their own resolution")
        if not force:
            raise BenchError(message + ". Pass the matching reference, or --force to score anyway.")
        out.append(message + " (--force given)")
    resolution = {name: (next(iter(s))[0] if len(s) == 1 and next(iter(s))[0] == next(iter(s))[1] else None)
                  for name, s in sizes.items()}
    return out, resolution


def content_digest(path: str | Path) -> str:
    """sha256 of a batch file, or the content digest of an image folder."""
    path = Path(path)
    return open_images(path).content_hash() if path.is_dir() else sha256_file(path)


def evaluate(ref_path: str | Path, sample_path: str | Path, extractor=None, *, extractors: Sequence = (),
             metrics: list[Metric] | None = None, exact: bool = False, kid_subset_size: int | None = None,
             batch_size: int = 64, cache: bool = True, with_kid: bool = False, force: bool = False,
             ref_name: str | None = None) -> dict[str, Any]:
    """Score a sample batch against a reference batch as ADM's evaluator does; returns the result (schema v1).
    `ref_name` is the reference's registered name where it was given by one (`bench eval demo64 ...`).

    `extractor` is the Inception extractor, `extractors` any further networks (DINOv2); `metrics` defaults to
    ADM's five (`with_kid` adds KID). Unavailable metrics are None with their reason under `unavailable`.
    """
    metrics = list(metrics or registry.select("+kid" if with_kid else None))
    extractors = [e for e in ([extractor] if extractor is not None else []) + list(extractors)]
    if not has_images(sample_path):  # found now, not after the reference's activations
        raise BenchError(f"{sample_path}: the sample batch has no images ('arr_0'); statistics alone cannot give "
                         "Inception Score or Precision/Recall")
    warnings, resolution = size_checks(ref_path, sample_path, force)
    warnings += weights_warnings(extractors)
    need = registry.arrays_needed(metrics)
    ref = load_batch(ref_path, extractors, need, "reference", batch_size, cache)
    sample = load_batch(sample_path, extractors, list(need), "sample", batch_size, cache,
                        labels=any(m.uses_labels for m in metrics))
    options = ScoreOptions(exact=exact, kid_subset_size=kid_subset_size)
    scored = registry.score(ref, sample, metrics, options)
    widths = {k: v.shape[1] for k, v in sample.arrays.items()}
    warnings += registry.sample_size_warnings(sample.num_images, widths, metrics)
    return Result(
        task="eval",
        metrics=scored["metrics"], unavailable=scored["unavailable"], details=scored["details"],
        reference={"name": ref_name or Path(ref_path).name, "path": str(Path(ref_path).resolve()),
                   "sha256": content_digest(ref_path), "resolution": resolution["reference"],
                   "num_ref": ref.num_images},
        samples={"path": str(Path(sample_path).resolve()), "sha256": content_digest(sample_path),
                 "resolution": resolution["sample"], "num_samples": sample.num_images},
        settings={"metrics": [m.name for m in metrics], "distances": distances_label(exact),
                  "kid_subset_size": kid_subset_size},
        provenance={"bench": package_versions().get("bench"), "versions": package_versions(),
                    "features": {getattr(e, "name", "inception"): getattr(e, "provenance", None) for e in extractors},
                    "distances": distances_label(exact)},
        warnings=warnings,
    ).to_json()


def summary_lines(result: dict[str, Any]) -> str:
    """ADM's five lines, in its order and wording, then one line per further metric; a metric without a value says
    why ("unavailable (...)"). `bench eval` and `bench run` print results with it."""
    metrics, unavailable = result["metrics"], result.get("unavailable", {})

    def show(key: str) -> str:
        value = metrics.get(key)
        return repr(metric_value(value)) if value is not None else \
            f"unavailable ({unavailable.get(key, 'not computed')})"

    adm = [("Inception Score", "inception_score"), ("FID", "fid"), ("sFID", "sfid"), ("Precision", "precision"),
           ("Recall", "recall")]
    lines = [f"{title}: {show(key)}" for title, key in adm if key in metrics]
    for key in metrics:
        if key in dict((k, t) for t, k in adm):
            continue
        line = f"{registry.OUTPUT_TITLES.get(key, key)}: {show(key)}"
        if registry.OUTPUTS.get(key) is not None and registry.OUTPUTS[key].name.startswith("kid") and \
                metrics[key] is not None:
            details, network = result.get("details", {}), key.removeprefix("kid")  # "" or "_dinov2"
            spread = details.get(f"kid_std{network}")
            line += (f" +- {spread!r}" if spread is not None else " (spread unavailable)") + \
                    f" (subsets of {details.get(f'kid_subset_size{network}')})"
        lines.append(line)
    return "\n".join(lines)
