"""Reference batches: the registry of known ones (`--ref imagenet256`), resolving one, the resolution check, and
building one from images (`bench ref build`).

The registry is data, in `reference_stats/registry.json`; an entry resolves through `bench.download` like a
checkpoint (cache, then download, checksum-verified where a digest is pinned), or ships with the package
(`"packaged": true`, the demo's val split). A built reference is an ADM-format npz -- `mu`, `sigma`, `mu_s`,
`sigma_s` (and `mu_<array>`/`sigma_<array>` for other networks), optionally `arr_0` and, beside it, the rows of
other networks' features for those images (`feat_clip`: CMMD then needs no CLIP pass over the reference) -- with a
provenance record beside it, `<output>.json`, since ADM's evaluator and other tools expect arrays only in the npz.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from typing import Sequence

import numpy as np

from bench.atomic import atomic_path, write_json
from bench.batches import ImageSource, NpzImages, NpzWriter, has_images
from bench.download import RemoteFile, cache_dir, resolve, sha256_file, verify
from bench.errors import BenchError, MissingFilesError
from bench.features.cache import extract_source
from bench.features.featureset import statistics_keys
from bench.metrics import feature_statistics
from bench.result import package_versions

REGISTRY = files("reference_stats") / "registry.json"  # package data: found from a checkout and from a wheel


def known_references() -> dict[str, dict]:
    """Registry name -> entry (filename, url, sha256, resolution)."""
    entries = json.loads(REGISTRY.read_text())
    return {name: entry for name, entry in entries.items() if not name.startswith("_")}


@dataclass(frozen=True)
class Reference:
    """A resolved reference: its name as given, local path, and the resolution of its images if known."""

    name: str
    path: Path
    resolution: int | None

    def provenance(self) -> dict:
        return {"name": self.name, "path": str(self.path.resolve()), "sha256": sha256_file(self.path),
                "resolution": self.resolution}


def registry_file(name: str) -> RemoteFile | None:
    """The downloadable file behind a registry name (`imagenet256`), or None for a path or a packaged reference."""
    entry = known_references().get(name)
    return None if entry is None or entry.get("packaged") else RemoteFile(entry["filename"], entry["sha256"],
                                                                          url=entry["url"])


def packaged_path(entry: dict) -> Path:
    """A reference that ships inside the package (`"packaged": true`, e.g. the offline demo's `demo64`), verified."""
    path = Path(str(files("reference_stats") / entry["filename"]))
    if not path.is_file():
        raise BenchError(f"{path}: the packaged reference is missing from this installation; reinstall bench")
    verify(path, entry["sha256"])
    return path


def local_references(resolution: int | None = None) -> list[str]:
    """Registry names usable without a download (packaged, or already in the cache), at `resolution` if given."""
    usable = []
    for name, entry in known_references().items():
        if resolution is not None and entry["resolution"] != resolution:
            continue
        if entry.get("packaged") or (cache_dir() / entry["filename"]).is_file():
            usable.append(name)
    return usable


def offline_hint(resolution: int | None) -> str:
    """What `--ref` would work here and now, for a message about a reference that cannot be fetched."""
    local = local_references(resolution)
    names = f"--ref {' or --ref '.join(local)} (here already), or " if local else ""
    at = f" at {resolution}x{resolution}" if resolution else ""
    return f"Or score against a reference you have{at}: {names}--ref PATH (an ADM .npz batch or an image folder)."


def resolve_reference(name_or_path: str, allow_download: bool = True) -> Reference:
    """A registry name (downloaded on first use) or a path to an ADM `.npz` batch / statistics / image folder."""
    known = known_references()
    if name_or_path in known:
        entry = known[name_or_path]
        if entry.get("packaged"):
            return Reference(name_or_path, packaged_path(entry), entry["resolution"])
        try:
            path = resolve(registry_file(name_or_path), allow_download=allow_download)
        except MissingFilesError as err:
            raise MissingFilesError(err.missing, offline_hint(entry["resolution"])) from None
        return Reference(name_or_path, path, entry["resolution"])
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise BenchError(f"--ref {name_or_path!r}: neither a known reference ({', '.join(sorted(known))}) "
                         "nor an existing file or folder")
    resolution = None
    if path.is_file() and has_images(path):
        shape = NpzImages(path).shape
        if shape[1] != shape[2]:
            raise BenchError(f"--ref {name_or_path}: holds {shape[1]}x{shape[2]} images; a reference batch is square "
                             "(ADM center-crops ImageNet), build one with `bench ref build`")
        resolution = shape[1]
    return Reference(name_or_path, path, resolution)


def check_resolution(ref: Reference, eval_size: int, force: bool) -> str | None:
    """Refuse a reference at another resolution than the generator's eval size unless forced.

    Returns a warning when forced, or when the resolution cannot be known (statistics-only batch, folder).
    """
    if ref.resolution is None:
        return (f"the resolution of reference {ref.name!r} is unknown (no images in it): make sure it was built "
                f"at {eval_size}x{eval_size}")
    if ref.resolution != eval_size:
        message = (f"reference {ref.name!r} holds {ref.resolution}x{ref.resolution} images but the generator is "
                   f"scored at {eval_size}x{eval_size}")
        if not force:
            raise BenchError(message + ": FID against it is meaningless. Pass the matching --ref, or --force.")
        return message + " (--force given)"
    return None


def build_reference(source: ImageSource, output: str | Path, extractors: Sequence, arrays: Sequence[str], *,
                    include_images: bool = False, subset: int | None = None, seed: int = 0,
                    batch_size: int = 64, store_rows: Sequence[str] = ()) -> int:
    """Write the reference npz for `source` (every image's features into the statistics; with `include_images`,
    the images too, or a seeded random `subset` of them as ADM's 10,000, and the `store_rows` features of those
    images as `feat_<array>`) and its provenance record, both atomically. Returns the number of images stored in
    `arr_0` (0 without `include_images`)."""
    output, record_path = Path(output), Path(f"{output}.json")
    writer = store = None
    if include_images:
        if subset is not None and subset > source.num_images:
            raise BenchError(f"--subset {subset}: {source.path} holds only {source.num_images} images")
        chosen = np.sort(np.random.default_rng(seed).choice(source.num_images, subset, replace=False)) if subset \
            else None
        first = next(source.batches(1))
        writer = NpzWriter(output, source.num_images if chosen is None else len(chosen), first.shape[1:])
        seen = 0

        def store(block: np.ndarray) -> None:  # blocks stream in index order: keep the chosen rows of each
            nonlocal seen
            rows = block if chosen is None else block[chosen[(chosen >= seen) & (chosen < seen + len(block))] - seen]
            writer.write(rows)
            seen += len(block)
    try:
        features = extract_source(source, extractors, batch_size, on_block=store)
        stats = {}
        for array in arrays:
            (mu_key, sigma_key), (mu, sigma) = statistics_keys(array), feature_statistics(features[array])
            stats.update({mu_key: mu, sigma_key: sigma})
        record_path.unlink(missing_ok=True)  # an earlier build's record must not outlive its .npz
        if writer:
            rows = {f"feat_{a}": features[a] if chosen is None else features[a][chosen] for a in store_rows}
            writer.close(**stats, **rows)
        else:
            with atomic_path(output) as tmp, open(tmp, "wb") as f:
                np.savez(f, **stats)
    except BaseException:
        if writer:
            writer.abort()
        raise
    versions = package_versions()
    write_json(record_path, {
        "output": output.name, "sha256": sha256_file(output, progress=True),
        "source": str(Path(source.path).resolve()), "source_sha256": source.content_hash(),
        "num_images": source.num_images, "skipped": getattr(source, "skipped", {}),
        "center_crop": getattr(source, "center_crop", None), "stored_images": writer.num_rows if writer else 0,
        "subset_seed": seed if subset is not None else None,
        "features": {getattr(e, "name", "inception"): getattr(e, "provenance", None) for e in extractors},
        "bench": versions.get("bench"), "versions": versions,
    })
    return writer.num_rows if writer else 0
