"""CMMD (Jayasumana et al., 2024, "Rethinking FID: Towards a Better Evaluation Metric for Image Generation") as
google-research/cmmd's `distance.py` computes it: the MMD between two sets of CLIP embeddings with a Gaussian RBF
kernel of bandwidth sigma = 10, times 1000.

    k(x, y) = exp(-|x - y|^2 / (2 sigma^2))
    CMMD    = 1000 * (mean_{i,i'} k(x_i, x_i') + mean_{j,j'} k(y_j, y_j') - 2 mean_{i,j} k(x_i, y_j))

This is the minimum-variance (biased) estimator of MMD^2, Eq. (5) of Gretton et al. (2012): the means run over
every pair, the diagonal (k = 1) included, and the two sets may differ in size. The official code computes it
in one JAX expression on float32 accelerators; here in float64, block by block (`batch_size` rows of each side at
a time, the symmetric within-set sums over half the blocks), so 50k samples against 10k references need a few
blocks of memory rather than 50k x 50k kernels. The embeddings are the CLIP features (bench/features/clip.py),
already L2-normalised, so squared distances lie in [0, 4] and every kernel value in [0.98, 1]: that is why the
scale of 1000 is there, to make the small differences readable.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.metrics._checks import check_count, check_features, check_same_dim
from bench.metrics.precision_recall import exact_distances

#: google-research/cmmd's `_SIGMA` and `_SCALE`
SIGMA = 10.0
SCALE = 1000.0


def _kernel_sum(a: torch.Tensor, b: torch.Tensor, gamma: float, batch_size: int, symmetric: bool,
                progress: bool) -> float:
    """sum_{i,j} exp(-gamma |a_i - b_j|^2) over every pair, block by block; with `symmetric` (a is b) only the
    blocks on and above the diagonal are computed and those above it counted twice."""
    total = 0.0
    blocks = [(r, c) for r in range(0, len(a), batch_size) for c in range(0, len(b), batch_size)
              if not symmetric or c >= r]
    for row, col in tqdm(blocks, desc="CMMD", disable=not progress, leave=False):
        block = torch.exp(-gamma * exact_distances(a[row : row + batch_size], b[col : col + batch_size])).sum()
        total += float(block) * (2 if symmetric and col > row else 1)
    return total


def mmd_rbf(x, y, sigma: float = SIGMA, scale: float = SCALE, batch_size: int = 5000,
            device: str | torch.device | None = None, progress: bool = False) -> float:
    """scale * biased MMD^2 of the rows of `x` and `y` with the Gaussian kernel of bandwidth `sigma`, in float64."""
    batch_size = check_count(batch_size, "batch_size")
    x = check_features(x, "x", min_rows=1)
    y = check_features(y, "y", min_rows=1)
    check_same_dim(x, y, "x", "y")
    x_t = torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=torch.float64)
    y_t = torch.from_numpy(np.ascontiguousarray(y)).to(device=device, dtype=torch.float64)
    gamma = 1.0 / (2.0 * sigma**2)
    with torch.no_grad():
        k_xx = _kernel_sum(x_t, x_t, gamma, batch_size, True, progress) / len(x_t) ** 2
        k_yy = _kernel_sum(y_t, y_t, gamma, batch_size, True, progress) / len(y_t) ** 2
        k_xy = _kernel_sum(x_t, y_t, gamma, batch_size, False, progress) / (len(x_t) * len(y_t))
    return scale * (k_xx + k_yy - 2.0 * k_xy)


def cmmd(ref_embeddings, sample_embeddings, batch_size: int = 5000, device: str | torch.device | None = None,
         progress: bool = True) -> float:
    """CMMD of sample CLIP embeddings against reference ones (order does not matter: the estimator is symmetric)."""
    return mmd_rbf(ref_embeddings, sample_embeddings, SIGMA, SCALE, batch_size, device, progress)
