"""DiT diffusion: schedule, respacing, posterior, learned-range variance, DDPM/DDIM samplers, per-sample seeding.

Independent references: hand-computed step lists; the posterior derived here by Gaussian conditioning (not by
the coefficient formulas the code uses); an oracle denoiser for a point-mass data distribution, whose exact
samplers must land on that point -- which also checks that the network receives the original timestep.
"""

import math

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.generator import per_sample_seeds
from generators.dit.diffusion import Diffusion, linear_betas, sample_latents, space_timesteps
from generators.dit.models import DiT, DiTConfig

pytestmark = pytest.mark.usefixtures("one_thread")


ORIGINAL_ABAR = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))  # DDPM's linear schedule, written out here


def test_linear_betas():
    betas = linear_betas()
    assert betas.dtype == np.float64 and len(betas) == 1000
    assert betas[0] == 1e-4 and betas[-1] == pytest.approx(0.02, abs=1e-15)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-9)
    assert linear_betas(500)[-1] == pytest.approx(0.04)  # scaled by 1000 / steps


def test_space_timesteps_hand_cases():
    steps = space_timesteps(1000, "250")
    assert len(steps) == 250 and steps[0] == 0 and steps[-1] == 999
    assert steps == [round(k * 999 / 249) for k in range(250)]
    assert space_timesteps(1000, 250) == steps
    assert space_timesteps(1000, "ddim25") == list(range(0, 1000, 40))
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "1000") == list(range(1000))
    # sections: 300 steps in 3 sections of 100, taking 10, 15 and 20 evenly (ends kept) from each
    want = [round(k * 99 / 9) for k in range(10)] + [100 + round(k * 99 / 14) for k in range(15)] \
        + [200 + round(k * 99 / 19) for k in range(20)]
    assert space_timesteps(300, "10,15,20") == want
    assert space_timesteps(1000, "1") == [0]
    with pytest.raises(BenchError):
        space_timesteps(1000, "1001")
    with pytest.raises(BenchError):
        space_timesteps(1000, "ddim999")  # no integer stride gives exactly 999 steps of 1000
    with pytest.raises(BenchError):
        space_timesteps(1000, "fast")


@pytest.mark.parametrize("spec", ["250", "ddim25", "10,15,20", "1000", "3"])
def test_respacing_keeps_alphas_cumprod(spec):
    d = Diffusion.respaced(spec)
    np.testing.assert_allclose(d.alphas_cumprod, ORIGINAL_ABAR[d.timesteps], rtol=1e-12)
    assert list(d.timesteps) == space_timesteps(1000, spec)


def gaussian_posterior(abar_prev, abar, x0, xt):
    """q(x_{t-1} | x_t, x_0) by conditioning the joint Gaussian of (x_{t-1}, x_t) given x_0."""
    alpha = abar / abar_prev
    mean1, var1 = math.sqrt(abar_prev) * x0, 1 - abar_prev  # x_{t-1} | x_0
    mean2, var2 = math.sqrt(abar) * x0, 1 - abar  # x_t | x_0 (x_t = sqrt(alpha) x_{t-1} + noise)
    cov = math.sqrt(alpha) * var1
    return mean1 + cov / var2 * (xt - mean2), var1 - cov**2 / var2


@pytest.mark.parametrize("spec", ["1000", "250", "ddim25"])
def test_posterior_mean_variance_closed_form(spec):
    d = Diffusion.respaced(spec)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    xt = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    for i in [1, 2, d.num_steps // 2, d.num_steps - 1]:
        abar_prev, abar = ORIGINAL_ABAR[d.timesteps[i - 1]], ORIGINAL_ABAR[d.timesteps[i]]
        mean, var = d.q_posterior(x0, xt, i)
        want_mean, want_var = gaussian_posterior(abar_prev, abar, x0, xt)
        torch.testing.assert_close(mean, want_mean, rtol=1e-9, atol=1e-12)
        assert var == pytest.approx(want_var, rel=1e-9)
    mean0, var0 = d.q_posterior(x0, xt, 0)  # first step: the posterior is the point x_0
    torch.testing.assert_close(mean0, x0, rtol=1e-9, atol=1e-12)
    assert var0 == pytest.approx(0, abs=1e-15)


def test_learned_range_variance():
    d = Diffusion.respaced("250")
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    i = 100
    abar_prev, abar = ORIGINAL_ABAR[d.timesteps[i - 1]], ORIGINAL_ABAR[d.timesteps[i]]
    _, posterior_var = gaussian_posterior(abar_prev, abar, 0.0, 0.0)
    beta = 1 - abar / abar_prev
    for v, want in [(-1.0, math.log(posterior_var)), (1.0, math.log(beta)),
                    (0.0, 0.5 * (math.log(posterior_var) + math.log(beta)))]:
        out = torch.cat([torch.zeros_like(x), torch.full_like(x, v)], dim=1)
        _, log_var, _ = d.p_mean_variance(out, x, i)
        torch.testing.assert_close(log_var, torch.full_like(x, want), rtol=1e-9, atol=1e-12)
    # at i = 0 the lower end is clipped to the posterior variance of i = 1
    _, log_var0, _ = d.p_mean_variance(torch.cat([x, -torch.ones_like(x)], dim=1), x, 0)
    _, var1 = gaussian_posterior(ORIGINAL_ABAR[d.timesteps[0]], ORIGINAL_ABAR[d.timesteps[1]], 0.0, 0.0)
    torch.testing.assert_close(log_var0, torch.full_like(x, math.log(var1)), rtol=1e-9, atol=1e-12)


def test_ddim_step_equation_12():
    d = Diffusion.respaced("ddim25")
    g = torch.Generator().manual_seed(1)
    x, eps, noise = (torch.randn(1, 4, 2, 2, generator=g, dtype=torch.float64) for _ in range(3))
    i, eta = 10, 0.7
    a, ap = ORIGINAL_ABAR[d.timesteps[i]], ORIGINAL_ABAR[d.timesteps[i - 1]]
    x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
    sigma = eta * math.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
    want = math.sqrt(ap) * x0 + math.sqrt(1 - ap - sigma**2) * eps + sigma * noise
    out = torch.cat([eps, torch.zeros_like(eps)], dim=1)
    torch.testing.assert_close(d.ddim_step(out, x, i, noise, eta), want, rtol=1e-9, atol=1e-12)


def test_ddpm_step_closed_form():
    d = Diffusion.respaced("250")
    g = torch.Generator().manual_seed(2)
    x, eps, noise = (torch.randn(1, 4, 2, 2, generator=g, dtype=torch.float64) for _ in range(3))
    v = torch.rand(1, 4, 2, 2, generator=g, dtype=torch.float64) * 2 - 1
    i = 37
    a, ap = ORIGINAL_ABAR[d.timesteps[i]], ORIGINAL_ABAR[d.timesteps[i - 1]]
    x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
    mean, posterior_var = gaussian_posterior(ap, a, x0, x)
    log_var = (v + 1) / 2 * math.log(1 - a / ap) + (1 - v) / 2 * math.log(posterior_var)
    want = mean + torch.exp(0.5 * log_var) * noise
    got = d.ddpm_step(torch.cat([eps, v], dim=1), x, i, noise)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(d.ddpm_step(torch.cat([eps, v], dim=1), x, 0, None),
                               (x - math.sqrt(1 - ORIGINAL_ABAR[0]) * eps) / math.sqrt(ORIGINAL_ABAR[0]),
                               rtol=1e-9, atol=1e-12)  # last step: the x_0 prediction, no noise


class PointMassOracle(torch.nn.Module):
    """The exact eps-predictor when the data is a single point per class: x0(y) = y - 1 in every element.

    eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t), using the ORIGINAL 1000-step abar at the t it receives.
    Its variance output is a fixed v; the null class has x0 = -3.
    """

    def __init__(self, latent=4, num_classes=10, v=0.3):
        super().__init__()
        self.config = DiTConfig(input_size=latent, num_classes=num_classes)
        self.in_channels, self.num_classes, self.v = 4, num_classes, v
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the sampler a device
        self.seen_t: list[int] = []

    def x0(self, y):
        return torch.where(y == self.num_classes, -3.0, y.double() - 1)[:, None, None, None]

    def forward(self, x, t, y):
        self.seen_t.append(int(t[0]))
        abar = torch.from_numpy(ORIGINAL_ABAR)[t][:, None, None, None]
        eps = (x.double() - abar.sqrt() * self.x0(y)) / (1 - abar).sqrt()
        return torch.cat([eps, torch.full_like(eps, self.v)], dim=1).float()

    forward_with_cfg = DiT.forward_with_cfg


@pytest.mark.parametrize("sampler,eta,steps", [("ddpm", 0.0, 50), ("ddim", 0.0, "ddim20"), ("ddim", 1.0, 25)])
def test_samplers_recover_the_data_point(sampler, eta, steps):
    oracle = PointMassOracle()
    labels = torch.tensor([0, 2, 5])
    x = sample_latents(oracle, labels, num_steps=steps, sampler=sampler, eta=eta, seed=7)
    torch.testing.assert_close(x, oracle.x0(labels).float().expand(3, 4, 4, 4), atol=2e-4, rtol=0)
    assert oracle.seen_t == sorted(space_timesteps(1000, steps), reverse=True)  # original t, high to low


@pytest.mark.parametrize("all_channels", [False, True])
def test_guided_sampling_extrapolates_on_three_channels(all_channels):
    oracle = PointMassOracle()
    labels = torch.tensor([1, 4])
    s = 1.5
    x = sample_latents(oracle, labels, cfg_scale=s, num_steps="ddim10", sampler="ddim", seed=0,
                       cfg_all_channels=all_channels)
    cond, uncond = oracle.x0(labels).float(), -3.0
    guided = (uncond + s * (cond - uncond)).expand(2, 4, 4, 4)
    torch.testing.assert_close(x[:, :3], guided[:, :3], atol=2e-4, rtol=0)
    torch.testing.assert_close(x[:, 3:], (guided if all_channels else cond.expand(2, 4, 4, 4))[:, 3:], atol=2e-4, rtol=0)


def tiny_dit():
    torch.manual_seed(0)
    model = DiT(DiTConfig(input_size=8, patch_size=2, hidden_size=64, depth=2, num_heads=4, num_classes=10)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return model


def assert_equal_up_to_rounding(got, want):
    """|got - want| <= 1e-5 * max|want| everywhere: latents of another batch composition are equal up to float32
    rounding only. GEMM kernels block, and so sum, in an order that depends on the batch shape (even on a row's
    position in the batch) and on the CPU: bitwise equal on the AVX2 machine this was written on, a few ulps of the
    largest latent apart on AVX-512 Xeons (measured 1.5e-7 * max|latent| for 8 vs 4 + 4 and 8 vs 1, 2.9e-7 for
    16 vs 16 x 1; at most 1.5e-7 with MKL held to AVX2). Rows mixed up by a bug differ far more: a seed mix-up by
    ~1.3 * max|latent|, a label mix-up by ~1e-2 * max|latent|. (Elementwise rtol cannot be the bound: near-zero
    entries differ by 1e-4 relative.)"""
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(want.abs().max()))


def test_per_sample_determinism_8_equals_4_plus_4():
    model = tiny_dit()
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    seeds = torch.arange(100, 108)
    for kwargs in (dict(sampler="ddpm", cfg_scale=1.5), dict(sampler="ddim", eta=0.5, cfg_scale=1.0)):
        full = sample_latents(model, labels, num_steps=5, seed=seeds, **kwargs)
        parts = [sample_latents(model, labels[k:k + 4], num_steps=5, seed=seeds[k:k + 4], **kwargs) for k in (0, 4)]
        assert_equal_up_to_rounding(torch.cat(parts), full)
        alone = sample_latents(model, labels[5:6], num_steps=5, seed=seeds[5:6], **kwargs)
        assert_equal_up_to_rounding(alone, full[5:6])
        # the same batch shape again: bitwise
        assert torch.equal(sample_latents(model, labels[:4], num_steps=5, seed=seeds[:4], **kwargs), parts[0])
    # the seed, not the position, drives a sample: same seeds in another order give permuted samples
    flipped = sample_latents(model, labels.flip(0), num_steps=5, seed=seeds.flip(0))
    assert_equal_up_to_rounding(flipped, sample_latents(model, labels, num_steps=5, seed=seeds).flip(0))


def test_seeds_and_noise():
    model = tiny_dit()
    labels = torch.tensor([3, 3])
    a = sample_latents(model, labels, num_steps=4, seed=0)
    assert not torch.allclose(a[0], a[1])  # same label, different per-sample seeds
    assert torch.equal(a, sample_latents(model, labels, num_steps=4, seed=0))
    assert not torch.allclose(a, sample_latents(model, labels, num_steps=4, seed=1))
    assert torch.equal(per_sample_seeds(0, 3), per_sample_seeds(0, 5)[:3])  # sample i's seed: (seed, i) only
    # DDIM eta=0 is deterministic given the initial noise: the seed no longer matters
    noise = torch.randn(2, 4, 8, 8)
    x1 = sample_latents(model, labels, num_steps=4, sampler="ddim", noise=noise, seed=1)
    x2 = sample_latents(model, labels, num_steps=4, sampler="ddim", noise=noise, seed=2)
    assert torch.equal(x1, x2)
    assert not torch.equal(x1, sample_latents(model, labels, num_steps=4, sampler="ddpm", noise=noise, seed=1))


def test_bad_arguments():
    model = tiny_dit()
    with pytest.raises(BenchError, match="sampler"):
        sample_latents(model, torch.tensor([1]), sampler="euler")
    with pytest.raises(BenchError, match="cfg_scale"):
        sample_latents(model, torch.tensor([1]), cfg_scale=0.5)
    with pytest.raises(BenchError, match="labels"):
        sample_latents(model, torch.tensor([10]), num_steps=2)
    with pytest.raises(BenchError, match="noise must have shape"):
        sample_latents(model, torch.tensor([1]), noise=torch.zeros(1, 4, 4, 4), num_steps=2)
    with pytest.raises(BenchError, match="seeds"):
        sample_latents(model, torch.tensor([1, 2]), seed=torch.tensor([1]), num_steps=2)
