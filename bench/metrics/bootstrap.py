"""How much a metric moves when the same generator is sampled again: a bootstrap over the sample images.

"Did my change help?" needs a yardstick. FID of 50,000 samples still carries sampling noise (a few hundredths
for a strong ImageNet model), so a delta of 0.02 between two runs may be nothing. `bootstrap_std` resamples the
sample batch's rows with replacement, recomputes each metric against the same reference, and returns the
standard deviation over resamples. Results store it as

    "noise": {"method": "bootstrap", "resamples": 10, "seed": 0, "std": {"fid": 0.011, "inception_score": 1.9}}

and `bench report` calls a delta "beyond noise" when |delta| > 2 * sqrt(std_a^2 + std_b^2).

What the number is and is not (docs/metrics.md, "Sampling noise"): the reference batch is held fixed; it
estimates the spread over fresh draws of N samples from this trained generator, not over training runs; the
resampled FIDs are biased upwards, so only their spread is used; 10 resamples give the std itself to about
+-25%.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from bench.errors import BenchError
from bench.features.featureset import FeatureSet
from bench.metrics.registry import Metric, ScoreOptions, score

METHOD = "bootstrap"


def bootstrap_spread(values: Callable[[np.ndarray], dict[str, float | None]], n: int, resamples: int = 10,
                     seed: int = 0) -> dict[str, float]:
    """Standard deviation (ddof=1) of each of `values(rows)` over `resamples` draws of n row indices with
    replacement. Outputs a resample cannot compute (None: no logits, too few rows) or that are not finite are left
    out rather than reported as 0: a key is kept only where every resample gave a number."""
    if resamples < 2:
        raise BenchError(f"a bootstrap needs at least 2 resamples to have a spread, got {resamples}")
    rng = np.random.default_rng(seed)
    collected: dict[str, list[float]] = {}
    for _ in range(resamples):
        for key, value in values(rng.integers(0, n, size=n)).items():
            if isinstance(value, (int, float, np.floating)) and np.isfinite(value):
                collected.setdefault(key, []).append(float(value))
    return {key: float(np.std(v, ddof=1)) for key, v in collected.items() if len(v) == resamples}


def bootstrap_std(ref: FeatureSet, sample: FeatureSet, metrics: list[Metric], resamples: int = 10, seed: int = 0,
                  options: ScoreOptions = ScoreOptions()) -> dict[str, float]:
    """`bootstrap_spread` of the metrics of `sample`'s rows against `ref`.

    The reference side is not resampled: every run is scored against the same fixed reference batch, so its
    sampling error is common to the runs a board compares.
    """
    if not sample.has_images:
        raise BenchError(f"{sample.label}: a bootstrap resamples feature rows; statistics alone cannot be resampled")
    return bootstrap_spread(lambda rows: score(ref, sample.subset(rows), metrics, options)["metrics"],
                            sample.num_images, resamples, seed)


def noise_record(std: dict[str, float], resamples: int, seed: int = 0) -> dict[str, Any]:
    """The result's `noise` block (bench/result.py) for `bootstrap_std`'s output."""
    return {"method": METHOD, "resamples": resamples, "seed": seed, "std": dict(std)}
