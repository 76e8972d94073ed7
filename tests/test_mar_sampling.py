"""MAR sampling conventions against closed forms and hand-worked cases, plus per-sample determinism.

Independent references: the cosine mask schedule's token counts worked out by hand from
floor(256 cos(pi/2 (k + 1) / N)) with the official clamps; the linear cfg weights 1 + (cfg - 1)(256 - m)/256 by
hand; the respaced cosine process against the telescoped closed form abar_t = f((t + 1)/T) / f(0),
f(s) = cos^2((s + 0.008) / 1.008 pi / 2) (the schedule's betas are f-ratios, so their cumulative product
telescopes; only the last beta is clipped to 0.999).
"""

import math

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from generators.dit.diffusion import Diffusion, cosine_betas
from generators.mar import generate as gen
from generators.mar.generate import cfg_at, generate_latents, mask_lengths, tokens_per_step
from generators.mar.model import MAR, MARConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mask_schedule_num_iter_4_by_hand():
    # floor(256 cos(pi/8)) = floor(236.51) = 236, floor(256 cos(pi/4)) = floor(181.02) = 181,
    # floor(256 cos(3 pi/8)) = floor(97.97) = 97; the last step predicts the 97 left
    assert mask_lengths(4) == [236, 181, 97, 1]
    assert tokens_per_step(4) == [20, 55, 84, 97]


def test_mask_schedule_num_iter_64_clamps_to_one_token_per_step():
    # floor(256 cos(pi/2 (k + 1)/64)) for k = 0..13: 255, 255, 255, 254, 254, 253, 252, 251, 249, 248, 246, 244,
    # 243, 241 -- without the clamp m <= remaining - 1, steps 1, 2 and 4 would predict nothing
    assert mask_lengths(64)[:14] == [255, 254, 253, 252, 251, 250, 249, 248, 247, 246, 245, 244, 243, 241]
    counts = tokens_per_step(64)
    assert counts[:14] == [1] * 13 + [2]
    assert mask_lengths(64)[31] == 181  # k + 1 = 32: floor(256 cos(pi/4))
    assert mask_lengths(64)[62] == 6 and counts[-1] == 6  # floor(256 cos(63 pi/128)) = floor(6.28)
    assert sum(counts) == 256 and min(counts) >= 1 and len(counts) == 64


def test_mask_schedule_num_iter_256_is_one_token_per_step():
    assert tokens_per_step(256) == [1] * 256
    assert mask_lengths(256) == list(range(255, 0, -1)) + [1]


def test_mask_schedule_one_step_and_small_sequences():
    assert tokens_per_step(1) == [256] and mask_lengths(1) == [1]
    assert tokens_per_step(4, seq_len=64) == [5, 14, 21, 24]  # 64 cos(pi/8) = 59.1, 45.3, 24.5


def test_linear_and_constant_cfg_weights_by_hand():
    # num_iter 4, cfg 2.9: m = 236, 181, 97 and the clamped 1 at the last step
    want = [1 + 1.9 * 20 / 256, 1 + 1.9 * 75 / 256, 1 + 1.9 * 159 / 256, 1 + 1.9 * 255 / 256]
    assert want == pytest.approx([1.1484375, 1.556640625, 2.180078125, 2.892578125], abs=1e-12)
    assert [cfg_at(2.9, m) for m in mask_lengths(4)] == pytest.approx(want, abs=1e-12)
    assert [cfg_at(2.9, m, schedule="constant") for m in mask_lengths(4)] == [2.9] * 4
    with pytest.raises(BenchError, match="cfg schedule"):
        cfg_at(2.9, 10, schedule="cosine")


def test_sampler_uses_the_scheduled_weight_at_each_step(monkeypatch):
    seen = []
    real = gen.denoise_tokens

    def spy(mar, diffusion, x, z, z_null, cfg, step_noise):
        seen.append((len(x), cfg, z_null is not None))
        return real(mar, diffusion, x, z, z_null, cfg, step_noise)

    monkeypatch.setattr(gen, "denoise_tokens", spy)
    mar = tiny_mar()
    generate_latents(mar, torch.tensor([1]), num_iter=4, cfg_scale=2.9, sampling_steps=2)
    assert [n for n, _, _ in seen] == [5, 14, 21, 24]  # 64-token model: tokens_per_step(4, 64)
    assert [w for _, w, _ in seen] == pytest.approx([1 + 1.9 * (64 - m) / 64 for m in (59, 45, 24, 1)])
    assert all(guided for _, _, guided in seen)
    seen.clear()
    generate_latents(mar, torch.tensor([1]), num_iter=2, cfg_scale=1.0, sampling_steps=2)
    assert [guided for _, _, guided in seen] == [False, False]  # cfg 1.0: no null rows at all


def cosine_f(s: float) -> float:
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


def test_cosine_betas_closed_form():
    betas = cosine_betas(1000)
    assert betas[-1] == 0.999  # f(1) = 0: the clip
    assert (betas[:-1] < 0.999).all() and (betas > 0).all()
    abar = np.cumprod(1 - betas)
    want = np.array([cosine_f((t + 1) / 1000) / cosine_f(0) for t in range(999)])
    np.testing.assert_allclose(abar[:999], want, rtol=1e-9)
    assert abar[999] == pytest.approx(want[998] * 0.001, rel=1e-9)


@pytest.mark.parametrize("steps", [100, 50, 25])
def test_respaced_cosine_steps_closed_form(steps):
    d = Diffusion.respaced(steps, schedule="cosine")
    kept = [round(k * 999 / (steps - 1)) for k in range(steps)]
    assert list(d.timesteps) == kept and kept[0] == 0 and kept[-1] == 999
    abar = np.array([cosine_f((t + 1) / 1000) / cosine_f(0) for t in range(1000)])
    abar[999] = abar[998] * 0.001
    np.testing.assert_allclose(d.alphas_cumprod, abar[kept], rtol=1e-9)
    want_betas = 1 - abar[kept] / np.append(1.0, abar[kept][:-1])
    np.testing.assert_allclose(d.betas, want_betas, rtol=1e-9)
    assert Diffusion.respaced(steps).betas[0] != d.betas[0]  # the default stays DiT's linear schedule


def test_temperature_scales_only_the_step_noise():
    """One diffusion step by hand: x_{i-1} = mean + tau exp(logvar / 2) delta, mean and variance from the net."""
    mar = tiny_mar()
    d = Diffusion.respaced(2, schedule="cosine")
    g = torch.Generator().manual_seed(3)
    x, delta = torch.randn(3, 16, generator=g), torch.randn(1, 3, 16, generator=g)
    z = torch.randn(3, mar.config.decoder_embed_dim, generator=g)
    with torch.no_grad():
        out = mar.diffloss.net(x, torch.full((3,), int(d.timesteps[1])), z)
        mean, log_var, _ = d.p_mean_variance(out, x, 1)
        x0_net = mar.diffloss.net(mean + 0.7 * torch.exp(0.5 * log_var) * delta[0],
                                  torch.full((3,), int(d.timesteps[0])), z)
        want = d.p_mean_variance(x0_net, mean + 0.7 * torch.exp(0.5 * log_var) * delta[0], 0)[0]
        got = gen.denoise_tokens(mar, d, x, z, None, 1.0, 0.7 * delta)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Per-sample determinism
# ----------------------------------------------------------------------------------------------------------------

def tiny_mar(class_num: int = 10) -> MAR:
    """A 64-token MAR (128 px) with small random weights, fast. Its samples are large (~1e4-1e5: a random
    denoiser's x_0 prediction at t = 999 is amplified by 1 / sqrt(abar) ~ 2e4), hence bounds relative to max."""
    torch.manual_seed(0)
    config = MARConfig(32, 2, 4, 24, 2, 4, diffloss_d=2, diffloss_w=32, img_size=128, class_num=class_num)
    mar = MAR(config).eval()
    with torch.no_grad():
        for p in mar.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return mar


def assert_equal_up_to_rounding(got: torch.Tensor, want: torch.Tensor) -> None:
    """|got - want| <= 1e-5 x max|want|: another batch composition changes a sample by float32 GEMM rounding only
    (bitwise equal on the AVX2 machine this was written on; the bound leaves the headroom DiT's tests measured
    for AVX-512 blocking). A seed or label mix-up moves a sample by the order of max|want| itself."""
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("cfg_scale,temperature", [(3.0, 1.0), (1.0, 0.9)])
def test_batch_invariance(cfg_scale, temperature):
    mar = tiny_mar()
    labels, seeds = torch.tensor([0, 1, 2, 3]), torch.arange(40, 44)
    kw = dict(num_iter=4, cfg_scale=cfg_scale, temperature=temperature, sampling_steps=5)
    full = generate_latents(mar, labels, seed=seeds, **kw)
    halves = torch.cat([generate_latents(mar, labels[k:k + 2], seed=seeds[k:k + 2], **kw) for k in (0, 2)])
    assert_equal_up_to_rounding(halves, full)
    assert_equal_up_to_rounding(generate_latents(mar, labels[2:3], seed=seeds[2:3], **kw), full[2:3])
    flipped = generate_latents(mar, labels.flip(0), seed=seeds.flip(0), **kw)
    assert_equal_up_to_rounding(flipped, full.flip(0))  # the seed, not the position, drives a sample


def test_seeds():
    mar = tiny_mar()
    kw = dict(num_iter=2, cfg_scale=2.0, sampling_steps=3)
    a = generate_latents(mar, torch.tensor([5, 5]), seed=0, **kw)
    assert not torch.allclose(a[0], a[1])  # same label, different per-sample seeds
    assert torch.equal(a, generate_latents(mar, torch.tensor([5, 5]), seed=0, **kw))
    assert not torch.allclose(a, generate_latents(mar, torch.tensor([5, 5]), seed=1, **kw))
    # int seed = the run's per-sample seeds: sample i of a batch of 3 is sample i of a batch of 2
    b = generate_latents(mar, torch.tensor([5, 5, 6]), seed=0, **kw)
    assert_equal_up_to_rounding(b[:2], a)


def test_temperature_zero_with_injected_randomness_ignores_the_seed():
    mar = tiny_mar()
    g = torch.Generator().manual_seed(0)
    orders = torch.stack([torch.randperm(64, generator=g) for _ in range(2)])
    noise = torch.randn(2, 64, 16, generator=g)
    kw = dict(num_iter=3, cfg_scale=2.0, temperature=0.0, orders=orders, noise=noise, sampling_steps=4)
    x1 = generate_latents(mar, torch.tensor([1, 2]), seed=1, **kw)
    assert torch.equal(x1, generate_latents(mar, torch.tensor([1, 2]), seed=2, **kw))
    x3 = generate_latents(mar, torch.tensor([1, 2]), seed=1, **{**kw, "temperature": 1.0})
    assert not torch.allclose(x1, x3)


def test_bad_arguments():
    mar = tiny_mar()
    one = torch.tensor([1])
    cases = [
        (dict(labels=torch.tensor([10])), "labels"),
        (dict(labels=torch.tensor([[1]])), "labels"),
        (dict(labels=torch.tensor([1.0])), "labels"),
        (dict(num_iter=0), "num_iter"),
        (dict(num_iter=65), "num_iter"),
        (dict(num_iter=2.5), "num_iter"),
        (dict(cfg_scale=0.5), "cfg_scale"),
        (dict(cfg_scale=float("nan")), "cfg_scale"),
        (dict(cfg_schedule="cosine"), "cfg schedule"),
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(orders=torch.zeros(1, 64, dtype=torch.long)), "permutation"),
        (dict(orders=torch.arange(64)[None].int()), "orders must be int64"),
        (dict(orders=torch.arange(32)[None]), "orders must be int64"),
        (dict(noise=torch.zeros(1, 64, 8)), "noise must be float"),
        (dict(noise=torch.full((1, 64, 16), float("nan"))), "NaN"),
        (dict(seed=torch.tensor([1, 2])), "seeds"),
        (dict(sampling_steps="fast"), "step spec"),
        (dict(sampling_steps=1001), "cannot take"),
    ]
    for overrides, message in cases:
        kw = dict(labels=one, num_iter=2, sampling_steps=2)
        kw.update(overrides)
        with pytest.raises(BenchError, match=message) as err:
            generate_latents(mar, **kw)
        assert "\n" not in str(err.value)
