"""Shared test fixtures. Tests never touch the network or the user's cache."""

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Point $BENCH_CACHE at a fresh folder so tests neither read nor pollute ~/.cache/bench."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path_factory.mktemp("bench_cache")))
