"""Exclusive folder locks: one process at a time writes into a run folder or a training folder.

Two `bench run`s on one --run-id, or two trainings into one --results-dir, would otherwise both proceed: shards
or checkpoints of one silently replace the other's, and logs interleave under the same step numbers. A lock is
an `flock` on `<folder>/.lock`, held until released or until the process ends (the kernel drops it then, so a
killed run never leaves a stale lock behind). A released lock's file is removed, so a finished folder holds only
its results; a process that locked a file another one was removing at that moment sees that the path now names
another file (or none) and tries again.
"""

from __future__ import annotations

import fcntl
import os
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
    while True:
        try:
            path.mkdir(parents=True, exist_ok=True)
            handle = open(path / ".lock", "a")
        except OSError as err:
            raise BenchError(f"{path}: cannot write there ({err.strerror}); the folder is not writable") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise BenchError(f"{path} {busy}") from None
        if _same_file(handle, path / ".lock"):
            break
        handle.close()  # the holder removed this file as we locked it: lock the one there now
    _HELD[key] = handle


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _unlock(handle: IO[str]) -> None:
    """Remove the lock's file while still holding it, then let go."""
    try:
        if _same_file(handle, Path(handle.name)):
            os.unlink(handle.name)
    except OSError:
        pass  # a read-only folder keeps its .lock: harmless
    handle.close()


def release_folder(path: str | Path) -> None:
    handle = _HELD.pop(Path(path).resolve(), None)
    if handle is not None:
        _unlock(handle)


def release_all() -> None:
    """Unlock every folder this process holds (a run's end, however it ends)."""
    for handle in _HELD.values():
        _unlock(handle)
    _HELD.clear()
