"""Inception Score as ADM's `Evaluator.compute_inception_score` computes it.

ADM (after improved-gan) cuts the N softmax rows into consecutive splits of `split_size` rows (not "10 splits"):
50k samples give 10 splits of 5000, and a shorter last split is scored on its own. Each split scores
exp(mean_rows sum_k p log(p / mean_p)); the result is the plain mean of the split scores (no std is reported).
ADM computes in the dtype of its float32 softmax; here float64, with 0 log 0 = 0 so that exactly-zero
probabilities give the limit value where ADM would give NaN.
"""

import numpy as np
from scipy.special import xlogy

from bench.errors import BenchError
from bench.metrics._checks import check_count, check_features

_SUM_TOLERANCE = 1e-3  # a float32 softmax over 1008 classes sums to 1 within ~1e-6


def inception_score(probs, split_size: int = 5000) -> float:
    """Mean over consecutive `split_size`-row splits of exp(E_x KL(p(y|x) || p(y))); probs: [N, K] softmax rows."""
    probs = check_features(probs, "probs", min_rows=1).astype(np.float64)
    split_size = check_count(split_size, "split_size")
    if probs.min() < 0:
        raise BenchError(f"probs: found a negative probability {probs.min():.3g}; expected softmax outputs")
    sums = probs.sum(axis=1)
    bad = np.abs(sums - 1.0) > _SUM_TOLERANCE
    if bad.any():
        raise BenchError(
            f"probs: {int(bad.sum())} of {len(probs)} rows do not sum to 1 (e.g. row {int(np.argmax(bad))} sums to "
            f"{sums[np.argmax(bad)]:.6g}); expected softmax probabilities, not logits or features"
        )
    scores = []
    for start in range(0, len(probs), split_size):
        part = probs[start : start + split_size]
        marginal = part.mean(axis=0, keepdims=True)
        kl = xlogy(part, part) - xlogy(part, marginal)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores))
