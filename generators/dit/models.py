"""DiT: the Diffusion Transformer of Peebles & Xie (2023), written to load the official checkpoints as they are.

Every module name and parameter shape mirrors facebookresearch/DiT (which builds on timm's PatchEmbed, Attention
and Mlp), so `DiT-XL-2-256x256.pt`, `DiT-XL-2-512x512.pt` and train.py checkpoints load with `strict=True`:

    x_embedder.proj.{weight,bias}            patchify conv, kernel = stride = patch
    t_embedder.mlp.{0,2}.{weight,bias}       timestep MLP on a 256-d sinusoidal embedding
    y_embedder.embedding_table.weight        num_classes (+1 null row for classifier-free guidance) x hidden
    pos_embed                                [1, tokens, hidden] fixed 2D sin-cos, stored as a frozen parameter
    blocks.N.attn.{qkv,proj}.{weight,bias}
    blocks.N.mlp.{fc1,fc2}.{weight,bias}
    blocks.N.adaLN_modulation.1.{weight,bias}      hidden -> 6 * hidden (shift/scale/gate for attn and mlp)
    final_layer.adaLN_modulation.1.{weight,bias}   hidden -> 2 * hidden (shift/scale)
    final_layer.linear.{weight,bias}               hidden -> patch * patch * out_channels

LayerNorms carry no affine parameters (adaLN supplies scale and shift), so they do not appear in the state dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.checkpoint import find_state_dict, load_torch_file
from bench.errors import BenchError

# depth, hidden size, heads for the four model sizes; each comes with patch 2, 4 and 8 (the 12 official configs)
MODEL_SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
MODEL_NAMES: tuple[str, ...] = tuple(f"DiT-{size}/{patch}" for size in MODEL_SIZES for patch in (2, 4, 8))

#: the SD VAE downsamples by 8: a 256x256 image is a 4x32x32 latent
VAE_DOWNSAMPLE = 8


@dataclass(frozen=True)
class DiTConfig:
    input_size: int = 32  # latent side length (image_size // 8)
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1  # > 0 also adds the null-class row used by classifier-free guidance
    num_classes: int = 1000
    learn_sigma: bool = True  # the network also predicts the variance interpolation (2x output channels)

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    @classmethod
    def named(cls, model: str, image_size: int = 256, num_classes: int = 1000) -> "DiTConfig":
        """The official config called `model` ("DiT-XL/2", ...) for `image_size` pixels."""
        if model not in MODEL_NAMES:
            raise BenchError(f"unknown DiT model {model!r}; expected one of {', '.join(MODEL_NAMES)}")
        if image_size % VAE_DOWNSAMPLE:
            raise BenchError(f"image_size must be a multiple of {VAE_DOWNSAMPLE} (the VAE factor), got {image_size}")
        size, patch = model[len("DiT-"):].split("/")
        depth, hidden, heads = MODEL_SIZES[size]
        latent = image_size // VAE_DOWNSAMPLE
        if latent % int(patch):
            raise BenchError(f"{model}: a {latent}x{latent} latent ({image_size} px) is not divisible by patch {patch}")
        return cls(input_size=latent, patch_size=int(patch), hidden_size=hidden, depth=depth, num_heads=heads,
                   num_classes=num_classes)


# --------------------------------------------------------------------------------------------------------------
# Fixed embeddings
# --------------------------------------------------------------------------------------------------------------

def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """[len(positions), dim]: sin of position * 10000^(-k/(dim/2)) in the first half, cos in the second."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2))
    angles = positions.reshape(-1).astype(np.float64)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid_size: int) -> np.ndarray:
    """[grid_size**2, dim] for tokens in row-major order (the order PatchEmbed flattens them in).

    As in MAE/DiT, the first half of the channels encodes the token's column (x), the second its row (y);
    computed in float64 and cast to float32 once, like the official embedding.
    """
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[N, dim] GLIDE-style embedding of (possibly fractional) timesteps: cos in the first half, sin in the second."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: a per-sample affine map of the normalised tokens (scale is a residual around 1). Tokens [N, T, C]
    take one shift/scale [N, C] per sample; vectors [N, C] (MAR's per-token diffusion MLP) one per row."""
    if x.ndim == 3:
        shift, scale = shift.unsqueeze(1), scale.unsqueeze(1)
    return x * (1 + scale) + shift


# --------------------------------------------------------------------------------------------------------------
# Modules (names match the official state dict)
# --------------------------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens, [N, C, H, W] -> [N, (H/p)*(W/p), hidden] in row-major order."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_size))


class LabelEmbedder(nn.Module):
    """Class embeddings; row `num_classes` is the null class that classifier-free guidance conditions on.

    In training mode labels are replaced by the null class with probability `dropout_prob` (that is how the
    unconditional model is learned); in eval mode labels pass through unchanged.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            labels = torch.where(drop, self.num_classes, labels)
        return self.embedding_table(labels)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection laid out [q heads | k heads | v heads] (timm)."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=True)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Mlp(nn.Module):
    """timm's Mlp: fc1, GELU, fc2. DiT uses the tanh approximation of GELU; MAR's ViT blocks the exact one."""

    def __init__(self, hidden_size: int, mlp_hidden: int, approximate: str = "tanh"):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero: the condition sets shift/scale of each norm and gates each branch."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """Class-conditional latent diffusion transformer: (noisy latent, timestep, label) -> (eps, variance logits)."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        self.in_channels = config.in_channels
        self.out_channels = config.out_channels
        self.patch_size = config.patch_size
        self.num_classes = config.num_classes
        self.x_embedder = PatchEmbed(config.patch_size, config.in_channels, config.hidden_size)
        self.t_embedder = TimestepEmbedder(config.hidden_size)
        self.y_embedder = LabelEmbedder(config.num_classes, config.hidden_size, config.class_dropout_prob)
        # a frozen Parameter rather than a buffer: the official checkpoints store it under this name
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches, config.hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList(
            [DiTBlock(config.hidden_size, config.num_heads, config.mlp_ratio) for _ in range(config.depth)]
        )
        self.final_layer = FinalLayer(config.hidden_size, config.patch_size, config.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The official initialisation; adaLN-Zero means every block (and the output) starts as the identity/zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        grid = int(self.config.num_patches ** 0.5)
        self.pos_embed.data.copy_(torch.from_numpy(sincos_2d(self.config.hidden_size, grid)).float().unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # like a Linear; the conv bias keeps torch's default
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for layer in [block.adaLN_modulation[-1] for block in self.blocks] + [
            self.final_layer.adaLN_modulation[-1], self.final_layer.linear
        ]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, p*p*C] -> [N, C, H, W]; each token's vector is laid out (p_row, p_col, channel)."""
        p, c = self.patch_size, self.out_channels
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] noisy latents, t [N] timesteps (0..999), y [N] labels (num_classes = null) -> [N, 2C, H, W]."""
        tokens = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        for block in self.blocks:
            tokens = block(tokens, c)
        return self.unpatchify(self.final_layer(tokens, c))

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float,
                         cfg_all_channels: bool = False) -> torch.Tensor:
        """Classifier-free guidance in one batched pass, with the official semantics.

        The batch is [conditional half; null-label half]. Only the first half of `x` is used (both halves see the
        same latents); eps = uncond + cfg_scale * (cond - uncond) is returned for both halves. Like the official
        code -- and therefore the paper's FID 2.27 -- guidance touches only the first 3 of the 4 latent channels
        unless `cfg_all_channels`; the remaining outputs (channel 4 of eps, variance) stay per-half.
        """
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y)
        guided = self.in_channels if cfg_all_channels else 3
        eps, rest = out[:, :guided], out[:, guided:]
        cond, uncond = eps.chunk(2, dim=0)
        half_eps = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)


# --------------------------------------------------------------------------------------------------------------
# Checkpoint loading
# --------------------------------------------------------------------------------------------------------------

#: containers a checkpoint may wrap its weights in, tried in this order: train.py saves
#: {"model", "ema", "opt", "args"} and samples from "ema", as the paper does
CONTAINER_KEYS = ("ema", "model", "module", "state_dict")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a bare state dict or one wrapped in a `CONTAINER_KEYS` entry, wrapper prefixes removed."""
    return find_state_dict(load_torch_file(path, "DiT checkpoint"), CONTAINER_KEYS, path)


def key_listing(keys: list[str], limit: int = 8) -> str:
    """The first `limit` keys, comma-separated, with a count of the rest."""
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a checkpoint that does not fit `model`, listing what was expected and what was found."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{source} does not match {_describe(model)}:"]
    if not set(expected) & set(found):
        lines[0] = f"{source} is not a DiT checkpoint (it has none of the DiT keys); expected {_describe(model)}:"
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {key_listing(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {key_listing(unexpected)}")
    for k in mismatched[:8]:
        lines.append(f"  {k}: expected shape {list(expected[k])}, found {list(found[k])}")
    if len(mismatched) > 8:
        lines.append(f"  ... and {len(mismatched) - 8} more shape mismatches")
    lines.append("The preset fixes the model, the image size and the number of classes: pick the one the checkpoint "
                 "was trained for (e.g. -g dit-xl-2 for 256 px, -g dit-xl-2-512 for 512 px), or pass the matching "
                 "file with --ckpt.")
    raise BenchError("\n".join(lines))


def _describe(model: nn.Module) -> str:
    c = model.config
    return (f"DiT(depth={c.depth}, hidden={c.hidden_size}, patch={c.patch_size}, latent={c.input_size}, "
            f"classes={c.num_classes})")


def load_dit(path: str | Path, model: str | DiTConfig = "DiT-XL/2", image_size: int = 256,
             num_classes: int = 1000) -> DiT:
    """Build the official `model` config (or an explicit `DiTConfig`) and load `path` into it strictly.

    Returned in eval mode on the CPU. With a `DiTConfig`, image_size and num_classes are taken from it.
    """
    net = DiT(model if isinstance(model, DiTConfig) else DiTConfig.named(model, image_size, num_classes))
    state = read_state_dict(path)
    check_state_dict(net, state, str(path))
    net.load_state_dict(state, strict=True)
    return net.eval()
