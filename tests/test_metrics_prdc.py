"""Density and coverage, and prdc-style (strict) precision/recall, against the official `prdc` package (0.2,
clovaai/generative-evaluation-prdc: scikit-learn distance matrices, `np.argpartition` radii) and a hand-worked
case; the blockwise computation against prdc's full matrices whatever the block size."""

import numpy as np
import pytest
from prdc import compute_prdc

from bench.errors import BenchError
from bench.metrics import precision_recall
from bench.metrics.density_coverage import density_coverage


def official(ref, sample, k):
    """prdc's four numbers (its progress line on stdout is not ours to test)."""
    return {key: float(value) for key, value in compute_prdc(ref, sample, nearest_k=k).items()}


@pytest.fixture(scope="module")
def sets():
    """Overlapping clouds of unequal sizes, the samples narrower and shifted: neither number is 0 or 1."""
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((400, 24))
    sample = np.concatenate([rng.standard_normal((250, 24)) * 0.6 + 0.6, rng.standard_normal((60, 24)) * 2.5])
    return ref, sample


@pytest.mark.parametrize("k, batch_size, every", [(5, 10000, 1), (5, 128, 1), (3, 97, 1), (1, 400, 1),
                                                 (8, 7, 6)])  # the last: blocks narrower than the k + 1 kept
def test_density_and_coverage_equal_the_official_package(sets, k, batch_size, every):
    ref, sample = (x[::every] for x in sets)
    expected = official(ref, sample, k)
    density, coverage = density_coverage(ref, sample, k=k, batch_size=batch_size, progress=False)
    assert 0.05 < expected["coverage"] < 0.95 and 0.05 < expected["density"]
    # float64 distances on both sides, compared the same way: the same counts, so equal up to the last division
    assert density == pytest.approx(expected["density"], rel=1e-12)
    assert coverage == pytest.approx(expected["coverage"], rel=1e-12)


def test_float32_features_agree_with_prdc_to_rounding(sets):
    """prdc computes float32 distances for float32 features; here always float64. Near-ties may differ by a count."""
    ref, sample = (x.astype(np.float32) for x in sets)
    expected = official(ref, sample, 5)
    density, coverage = density_coverage(ref, sample, progress=False)
    assert density == pytest.approx(expected["density"], abs=2 / (5 * len(sample)))
    assert coverage == pytest.approx(expected["coverage"], abs=2 / len(ref))


def test_strict_precision_recall_equal_the_official_package(sets):
    """dgm-eval's precision/recall: prdc's k=5, exact distances, distance < radius."""
    ref, sample = sets
    expected = official(ref, sample, 5)
    got = precision_recall(ref, sample, k=5, exact=True, strict=True, batch_size=150, progress=False)
    assert got == pytest.approx((expected["precision"], expected["recall"]), rel=1e-12)


def test_hand_worked_one_dimensional_case():
    """k=1: each reference's radius is the distance to its nearest other reference.

    references 0, 1, 3, 6, 10, 15 -> radii 1, 1, 2, 3, 4, 5; samples 0.5, 2.9, 8, 20:
      0.5 lies in the balls of 0 and 1 (0.5 < 1 twice); 2.9 in the ball of 3 (0.1 < 2); 8 in those of 6 (2 < 3) and
      10 (2 < 4); 20 in none: |20 - 15| = 5 is not < 5.  density = (2 + 1 + 2 + 0) / (1 * 4) = 1.25
      nearest samples: 0 -> 0.5 (0.5 < 1), 1 -> 0.5 (< 1), 3 -> 2.9 (< 2), 6 -> 8 (2 < 3), 10 -> 8 (2 < 4),
      15 -> 20 (5, not < 5).  coverage = 5 / 6
    With `<=` the boundary cases would count: density 1.5, coverage 1; strictness is prdc's.
    """
    ref = np.array([[0.0], [1.0], [3.0], [6.0], [10.0], [15.0]])
    sample = np.array([[0.5], [2.9], [8.0], [20.0]])
    assert density_coverage(ref, sample, k=1, batch_size=4, progress=False) == pytest.approx((1.25, 5 / 6))
    assert official(ref, sample, 1)["density"] == pytest.approx(1.25)  # and prdc agrees with the hand count


def test_identical_sets_cover_everything():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 6))
    density, coverage = density_coverage(x, x.copy(), progress=False)
    assert coverage == 1.0  # every reference's nearest sample is itself, at distance 0 < its radius
    assert density == pytest.approx(official(x, x.copy(), 5)["density"], rel=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be a positive integer"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"k": 6}, "at least 7 samples"),
])
def test_bad_arguments_are_refused(kwargs, match):
    rng = np.random.default_rng(2)
    with pytest.raises(BenchError, match=match):
        density_coverage(rng.standard_normal((6, 3)), rng.standard_normal((6, 3)), progress=False, **kwargs)


def test_bad_features_are_refused():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((10, 3))
    with pytest.raises(BenchError, match="feature dimensions differ"):
        density_coverage(ref, rng.standard_normal((10, 4)), progress=False)
    bad = ref.copy()
    bad[2, 1] = np.nan
    with pytest.raises(BenchError, match="NaN or inf"):
        density_coverage(ref, bad, progress=False)
