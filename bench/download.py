"""Checksummed, cached file resolution: explicit path -> cache -> download.

Every weight file and reference batch the harness needs is described by a `RemoteFile` with a pinned sha256.
Downloads go through `huggingface_hub` for hub releases and plain HTTPS otherwise, land in the cache
(`$BENCH_CACHE`, default `~/.cache/bench`) atomically, and are verified before use. Offline, `resolve_all`
raises one `MissingFilesError` that lists every missing file, its source and where to put it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from bench.errors import ChecksumError, MissingFilesError


def cache_dir() -> Path:
    """The directory that holds downloaded weights, reference batches and activation caches."""
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "bench")).expanduser()


@dataclass(frozen=True)
class RemoteFile:
    """A file the harness can fetch: its cache name, pinned sha256, and where it is published."""

    filename: str
    sha256: str | None
    url: str | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None

    @property
    def source(self) -> str:
        if self.hf_repo:
            return f"https://huggingface.co/{self.hf_repo}/resolve/main/{self.hf_filename or self.filename}"
        return self.url or "(no public source)"

    @property
    def cache_path(self) -> Path:
        return cache_dir() / self.filename


def sha256_file(path: str | os.PathLike, progress: bool = False) -> str:
    """sha256 of a file, streamed in 4 MiB chunks.

    The digest is memoised in the cache, so multi-GB checkpoints and sample batches are hashed once rather than on
    every run, without writing beside the user's files. The memo is keyed by absolute path, size, mtime, inode
    and ctime: a file replaced by another of the same size with its mtime restored (`touch -r`, `rsync -t`, tar)
    still gets a new inode or ctime -- which no user call can set back -- so it is hashed again, not served the
    old file's digest (and, through the activation cache, the old file's features).
    """
    path = Path(path).resolve()
    stat = path.stat()
    sidecar = cache_dir() / "sha256" / (hashlib.sha1(str(path).encode()).hexdigest() + ".json")
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino, "ctime_ns": stat.st_ctime_ns}
    if sidecar.exists():
        try:
            memo = json.loads(sidecar.read_text())
            if memo.get("key") == key:
                return memo["sha256"]
        except (OSError, ValueError, KeyError):
            pass
    digest = hashlib.sha256()
    with open(path, "rb") as f, tqdm(
        total=stat.st_size, unit="B", unit_scale=True, desc=f"sha256 {path.name}", disable=not progress
    ) as bar:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    value = digest.hexdigest()
    try:
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        sidecar.write_text(json.dumps({"key": key, "sha256": value}))
    except OSError:
        pass  # read-only location: the memo is only an optimisation
    return value


def verify(path: str | os.PathLike, sha256: str | None) -> None:
    """Refuse a file whose sha256 is not the pinned one."""
    if sha256 is None:
        return
    found = sha256_file(path, progress=Path(path).stat().st_size > (1 << 28))
    if found != sha256:
        raise ChecksumError(
            f"{path}: sha256 mismatch.\n  expected {sha256}\n  found    {found}\n"
            "The file is corrupt, truncated or a different release; delete it and fetch it again."
        )


def _download_url(url: str, dest: Path) -> None:
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                bar.update(len(chunk))
    os.replace(part, dest)


def _download_hf(remote: RemoteFile, dest: Path) -> None:
    from huggingface_hub import hf_hub_download

    fetched = hf_hub_download(remote.hf_repo, remote.hf_filename or remote.filename)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fetched, part)
    os.replace(part, dest)


def download(remote: RemoteFile) -> Path:
    """Download `remote` into the cache and verify it; raises OSError-like errors when offline."""
    dest = remote.cache_path
    if remote.hf_repo:
        _download_hf(remote, dest)
    elif remote.url:
        _download_url(remote.url, dest)
    else:
        raise FileNotFoundError(remote.filename)
    try:
        verify(dest, remote.sha256)
    except ChecksumError:
        dest.unlink()
        raise
    return dest


def offline_requested() -> bool:
    """`HF_HUB_OFFLINE=1` (huggingface_hub's switch) or `BENCH_OFFLINE=1`: never try the network."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "BENCH_OFFLINE"))


#: host -> whether it answered; asked once per process, so an offline machine waits seconds, not minutes of
#: per-file retries (huggingface_hub retries each request for most of a minute before giving up)
_REACHABLE: dict[str, bool] = {}
PROBE_TIMEOUT_S = 3.0


def reachable(url: str) -> bool:
    """Whether the host of `url` accepts a TCP connection on its port within a few seconds (memoised)."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if host not in _REACHABLE:
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
            _REACHABLE[host] = True
        except OSError:
            _REACHABLE[host] = False
    return _REACHABLE[host]


def resolve_all(remotes: list[RemoteFile], explicit: dict[str, str | os.PathLike] | None = None,
                allow_download: bool = True) -> list[Path]:
    """Resolve every file (explicit path, then cache, then download), or raise one error listing the missing.

    `explicit` maps a RemoteFile.filename to a user-given path; an explicit path is verified like any other.
    """
    explicit = explicit or {}
    allow_download = allow_download and not offline_requested()
    found: list[Path] = []
    missing: list[tuple[str, str, str]] = []
    for remote in remotes:
        path = explicit.get(remote.filename)
        if path is not None:
            path = Path(path).expanduser()
            if not path.exists():
                raise MissingFilesError([(remote.filename, str(path) + " (given explicitly)", str(path))])
            verify(path, remote.sha256)
            found.append(path)
            continue
        if remote.cache_path.exists():
            verify(remote.cache_path, remote.sha256)
            found.append(remote.cache_path)
            continue
        if allow_download and (remote.url or remote.hf_repo) and reachable(remote.source):
            try:
                found.append(download(remote))
                continue
            except ChecksumError:
                raise
            except Exception:  # offline, DNS failure, HTTP error, hub error: reported together below
                pass
        missing.append((remote.filename, remote.source, str(remote.cache_path)))
    if missing:
        raise MissingFilesError(missing)
    return found


def resolve(remote: RemoteFile, explicit: str | os.PathLike | None = None, allow_download: bool = True) -> Path:
    """Resolve one file; see `resolve_all`."""
    mapping = {remote.filename: explicit} if explicit is not None else None
    return resolve_all([remote], mapping, allow_download)[0]


def resolve_weights(remote: RemoteFile, given: str | os.PathLike | None = None,
                    allow_download: bool = True) -> tuple[Path, bool]:
    """A feature network's weights and whether they are the published file.

    A file the user names is theirs, as a checkpoint given by path is: it is used whatever its digest (only its
    existence is checked) and it is the published file only when its sha256 is the pin. Without one, the cache
    or a download supplies the published file, held to its pin as every download is.
    """
    if given is None:
        return resolve(remote, None, allow_download), True
    path = resolve(dataclasses.replace(remote, sha256=None), given, allow_download=False)
    return path, remote.sha256 is not None and sha256_file(path) == remote.sha256
