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

from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.features.featureset import FeatureSet
from bench.metrics.registry import Metric, ScoreOptions, score

METHOD = "bootstrap"


def bootstrap_std(ref: FeatureSet, sample: FeatureSet, metrics: list[Metric], resamples: int = 10, seed: int = 0,
                  options: ScoreOptions = ScoreOptions()) -> dict[str, float]:
    """Standard deviation (ddof=1) of each metric output over `resamples` bootstrap resamples of the sample rows.

    The reference side is not resampled: every run is scored against the same fixed reference batch, so its
    sampling error is common to the runs a board compares. Outputs a metric cannot compute (no logits, too few
    rows) are left out rather than reported as 0; so are the non-finite ones.
    """
    if resamples < 2:
        raise BenchError(f"a bootstrap needs at least 2 resamples to have a spread, got {resamples}")
    if not sample.has_images:
        raise BenchError(f"{sample.label}: a bootstrap resamples feature rows; statistics alone cannot be resampled")
    n = sample.num_images
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for _ in range(resamples):
        rows = rng.integers(0, n, size=n)
        scored = score(ref, sample.subset(rows), metrics, options)
        for key, value in scored["metrics"].items():
            if value is not None and np.isfinite(value):
                values.setdefault(key, []).append(float(value))
    return {key: float(np.std(v, ddof=1)) for key, v in values.items() if len(v) == resamples}


def noise_record(std: dict[str, float], resamples: int, seed: int = 0) -> dict[str, Any]:
    """The result's `noise` block (bench/result.py) for `bootstrap_std`'s output."""
    return {"method": METHOD, "resamples": resamples, "seed": seed, "std": dict(std)}
