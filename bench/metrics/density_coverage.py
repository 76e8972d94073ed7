"""Density and coverage (Naeem et al., 2020, "Reliable Fidelity and Diversity Metrics for Generative Models") exactly
as the official `prdc` package (clovaai/generative-evaluation-prdc, 0.2) computes them.

Each reference point gets a ball whose radius is the Euclidean distance to its k-th nearest reference neighbour,
the point itself excluded (prdc: the (k+1)-th smallest entry of its row of distances, the self-distance 0 being
the first; k = 5 by default). Membership is strict, `distance < radius`:

    density  = 1/(k M) sum_j sum_i [x_j in ball_i]      mean over the M samples of (reference balls holding it) / k
    coverage = 1/N sum_i [min_j |y_i - x_j| < r_i]       fraction of the N references whose nearest sample lies
                                                         inside their own ball

Density is not bounded by 1: samples crowded where the references are dense count several balls each (its
expectation is 1 when samples and references follow one distribution). Coverage is bounded by 1 and robust to
outliers among the samples, which precision and recall are not.

prdc computes the full N x N and N x M distance matrices with scikit-learn (in the features' own dtype: float32
features give float32 distances). Here the same comparisons run on float64 squared distances (d^2 < r^2, equal
to d < r), block by block with Precision/Recall's machinery (`manifold_radii`, `exact_distances`), so memory is a
few `batch_size` x `batch_size` blocks whatever N and M (50k samples x 10k references included) and the values
agree with prdc on float64 features; on float32 features prdc's rounded distances can tie where float64 ones do
not, which moves a count by one now and then.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.metrics._checks import check_count, check_features, check_same_dim
from bench.metrics.precision_recall import exact_distances, manifold_radii

#: prdc's and dgm-eval's nearest_k
NEIGHBOURS = 5


def density_coverage(
    ref_features,
    sample_features,
    k: int = NEIGHBOURS,
    batch_size: int = 5000,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[float, float]:
    """(density, coverage) of samples against references, prdc's definitions on float64 distances. Memory: a few
    float64 `batch_size` x `batch_size` blocks (~0.2 GB each at 5,000), whatever the number of rows."""
    k, batch_size = check_count(k, "k"), check_count(batch_size, "batch_size")
    ref = check_features(ref_features, "ref_features", min_rows=k + 1)
    sample = check_features(sample_features, "sample_features", min_rows=1)
    check_same_dim(ref, sample, "ref_features", "sample_features")
    ref_t = torch.from_numpy(np.ascontiguousarray(ref)).to(device=device, dtype=torch.float64)
    sample_t = torch.from_numpy(np.ascontiguousarray(sample)).to(device=device, dtype=torch.float64)

    with torch.no_grad():
        radii = manifold_radii(ref_t, k, batch_size, exact_distances, progress)  # squared, self excluded
        balls = torch.zeros(len(sample_t), dtype=torch.int64, device=ref_t.device)  # reference balls holding each
        nearest = torch.full((len(ref_t),), torch.inf, dtype=torch.float64, device=ref_t.device)  # per reference
        blocks = [(r, c) for r in range(0, len(ref_t), batch_size) for c in range(0, len(sample_t), batch_size)]
        for row, col in tqdm(blocks, desc="density/coverage", disable=not progress, leave=False):
            d = exact_distances(ref_t[row : row + batch_size], sample_t[col : col + batch_size])
            balls[col : col + batch_size] += (d < radii[row : row + batch_size, None]).sum(dim=0)
            nearest[row : row + batch_size] = torch.minimum(nearest[row : row + batch_size], d.min(dim=1).values)
    density = float(balls.sum()) / (k * len(sample_t))
    coverage = float((nearest < radii).double().mean())
    return density, coverage
