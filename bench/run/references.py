"""Known reference batches (`--ref imagenet256`) and the resolution check of any reference.

The registry is data, in `reference_stats/registry.json`; an entry resolves through `bench.download` like a
checkpoint (cache, then download, checksum-verified where a digest is pinned).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from bench.batches import NpzImages, has_images
from bench.download import RemoteFile, resolve, sha256_file, verify
from bench.errors import BenchError

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


def resolve_reference(name_or_path: str, allow_download: bool = True) -> Reference:
    """A registry name (downloaded on first use) or a path to an ADM `.npz` batch / statistics / image folder."""
    known = known_references()
    if name_or_path in known:
        entry = known[name_or_path]
        path = packaged_path(entry) if entry.get("packaged") else resolve(registry_file(name_or_path),
                                                                          allow_download=allow_download)
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
