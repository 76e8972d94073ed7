"""Sampling MAR tokens: the masked-autoregressive loop over a random order with a cosine mask schedule, and the
per-token reverse diffusion of the denoising MLP, with the semantics of the official `MAR.sample_tokens` and
`DiffLoss.sample` (LTH14/mar):

  * order: one random permutation of the 256 positions per sample. While m tokens are still unknown, the unknown
    ones are `orders[:, :m]`; so a step that leaves m of r unknown predicts positions `orders[:, m:r]`, and the
    last entries of an order are generated first.
  * mask schedule (MaskGIT's cosine): after step k of N, m_k = floor(256 cos(pi/2 (k + 1) / N)) tokens stay
    unknown, clamped to [1, remaining - 1], so every step predicts at least one token; the last step predicts
    all that remain (`mask_lengths`, `tokens_per_step`).
  * classifier-free guidance: the transformer runs on [class; null] rows (null = the learned `fake_latent`).
    Only the head's noise prediction is guided, eps = eps_u + w (eps_c - eps_u), with w at step k
    1 + (cfg - 1) (256 - m_k) / 256 for the "linear" schedule (Muse's; m_k is the clamped count, so even the last
    step uses (cfg - 1) 255/256) or cfg for "constant". The variance output is the conditional row's.
  * temperature tau scales only the noise of each reverse-diffusion step (x <- mean + tau sigma delta); tau = 0
    makes a token's chain deterministic given its starting noise.
  * the head's diffusion: 1000-step cosine schedule respaced to `sampling_steps` (100), learned-range variance,
    x_0 not clipped (`generators.dit.diffusion`).

Randomness is per sample: sample i draws its order, the starting noise of all 256 token chains (by position) and
the noise of every diffusion step from its own torch.Generator seeded by its seed alone, so a sample never
depends on batch size or composition (the official code draws one stream for the whole batch, with numpy's
global generator for the orders). Values depend on the batch only through float rounding of batched GEMMs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.errors import BenchError
from bench.generator import per_sample_generators, per_sample_seeds
from generators.dit.diffusion import Diffusion
from generators.mar.model import MAR

CFG_SCHEDULES = ("linear", "constant")


def mask_lengths(num_iter: int, seq_len: int = 256) -> list[int]:
    """m_k of each step k: the official count of tokens left unknown after step k (clamped to [1, remaining - 1];
    the last step's m is only used by the linear cfg schedule, since that step predicts everything left)."""
    lengths, remaining = [], seq_len
    for step in range(num_iter):
        ratio = np.cos(math.pi / 2.0 * (step + 1) / num_iter)
        remaining = max(1, min(remaining - 1, int(np.floor(seq_len * ratio))))
        lengths.append(remaining)
    return lengths


def tokens_per_step(num_iter: int, seq_len: int = 256) -> list[int]:
    """How many tokens each of the `num_iter` steps predicts (at least one each, summing to seq_len)."""
    lengths = mask_lengths(num_iter, seq_len)
    before = [seq_len] + lengths[:-1]
    return [b - m for b, m in zip(before[:-1], lengths[:-1])] + [before[-1]]


def cfg_at(cfg_scale: float, mask_len: int, seq_len: int = 256, schedule: str = "linear") -> float:
    """The guidance weight of a step that leaves `mask_len` tokens unknown."""
    if schedule == "linear":
        return 1 + (cfg_scale - 1) * (seq_len - mask_len) / seq_len
    if schedule == "constant":
        return cfg_scale
    raise BenchError(f"unknown cfg schedule {schedule!r}; expected one of {', '.join(CFG_SCHEDULES)}")


def denoise_tokens(mar: MAR, diffusion: Diffusion, x: torch.Tensor, z: torch.Tensor, z_null: torch.Tensor | None,
                   cfg: float, step_noise: torch.Tensor | None) -> torch.Tensor:
    """Run the reverse diffusion of N tokens at once: x [N, 16] starting noise, z [N, D] their conditions (z_null
    the null-class rows, or None without guidance), step_noise [steps - 1, N, 16] already scaled by the
    temperature (None: tau = 0) -> clean tokens [N, 16]."""
    net, C = mar.diffloss.net, x.shape[1]
    c = z if z_null is None else torch.cat([z, z_null])
    for i in range(diffusion.num_steps - 1, -1, -1):
        t = torch.full((len(c),), int(diffusion.timesteps[i]), device=x.device, dtype=torch.long)
        out = net(x if z_null is None else torch.cat([x, x]), t, c).float()
        if z_null is not None:
            cond, uncond = out.split(len(x))
            eps = uncond[:, :C] + cfg * (cond[:, :C] - uncond[:, :C])
            out = torch.cat([eps, cond[:, C:]], dim=1)
        noise = step_noise[diffusion.num_steps - 1 - i] if i > 0 and step_noise is not None else torch.zeros_like(x)
        x = diffusion.ddpm_step(out, x, i, noise)
    return x


def _check(mar: MAR, labels: torch.Tensor, num_iter: int, cfg_scale: float, cfg_schedule: str,
           temperature: float) -> None:
    L = mar.config.seq_len
    if labels.ndim != 1 or labels.dtype.is_floating_point or (
            len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= mar.num_classes)):
        raise BenchError(f"labels must be a 1-D integer tensor of class indices in [0, {mar.num_classes})")
    if isinstance(num_iter, bool) or not isinstance(num_iter, int) or not 1 <= num_iter <= L:
        raise BenchError(f"num_iter must be an integer in [1, {L}], got {num_iter!r}")
    if not math.isfinite(cfg_scale) or cfg_scale < 1.0:
        raise BenchError(f"cfg_scale must be >= 1.0 (1.0 disables guidance), got {cfg_scale}")
    if cfg_schedule not in CFG_SCHEDULES:
        raise BenchError(f"unknown cfg schedule {cfg_schedule!r}; expected one of {', '.join(CFG_SCHEDULES)}")
    if not math.isfinite(temperature) or temperature < 0:
        raise BenchError(f"temperature must be finite and >= 0, got {temperature}")


def _orders(orders: torch.Tensor | None, generators: list[torch.Generator], B: int, L: int,
            device: torch.device) -> torch.Tensor:
    if orders is None:
        return torch.stack([torch.randperm(L, generator=g, device=device) for g in generators]) if B else \
            torch.empty(0, L, dtype=torch.long, device=device)
    if tuple(orders.shape) != (B, L) or orders.dtype != torch.int64:
        raise BenchError(f"orders must be int64 [{B}, {L}], found {orders.dtype} {list(orders.shape)}")
    if not torch.equal(orders.sort(dim=1).values.cpu(), torch.arange(L).expand(B, L)):
        raise BenchError(f"every row of orders must be a permutation of 0..{L - 1}")
    return orders.to(device)


def _start_noise(noise: torch.Tensor | None, generators: list[torch.Generator], B: int, L: int, C: int,
                 device: torch.device) -> torch.Tensor:
    if noise is None:
        return torch.stack([torch.randn(L, C, generator=g, device=device) for g in generators]) if B else \
            torch.empty(0, L, C, device=device)
    if tuple(noise.shape) != (B, L, C) or not noise.dtype.is_floating_point:
        raise BenchError(f"noise must be float [{B}, {L}, {C}], found {noise.dtype} {list(noise.shape)}")
    if not torch.isfinite(noise).all():
        raise BenchError("noise contains NaN or infinite values")
    return noise.to(device=device, dtype=torch.float32)


@torch.no_grad()
def sample_tokens(mar: MAR, labels: torch.Tensor, num_iter: int = 64, cfg_scale: float = 2.9,
                  cfg_schedule: str = "linear", temperature: float = 1.0, seed: int | torch.Tensor = 0,
                  orders: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                  sampling_steps: int | str = 100, progress: bool = False) -> torch.Tensor:
    """`generate_latents` with a progress bar: tokens [B, 256, 16] (patchified, scaled by 0.2325)."""
    device = mar.fake_latent.device
    labels = torch.as_tensor(labels)
    _check(mar, labels, num_iter, float(cfg_scale), cfg_schedule, float(temperature))
    labels = labels.to(device=device, dtype=torch.long)
    B, L, C = len(labels), mar.config.seq_len, mar.config.token_embed_dim
    generators = per_sample_generators(per_sample_seeds(seed, B), device)
    orders = _orders(orders, generators, B, L, device)
    start = _start_noise(noise, generators, B, L, C, device)
    diffusion = Diffusion.respaced(sampling_steps, schedule="cosine")

    guided = cfg_scale != 1.0
    condition = mar.class_emb(labels)
    if guided:
        condition = torch.cat([condition, mar.fake_latent.expand(B, -1)])
    def rows(t: torch.Tensor) -> torch.Tensor:  # the transformer's batch: [class; null] rows when guided
        return torch.cat([t, t]) if guided else t

    tokens = torch.zeros(B, L, C, device=device)
    mask = torch.ones(B, L, device=device)
    remaining = L
    for step, mask_len in enumerate(tqdm(mask_lengths(num_iter, L), desc="MAR steps", disable=not progress,
                                         leave=False)):
        z = mar.forward_mae_decoder(mar.forward_mae_encoder(rows(tokens), rows(mask), condition), rows(mask))
        last = step == num_iter - 1
        predict = mask.bool()
        if not last:
            predict[torch.arange(B, device=device)[:, None], orders[:, :mask_len]] = False
        n = remaining if last else remaining - mask_len
        step_noise = None
        if temperature > 0 and diffusion.num_steps > 1:
            step_noise = torch.stack([torch.randn(diffusion.num_steps - 1, n, C, generator=g, device=device)
                                      for g in generators], dim=1).reshape(diffusion.num_steps - 1, B * n, C)
            step_noise = step_noise * temperature
        z = z.float()
        tokens[predict] = denoise_tokens(mar, diffusion, start[predict], z[:B][predict],
                                         z[B:][predict] if guided else None,
                                         cfg_at(cfg_scale, mask_len, L, cfg_schedule), step_noise)
        mask = mask * (~predict)
        remaining = mask_len
    return tokens


def generate_latents(mar: MAR, labels: torch.Tensor, num_iter: int = 64, cfg_scale: float = 2.9,
                     cfg_schedule: str = "linear", temperature: float = 1.0, seed: int | torch.Tensor = 0,
                     orders: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                     sampling_steps: int | str = 100) -> torch.Tensor:
    """Sample MAR latents for `labels` (int64 [B]): float [B, 16, 16, 16], what the official `sample_tokens`
    returns (unpatchified, still x 0.2325; `decode_latents` divides and decodes).

    `seed`: an int (sample i of a run seeded `seed`, `bench.generator.per_sample_seeds`) or int64 [B] per-sample
    seeds. `orders` int64 [B, 256] (official semantics, see the module docstring) and `noise` float [B, 256, 16]
    (each token's starting noise, by position) replace the random draws, e.g. to compare with the official code.
    `sampling_steps` respaces the head's 1000-step diffusion (an int or a step spec like "50,50").
    """
    return mar.unpatchify(sample_tokens(mar, labels, num_iter, cfg_scale, cfg_schedule, temperature, seed,
                                        orders, noise, sampling_steps))
