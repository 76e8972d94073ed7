"""The plugin boundary: family entry points, declared options and --set, plugin commands, and a CLI that imports
no plugin until one is used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import dataclasses

import bench.cli
import bench.plugins
from bench.cli import cli
from bench.errors import BenchError
from bench.generator import PluginOption, Preset
from bench.plugins import available_generators, load_preset
from bench.result import read
from test_run_helpers import toy_factory


class EntryPoint:
    """What importlib.metadata gives: a name, a value, and `load()` (raising like a failing import)."""

    def __init__(self, name: str, target, value: str | None = None):
        self.name, self.target, self.value = name, target, value or f"somepkg.plugin:{name}"

    def load(self):
        if isinstance(self.target, Exception):
            raise self.target
        return self.target


# -- generator families -----------------------------------------------------------------------------------------
def named(name: str) -> Preset:
    return dataclasses.replace(toy_factory, name=name)


def test_families_expand_into_presets_and_a_failing_family_is_named(monkeypatch):
    def family():
        return {"fam-a": named("fam-a"), "fam-b": named("fam-b")}

    def failing_family():
        raise RuntimeError("no presets today")

    points = [EntryPoint("fam", family), EntryPoint("gone", ImportError("No module named 'gonepkg'")),
              EntryPoint("sad", failing_family), EntryPoint("old", toy_factory),
              EntryPoint("misnamed", lambda: {"x": named("y")})]
    monkeypatch.setattr(bench.plugins, "entry_points", lambda group: points)
    known = available_generators()
    assert sorted(known) == ["fam-a", "fam-b", "gone", "misnamed", "old", "sad"]
    assert load_preset("fam-a").name == "fam-a" and known["fam-b"].value == "somepkg.plugin:fam"
    with pytest.raises(BenchError, match=r"generator 'gone': its plugin somepkg.plugin:gone fails to load "
                                         r"\(ImportError: No module named 'gonepkg'\)"):
        load_preset("gone")
    with pytest.raises(BenchError, match=r"'sad': its plugin somepkg.plugin:sad fails to load \(RuntimeError"):
        load_preset("sad")
    # one layout: an entry point naming a single preset (the layout before families) is refused by name
    with pytest.raises(BenchError, match=r"'old': its plugin somepkg.plugin:old fails to load"):
        load_preset("old")
    with pytest.raises(BenchError, match=r"keyed by each preset's own name; wrong for 'x'"):
        load_preset("misnamed")


def test_the_installed_families_list_every_preset_of_their_presets_modules():
    from generators.dit.presets import PRESETS as DIT
    from generators.llamagen.presets import PRESETS as LLAMAGEN

    known = available_generators()
    assert set(LLAMAGEN) | set(DIT) <= set(known)
    assert known["llamagen-xl"].value == "generators.llamagen.plugin:presets"


def test_bench_generators_name_shows_the_plugin_options():
    out = CliRunner().invoke(cli, ["generators", "llamagen-b"])
    assert out.exit_code == 0, out.output
    text = out.output
    assert "llamagen-b\n  model: LlamaGen GPT-B  resolution: 384  eval size: 256" in text
    for usage, default in [("--cfg-scale FLOAT", "[2.0]"), ("--set cfg_interval=INT", "[-1]"),
                           ("--set top_k=INT", "[0]"), ("--set top_p=FLOAT", "[1.0]"),
                           ("--set temperature=FLOAT", "[1.0]"), ("--set vq_ckpt=STR", ""),
                           ("--precision fp32|bf16|fp16", ""), ("--compile/--no-compile", "[False]")]:
        line = next((line for line in text.splitlines() if line.strip().startswith(usage)), None)
        assert line is not None and line.endswith(default), (usage, text)
    dit = CliRunner().invoke(cli, ["generators", "dit-xl-2"]).output
    assert "--set sampler=ddpm|ddim" in dit and "--set steps=INT|STR" in dit
    assert "--set vq_ckpt" in CliRunner().invoke(cli, ["generators", "llamagen-vq16"]).output
    assert "unknown generator 'nope'" in CliRunner().invoke(cli, ["generators", "nope"]).output


# -- options ------------------------------------------------------------------------------------------------------
def test_plugin_options_coerce_to_their_declared_types():
    steps = PluginOption("steps", (int, str), 250)
    assert steps.coerce(50, "p") == 50 and steps.coerce("ddim25", "p") == "ddim25" and steps.coerce(2.5, "p") == "2.5"
    eta = PluginOption("eta", float)
    assert eta.coerce(1, "p") == 1.0 and isinstance(eta.coerce(1, "p"), float)
    assert PluginOption("vae", str).coerce(123, "p") == "123"  # a folder named 123
    for option, value, message in [(PluginOption("top_k", int), 2.5, "--set top_k must be an integer, found 2.5"),
                                   (PluginOption("top_k", int), True, "must be an integer, found True"),
                                   (PluginOption("eta", float), "x", "--set eta must be a number, found 'x'"),
                                   (PluginOption("compile", bool), 1, "--compile must be true or false, found 1"),
                                   (PluginOption("sampler", str, choices=("ddpm", "ddim")), "euler",
                                    "--set sampler must be one of ddpm, ddim, found 'euler'")]:
        with pytest.raises(BenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
            option.coerce(value, "p")


def test_a_preset_refuses_undeclared_settings_before_building():
    assert toy_factory.settings({"temperature": 1, "cfg_scale": 2}) == {"temperature": 1.0, "cfg_scale": 2.0}
    with pytest.raises(BenchError, match=r"'toy' does not take --compile, --set eta; it takes: --set temperature, "
                                         r"--cfg-scale, --precision"):
        toy_factory(eta=0.0, compile=True)


def test_the_shipped_plugins_check_only_against_their_declared_options():
    """One place checks a setting: each shipped preset takes its declared defaults back and refuses the rest."""
    from generators.dit import plugin as dit
    from generators.llamagen import plugin as llamagen

    for family in (llamagen, dit):
        for name, preset in family.presets().items():
            assert isinstance(preset, Preset) and preset.name == name and preset.info is not None
            preset(**{o.name: o.default for o in preset.options if o.default is not None})  # each is taken
            with pytest.raises(BenchError, match="does not take"):
                preset(not_an_option=3)
    for name, preset in llamagen.presets().items():
        assert ("top_k" in {o.name for o in preset.options}) == (llamagen.PRESETS[name].gpt_model is not None)


# -- plugin commands ------------------------------------------------------------------------------------------------
def test_plugin_commands_arrive_through_the_entry_point_group(monkeypatch):
    @click.command("hello")
    @click.option("--name", default="world")
    def hello(name):
        """Say hello."""
        click.echo(f"hello {name}")

    points = [EntryPoint("hello", hello), EntryPoint("broken", ImportError("No module named 'brokenpkg'")),
              EntryPoint("odd", object())]
    monkeypatch.setattr(bench.cli, "entry_points", lambda group: points if group == bench.cli.COMMANDS_GROUP else [])
    out = CliRunner().invoke(cli, ["hello", "--name", "bench"])
    assert out.exit_code == 0 and out.output == "hello bench\n"
    listing = CliRunner().invoke(cli, ["--help"])
    assert listing.exit_code == 0 and "hello" in listing.output and "Traceback" not in listing.output
    assert ("Warning: plugin command 'broken' (somepkg.plugin:broken) fails to import (ImportError: No module named "
            "'brokenpkg')") in listing.output
    assert "Warning: plugin command 'odd' (somepkg.plugin:odd) is not a click command" in listing.output
    assert CliRunner().invoke(cli, ["eval", "--help"]).exit_code == 0  # the built-in commands are unaffected


def test_llamagen_commands_come_from_its_entry_point():
    out = CliRunner().invoke(cli, ["llamagen", "--help"])
    assert out.exit_code == 0, out.output
    assert all(name in out.output for name in ("train-vq", "extract-codes", "train-gpt"))


def test_bench_cli_imports_no_plugin_and_eval_loads_no_run_or_training_code():
    code = ("import sys; from click.testing import CliRunner; import bench.cli; "
            "assert not [m for m in sys.modules if m.startswith('generators')], 'bench.cli imported a plugin'; "
            "out = CliRunner().invoke(bench.cli.cli, ['eval', '--help']); assert out.exit_code == 0, out.output; "
            "print(sorted(m for m in sys.modules if m.startswith(('generators', 'bench.run', "
            "'torch.distributed.fsdp'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- results of earlier layouts -------------------------------------------------------------------------------------
def test_a_run_result_of_the_layout_before_the_schema_still_reads(tmp_path):
    """What `bench run` wrote before bench/result.py: metrics nested with their reasons, provenance beside them."""
    old = {
        "run_id": "llamagen-xl-1a2b3c4d5e6f", "task": "sample", "generator": "llamagen-xl",
        "metrics": {"inception_score": None, "fid": 2.6, "sfid": 5.0, "precision": 0.8, "recall": 0.6,
                    "inception_score_unavailable": "no softmax layer", "num_ref": 10000},
        "settings": {"generator": "llamagen-xl", "overrides": {}, "num_samples": 50000},
        "config": {"format": 1, "generator_config": {"cfg_scale": 1.75}, "eval_size": 256, "num_samples": 50000},
        "fingerprint": "f" * 64, "checkpoint_sha256": {"c2i_XL_384.pt": "ab"},
        "reference": {"name": "imagenet256", "path": "/r.npz", "sha256": "cd", "resolution": 256},
        "seed": 0, "labels": "random", "num_samples": 50000, "num_ref": 10000,
        "provenance": {"inception": {"sha256": "ef"}, "versions": {"bench": "0.1.0"}}, "device": "cuda:0 (H100)",
        "world_size": 8, "wall_time_s": 3600.0, "images_generated": 50000, "images_resumed": 0,
        "images_per_s": 14.0, "warnings": [], "outputs": {"npz": "runs/x/samples.npz"},
    }
    (tmp_path / "result.json").write_text(json.dumps(old))
    data = read(tmp_path / "result.json")
    assert data["metrics"] == {"inception_score": None, "fid": 2.6, "sfid": 5.0, "precision": 0.8, "recall": 0.6}
    assert data["unavailable"] == {"inception_score": "no softmax layer"}
    assert data["reference"]["num_ref"] == 10000 and data["reference"]["sha256"] == "cd"
    assert data["samples"]["num_samples"] == 50000 and data["settings"]["generator_config"]["cfg_scale"] == 1.75
    assert data["settings"]["seed"] == 0 and data["provenance"]["checkpoints"] == {"c2i_XL_384.pt": {"path": None, "sha256": "ab"}}
    assert data["timing"]["world_size"] == 8 and data["timing"]["images_per_s"] == 14.0
    assert data["outputs"] == {"npz": "runs/x/samples.npz"} and data["upgraded_from"] == "pre-schema"


def test_bench_generators_shows_the_paper_fid_and_where_the_readme_differs():
    b = CliRunner().invoke(cli, ["generators", "llamagen-b"]).output
    assert "  paper settings: cfg_scale=2.0, top_k=0, top_p=1.0, temperature=1.0 (the official GETTING_STARTED.md " \
           "sampling command)\n  paper: Sun et al. 2024, arXiv:2406.06525\n" in b
    assert "  expected FID: 6.437 at cfg 2.0 (arXiv:2406.06525 Table 9)\n" in b
    assert "6.09 is its FID at cfg 2.25 (arXiv:2406.06525 Table 9, 300 epochs)" in b
    l256 = CliRunner().invoke(cli, ["generators", "llamagen-l-256"]).output
    assert "(assumed: no published command)" in l256 and "expected FID: 4.407 at cfg 2.0" in l256
    assert "3.8 is its FID at cfg 1.75 (arXiv:2406.06525 Table 8, 300 epochs)" in l256
    assert "note:" not in CliRunner().invoke(cli, ["generators", "llamagen-b-256"]).output  # 5.46 is Table 8's
