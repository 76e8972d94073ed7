"""Reading torch checkpoint files: `torch.load(weights_only=True)` always, the containers and key prefixes
training scripts wrap weights in, and one message for every file that is refused.

Every plugin and the Inception loader read their `.pt`/`.pth` files through here, so a pickled checkpoint is
refused the same way everywhere, and never with torch's advice to retry with `weights_only=False` (which
would run whatever code the pickle names). TorchScript archives (OpenAI's CLIP release) are read for their
tensors only (`torchscript_tensors`), without compiling or running the code they carry.
"""

from __future__ import annotations

import argparse
import collections
import pickle
import re
import zipfile
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


# ----------------------------------------------------------------------------------------------------------------
# TorchScript archives, read as data

#: the element types a TorchScript archive's storages are declared with (`torch.<Name>Storage` in its data.pkl)
_STORAGE_DTYPES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
                   "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                   "BoolStorage": torch.bool}


def is_torchscript(path: str | Path) -> bool:
    """Whether `path` is a TorchScript archive (a zip holding compiled code or constants), not a `torch.save` file."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


class _ScriptObject:
    """A module or object of a TorchScript archive: the attributes its pickle sets, never its class or code."""

    qualified_name = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *unused: Any) -> torch.Tensor:
    """`torch._utils._rebuild_tensor_v2`'s arguments -> a view of the flat storage (requires_grad etc. ignored)."""
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


def _as_list(values: Any, *unused: Any) -> list:
    return list(values)


class _TorchScriptUnpickler(pickle.Unpickler):
    """data.pkl of a TorchScript archive with every global replaced by an inert stand-in: tensors are rebuilt from the
    archive's `data/` records, script classes become `_ScriptObject`s, and any other global is refused."""

    SAFE = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): lambda data, *unused: data,
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch.jit._pickle", "build_intlist"): _as_list, ("torch.jit._pickle", "build_doublelist"): _as_list,
            ("torch.jit._pickle", "build_boollist"): _as_list, ("torch.jit._pickle", "build_tensorlist"): _as_list,
            ("torch.jit._pickle", "build_list"): _as_list,
            ("torch.jit._pickle", "restore_type_tag"): lambda value, *unused: value}

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.SAFE:
            return self.SAFE[module, name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (_ScriptObject,), {"qualified_name": f"{module}.{name}"})
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not read from a TorchScript archive")

    def persistent_load(self, saved_id: Any) -> torch.Tensor:
        kind, storage_type, key, _location, numel = saved_id
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unknown persistent record {kind!r}")
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            flat = torch.frombuffer(raw, dtype=storage_type.dtype) if raw else torch.empty(0, dtype=storage_type.dtype)
            if flat.numel() != numel:
                raise pickle.UnpicklingError(f"storage {key} holds {flat.numel()} elements, its record says {numel}")
            self.storages[key] = flat
        return self.storages[key]


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = getattr(obj, "state", None)
    for name, value in (state.items() if isinstance(state, dict) else ()):
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _flatten(value, f"{prefix}{name}.", out)


def torchscript_tensors(path: str | Path, what: str = "TorchScript archive") -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript archive's module tree by dotted name (the names `state_dict()` gives),
    read from its data.pkl and data/ records alone: no class is instantiated and none of its code is compiled or
    run, so an archive is no more dangerous to read than a weights-only checkpoint."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise BenchError(f"{path}: not a TorchScript archive (no single <name>/data.pkl in it)")
            prefix = pickles[0][: -len("data.pkl")]
            if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() != b"little":
                raise BenchError(f"{path}: a big-endian TorchScript archive; re-save it on a little-endian machine")
            with archive.open(pickles[0]) as f:
                root = _TorchScriptUnpickler(f, archive, prefix).load()
    except pickle.UnpicklingError as err:
        raise BenchError(f"{path}: cannot be read as a {what} ({_first_line(err)}); if you trust the file, save "
                         "torch.jit.load(path).state_dict() with torch.save and pass that instead") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as err:
        raise BenchError(f"{path}: cannot be read as a {what} ({_first_line(err)})") from None
    out: dict[str, torch.Tensor] = {}
    _flatten(root, "", out)
    if not out:
        raise BenchError(f"{path}: the {what} holds no tensors")
    return out
