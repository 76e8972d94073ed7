"""Timings of the metrics against baselines measured in the same run.

    python benchmarks/bench_metrics.py            # FID at 2048-d, one 10k x 10k distance block, P/R 10k x 10k
    python benchmarks/bench_metrics.py --full     # also runs P/R 50k x 10k instead of extrapolating it

FID: `frechet_distance` (Cholesky + eigvalsh) vs ADM's formula with `scipy.linalg.sqrtm`, 2048-d covariances of
3000 samples; prints the speed ratio and the relative difference of the two values.
FID of fewer samples than dimensions (400 x 2048, the demo's size and every bootstrap resample of it):
`frechet_distance_from_rows` (an N x N eigenproblem) vs `frechet_distance` of the same rows' statistics.
Precision/recall: one ADM float16 distance block vs the same block in TensorFlow (ADM's own ops, if TF is
installed), then the full ADM-mode P/R for 10k refs x 10k samples. 50k samples x 10k refs needs
(50k^2 + 10k^2 + 50k*10k) / (3 * 10k^2) = 10.3x the pairwise work of 10k x 10k, which is how it is extrapolated
unless --full is given.
"""

import argparse
import time
import warnings

import numpy as np
import scipy.linalg
import torch

from bench.metrics import SingularCovarianceWarning, frechet_distance, frechet_distance_from_rows, precision_recall
from bench.metrics.precision_recall import adm_fp16_distances


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def adm_frechet(mu1, sigma1, mu2, sigma2):
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    diff = mu1 - mu2
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real)


def bench_fid(d: int = 2048, n: int = 3000) -> None:
    rng = np.random.default_rng(0)
    moments = []
    for scale in (1.0, 1.1):
        mixing = np.eye(d) + rng.standard_normal((d, d)) / (3 * np.sqrt(d))
        x = rng.standard_normal((n, d)) @ mixing * scale
        moments += [x.mean(0), np.cov(x, rowvar=False)]
    ours, t_ours = timed(frechet_distance, *moments)
    ref, t_ref = timed(adm_frechet, *moments)
    print(
        f"FID {d}-d: eigvalsh {t_ours:.2f} s, scipy sqrtm {t_ref:.2f} s -> {t_ref / t_ours:.1f}x faster; "
        f"values {ours:.9f} vs {ref:.9f}, relative difference {abs(ours - ref) / abs(ref):.2e}"
    )


def bench_fid_few_samples(d: int = 2048, n: int = 400, n_ref: int = 512) -> None:
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((n, d)), 0).astype(np.float32)
    ref = np.maximum(rng.standard_normal((n_ref, d)) * 1.1, 0)
    mu2, sigma2 = ref.mean(0), np.cov(ref, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularCovarianceWarning)
        frechet_distance_from_rows(x, mu2, sigma2)  # warm-up: first-touch pages of the 2048-d temporaries
        rows, t_rows = timed(frechet_distance_from_rows, x, mu2, sigma2)
        dense, t_dense = timed(lambda: frechet_distance(x.astype(np.float64).mean(0), np.cov(x, rowvar=False),
                                                        mu2, sigma2))
    print(
        f"FID {n} samples x {d}-d: row space {t_rows:.2f} s, d x d eigenproblems {t_dense:.2f} s -> "
        f"{t_dense / t_rows:.1f}x faster; relative difference {abs(rows - dense) / abs(dense):.2e}"
    )


def inception_like(rng, n, d=2048, scale=0.5):
    return (np.maximum(rng.standard_normal((n, d)), 0) * scale).astype(np.float32)


def tf_block(u, v):
    import tensorflow as tf

    def pairwise(a, b):
        na = tf.reshape(tf.reduce_sum(tf.square(a), 1), [-1, 1])
        nb = tf.reshape(tf.reduce_sum(tf.square(b), 1), [1, -1])
        return tf.maximum(na - 2 * tf.matmul(a, b, False, True) + nb, 0.0)

    return tf.cast(pairwise(tf.cast(u, tf.float16), tf.cast(v, tf.float16)), tf.float32).numpy()


def bench_precision_recall(full: bool) -> None:
    rng = np.random.default_rng(0)
    ref = inception_like(rng, 10000)
    u, v = torch.from_numpy(ref), torch.from_numpy(inception_like(rng, 10000, scale=0.52))
    ours, t_ours = timed(adm_fp16_distances, u, v)
    try:
        theirs, t_tf = timed(tf_block, ref, v.numpy())
        same = float(np.mean(theirs == ours.numpy()))
        print(
            f"distance block 10k x 10k: ours {t_ours:.2f} s, TensorFlow float16 {t_tf:.2f} s "
            f"(ratio {t_tf / t_ours:.2f}); {same:.6f} of entries bit-identical"
        )
    except ImportError:
        print(f"distance block 10k x 10k: ours {t_ours:.2f} s (TensorFlow not installed: no baseline)")

    sample = v.numpy()
    (p, r), t_pr = timed(precision_recall, ref, sample, progress=True)
    print(f"P/R 10k refs x 10k samples (ADM float16): {t_pr:.1f} s, precision {p:.4f}, recall {r:.4f}")
    (pe, re), t_exact = timed(precision_recall, ref, sample, exact=True, progress=True)
    print(
        f"P/R 10k x 10k exact float64: {t_exact:.1f} s ({t_exact / t_pr:.2f}x the float16 mode); "
        f"precision {pe:.4f} ({pe - p:+.4f}), recall {re:.4f} ({re - r:+.4f})"
    )
    if full:
        sample50 = inception_like(rng, 50000, scale=0.52)
        _, t50 = timed(precision_recall, ref, sample50, progress=True)
        print(f"P/R 10k refs x 50k samples (ADM float16): {t50:.1f} s (measured)")
    else:
        factor = (50000**2 + 10000**2 + 50000 * 10000) / (3 * 10000**2)
        print(f"P/R 10k refs x 50k samples (ADM float16): ~{t_pr * factor:.0f} s (extrapolated, {factor:.1f}x pairs)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="measure P/R 50k x 10k instead of extrapolating")
    parser.add_argument("--skip-fid", action="store_true")
    parser.add_argument("--skip-pr", action="store_true")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    if not args.skip_fid:
        bench_fid()
        bench_fid_few_samples()
    if not args.skip_pr:
        bench_precision_recall(args.full)
