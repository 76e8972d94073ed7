"""The VAR port against the official code (FoundationVision/VAR 78b9539) run on the same seeded random weights.

The expected values in tests/data/var/ were computed by the official models (tests/data/var/make_fixtures.py says
how); the weights are rebuilt here from each key's name and shape (tests/var_common.py), so no weights are
committed. Discrete outputs (token maps) must match exactly: the fixture script checked that every nearest-code
and greedy decision there has a margin of >= 1e-3 (squared distances) / 2e-4 (logits), far above float32 rounding on
any CPU. Floats are compared to 1e-4 relative to their scale (they agree to ~1e-6 here).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from generators.var import decode_scales, encode_scales, generate_scales
from generators.var.model import VAR, var_config
from generators.var.vqvae import VQVAE, VQVAEConfig
from var_common import DATA, SMALL_VAE, SMALL_VAR, layout, sample_images, seeded_state

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(DATA / "expected.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def layouts() -> dict:
    return json.loads((DATA / "layouts.json").read_text())


@pytest.fixture(scope="module")
def models():
    vae = VQVAE(VQVAEConfig(**SMALL_VAE))
    vae.load_state_dict(seeded_state(vae.state_dict()), strict=True)
    var = VAR(var_config(**SMALL_VAR), vae=vae.eval())
    var.load_state_dict(seeded_state(var.state_dict()), strict=True)
    return vae.eval(), var.eval()


def split(tokens: np.ndarray, patch_nums=VQVAEConfig().patch_nums) -> list[torch.Tensor]:
    """[B, 680] -> the 10 maps."""
    ends = np.cumsum([0] + [pn * pn for pn in patch_nums])
    return [torch.from_numpy(tokens[:, a:b].astype(np.int64)) for a, b in zip(ends[:-1], ends[1:])]


def close(actual: torch.Tensor, desired: np.ndarray, rel: float = 1e-4) -> None:
    desired = torch.from_numpy(np.asarray(desired)).to(actual.dtype)
    scale = float(desired.abs().max())
    torch.testing.assert_close(actual, desired, rtol=0, atol=rel * max(scale, 1.0))


def test_small_models_have_the_official_key_layout(models, layouts):
    vae, var = models
    assert layout(vae.state_dict()) == layouts["small_vae"]
    assert {k: list(v.shape) for k, v in var.state_dict().items()} == layouts["small_var_keys"]
    assert layout(var.state_dict()) == layouts["small_var"]


def test_phi_of_each_scale_is_the_official_one(models, expected):
    quant = models[0].quantize
    assert [quant.quant_resi.index(si, 10) for si in range(10)] == expected["phi_index"].tolist()


def test_encode_matches_official_img_to_idxBl(models, expected):
    scales = encode_scales(models[0], sample_images(2, seed=int(expected["images_seed"])))
    assert [tuple(s.shape) for s in scales] == [(2, pn * pn) for pn in VQVAEConfig().patch_nums]
    assert all(s.dtype == torch.int64 for s in scales)
    assert torch.equal(torch.cat(scales, 1), torch.from_numpy(expected["enc_tokens"].astype(np.int64)))


def test_decode_matches_official_idxBl_to_img(models, expected):
    vae = models[0]
    scales = split(expected["enc_tokens"])
    close(vae.quantize.decode_fhat(scales), expected["fhat"])
    images = decode_scales(vae, scales)
    assert images.shape == (2, 3, 256, 256) and images.min() >= -1 and images.max() <= 1
    close(images[..., ::16, ::16], expected["dec_pixels"])
    close(images.double().mean((2, 3)), expected["dec_mean"])


def test_teacher_forced_logits_match_official_forward(models, expected):
    var = models[1]
    logits = var.teacher_forced_logits(torch.from_numpy(expected["tf_labels"]), split(expected["enc_tokens"]))
    assert logits.shape == (2, 680, 64) and logits.dtype == torch.float32
    close(logits[:, torch.from_numpy(expected["tf_positions"])], expected["tf_logits"])
    close(logits.logsumexp(-1), expected["tf_lse"])


@pytest.mark.parametrize("g", range(3))
def test_greedy_generation_matches_official_autoregressive_infer_cfg(models, expected, g):
    """top_k=1 at cfg 0, 1.5 and 4 (the ramp, the null rows, the KV cache and the f_hat inputs) removes the RNG."""
    vae, var = models
    cfg = float(expected["greedy_cfg"][g])
    scales = generate_scales(var, torch.from_numpy(expected["greedy_labels"][g]), cfg_scale=cfg, top_k=1)
    assert torch.equal(torch.cat(scales, 1), torch.from_numpy(expected["greedy_tokens"][g].astype(np.int64)))
    # the official sampler returns its image in [0, 1]
    close(decode_scales(vae, scales)[..., ::32, ::32].add(1).mul(0.5), expected["greedy_pixels"][g])


@pytest.mark.parametrize("i", range(3))
def test_seeded_batch_of_one_reproduces_the_official_draws(models, expected, i):
    """A sample seeded s draws as the official sampler does for B=1, g_seed=s: same multinomial calls on the same
    probabilities (top-k with ties, VAR's top-p, the cfg ramp), so the same tokens."""
    var = models[1]
    scales = generate_scales(var, torch.tensor([int(expected["sample_label"][i])]),
                             cfg_scale=float(expected["sample_cfg"][i]), top_k=int(expected["sample_top_k"][i]),
                             top_p=float(expected["sample_top_p"][i]),
                             seed=torch.tensor([int(expected["sample_seed"][i])]))
    assert torch.equal(torch.cat(scales, 1)[0], torch.from_numpy(expected["sample_tokens"][i].astype(np.int64)))
