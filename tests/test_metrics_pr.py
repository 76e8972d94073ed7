"""Precision/recall: ADM's float16 mode against TensorFlow running ADM's DistanceBlock/ManifoldEstimator
logic (re-implemented here with tf ops), the exact mode against brute force in float64, and hand-worked cases."""

import numpy as np
import pytest
import tensorflow as tf
import torch

from bench.errors import BenchError
from bench.metrics import precision_recall
from bench.metrics.precision_recall import _tf_half_row_sums, adm_fp16_distances


def tf_distance_block(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """ADM's DistanceBlock: float16 squared distances, the whole block redone in float32 if any is not finite."""

    def pairwise(a, b):
        norm_a = tf.reshape(tf.reduce_sum(tf.square(a), 1), [-1, 1])
        norm_b = tf.reshape(tf.reduce_sum(tf.square(b), 1), [1, -1])
        return tf.maximum(norm_a - 2 * tf.matmul(a, b, False, True) + norm_b, 0.0)

    u32, v32 = tf.constant(u, tf.float32), tf.constant(v, tf.float32)
    d16 = pairwise(tf.cast(u32, tf.float16), tf.cast(v32, tf.float16))
    if bool(tf.reduce_all(tf.math.is_finite(d16))):
        return tf.cast(d16, tf.float32).numpy()
    return pairwise(u32, v32).numpy()


def tf_precision_recall(ref: np.ndarray, sample: np.ndarray, k: int, batch: int) -> tuple[float, float]:
    """ADM's ManifoldEstimator: radii by np.partition over full rows (self included), then any-ball membership."""

    def radii(x):
        out = np.zeros(len(x), np.float32)
        for r in range(0, len(x), batch):
            row = np.concatenate(
                [tf_distance_block(x[r : r + batch], x[c : c + batch]) for c in range(0, len(x), batch)], 1
            )
            out[r : r + batch] = np.partition(row, np.arange(k + 1), axis=1)[:, k]
        return out

    r_ref, r_sample = radii(ref), radii(sample)
    ref_in = np.zeros(len(ref), bool)
    sample_in = np.zeros(len(sample), bool)
    for r in range(0, len(ref), batch):
        for c in range(0, len(sample), batch):
            d = tf_distance_block(ref[r : r + batch], sample[c : c + batch])
            ref_in[r : r + batch] |= (d <= r_sample[None, c : c + batch]).any(1)
            sample_in[c : c + batch] |= (d <= r_ref[r : r + batch, None]).any(0)
    return sample_in.mean(), ref_in.mean()


def brute_force_precision_recall(ref: np.ndarray, sample: np.ndarray, k: int) -> tuple[float, float]:
    """Float64 differences squared and summed, full matrices, sorted rows."""
    ref, sample = ref.astype(np.float64), sample.astype(np.float64)
    dist = lambda a, b: ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    r_ref = np.sort(dist(ref, ref), axis=1)[:, k]
    r_sample = np.sort(dist(sample, sample), axis=1)[:, k]
    cross = dist(ref, sample)
    precision = np.mean([(cross[:, j] <= r_ref).any() for j in range(len(sample))])
    recall = np.mean([(cross[i, :] <= r_sample).any() for i in range(len(ref))])
    return precision, recall


def inception_like(rng, n, d=2048, scale=0.5):
    """Non-negative, sparse-ish features with squared norms of a few hundred, like pool_3 activations."""
    return (np.maximum(rng.standard_normal((n, d)), 0) * scale).astype(np.float32)


@pytest.mark.parametrize("d", [5, 100, 1601, 2023, 2048, 3333])
def test_half_norms_are_bit_exact_with_tensorflow(d):
    rng = np.random.default_rng(d)
    x = (rng.random((300, d)) * 3).astype(np.float32) ** 2
    expected = tf.reduce_sum(tf.square(tf.cast(x, tf.float16)), 1).numpy()
    x16 = torch.from_numpy(x).half().float()
    got = _tf_half_row_sums((x16 * x16).half().float()).half().numpy()
    np.testing.assert_array_equal(got, expected)


def test_distance_block_matches_tensorflow_float16():
    rng = np.random.default_rng(0)
    u, v = inception_like(rng, 700), inception_like(rng, 500, scale=0.6)
    expected = tf_distance_block(u, v)
    got = adm_fp16_distances(torch.from_numpy(u), torch.from_numpy(v)).numpy()
    # Only the matmul's float32 accumulation order differs from TF's: a few entries move by one float16 ulp.
    assert np.mean(got == expected) > 0.999
    ulp = np.spacing(expected.astype(np.float16)).astype(np.float32)
    assert np.all(np.abs(got - expected) <= ulp)
    # and float16 really is in play: the block is far from the float64 distances
    u64, v64 = u.astype(np.float64), v.astype(np.float64)
    exact = (u64**2).sum(1)[:, None] - 2 * u64 @ v64.T + (v64**2).sum(1)[None, :]
    assert np.abs(got - exact).max() > 0.1


def test_distance_block_falls_back_to_float32_when_float16_overflows():
    rng = np.random.default_rng(1)
    u, v = inception_like(rng, 50, scale=3.0), inception_like(rng, 40, scale=3.0)  # norms^2 ~ 5000..10000
    u[7] *= 4  # one squared norm beyond float16's 65504: the whole block is redone in float32
    expected = tf_distance_block(u, v)
    got = adm_fp16_distances(torch.from_numpy(u), torch.from_numpy(v)).numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    in_range = got[got < 60000]
    assert np.mean(in_range == in_range.astype(np.float16).astype(np.float32)) < 0.5  # not float16 values


def test_adm_mode_matches_tensorflow_manifold_estimator():
    rng = np.random.default_rng(2)
    ref = inception_like(rng, 2000)
    sample = inception_like(rng, 2000, scale=0.53)
    sample[:300] = inception_like(rng, 300, scale=0.5) + 0.02  # a mixture so that neither value is 0 or 1
    expected = tf_precision_recall(ref, sample, k=3, batch=900)  # blocks of 900, 900 and 200 rows
    got = precision_recall(ref, sample, k=3, batch_size=900)
    assert 0.02 < expected[0] < 0.98 and 0.02 < expected[1] < 0.98
    assert got == pytest.approx(expected, abs=1e-3)


def test_adm_mode_with_a_float32_fallback_block_matches_tensorflow():
    rng = np.random.default_rng(3)
    ref = inception_like(rng, 300, d=256, scale=2.0)
    sample = inception_like(rng, 300, d=256, scale=2.2)
    ref[:100] *= 12  # the first ref block overflows float16
    expected = tf_precision_recall(ref, sample, k=3, batch=100)
    assert precision_recall(ref, sample, k=3, batch_size=100) == pytest.approx(expected, abs=1e-3)


def test_exact_mode_equals_brute_force_float64():
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((300, 64))
    sample = rng.standard_normal((250, 64)) * 1.1 + 0.05
    for k, batch_size in ((1, 128), (3, 128), (5, 128), (4, 1000)):  # partial and single blocks
        expected = brute_force_precision_recall(ref, sample, k)
        assert precision_recall(ref, sample, k=k, exact=True, batch_size=batch_size) == expected
    # blocks narrower than the k + 1 neighbours kept per row
    expected = brute_force_precision_recall(ref[:25], sample[:20], 3)
    assert precision_recall(ref[:25], sample[:20], k=3, exact=True, batch_size=2) == expected


def test_hand_worked_one_dimensional_case():
    # k=1: radius = squared distance to the nearest other point (the point itself is neighbour 0).
    ref = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])  # radii 1, 1, 1, 1, 49
    sample = np.array([[0.5], [20.0], [10.5]])  # radii 100, 90.25, 90.25
    # samples: 0.5 is 0.25 from 0 (<= 1): in; 20 is 100 from 10 (> 49): out; 10.5 is 0.25 from 10: in.
    # refs: 0, 1, 2, 3 are within 100 of 0.5; 10 is 0.25 from 10.5: all in.
    for exact in (False, True):
        assert precision_recall(ref, sample, k=1, exact=exact) == pytest.approx((2 / 3, 1.0))
    # k=3, self included as neighbour 0: the radius of 10 is the distance to its 3rd-nearest other point (1): 81.
    # Radii of 0, 1, 2, 3, 10: 9, 4, 4, 9, 81. Samples: -2.9 is 8.41 from 0 (in); 17.9 and 18.1 are 62.41 and
    # 65.61 from 10 (in); 19.5 is 90.25 from 10 (out; it would be in with the 4th neighbour, 100); 40 is out.
    # (With the 2nd neighbour, radius 64, 18.1 would be out.)
    sample2 = np.array([[-2.9], [17.9], [18.1], [19.5], [40.0]])
    for exact in (False, True):
        precision, _ = precision_recall(ref, sample2, k=3, exact=exact)
        assert precision == pytest.approx(3 / 5)


def test_bad_features_raise():
    rng = np.random.default_rng(5)
    good = rng.standard_normal((20, 8))
    with pytest.raises(BenchError, match="dimensions differ"):
        precision_recall(good, rng.standard_normal((20, 9)))
    bad = good.copy()
    bad[[1, 4, 9]] = np.nan
    with pytest.raises(BenchError, match="3 of 20 rows"):
        precision_recall(good, bad)
    with pytest.raises(BenchError, match="at least 4 samples"):
        precision_recall(good, good[:3], k=3)
