"""Shared test fixtures. Tests never touch the network or the user's cache."""

import dataclasses

import pytest
import torch

from bench.download import sha256_file

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Point $BENCH_CACHE at a fresh folder so tests neither read nor pollute ~/.cache/bench."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path_factory.mktemp("bench_cache")))


@pytest.fixture(scope="session")
def _shared_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("shared_bench_cache")


@pytest.fixture
def shared_cache(_shared_cache_dir, monkeypatch):
    """One $BENCH_CACHE for the tests that run the real Inception on the packaged demo64 reference: its 512 images
    are extracted once per session, not once per test (still never the user's cache)."""
    monkeypatch.setenv("BENCH_CACHE", str(_shared_cache_dir))
    return _shared_cache_dir


@pytest.fixture
def one_thread():
    """Tiny models run many small ops; on 2 shared cores a second spinning intra-op thread makes them several
    times slower. Test modules of tiny models opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def pin(monkeypatch):
    """`pin(module, "NAME", path)`: give the module's RemoteFile NAME the sha256 of a synthetic stand-in. Tests
    write small files under the real names, and the real file's pinned digest rightly refuses them."""

    def pin_to(module, name: str, path) -> None:
        monkeypatch.setattr(module, name, dataclasses.replace(getattr(module, name), sha256=sha256_file(path)))

    return pin_to


@pytest.fixture
def held_lock():
    """`with held_lock(folder):` another process holds `folder`'s lock (bench.locks: an flock on folder/.lock), as a
    second training or run into the same folder would, until the block ends."""
    import contextlib
    import subprocess
    import sys

    @contextlib.contextmanager
    def hold(folder):
        folder.mkdir(parents=True, exist_ok=True)
        holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); "
                                   "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
                                   str(folder / ".lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "locked"
            yield
        finally:
            holder.communicate("")

    return hold
