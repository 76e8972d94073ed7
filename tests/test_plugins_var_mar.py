"""VAR and MAR as plugins: `bench run -g <preset>` as a user runs it -- the CLI, the real executor, scorer and
Inception weights (the fid-helper copy) -- on small random-weight models saved in the released file layouts, ending
in a result and a board row; and their presets, options and refusals through the one place settings are checked.
The release presets (depth 16+, MAR-B+) cannot be sampled on a CPU in a test, so a small preset of the same plugin
class is registered beside them (`PRESETS` is the table a preset is one edit of)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bench.cli import cli
from bench.download import RemoteFile
from bench.errors import BenchError
from bench.report import build
from generators.mar import plugin as mar_plugin
from generators.mar.model import MAR
from generators.mar.presets import PRESETS as MAR_PRESETS, MARPreset
from generators.mar.vae import KLConfig, KLVAE, load_kl_vae
from generators.var import plugin as var_plugin
from generators.var import encode_scales
from generators.var.model import VAR, var_config
from generators.var.presets import PRESETS as VAR_PRESETS, VARPreset
from generators.var.vqvae import VQVAE, VQVAEConfig
from test_mar_loading import TINY
from var_common import SMALL_VAE, SMALL_VAR, seeded_state

pytestmark = pytest.mark.usefixtures("one_thread")


def random_state(module: torch.nn.Module, seed: int, std: float = 0.02) -> dict[str, torch.Tensor]:
    """Small random weights (N(0, 1) ones make the head's x0 predictions overflow within a few steps)."""
    g = torch.Generator().manual_seed(seed)
    return {k: std * torch.randn(v.shape, generator=g) for k, v in module.state_dict().items()}


def run(*args):
    return CliRunner().invoke(cli, ["run", *map(str, args)])


def reference(path, size, n=8):
    np.savez(path, arr_0=np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    return path


def test_var_through_bench_run_to_a_board_row(tmp_path, monkeypatch):
    vae = VQVAE(VQVAEConfig(**SMALL_VAE)).eval()
    vae.load_state_dict(seeded_state(vae.state_dict()))
    var = VAR(var_config(**SMALL_VAR), vae=vae).eval()
    var.load_state_dict(seeded_state(var.state_dict()))
    torch.save(vae.state_dict(), tmp_path / "vae.pth")
    torch.save(var.state_dict(), tmp_path / "var_d2.pth")
    monkeypatch.setitem(VAR_PRESETS, "var-tiny", VARPreset(
        name="var-tiny", depth=2, var_file=RemoteFile("var_d2.pth", None), vae_file=RemoteFile("vae.pth", None)))
    ref = reference(tmp_path / "ref.npz", 256)
    out = run("-g", "var-tiny", "--ckpt", tmp_path / "var_d2.pth", "--set", f"vae_ckpt={tmp_path / 'vae.pth'}",
              "--num-samples", "4", "--ref", ref, "--runs-dir", tmp_path / "runs", "--run-id", "v", "--offline")
    assert out.exit_code == 0, out.output
    result = json.loads((tmp_path / "runs" / "v" / "result.json").read_text())
    config = result["settings"]["generator_config"]
    assert config["model"] == "VAR-d2" and config["cfg_scale"] == 1.5 and config["top_k"] == 900
    assert config["forward_passes_per_image"] == 20 and config["official_weights"] is False
    assert np.isfinite(result["metrics"]["fid"]) and result["timing"]["images_per_s"] > 0
    assert build([tmp_path / "runs"]).board["run"].tolist() == ["v"]
    # the same through the tokenizer preset: rFID, PSNR, SSIM of the VQVAE
    monkeypatch.setitem(VAR_PRESETS, "var-tiny-vae", VARPreset(
        name="var-tiny-vae", depth=None, var_file=None, vae_file=RemoteFile("vae.pth", None)))
    out = run("-g", "var-tiny-vae", "--task", "reconstruct", "--data", ref, "--ckpt", tmp_path / "vae.pth",
              "--ref", ref, "--runs-dir", tmp_path / "runs", "--run-id", "r", "--offline")
    assert out.exit_code == 0, out.output
    metrics = json.loads((tmp_path / "runs" / "r" / "result.json").read_text())["metrics"]
    assert metrics["psnr"] > 5 and -1 <= metrics["ssim"] <= 1 and np.isfinite(metrics["rfid_vs_originals"])
    # codebook usage over all 10 scales' tokens, counted here from one batched encode of the same images
    x = torch.from_numpy(np.load(ref)["arr_0"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        used = torch.unique(torch.cat(encode_scales(vae, x), dim=1)).numel()
    vocab = vae.config.vocab_size
    assert 0 < used < vocab and metrics["codebook_usage"] == pytest.approx(used / vocab, abs=2 / vocab)


def test_mar_through_bench_run_with_the_schedule_recorded_and_changing_the_samples(tmp_path, monkeypatch):
    """The KL-16 VAE here is a small one (the released one is 320 MB): the plugin's VAE loader is pointed at the
    same strict loader with that size."""
    net = MAR(TINY)
    torch.save({"model": random_state(net, 1), "model_ema": random_state(net, 2)}, tmp_path / "checkpoint-last.pth")
    small = KLConfig(ch=32)
    torch.save({"model": random_state(KLVAE(small), 3, std=0.3)}, tmp_path / "kl16.ckpt")
    monkeypatch.setattr(mar_plugin, "load_vae", lambda path: load_kl_vae(path, small))
    monkeypatch.setitem(MAR_PRESETS, "mar-tiny", MARPreset(
        name="mar-tiny", model=TINY, checkpoint=RemoteFile("checkpoint-last.pth", None), cfg_scale=2.0,
        num_iter=4, sampling_steps=5, image_size=64, eval_size=64, num_classes=5))
    ref = reference(tmp_path / "ref.npz", 64)
    common = ("-g", "mar-tiny", "--ckpt", tmp_path / "checkpoint-last.pth", "--set",
              f"vae_ckpt={tmp_path / 'kl16.ckpt'}", "--num-samples", "4", "--ref", ref, "--runs-dir", tmp_path / "runs",
              "--offline", "--save-npz")
    for run_id, extra in (("linear", ()), ("constant", ("--set", "cfg_schedule=constant"))):
        out = run(*common, "--run-id", run_id, *extra)
        assert out.exit_code == 0, out.output
    results = {r: json.loads((tmp_path / "runs" / r / "result.json").read_text()) for r in ("linear", "constant")}
    assert [results[r]["settings"]["generator_config"]["cfg_schedule"] for r in results] == ["linear", "constant"]
    config = results["linear"]["settings"]["generator_config"]
    assert config["transformer_passes_per_image"] == 8 and config["diffloss_mlp_passes_per_image"] == 256 * 5 * 2
    assert config["weights"] == "model_ema"
    with np.load(tmp_path / "runs" / "linear" / "samples.npz") as a, \
            np.load(tmp_path / "runs" / "constant" / "samples.npz") as b:
        assert a["arr_0"].shape == (4, 64, 64, 3) and not np.array_equal(a["arr_0"], b["arr_0"])


def test_every_family_records_its_forward_passes_per_image():
    """Speed beside quality: LlamaGen one GPT step per token, DiT one forward per step, VAR one per scale, each
    doubled by guidance's [cond; uncond] rows; MAR its transformer and diffusion-head passes apart."""
    from generators.dit.plugin import presets as dit
    from generators.llamagen.plugin import presets as llamagen

    passes = lambda preset, **kw: preset(**kw).config()["forward_passes_per_image"]  # noqa: E731
    assert passes(llamagen()["llamagen-b-256"]) == 256 * 2 and passes(llamagen()["llamagen-b"], cfg_scale=1.0) == 576
    assert passes(dit()["dit-xl-2"]) == 250 * 2 and passes(dit()["dit-xl-2"], steps="ddim25", cfg_scale=1.0) == 25
    assert passes(var_plugin.presets()["var-d30"]) == 10 * 2
    mar = mar_plugin.presets()["mar-b"](num_iter=64).config()
    assert (mar["transformer_passes_per_image"], mar["diffloss_mlp_passes_per_image"]) == (128, 256 * 100 * 2)


def test_presets_options_and_refusals_before_any_work():
    var, mar = var_plugin.presets(), mar_plugin.presets()
    assert set(var) == {"var-d16", "var-d20", "var-d24", "var-d30", "var-vae"} and set(mar) == {"mar-b", "mar-l", "mar-h"}
    assert var["var-d16"](cfg_scale=0).config()["forward_passes_per_image"] == 10  # VAR's cfg 0 is no guidance
    assert [f.filename for f in var["var-d30"]().required_files()] == ["var_d30.pth", "vae_ch160v4096z32.pth"]
    assert var["var-vae"]().can_reconstruct and not var["var-vae"]().can_sample
    for preset, bad, message in [(var["var-d16"], dict(cfg_scale=-1), "--cfg-scale must be a finite number >= 0"),
                                 (var["var-d16"], dict(top_p=1.5), "--set top_p must be"),
                                 (var["var-vae"], dict(top_k=5), "does not take --set top_k"),
                                 (mar["mar-b"], dict(cfg_schedule="cosine"), "one of linear, constant"),
                                 (mar["mar-b"], dict(num_iter=300), "integer in 1..256"),
                                 (mar["mar-b"], dict(sampling_steps="x"), "--set sampling_steps: bad step spec"),
                                 (mar["mar-b"], dict(weights="ema"), "one of model_ema, model")]:
        with pytest.raises(BenchError, match=message):
            preset(**bad)
    out = CliRunner().invoke(cli, ["generators"]).output
    assert "var-d16\n  model: VAR-d16" in out and "expected FID: 3.3 at cfg 1.5" in out
    assert "mar-b\n  model: MAR-B" in out and "expected FID: 2.31 at cfg 2.9" in out
