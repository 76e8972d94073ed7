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
