"""Scoring features a run already has against a reference batch, with the same code as `bench eval`.

`bench run` extracts features while it samples, so it scores activations rather than an `.npz`: the same
numbers `bench.evaluate.evaluate` gives for the saved batch, from the same registry
(`bench.metrics.registry.score`). The reference is read once, when the scorer is made: a bad reference fails
before any sampling.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bench.evaluate import distances_label, load_batch
from bench.features import FeatureSet
from bench.metrics import registry
from bench.metrics.registry import Metric, ScoreOptions


class Scorer:
    """Scores sample feature arrays against one reference with the selected metrics."""

    def __init__(self, ref_path, extractors: Sequence, metrics: list[Metric] | None = None, *,
                 exact: bool = False, batch_size: int = 64):
        self.metrics = list(metrics or registry.select(None))
        self.need = registry.arrays_needed(self.metrics)
        self.ref = load_batch(ref_path, extractors, self.need, "reference", batch_size)
        self.options = ScoreOptions(exact=exact)
        self.unavailable = {a: r for a, r in self.ref.unavailable.items()}
        self.provenance = {"distances": distances_label(exact)}

    @property
    def num_ref(self) -> int | None:
        return self.ref.num_images

    def _samples(self, features: dict[str, np.ndarray]) -> FeatureSet:
        """The samples' feature arrays (and their class labels, `label`, when the run has them)."""
        return FeatureSet("<samples>", {k: v for k, v in features.items() if k in self.need},
                          unavailable=dict(self.unavailable), labels=features.get("label"))

    def __call__(self, features: dict[str, np.ndarray]) -> dict[str, Any]:
        """{"metrics", "unavailable", "details"} for the samples' arrays (as `registry.score` returns)."""
        return registry.score(self.ref, self._samples(features), self.metrics, self.options)

    def noise(self, features: dict[str, np.ndarray], resamples: int, seed: int = 0) -> dict[str, Any]:
        """The result's `noise` block: a bootstrap over the sample rows (bench.metrics.bootstrap) of every selected
        metric but those whose every resample would cost as much as the run's scoring (`Metric.bootstrap` False:
        the k-NN metrics' 50k x 10k distances, CMMD's 50k x 50k kernel), which are named under `not_estimated`."""
        from bench.metrics.bootstrap import bootstrap_std, noise_record

        cheap = [m for m in self.metrics if m.bootstrap]
        record = noise_record(bootstrap_std(self.ref, self._samples(features), cheap, resamples, seed, self.options),
                              resamples, seed)
        skipped = [m.name for m in self.metrics if not m.bootstrap]
        return {**record, **({"not_estimated": skipped} if skipped else {})}


def adm_scorer(ref_path, extractor, *, exact: bool = False, batch_size: int = 64) -> Scorer:
    """ADM's five numbers against the reference at `ref_path`, from one Inception extractor."""
    return Scorer(ref_path, [extractor], exact=exact, batch_size=batch_size)
