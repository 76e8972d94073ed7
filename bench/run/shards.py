"""A run's folder: its manifest (what the shards were made with) and one set of files per finished shard.

    runs/<run-id>/manifest.json               the fingerprinted configuration every shard was made with
    runs/<run-id>/shards/00000000-00001000.features.npz   Inception features of samples [0, 1000)
    runs/<run-id>/shards/00000000-00001000.images.npy     the images themselves (only with --save-npz)
    runs/<run-id>/result.json                 the scored result (one scored against another reference before
                                              is kept beside it as result-<its reference sha256[:12]>.json)

Each file is written atomically, so a killed run leaves only complete shards; restarting the same command
skips them, after reading each back (a damaged one is set aside and sampled again). A run folder refuses to be
reused by a different configuration rather than mixing shards, and is locked while a run uses it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from bench.atomic import atomic_path, write_json
from bench.errors import BenchError
from bench.locks import lock_folder, release_all
from bench.distributed import ProcessGroup

Shard = tuple[int, int]

def release_run_folders() -> None:
    """Unlock every run folder this process holds; called when a run ends, however it ends."""
    release_all()


def fingerprint(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): obj}


class RunFolder:
    """The on-disk state of one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.shards_dir = self.path / "shards"

    @classmethod
    def open(cls, path: str | Path, config: dict[str, Any], group: ProcessGroup) -> "RunFolder":
        """The run folder claimed for `config` on every rank: rank 0 first (recording the config and removing a
        killed run's half-written files), then the other ranks, which only check it."""
        folder = cls(path)
        if group.is_main:
            folder.lock()
            folder.claim(config)
            folder.remove_partial_files()
        group.barrier()
        if not group.is_main:
            folder.claim(config)
        return folder

    def lock(self) -> None:
        """Hold an exclusive lock on the folder until `release_run_folders`: a second run into the same folder
        (the same --run-id, or the same command started twice) is refused instead of sharing its shards."""
        lock_folder(self.path, "is in use by another bench run; wait for it to finish, or give this one another "
                               "--run-id")

    # -- manifest -------------------------------------------------------------------------------------
    def claim(self, config: dict[str, Any]) -> bool:
        """Record `config` as this folder's, or check it matches the recorded one; True if it was recorded.

        A mismatch is refused with the settings that differ: shards made under another configuration
        would silently change the metrics.
        """
        manifest = self.path / "manifest.json"
        if manifest.exists():
            recorded = json.loads(manifest.read_text())
            if recorded.get("fingerprint") != fingerprint(config):
                old, new = _flatten(recorded.get("config", {})), _flatten(config)
                diffs = [f"  {k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}"
                         for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
                raise BenchError(
                    f"{self.path} holds shards of a different configuration:\n" + "\n".join(diffs) +
                    "\nRefusing to mix them. Use another --run-id, or delete the folder to start over."
                )
            return False
        write_json(manifest, {"fingerprint": fingerprint(config), "config": config})
        return True

    def remove_partial_files(self) -> int:
        """Delete half-written shard files a killed run left behind (atomic writes' temporaries).

        Only call it while no process writes into this folder (rank 0, before the others start).
        """
        stale = list(self.shards_dir.glob(".*.tmp")) if self.shards_dir.exists() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    # -- shards ---------------------------------------------------------------------------------------
    def shard_file(self, shard: Shard, kind: str) -> Path:
        suffix = {"features": "features.npz", "images": "images.npy"}[kind]
        return self.shards_dir / f"{shard[0]:08d}-{shard[1]:08d}.{suffix}"

    def is_written(self, shard: Shard, kinds: tuple[str, ...]) -> bool:
        """Whether every file of the shard exists (a count for messages; `is_done` also reads them back)."""
        return all(self.shard_file(shard, kind).exists() for kind in kinds)

    def is_done(self, shard: Shard, kinds: tuple[str, ...]) -> bool:
        """Whether every file of the shard exists and reads back whole. A damaged one (a crash on a filesystem
        that lost the write, a truncated copy, a flipped bit) is renamed `*.corrupt` and the shard redone."""
        if not self.is_written(shard, kinds):
            return False
        for kind in kinds:
            path = self.shard_file(shard, kind)
            try:
                self.read_features(shard) if kind == "features" else self._check_images(shard)
            except Exception as err:  # any failure to read it back: zip, CRC, npy header, keys, sample range
                aside = path.with_name(path.name + ".corrupt")
                path.replace(aside)
                click.echo(f"Warning: {path} is damaged ({type(err).__name__}: {err}); moved to {aside.name}, "
                           "its samples are generated again", err=True)
                return False
        return True

    def _check_images(self, shard: Shard) -> None:
        images = self.read_images(shard)
        if len(images) != shard[1] - shard[0] or images.dtype != np.uint8 or images.ndim != 4:
            raise BenchError(f"holds {images.dtype} {images.shape}, not {shard[1] - shard[0]} uint8 images")
        np.asarray(images[-1])  # reads the last page: a truncated file fails here

    def write_features(self, shard: Shard, arrays: dict[str, np.ndarray]) -> None:
        with atomic_path(self.shard_file(shard, "features")) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    def write_images(self, shard: Shard, images: np.ndarray) -> None:
        with atomic_path(self.shard_file(shard, "images")) as tmp, open(tmp, "wb") as f:
            np.save(f, images, allow_pickle=False)

    def read_features(self, shard: Shard) -> dict[str, np.ndarray]:
        with np.load(self.shard_file(shard, "features"), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        if not np.array_equal(arrays["index"], np.arange(*shard)):
            raise BenchError(f"{self.shard_file(shard, 'features')}: holds other samples than {shard}; delete it")
        return arrays

    def read_images(self, shard: Shard) -> np.ndarray:
        return np.load(self.shard_file(shard, "images"), mmap_mode="r", allow_pickle=False)

    def write_result(self, result: dict[str, Any]) -> Path:
        """`result.json`, atomically. A previous result scored against another reference batch is not lost:
        it moves to `result-<its reference sha256[:12]>.json` (`bench report` reads both)."""
        path = self.path / "result.json"
        if path.exists():
            try:
                previous = (json.loads(path.read_text()).get("reference") or {}).get("sha256")
            except (ValueError, AttributeError):
                previous = None
            if previous and previous != (result.get("reference") or {}).get("sha256"):
                path.replace(self.path / f"result-{previous[:12]}.json")
        write_json(path, result)
        return path

    def concat_features(self, shards: list[Shard]) -> dict[str, np.ndarray]:
        """Every shard's arrays concatenated in sample-index order."""
        parts = [self.read_features(s) for s in shards]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
