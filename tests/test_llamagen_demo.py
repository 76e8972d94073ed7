"""The demo LlamaGen: checkpoints that describe their own architecture (train-gpt / train-vq checkpoints and
safetensors exports) load as what they are, tampered files are refused, and the three demo presets sample,
reconstruct and differ as they should."""

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bench.download import resolve_all, sha256_file
from bench.errors import BenchError
from bench.generator import per_sample_seeds
from generators.llamagen import generate_tokens, load_gpt, load_vq, plugin
from generators.llamagen.checkpoints import export_safetensors, is_safetensors
from generators.llamagen.gpt import GPT, GPT_CONFIGS, gpt_config
from generators.llamagen.losses import TokenizerLossConfig
from generators.llamagen.presets import PRESETS, SHA256, WEIGHTS_DIR
from generators.llamagen.train_gpt import GPTTrainConfig, train_gpt
from generators.llamagen.train_vq import VQTrainConfig, train_vq
from generators.llamagen.vq import VQ_CONFIGS, VQModel, vq_config

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_GPT = dict(dim=32, n_layer=2, n_head=2, multiple_of=16)
TINY_VQ = dict(ch=32, encoder_ch_mult=[1, 1], decoder_ch_mult=[1, 1], z_channels=32, num_res_blocks=1)
VOCAB, TOKENS, CLASSES = 24, 16, 3


# ---- checkpoints written by the trainers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    """train-gpt for 3 steps on random codes of 3 classes, with a non-official width: the checkpoint that used
    to fail with "cls_embedding ... expected (1001, 768)"."""
    root = tmp_path_factory.mktemp("demo_gpt")
    codes = root / "codes"
    codes.mkdir()
    rng = np.random.default_rng(0)
    np.save(codes / "codes.npy", rng.integers(0, VOCAB, (12, 2, TOKENS)).astype(np.uint16))
    np.save(codes / "labels.npy", np.arange(12, dtype=np.int64) % CLASSES)
    (codes / "meta.json").write_text(json.dumps({
        "num_images": 12, "views": 2, "tokens": TOKENS, "image_size": 32, "ten_crop": False, "crop_range": 1.0,
        "codebook_size": VOCAB, "classes": [f"c{i}" for i in range(CLASSES)]}))
    result = train_gpt(GPTTrainConfig(code_path=str(codes), results_dir=str(root / "run"), gpt_model="GPT-B",
                                      model_overrides=TINY_GPT, global_batch_size=4, num_workers=0, max_steps=3,
                                      mixed_precision="none", lr=1e-3))
    return Path(result["checkpoint"]) / "model.pt"


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    """train-vq for 1 step on a few images, with a 2-level (4x downsampling) tokenizer and a 32-entry codebook."""
    from PIL import Image

    root = tmp_path_factory.mktemp("demo_vq")
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / "images" / f"c{c}").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / "images" / f"c{c}" / f"{i}.png")
    result = train_vq(VQTrainConfig(
        data_path=str(root / "images"), results_dir=str(root / "run"), vq_model="VQ-8", model_overrides=TINY_VQ,
        codebook_size=32, codebook_embed_dim=4, image_size=16, allow_download=False, global_batch_size=2,
        num_workers=0, max_steps=1, mixed_precision="none",
        loss=TokenizerLossConfig(disc_dim=8, disc_num_layers=2, perceptual_weight=0.0)))
    return Path(result["checkpoint"]) / "model.pt"


def test_a_train_gpt_checkpoint_loads_with_its_own_config_and_samples(gpt_run):
    saved = torch.load(gpt_run, weights_only=True)
    gpt = load_gpt(gpt_run)
    assert (gpt.num_classes, gpt.config.vocab_size, gpt.config.block_size) == (CLASSES, VOCAB, TOKENS)
    assert (gpt.config.dim, gpt.config.n_layer) == (32, 2) and not gpt.training
    for key, value in saved["model"].items():
        assert torch.equal(gpt.state_dict()[key], value), key
    tokens = generate_tokens(gpt, torch.tensor([0, 2]), cfg_scale=2.0, seed=per_sample_seeds(0, 2))
    assert tokens.shape == (2, TOKENS) and int(tokens.max()) < VOCAB
    # the preset's grid still wins when given (RoPE weights fit any grid)
    assert load_gpt(gpt_run, image_size=64, downsample=8).config.block_size == 64


def test_a_checkpoint_refuses_a_model_name_its_config_contradicts(gpt_run, monkeypatch):
    with pytest.raises(BenchError) as refused:
        load_gpt(gpt_run, "GPT-L")
    message = str(refused.value)
    assert "holds another GPT than the GPT-L asked for (it was trained as GPT-B)" in message
    assert "n_layer: 2 in the file, 24 in GPT-L" in message and "dim: 32 in the file, 1024 in GPT-L" in message
    assert "cls_embedding" not in message  # the old, misleading shape complaint
    # the name it was trained under, with the widths it was trained with, agrees
    monkeypatch.setitem(GPT_CONFIGS, "GPT-B", dict(n_layer=2, n_head=2, dim=32, multiple_of=16))
    assert load_gpt(gpt_run, "GPT-B").num_classes == CLASSES


def test_an_official_style_file_without_config_takes_class_count_and_vocabulary_from_its_shapes(tmp_path):
    torch.manual_seed(0)
    src = GPT(gpt_config("GPT-B", **TINY_GPT, num_classes=CLASSES, vocab_size=VOCAB, block_size=TOKENS)).eval()
    torch.save({"model": src.state_dict()}, tmp_path / "bare.pt")
    with pytest.raises(BenchError, match="shape mismatches"):  # GPT-B's widths do not fit
        load_gpt(tmp_path / "bare.pt", "GPT-B")
    GPT_CONFIGS["GPT-tiny-test"] = TINY_GPT
    try:
        gpt = load_gpt(tmp_path / "bare.pt", "GPT-tiny-test", image_size=32, downsample=8)
    finally:
        del GPT_CONFIGS["GPT-tiny-test"]
    assert (gpt.num_classes, gpt.config.vocab_size) == (CLASSES, VOCAB)
    labels, tokens = torch.tensor([1, 2]), torch.randint(0, VOCAB, (2, TOKENS))
    assert torch.equal(gpt.teacher_forced_logits(labels, tokens), src.teacher_forced_logits(labels, tokens))


def test_a_train_vq_checkpoint_loads_with_its_own_config(vq_run):
    saved = torch.load(vq_run, weights_only=True)
    vq = load_vq(vq_run)
    assert vq.config.codebook_size == 32 and vq.config.encoder_ch_mult == [1, 1]
    assert vq.downsample == 2 and asdict(vq.config) == saved["vq_config"]
    for key, value in saved["model"].items():
        assert torch.equal(vq.state_dict()[key], value), key
    with pytest.raises(BenchError, match=r"holds another tokenizer than the VQ-16 asked for \(it was trained as "
                                         r"VQ-8\):\n  ch: 32 in the file, 128 in VQ-16"):
        load_vq(vq_run, "VQ-16")


def test_train_vq_init_from_starts_from_another_runs_tokenizer(vq_run, tmp_path):
    """--init-from (upstream's --finetune): the first stage's weights, then fresh optimizers from step 0. With lr 0
    the one step changes nothing, so the checkpoint holds exactly the weights it started from."""
    saved = torch.load(vq_run, weights_only=True)
    images = saved["train_config"]["data_path"]
    result = train_vq(VQTrainConfig(
        data_path=images, results_dir=str(tmp_path / "stage2"), vq_model="VQ-8", model_overrides=TINY_VQ,
        codebook_size=32, codebook_embed_dim=4, image_size=16, allow_download=False, global_batch_size=2,
        num_workers=0, max_steps=1, mixed_precision="none", lr=0.0, init_from=str(vq_run),
        loss=TokenizerLossConfig(disc_start=1, disc_dim=8, disc_num_layers=2, perceptual_weight=0.0)))
    stage2 = torch.load(Path(result["checkpoint"]) / "model.pt", weights_only=True)
    assert stage2["steps"] == 1 and str(vq_run) in stage2["notes"]["init_from"]
    for key, value in saved["model"].items():
        if key != "quantize.codebook_used":
            assert torch.equal(stage2["model"][key], value), key
    with pytest.raises(BenchError, match="does not fit the VQ-16 tokenizer being trained"):
        train_vq(VQTrainConfig(data_path=images, results_dir=str(tmp_path / "wrong"), vq_model="VQ-16",
                               image_size=16, allow_download=False, global_batch_size=2, num_workers=0, max_steps=1,
                               mixed_precision="none", init_from=str(vq_run),
                               loss=TokenizerLossConfig(perceptual_weight=0.0)))


# ---- safetensors exports ------------------------------------------------------------------------------------


def test_export_keeps_weights_and_config_only_and_loads_back(gpt_run, vq_run, tmp_path):
    exact = export_safetensors(gpt_run, tmp_path / "gpt32.safetensors", "gpt", dtype=None)
    half = export_safetensors(gpt_run, tmp_path / "gpt16.safetensors", "gpt")
    saved = torch.load(gpt_run, weights_only=True)["model"]
    with safe_open(str(half), "pt") as f:
        assert set(f.keys()) == set(saved) and f.metadata()["gpt_model"] == "GPT-B"
        assert json.loads(f.metadata()["gpt_config"])["num_classes"] == CLASSES
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    for path, cast in ((exact, torch.float32), (half, torch.float16)):
        gpt = load_gpt(path)
        assert gpt.output.weight.dtype == torch.float32 and gpt.num_classes == CLASSES
        for key, value in saved.items():
            assert torch.equal(gpt.state_dict()[key], value.to(cast).float()), key
    assert is_safetensors(half) and not is_safetensors(gpt_run)
    vq_file = export_safetensors(vq_run, tmp_path / "vq.safetensors", "vq")
    with safe_open(str(vq_file), "pt") as f:
        assert "quantize.codebook_used" not in f.keys()  # training bookkeeping stays behind
    assert load_vq(vq_file).config.codebook_size == 32
    with pytest.raises(BenchError, match="carries no vq_config"):
        export_safetensors(gpt_run, tmp_path / "x.safetensors", "vq")


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with safe_open(str(src), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    tensors, metadata = edit(tensors, metadata)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def test_tampered_safetensors_are_refused_clearly(gpt_run, tmp_path):
    good = export_safetensors(gpt_run, tmp_path / "good.safetensors", "gpt")

    def rename(t, m):
        t["layers.0.attention.wqkv.weights"] = t.pop("layers.0.attention.wqkv.weight")
        return t, m

    def reshape(t, m):
        t["tok_embeddings.weight"] = t["tok_embeddings.weight"][:-1]
        return t, m

    def bad_json(t, m):
        return t, {**m, "gpt_config": "{not json"}

    def future_field(t, m):
        return t, {**m, "gpt_config": json.dumps({**json.loads(m["gpt_config"]), "n_experts": 8})}

    cases = {rename: r"missing keys: \[layers.0.attention.wqkv.weight\].*\n.*unexpected keys: "
                     r"\[layers.0.attention.wqkv.weights\]",
             reshape: r"shape mismatches: \[tok_embeddings.weight: expected \(24, 32\), found \(23, 32\)\]",
             bad_json: "its 'gpt_config' metadata is not a JSON object",
             future_field: "fields this version of the LlamaGen code does not know \\(n_experts\\)"}
    for edit, message in cases.items():
        with pytest.raises(BenchError, match=message):
            load_gpt(_rewrite(good, tmp_path / f"{edit.__name__}.safetensors", edit))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(BenchError, match="cannot be read"):
        load_gpt(truncated)


# ---- the shipped demo weights and the demo presets -------------------------------------------------------------


def test_the_shipped_weights_are_pinned_and_describe_the_demo_architectures():
    for name, kind, named in (("demo_vq.safetensors", "vq", "VQ-demo"), ("demo_gpt.safetensors", "gpt", "GPT-demo")):
        path = WEIGHTS_DIR / name
        assert SHA256[name] is not None and sha256_file(path) == SHA256[name]
        assert path.stat().st_size < 8 * 2**20  # package data stays small
        with safe_open(str(path), "pt") as f:
            assert f.metadata()[f"{kind}_model"] == named
    vq = load_vq(WEIGHTS_DIR / "demo_vq.safetensors", "VQ-demo")
    gpt = load_gpt(WEIGHTS_DIR / "demo_gpt.safetensors", "GPT-demo")
    assert all(getattr(vq.config, k) == v for k, v in VQ_CONFIGS["VQ-demo"].items())
    assert (gpt.num_classes, gpt.config.vocab_size, gpt.config.block_size) == (8, 512, 64)
    assert all(getattr(gpt.config, k) == v for k, v in GPT_CONFIGS["GPT-demo"].items())


@pytest.fixture(scope="module")
def demo():
    gen = plugin.LlamaGen(plugin.PRESETS["llamagen-demo"], allow_download=False)
    remotes = gen.required_files()
    paths = resolve_all(remotes, gen.explicit_files(), allow_download=False)  # as the harness does: no download
    gen.load({r.filename: p for r, p in zip(remotes, paths)})
    return gen


def test_demo_preset_samples_64px_images_deterministically_per_seed(demo):
    assert (demo.image_size, demo.eval_size, demo.num_classes) == (64, 64, 8)
    assert [r.filename for r in demo.required_files()] == ["demo_gpt.safetensors", "demo_vq.safetensors"]
    labels, seeds = torch.tensor([0, 5, 7]), per_sample_seeds(3, 3)
    images = demo.sample_for_eval(labels, seeds)
    assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8
    assert np.array_equal(images, demo.sample(labels, seeds))  # no resize at 64 px
    assert np.array_equal(images[1:], demo.sample(labels[1:], seeds[1:]))  # sample i depends on its seed only
    assert not np.array_equal(images[:1], demo.sample(labels[:1], per_sample_seeds(4, 1)))
    with pytest.raises(BenchError, match=r"class labels must lie in \[0, 8\)"):
        demo.sample(torch.tensor([8]), per_sample_seeds(0, 1))


def test_random_preset_needs_no_file_is_reproducible_and_differs_from_the_trained_one(demo):
    random = plugin.presets()["llamagen-demo-random"]()
    assert random.required_files() == [] and random.explicit_files() == {}
    assert "random" in random.name and random.config()["weights"] == "random (seed 0)"
    labels, seeds = torch.tensor([1, 6]), per_sample_seeds(0, 2)
    first = random.sample(labels, seeds)
    assert first.shape == (2, 64, 64, 3)
    torch.manual_seed(123)  # the global RNG plays no part
    assert np.array_equal(first, plugin.presets()["llamagen-demo-random"]().sample(labels, seeds))
    assert not np.array_equal(first, demo.sample(labels, seeds))
    trained_gpt, random_gpt = demo._models()[0], random._models()[0]
    assert not torch.equal(trained_gpt.output.weight, random_gpt.output.weight)
    assert torch.count_nonzero(random_gpt.output.weight) == 0  # untrained: the official zero head
    with pytest.raises(BenchError, match="holds random weights: it takes no checkpoint"):
        plugin.presets()["llamagen-demo-random"](ckpt="x.pt")
    with pytest.raises(BenchError, match="does not take --set vq_ckpt"):
        plugin.presets()["llamagen-demo-random"](vq_ckpt="x.pt")


def test_demo_tokenizer_preset_reconstructs_64px_images():
    tok = plugin.LlamaGen(plugin.PRESETS["llamagen-demo-vq"], allow_download=False)
    assert tok.can_reconstruct and tok.num_classes == 8 and tok.eval_size == 64
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    recon = tok.reconstruct(images)
    assert recon.shape == images.shape and recon.dtype == np.uint8


def test_a_users_gpt_with_other_classes_brings_them_and_reaches_the_board(gpt_run, tmp_path, monkeypatch):
    """A GPT trained with train-gpt on 3 classes, given to a preset with --ckpt: the model is built from the
    config it carries, labels are drawn below its 3 classes, and `bench run` ends in a board row recorded as the
    user's weights (no paper number). A GPT of another architecture than the preset's is still refused."""
    from click.testing import CliRunner

    from bench import report
    from bench.cli import cli

    with pytest.raises(BenchError, match="holds another GPT than the GPT-demo asked for"):
        plugin.presets()["llamagen-demo"](ckpt=str(gpt_run))._models()
    torch.manual_seed(0)
    other = GPT(gpt_config("GPT-demo", num_classes=CLASSES))
    torch.save({"model": other.state_dict(), "gpt_config": asdict(other.config)}, tmp_path / "three.pt")
    generator = plugin.presets()["llamagen-demo"](ckpt=str(tmp_path / "three.pt"))
    generator._models()
    assert generator.num_classes == CLASSES
    with pytest.raises(BenchError, match=r"class labels must lie in \[0, 3\)"):
        generator.sample(torch.tensor([5]), torch.tensor([0]))

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "my_ref.npz", rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = CliRunner().invoke(cli, ["run", "-g", "llamagen-demo", "--ckpt", str(tmp_path / "three.pt"), "--ref",
                                   str(tmp_path / "my_ref.npz"), "--num-samples", "6", "--batch-size", "6",
                                   "--runs-dir", str(tmp_path / "runs"), "--run-id", "mine", "--device", "cpu",
                                   "--noise-resamples", "0", "--metrics", "fid"])
    assert out.exit_code == 0, out.output
    result = json.loads((tmp_path / "runs" / "mine" / "result.json").read_text())
    config = result["settings"]["generator_config"]
    assert config["num_classes"] == CLASSES and config["gpt_ckpt"] == "three.pt" and not config["official_weights"]
    assert result["provenance"]["checkpoints"]["demo_gpt.safetensors"]["sha256"] == sha256_file(tmp_path / "three.pt")
    board = report.build([str(tmp_path / "runs")])
    assert list(board.board["run"]) == ["mine"] and board.board["fid"].iloc[0] > 0


def test_sampling_a_tokenizer_is_refused_before_any_work(tmp_path):
    """`bench run -g llamagen-demo-vq`: refused in one line before weights load, with no run folder left behind."""
    from click.testing import CliRunner

    from bench.cli import cli

    out = CliRunner().invoke(cli, ["run", "-g", "llamagen-demo-vq", "--num-samples", "4", "--runs-dir",
                                   str(tmp_path / "runs"), "--device", "cpu"])
    assert out.exit_code == 2 and "is a tokenizer: it cannot sample" in out.output and "--task reconstruct" in out.output
    assert not (tmp_path / "runs").exists()
