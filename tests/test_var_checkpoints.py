"""Loading VAR files: small models written here in the official layout load strictly (torch and safetensors)
and compute what the models they were saved from compute; wrong files are refused with one line that says what
they are (a LlamaGen checkpoint, the other VAR file, another depth, a truncated or corrupt file)."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from bench.errors import BenchError
from generators.llamagen.gpt import GPT, gpt_config
from generators.llamagen.vq import VQModel, vq_config
from generators.var import decode_scales, encode_scales, generate_scales, load_vae, load_var
from generators.var.model import VAR, var_config
from generators.var.vqvae import VQVAE, VQVAEConfig
from var_common import SMALL_VAE, SMALL_VAR, sample_images, seeded_state

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The small VQVAE and a depth-2 VAR saved as the release is (bare state dicts), and their source models."""
    folder = tmp_path_factory.mktemp("var_files")
    vae = VQVAE(VQVAEConfig(**SMALL_VAE)).eval()
    vae.load_state_dict(seeded_state(vae.state_dict()))
    var = VAR(var_config(**SMALL_VAR), vae=vae).eval()
    var.load_state_dict(seeded_state(var.state_dict()))
    torch.save(vae.state_dict(), folder / "vae.pth")
    torch.save(var.state_dict(), folder / "var_d2.pth")
    return folder, vae, var


def one_line_error(fn, *args, match: str, **kwargs) -> str:
    with pytest.raises(BenchError, match=match) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value), str(err.value)
    return str(err.value)


def test_loaded_models_compute_what_was_saved(files):
    folder, vae, var = files
    loaded_vae = load_vae(folder / "vae.pth")
    assert loaded_vae.config == vae.config and not loaded_vae.training
    assert not any(p.requires_grad for p in loaded_vae.parameters())
    loaded = load_var(folder / "var_d2.pth", vae=loaded_vae, depth=2)
    assert loaded.config == var.config and loaded.vae is loaded_vae
    images = sample_images(1)
    scales = encode_scales(loaded_vae, images)
    assert all(torch.equal(a, b) for a, b in zip(scales, encode_scales(vae, images)))
    torch.testing.assert_close(decode_scales(loaded_vae, scales), decode_scales(vae, scales), rtol=0, atol=0)
    labels = torch.tensor([4])
    torch.testing.assert_close(loaded.teacher_forced_logits(labels, scales), var.teacher_forced_logits(labels, scales),
                               rtol=0, atol=0)
    a, b = (generate_scales(m, labels, top_k=5, seed=3) for m in (loaded, var))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_safetensors_copies_load_too(files, tmp_path):
    folder, vae, var = files
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(tmp_path / "vae.safetensors"))
    save_file({k: v.contiguous() for k, v in var.state_dict().items()}, str(tmp_path / "var.safetensors"))
    loaded = load_var(tmp_path / "var.safetensors", vae=load_vae(tmp_path / "vae.safetensors"), depth=2)
    assert torch.equal(loaded.head.weight, var.head.weight)


def test_llamagen_checkpoints_are_named(files, tmp_path):
    folder, vae, _ = files
    torch.save(GPT(gpt_config("GPT-demo")).state_dict(), tmp_path / "c2i_B_256.pt")
    one_line_error(load_var, tmp_path / "c2i_B_256.pt", vae=vae, depth=16,
                   match="is a LlamaGen GPT checkpoint, not a VAR")
    torch.save({"model": VQModel(vq_config("VQ-demo")).state_dict()}, tmp_path / "vq_ds16_c2i.pt")
    one_line_error(load_vae, tmp_path / "vq_ds16_c2i.pt",
                   match="is a LlamaGen VQ tokenizer checkpoint, not a VAR VQVAE")


def test_the_two_var_files_swapped(files):
    folder, vae, _ = files
    one_line_error(load_var, folder / "vae.pth", vae=vae, match="is a VAR VQVAE checkpoint .*, not a VAR transformer")
    one_line_error(load_vae, folder / "var_d2.pth", match="is a VAR transformer checkpoint .*, not a VAR VQVAE")


def test_depth_mismatch_names_the_files_depth(files):
    folder, vae, _ = files
    message = one_line_error(load_var, folder / "var_d2.pth", vae=vae, depth=16, match="holds a VAR of depth 2")
    assert "not the depth 16 asked for" in message and "depth=2" in message


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_files(files, tmp_path, cut):
    folder, vae, _ = files
    for name in ("vae.pth", "var_d2.pth"):
        data = (folder / name).read_bytes()
        (tmp_path / name).write_bytes(data[:int(len(data) * cut)])
    one_line_error(load_vae, tmp_path / "vae.pth", match="cannot be read as a torch")
    one_line_error(load_var, tmp_path / "var_d2.pth", vae=vae, depth=2, match="cannot be read as a torch")


def test_corrupt_and_unsafe_files(files, tmp_path):
    folder, vae, _ = files
    (tmp_path / "noise.pth").write_bytes(bytes(range(256)) * 40)
    one_line_error(load_var, tmp_path / "noise.pth", vae=vae, match="cannot be read as a torch")
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"blocks.0.x": Exception("not a tensor")}, f, protocol=2)
    one_line_error(load_vae, tmp_path / "evil.pth", match="cannot be read|refused for safety")
    one_line_error(load_vae, tmp_path / "absent.pth", match="does not exist")


def test_a_file_with_foreign_buffers_or_missing_tensors(files, tmp_path):
    folder, vae, var = files
    state = var.state_dict()
    bad = {**state, "attn_bias_for_masking": torch.zeros_like(state["attn_bias_for_masking"])}
    torch.save(bad, tmp_path / "bad_mask.pth")
    one_line_error(load_var, tmp_path / "bad_mask.pth", vae=vae, depth=2, match="attn_bias_for_masking buffer")
    torch.save({k: v for k, v in state.items() if k != "head.bias"}, tmp_path / "no_bias.pth")
    with pytest.raises(BenchError, match="missing keys: \\[head.bias\\]"):
        load_var(tmp_path / "no_bias.pth", vae=vae, depth=2)


def test_a_vae_that_does_not_fit_the_transformer(files):
    folder, _, _ = files
    other = VQVAE(VQVAEConfig(vocab_size=32, Cvae=8, ch=32)).eval()
    one_line_error(load_var, folder / "var_d2.pth", vae=other, depth=2, match="does not fit this VAR")


@pytest.mark.parametrize("images, match", [
    (torch.zeros(1, 3, 128, 128), r"images must be float \[B, 3, 256, 256\]"),
    (torch.zeros(1, 256, 256, 3), r"images must be float \[B, 3, 256, 256\]"),
    (torch.zeros(1, 3, 256, 256, dtype=torch.uint8), "images must be float"),
    (torch.full((1, 3, 256, 256), float("nan")), "NaN"),
    (torch.full((1, 3, 256, 256), 127.0), r"must lie in \[-1, 1\]"),
])
def test_bad_images(files, images, match):
    one_line_error(encode_scales, files[1], images, match=match)


def test_bad_token_maps(files):
    vae, var = files[1], files[2]
    good = [torch.zeros(2, pn * pn, dtype=torch.long) for pn in vae.patch_nums]
    one_line_error(decode_scales, vae, good[:9], match="expected 10 token maps")
    one_line_error(decode_scales, vae, good[:3] + [torch.zeros(2, 15, dtype=torch.long)] + good[4:],
                   match=r"token map 3 must be an integer tensor \[B, 16\]")
    one_line_error(decode_scales, vae, good[:9] + [torch.full((2, 256), 64)], match="outside the vocabulary")
    one_line_error(decode_scales, vae, [g.float() for g in good], match="token map 0 must be an integer tensor")
    one_line_error(var.teacher_forced_logits, torch.tensor([1, 2, 3]), good, match="3 labels for 2 samples")
    assert var.teacher_forced_logits(torch.tensor([1, 10]), good).shape == (2, 680, 64)  # 10: the null class
