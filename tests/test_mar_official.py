"""The MAR port against the official code (LTH14/mar fe470ac), run outside this repo on small random weights:
tests/data/mar/official.pt, made by tests/data/mar/make_fixtures.py (its docstring says exactly how).

Compared: the official key layout and shapes (VAE, transformer, DiffLoss MLP); VAE posterior moments and decoder;
`forward_mae_encoder` / `forward_mae_decoder`; the DiffLoss MLP output; the respaced cosine process of
`create_diffusion`; and `sample_tokens` at temperature 0 with the same injected orders and starting noise, for
1, several and many tokens per step, with and without guidance, linear and constant cfg, 100/50/20 diffusion steps.

Bounds: the transformer and the sampler reproduce the official float32 results bitwise on the machine that made
the fixture (same ops in the same order); across CPUs GEMMs block differently, so outputs are compared to
1e-5 x their largest magnitude. The sampled tokens are large (~2e5: random denoisers predict noise unrelated to x,
so x_0 predictions at t = 999 are huge) and every tested mistake moves them by far more than the bound: sampling
100 vs 99 diffusion steps 4e-5, cfg 3.01 vs 3.0 2e-3, the constant vs linear cfg schedule 0.7, swapped labels 0.4
(relative to max, measured). The VAE's attention runs through SDPA instead of the official bmm/softmax, 1e-6 apart.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from generators.mar.generate import generate_latents
from generators.mar.model import MAR, MARConfig
from generators.mar.vae import LATENT_SCALE, KLConfig, KLVAE, decode_latents
from generators.dit.diffusion import Diffusion

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).resolve().parent / "data" / "mar"


def _load_recipe():
    spec = importlib.util.spec_from_file_location("mar_make_fixtures", DATA / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the weight recipe and settings; main() is not run
    return module


recipe = _load_recipe()


@pytest.fixture(scope="module")
def fixture():
    return torch.load(DATA / "official.pt", weights_only=True)


def tiny_config() -> MARConfig:
    k = recipe.MAR_KWARGS
    return MARConfig(encoder_embed_dim=k["encoder_embed_dim"], encoder_depth=k["encoder_depth"],
                     encoder_num_heads=k["encoder_num_heads"], decoder_embed_dim=k["decoder_embed_dim"],
                     decoder_depth=k["decoder_depth"], decoder_num_heads=k["decoder_num_heads"],
                     diffloss_d=k["diffloss_d"], diffloss_w=k["diffloss_w"], mlp_ratio=k["mlp_ratio"],
                     img_size=k["img_size"], vae_stride=k["vae_stride"], patch_size=k["patch_size"],
                     vae_embed_dim=k["vae_embed_dim"], buffer_size=k["buffer_size"], class_num=k["class_num"])


def with_recipe_weights(module: torch.nn.Module, official: dict) -> torch.nn.Module:
    """Fill `module` with the fixture's weights, after checking its keys and shapes are the official ones."""
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert sorted(shapes) == official["keys"], set(shapes) ^ set(official["keys"])
    assert [list(shapes[k]) for k in official["keys"]] == official["shapes"]
    state = recipe.recipe_state(shapes)
    torch.testing.assert_close(recipe.fingerprint(state)["sums"], official["sums"], rtol=0, atol=0)
    module.load_state_dict(state, strict=True)
    return module.eval()


@pytest.fixture(scope="module")
def mar(fixture):
    return with_recipe_weights(MAR(tiny_config()), fixture["mar"]["weights"])


def close(got: torch.Tensor, want: torch.Tensor, scale: float = 1e-5) -> None:
    torch.testing.assert_close(got, want, rtol=0, atol=scale * float(want.abs().max()))


def test_vae_layout_moments_and_decoder(fixture):
    v = fixture["vae"]
    vae = with_recipe_weights(KLVAE(KLConfig(ch=recipe.VAE_CH)), v["weights"])
    with torch.no_grad():
        mean, logvar = vae.moments(v["image"])
        close(mean, v["mean"])
        close(logvar, v["logvar"])
        close(vae.encode(v["image"]), v["mean"] * LATENT_SCALE)  # MAR's tokens: the scaled posterior mean
        close(vae.decode(v["latent"] * LATENT_SCALE), v["decoded"])
    close(decode_latents(vae, v["latent"] * LATENT_SCALE), v["decoded"].clamp(-1, 1))


def test_full_size_layouts_match_the_released_key_counts():
    """The released files hold 364 MAR-B tensors and 312 KL-16 VAE tensors (counted in a public audit of
    checkpoint-last.pth and kl16.ckpt); the tiny configs above check the names and shapes themselves."""
    from generators.mar.model import MAR_CONFIGS

    with torch.device("meta"):
        assert len(MAR(MAR_CONFIGS["MAR-B"]).state_dict()) == 364
        assert len(KLVAE().state_dict()) == 312
        params = {name: sum(p.numel() for p in MAR(c).parameters()) for name, c in MAR_CONFIGS.items()}
    # the paper's parameter counts (Table 4: 208M, 479M, 943M) are these, rounded up
    assert [int(np.ceil(params[n] / 1e6)) for n in ("MAR-B", "MAR-L", "MAR-H")] == [208, 479, 943]


def test_encoder_decoder_and_diffloss_net(fixture, mar):
    f = fixture["mar"]
    with torch.no_grad():
        encoded = mar.forward_mae_encoder(f["tokens"], f["mask"], mar.class_emb(f["labels"]))
        close(encoded, f["encoded"])
        close(mar.forward_mae_decoder(encoded, f["mask"]), f["z"])
        close(mar.diffloss.net(f["x_t"], f["t"], f["c"]), f["net_out"])


@pytest.mark.parametrize("steps", ["100", "50", "25"])
def test_respaced_cosine_process_matches_create_diffusion(fixture, steps):
    official = fixture["respacing"][steps]
    d = Diffusion.respaced(steps, schedule="cosine")
    assert list(d.timesteps) == official["timestep_map"].tolist()
    np.testing.assert_allclose(d.betas, official["betas"].numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", range(6))
def test_sample_tokens_at_temperature_zero(fixture, mar, case):
    s = fixture["sample"]
    c = s["cases"][case]
    got = generate_latents(mar, s["labels"], num_iter=c["num_iter"], cfg_scale=c["cfg"],
                           cfg_schedule=c["cfg_schedule"], temperature=0.0, seed=123, orders=s["orders"],
                           noise=s["noise"], sampling_steps=c["sampling_steps"])
    assert got.shape == c["latents"].shape == (2, 16, 8, 8)
    close(got, c["latents"])
