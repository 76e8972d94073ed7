"""Inception Score (ADM's split semantics) and KID (torch-fidelity's estimator) against closed forms and
straightforward loop implementations."""

import inspect
import math

import numpy as np
import pytest

from bench.errors import BenchError
from bench.metrics import inception_score, kid


def loop_inception_score(probs, split_size):
    """ADM's definition spelled out with Python loops: consecutive splits, a short last split scored alone."""
    scores = []
    for start in range(0, len(probs), split_size):
        part = probs[start : start + split_size]
        k = len(part[0])
        marginal = [sum(row[j] for row in part) / len(part) for j in range(k)]
        mean_kl = sum(
            sum(p * (math.log(p) - math.log(marginal[j])) for j, p in enumerate(row) if p > 0) for row in part
        ) / len(part)
        scores.append(math.exp(mean_kl))
    return sum(scores) / len(scores)


def test_uniform_predictions_score_one():
    assert inception_score(np.full((20, 10), 0.1), split_size=5) == pytest.approx(1.0, abs=1e-12)


def test_confident_predictions_over_k_equally_used_classes_score_k():
    k = 8
    probs = np.eye(k)[np.arange(40) % k]  # every split of 16 rows uses each class twice
    assert inception_score(probs, split_size=16) == pytest.approx(k, rel=1e-12)


def test_splits_are_consecutive_rows_and_the_last_one_is_partial():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((23, 6)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = loop_inception_score(probs.tolist(), 10)  # splits of 10, 10, 3
    assert inception_score(probs, split_size=10) == pytest.approx(expected, rel=1e-12)
    assert inception_score(probs, split_size=100) == pytest.approx(loop_inception_score(probs.tolist(), 100))
    assert abs(inception_score(probs, split_size=10) - inception_score(probs, split_size=100)) > 1e-3


def test_inception_score_rejects_non_distributions():
    with pytest.raises(BenchError, match="do not sum to 1"):
        inception_score(np.random.default_rng(0).standard_normal((10, 5)) + 5)
    with pytest.raises(BenchError, match="negative probability"):
        inception_score(np.array([[1.5, -0.5], [0.5, 0.5]]))
    with pytest.raises(BenchError, match="NaN"):
        inception_score(np.array([[np.nan, 1.0], [0.5, 0.5]]))
    with pytest.raises(BenchError, match="2-D"):
        inception_score(np.ones(4) / 4)


def loop_kid(f1, f2, subset_size, subsets, seed, degree=3, coef0=1.0):
    """torch-fidelity's estimator with explicit double loops over pairs."""
    gamma = 1.0 / f1.shape[1]
    kernel = lambda a, b: (float(np.dot(a, b)) * gamma + coef0) ** degree
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), subset_size, replace=False)]
        y = f2[rng.choice(len(f2), subset_size, replace=False)]
        m = subset_size
        xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
        yy = sum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
        xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
        values.append(xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m))
    return float(np.mean(values)), float(np.std(values))


def test_kid_matches_loop_estimator_with_torch_fidelity_sampling():
    rng = np.random.default_rng(1)
    f1 = rng.standard_normal((40, 6)).astype(np.float32)
    f2 = (rng.standard_normal((35, 6)) * 1.3 + 0.2).astype(np.float32)
    mean, std = kid(f1, f2, subset_size=12, subsets=7, seed=123)
    exp_mean, exp_std = loop_kid(f1.astype(np.float64), f2.astype(np.float64), 12, 7, 123)
    assert mean == pytest.approx(exp_mean, rel=1e-10)
    assert std == pytest.approx(exp_std, rel=1e-8)
    assert std > 0 and mean > 0


def test_kid_defaults_are_torch_fidelitys():
    defaults = {name: p.default for name, p in inspect.signature(kid).parameters.items()}
    assert defaults["subset_size"] == 1000 and defaults["subsets"] == 100 and defaults["seed"] == 2020
    assert defaults["degree"] == 3 and defaults["gamma"] is None and defaults["coef0"] == 1
    # subset_size == N makes every subset the whole set: each subset gives the same MMD, so std is ~0 and
    # the mean is the full-set estimate with gamma = 1 / d, whatever permutation the seed draws.
    rng = np.random.default_rng(2)
    f1, f2 = rng.standard_normal((1000, 3)), rng.standard_normal((1000, 3)) + 0.5
    mean, std = kid(f1, f2, subsets=4)
    gamma = 1 / 3
    k = lambda a, b: (a @ b.T * gamma + 1) ** 3
    kxx, kyy, kxy = k(f1, f1), k(f2, f2), k(f1, f2)
    m = 1000
    full = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m**2
    assert mean == pytest.approx(full, rel=1e-9)
    assert std < 1e-9 * abs(mean)
    # and the default seed is torch-fidelity's 2020
    g1, g2 = rng.standard_normal((30, 3)), rng.standard_normal((30, 3))
    assert kid(g1, g2, subset_size=10, subsets=3) == kid(g1, g2, subset_size=10, subsets=3, seed=2020)
    assert kid(g1, g2, subset_size=10, subsets=3) != kid(g1, g2, subset_size=10, subsets=3, seed=2021)


def test_kid_rejects_bad_input():
    rng = np.random.default_rng(3)
    with pytest.raises(BenchError, match="larger than the number of samples"):
        kid(rng.standard_normal((50, 4)), rng.standard_normal((50, 4)))
    with pytest.raises(BenchError, match="dimensions differ"):
        kid(rng.standard_normal((50, 4)), rng.standard_normal((50, 5)), subset_size=10)
    bad = rng.standard_normal((50, 4))
    bad[3, 1] = np.inf
    with pytest.raises(BenchError, match="1 of 50 rows"):
        kid(bad, rng.standard_normal((50, 4)), subset_size=10)
