"""VAR's multi-scale VQVAE (Tian et al. 2024, Sec. 3.2 and Algorithms 1-2): a VQGAN-style conv encoder/decoder
around one codebook that quantises a 16x16 latent as a pyramid of residual token maps, 1x1 up to 16x16.

Parameter names and shapes are those of the official release (FoundationVision/VAR `models/vqvae.py`,
`basic_vae.py`, `quant.py`), so `vae_ch160v4096z32.pth` loads with strict=True:

    encoder.conv_in, encoder.down.{i}.block.{j}.{norm1,conv1,norm2,conv2,nin_shortcut}, encoder.down.{i}.attn.{j}
    .{norm,qkv,proj_out}, encoder.down.{i}.downsample.conv, encoder.mid.{block_1,attn_1,block_2},
    encoder.norm_out, encoder.conv_out                       (decoder.*: the mirror image, `up.{i}` / `upsample`)
    quant_conv, post_quant_conv                              3x3 convs on the Cvae-channel latent
    quantize.embedding.weight                                the codebook [vocab_size, Cvae]
    quantize.quant_resi.qresi_ls.{k}.{weight,bias}           the K partially shared Phi convs (3x3, Cvae -> Cvae)
    quantize.ema_vocab_hit_SV                                [num_scales, vocab_size] training statistics (a
                                                             buffer the release carries; inference never reads it)

The quantizer (official `VectorQuantizer2`). A latent f [B, Cvae, 16, 16] is encoded coarse to fine: at scale k the
residual f - f_hat is area-downsampled to pn_k x pn_k, each position takes its nearest code (squared L2), and the
codes' embeddings are bicubic-upsampled back to 16x16, passed through a Phi conv and added to f_hat:

    f_hat = sum_k Phi_k(up(embed(r_k)))      with  Phi(h) = (1 - 0.5) h + 0.5 conv3x3(h)

The last scale (16x16) is neither down- nor upsampled. Scale k uses Phi number argmin_j |tick_j - k/(K-1)|, the
ticks being linspace(1/12, 11/12, 4) for the 4 shared convs (official `PhiPartiallyShared`): scales 0..9 use convs
0,0,1,1,1,2,2,3,3,3 (scale 2 sits exactly between ticks 0 and 1; float rounding picks 0, as numpy does there).
Decoding sums the same terms from the token maps alone (official `idxBl_to_img(same_shape=True, last_one=True)`).

Images are float [B, 3, 256, 256] in [-1, 1]; token maps are LongTensors [B, pn * pn] in raster order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.errors import BenchError
from generators.llamagen.vq import Downsample, ResnetBlock, Upsample, group_norm

#: the token-map sides of the released 256 px models: 10 scales, 680 tokens
PATCH_NUMS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


@dataclass(frozen=True)
class VQVAEConfig:
    """The released tokenizer is the default (`vae_ch160v4096z32.pth`); tests shrink ch, Cvae and vocab_size."""

    vocab_size: int = 4096
    Cvae: int = 32  # latent channels (`z_channels`) = codebook dimension
    ch: int = 160  # base width; a multiple of 32 (GroupNorm's group count)
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # 5 levels: 16x downsampling
    num_res_blocks: int = 2
    quant_resi: float = 0.5  # Phi(h) = (1 - quant_resi) h + quant_resi conv(h)
    share_quant_resi: int = 4  # K Phi convs shared across the scales
    patch_nums: tuple[int, ...] = PATCH_NUMS

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def image_size(self) -> int:
        return self.patch_nums[-1] * self.downsample

    @property
    def num_tokens(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)


# --------------------------------------------------------------------------------------------------------
# Encoder / decoder (taming-transformers' VQGAN layout, as VAR's basic_vae.py names it)
# --------------------------------------------------------------------------------------------------------

class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions with one fused 1x1 qkv conv (VAR's variant), residual."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = group_norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, 1, C, H * W).transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v, one head
        return x + self.proj_out(y.transpose(-1, -2).reshape(B, C, H, W))


class Level(nn.Module):
    """One resolution: res blocks (`block.{j}`), attention after each at the lowest resolution (`attn.{j}`), then
    `downsample` (encoder) / `upsample` (decoder) unless it is the last level."""

    def __init__(self, blocks: list[nn.Module], attn: list[nn.Module], resample: nn.Module | None, name: str):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attn)
        self.resample_name = name if resample is not None else ""
        if resample is not None:
            self.add_module(name, resample)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[j](h)
        return getattr(self, self.resample_name)(h) if self.resample_name else h


class Middle(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch, 0.0)
        self.attn_1 = AttnBlock(ch)
        self.block_2 = ResnetBlock(ch, ch, 0.0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        ch, mult = config.ch, config.ch_mult
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        levels, block_in = [], ch
        for i, m in enumerate(mult):
            last = i == len(mult) - 1
            blocks, attn = [], []
            for _ in range(config.num_res_blocks):
                blocks.append(ResnetBlock(block_in, ch * m, 0.0))
                block_in = ch * m
                if last:
                    attn.append(AttnBlock(block_in))
            levels.append(Level(blocks, attn, None if last else Downsample(block_in), "downsample"))
        self.down = nn.ModuleList(levels)
        self.mid = Middle(block_in)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.Cvae, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        ch, mult = config.ch, config.ch_mult
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(config.Cvae, block_in, 3, padding=1)
        self.mid = Middle(block_in)
        levels = []  # built lowest resolution first, stored as `up.{i}` with i = the level's resolution index
        for i in reversed(range(len(mult))):
            blocks, attn = [], []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, ch * mult[i], 0.0))
                block_in = ch * mult[i]
                if i == len(mult) - 1:
                    attn.append(AttnBlock(block_in))
            levels.insert(0, Level(blocks, attn, None if i == 0 else Upsample(block_in), "upsample"))
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# --------------------------------------------------------------------------------------------------------
# The multi-scale residual quantizer
# --------------------------------------------------------------------------------------------------------

class Phi(nn.Conv2d):
    """h -> (1 - r) h + r conv3x3(h): the refinement applied to each upsampled scale before it joins f_hat."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, kernel_size=3, padding=1)
        self.ratio = abs(ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.ratio) + super().forward(h).mul_(self.ratio)


class SharedPhi(nn.Module):
    """K Phi convs shared by the scales: scale k of S uses the one whose tick is nearest k / (S - 1)."""

    def __init__(self, channels: int, ratio: float, count: int):
        super().__init__()
        self.qresi_ls = nn.ModuleList(Phi(channels, ratio) for _ in range(count))
        # numpy float64, exactly as the official code: it decides the scale that lies half-way between two ticks
        self.ticks = np.linspace(1 / 3 / count, 1 - 1 / 3 / count, count) if count == 4 else \
            np.linspace(1 / 2 / count, 1 - 1 / 2 / count, count)

    def index(self, si: int, num_scales: int) -> int:
        return int(np.argmin(np.abs(self.ticks - si / (num_scales - 1))).item())

    def forward(self, h: torch.Tensor, si: int, num_scales: int) -> torch.Tensor:
        return self.qresi_ls[self.index(si, num_scales)](h)


class MultiScaleQuantizer(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        if config.share_quant_resi < 2 or abs(config.quant_resi) <= 1e-6:
            raise ValueError("only the released layout is implemented: >= 2 partially shared Phi convs, ratio != 0")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.Cvae)
        self.quant_resi = SharedPhi(config.Cvae, config.quant_resi, config.share_quant_resi)
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(config.patch_nums), config.vocab_size))

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.config.patch_nums

    def scale_term(self, si: int, h: torch.Tensor, contiguous: bool = False) -> torch.Tensor:
        """Scale si's contribution to f_hat from its embeddings h [B, Cvae, pn, pn]: upsample (bicubic) to the
        latent size unless it is the last scale, then Phi.

        `h` arrives as the official code makes it, a channels-last view of the embedding rows, and the encoder
        path alone makes the upsampled map contiguous before Phi (`contiguous`): the conv then runs the same
        kernel as there, so encodings agree to the bit where they can, not only to rounding."""
        S, side = len(self.patch_nums), self.patch_nums[-1]
        if si != S - 1:
            h = F.interpolate(h, size=(side, side), mode="bicubic")
        return self.quant_resi(h.contiguous() if contiguous else h, si, S)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token map [B, pn * pn] -> embeddings [B, Cvae, pn, pn]."""
        B, n = idx.shape
        pn = round(n ** 0.5)
        return self.embedding(idx).transpose(1, 2).reshape(B, self.config.Cvae, pn, pn)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Rows z [N, Cvae] -> index of the nearest code, |z|^2 + |e|^2 - 2 z.e summed as the official quantizer
        (addmm into the norms), so that near-ties resolve as they do there."""
        e = self.embedding.weight
        d = torch.sum(z.square(), dim=1, keepdim=True) + torch.sum(e.square(), dim=1, keepdim=False)
        d.addmm_(z, e.T, alpha=-2, beta=1)
        return torch.argmin(d, dim=1)

    def encode(self, f: torch.Tensor, return_fhat: bool = False) -> list[torch.Tensor]:
        """Latent f [B, Cvae, pn_K, pn_K] -> token maps [B, pn_k ** 2], coarse to fine (official
        `f_to_idxBl_or_fhat`); with `return_fhat`, f_hat after each scale instead."""
        B, C, H, W = f.shape
        if (H, W) != (self.patch_nums[-1],) * 2:
            raise ValueError(f"latent is {H}x{W}, the last scale is {self.patch_nums[-1]}")
        f_rest, f_hat, out = f.detach().clone(), torch.zeros_like(f), []
        S = len(self.patch_nums)
        for si, pn in enumerate(self.patch_nums):
            rest = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != S - 1 else f_rest
            idx = self.nearest(rest.permute(0, 2, 3, 1).reshape(-1, C)).view(B, pn * pn)
            h = self.scale_term(si, self.embed(idx), contiguous=True)
            f_hat.add_(h)
            f_rest.sub_(h)
            out.append(f_hat.clone() if return_fhat else idx)
        return out

    def decode_fhat(self, scales: list[torch.Tensor]) -> torch.Tensor:
        """Token maps -> f_hat [B, Cvae, pn_K, pn_K] in float32: the sum of every scale's term (official
        `embed_to_fhat(all_to_max_scale=True, last_one=True)`)."""
        B, side = scales[0].shape[0], self.patch_nums[-1]
        f_hat = torch.zeros(B, self.config.Cvae, side, side, dtype=torch.float32, device=scales[0].device)
        for si, idx in enumerate(scales):
            f_hat.add_(self.scale_term(si, self.embed(idx)))
        return f_hat

    def teacher_forcing_input(self, scales: list[torch.Tensor]) -> torch.Tensor:
        """What the transformer reads for scales 1..K-1 given the true maps: after scale k, f_hat (the sum of the
        terms so far) area-downsampled to scale k+1's grid; [B, L - pn_0 ** 2, Cvae] (official
        `idxBl_to_var_input`). The first scale reads the class token instead. Given only the first k maps, the
        inputs of scales 1..k."""
        B, side, S = scales[0].shape[0], self.patch_nums[-1], len(self.patch_nums)
        f_hat = torch.zeros(B, self.config.Cvae, side, side, dtype=torch.float32, device=scales[0].device)
        inputs = []
        for si in range(min(len(scales), S - 1)):
            f_hat.add_(self.scale_term(si, self.embed(scales[si])))
            pn_next = self.patch_nums[si + 1]
            inputs.append(F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").flatten(2).transpose(1, 2))
        return torch.cat(inputs, dim=1)

    def next_input(self, si: int, f_hat: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Sampling step: add scale si's term (embeddings h [B, Cvae, pn, pn]) to f_hat in place, and return the
        next scale's input, f_hat area-downsampled to its grid (official `get_next_autoregressive_input`)."""
        f_hat.add_(self.scale_term(si, h))
        if si == len(self.patch_nums) - 1:
            return f_hat
        pn = self.patch_nums[si + 1]
        return F.interpolate(f_hat, size=(pn, pn), mode="area")


# --------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------

class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig = VQVAEConfig()):
        super().__init__()
        if config.patch_nums[-1] * config.downsample != config.image_size:
            raise ValueError("patch_nums[-1] must be the latent side")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = MultiScaleQuantizer(config)
        self.quant_conv = nn.Conv2d(config.Cvae, config.Cvae, 3, padding=1)
        self.post_quant_conv = nn.Conv2d(config.Cvae, config.Cvae, 3, padding=1)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def Cvae(self) -> int:
        return self.config.Cvae

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.config.patch_nums

    def img_to_f(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """f_hat -> image in [-1, 1]: the decoder's output clamped, as the official `fhat_to_img`."""
        return self.decoder(self.post_quant_conv(f_hat)).clamp_(-1, 1)

    @torch.no_grad()
    def img_to_idx(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images [B, 3, H, W] in [-1, 1] -> the token maps, coarse to fine (official `img_to_idxBl`)."""
        return self.quantize.encode(self.img_to_f(x))

    @torch.no_grad()
    def idx_to_img(self, scales: list[torch.Tensor]) -> torch.Tensor:
        """Token maps -> images [B, 3, H, W] in [-1, 1] (official `idxBl_to_img(same_shape=True, last_one=True)`)."""
        return self.fhat_to_img(self.quantize.decode_fhat(scales))


# --------------------------------------------------------------------------------------------------------
# The library's entry points: checked inputs, one-line errors
# --------------------------------------------------------------------------------------------------------

def check_scales(scales: list[torch.Tensor], patch_nums: tuple[int, ...], vocab_size: int) -> list[torch.Tensor]:
    """Token maps as int64: one per scale, [B, pn * pn] each, one batch size, codes in [0, vocab_size); else a
    one-line BenchError naming the first map at fault."""
    if not isinstance(scales, (list, tuple)) or len(scales) != len(patch_nums):
        found = len(scales) if isinstance(scales, (list, tuple)) else type(scales).__name__
        raise BenchError(f"expected {len(patch_nums)} token maps (scales {patch_nums}), found {found}")
    B = scales[0].shape[0] if isinstance(scales[0], torch.Tensor) and scales[0].ndim == 2 else None
    out = []
    for si, (idx, pn) in enumerate(zip(scales, patch_nums)):
        if not isinstance(idx, torch.Tensor) or idx.is_floating_point() or idx.is_complex() \
                or idx.dtype == torch.bool or tuple(idx.shape) != (B, pn * pn):
            what = f"{tuple(idx.shape)} {idx.dtype}" if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise BenchError(f"token map {si} must be an integer tensor [B, {pn * pn}] (B = {B}), found {what}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= vocab_size):
            raise BenchError(f"token map {si} holds codes {int(idx.min())}..{int(idx.max())}, outside the "
                             f"vocabulary [0, {vocab_size})")
        out.append(idx.long())
    return out


def check_images(vae: VQVAE, x: torch.Tensor) -> torch.Tensor:
    """Images as the encoder takes them: float [B, 3, S, S] (S = 256 for the release), finite, in [-1, 1] (up to a
    resize's overshoot)."""
    S = vae.config.image_size
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4 or tuple(x.shape[1:]) != (3, S, S):
        what = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise BenchError(f"images must be float [B, 3, {S}, {S}] in [-1, 1], found {what}")
    if not torch.isfinite(x).all():
        raise BenchError("images hold NaN or infinite values")
    # a resize may overshoot [-1, 1] a little; values far outside are pixels in another range (0..255)
    if x.numel() and (float(x.min()) < -1.5 or float(x.max()) > 1.5):
        raise BenchError(f"images must lie in [-1, 1] (x / 127.5 - 1 of uint8 pixels), found "
                         f"{float(x.min()):.3g}..{float(x.max()):.3g}")
    return x


def encode_scales(vae: VQVAE, x: torch.Tensor) -> list[torch.Tensor]:
    """Images float [B, 3, 256, 256] in [-1, 1] -> the 10 token maps [B, pn * pn] (official `img_to_idxBl`)."""
    device = vae.quant_conv.weight.device
    return vae.img_to_idx(check_images(vae, x).to(device=device, dtype=vae.quant_conv.weight.dtype))


def decode_scales(vae: VQVAE, scales: list[torch.Tensor]) -> torch.Tensor:
    """The 10 token maps -> images float [B, 3, 256, 256], clamped to [-1, 1] (official
    `idxBl_to_img(same_shape=True, last_one=True)`)."""
    scales = check_scales(scales, vae.patch_nums, vae.vocab_size)
    device = vae.quant_conv.weight.device
    return vae.idx_to_img([s.to(device) for s in scales])
