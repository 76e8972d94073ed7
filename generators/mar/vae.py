"""MAR's KL-16 tokenizer: the LDM AutoencoderKL (Rombach et al. 2022) with a 16-channel latent at stride 16,
in the official key layout, so `kl16.ckpt` (its `model` entry) loads with strict=True.

    encoder.conv_in, encoder.down.{0..4}.block.{0,1}, encoder.down.4.attn.{0,1}, encoder.down.{0..3}.downsample,
    encoder.mid.{block_1,attn_1,block_2}, encoder.norm_out, encoder.conv_out       (image -> 2 x 16 moments)
    quant_conv                                                                     1x1, 32 -> 32
    post_quant_conv                                                                1x1, 16 -> 16
    decoder.conv_in, decoder.mid.*, decoder.up.{0..4}.block.{0,1,2}, decoder.up.{1..4}.upsample,
    decoder.norm_out, decoder.conv_out                                             (16 latents -> image)

The encoder has attention at its lowest level (16x16 for a 256 image, `attn_resolutions=(16,)` of the nominal
256 resolution); the decoder has none there (MAR's kl16 decoder is built with `attn_resolutions=()`), unlike
LlamaGen's VQ decoder. The conv blocks are the taming/LDM ones LlamaGen's tokenizer already implements
(`generators.llamagen.vq`): same parameter names, same maths.

Latent scale: MAR multiplies the posterior by 0.2325 after encoding and divides by it before decoding
(`engine_mar.py`), so its tokens have roughly unit variance. `encode` and `decode` here include that factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.checkpoint import find_state_dict, load_torch_file
from bench.errors import BenchError
from generators.llamagen.vq import AttnBlock, Downsample, ResnetBlock, Upsample, group_norm

#: MAR's latent scale: tokens = 0.2325 * posterior latent
LATENT_SCALE = 0.2325
#: the posterior's log-variance is clamped to this range (LDM's DiagonalGaussianDistribution)
LOGVAR_RANGE = (-30.0, 20.0)


@dataclass(frozen=True)
class KLConfig:
    embed_dim: int = 16  # latent channels
    ch: int = 128  # base width (smaller only in tests)
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # five levels: stride 16
    num_res_blocks: int = 2
    resolution: int = 256  # nominal: decides which level has attention, not the input size
    encoder_attn_resolutions: tuple[int, ...] = (16,)
    decoder_attn_resolutions: tuple[int, ...] = ()

    @property
    def stride(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def _level(blocks: list[nn.Module], attn: list[nn.Module], resample_name: str = "",
           resample: nn.Module | None = None) -> nn.Module:
    """A bare container named as LDM names it: `.block.{j}`, `.attn.{j}` and `.downsample` / `.upsample`."""
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    level.attn = nn.ModuleList(attn)
    if resample is not None:
        level.add_module(resample_name, resample)
    return level


def _middle(ch: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = ResnetBlock(ch, ch, 0.0), AttnBlock(ch), ResnetBlock(ch, ch, 0.0)
    return mid


def _run_middle(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


def _run_level(level: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Each res block, followed by its attention block where the level has them."""
    for j, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[j](h)
    return h


class Encoder(nn.Module):
    """Image [B, 3, H, W] in [-1, 1] -> moments [B, 2 * embed_dim, H / 16, W / 16] (mean, log-variance)."""

    def __init__(self, c: KLConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(3, c.ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in, res = c.ch, c.resolution
        for i, m in enumerate(c.ch_mult):
            blocks, attn = [], []
            for _ in range(c.num_res_blocks):
                blocks.append(ResnetBlock(block_in, c.ch * m, 0.0))
                block_in = c.ch * m
                if res in c.encoder_attn_resolutions:
                    attn.append(AttnBlock(block_in))
            last = i == len(c.ch_mult) - 1
            self.down.append(_level(blocks, attn, "downsample", None if last else Downsample(block_in)))
            res = res if last else res // 2
        self.mid = _middle(block_in)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * c.embed_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _run_level(level, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = _run_middle(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent [B, embed_dim, h, w] (unscaled) -> image [B, 3, 16 h, 16 w], roughly in [-1, 1]."""

    def __init__(self, c: KLConfig):
        super().__init__()
        block_in = c.ch * c.ch_mult[-1]
        res = c.resolution // c.stride
        self.conv_in = nn.Conv2d(c.embed_dim, block_in, 3, padding=1)
        self.mid = _middle(block_in)
        levels: list[nn.Module] = []  # built lowest resolution first, stored highest first (up.0 = full size)
        for i in reversed(range(len(c.ch_mult))):
            blocks, attn = [], []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, c.ch * c.ch_mult[i], 0.0))
                block_in = c.ch * c.ch_mult[i]
                if res in c.decoder_attn_resolutions:
                    attn.append(AttnBlock(block_in))
            levels.insert(0, _level(blocks, attn, "upsample", Upsample(block_in) if i else None))
            res = res * 2 if i else res
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_middle(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            h = _run_level(level, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class KLVAE(nn.Module):
    """AutoencoderKL as MAR uses it: `encode` gives scaled tokens, `decode` takes them."""

    def __init__(self, config: KLConfig = KLConfig()):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.embed_dim, 2 * config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.embed_dim, 1)

    def moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance clamped to LOGVAR_RANGE) of the unscaled posterior."""
        mean, logvar = self.quant_conv(self.encoder(images)).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, images: torch.Tensor, sample: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Images [B, 3, H, W] in [-1, 1] -> MAR tokens [B, 16, H / 16, W / 16] (x LATENT_SCALE): the posterior
        mean, or a posterior sample (what MAR trains on) with `sample=True`."""
        mean, logvar = self.moments(images)
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            mean = mean + torch.exp(0.5 * logvar) * noise
        return mean * LATENT_SCALE

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """MAR tokens [B, 16, h, w] -> images [B, 3, 16 h, 16 w] (unclamped; the training range is [-1, 1])."""
        return self.decoder(self.post_quant_conv(tokens / LATENT_SCALE))


def load_vae(path: str | Path) -> KLVAE:
    """The KL-16 VAE of `path` (`kl16.ckpt`: weights under `model`), strictly loaded, eval mode, on the CPU."""
    return load_kl_vae(path, KLConfig())


def load_kl_vae(path: str | Path, config: KLConfig) -> KLVAE:
    """`load_vae` for another AutoencoderKL configuration (e.g. the small ones of the tests)."""
    state = find_state_dict(load_torch_file(path, "KL-16 VAE checkpoint"), ("model", "state_dict"), path)
    with torch.device("meta"):  # shapes first, weights never allocated twice
        vae = KLVAE(config)
    expected = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        if not set(expected) & set(found):
            raise BenchError(f"{path} is not a KL-16 VAE checkpoint: none of its {len(found)} tensors is a VAE "
                             f"weight (it has e.g. {', '.join(sorted(found)[:3])})")
        detail = "; ".join(part for part in (
            f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(wrong)} of another shape (e.g. {wrong[0]}: expected {list(expected[wrong[0]])}, found "
            f"{list(found[wrong[0]])})" if wrong else "") if part)
        raise BenchError(f"{path} does not match the KL-16 VAE (embed_dim {config.embed_dim}, ch {config.ch}, "
                         f"ch_mult {config.ch_mult}): {detail}")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise BenchError(f"{path}: tensor {bad} holds NaN or infinite values")
    vae.load_state_dict(state, strict=True, assign=True)
    return vae.eval()


def decode_latents(vae: KLVAE, latents: torch.Tensor) -> torch.Tensor:
    """MAR tokens [B, 16, 16, 16] as `generate_latents` returns them -> images [B, 3, 256, 256] clamped to
    [-1, 1] (the official evaluation clips after mapping to [0, 1]; the same thing)."""
    c = vae.config
    if latents.ndim != 4 or latents.shape[1] != c.embed_dim:
        raise BenchError(f"latents must be [B, {c.embed_dim}, h, w], found {list(latents.shape)}")
    if not torch.isfinite(latents).all():
        raise BenchError("latents contain NaN or infinite values")
    weight = vae.post_quant_conv.weight
    with torch.no_grad():
        return vae.decode(latents.to(device=weight.device, dtype=weight.dtype)).clamp(-1.0, 1.0)
