"""Exclusive folder locks: one process at a time writes into a run folder or a training folder.

Two `bench run`s on one --run-id, or two trainings into one --results-dir, would otherwise both proceed: shards
or checkpoints of one silently replace the other's, and logs interleave under the same step numbers. A lock is
an `flock` on `<folder>/.lock`, held until released or until the process ends (the kernel drops it then, so a
killed run never leaves a stale lock behind).
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from bench.errors import BenchError

#: folders this process has locked (by resolved path): locking one of its own again is not a conflict
_HELD: dict[Path, IO[str]] = {}


def lock_folder(path: str | Path, busy: str) -> None:
    """Lock `path` (created if missing) for this process, or raise `BenchError(f"{path} {busy}")` when another
    process holds it."""
    path = Path(path)
    key = path.resolve()
    if key in _HELD:
        return
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / ".lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise BenchError(f"{path} {busy}") from None
    _HELD[key] = handle


def release_folder(path: str | Path) -> None:
    handle = _HELD.pop(Path(path).resolve(), None)
    if handle is not None:
        handle.close()


def release_all() -> None:
    """Unlock every folder this process holds (a run's end, however it ends)."""
    for handle in _HELD.values():
        handle.close()
    _HELD.clear()
