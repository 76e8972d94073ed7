"""Scoring features a run already has against a reference batch, the way ADM's evaluator does.

`bench run` extracts Inception features while it samples, so it scores activations rather than an `.npz`:
the same five numbers `bench.evaluate.evaluate` gives for the saved batch, from the same metric functions.
Reference activations come from `bench.evaluate.compute_activations` (and its cache); FID/sFID statistics
from the reference's precomputed `mu`/`sigma`/`mu_s`/`sigma_s` where it carries them, as ADM does.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from bench.batches import has_images, open_images, read_statistics
from bench.errors import BenchError

Scorer = Callable[[dict[str, np.ndarray]], dict[str, Any]]


def adm_scorer(ref_path, extractor, *, exact: bool = False, batch_size: int = 64) -> Scorer:
    """A scorer of sample features {"pool", "spatial", "logits"?} against the reference at `ref_path`."""
    from bench.evaluate import compute_activations, softmax
    from bench.metrics import feature_statistics, frechet_distance, inception_score, precision_recall

    stats = read_statistics(ref_path)
    ref_acts = compute_activations(open_images(ref_path), extractor, batch_size) if has_images(ref_path) else None
    if stats is None:
        if ref_acts is None:
            raise BenchError(f"{ref_path}: the reference has neither images ('arr_0') nor statistics (mu, sigma)")
        mu, sigma = feature_statistics(ref_acts.pool)
        mu_s, sigma_s = feature_statistics(ref_acts.spatial)
        stats = {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s}

    def score(features: dict[str, np.ndarray]) -> dict[str, Any]:
        mu, sigma = feature_statistics(features["pool"])
        mu_s, sigma_s = feature_statistics(features["spatial"])
        result: dict[str, Any] = {"inception_score": None}
        if features.get("logits") is not None:
            result["inception_score"] = inception_score(softmax(features["logits"]))
        else:
            result["inception_score_unavailable"] = getattr(extractor, "logits_unavailable_reason", "no logits")
        result["fid"] = frechet_distance(mu, sigma, stats["mu"], stats["sigma"])
        result["sfid"] = frechet_distance(mu_s, sigma_s, stats["mu_s"], stats["sigma_s"])
        if ref_acts is not None:
            result["precision"], result["recall"] = precision_recall(ref_acts.pool, features["pool"], exact=exact)
        else:
            result["precision"] = result["recall"] = None
            result["precision_recall_unavailable"] = f"{ref_path} holds statistics only, no reference images"
        result["num_ref"] = None if ref_acts is None else len(ref_acts)
        result["num_samples"] = len(features["pool"])
        return result

    score.provenance = {"distances": "exact (float64)" if exact else "ADM (float16, as TensorFlow)"}
    return score
