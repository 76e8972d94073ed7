"""The torch device a command runs on, checked before any work starts (torch's own error is an assertion deep
inside the first `.to(device)`, after the weights are loaded), and the float32 mode feature networks run in."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from bench.errors import BenchError


def check_device(name: str) -> str:
    """`name` unchanged if torch can use that device here, else a BenchError that says what to pass instead."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BenchError(f"--device {name!r}: not a torch device; e.g. cpu, cuda, cuda:1") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchError(f"--device {name}: this torch build ({torch.__version__}) sees no CUDA GPU; "
                             "use --device cpu, or install a CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BenchError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise BenchError(f"--device {name}: MPS is not available here; use --device cpu")
    return name


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Turn off TF32 for convs and matmuls while feature networks run (cuDNN's default on Ampere+ is TF32 convs,
    ~1e-3 relative error): the reference implementations run in full float32. The global flags are restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
