"""The Vendi score (Friedman & Dieng, 2023, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning")
of a set of feature rows, as the `vendi-score` package (0.0.3) computes it for embeddings.

The rows are L2-normalised (a zero row stays zero, as scikit-learn's `normalize` leaves it), K = X X^T is the
cosine-similarity kernel, and the score is the exponential of the Shannon entropy (order q = 1) of the
eigenvalues of K / n, zero and negative (round-off) eigenvalues left out:

    VS = exp(-sum_i lambda_i log lambda_i),   lambda = eig(X X^T / n)

It reads as an effective number of distinct items: 1 for n copies of one image, n for n orthogonal ones, and at
most the feature width d. The non-zero eigenvalues of X X^T / n (n x n) are those of X^T X / n (d x d); like
the package's `embedding_vendi_score`, this takes the n x n form (`score_X`) when n < d and the d x d one
(`score_dual`) otherwise, so 50,000 samples cost one d x d eigenproblem.

Per class (`vendi_per_class`), as dgm-eval reports it ("mean vendi per class"): the score of each class's
samples, averaged over the classes present. A class-conditional model can be diverse overall simply by covering
the classes, and still collapse within each: the per-class mean shows that.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from bench.errors import BenchError
from bench.metrics._checks import as_numpy, check_features


def _normalised(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def vendi_score(features) -> float:
    """exp(entropy of eig(X X^T / n)) of the L2-normalised rows, float64."""
    x = _normalised(check_features(features, "features", min_rows=1).astype(np.float64))
    n, d = x.shape
    gram = x @ x.T if n < d else x.T @ x
    eigenvalues = scipy.linalg.eigvalsh(gram / n)
    p = eigenvalues[eigenvalues > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def vendi_per_class(features, labels) -> tuple[float, int]:
    """(mean over the classes present of each class's Vendi score, number of classes)."""
    features = check_features(features, "features", min_rows=1)
    labels = as_numpy(labels, "labels")
    if labels.ndim != 1 or len(labels) != len(features):
        raise BenchError(f"labels: expected one per feature row ({len(features)}), found shape {labels.shape}")
    classes = np.unique(labels)
    return float(np.mean([vendi_score(features[labels == c]) for c in classes])), len(classes)
