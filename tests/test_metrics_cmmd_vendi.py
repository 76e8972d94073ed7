"""CMMD's MMD against a direct float64 numpy formula (full kernel matrices) and a hand-worked case, and the Vendi
score against the `vendi-score` package (0.0.3) and closed forms."""

import math

import numpy as np
import pytest
from vendi_score import vendi

from bench.errors import BenchError
from bench.metrics.cmmd import SCALE, SIGMA, cmmd, mmd_rbf
from bench.metrics.vendi import vendi_per_class, vendi_score


def unit_rows(rng, n, d=16, shift=0.0):
    x = rng.standard_normal((n, d)) + shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def mmd_numpy(x, y, sigma=SIGMA):
    """google-research/cmmd's estimator written out with full float64 matrices: 1000 (mean Kxx + mean Kyy - 2 mean Kxy)."""
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * sigma**2))

    return 1000 * (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())


@pytest.mark.parametrize("batch_size", [5000, 64, 37])
def test_mmd_equals_the_direct_formula_whatever_the_blocks(batch_size):
    rng = np.random.default_rng(0)
    x, y = unit_rows(rng, 150), unit_rows(rng, 110, shift=0.3)  # unequal sizes, as 10k refs vs 50k samples
    expected = mmd_numpy(x, y)
    assert expected > 1e-3
    assert mmd_rbf(x, y, batch_size=batch_size) == pytest.approx(expected, rel=1e-10)
    assert cmmd(y, x, batch_size=batch_size, progress=False) == pytest.approx(expected, rel=1e-10)  # symmetric


def test_hand_worked_cases():
    """One point at 0 against one at 10: 1000 (1 + 1 - 2 e^{-100/200}) = 2000 (1 - e^{-1/2}).
    {0, 10} against {0}: Kxx mean (2 + 2 e^{-1/2}) / 4, Kyy 1, Kxy mean (1 + e^{-1/2}) / 2, so
    1000 ((1 + e^{-1/2}) / 2 + 1 - (1 + e^{-1/2})) = 500 (1 - e^{-1/2}) -- the diagonal counts (biased estimator)."""
    zero, ten = np.array([[0.0]]), np.array([[10.0]])
    assert mmd_rbf(zero, ten) == pytest.approx(2000 * (1 - math.exp(-0.5)), rel=1e-14)
    assert mmd_rbf(np.array([[0.0], [10.0]]), zero, batch_size=1) == pytest.approx(500 * (1 - math.exp(-0.5)),
                                                                                    rel=1e-14)
    assert mmd_rbf(zero, zero) == 0.0
    assert (SIGMA, SCALE) == (10.0, 1000.0)  # google-research/cmmd's _SIGMA and _SCALE


def test_identical_sets_give_zero_and_bad_input_is_refused():
    rng = np.random.default_rng(1)
    x = unit_rows(rng, 40)
    assert abs(mmd_rbf(x, x.copy(), batch_size=7)) < 1e-12
    with pytest.raises(BenchError, match="feature dimensions differ"):
        mmd_rbf(x, unit_rows(rng, 5, d=8))
    bad = x.copy()
    bad[3, 0] = np.inf
    with pytest.raises(BenchError, match="NaN or inf"):
        cmmd(x, bad)


# ----------------------------------------------------------------------------------------------------------------
# Vendi


@pytest.mark.parametrize("n, d", [(30, 64), (200, 12), (12, 12)])
def test_vendi_equals_the_package(n, d):
    """Both of the package's routes: score_X (n x n kernel) and score_dual (d x d), whichever ours takes."""
    x = np.random.default_rng(n).standard_normal((n, d)) + 0.4
    got = vendi_score(x)
    assert got == pytest.approx(vendi.score_X(x), rel=1e-10)
    assert got == pytest.approx(vendi.score_dual(x), rel=1e-10)
    assert 1 < got < min(n, d)


def test_vendi_closed_forms():
    """n copies of one direction: 1 (whatever their lengths: rows are normalised); n orthogonal rows: n;
    two groups of orthogonal directions, 3 and 1 rows: eigenvalues 3/4, 1/4 -> exp(H) = 4 / 3^{3/4}."""
    assert vendi_score(np.outer(np.arange(1, 6), [1.0, 2.0, 0.0])) == pytest.approx(1.0)
    assert vendi_score(np.eye(7)) == pytest.approx(7.0)
    two = np.array([[1.0, 0], [2.0, 0], [5.0, 0], [0, 3.0]])
    assert vendi_score(two) == pytest.approx(4 / 3 ** 0.75)


def test_vendi_per_class_is_the_mean_of_each_class_score():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((90, 20))
    labels = rng.integers(0, 5, 90) * 7 + 3  # class ids need not be 0..K-1
    mean, classes = vendi_per_class(x, labels)
    expected = np.mean([vendi.score_X(x[labels == c]) for c in np.unique(labels)])
    assert classes == 5 and mean == pytest.approx(expected, rel=1e-10)
    with pytest.raises(BenchError, match="one per feature row"):
        vendi_per_class(x, labels[:-1])


def test_vendi_package_is_the_formula_here():
    """What the package computes, read from its source: normalised rows, eigvalsh(K / n), exp of the entropy of the
    positive eigenvalues (q=1) -- written out here once more, so a change of the package shows."""
    x = np.random.default_rng(4).standard_normal((25, 9))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = np.linalg.eigvalsh(x @ x.T / 25)
    w = w[w > 0]
    assert vendi.score_X(x) == pytest.approx(np.exp(-(w * np.log(w)).sum()), rel=1e-10)
