"""Kernel Inception Distance as torch-fidelity defines it (Binkowski et al., 2018).

For each of `subsets` rounds, draw `subset_size` rows of each feature set without replacement
(`np.random.RandomState(seed).choice`, first set then second, the same stream as torch-fidelity, seed 2020),
and take the unbiased MMD^2 estimate with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3:

    sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1)) - 2 sum_{i,j} k(x_i, y_j) / m^2.

Returns the mean and the (population, ddof=0) std of the per-subset values. torch-fidelity computes in the
features' float32; here float64, which removes the cancellation error of subtracting sums of ~1e6 kernel
values to get a result of ~1e-3.
"""

import numpy as np
from tqdm.auto import tqdm

from bench.errors import BenchError
from bench.metrics._checks import check_features, check_same_dim


def _polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> np.ndarray:
    base = x @ y.T * gamma + coef0
    if isinstance(degree, int) and degree >= 1:  # repeated products: ~5x faster than pow on 1000x1000 blocks
        kernel = base.copy()
        for _ in range(degree - 1):
            kernel *= base
        return kernel
    return base**degree


def _unbiased_mmd2(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    m = len(k_xx)
    off_diagonal = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
    return float(off_diagonal / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kid(
    feats1,
    feats2,
    subset_size: int = 1000,
    subsets: int = 100,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 2020,
    progress: bool = True,
) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD^2 over random subsets; torch-fidelity's defaults."""
    feats1 = check_features(feats1, "feats1").astype(np.float64)
    feats2 = check_features(feats2, "feats2").astype(np.float64)
    check_same_dim(feats1, feats2, "feats1", "feats2")
    if subset_size < 2 or subsets < 1:
        raise BenchError(f"KID needs subset_size >= 2 and subsets >= 1, found {subset_size} and {subsets}")
    if len(feats1) < subset_size or len(feats2) < subset_size:
        raise BenchError(
            f"KID subset size {subset_size} is larger than the number of samples "
            f"({len(feats1)} and {len(feats2)}); pass a smaller subset_size"
        )
    if gamma is None:
        gamma = 1.0 / feats1.shape[1]
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in tqdm(range(subsets), desc="KID subsets", disable=not progress, leave=False):
        x = feats1[rng.choice(len(feats1), subset_size, replace=False)]
        y = feats2[rng.choice(len(feats2), subset_size, replace=False)]
        mmds[i] = _unbiased_mmd2(
            _polynomial_kernel(x, x, degree, gamma, coef0),
            _polynomial_kernel(x, y, degree, gamma, coef0),
            _polynomial_kernel(y, y, degree, gamma, coef0),
        )
    return float(mmds.mean()), float(mmds.std())
