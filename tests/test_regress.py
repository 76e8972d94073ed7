"""`bench regress`: the rFID gate passes a tokenizer at its baseline, fails a degraded one with a one-line reason,
and refuses (exit 2, no traceback) what cannot be compared: unknown presets, missing files, baselines of another
tokenizer or split. The real shipped tokenizer is gated in test_llamagen_demo.py; here a toy tokenizer whose
decoder can be degraded keeps the gate's own logic fast to test, with rFID/PSNR/SSIM recomputed independently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from click.testing import CliRunner

import bench.inception
import bench.run.executor
from bench.cli import cli
from bench.download import RemoteFile
from bench.generator import Generator
from bench.regress import DEFAULT_TOLERANCE, allowed, compare
from test_run_helpers import ProjectionExtractor


class ToyTokenizer(Generator):
    """Reconstructs 8x8 images by quantising pixels to `levels` grey levels per channel (fewer: worse)."""

    name = "toy-vq"
    image_size = eval_size = 8
    can_sample, can_reconstruct = False, True
    levels = 32
    files: list[RemoteFile] = []

    def __init__(self, ckpt=None, device="cpu", **overrides):
        self.ckpt = ckpt

    def config(self):
        return {"model": "toy-vq"}

    def required_files(self):
        return list(ToyTokenizer.files)

    def load(self, files):
        for path in files.values():
            self.levels = int(torch.load(path, weights_only=True)["levels"])

    def sample(self, labels, seeds):
        raise AssertionError("a tokenizer does not sample")

    def reconstruct(self, images):
        step = 256 / self.levels
        return np.clip((np.floor(images / step) + 0.5) * step, 0, 255).astype(np.uint8)


@pytest.fixture
def gate(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    real = bench.run.executor.load_preset
    monkeypatch.setattr(bench.run.executor, "load_preset",
                        lambda name: ToyTokenizer if name == "toy-vq" else real(name))
    monkeypatch.setattr(bench.inception, "load_extractor", lambda **kw: Extractor())
    monkeypatch.setattr(ToyTokenizer, "files", [RemoteFile("toy_vq.pt", None)])
    ckpt = tmp_path / "vq.pt"
    torch.save({"levels": 32}, ckpt)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "val.npz", rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8))
    return tmp_path, ckpt


class Extractor(ProjectionExtractor):
    provenance = {"sha256": "toy-projection.pt", "features_sha256": "toy-projection"}


def invoke(*args):
    return CliRunner().invoke(cli, ["regress", *map(str, args)])


def independent_numbers(images, levels):
    """rFID, PSNR and SSIM of the toy tokenizer computed here: scipy's sqrtm, numpy's PSNR, skimage's SSIM."""
    from skimage.metrics import structural_similarity

    tok = ToyTokenizer()
    tok.levels = levels
    recon = tok.reconstruct(images)
    ex = Extractor()
    a, b = ex.extract(recon)["pool"].astype(np.float64), ex.extract(images)["pool"].astype(np.float64)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    fid = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    x, y = images.astype(np.float64) / 255, recon.astype(np.float64) / 255
    psnr = np.mean([10 * np.log10(1 / np.mean((xi - yi) ** 2)) for xi, yi in zip(x, y)])
    ssim = np.mean([structural_similarity(yi, xi, data_range=1.0, channel_axis=-1) for xi, yi in zip(x, y)])
    return {"rfid": fid, "psnr": psnr, "ssim": ssim}


def test_update_then_pass_then_fail_on_a_degraded_decoder(gate):
    tmp_path, ckpt = gate
    baseline = tmp_path / "baselines.json"
    out = invoke("--tokenizer", "toy-vq", "--vq-ckpt", ckpt, "--data", tmp_path / "val.npz", "--baseline", baseline,
                 "--update")
    assert out.exit_code == 0, out.output
    entry = json.loads(baseline.read_text())["toy-vq"]
    with np.load(tmp_path / "val.npz") as npz:
        expected = independent_numbers(npz["arr_0"], 32)
    for key, value in expected.items():
        assert entry["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert entry["tolerance"] == DEFAULT_TOLERANCE and entry["fingerprint"]["num_images"] == 40

    out = invoke("--tokenizer", "toy-vq", "--vq-ckpt", ckpt, "--data", tmp_path / "val.npz", "--baseline", baseline)
    assert out.exit_code == 0, out.output
    assert "PASS" in out.output and "rfid" in out.output and "WORSE" not in out.output

    degraded = tmp_path / "vq_degraded.pt"
    torch.save({"levels": 2}, degraded)  # a coarser decoder of the same tokenizer: every number gets worse
    out = invoke("--tokenizer", "toy-vq", "--vq-ckpt", degraded, "--data", tmp_path / "val.npz", "--baseline", baseline)
    assert out.exit_code == 1, out.output
    assert "FAIL: rfid" in out.output and "Traceback" not in out.output
    assert out.output.count("WORSE") == 3


def test_refusals_are_clear_and_non_zero(gate):
    tmp_path, ckpt = gate
    baseline = tmp_path / "baselines.json"
    baseline.write_text(json.dumps({"other-vq": {"metrics": {}, "fingerprint": {}}}))
    cases = [
        (["--tokenizer", "nope", "--baseline", baseline, "--update"], "unknown generator 'nope'"),
        (["--tokenizer", "toy-vq", "--baseline", baseline], "no entry for 'toy-vq'"),
        (["--tokenizer", "toy-vq", "--vq-ckpt", tmp_path / "missing.pt", "--data", tmp_path / "val.npz",
          "--baseline", baseline, "--update"], "missing.pt"),
        (["--tokenizer", "llamagen-b", "--baseline", baseline, "--update", "--offline"], "not a tokenizer"),
    ]
    for args, message in cases:
        out = invoke(*args)
        assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output, (args, out.output)
    baseline.write_text("{not json")
    out = invoke("--tokenizer", "toy-vq", "--baseline", baseline)
    assert out.exit_code == 2 and "not valid JSON" in out.output


def test_another_split_is_refused(gate):
    tmp_path, ckpt = gate
    baseline = tmp_path / "baselines.json"
    assert invoke("--tokenizer", "toy-vq", "--vq-ckpt", ckpt, "--data", tmp_path / "val.npz", "--baseline", baseline,
                  "--update").exit_code == 0
    np.savez(tmp_path / "other.npz", np.random.default_rng(1).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8))
    out = invoke("--tokenizer", "toy-vq", "--vq-ckpt", ckpt, "--data", tmp_path / "other.npz", "--baseline", baseline)
    assert out.exit_code == 2 and "data: baseline" in out.output


def test_another_inception_is_refused_but_not_another_file_of_the_same_weights(gate, monkeypatch):
    """The fingerprint names the Inception weights by their feature tensors (features_sha256), not by the file: the
    same weights in another format (ADM's .pb instead of the bundled TorchScript) compare; other weights do not."""
    tmp_path, ckpt = gate
    baseline = tmp_path / "baselines.json"
    args = ["--tokenizer", "toy-vq", "--vq-ckpt", ckpt, "--data", tmp_path / "val.npz", "--baseline", baseline]
    assert invoke(*args, "--update").exit_code == 0
    assert json.loads(baseline.read_text())["toy-vq"]["fingerprint"]["inception_features"] == "toy-projection"
    monkeypatch.setattr(Extractor, "provenance", {"sha256": "another-file.pb", "features_sha256": "toy-projection"})
    out = invoke(*args)
    assert out.exit_code == 0 and "PASS" in out.output, out.output
    monkeypatch.setattr(Extractor, "provenance", {"sha256": "another-file.pb", "features_sha256": "other-weights"})
    out = invoke(*args)
    assert out.exit_code == 2 and "inception_features: baseline 'toy-projection', now 'other-weights'" in out.output


def test_the_shipped_baseline_names_the_bundled_inception_weights():
    """reference_stats/baselines.json's fingerprint is the digest of the Inception copy a fresh install has."""
    from bench.inception.weights import bundled_torchscript, load_file

    shipped = json.loads((Path(__file__).parents[1] / "reference_stats" / "baselines.json").read_text())
    expected = load_file(bundled_torchscript()).provenance["features_sha256"]
    assert shipped["llamagen-demo-vq"]["fingerprint"]["inception_features"] == expected


def test_tolerance_arithmetic():
    tol = DEFAULT_TOLERANCE
    assert allowed("rfid", 10.0, tol["rfid"]) == pytest.approx(10.25)  # 2% + 0.05 worse still passes
    assert allowed("psnr", 20.0, tol["psnr"]) == pytest.approx(19.95)
    entry = {"metrics": {"rfid": 10.0, "psnr": 20.0, "ssim": 0.5}, "tolerance": tol}
    assert compare({"rfid": 10.2, "psnr": 19.96, "ssim": 0.499}, entry).passed
    verdict = compare({"rfid": 10.3, "psnr": 19.96, "ssim": 0.497}, entry)
    assert not verdict.passed and len(verdict.failures) == 2 and verdict.failures[0].startswith("rfid 10.3000")


def test_the_shipped_demo_tokenizer_passes_and_a_perturbed_decoder_fails(tmp_path, monkeypatch):
    """The real gate on the real demo tokenizer (llamagen-demo-vq) and the real Inception, on 48 val images: its
    own baseline passes; the same file with noise added to the decoder's output layer fails, with its reason."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from bench.demo.photos import build_split
    from generators.llamagen.presets import packaged_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    images, _ = build_split("val")
    np.savez(tmp_path / "val48.npz", images[::512 // 48][:48])
    baseline = tmp_path / "baselines.json"
    common = ["--tokenizer", "llamagen-demo-vq", "--data", tmp_path / "val48.npz", "--baseline", baseline]
    assert invoke(*common, "--update").exit_code == 0
    out = invoke(*common)
    assert out.exit_code == 0 and "PASS" in out.output, out.output

    shipped = packaged_path("demo_vq.safetensors")
    with safe_open(str(shipped), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    generator = torch.Generator().manual_seed(0)
    for key in ("decoder.conv_out.weight", "decoder.norm_out.weight"):
        tensors[key] = tensors[key] + 0.5 * tensors[key].float().std() * torch.randn(
            tensors[key].shape, generator=generator).to(tensors[key].dtype)
    save_file(tensors, str(tmp_path / "degraded.safetensors"), metadata=metadata)
    out = invoke(*common, "--vq-ckpt", tmp_path / "degraded.safetensors")
    assert out.exit_code == 1 and "FAIL: " in out.output and "WORSE" in out.output, out.output


def test_a_missing_baseline_file_is_named_and_the_help_says_what_is_gated(gate):
    tmp_path, ckpt = gate
    out = invoke("--tokenizer", "toy-vq", "--vq-ckpt", ckpt, "--data", tmp_path / "val.npz",
                 "--baseline", tmp_path / "missing.json")
    assert out.exit_code == 2 and "missing.json: no such file" in out.output, out.output
    help_text = " ".join(invoke("--help").output.split())
    assert "a new tokenizer file of the same architecture is gated against the baseline" in help_text
    assert "measured on another tokenizer file" not in help_text  # it used to say so, while the gate gates it


def test_a_second_gate_extracts_only_the_reconstructions(gate, monkeypatch):
    """The originals' Inception features come from the activation cache after the first call: one pass, not two."""
    tmp_path, ckpt = gate
    seen = []
    real = Extractor.extract
    monkeypatch.setattr(Extractor, "extract", lambda self, images: seen.append(len(images)) or real(self, images))
    baseline = tmp_path / "baselines.json"
    args = ("--tokenizer", "toy-vq", "--vq-ckpt", ckpt, "--data", tmp_path / "val.npz", "--baseline", baseline)
    assert invoke(*args, "--update").exit_code == 0
    assert sum(seen) == 80  # originals and reconstructions of the 40 images
    seen.clear()
    out = invoke(*args)
    assert out.exit_code == 0 and "PASS" in out.output, out.output
    assert sum(seen) == 40  # the reconstructions alone
