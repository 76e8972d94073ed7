"""Loading MAR checkpoints and the KL-16 VAE: which weight set is read, and one clear line for every wrong file.

The files are made here in the official container layout (`util/misc.py save_model`: model, model_ema, epoch,
args), on tiny configs. A MAR-L-shaped file is written with stride-0 tensors (every shape right, one stored
number each), so the wrong-model check runs on the real MAR-L layout without 2 GB of weights.
"""

import argparse
import datetime

import pytest
import torch

from bench.errors import BenchError
from generators.mar import decode_latents, load_mar, load_vae
from generators.mar.model import MAR, MAR_CONFIGS, MARConfig
from generators.mar.vae import KLConfig, KLVAE, load_kl_vae

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = MARConfig(32, 1, 4, 24, 1, 4, diffloss_d=1, diffloss_w=16, img_size=64, class_num=5)


def random_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in module.state_dict().items()}


@pytest.fixture
def checkpoint(tmp_path):
    """A training checkpoint as save_model writes it, with distinct raw and EMA weights."""
    net = MAR(TINY)
    raw, ema = random_state(net, 1), random_state(net, 2)
    path = tmp_path / "checkpoint-last.pth"
    torch.save({"model": raw, "model_ema": ema, "epoch": 799, "args": argparse.Namespace(model="mar_tiny")}, path)
    return path, raw, ema


def test_model_ema_by_default_and_model_on_request(checkpoint):
    path, raw, ema = checkpoint
    by_default = load_mar(path, TINY).state_dict()
    for k in ema:
        assert torch.equal(by_default[k], ema[k]), k
    from_model = load_mar(path, TINY, weights="model").state_dict()
    for k in raw:
        assert torch.equal(from_model[k], raw[k]), k
    assert not torch.equal(by_default["class_emb.weight"], from_model["class_emb.weight"])
    assert not load_mar(path, TINY).training


def one_line_error(call, *match: str) -> str:
    with pytest.raises(BenchError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message, message
    for m in match:
        assert m in message, (m, message)
    return message


def test_file_without_model_ema_lists_its_keys(tmp_path):
    net = MAR(TINY)
    path = tmp_path / "no_ema.pth"
    torch.save({"model": random_state(net, 1), "epoch": 3}, path)
    one_line_error(lambda: load_mar(path, TINY), "no 'model_ema' entry", "'epoch'", "'model'")
    assert load_mar(path, TINY, weights="model") is not None
    bare = tmp_path / "bare.pth"
    torch.save(random_state(net, 1), bare)
    one_line_error(lambda: load_mar(bare, TINY), "bare state dict of", "'model_ema'")


def test_mar_l_file_given_as_mar_b_names_the_model(tmp_path):
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in MAR(MAR_CONFIGS["MAR-L"]).state_dict().items()}
    state = {k: torch.zeros(()).expand(shape) for k, shape in shapes.items()}
    path = tmp_path / "mar_large.pth"
    torch.save({"model": state, "model_ema": state}, path)
    assert path.stat().st_size < 1_000_000
    message = one_line_error(lambda: load_mar(path, "MAR-B"), "is MAR-L", "not MAR-B")
    assert "encoder 16 x 1024" in message and "DiffLoss MLP 8 x 1280" in message


def test_truncated_corrupt_and_foreign_files(tmp_path, checkpoint):
    path, _, _ = checkpoint
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    one_line_error(lambda: load_mar(truncated, TINY), "cannot be read")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 100)
    one_line_error(lambda: load_mar(garbage, TINY), "cannot be read")
    one_line_error(lambda: load_mar(tmp_path / "missing.pth", TINY), "does not exist")
    one_line_error(lambda: load_mar(path, TINY, weights="ema"), "weights must be one of")
    one_line_error(lambda: load_mar(path, "MAR-XL"), "unknown MAR model")
    vae_file = tmp_path / "kl16.ckpt"
    torch.save({"model": KLVAE(KLConfig(ch=32)).state_dict()}, vae_file)
    one_line_error(lambda: load_mar(vae_file, TINY), "no 'model_ema' entry")
    one_line_error(lambda: load_mar(vae_file, TINY, weights="model"), "is not a MAR checkpoint", "decoder.conv_in")


def test_nan_and_mis_sized_weights(tmp_path, checkpoint):
    path, raw, ema = checkpoint
    bad = dict(ema, fake_latent=torch.full_like(ema["fake_latent"], float("nan")))
    nan_file = tmp_path / "nan.pth"
    torch.save({"model": raw, "model_ema": bad}, nan_file)
    one_line_error(lambda: load_mar(nan_file, TINY), "fake_latent", "NaN")
    other_classes = MARConfig(32, 1, 4, 24, 1, 4, diffloss_d=1, diffloss_w=16, img_size=64, class_num=7)
    one_line_error(lambda: load_mar(path, other_classes), "class_emb.weight", "[7, 32]", "[5, 32]")
    missing = tmp_path / "missing_key.pth"
    torch.save({"model_ema": {k: v for k, v in ema.items() if k != "mask_token"}}, missing)
    one_line_error(lambda: load_mar(missing, TINY), "1 missing keys", "mask_token")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model_ema": datetime.date(2024, 6, 17)}, path)  # any class outside the allow-list
    one_line_error(lambda: load_mar(path, TINY), "refused for safety")


def test_vae_round_trip_and_wrong_files(tmp_path, checkpoint):
    config = KLConfig(ch=32)
    vae = KLVAE(config)
    state = random_state(vae, 3)
    path = tmp_path / "kl16.ckpt"
    torch.save({"model": state}, path)
    loaded = load_kl_vae(path, config)
    assert not loaded.training
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k
    one_line_error(lambda: load_vae(path), "does not match the KL-16 VAE", "of another shape")  # ch 128 expected
    one_line_error(lambda: load_kl_vae(checkpoint[0], config), "is not a KL-16 VAE checkpoint")  # its 'model'
    mar_weights = tmp_path / "mar_as_vae.pth"
    torch.save({"model": checkpoint[1]}, mar_weights)
    one_line_error(lambda: load_kl_vae(mar_weights, config), "is not a KL-16 VAE checkpoint")
    nan_file = tmp_path / "nan.ckpt"
    torch.save({"model": dict(state, **{"quant_conv.bias": torch.full_like(state["quant_conv.bias"], float("inf"))})},
               nan_file)
    one_line_error(lambda: load_kl_vae(nan_file, config), "quant_conv.bias", "NaN or infinite")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[:1000])
    one_line_error(lambda: load_kl_vae(truncated, config), "cannot be read")


def test_decode_latents_shapes_and_range():
    vae = KLVAE(KLConfig(ch=32)).eval()
    images = decode_latents(vae, torch.randn(2, 16, 2, 2) * 5)
    assert images.shape == (2, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    one_line_error(lambda: decode_latents(vae, torch.randn(2, 8, 2, 2)), "latents must be")
    one_line_error(lambda: decode_latents(vae, torch.full((1, 16, 2, 2), float("nan"))), "NaN")
