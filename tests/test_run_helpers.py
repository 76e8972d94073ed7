"""Test doubles for `bench run`: a tiny deterministic generator, a stand-in feature extractor and scorer.

They stand in for real plugins and the Inception network so the run machinery is tested in milliseconds,
and are importable by the torchrun worker in test_run_dist.py. The few tests here check the doubles keep
the contract the harness relies on (per-seed determinism), so the other tests can trust them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

import bench.run.executor
from bench.download import RemoteFile
from bench.generator import Generator, PluginOption, Preset, PresetInfo


class ToyGenerator(Generator):
    """16x16 images scored at 8x8: uniform noise per seed, shifted by the label and a checkpoint offset."""

    name = "toy"
    image_size = 16
    eval_size = 8
    num_classes = 10
    #: tests set these to exercise weights and faults
    files: list[RemoteFile] = []
    oom_after_calls: int | None = None
    oom_type: type = RuntimeError

    def __init__(self, ckpt=None, device="cpu", **overrides):
        self.device = device
        self.temperature = overrides.get("temperature", 1.0)
        self.cfg_scale = overrides.get("cfg_scale", 1.0)
        self.precision = overrides.get("precision", "fp32")
        self.offset = 0.0
        self.calls = 0

    def config(self):
        return {"model": "toy", "temperature": self.temperature, "cfg_scale": self.cfg_scale,
                "precision": self.precision, "offset": self.offset, "device": self.device}

    def required_files(self):
        return list(ToyGenerator.files)

    def load(self, files):
        for path in files.values():
            self.offset = float(torch.load(path, weights_only=True)["offset"])

    def sample(self, labels, seeds):
        self.calls += 1
        if self.oom_after_calls is not None and self.calls > self.oom_after_calls:
            raise self.oom_type("CUDA out of memory. Tried to allocate 2.00 GiB")
        out = []
        for label, seed in zip(labels.tolist(), seeds.tolist()):
            g = torch.Generator().manual_seed(seed)
            x = torch.rand(16, 16, 3, generator=g) * 100 * self.temperature + 10 * label + self.offset
            out.append(x.clamp(0, 255).to(torch.uint8))
        return torch.stack(out).numpy()


TOY_OPTIONS = (PluginOption("temperature", float, 1.0, "noise amplitude"),
               PluginOption("cfg_scale", float, 1.0, "ignored"),
               PluginOption("precision", str, "fp32", "recorded only", choices=("fp32", "bf16")))


#: the toy as a registered preset: its options are checked before `ToyGenerator` is built
toy_factory = Preset("toy", ToyGenerator, TOY_OPTIONS,
                     PresetInfo(model="Toy-S", image_size=16, eval_size=8, paper_settings={"cfg_scale": 1.5, "top_k": 0},
                                paper="nobody 2026"))


class ProjectionExtractor:
    """A stand-in for Inception: fixed random projections of 4x4 average-pooled pixels (float64)."""

    name = "inception"  # stands in for it
    arrays = {"pool": 6, "spatial": 5, "logits": 10}
    provenance = {"name": "test-projection", "seed": 0}
    has_logits = True

    def __init__(self):
        rng = np.random.default_rng(0)
        self.weights = {k: rng.standard_normal((48, d)) for k, d in (("pool", 6), ("spatial", 5), ("logits", 10))}

    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        n, h, w, _ = images.shape
        x = images.astype(np.float64).reshape(n, 4, h // 4, 4, w // 4, 3).mean(axis=(2, 4)).reshape(n, -1) / 255
        return {k: x @ w_ for k, w_ in self.weights.items()}


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def toy_scorer(ref, extractors, metrics=None):
    """FID on `pool` against the reference npz's images, and an IS-like score on `logits` (a `ScorerFactory`)."""
    with np.load(ref.path) as npz:
        ref_pool = extractors[0].extract(npz["arr_0"])["pool"]

    def score(features, metrics=None):
        logits = features["logits"]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        kl = (p * (np.log(p) - np.log(p.mean(0, keepdims=True)))).sum(1)
        return {"metrics": {"fid": frechet(features["pool"], ref_pool), "is": float(np.exp(kl.mean())),
                            "n": len(features["pool"])}, "unavailable": {}, "details": {}}

    return score


def write_ref(path: Path, size: int = 8, n: int = 24) -> Path:
    """A tiny ADM-format reference batch."""
    rng = np.random.default_rng(7)
    np.savez(path, arr_0=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    return path


@pytest.fixture(name="toy")
def toy_fixture(monkeypatch, tmp_path):
    """Register `toy` for the run executor, reset its fault switches, and give a reference batch path."""
    real = bench.run.executor.load_preset
    monkeypatch.setattr(bench.run.executor, "load_preset",
                        lambda name: toy_factory if name == "toy" else real(name))
    monkeypatch.setattr(ToyGenerator, "files", [])
    monkeypatch.setattr(ToyGenerator, "oom_after_calls", None)
    monkeypatch.setattr(ToyGenerator, "oom_type", RuntimeError)
    return write_ref(tmp_path / "ref.npz")


def test_toy_generator_depends_only_on_seed_and_label():
    gen = toy_factory()
    labels, seeds = torch.tensor([3, 1, 4, 1]), torch.tensor([10, 20, 30, 20])
    whole = gen.sample(labels, seeds)
    one_by_one = np.concatenate([gen.sample(labels[i : i + 1], seeds[i : i + 1]) for i in range(4)])
    assert whole.dtype == np.uint8 and whole.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(whole, one_by_one)
    np.testing.assert_array_equal(whole[1], whole[3])
    assert not np.array_equal(whole[0], whole[1])


def test_projection_extractor_is_row_independent():
    ex = ProjectionExtractor()
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    whole = ex.extract(images)
    for i in range(5):
        np.testing.assert_allclose(ex.extract(images[i : i + 1])["pool"][0], whole["pool"][i], rtol=1e-12)
