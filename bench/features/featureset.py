"""One side of a comparison: the feature arrays of a batch's images and the statistics metrics read.

ADM's evaluator takes FID/sFID statistics from a reference batch's precomputed `mu`/`sigma`/`mu_s`/`sigma_s`
when it carries them and computes them from the activations otherwise; `FeatureSet.statistics` does the
same for every array (precomputed first), so a statistics-only reference still gives FID but not
Precision/Recall, which need the reference's own features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.errors import BenchError

#: how ADM's npz keys name the statistics of Inception's arrays; other arrays use mu_<array> / sigma_<array>
ADM_STATISTICS = {"pool": ("mu", "sigma"), "spatial": ("mu_s", "sigma_s")}


def statistics_keys(array: str) -> tuple[str, str]:
    """The npz keys of an array's (mean, covariance): ADM's names for Inception, `mu_<array>` otherwise."""
    return ADM_STATISTICS.get(array, (f"mu_{array}", f"sigma_{array}"))


@dataclass
class FeatureSet:
    """Feature arrays by name (empty for a statistics-only batch) and precomputed (mu, sigma) by array name."""

    label: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    given_statistics: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: array name -> why it is missing (e.g. Inception logits without softmax weights)
    unavailable: dict[str, str] = field(default_factory=dict)
    num_images: int | None = None
    #: the class label of each image (an npz's `arr_1`, a class-conditional run's labels), for per-class metrics
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name, values in self.arrays.items():
            if values.ndim != 2:
                raise BenchError(f"{self.label}: feature array {name!r} has shape {values.shape}; expected [N, D]")
            bad = ~np.isfinite(values).all(axis=1)
            if bad.any():
                raise BenchError(f"{self.label}: {int(bad.sum())} of {len(values)} {name} feature rows are NaN/inf "
                                 "(corrupt images or a broken extractor)")
        if self.num_images is None and self.arrays:
            self.num_images = len(next(iter(self.arrays.values())))
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.ndim != 1 or self.labels.dtype.kind not in "iu" or len(self.labels) != self.num_images:
                raise BenchError(f"{self.label}: class labels of shape {self.labels.shape} and dtype "
                                 f"{self.labels.dtype}; expected one integer per image ({self.num_images})")
        self._computed: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def has_images(self) -> bool:
        return bool(self.arrays)

    def has(self, array: str) -> bool:
        return array in self.arrays

    def has_statistics(self, array: str) -> bool:
        return array in self.given_statistics or array in self.arrays

    def statistics(self, array: str) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of an array: the precomputed ones first (as ADM), else from the features (memoised)."""
        from bench.metrics import feature_statistics

        if array in self.given_statistics:
            return self.given_statistics[array]
        if array not in self._computed:
            if array not in self.arrays:
                raise BenchError(f"{self.label}: has neither {array!r} features nor their statistics")
            self._computed[array] = feature_statistics(self.arrays[array])
        return self._computed[array]

    def subset(self, rows: np.ndarray) -> "FeatureSet":
        """The same batch restricted to some rows (bootstrap resamples, shuffled orders); statistics are recomputed."""
        return FeatureSet(self.label, {k: v[rows] for k, v in self.arrays.items()}, {}, dict(self.unavailable),
                          labels=None if self.labels is None else self.labels[rows])
