"""LlamaGen image tokenizer (VQ-8 / VQ-16): a VQGAN-style conv encoder/decoder around an l2-normalised
codebook of 16384 x 8 entries.

Parameter names and shapes follow the official release (FoundationVision/LlamaGen
`tokenizer/tokenizer_image/vq_model.py`), so `vq_ds16_c2i.pt` / `vq_ds8_c2i.pt` load with strict=True:
`encoder.*`, `decoder.*`, `quant_conv`, `post_quant_conv`, `quantize.embedding.weight` and the
`quantize.codebook_used` usage-tracking buffer.

Images are float [B, 3, H, W] in [-1, 1]; codes are LongTensor [B, H/d, W/d] (d = 8 or 16).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class VQConfig:
    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    codebook_show_usage: bool = True
    commit_loss_beta: float = 0.25
    entropy_loss_ratio: float = 0.0
    encoder_ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    decoder_ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    z_channels: int = 256
    dropout_p: float = 0.0
    ch: int = 128  # base width; the official models use 128 (smaller only in tests)
    num_res_blocks: int = 2

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.encoder_ch_mult) - 1)


VQ_CONFIGS: dict[str, dict] = {
    "VQ-16": dict(encoder_ch_mult=[1, 1, 2, 2, 4], decoder_ch_mult=[1, 1, 2, 2, 4]),
    "VQ-8": dict(encoder_ch_mult=[1, 2, 2, 4], decoder_ch_mult=[1, 2, 2, 4]),
    # The embedded demo's tokenizer (64 px -> 8x8 tokens): widths 32/64/64/64 and one res block per level, so it
    # trains in minutes on two CPU cores; 512 codes of 8 dims. Not an official model.
    "VQ-demo": dict(encoder_ch_mult=[1, 2, 2, 2], decoder_ch_mult=[1, 2, 2, 2], ch=32, z_channels=64,
                    num_res_blocks=1, codebook_size=512),
}


def vq_config(model: str, **overrides) -> VQConfig:
    """The config of a named tokenizer, e.g. vq_config("VQ-16"); `overrides` replace any of its fields."""
    if model not in VQ_CONFIGS:
        raise ValueError(f"unknown VQ model {model!r}; known: {', '.join(VQ_CONFIGS)}")
    return VQConfig(**{**VQ_CONFIGS[model], **overrides})


# --------------------------------------------------------------------------------------------------------
# Conv blocks
# --------------------------------------------------------------------------------------------------------

def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions, 1x1-conv projections, residual."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = group_norm(ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (conv(h).reshape(B, 1, C, H * W).transpose(2, 3) for conv in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v
        return x + self.proj_out(y.transpose(2, 3).reshape(B, C, H, W))


class Downsample(nn.Module):
    """Stride-2 3x3 conv with asymmetric zero padding (right and bottom only), as in taming/LlamaGen."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: res blocks, attention after each (lowest resolution only), then resampling.
    A bare container so the parameter names read `conv_blocks.{i}.res.{j}`, `.attn.{j}` and
    `.downsample` (encoder) / `.upsample` (decoder)."""

    def __init__(self, res: list[nn.Module], attn: list[nn.Module], resample: nn.Module | None = None,
                 resample_name: str = ""):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = nn.ModuleList(attn)
        self.resample_name = resample_name
        if resample is not None:
            self.add_module(resample_name, resample)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.res):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return getattr(self, self.resample_name)(h) if self.resample_name else h


def middle(ch: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList([ResnetBlock(ch, ch, dropout), AttnBlock(ch), ResnetBlock(ch, ch, dropout)])


class Encoder(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        ch, mult, n_res = config.ch, config.encoder_ch_mult, config.num_res_blocks
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        levels = []
        block_in = ch
        for i, m in enumerate(mult):
            last = i == len(mult) - 1
            res, attn = [], []
            for _ in range(n_res):
                res.append(ResnetBlock(block_in, ch * m, config.dropout_p))
                block_in = ch * m
                if last:
                    attn.append(AttnBlock(block_in))
            levels.append(Level(res, attn) if last else Level(res, attn, Downsample(block_in), "downsample"))
        self.conv_blocks = nn.ModuleList(levels)
        self.mid = middle(block_in, config.dropout_p)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.conv_blocks:
            h = level(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        ch, mult, n_res = config.ch, config.decoder_ch_mult, config.num_res_blocks
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, 3, padding=1)
        self.mid = middle(block_in, config.dropout_p)
        levels = []  # lowest resolution first
        for i in reversed(range(len(mult))):
            res, attn = [], []
            for _ in range(n_res + 1):
                res.append(ResnetBlock(block_in, ch * mult[i], config.dropout_p))
                block_in = ch * mult[i]
                if i == len(mult) - 1:
                    attn.append(AttnBlock(block_in))
            levels.append(Level(res, attn) if i == 0 else Level(res, attn, Upsample(block_in), "upsample"))
        self.conv_blocks = nn.ModuleList(levels)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# --------------------------------------------------------------------------------------------------------
# Quantizer
# --------------------------------------------------------------------------------------------------------

class QuantizerLosses(NamedTuple):
    """Training terms (None in eval mode): codebook (||sg[z] - z_q||^2), commitment (beta ||z - sg[z_q]||^2),
    entropy (ratio * (per-sample entropy - batch entropy) of the code affinities), and codebook usage."""
    vq_loss: torch.Tensor | None
    commit_loss: torch.Tensor | None
    entropy_loss: torch.Tensor | None
    codebook_usage: float


def entropy_loss(affinity: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """Mean per-sample entropy minus entropy of the mean assignment, from affinities [N, codebook_size]:
    low per-sample entropy = confident assignments, high batch entropy = the whole codebook in use."""
    logits = affinity / temperature
    probs = F.softmax(logits, dim=-1)
    log_probs = F.log_softmax(logits + 1e-5, dim=-1)
    avg_probs = probs.mean(0)
    avg_entropy = -(avg_probs * torch.log(avg_probs + 1e-5)).sum()
    sample_entropy = -(probs * log_probs).sum(-1).mean()
    return sample_entropy - avg_entropy


class VectorQuantizer(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.codebook_size, config.codebook_embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / config.codebook_size, 1.0 / config.codebook_size)
        if config.codebook_l2_norm:
            with torch.no_grad():
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        if config.codebook_show_usage:
            # The most recent 65536 assigned indices (float, as in the official checkpoints).
            self.register_buffer("codebook_used", torch.zeros(65536))

    def codebook(self) -> torch.Tensor:
        """The codebook as used: rows l2-normalised when codebook_l2_norm (the stored rows need not be)."""
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.config.codebook_l2_norm else w

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared L2 distances [N, codebook_size] from z [N, e_dim] (already normalised when l2_norm),
        expanded as |z|^2 + |e|^2 - 2 z.e like the official quantizer, so near-ties resolve identically."""
        e = self.codebook()
        return z.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * z @ e.t()

    def _flatten(self, z: torch.Tensor) -> torch.Tensor:
        z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return F.normalize(z, dim=-1) if self.config.codebook_l2_norm else z

    def nearest_codes(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [B, e_dim, h, w] -> indices of the nearest codes [B, h, w]."""
        B, _, H, W = z.shape
        return self.distances(self._flatten(z)).argmin(1).view(B, H, W)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, h, w] -> quantised latents [B, e_dim, h, w]."""
        return self.codebook()[codes].permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, QuantizerLosses, torch.Tensor]:
        """z [B, e_dim, h, w] -> (z_q with straight-through gradient, losses, codes [B, h, w])."""
        B, C, H, W = z.shape
        z = self._flatten(z)
        d = self.distances(z)
        codes = d.argmin(1)
        z_q = self.codebook()[codes]
        losses = QuantizerLosses(None, None, None, 0.0)
        if self.training:
            usage = 0.0
            if self.config.codebook_show_usage:
                n = codes.shape[0]
                self.codebook_used[:-n] = self.codebook_used[n:].clone()
                self.codebook_used[-n:] = codes.float()
                usage = len(torch.unique(self.codebook_used)) / self.config.codebook_size
            losses = QuantizerLosses(
                vq_loss=F.mse_loss(z_q, z.detach()),
                commit_loss=self.config.commit_loss_beta * F.mse_loss(z, z_q.detach()),
                entropy_loss=self.config.entropy_loss_ratio * entropy_loss(-d),
                codebook_usage=usage,
            )
        z_q = z + (z_q - z).detach()  # straight-through estimator
        return z_q.view(B, H, W, C).permute(0, 3, 1, 2).contiguous(), losses, codes.view(B, H, W)


# --------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------

class VQModel(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, 1)

    @property
    def downsample(self) -> int:
        return self.config.downsample

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, QuantizerLosses, torch.Tensor]:
        """Images [B, 3, H, W] in [-1, 1] -> (quantised latents, losses, codes [B, H/d, W/d])."""
        return self.quantize(self.quant_conv(self.encoder(x)))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantised latents [B, e_dim, h, w] -> images [B, 3, h*d, w*d] (nominally [-1, 1], unclamped)."""
        return self.decoder(self.post_quant_conv(z_q))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, QuantizerLosses]:
        """Training: (reconstruction, quantizer loss terms)."""
        z_q, losses, _ = self.encode(x)
        return self.decode(z_q), losses

    @torch.no_grad()
    def encode_to_codes(self, images: torch.Tensor) -> torch.Tensor:
        """float [B, 3, H, W] in [-1, 1] -> LongTensor [B, H/d, W/d]."""
        return self.quantize.nearest_codes(self.quant_conv(self.encoder(images)))

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """LongTensor [B, h, w] -> float images [B, 3, h*d, w*d], unclamped."""
        return self.decode(self.quantize.lookup(codes))
