"""What the VAR tests and tests/data/var/make_fixtures.py share: the small configs, the seeded weights (a pure
function of each tensor's name and shape, so the official model and this port receive the same numbers without
any weights being committed), the test images, and how a key layout is summarised.

The weights come from numpy's PCG64 generator, seeded per key: they are the same on every machine and do not
depend on the order in which a model lists its keys. Buffers (masks, scale indices, zero biases, training
statistics) keep the values the model computed itself.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parent / "data" / "var"

#: the small models every port-vs-official fixture uses (the release: vocab 4096, Cvae 32, ch 160, depth >= 16)
SMALL_VAE = dict(vocab_size=64, Cvae=8, ch=32)
SMALL_VAR = dict(depth=2, num_classes=10, vocab_size=64, Cvae=8)  # width 128, 2 heads of 64
#: buffers: computed by the model, never drawn
BUFFERS = ("lvl_1L", "attn_bias_for_masking", "zero_k_bias", "ema_vocab_hit_SV")
#: scale_mul_1H11 of block 0, head 0 is set above the clamp (ln 100) so that the clamp is exercised
ABOVE_CLAMP = math.log(300.0)


def _std(key: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(mean, std) of the draw for one tensor: O(1) activations through the small networks."""
    if key.endswith("scale_mul_1H11"):
        return math.log(4.0), 0.3
    if key == "quantize.embedding.weight":
        return 0.0, 1.0
    if key.startswith("pos_") or key == "lvl_embed.weight":
        return 0.0, 0.1
    if key == "class_emb.weight":
        return 0.0, 0.5
    if len(shape) >= 2:
        return 0.0, float(np.prod(shape[1:])) ** -0.5
    if "norm" in key and key.endswith("weight"):
        return 1.0, 0.1
    return 0.0, 0.1


def seeded_state(model_state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights for every float parameter of `model_state`, a function of (seed, key, shape) only."""
    out = {}
    for key, ref in model_state.items():
        if key.rsplit(".", 1)[-1] in BUFFERS:
            out[key] = ref.clone()
            continue
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        mean, std = _std(key, tuple(ref.shape))
        value = mean + std * rng.standard_normal(tuple(ref.shape))
        if key == "blocks.0.attn.scale_mul_1H11":
            value.reshape(-1)[0] = ABOVE_CLAMP
        out[key] = torch.from_numpy(value.astype(np.float32))
    return out


def sample_images(n: int = 2, size: int = 256, seed: int = 0) -> torch.Tensor:
    """Smooth, deterministic float images [n, 3, size, size] in (-1, 1): a few random sinusoids per channel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(size) / size, np.arange(size) / size, indexing="ij")
    images = np.zeros((n, 3, size, size))
    for i in range(n):
        for c in range(3):
            for _ in range(4):
                fy, fx = rng.uniform(0.5, 6.0, 2)
                phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.6)
                images[i, c] += amp * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
    return torch.from_numpy(np.tanh(images).astype(np.float32))


def layout(state: dict[str, torch.Tensor]) -> dict:
    """A key layout summarised: tensor count, parameter-and-buffer element count, sha256 of the sorted
    "key shape" lines."""
    lines = "\n".join(f"{k} {tuple(v.shape)}" for k, v in sorted(state.items()))
    return {"keys": len(state), "numel": int(sum(v.numel() for v in state.values())),
            "sha256": hashlib.sha256(lines.encode()).hexdigest()}


def key_shapes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in sorted(state.items())}
