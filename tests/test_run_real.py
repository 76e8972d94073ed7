"""Every `bench run` task as a user runs it, with the real pieces: the CLI, the executor, the real scorer and the
real Inception weights (the fid-helper copy), the shipped demo models, offline, with the default noise estimate.
A stand-in scorer once hid a crash of `--task reconstruct` that happened only after all the work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from bench.cli import cli
from bench.demo.photos import build_split
from bench.errors import BenchError
from generators.llamagen import plugin


def run(*args):
    return CliRunner().invoke(cli, ["run", *map(str, args)])


@pytest.fixture
def val(tmp_path):
    images, labels = build_split("val")
    folder = tmp_path / "val"
    for i in range(0, 512, 64):  # one image per class, as files
        (folder / f"c{labels[i]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"c{labels[i]}" / f"{i}.png")
    return folder, images[0:512:64]


def test_reconstruct_with_the_real_scorer_and_its_noise_estimate(tmp_path, val, shared_cache):
    """`bench run -g llamagen-demo-vq --task reconstruct --data X` offline, default reference (the demo's own,
    demo64: it used to ask for ImageNet 64's download) and default --noise-resamples: rFID, PSNR, SSIM and their
    bootstrap spread, the PSNR one recomputed here from scikit-image's per-image PSNR with the same draws."""
    folder, originals = val
    out = run("-g", "llamagen-demo-vq", "--task", "reconstruct", "--data", folder, "--runs-dir", tmp_path / "runs",
              "--run-id", "r", "--offline")
    assert out.exit_code == 0, out.output
    result = json.loads((tmp_path / "runs" / "r" / "result.json").read_text())
    assert result["reference"]["name"] == "demo64" and result["task"] == "reconstruct"
    noise = result["noise"]
    assert noise["resamples"] == 10 and {"rfid", "rfid_vs_originals", "psnr", "ssim"} <= set(noise["std"])
    assert "rFID vs originals:" in out.output and "PSNR:" in out.output
    tokenizer = plugin.LlamaGen(plugin.PRESETS["llamagen-demo-vq"], allow_download=False)
    files = sorted(folder.rglob("*.png"))  # the order the folder is read in
    order = [int(f.stem) // 64 for f in files]
    x = np.stack([originals[i] for i in order])
    y = tokenizer.reconstruct(x)
    per_image = np.array([peak_signal_noise_ratio(a / 255, b / 255, data_range=1.0)
                          for a, b in zip(x.astype(np.float64), y.astype(np.float64))])
    assert result["metrics"]["psnr"] == pytest.approx(per_image.mean(), rel=1e-9)
    rng = np.random.default_rng(0)
    spread = np.std([per_image[rng.integers(0, 8, 8)].mean() for _ in range(10)], ddof=1)
    assert noise["std"]["psnr"] == pytest.approx(spread, rel=1e-9)
    # codebook usage: the entries that encode any token, by a float64 nearest-neighbour search done here
    _, vq = tokenizer._models()
    with torch.no_grad():
        latents = torch.cat([vq.quant_conv(vq.encoder(torch.from_numpy(im).permute(2, 0, 1)[None].float() / 127.5 - 1))
                             for im in x]).permute(0, 2, 3, 1).reshape(-1, vq.config.codebook_embed_dim).double()
    codebook = vq.quantize.embedding.weight.detach().double()
    latents, codebook = (torch.nn.functional.normalize(t, dim=-1) for t in (latents, codebook))  # l2-normalised codes
    used = torch.unique((latents @ codebook.T).argmax(1)).numel()
    assert result["metrics"]["codebook_usage"] == pytest.approx(used / 512, abs=2 / 512)
    assert 0 < result["metrics"]["codebook_usage"] <= 8 * 64 / 512 and "Codebook usage:" in out.output


def test_sample_with_the_real_scorer_and_its_noise_estimate(tmp_path, shared_cache):
    out = run("-g", "llamagen-demo", "--num-samples", "16", "--runs-dir", tmp_path / "runs", "--run-id", "s",
              "--offline", "--metrics", "+kid")
    assert out.exit_code == 0, out.output
    result = json.loads((tmp_path / "runs" / "s" / "result.json").read_text())
    assert result["reference"]["name"] == "demo64" and np.isfinite(result["metrics"]["fid"])
    assert {"fid", "sfid", "kid", "precision", "recall"} <= set(result["noise"]["std"])
    assert "Inception Score: unavailable (" in out.output and "inception_score: None" not in out.output


def test_a_reference_that_cannot_be_fetched_names_the_ones_that_would_work(tmp_path):
    """Offline, a release preset's ImageNet reference cannot be fetched: the message says which --ref would do."""
    out = run("-g", "llamagen-demo", "--ref", "imagenet64", "--num-samples", "4", "--runs-dir", tmp_path / "runs",
              "--offline")
    assert out.exit_code == 2 and "VIRTUAL_imagenet64_labeled.npz" in out.output
    assert "--ref demo64 (here already), or --ref PATH" in out.output, out.output
    assert plugin.presets()["llamagen-demo-random"]().default_reference == "demo64"
    assert plugin.presets()["llamagen-b"]().default_reference == "imagenet256"


def test_an_unwritable_runs_dir_is_a_clean_error(tmp_path):
    """A --runs-dir that cannot be created (here: below a file, which fails for root too) used to end in a
    PermissionError traceback; now one `Error:` line, before any weights load or sampling."""
    (tmp_path / "a_file").write_text("")
    out = run("-g", "llamagen-demo-random", "--num-samples", "4", "--runs-dir", tmp_path / "a_file" / "runs",
              "--offline", "--ref", "demo64")
    assert out.exit_code == 2 and "not writable" in out.output and "Traceback" not in out.output, out.output


def test_bench_eval_takes_the_registered_reference_names_bench_run_takes(tmp_path, shared_cache):
    """`bench eval demo64 SAMPLES` (the packaged reference by its name, as `bench run --ref demo64`)."""
    images, _ = build_split("val")
    np.savez(tmp_path / "samples.npz", images[::37][:12])
    out = CliRunner().invoke(cli, ["eval", "demo64", str(tmp_path / "samples.npz"), "--json", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["reference"]["name"] == "demo64" and result["reference"]["num_ref"] == 512
    out = CliRunner().invoke(cli, ["eval", "no-such-ref", str(tmp_path / "samples.npz")])
    assert out.exit_code == 2 and "neither a known reference" in out.output and "demo64" in out.output
