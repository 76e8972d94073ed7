"""Mean and covariance of features, in one pass over batches.

FID needs mu and sigma of ~50k x 2048 Inception features (and 50k x 2023 spatial ones for sFID). Holding them
all is wasteful, so `RunningStatistics` merges per-batch centered moments (Chan, Golub & LeVeque's pairwise
update) in float64. Each batch is centered on its own mean before its outer products are summed, so the
cancellation of the naive sum(x x^T) - N mu mu^T never happens, and the result equals
`np.cov(all_rows, rowvar=False)` to float64 rounding whatever the batch sizes.
"""

import numpy as np

from bench.errors import BenchError
from bench.metrics._checks import as_numpy, check_finite_rows


class RunningStatistics:
    """Streaming mean and sample covariance (ddof=1, the `np.cov(rowvar=False)` convention ADM uses)."""

    def __init__(self) -> None:
        self.count = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None  # sum of outer products of deviations from the running mean

    def update(self, batch) -> "RunningStatistics":
        """Add a [B, D] batch of feature rows."""
        batch = as_numpy(batch, "features")
        if batch.ndim != 2:
            raise BenchError(f"features: expected a 2-D [N, D] batch, found shape {tuple(batch.shape)}")
        if len(batch) == 0:
            return self
        check_finite_rows(batch, "features")
        if self._mean is not None and batch.shape[1] != self._mean.shape[0]:
            raise BenchError(
                f"features: batch has dimension {batch.shape[1]}, earlier batches had {self._mean.shape[0]}"
            )
        batch = batch.astype(np.float64, copy=False)
        n_b = len(batch)
        mean_b = batch.mean(axis=0)
        centered = batch - mean_b
        m2_b = centered.T @ centered
        if self._mean is None:
            self.count, self._mean, self._m2 = n_b, mean_b, m2_b
            return self
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n
        return self

    @property
    def mu(self) -> np.ndarray:
        if self._mean is None:
            raise BenchError("no features were added: the mean of an empty set is undefined")
        return self._mean

    @property
    def sigma(self) -> np.ndarray:
        if self.count < 2:
            raise BenchError(f"need at least 2 samples for a covariance, found {self.count}")
        return self._m2 / (self.count - 1)


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of a [N, D] feature matrix in float64, as `np.mean(axis=0)` and `np.cov(rowvar=False)`."""
    features = as_numpy(features, "features")
    if features.ndim != 2:
        raise BenchError(f"features: expected a 2-D [N, D] array, found shape {tuple(features.shape)}")
    if len(features) < 2:
        raise BenchError(f"features: need at least 2 samples for a covariance, found {len(features)}")
    stats = RunningStatistics().update(features)
    return stats.mu, stats.sigma
