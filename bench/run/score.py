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

    def __call__(self, features: dict[str, np.ndarray], metrics: list[Metric] | None = None) -> dict[str, Any]:
        """{"metrics", "unavailable", "details"} for the samples' arrays (as `registry.score` returns), with the
        selected metrics or the subset `metrics` of them (the noise estimate repeats only the cheap ones)."""
        return registry.score(self.ref, self._samples(features), self.metrics if metrics is None else metrics,
                              self.options)


#: below this many sample x reference pairs (the demo's 400 x 512) every metric is resampled for the noise estimate,
#: also those whose resample costs as much as the metric itself at full size (`Metric.bootstrap` False: the k-NN
#: metrics' 50k x 10k distances, CMMD's 50k x 50k kernel)
RESAMPLE_PAIRS = 4_000_000


def resampled_metrics(metrics: list[Metric], num_samples: int, num_ref: int | None) -> tuple[list[Metric], list[str]]:
    """(the metrics the noise estimate resamples, the names of those it leaves out for their cost)."""
    cheap = num_ref is not None and num_samples * num_ref <= RESAMPLE_PAIRS
    kept = [m for m in metrics if cheap or m.bootstrap]
    return kept, [m.name for m in metrics if m not in kept]


def adm_scorer(ref_path, extractor, *, exact: bool = False, batch_size: int = 64) -> Scorer:
    """ADM's five numbers against the reference at `ref_path`, from one Inception extractor."""
    return Scorer(ref_path, [extractor], exact=exact, batch_size=batch_size)
