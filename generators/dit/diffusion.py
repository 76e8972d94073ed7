"""Gaussian diffusion for DiT sampling: the ADM/DiT process, respacing, and the DDPM and DDIM samplers.

The process is shared: MAR's per-token diffusion head (`generators.mar`) uses the same class with the improved-DDPM
cosine schedule (`Diffusion.respaced(spec, schedule="cosine")`) and the same learned-range DDPM step.

The facts that decide the paper's numbers (facebookresearch/DiT `create_diffusion`, after ADM):
  * 1000 training steps, linear betas from 0.0001 to 0.02 (both scaled by 1000 / steps), float64 bookkeeping;
  * the network predicts epsilon plus a per-element v in [-1, 1] that interpolates the log variance between the
    clipped posterior variance (v = -1) and beta_t (v = +1) ("learned range");
  * sampling uses a respaced process: a subset of the 1000 steps is kept and betas are recomputed so that the
    kept steps have exactly the original cumulative alphas; the network is fed the ORIGINAL step index;
  * x_0 predictions are not clipped (`clip_denoised=False`), latents are not bounded like pixels.

Randomness is per sample: sample i draws its initial latent and every step's noise from its own
`torch.Generator` seeded by seed i alone, so a sample's randomness never depends on batch size, batch composition
or process count (unlike the official loop, which draws one noise tensor for the whole batch). Its value does, by
float rounding only: GEMMs sum in a batch-shape dependent order (AVX-512 vs AVX2 blocking, GPU kernels), a few
ulps of the largest latent in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.errors import BenchError
from bench.generator import per_sample_generators, per_sample_seeds

TRAIN_STEPS = 1000
SAMPLERS = ("ddpm", "ddim")
#: the largest beta the cosine schedule may take (Nichol & Dhariwal clip it to avoid a singularity at t = T)
MAX_BETA = 0.999


def linear_betas(num_steps: int = TRAIN_STEPS) -> np.ndarray:
    """Ho et al.'s linear schedule, rescaled so that any number of steps spans the same noise range."""
    scale = 1000 / num_steps
    return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)


def cosine_alpha_bar(t: float) -> float:
    """Nichol & Dhariwal's cumulative alpha at time t in [0, 1]: cos^2(((t + s) / (1 + s)) * pi / 2), s = 0.008."""
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def cosine_betas(num_steps: int = TRAIN_STEPS) -> np.ndarray:
    """The improved-DDPM cosine schedule: beta_i = min(1 - abar((i + 1) / T) / abar(i / T), MAX_BETA)."""
    return np.array([min(1 - cosine_alpha_bar((i + 1) / num_steps) / cosine_alpha_bar(i / num_steps), MAX_BETA)
                     for i in range(num_steps)], dtype=np.float64)


#: beta schedules by name: DiT trains with "linear", MAR's diffusion head with "cosine"
SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


def space_timesteps(num_steps: int, spec: int | str) -> list[int]:
    """The training steps a respaced sampler keeps, ascending (ADM's `space_timesteps` semantics).

    `spec` is "250" / 250 (evenly spaced with both ends kept: round(k * (T - 1) / (n - 1))), a comma list of
    per-section counts ("10,15,20" splits the T steps into equal sections), or "ddimN" (the integer stride
    of the DDIM paper that gives exactly N steps, starting at 0).
    """
    spec = str(spec).strip()
    if spec.startswith("ddim"):
        if not spec[len("ddim"):].isdigit():
            raise BenchError(f"bad step spec {spec!r}: expected e.g. 250, 'ddim25' or '10,15,20'")
        want = int(spec[len("ddim"):])
        for stride in range(1, num_steps):
            if len(range(0, num_steps, stride)) == want:
                return list(range(0, num_steps, stride))
        raise BenchError(f"cannot take exactly {want} of {num_steps} steps with an integer stride (spec {spec!r})")
    try:
        counts = [int(c) for c in spec.split(",")]
    except ValueError:
        raise BenchError(f"bad step spec {spec!r}: expected e.g. 250, 'ddim25' or '10,15,20'") from None
    size, extra = divmod(num_steps, len(counts))
    kept: list[int] = []
    start = 0
    for section, count in enumerate(counts):
        length = size + (1 if section < extra else 0)
        if not 1 <= count <= length:
            raise BenchError(f"cannot take {count} steps from a section of {length} (step spec {spec!r})")
        stride = (length - 1) / (count - 1) if count > 1 else 1
        kept += [start + round(k * stride) for k in range(count)]
        start += length
    return sorted(set(kept))


@dataclass
class Diffusion:
    """A (respaced) diffusion process; index i runs over the kept steps, `timesteps[i]` is the network's t."""

    timesteps: np.ndarray  # int64 [n]: original step index fed to the network at respaced index i
    betas: np.ndarray  # float64 [n]: respaced betas

    @classmethod
    def respaced(cls, spec: int | str = TRAIN_STEPS, train_steps: int = TRAIN_STEPS,
                 schedule: str = "linear") -> "Diffusion":
        """Keep the steps `space_timesteps` picks; beta_i = 1 - abar(kept_i) / abar(kept_{i-1}) preserves abar.
        `schedule` names the training betas (`SCHEDULES`): "linear" (DiT) or "cosine" (MAR)."""
        if schedule not in SCHEDULES:
            raise BenchError(f"unknown beta schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
        kept = space_timesteps(train_steps, spec)
        alphas_cumprod = np.cumprod(1.0 - SCHEDULES[schedule](train_steps))[kept]
        previous = np.append(1.0, alphas_cumprod[:-1])
        return cls(timesteps=np.array(kept, dtype=np.int64), betas=1.0 - alphas_cumprod / previous)

    def __post_init__(self) -> None:
        b = self.betas
        self.alphas_cumprod = np.cumprod(1.0 - b)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        ac, ac_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        # q(x_{i-1} | x_i, x_0) = N(coef1 * x_0 + coef2 * x_i, posterior_variance)
        self.posterior_variance = b * (1.0 - ac_prev) / (1.0 - ac)
        self.posterior_mean_coef1 = b * np.sqrt(ac_prev) / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - ac_prev) * np.sqrt(1.0 - b) / (1.0 - ac)
        # the posterior variance is 0 at i = 0; its log is clipped to the value at i = 1 (as in ADM)
        pv = self.posterior_variance
        self.posterior_log_variance_clipped = np.log(np.append(pv[1], pv[1:]) if len(pv) > 1 else b)

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    def predict_x0(self, x: torch.Tensor, i: int, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_i - sqrt(1 - abar) eps) / sqrt(abar), written as ADM does."""
        ac = self.alphas_cumprod[i]
        return float(np.sqrt(1.0 / ac)) * x - float(np.sqrt(1.0 / ac - 1.0)) * eps

    def q_posterior(self, x0: torch.Tensor, x: torch.Tensor, i: int) -> tuple[torch.Tensor, float]:
        """Mean and (unclipped) variance of q(x_{i-1} | x_i, x_0)."""
        mean = float(self.posterior_mean_coef1[i]) * x0 + float(self.posterior_mean_coef2[i]) * x
        return mean, float(self.posterior_variance[i])

    def p_mean_variance(self, model_out: torch.Tensor, x: torch.Tensor, i: int):
        """(mean, log variance, x_0 prediction) of p(x_{i-1} | x_i) from the network's [eps, v] output."""
        eps, v = model_out.split(x.shape[1], dim=1)
        min_log, max_log = float(self.posterior_log_variance_clipped[i]), float(np.log(self.betas[i]))
        frac = (v + 1) / 2
        log_variance = frac * max_log + (1 - frac) * min_log
        x0 = self.predict_x0(x, i, eps)
        mean, _ = self.q_posterior(x0, x, i)
        return mean, log_variance, x0

    def ddpm_step(self, model_out: torch.Tensor, x: torch.Tensor, i: int, noise: torch.Tensor | None) -> torch.Tensor:
        """Ancestral step x_i -> x_{i-1} with the learned variance; the last step (i = 0) adds no noise."""
        mean, log_variance, _ = self.p_mean_variance(model_out, x, i)
        return mean if i == 0 else mean + torch.exp(0.5 * log_variance) * noise

    def ddim_step(self, model_out: torch.Tensor, x: torch.Tensor, i: int, noise: torch.Tensor | None,
                  eta: float = 0.0) -> torch.Tensor:
        """DDIM (Song et al. eq. 12) x_i -> x_{i-1}; eta = 0 is deterministic, eta = 1 matches DDPM's variance."""
        eps = model_out[:, : x.shape[1]]
        x0 = self.predict_x0(x, i, eps)
        ac, ac_prev = self.alphas_cumprod[i], self.alphas_cumprod_prev[i]
        sigma = eta * np.sqrt((1 - ac_prev) / (1 - ac)) * np.sqrt(1 - ac / ac_prev)
        mean = float(np.sqrt(ac_prev)) * x0 + float(np.sqrt(1 - ac_prev - sigma**2)) * eps
        return mean if i == 0 or sigma == 0 else mean + float(sigma) * noise


def _randn(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """One standard normal draw of `shape` per sample, each from that sample's own generator."""
    return torch.stack([torch.randn(shape, generator=g, device=device) for g in generators])


@torch.no_grad()
def sample_latents(model: torch.nn.Module, labels: torch.Tensor, cfg_scale: float = 1.0, num_steps: int | str = 250,
                   sampler: str = "ddpm", eta: float = 0.0, noise: torch.Tensor | None = None,
                   seed: int | torch.Tensor = 0, cfg_all_channels: bool = False,
                   autocast_dtype: torch.dtype | None = None, progress: bool = False) -> torch.Tensor:
    """Run the reverse process for `labels` and return clean latents [B, 4, h, w] (float32, unscaled by 0.18215).

    With cfg_scale > 1 the network sees [x; x] with labels [y; null] (`forward_with_cfg`); only the conditional
    half is carried, which is exactly what the official loop computes for it (its null half is discarded).
    `noise` [B, 4, h, w] replaces the initial latent; `seed` (int, or int64 [B] per-sample seeds) drives all
    other randomness. `num_steps` respaces the 1000 training steps for either sampler. `eta` is DDIM's.
    """
    if sampler not in SAMPLERS:
        raise BenchError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if cfg_scale < 1.0:
        raise BenchError(f"cfg_scale must be >= 1.0 (1.0 disables guidance), got {cfg_scale}")
    if eta < 0:
        raise BenchError(f"eta must be >= 0, got {eta}")
    device = next(model.parameters()).device
    labels = labels.to(device=device, dtype=torch.long)
    B, C, S = len(labels), model.in_channels, model.config.input_size
    if labels.ndim != 1 or (B and (int(labels.min()) < 0 or int(labels.max()) >= model.num_classes)):
        raise BenchError(f"labels must be a 1-D tensor of class indices in [0, {model.num_classes})")
    generators = per_sample_generators(per_sample_seeds(seed, B), device)
    if noise is None:
        x = _randn(generators, (C, S, S), device)
    elif tuple(noise.shape) != (B, C, S, S):
        raise BenchError(f"noise must have shape {[B, C, S, S]}, found {list(noise.shape)}")
    else:
        x = noise.to(device=device, dtype=torch.float32)

    diffusion = Diffusion.respaced(num_steps)
    guided = cfg_scale > 1.0
    y = torch.cat([labels, torch.full_like(labels, model.num_classes)]) if guided else labels
    for i in tqdm(range(diffusion.num_steps - 1, -1, -1), desc="DiT steps", disable=not progress, leave=False):
        t = torch.full((len(y),), int(diffusion.timesteps[i]), device=device, dtype=torch.long)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            if guided:
                out = model.forward_with_cfg(torch.cat([x, x]), t, y, cfg_scale, cfg_all_channels)[:B]
            else:
                out = model(x, t, y)
        out = out.float()
        step_noise = _randn(generators, (C, S, S), device) if i > 0 and (sampler == "ddpm" or eta > 0) else None
        if sampler == "ddpm":
            x = diffusion.ddpm_step(out, x, i, step_noise)
        else:
            x = diffusion.ddim_step(out, x, i, step_noise, eta)
    return x
