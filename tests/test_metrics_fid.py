"""Fréchet distance and feature statistics against closed forms and ADM's scipy-sqrtm formula."""

import warnings

import numpy as np
import pytest
import scipy.linalg

import bench.metrics.frechet as frechet_module
from bench.errors import BenchError
from bench.metrics import RunningStatistics, SingularCovarianceWarning, feature_statistics, frechet_distance


def adm_frechet(mu1, sigma1, mu2, sigma2, eps=0.0):
    """ADM's formula, written out: trace of scipy's sqrtm of the (optionally eps-offset) product."""
    offset = np.eye(len(mu1)) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    assert np.isfinite(covmean).all()
    covmean = covmean.real
    diff = mu1 - mu2
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def random_moments(rng, n, d, scale=1.0, shift=0.0):
    mixing = np.eye(d) + rng.standard_normal((d, d)) / (3 * np.sqrt(d))  # well-conditioned
    x = rng.standard_normal((n, d)) @ mixing * scale + shift
    return x.mean(0), np.cov(x, rowvar=False)


def test_one_dimensional_closed_form():
    # N(m1, s1^2) vs N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2
    got = frechet_distance(np.array([1.5]), np.array([[4.0]]), np.array([-0.5]), np.array([[9.0]]))
    assert got == pytest.approx(2.0**2 + (2.0 - 3.0) ** 2, rel=1e-12)


def test_diagonal_and_commuting_closed_form():
    rng = np.random.default_rng(0)
    d = 128
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # Commuting covariances in a random basis have the same closed form.
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_matches_adm_sqrtm_with_more_samples_than_dims():
    # 384-d keeps scipy's sqrtm affordable in the suite; benchmarks/bench_metrics.py checks 2048-d.
    rng = np.random.default_rng(1)
    mu1, s1 = random_moments(rng, 600, 384)
    mu2, s2 = random_moments(rng, 600, 384, scale=1.1, shift=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a well-conditioned input must not warn
        got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(adm_frechet(mu1, s1, mu2, s2), rel=1e-6)


def test_singular_covariances_warn_and_match_adm():
    rng = np.random.default_rng(2)
    mu1, s1 = random_moments(rng, 60, 128)  # N < d: rank-deficient covariances
    mu2, s2 = random_moments(rng, 70, 128, scale=1.2)
    with pytest.warns(SingularCovarianceWarning, match="fewer samples than feature dimensions"):
        got = frechet_distance(mu1, s1, mu2, s2)
    # ADM's sqrtm is finite here, so ADM uses it without the eps offset.
    assert got == pytest.approx(adm_frechet(mu1, s1, mu2, s2), rel=1e-6)


def test_non_finite_result_takes_adm_eps_fallback(monkeypatch):
    rng = np.random.default_rng(3)
    mu1, s1 = random_moments(rng, 400, 64)
    mu2, s2 = random_moments(rng, 400, 64, scale=0.9)
    real = frechet_module._trace_sqrt_product
    calls = []

    def fail_first(a, b):
        calls.append((a.copy(), b.copy()))
        return (float("nan"), True) if len(calls) == 1 else real(a, b)

    monkeypatch.setattr(frechet_module, "_trace_sqrt_product", fail_first)
    with pytest.warns(SingularCovarianceWarning, match="adding 1e-06 to diagonal"):
        got = frechet_distance(mu1, s1, mu2, s2)
    np.testing.assert_array_equal(calls[1][0], s1 + np.eye(64) * 1e-6)
    # ADM: the offset enters sqrtm only, the traces use the original covariances.
    assert got == pytest.approx(adm_frechet(mu1, s1, mu2, s2, eps=1e-6), rel=1e-9)


def test_bad_moments_raise():
    s = np.eye(3)
    with pytest.raises(BenchError, match="different lengths"):
        frechet_distance(np.zeros(3), s, np.zeros(4), np.eye(4))
    with pytest.raises(BenchError, match="3x3"):
        frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), s)
    with pytest.raises(BenchError, match="NaN"):
        frechet_distance(np.array([0.0, np.nan, 0.0]), s, np.zeros(3), s)
    with pytest.raises(BenchError, match="not symmetric"):
        frechet_distance(np.zeros(3), np.triu(np.ones((3, 3))), np.zeros(3), s)
    with pytest.raises(BenchError, match="negative eigenvalue"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(BenchError, match="negative eigenvalue"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1.0]))


def test_feature_statistics_is_numpy_mean_and_cov():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((500, 40)) * 3 + 7).astype(np.float32)
    mu, sigma = feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-13)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-11, atol=1e-12)


def test_running_statistics_matches_cov_over_all_rows_and_is_stable():
    rng = np.random.default_rng(5)
    # A large common offset: sum(x x^T) - N mu mu^T would lose every digit of the variance here.
    x = rng.standard_normal((1000, 30)) * 0.5 + 1e6
    stats = RunningStatistics()
    start = 0
    for size in [1, 7, 300, 2, 190, 500]:
        stats.update(x[start : start + size])
        start += size
    assert stats.count == 1000
    np.testing.assert_allclose(stats.mu, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(stats.sigma, np.cov(x, rowvar=False), rtol=1e-8, atol=1e-9)


def test_statistics_reject_bad_features():
    x = np.ones((10, 4))
    x[[2, 5]] = np.nan
    with pytest.raises(BenchError, match="2 of 10 rows contain NaN"):
        feature_statistics(x)
    with pytest.raises(BenchError, match="at least 2 samples"):
        feature_statistics(np.ones((1, 4)))
    stats = RunningStatistics().update(np.ones((3, 4)))
    with pytest.raises(BenchError, match="dimension 5"):
        stats.update(np.ones((3, 5)))
    with pytest.raises(BenchError, match="at least 2 samples"):
        _ = RunningStatistics().update(np.ones((1, 4))).sigma


def test_float32_statistics_of_few_samples_give_the_same_fid_both_ways():
    """Rounding in float32 covariances leaves negative eigenvalues in proportion to the largest one: the
    tolerance follows it, so FID(a, b) and FID(b, a) both succeed and agree (a fixed 1e-6 refused one order)."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(512, 512)) / np.sqrt(512)

    def statistics(n):
        x = np.maximum(rng.normal(size=(n, 512)) @ mix + 0.3, 0) * 3  # ReLU features, like pool_3
        return x.mean(0).astype(np.float32), np.cov(x, rowvar=False).astype(np.float32)

    few, many = statistics(100), statistics(4000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularCovarianceWarning)
        assert frechet_distance(*many, *few) == pytest.approx(frechet_distance(*few, *many), rel=1e-4)


def test_counts_and_bfloat16_inputs():
    import torch

    from bench.errors import BenchError
    from bench.metrics import inception_score, precision_recall

    feats = torch.randn(40, 8)
    p, r = precision_recall(feats.bfloat16(), feats.bfloat16(), k=3.0)  # bfloat16 upcast; 3.0 is 3
    assert p == r == 1.0
    for bad in [dict(k=2.5), dict(batch_size=0)]:
        with pytest.raises(BenchError, match="must be a positive integer"):
            precision_recall(feats, feats, **bad)
    with pytest.raises(BenchError, match="split_size must be a positive integer"):
        inception_score(np.full((10, 4), 0.25), split_size=None)


# -- fewer samples than dimensions: the row-space path ----------------------------------------------------------
def _rows(rng, n, d, scale=1.0, shift=0.0):
    mixing = np.eye(d) + rng.standard_normal((d, d)) / (3 * np.sqrt(d))
    return rng.standard_normal((n, d)) @ mixing * scale + shift


@pytest.mark.parametrize("n, d", [(20, 64), (64, 64), (5, 96)])
def test_rows_path_matches_adm_sqrtm_when_samples_are_fewer_than_dimensions(n, d):
    # The identity (non-zero eigenvalues of S1 S2 = those of X S2 X^T / (N-1)) checked against ADM's own formula:
    # scipy's sqrtm of the d x d product. The last digits differ only by the square roots of the product's
    # roundoff-sized "zero" eigenvalues, which the d x d routes keep and the row space never forms.
    rng = np.random.default_rng(7)
    x = _rows(rng, n, d, scale=1.3, shift=0.2)
    mu2, s2 = random_moments(rng, 150, d)
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    with pytest.warns(SingularCovarianceWarning, match="fewer samples than feature dimensions"):
        got = frechet_module.frechet_distance_from_rows(x, mu2, s2)
    assert got == pytest.approx(adm_frechet(mu1, s1, mu2, s2), rel=1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularCovarianceWarning)
        assert got == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-7)


def test_rows_path_with_a_singular_reference_and_float32_rows():
    # Both sides rank-deficient (the demo: 400 samples and 512 reference images, 2048-d), rows as Inception gives
    # them (float32): np.cov's float64 statistics of the same rows are the comparison.
    rng = np.random.default_rng(8)
    x = _rows(rng, 30, 80).astype(np.float32)
    mu2, s2 = random_moments(rng, 40, 80, scale=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularCovarianceWarning)
        got = frechet_module.frechet_distance_from_rows(x, mu2, s2)
    assert got == pytest.approx(adm_frechet(x.astype(np.float64).mean(0), np.cov(x, rowvar=False), mu2, s2),
                                rel=1e-7)


def test_rows_path_with_more_samples_than_dimensions_is_the_dense_path():
    rng = np.random.default_rng(9)
    x = _rows(rng, 200, 32)
    mu2, s2 = random_moments(rng, 300, 32, shift=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # full-rank: no singular warning
        got = frechet_module.frechet_distance_from_rows(x, mu2, s2)
    assert got == pytest.approx(adm_frechet(x.mean(0), np.cov(x, rowvar=False), mu2, s2), rel=1e-9)


def test_rows_path_rejects_what_the_dense_path_rejects():
    rng = np.random.default_rng(10)
    x = _rows(rng, 10, 16)
    mu2, s2 = random_moments(rng, 40, 16)
    with pytest.raises(BenchError, match="different lengths"):
        frechet_module.frechet_distance_from_rows(x, mu2[:8], s2[:8, :8])
    with pytest.raises(BenchError, match="negative eigenvalue"):
        frechet_module.frechet_distance_from_rows(x, mu2, -s2)
    with pytest.raises(BenchError, match="not symmetric"):
        frechet_module.frechet_distance_from_rows(x, mu2, s2 + np.triu(np.ones_like(s2)))
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(BenchError, match="NaN"):
        frechet_module.frechet_distance_from_rows(bad, mu2, s2)
    with pytest.raises(BenchError, match="N >= 2"):
        frechet_module.frechet_distance_from_rows(x[:1], mu2, s2)


def test_fid_metric_scores_few_samples_from_their_rows(monkeypatch):
    # The registry takes the row-space path for a sample batch with fewer rows than dimensions (bench run's demo,
    # bootstrap resamples) and gives the value the statistics give; given statistics keep ADM's precedence.
    from bench.features import FeatureSet
    from bench.metrics import registry

    rng = np.random.default_rng(11)
    ref_rows = _rows(rng, 90, 48, scale=1.1)
    x = _rows(rng, 25, 48)
    ref = FeatureSet("ref", {"pool": ref_rows})
    calls = []
    real = frechet_module.frechet_distance_from_rows
    monkeypatch.setattr(registry, "frechet_distance_from_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    fid = registry.select("fid")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularCovarianceWarning)
        from_rows = registry.score(ref, FeatureSet("s", {"pool": x}), fid)["metrics"]["fid"]
        assert calls == [1]
        given = FeatureSet("s", {"pool": x}, {"pool": (x.mean(0), np.cov(x, rowvar=False))})
        from_stats = fid[0].compute(ref, given, registry.ScoreOptions())["fid"]
        assert calls == [1]
    assert from_rows == pytest.approx(adm_frechet(x.mean(0), np.cov(x, rowvar=False), ref_rows.mean(0),
                                                  np.cov(ref_rows, rowvar=False)), rel=1e-7)
    assert from_rows == pytest.approx(from_stats, rel=1e-7)
