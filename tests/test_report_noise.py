"""bench.metrics.bootstrap: the sampling-noise estimate `bench report` judges deltas with."""

import numpy as np
import pytest

from bench.errors import BenchError
from bench.features.featureset import FeatureSet
from bench.metrics import registry
from bench.metrics.bootstrap import bootstrap_std, noise_record

DIM, N = 6, 400


def _sample(seed: int, n: int = N, shift: float = 0.3) -> FeatureSet:
    return FeatureSet("samples", {"pool": np.random.default_rng(seed).normal(shift, 1.0, (n, DIM))})


@pytest.fixture(scope="module")
def ref() -> FeatureSet:
    return FeatureSet("reference", {"pool": np.random.default_rng(1000).normal(0.0, 1.0, (2000, DIM))})


def test_bootstrap_std_is_the_spread_of_fresh_draws(ref):
    """Over fresh sample sets from the same distribution (another sampling seed of the same generator), FID
    varies by about what the bootstrap of one set says: within a factor of two here."""
    metrics = registry.select("fid")
    fresh = [registry.score(ref, _sample(seed), metrics)["metrics"]["fid"] for seed in range(40)]
    estimate = bootstrap_std(ref, _sample(0), metrics, resamples=40, seed=0)["fid"]
    assert 0.5 < estimate / np.std(fresh, ddof=1) < 2.0


def test_seeded_and_per_output(ref):
    metrics = registry.select("fid,precision_recall")
    first = bootstrap_std(ref, _sample(1), metrics, resamples=5, seed=3)
    assert first == bootstrap_std(ref, _sample(1), metrics, resamples=5, seed=3)
    assert first != bootstrap_std(ref, _sample(1), metrics, resamples=5, seed=4)
    assert set(first) == {"fid", "precision", "recall"} and all(v > 0 for v in first.values())


def test_unavailable_outputs_are_left_out(ref):
    """No logits: the Inception Score cannot be computed, so it has no spread (not a spread of 0)."""
    std = bootstrap_std(ref, _sample(2), registry.select("fid,inception_score"), resamples=3)
    assert set(std) == {"fid"}


def test_refusals(ref):
    with pytest.raises(BenchError, match="at least 2 resamples"):
        bootstrap_std(ref, _sample(0), registry.select("fid"), resamples=1)
    stats_only = FeatureSet("stats", given_statistics={"pool": (np.zeros(DIM), np.eye(DIM))})
    with pytest.raises(BenchError, match="statistics alone cannot be resampled"):
        bootstrap_std(ref, stats_only, registry.select("fid"))


def test_noise_record_is_the_result_block():
    assert noise_record({"fid": 0.01}, 10) == {"method": "bootstrap", "resamples": 10, "seed": 0, "std": {"fid": 0.01}}
