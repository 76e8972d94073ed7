"""Checksummed resolution: explicit path, cache, download over loopback HTTP, offline message."""

import hashlib
import http.server
import threading

import pytest

from bench.download import RemoteFile, cache_dir, resolve, resolve_all, sha256_file
from bench.errors import ChecksumError, MissingFilesError

PAYLOAD = b"weights" * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "w.bin").write_bytes(PAYLOAD)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_sha256_matches_hashlib_and_is_memoised(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(PAYLOAD)
    assert sha256_file(p) == SHA
    assert list((cache_dir() / "sha256").glob("*.json")) and not list(tmp_path.glob("*.json"))
    p.write_bytes(PAYLOAD + b"x")  # size changes -> memo is invalid
    assert sha256_file(p) == hashlib.sha256(PAYLOAD + b"x").hexdigest()


def test_download_then_cache(http_root):
    remote = RemoteFile("w.bin", SHA, url=f"{http_root}/w.bin")
    path = resolve(remote)
    assert path == cache_dir() / "w.bin" and path.read_bytes() == PAYLOAD
    # second time: served from the cache even with downloads disabled
    assert resolve(remote, allow_download=False) == path


def test_download_with_wrong_checksum_is_refused_and_removed(http_root):
    remote = RemoteFile("w.bin", "0" * 64, url=f"{http_root}/w.bin")
    with pytest.raises(ChecksumError, match="expected 0000"):
        resolve(remote)
    assert not (cache_dir() / "w.bin").exists()


def test_explicit_path_is_verified(tmp_path):
    p = tmp_path / "mine.bin"
    p.write_bytes(b"not the weights")
    with pytest.raises(ChecksumError, match=SHA):
        resolve(RemoteFile("w.bin", SHA), explicit=p)
    p.write_bytes(PAYLOAD)
    assert resolve(RemoteFile("w.bin", SHA), explicit=p) == p


def test_offline_lists_every_missing_file_with_source_and_destination():
    remotes = [RemoteFile("a.pt", SHA, url="http://127.0.0.1:9/a.pt"),
               RemoteFile("b.pt", SHA, hf_repo="org/repo")]
    with pytest.raises(MissingFilesError) as err:
        resolve_all(remotes, allow_download=False)
    message = str(err.value)
    for needle in ["a.pt", "http://127.0.0.1:9/a.pt", "b.pt", "huggingface.co/org/repo", str(cache_dir())]:
        assert needle in message
