"""Running feature networks over an image source, block by block, with an activation cache.

Each network runs once per image block, whatever number of metrics read its arrays. Its activations are cached
per input under `$BENCH_CACHE/activations/`, keyed by the input's content digest and by what decides the
numbers: the network, its weights' sha256, and its backend or preprocessing. Scoring many sample batches
against one reference therefore extracts the reference once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import click
import numpy as np
from tqdm.auto import tqdm

from bench import atomic
from bench.batches import ImageSource
from bench.download import cache_dir

#: provenance fields that decide an extractor's numbers (paths, devices and versions do not key the cache)
KEY_FIELDS = ("network", "sha256", "weights_sha256", "backend", "resize", "kind")


def cache_key(extractor) -> str:
    """`<network>-<digest>`: which network, which weights, which backend/preprocessing."""
    prov = getattr(extractor, "provenance", None) or {}
    decisive = {k: prov.get(k) for k in KEY_FIELDS if prov.get(k) is not None}
    digest = hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]
    return f"{getattr(extractor, 'name', 'inception')}-{digest}"


def _cache_file(source: ImageSource, extractor) -> Path:
    return cache_dir() / "activations" / f"{source.content_hash()}-{cache_key(extractor)}.npz"


def _read_cached(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as err:  # a damaged cache entry is a miss: recomputed and rewritten
        click.echo(f"Warning: {path} is damaged ({type(err).__name__}); recomputing it", err=True)
        return None


def _write_cached(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError as err:  # an unwritable $BENCH_CACHE costs the next run time, not this run's result
        click.echo(f"Warning: activations not cached ({err}); set $BENCH_CACHE to a writable folder", err=True)


def extract_source(source: ImageSource, extractors: Sequence, batch_size: int = 64, cache: bool = True,
                   on_block: Callable[[np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """Every array of every extractor over all of `source`'s images; memory holds only the features.

    `on_block` sees every image block as it streams past (e.g. to write the images out in the same pass);
    with it the cache is not read, since a cache hit would skip the images.
    """
    out: dict[str, np.ndarray] = {}
    todo = list(extractors)
    files = {}
    if cache:
        files = {id(e): _cache_file(source, e) for e in todo}
        if on_block is None:
            for extractor in list(todo):
                cached = _read_cached(files[id(extractor)])
                if cached is not None:
                    out.update(cached)
                    todo.remove(extractor)
    if not todo:
        return out
    parts: dict[int, dict[str, list[np.ndarray]]] = {id(e): {} for e in todo}
    names = "+".join(getattr(e, "name", "features") for e in todo)
    with tqdm(total=source.num_images, unit="img", desc=f"{names} {source.path.name}") as bar:
        for block in source.batches(batch_size):
            if on_block is not None:
                on_block(block)
            for extractor in todo:
                for key, value in extractor.extract(block).items():
                    parts[id(extractor)].setdefault(key, []).append(value)
            bar.update(len(block))
    for extractor in todo:
        arrays = {k: np.concatenate(v) for k, v in parts[id(extractor)].items()}
        if cache:
            _write_cached(files[id(extractor)], arrays)
        out.update(arrays)
    return out
