"""Scoring features a run already has against a reference batch, the way ADM's evaluator does.

`bench run` extracts Inception features while it samples, so it scores activations rather than an `.npz`:
the same five numbers `bench.evaluate.evaluate` gives for the saved batch, from the same code
(`bench.evaluate.score`). The reference is read once: its activations (cached) and its statistics.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from bench.evaluate import distances_label, load_batch, score_features

Scorer = Callable[[dict[str, np.ndarray]], dict[str, Any]]


def adm_scorer(ref_path, extractor, *, exact: bool = False, batch_size: int = 64) -> Scorer:
    """A scorer of sample features {"pool", "spatial", "logits"?} against the reference at `ref_path`."""
    ref = load_batch(ref_path, extractor, "reference", batch_size)

    def scorer(features: dict[str, np.ndarray]) -> dict[str, Any]:
        return score_features(ref, features, extractor, exact)

    scorer.provenance = {"distances": distances_label(exact)}
    return scorer
