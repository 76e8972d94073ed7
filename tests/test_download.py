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


def test_every_pinned_digest_is_well_formed_and_agrees_with_its_hub_prefix():
    """A typo in a pin would refuse the real file: each is 64 lowercase hex digits, and a name that carries a
    torch.hub prefix (`-6726825d.pth`) must start with it."""
    import re

    from bench.features.dinov2 import WEIGHTS as DINOV2
    from bench.inception.weights import ADM_GRAPH, PYTORCH_FID
    from bench.references import known_references
    from generators.dit.presets import PRESETS, VAE_SHA256
    from generators.llamagen import presets as llamagen_presets
    from generators.llamagen.lpips import LPIPS_HEADS, VGG16_WEIGHTS
    from generators.var import presets as var_presets

    pins = {r.filename: r.sha256 for r in [ADM_GRAPH, PYTORCH_FID, LPIPS_HEADS, VGG16_WEIGHTS, DINOV2]}
    pins |= {p.checkpoint.filename: p.checkpoint.sha256 for p in PRESETS.values()}
    pins |= {f"{vae}/{name}": digest for (vae, name), digest in VAE_SHA256.items()}
    pins |= dict(llamagen_presets.SHA256)
    pins |= dict(var_presets.SHA256)
    pins |= {entry["filename"]: entry["sha256"] for entry in known_references().values()}
    pinned = {name: digest for name, digest in pins.items() if digest is not None}
    assert {"classify_image_graph_def.pb", "pt_inception-2015-12-05-6726825d.pth", "vgg16-397923af.pth",
            "VIRTUAL_imagenet256_labeled.npz", "DiT-XL-2-256x256.pt", "dinov2_vitl14_pretrain.pth",
            "vae_ch160v4096z32.pth"} <= set(pinned)
    for name, digest in pinned.items():
        assert re.fullmatch(r"[0-9a-f]{64}", digest), name
        prefix = re.search(r"-([0-9a-f]{8})\.pth$", name)
        assert prefix is None or digest.startswith(prefix.group(1)), name


def test_a_replaced_file_with_its_mtime_restored_is_hashed_again(tmp_path, monkeypatch):
    """Same size, same mtime (as `touch -r`, rsync -t and tar leave it): the memo must not serve the old digest."""
    import hashlib
    import os
    import time

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "batch.npz"
    path.write_bytes(b"a" * 1000)
    first = sha256_file(path)
    stat = path.stat()
    time.sleep(0.01)
    replacement = tmp_path / "new.npz"
    replacement.write_bytes(b"b" * 1000)
    os.replace(replacement, path)  # another file now, same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # its mtime restored
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest() != first
    with open(path, "r+b") as f:  # rewritten in place, same inode, mtime restored: ctime still moves
        f.write(b"c" * 1000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert sha256_file(path) == hashlib.sha256(b"c" * 1000).hexdigest()


def test_offline_fails_in_seconds_and_names_every_file(tmp_path, monkeypatch):
    """No network: one probe per host, then one message for all files, without the hub's minute of retries."""
    import time

    import bench.download as download

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probes = []

    def refused(address, timeout=None):
        probes.append(address)
        raise OSError("network is unreachable")

    monkeypatch.setattr(download.socket, "create_connection", refused)
    monkeypatch.setattr(download, "_REACHABLE", {})
    monkeypatch.setattr(download, "download", lambda remote: pytest.fail("a download was attempted offline"))
    remotes = [RemoteFile(f"w{i}.pt", None, hf_repo="org/repo") for i in range(3)]
    start = time.perf_counter()
    with pytest.raises(MissingFilesError) as err:
        resolve_all(remotes)
    assert time.perf_counter() - start < 5 and len(probes) == 1  # the hub's host, asked once
    assert all(f"w{i}.pt" in str(err.value) for i in range(3))


def test_hf_hub_offline_is_honoured(tmp_path, monkeypatch):
    import bench.download as download

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(download.socket, "create_connection", lambda *a, **k: pytest.fail("network touched"))
    with pytest.raises(MissingFilesError, match="w.pt"):
        resolve_all([RemoteFile("w.pt", None, url="https://example.org/w.pt")])
