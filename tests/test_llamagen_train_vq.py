"""LlamaGen tokenizer training on CPU with a tiny VQ: it learns, the discriminator starts at disc_start exactly as
upstream (zero-gradient Adam steps before), resuming is exact, LPIPS plugs in, and the code-extraction command
reads the checkpoints it writes."""

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import generators.llamagen.lpips
from bench.errors import BenchError
from generators.llamagen.codes import extract_codes_command, image_views, load_checkpoint, to_model_range
from generators.llamagen.losses import TokenizerLossConfig
from generators.llamagen.train_vq import VQTrainConfig, build_vq, train_vq, train_vq_command
from generators.llamagen.vq import VQConfig, VQModel

TINY = dict(ch=32, encoder_ch_mult=[1, 1], decoder_ch_mult=[1, 1], z_channels=32, num_res_blocks=1)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("vq") / "images"
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(4):
            h, w = 20 + 3 * i, 18 + 2 * c
            y, x = np.mgrid[0:h, 0:w]
            img = np.stack([(np.sin(x / 3 + i) + 1) * 120, (np.cos(y / 4 + c) + 1) * 120,
                            rng.integers(0, 40, (h, w)) + 100], -1).astype(np.uint8)
            Image.fromarray(img).save(root / f"class{c}" / f"im{i}.png")
    return root


def config(images, results, loss=None, **kw):
    base = dict(data_path=str(images), results_dir=str(results), model_overrides=TINY, codebook_size=16,
                codebook_embed_dim=4, image_size=16, allow_download=False, global_batch_size=2, num_workers=0,
                mixed_precision="none", log_every=1, ckpt_every=1000, lr=1e-3,
                loss=loss or TokenizerLossConfig(disc_start=3, disc_dim=8, disc_num_layers=2, perceptual_weight=0.0))
    return VQTrainConfig(**{**base, **kw})


def ckpt(results, step):
    return load_checkpoint(os.path.join(results, "checkpoints", f"{step:07d}", "model.pt"))


def read_log(results):
    return [json.loads(line) for line in open(os.path.join(results, "log.jsonl"))]


@pytest.fixture(scope="module")
def straight(images, tmp_path_factory):
    """One uninterrupted 3-step run (EMA on, a checkpoint every step, D from step 3) that several tests read."""
    results = tmp_path_factory.mktemp("vq") / "straight"
    train_vq(config(images, results, max_steps=3, ckpt_every=1, ema=True, ema_decay=0.9))
    return results


def _reconstruction_error(images, state, cfg):
    model = VQModel(VQConfig(**state["vq_config"])) if "vq_config" in state else None
    if model is None:  # the initial weights: the trainer seeds with cfg.seed before building the model
        torch.manual_seed(cfg.seed)
        model = build_vq(cfg)
    else:
        model.load_state_dict(state["model"])
    files = sorted(images.glob("*/*.png"))
    views = np.concatenate([image_views(Image.open(f).convert("RGB"), 16, False) for f in files])
    x = to_model_range(torch.from_numpy(views))
    with torch.no_grad():
        return torch.mean((model.eval()(x)[0] - x) ** 2).item()


def test_training_learns_and_discriminator_starts_at_disc_start(images, straight):
    log = read_log(straight)
    assert [r["disc_weight"] for r in log] == [0.0, 0.0, 0.5]
    assert "disc_loss" not in log[1] and "disc_loss" in log[2]
    cfg = config(images, straight)
    assert _reconstruction_error(images, ckpt(straight, 3), cfg) < 0.8 * _reconstruction_error(images, {}, cfg)

    c1, c2, c3 = ckpt(straight, 1), ckpt(straight, 2), ckpt(straight, 3)
    for name, value in c1["discriminator"].items():
        assert torch.equal(value, c2["discriminator"][name])  # weight 0 before disc_start: D does not move
    state2 = c2["optimizer_disc"]["state"]
    assert all(s["step"].item() == 2 and not s["exp_avg"].any() for s in state2.values())  # zero-gradient steps
    assert any(not torch.equal(v, c3["discriminator"][k]) for k, v in c2["discriminator"].items())
    assert any(s["exp_avg"].any() for s in c3["optimizer_disc"]["state"].values())
    # the checkpoint is upstream's layout plus our extras: "model" loads into a VQModel built from "vq_config"
    model = VQModel(VQConfig(**c3["vq_config"]))
    model.load_state_dict(c3["model"])


def test_resume_continues_exactly(images, straight, tmp_path):
    resume_from = str(straight / "checkpoints" / "0000002")
    train_vq(config(images, tmp_path / "b", max_steps=3, ckpt_every=1, ema=True, ema_decay=0.9, resume=resume_from))
    a, b = ckpt(straight, 3), ckpt(tmp_path / "b", 3)
    for key in ("model", "ema", "discriminator", "optimizer_disc"):
        for name, value in a[key].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b[key][name]), f"{key}.{name} differs after resume"
    assert read_log(straight)[2:] == read_log(tmp_path / "b")


def test_perceptual_loss_with_lpips_weights(images, tmp_path, pin):
    g = torch.Generator().manual_seed(0)
    convs = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
             (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]
    vgg = {}
    for idx, cin, cout in convs:
        vgg[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        vgg[f"features.{idx}.bias"] = torch.zeros(cout)
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
             for k, c in enumerate([64, 128, 256, 512, 512])}
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(heads, tmp_path / "vgg.pth")
    pin(generators.llamagen.lpips, "LPIPS_HEADS", tmp_path / "vgg.pth")
    pin(generators.llamagen.lpips, "VGG16_WEIGHTS", tmp_path / "vgg16.pth")
    loss = TokenizerLossConfig(disc_start=2, disc_dim=8, disc_num_layers=2, perceptual_weight=1.0)
    train_vq(config(images, tmp_path / "run", loss=loss, max_steps=1, lpips_heads=str(tmp_path / "vgg.pth"),
                    vgg_weights=str(tmp_path / "vgg16.pth")))
    log = read_log(tmp_path / "run")
    assert log[0]["perceptual_loss"] > 0
    assert log[0]["loss"] == pytest.approx(log[0]["rec_loss"] + log[0]["perceptual_loss"] + log[0]["codebook_loss"],
                                           rel=1e-5)


def test_fp16_uses_grad_scalers_for_both_optimizers(images, tmp_path):
    loss = TokenizerLossConfig(disc_start=2, disc_dim=8, disc_num_layers=2, perceptual_weight=0.0)
    result = train_vq(config(images, tmp_path / "run", loss=loss, max_steps=2, mixed_precision="fp16"))
    assert np.isfinite(result["loss"])
    c = ckpt(tmp_path / "run", 2)
    assert c["scaler"]["scale"] > 0 and c["scaler_disc"]["scale"] > 0  # live scalers (a disabled one saves {})


def test_extract_codes_command_reads_trained_checkpoints(images, straight, tmp_path):
    model_pt = str(straight / "checkpoints" / "0000003" / "model.pt")
    out = tmp_path / "codes"
    run = CliRunner().invoke(extract_codes_command, [str(images), "-o", str(out), "--vq-ckpt", model_pt,
                                                     "--image-size", "16", "--num-workers", "0", "--device", "cpu"])
    assert run.exit_code == 0, run.output
    c = load_checkpoint(model_pt)
    model = VQModel(VQConfig(**c["vq_config"])).eval()
    model.load_state_dict(c["model"])
    codes = np.load(out / "codes.npy")
    assert codes.shape == (8, 2, 64)  # 16 px / downsample 2 = 8x8 tokens, 2 views
    first = sorted((images / "class0").iterdir())[0]
    views = image_views(Image.open(first).convert("RGB"), 16, use_ten_crop=False)
    expected = model.encode_to_codes(to_model_range(torch.from_numpy(views))).reshape(2, 64)
    np.testing.assert_array_equal(codes[0], expected.numpy())


def test_cli_help_teaches():
    text = CliRunner().invoke(train_vq_command, ["--help"]).output
    assert "--disc-start" in text and "torchrun" in text and "extract-codes" in text
    assert "Usage" in CliRunner().invoke(extract_codes_command, ["--help"]).output


def _ddp_worker(rank: int, world: int, port: int, cfg: VQTrainConfig) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    try:
        train_vq(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_ddp_two_processes(images, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loss = TokenizerLossConfig(disc_start=2, disc_dim=8, disc_num_layers=2, perceptual_weight=0.0)
    single = train_vq(config(images, tmp_path / "single", loss=loss, max_steps=1, global_batch_size=4))
    mp.spawn(_ddp_worker, nprocs=2, args=(2, port, config(images, tmp_path / "ddp", loss=loss, max_steps=2,
                                                          global_batch_size=4, ckpt_every=1)))
    # step 1 (no GAN term yet, GroupNorm only): 2 x 2 images under DDP = one batch of 4. Weights are compared
    # through what they compute: conv biases that feed a GroupNorm get ~0 gradients (numerical noise, which
    # Adam's first step scales up to +-lr) but cannot change any output.
    a, b = load_checkpoint(os.path.join(single["checkpoint"], "model.pt")), ckpt(tmp_path / "ddp", 1)
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    outputs = []
    for state in (a, b):
        model = VQModel(VQConfig(**state["vq_config"])).eval()
        model.load_state_dict(state["model"])
        with torch.no_grad():
            outputs.append(model(x)[0])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-3, atol=1e-4)
    torch.manual_seed(0)  # the trainer's initial weights: the step moved outputs far more than the tolerance
    with torch.no_grad():
        initial = build_vq(config(images, tmp_path)).eval()(x)[0]
    assert (initial - outputs[0]).abs().max() > 1e-2
    # step 2 trains the DDP-wrapped discriminator (BatchNorm statistics are per rank, so no equality there)
    log = read_log(tmp_path / "ddp")
    assert log[1]["disc_weight"] == 0.5 and np.isfinite(log[1]["disc_loss"])
    assert any(not torch.equal(v, ckpt(tmp_path / "ddp", 2)["discriminator"][k]) for k, v in b["discriminator"].items())


def test_load_vq_reads_upstream_style_checkpoints(tmp_path):
    import argparse

    from bench.errors import BenchError
    from generators.llamagen.codes import load_vq
    from generators.llamagen.vq import vq_config

    torch.manual_seed(0)
    small = {**TINY, "codebook_size": 16, "codebook_embed_dim": 4}
    reference = VQModel(vq_config("VQ-16", **small)).eval()
    torch.save({"model": reference.state_dict(), "ema": reference.state_dict(), "steps": 7,
                "args": argparse.Namespace(vq_model="VQ-16")}, tmp_path / "upstream.pt")  # vq_train.py's container
    loaded = load_vq(tmp_path / "upstream.pt", "VQ-16", "ema", **small)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(loaded.encode_to_codes(x), reference.encode_to_codes(x))
    with pytest.raises(BenchError, match="does not fit"):
        load_vq(tmp_path / "upstream.pt", "VQ-16", **{**small, "codebook_size": 32})


# ------------------------------------------------------------------------------------------------------------
# Reliability: locked folders, damaged images, what checkpoints record, pruning, runs that train nothing


def with_bad_images(images, root):
    """A copy of `images` with a truncated JPEG and a text file named like a PNG among them."""
    import io
    import shutil

    shutil.copytree(images, root)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(buffer, "JPEG")
    (root / "class0" / "cut.jpg").write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])  # a cut download
    (root / "class1" / "notes.png").write_text("not an image")
    return root


def test_a_folder_another_training_uses_is_refused_and_left_alone(images, tmp_path, held_lock):
    run = tmp_path / "run"
    with held_lock(run):
        with pytest.raises(BenchError, match="run is in use by another training run"):
            train_vq(config(images, run, max_steps=1))
        assert [p.name for p in run.iterdir()] == [".lock"]
    assert train_vq(config(images, run, max_steps=1))["step"] == 1


def test_unreadable_images_are_listed_before_step_one(images, tmp_path):
    data = with_bad_images(images, tmp_path / "data")
    with pytest.raises(BenchError) as err:
        train_vq(config(data, tmp_path / "run", max_steps=2))
    message = str(err.value)
    assert "2 of 10 images cannot be read" in message and "--skip-bad-images" in message
    assert "cut.jpg: unreadable image (OSError: image file is truncated" in message, message
    assert "notes.png: unreadable image (UnidentifiedImageError" in message
    assert not (tmp_path / "run" / "log.jsonl").exists() and not (tmp_path / "run" / "checkpoints").exists()

    with pytest.warns(UserWarning, match=r"left out 2 unreadable image\(s\) of 10 \(--skip-bad-images\)"):
        result = train_vq(config(data, tmp_path / "skip", max_steps=2, skip_bad_images=True))
    assert result["step"] == 2
    notes = ckpt(tmp_path / "skip", 2)["notes"]
    assert notes["skip_bad_images"] == ("2 unreadable image(s) left out: "
                                        f"{os.path.join('class0', 'cut.jpg')}, {os.path.join('class1', 'notes.png')}")


def test_a_run_without_lpips_records_that_it_ran_without_it(images, tmp_path):
    loss = TokenizerLossConfig(disc_start=3, disc_dim=8, disc_num_layers=2, perceptual_weight=1.0)
    with pytest.warns(RuntimeWarning, match="WITHOUT the perceptual loss"):  # no LPIPS in the isolated cache
        train_vq(config(images, tmp_path / "run", loss=loss, max_steps=1))
    saved = ckpt(tmp_path / "run", 1)
    assert saved["train_config"]["loss"]["perceptual_weight"] == 0.0
    assert saved["notes"]["loss.perceptual_weight"].startswith("0.0, not the 1.0 asked for: the LPIPS weights")
    assert read_log(tmp_path / "run")[0]["perceptual_loss"] == 0.0


def test_keep_last_and_old_checkpoints_resume(images, tmp_path):
    run = tmp_path / "run"
    train_vq(config(images, run, max_steps=3, ckpt_every=1, keep_last=1))
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["0000003"]
    # a checkpoint written before --skip-bad-images existed resumes: the missing field is its default
    path = run / "checkpoints" / "0000003" / "model.pt"
    saved = torch.load(path, weights_only=True)
    del saved["train_config"]["skip_bad_images"], saved["train_config"]["keep_last"]
    torch.save(saved, path)
    assert train_vq(config(images, run, max_steps=4, ckpt_every=1, keep_last=1, resume="auto"))["step"] == 4
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["0000004"]


def test_a_run_that_would_train_nothing_is_refused(images, tmp_path):
    out = CliRunner().invoke(train_vq_command, [str(images), "-o", str(tmp_path / "r"), "--epochs", "0",
                                                "--vq-model", "VQ-demo", "--image-size", "16", "--global-batch-size",
                                                "2", "--num-workers", "0", "--perceptual-weight", "0"])
    assert out.exit_code == 2 and "--epochs 0 with no --max-steps trains nothing" in out.output
    with pytest.raises(BenchError, match="--max-steps"):
        train_vq(config(images, tmp_path / "r", epochs=0))
    assert not (tmp_path / "r").exists()


def test_help_says_how_to_use_the_result():
    text = CliRunner().invoke(train_vq_command, ["--help"], terminal_width=200).output
    assert "bench run -g llamagen-vq16 --task reconstruct --ckpt runs/vq16/checkpoints/<step>/model.pt" in text
    assert "bench llamagen export CHECKPOINT OUT.safetensors" in text and "--keep-last" in text


def test_extract_codes_records_the_tokenizer_and_its_codes(images, straight, tmp_path):
    from bench.download import sha256_file

    model_pt = straight / "checkpoints" / "0000003" / "model.pt"
    out = tmp_path / "codes"
    run = CliRunner().invoke(extract_codes_command, [str(images), "-o", str(out), "--vq-ckpt", str(model_pt),
                                                     "--weights", "ema", "--image-size", "16", "--num-workers", "0",
                                                     "--device", "cpu"])
    assert run.exit_code == 0, run.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"] == {"path": str(model_pt.resolve()), "sha256": sha256_file(model_pt), "weights": "ema",
                                 "vq_config": load_checkpoint(model_pt)["vq_config"]}
    assert meta["codes_sha256"] == sha256_file(out / "codes.npy")
    assert meta["labels_sha256"] == sha256_file(out / "labels.npy")
    assert meta["data"] == str(images.resolve()) and meta["skipped_images"] == []
