"""The generator contract: default eval-size resize, overrides checking, preset descriptions, listing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import bench.run.cli
from bench.errors import BenchError
from bench.generator import Generator, PluginOption, Preset, preset_info
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


def test_a_preset_names_rejected_and_accepted_flags():
    preset = Preset("x", ToyGenerator, (PluginOption("cfg_scale", float), PluginOption("top_k", int)))
    assert preset.settings({"cfg_scale": 1, "top_k": None}) == {"cfg_scale": 1.0}
    with pytest.raises(BenchError, match=r"'x' does not take --set steps; it takes: --cfg-scale, --set top_k"):
        preset(steps=3, cfg_scale=1.0)


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
    assert preset_info(Preset("bare", ToyGenerator)) is None


def test_generators_command_lists_presets(monkeypatch):
    class EP:
        def __init__(self, name, target):
            self.name, self.target = name, target

        def load(self):
            if isinstance(self.target, Exception):
                raise self.target
            return self.target

    monkeypatch.setattr(bench.run.cli, "available_generators", lambda: {
        "toy": EP("toy", toy_factory), "bare": EP("bare", Preset("bare", ToyGenerator)),
        "broken": EP("broken", ImportError("no module named diffusers"))})
    out = CliRunner().invoke(generators_command).output
    assert "toy\n  model: Toy-S  resolution: 16  eval size: 8\n  paper settings: cfg_scale=1.5, top_k=0\n" \
           "  paper: nobody 2026" in out
    assert "bare\n  (its plugin gives no description)" in out
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
    """The common rules (`SAMPLING_RULES`) hold for any option of that name, checked where every setting is."""
    option = PluginOption(key, int if key in ("top_k", "cfg_interval") else float)
    preset = Preset("p", ToyGenerator, (option, PluginOption("steps", (int, str))))
    for value in good:
        preset.settings({key: value})
    for value in bad:
        with pytest.raises(BenchError, match=f"{option.flag} must be"):
            preset.settings({key: value})
    assert preset.settings({key: None, "steps": "anything"}) == {"steps": "anything"}  # unset; no rule


def test_an_option_may_bring_its_own_rule():
    """VAR's guidance starts at 0, not 1: a plugin's own rule replaces the common one of that name."""
    own = PluginOption("cfg_scale", float, rule=(lambda v: v >= 0, "a number >= 0"))
    assert Preset("p", ToyGenerator, (own,)).settings({"cfg_scale": 0.5}) == {"cfg_scale": 0.5}
    with pytest.raises(BenchError, match="--cfg-scale must be a number >= 0, found -1"):
        Preset("p", ToyGenerator, (own,)).settings({"cfg_scale": -1})


def test_a_plugin_that_fails_to_import_is_named_not_a_traceback(monkeypatch):
    import bench.plugins

    class Broken:
        name, value = "broken", "somepkg.plugin:presets"

        def load(self):
            raise ImportError("No module named 'somepkg'")

    monkeypatch.setattr(bench.plugins, "entry_points", lambda group: [Broken()])
    with pytest.raises(BenchError, match=r"generator 'broken': its plugin somepkg.plugin:presets fails to load "
                                         r"\(ImportError: No module named 'somepkg'\)"):
        bench.plugins.load_preset("broken")
