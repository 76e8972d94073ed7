"""Every command the README shows, run as a user runs it on a clean install offline, at toy size: the same command
line with small inputs (and, where the README names a file only a download gives -- ImageNet, release weights --
either a small stand-in of the same kind or the offline refusal the README promises). A README command without a
toy here fails `test_every_readme_command_is_run_here`, so the two cannot drift apart."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import bench.features.clip as clip
import bench.features.dinov2 as dinov2
from bench.cli import cli
from test_report_helpers import write_result

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """The `bench` / `torchrun` command lines of the README's bash blocks: continuations joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(("bench ", "torchrun ")) or line == "bench":
                commands.append(" ".join(line.split()))
    return commands


def bench(*args, env=None):
    return CliRunner(env={"HF_HUB_OFFLINE": "1", **(env or {})}).invoke(cli, [str(a) for a in args])


def images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def folder(root, n_classes=2, per_class=3, size=40):
    for c in range(n_classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(images(1, size, 10 * c + i)[0]).save(root / f"class{c}" / f"{i}.png")
    return root


def offline_refusal(out, *files):
    """A command that needs a release file exits 2 with the one message that says where to put each file."""
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    assert "put it at:" in out.output and all(f in out.output for f in files), out.output


# -- the toys, one per README command ---------------------------------------------------------------------------------
def eval_adm(tmp):
    np.savez(tmp / "VIRTUAL_imagenet256_labeled.npz", images(10, 64))
    np.savez(tmp / "samples.npz", images(10, 64, 1))
    out = bench("eval", tmp / "VIRTUAL_imagenet256_labeled.npz", tmp / "samples.npz", "--json", tmp / "result.json")
    assert out.exit_code == 0 and "FID:" in out.output and (tmp / "result.json").exists(), out.output


def small_networks(tmp, monkeypatch):
    """DINOv2 and CLIP files of the released layouts at a small width, given by path as the README gives them."""
    small_dino = dinov2.ViTConfig(dim=64, depth=2, heads=4)
    small_clip = clip.CLIPConfig(image_size=28, patch_size=14, width=128, layers=2, heads=2, output_dim=32)
    torch.save(dinov2.random_state_dict(0, small_dino), tmp / "dinov2_vitl14_pretrain.pth")
    torch.save(clip.random_state_dict(0, small_clip), tmp / "ViT-L-14-336px.pt")
    monkeypatch.setattr(dinov2, "VITL14", small_dino)
    monkeypatch.setattr(clip, "VITL14_336", small_clip)
    np.savez(tmp / "ref.npz", images(12, 32))
    np.savez(tmp / "samples.npz", images(12, 32, 1))


def eval_dinov2(tmp, monkeypatch):
    small_networks(tmp, monkeypatch)
    out = bench("eval", tmp / "ref.npz", tmp / "samples.npz", "--metrics", "+kid,+fd_dinov2", "--dinov2-weights",
                tmp / "dinov2_vitl14_pretrain.pth", "--json", tmp / "r.json")
    assert out.exit_code == 0, out.output
    assert json.loads((tmp / "r.json").read_text())["metrics"]["fd_dinov2"] is not None


def eval_beyond_adm(tmp, monkeypatch):
    small_networks(tmp, monkeypatch)
    out = bench("eval", tmp / "ref.npz", tmp / "samples.npz", "--metrics", "fid,fd_dinov2,cmmd,density_coverage",
                "--dinov2-weights", tmp / "dinov2_vitl14_pretrain.pth", "--clip-weights", tmp / "ViT-L-14-336px.pt",
                "--json", tmp / "r.json")
    assert out.exit_code == 0, out.output
    metrics = json.loads((tmp / "r.json").read_text())["metrics"]
    assert all(metrics[k] is not None for k in ("fid", "fd_dinov2", "cmmd", "density", "coverage"))


def run_llamagen_xl(tmp):
    offline_refusal(bench("run", "-g", "llamagen-xl", "--runs-dir", tmp / "runs"), "c2i_XL_384.pt", "vq_ds16_c2i.pt",
                    "VIRTUAL_imagenet256_labeled.npz")


def run_dit(tmp):
    offline_refusal(bench("run", "-g", "dit-xl-2", "--num-samples", "10000", "--save-npz", "--save-grid", "--metrics",
                          "+kid", "--runs-dir", tmp / "runs"), "DiT-XL-2-256x256.pt", "sd-vae-ft-ema")


def run_reconstruct(tmp):
    data = folder(tmp / "val")
    offline_refusal(bench("run", "-g", "llamagen-vq16", "--task", "reconstruct", "--data", data, "--runs-dir",
                          tmp / "runs"), "vq_ds16_c2i.pt")


def ref_build(tmp):
    data = folder(tmp / "train")
    out = bench("ref", "build", data, "-o", tmp / "my_ref.npz", "--include-images", "--subset", "4")
    assert out.exit_code == 0, out.output
    with np.load(tmp / "my_ref.npz") as npz:
        assert npz["arr_0"].shape == (4, 256, 256, 3) and npz["mu"].shape == (2048,)  # ADM's center crop to 256
    assert json.loads((tmp / "my_ref.npz.json").read_text())["stored_images"] == 4


def report(tmp):
    write_result(tmp / "runs" / "a", "my-baseline", 3.0)
    write_result(tmp / "runs" / "b", "other", 2.5, cfg=2.0)
    outputs = [tmp / f"board.{ext}" for ext in ("html", "csv", "md", "tex")]
    out = bench("report", tmp / "runs", "--compare", "--baseline", "my-baseline", "--html", outputs[0], "--csv",
                outputs[1], "--markdown", outputs[2], "--latex", outputs[3])
    assert out.exit_code == 0 and all(p.stat().st_size > 0 for p in outputs), out.output


def generators(tmp):
    out = bench("generators")
    assert out.exit_code == 0 and all(f"\n{name}\n" in "\n" + out.output for name in
                                      ("llamagen-xl", "dit-xl-2", "var-d16", "mar-b", "llamagen-demo")), out.output


def generators_dit(tmp):
    out = bench("generators", "dit-xl-2")
    assert out.exit_code == 0 and "--set sampler=ddpm|ddim" in out.output


def trainers(tmp):
    """train-vq -> extract-codes -> train-gpt, the README's chain, at the demo's size for a step each."""
    data = folder(tmp / "train", size=64)
    out = bench("llamagen", "train-vq", data, "-o", tmp / "vq16", "--vq-model", "VQ-demo", "--image-size", "64",
                "--max-steps", "1", "--global-batch-size", "2", "--num-workers", "0", "--mixed-precision", "none",
                "--perceptual-weight", "0")
    assert out.exit_code == 0, out.output
    ckpt = next((tmp / "vq16" / "checkpoints").glob("*/model.pt"))
    out = bench("llamagen", "extract-codes", data, "-o", tmp / "codes256", "--vq-ckpt", ckpt, "--image-size", "64",
                "--num-workers", "0", "--device", "cpu")
    assert out.exit_code == 0, out.output
    out = bench("llamagen", "train-gpt", tmp / "codes256", "-o", tmp / "gpt-b", "--gpt-model", "GPT-demo",
                "--max-steps", "1", "--global-batch-size", "2", "--num-workers", "0", "--mixed-precision", "none")
    assert out.exit_code == 0, out.output
    assert next((tmp / "gpt-b" / "checkpoints").glob("*/model.pt")).exists()


#: README command (as written) -> its toy run here, or the test that runs it elsewhere at toy size
TOYS = {
    "bench run": "run as written, offline from an empty cache, by .ci/run; tests/test_demo_benchmark.py at test size",
    "bench eval VIRTUAL_imagenet256_labeled.npz samples.npz --json result.json": eval_adm,
    "bench eval ref.npz samples.npz --metrics +kid,+fd_dinov2 --dinov2-weights dinov2_vitl14_pretrain.pth --json "
    "r.json": eval_dinov2,
    "bench eval ref.npz samples.npz --metrics fid,fd_dinov2,cmmd,density_coverage --dinov2-weights "
    "dinov2_vitl14_pretrain.pth --clip-weights ViT-L-14-336px.pt --json r.json": eval_beyond_adm,
    "bench run -g llamagen-xl": run_llamagen_xl,
    "bench run -g dit-xl-2 --num-samples 10000 --save-npz --save-grid --metrics +kid": run_dit,
    "torchrun --nproc_per_node=8 -m bench.cli run -g llamagen-3b":
        "tests/test_run_dist.py: torchrun-style ranks equal one process (2 ranks, a toy generator)",
    "bench run -g llamagen-vq16 --task reconstruct --data /data/imagenet/val": run_reconstruct,
    "bench ref build /data/imagenet/train -o my_ref.npz --include-images --subset 10000": ref_build,
    "bench report runs/ --compare --baseline my-baseline --html board.html --csv board.csv --markdown board.md "
    "--latex board.tex": report,
    "bench generators": generators,
    "bench generators dit-xl-2": generators_dit,
    "bench regress --tokenizer llamagen-demo-vq --baseline reference_stats/baselines.json":
        "run as written, offline, by .ci/run; tests/test_regress.py gates the shipped tokenizer",
    "bench llamagen train-vq /data/imagenet/train -o runs/vq16": trainers,
    "bench llamagen extract-codes /data/imagenet/train -o codes256 --vq-ckpt runs/vq16/checkpoints/<step>/model.pt "
    "[--ten-crop]": trainers,
    "bench llamagen train-gpt codes256 -o runs/gpt-b --gpt-model GPT-B": trainers,
    "torchrun --nproc_per_node 8 -m bench.cli llamagen train-gpt ... [--parallel fsdp]":
        "tests/test_llamagen_train_gpt.py: two ranks (DDP and FSDP) equal one process",
}


def test_every_readme_command_is_run_here():
    assert readme_commands() and set(readme_commands()) == set(TOYS), set(readme_commands()) ^ set(TOYS)


@pytest.mark.parametrize("command", [c for c, toy in TOYS.items() if callable(toy)
                                     and (toy is not trainers or c.startswith("bench llamagen train-vq"))])
def test_readme_command_at_toy_size(command, tmp_path, monkeypatch):
    toy = TOYS[command]
    toy(tmp_path, monkeypatch) if "monkeypatch" in toy.__code__.co_varnames[:toy.__code__.co_argcount] else toy(tmp_path)
