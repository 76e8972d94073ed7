"""The generator contract: default eval-size resize, overrides checking, preset descriptions, listing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import bench.run.cli
from bench.errors import BenchError
from bench.generator import Generator, check_overrides, check_sampling, preset_info
from bench.run.cli import generators_command
from test_run_helpers import ToyGenerator, toy_factory


def test_default_eval_resize_is_antialiased_bicubic_like_pil():
    gen = toy_factory()
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    small = gen.to_eval_size(images)
    assert small.dtype == np.uint8 and small.shape == (3, 8, 8, 3)
    # torch's antialiased bicubic (a = -0.5, support widened by the scale) is documented to follow PIL
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double()
    ref = F.interpolate(x, size=(8, 8), mode="bicubic", antialias=True, align_corners=False)
    ref = ref.round().clamp(0, 255).permute(0, 2, 3, 1).numpy()
    assert np.abs(small.astype(int) - ref.astype(int)).max() <= 1
    # and it is not the plain (aliasing) bicubic nor a box average
    plain = F.interpolate(x, size=(8, 8), mode="bicubic", align_corners=False).round().clamp(0, 255)
    assert np.abs(small.astype(int) - plain.permute(0, 2, 3, 1).numpy().astype(int)).max() > 1


def test_eval_resize_is_the_identity_at_eval_size():
    gen = toy_factory()
    gen.eval_size = 16
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    assert gen.to_eval_size(images) is images


def test_sample_for_eval_resizes_the_samples():
    gen = toy_factory()
    labels, seeds = torch.tensor([1, 2]), torch.tensor([5, 6])
    np.testing.assert_array_equal(gen.sample_for_eval(labels, seeds), gen.to_eval_size(gen.sample(labels, seeds)))


def test_check_overrides_names_rejected_and_accepted_flags():
    check_overrides("x", {"cfg_scale": 1.0}, {"cfg_scale", "top_k"})
    with pytest.raises(BenchError, match=r"'x' does not take --steps; it takes: --cfg-scale, --top-k"):
        check_overrides("x", {"steps": 3, "cfg_scale": 1.0}, {"cfg_scale", "top_k"})


def test_non_tokenizers_refuse_to_reconstruct():
    with pytest.raises(BenchError, match="'toy' is not a tokenizer"):
        toy_factory().reconstruct(np.zeros((1, 16, 16, 3), np.uint8))


def test_load_defaults_to_nothing_and_the_contract_is_abstract():
    class Bare(Generator):
        name, image_size = "bare", 8

    with pytest.raises(TypeError):
        Bare()
    assert ToyGenerator.load is not Generator.load and Generator.load(toy_factory(), {}) is None


def test_preset_info_is_read_without_building_the_generator():
    info = preset_info(toy_factory)
    assert info == {"model": "Toy-S", "image_size": 16, "eval_size": 8,
                    "paper_settings": {"cfg_scale": 1.5, "top_k": 0}, "paper": "nobody 2026", "settings_source": "",
                    "claimed_fid": None}
    assert preset_info(lambda **kw: None) is None


def test_generators_command_lists_presets(monkeypatch):
    class EP:
        def __init__(self, name, target):
            self.name, self.target = name, target

        def load(self):
            if isinstance(self.target, Exception):
                raise self.target
            return self.target

    monkeypatch.setattr(bench.run.cli, "available_generators", lambda: {
        "toy": EP("toy", toy_factory), "bare": EP("bare", lambda **kw: toy_factory(**kw)),
        "broken": EP("broken", ImportError("no module named diffusers"))})
    out = CliRunner().invoke(generators_command).output
    assert "toy\n  model: Toy-S  resolution: 16  eval size: 8\n  paper settings: cfg_scale=1.5, top_k=0\n" \
           "  paper: nobody 2026" in out
    assert "bare\n  model: toy  resolution: 16  eval size: 8\n  default settings: temperature=1.0, cfg_scale=1.0, " \
           "precision=fp32, offset=0.0" in out  # no PresetInfo: built (cheaply) and described from its config
    assert "broken\n  (cannot be loaded: no module named diffusers)" in out
    assert out.index("bare\n") < out.index("broken\n") < out.index("\ntoy\n")


def test_per_sample_seeds_are_the_run_plans_and_pass_given_seeds_through():
    from bench.generator import per_sample_generators, per_sample_seeds
    from bench.run.plan import SamplingPlan

    plan = SamplingPlan(num_samples=100, num_classes=1000, seed=7)
    assert per_sample_seeds(7, 5).tolist() == plan.seeds(np.arange(5)).tolist()
    given = torch.tensor([3, -4, 5])
    assert torch.equal(per_sample_seeds(given, 3), given)
    with pytest.raises(BenchError, match="3 per-sample seeds for 2 samples"):
        per_sample_seeds(given, 2)
    a, b = per_sample_generators(torch.tensor([1, 1, 2]), "cpu")[:2], per_sample_generators(torch.tensor([1]), "cpu")
    assert torch.equal(torch.rand(3, generator=a[0]), torch.rand(3, generator=b[0]))
    assert torch.equal(torch.rand(3, generator=a[1]), torch.rand(3, generator=per_sample_generators(torch.tensor([1]), "cpu")[0]))


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("key,good,bad", [
    ("cfg_scale", [1, 1.0, 1.75, 10], [0.5, -1, NAN, INF, "2", True]),
    ("temperature", [0.1, 1, 2.5], [0, -1, NAN, INF]),
    ("top_k", [0, 1, 1000], [-1, 2.5, NAN]),
    ("top_p", [1, 1.0, 0.9, 1e-6], [0, -0.1, 1.5, NAN]),
    ("cfg_interval", [-1, 0, 30], [-2, 1.5, NAN]),
    ("eta", [0, 0.0, 1.0], [-0.1, NAN, INF]),
])
def test_sampling_settings_are_range_checked(key, good, bad):
    for value in good:
        check_sampling("p", {key: value})
    for value in bad:
        with pytest.raises(BenchError, match=f"--{key.replace('_', '-')} must be"):
            check_sampling("p", {key: value})
    check_sampling("p", {key: None, "steps": "anything"})  # unset settings and ones without a rule pass


def test_generators_command_survives_a_factory_that_fails_to_build(monkeypatch):
    """Presets without a PresetInfo are built to be described; one that raises must not hide the others."""
    class EP:
        def __init__(self, name, target):
            self.name, self.target = name, target

        def load(self):
            return self.target

    def needs_a_gpu(**kw):
        raise RuntimeError("CUDA is required")

    monkeypatch.setattr(bench.run.cli, "available_generators", lambda: {
        "gpu-only": EP("gpu-only", needs_a_gpu), "toy": EP("toy", toy_factory)})
    out = CliRunner().invoke(generators_command)
    assert out.exit_code == 0 and out.exception is None, out.output
    assert "gpu-only\n  (cannot be loaded: CUDA is required)\ntoy\n  model: Toy-S" in out.output


def test_a_plugin_that_fails_to_import_is_named_not_a_traceback(monkeypatch):
    import bench.generator

    class Broken:
        name, value = "broken", "somepkg.plugin:factory"

        def load(self):
            raise ImportError("No module named 'somepkg'")

    monkeypatch.setattr(bench.generator, "available_generators", lambda: {"broken": Broken()})
    with pytest.raises(BenchError, match=r"generator 'broken': its plugin somepkg.plugin:factory fails to import "
                                         r"\(ImportError: No module named 'somepkg'\)"):
        bench.generator.load_generator_factory("broken")
