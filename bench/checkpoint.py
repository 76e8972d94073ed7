"""Reading torch checkpoint files: `torch.load(weights_only=True)` always, the containers and key prefixes
training scripts wrap weights in, and one message for every file that is refused.

Every plugin and the Inception loader read their `.pt`/`.pth` files through here, so a pickled checkpoint is
refused the same way everywhere, and never with torch's advice to retry with `weights_only=False` (which
would run whatever code the pickle names).
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError

#: key prefixes of weights saved from a wrapped model, in any nesting: DDP's and torch.compile's
WRAPPER_PREFIXES = re.compile(r"^(?:_orig_mod\.|module\.)+")


def load_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """The objects a torch file holds, unpickled weights-only. Besides tensors and containers, only
    `argparse.Namespace` is allowed: upstream training scripts (DiT, LlamaGen) pickle their arguments."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{what} {path} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch words a blocked callable differently across versions ("GLOBAL x was not an allowed global",
        # "unsupported GLOBAL x whose module y is blocked", ...): each names the GLOBAL. (Every weights-only failure,
        # a corrupt file's too, starts "Weights only load failed", so that alone says nothing.)
        if "GLOBAL" in str(err):
            blocked = re.search(r"GLOBAL (\S+)", str(err))
            name = f" (blocked global: {blocked.group(1)})" if blocked else ""
            raise BenchError(
                f"{path}: refused for safety: the {what} holds pickled objects other than tensors{name}, and "
                "unpickling them could run arbitrary code. Save the model's state_dict() (a dict of tensors) to "
                "use it here.") from None
        raise BenchError(f"{path}: cannot be read as a torch {what}: not a torch.save file, or a corrupt one") from None
    except Exception as err:  # not a torch file, truncated, a zip member missing, ...
        raise BenchError(f"{path}: cannot be read as a torch {what} ({_first_line(err)})") from None


def find_state_dict(obj: Any, containers: tuple[str, ...], path: str | Path) -> dict[str, torch.Tensor]:
    """The weights in `obj`: itself if it is a state dict, else the first of `containers` that holds one
    (the order is the caller's: e.g. DiT samples from "ema"), with wrapper prefixes stripped from the keys."""
    if isinstance(obj, dict) and not is_state_dict(obj):
        obj = next((obj[k] for k in containers if isinstance(obj.get(k), dict) and is_state_dict(obj[k])), obj)
    if not isinstance(obj, dict) or not is_state_dict(obj):
        found = f"keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
        raise BenchError(f"{path}: no state dict found; expected a bare one or one under "
                         f"{' / '.join(repr(k) for k in containers)}, found {found}")
    return {WRAPPER_PREFIXES.sub("", k): v for k, v in obj.items()}


def is_state_dict(d: dict) -> bool:
    return len(d) > 0 and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def _first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
