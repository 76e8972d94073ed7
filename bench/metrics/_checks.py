"""Input checks shared by the metrics: a bad array is a user error, reported with what was found."""

import numpy as np
import torch

from bench.errors import BenchError


def as_numpy(x, name: str) -> np.ndarray:
    """Accept numpy arrays and torch tensors (any device) alike; metrics run on host memory."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x.float() if x.dtype in (torch.bfloat16, torch.float16) else x).numpy()  # numpy has no bfloat16
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise BenchError(f"{name}: expected a numeric array, found dtype {x.dtype}")
    return x


def check_finite_rows(x: np.ndarray, name: str) -> None:
    """NaN/inf features mean a broken feature extractor; say how many rows are affected."""
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if bad.any():
        raise BenchError(
            f"{name}: {int(bad.sum())} of {len(x)} rows contain NaN or inf (first bad row: {int(np.argmax(bad))})"
        )


def check_features(x, name: str, min_rows: int = 2) -> np.ndarray:
    """A [N, D] finite feature matrix with at least `min_rows` rows."""
    x = as_numpy(x, name)
    if x.ndim != 2:
        raise BenchError(f"{name}: expected a 2-D [N, D] feature array, found shape {tuple(x.shape)}")
    if len(x) < min_rows:
        raise BenchError(f"{name}: need at least {min_rows} samples, found {len(x)}")
    check_finite_rows(x, name)
    return x


def check_same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise BenchError(f"feature dimensions differ: {name_a} has {a.shape[1]}, {name_b} has {b.shape[1]}")


def check_count(value, name: str) -> int:
    """A positive integer argument (a split size, k, a batch size): 3.0 is accepted as 3, 2.5 and None are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer)) or value != int(value) or value < 1:
        raise BenchError(f"{name} must be a positive integer, found {value!r}")
    return int(value)
