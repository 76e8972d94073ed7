"""Improved precision and recall (Kynkäänniemi et al., 2019) exactly as ADM's evaluator computes them.

Each feature set spans a manifold: the union of balls around its points whose radius is the distance to the
k-th nearest neighbour, counting the point itself as neighbour 0 (ADM: `np.partition(d, kth=[0..k])[:, k]`
over a row that includes the self-distance; k = 3). Precision is the fraction of samples inside the reference
manifold (within the radius of ANY reference point), recall the fraction of references inside the sample
manifold. Comparisons are `distance <= radius` (`strict=True`: `<`, as the `prdc` package and dgm-eval compare).

ADM's `DistanceBlock` computes squared distances in float16 with TensorFlow ops, which the default mode
reproduces bit for bit on the CPU kernels TF uses:
  - features are cast float32 -> float16 (round to nearest even);
  - ||u||^2 = reduce_sum(square(u)): the squares are rounded to float16, and the sum is accumulated in
    float16 in the order of Eigen's vectorised tree reduction (see `_tf_half_row_sums`);
  - u.v^T is a float16 matmul that TF accumulates in float32 and rounds once; here a float32 matmul of the
    float16 values (exact products) rounded to float16; the accumulation order differs, so about 1 entry in
    10^4 lands 1 float16 ulp away;
  - D = maximum(norm_u - 2 * uv + norm_v, 0) with every op rounded to float16 (including overflow to inf);
  - if any entry of a (row block x column block) is not finite, the whole block is recomputed in float32.
Block partitions (`batch_size`, ADM's 10000) are the same as ADM's so that this fallback decision matches.

float16 squared distances of Inception features (norms^2 ~ 10^2..10^3) carry absolute errors of ~0.1..1,
so precision/recall move by ~1e-3..1e-2 against `exact=True`, which computes float64 distances (measured on
10k x 10k synthetic 2048-d features: precision -0.0008, recall -0.006); the exact mode is for studying that
effect, the default is for numbers comparable with published ADM results.
TF on a GPU (where ADM's numbers were usually produced) uses other kernels; its norms and sums may differ from
the CPU ones in the last float16 bit, which moves precision/recall by far less than the float16 effect itself.
Memory is bounded by a few (batch_size x batch_size) blocks; N x N distances are never formed.
"""

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.metrics._checks import check_count, check_features, check_same_dim

# Eigen::half reductions in TF's CPU kernels (Eigen built for AVX): 8-lane packets, 4 packet accumulators,
# and a recursive halving ("tree") split for rows longer than 200 packets (Eigen's LeafSize<half>).
_LANES = 8
_UNROLL = 4
_LEAF_ELEMENTS = _LANES * 200

DistanceFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _round16(x: torch.Tensor) -> torch.Tensor:
    """Round float32 values to the nearest float16 (ties to even, overflow to inf), kept as float32."""
    return x.half().float()


def _packet_sum(acc: torch.Tensor) -> torch.Tensor:
    """Eigen's predux of an 8-lane half packet: widen to float, add lanes (l+4), then (l+2), then (l+1)."""
    b = acc[:, :4] + acc[:, 4:]
    c = b[:, :2] + b[:, 2:]
    return _round16(c[:, 0] + c[:, 1])


def _leaf_sum(x: torch.Tensor) -> torch.Tensor:
    """Eigen's vectorised inner-dimension sum of <= 1600 halves: 4 packet accumulators over 32-element steps,
    combined ((a0+a1)+a2)+a3, then leftover whole packets, a lane sum in float, and leftover scalars.
    `x` holds float16 values as float32; every addition is rounded to float16 as Eigen::half's operator+ does."""
    rows, n = x.shape
    whole = n // _LANES * _LANES
    unrolled = n // (_LANES * _UNROLL) * (_LANES * _UNROLL)
    # step-major copy so that each step's [rows, 4, 8] slice is contiguous
    steps = x[:, :unrolled].reshape(rows, -1, _UNROLL, _LANES).permute(1, 0, 2, 3).contiguous()
    acc = torch.zeros(rows, _UNROLL, _LANES, device=x.device)
    for step in steps:
        acc = _round16(acc + step)
    packet = _round16(_round16(_round16(acc[:, 0] + acc[:, 1]) + acc[:, 2]) + acc[:, 3])
    for j in range(unrolled, whole, _LANES):
        packet = _round16(packet + x[:, j : j + _LANES])
    scalar = torch.zeros(rows, device=x.device)
    for j in range(whole, n):
        scalar = _round16(scalar + x[:, j])
    return _round16(scalar + _packet_sum(packet))


def _tree_sum(x: torch.Tensor, phase: int) -> torch.Tensor:
    """Eigen's tree split: halve at a packet boundary of the flat index (row * D + column, here mod 8)."""
    n = x.shape[1]
    if n <= _LEAF_ELEMENTS:
        return _leaf_sum(x)
    # Eigen: split = packet * ceil((first + ceil(n / 2)) / packet) - first, with first = the row's flat offset
    left = _LANES * _ceil_div(phase + _ceil_div(n, 2), _LANES) - phase
    rows = len(x)
    if 2 * left == n and left % _LANES == 0:  # identical halves (e.g. D = 2048): one batched call, half the ops
        halves = _tree_sum(torch.cat([x[:, :left], x[:, left:]]), phase)
        return _round16(halves[:rows] + halves[rows:])
    return _round16(_tree_sum(x[:, :left], phase) + _tree_sum(x[:, left:], (phase + left) % _LANES))


def _tf_half_row_sums(x: torch.Tensor) -> torch.Tensor:
    """`tf.reduce_sum(x, 1)` of float16 [rows, D] values (given as float32) as TF computes it on CPU, bit-exact."""
    rows, d = x.shape
    if d <= _LEAF_ELEMENTS:
        return _leaf_sum(x)
    if d % _LANES == 0:  # every row starts on a packet boundary
        return _tree_sum(x, 0)
    out = torch.empty(rows, device=x.device)
    phases = (torch.arange(rows, device=x.device) * d) % _LANES
    for phase in phases.unique().tolist():
        idx = phases == phase
        out[idx] = _tree_sum(x[idx], phase)
    return out


def adm_fp16_distances(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """ADM's `DistanceBlock.pairwise_distances` for float32 [a, D] and [b, D]: float32 [a, b] squared distances."""
    u16, v16 = _round16(u), _round16(v)
    norm_u = _tf_half_row_sums(_round16(u16 * u16)).half()
    norm_v = _tf_half_row_sums(_round16(v16 * v16)).half()
    dots = torch.mm(u16, v16.T).half()
    d = norm_u[:, None] - dots * 2  # float16 ops: each rounded to float16, 2*dots may overflow to inf
    del dots
    d = torch.clamp_min(d + norm_v[None, :], 0)
    if bool(torch.isfinite(d).all()):
        return d.float()
    del d
    norm_u = (u * u).sum(1)
    norm_v = (v * v).sum(1)
    return torch.clamp_min(norm_u[:, None] - 2 * torch.mm(u, v.T) + norm_v[None, :], 0)


def exact_distances(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Squared distances in float64 (inputs are widened), for `exact=True`."""
    u, v = u.double(), v.double()
    return torch.clamp_min((u * u).sum(1)[:, None] - 2 * torch.mm(u, v.T) + (v * v).sum(1)[None, :], 0)


@contextlib.contextmanager
def _full_precision_matmul():
    """float32 matmuls must not silently drop to TF32/bf16 on GPUs: the float16 emulation relies on them."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def manifold_radii(
    features: torch.Tensor, k: int, batch_size: int, distances: DistanceFn, progress: bool = False
) -> torch.Tensor:
    """Distance to the k-th neighbour (self = neighbour 0) of every row, streaming over column blocks."""
    n = len(features)
    radii = []
    blocks = [(r, c) for r in range(0, n, batch_size) for c in range(0, n, batch_size)]
    nearest = None
    for row, col in tqdm(blocks, desc="manifold radii", disable=not progress, leave=False):
        d = distances(features[row : row + batch_size], features[col : col + batch_size])
        candidates = d if col == 0 else torch.cat([nearest, d], dim=1)
        nearest = torch.topk(candidates, min(k + 1, candidates.shape[1]), dim=1, largest=False, sorted=True).values
        if col + batch_size >= n:
            radii.append(nearest[:, k])
    return torch.cat(radii)


def precision_recall(
    ref_features,
    sample_features,
    k: int = 3,
    exact: bool = False,
    batch_size: int = 10000,
    device: str | torch.device | None = None,
    progress: bool = True,
    strict: bool = False,
) -> tuple[float, float]:
    """(precision, recall) of samples against references; ADM's float16 distances unless `exact=True`, ADM's
    `distance <= radius` unless `strict=True` (prdc's `<`, which dgm-eval uses with k=5 and exact distances)."""
    k, batch_size = check_count(k, "k"), check_count(batch_size, "batch_size")
    ref = check_features(ref_features, "ref_features", min_rows=k + 1)
    sample = check_features(sample_features, "sample_features", min_rows=k + 1)
    check_same_dim(ref, sample, "ref_features", "sample_features")
    # ADM feeds float32 placeholders, so float64 input is rounded to float32 before float16.
    dtype = torch.float64 if exact else torch.float32
    ref_t = torch.from_numpy(np.ascontiguousarray(ref)).to(device=device, dtype=dtype)
    sample_t = torch.from_numpy(np.ascontiguousarray(sample)).to(device=device, dtype=dtype)
    distances = exact_distances if exact else adm_fp16_distances
    inside = torch.lt if strict else torch.le

    with torch.no_grad(), _full_precision_matmul():
        ref_radii = manifold_radii(ref_t, k, batch_size, distances, progress)
        sample_radii = manifold_radii(sample_t, k, batch_size, distances, progress)
        ref_in = torch.zeros(len(ref_t), dtype=torch.bool, device=ref_t.device)
        sample_in = torch.zeros(len(sample_t), dtype=torch.bool, device=ref_t.device)
        blocks = [(r, c) for r in range(0, len(ref_t), batch_size) for c in range(0, len(sample_t), batch_size)]
        for row, col in tqdm(blocks, desc="precision/recall", disable=not progress, leave=False):
            d = distances(ref_t[row : row + batch_size], sample_t[col : col + batch_size])
            ref_in[row : row + batch_size] |= inside(d, sample_radii[None, col : col + batch_size]).any(dim=1)
            sample_in[col : col + batch_size] |= inside(d, ref_radii[row : row + batch_size, None]).any(dim=0)
    return float(sample_in.double().mean()), float(ref_in.double().mean())
