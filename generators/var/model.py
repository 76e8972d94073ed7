"""The VAR transformer (Tian et al. 2024): a GPT-2-style decoder with AdaLN class conditioning that predicts a
whole token map per step, coarse to fine ("next-scale prediction").

One file, every block visible. Parameter names and shapes follow the official release (FoundationVision/VAR
`models/var.py`, `basic_var.py`, built by `build_vae_var`: width 64 * depth, heads = depth, shared_aln False,
attn_l2_norm True), so `var_d16.pth` ... `var_d30.pth` load with strict=True:

    pos_start [1, 1, C], pos_1LC [1, 680, C]        learned start-token and absolute position embeddings
    lvl_embed.weight [10, C]                        one embedding per scale ("level")
    lvl_1L [1, 680] (int64), attn_bias_for_masking [1, 1, 680, 680]   buffers: each token's scale, and the block-
                                                    causal mask (0 where the key's scale <= the query's, else -inf)
    word_embed.{weight,bias}                        Cvae (32) -> C: the VQVAE feature map read at each scale
    class_emb.weight [1001, C]                      row 1000: the null class of classifier-free guidance
    blocks.{i}.attn.mat_qkv.weight [3C, C]          fused q/k/v without bias; q_bias, v_bias [C] and the buffer
    blocks.{i}.attn.{q_bias,v_bias,zero_k_bias}     zero_k_bias are its bias (keys have none)
    blocks.{i}.attn.scale_mul_1H11 [1, H, 1, 1]     learned per-head log temperature of the l2-normalised attention
    blocks.{i}.attn.proj.{weight,bias}
    blocks.{i}.ffn.fc{1,2}.{weight,bias}            MLP 4C, GELU (tanh approximation)
    blocks.{i}.ada_lin.1.{weight,bias} [6C, C]      AdaLN from the class embedding: gamma, scale, shift x (attn, ffn)
    head_nm.ada_lin.1.{weight,bias} [2C, C]         AdaLN before the head: scale, shift
    head.{weight,bias} [4096, C]

The input sequence is 680 positions: the first is the class embedding plus pos_start (it predicts the 1x1 map);
then, for scales 1..9, the map f_hat-so-far area-downsampled to that scale's grid (word_embed of 32 channels per
position). Every position also adds lvl_embed of its scale and pos_1LC. Attention is block-causal: a token sees
every token of its own and the coarser scales. Logits at scale k's positions are the distribution of scale k's
tokens, drawn independently (in parallel) given the coarser scales.

Attention (attn_l2_norm): q and k are l2-normalised per head, q is multiplied by exp(min(scale_mul_1H11, ln 100))
and the softmax temperature is 1 (no 1/sqrt(d)). Class dropout (cond_drop_rate 0.1, to train the null class)
happens only in training mode here; the official forward draws it in eval mode too, so the official code's
teacher-forced logits are only comparable with cond_drop_rate set to 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.errors import BenchError
from generators.llamagen.gpt import KVCache
from generators.var.vqvae import PATCH_NUMS, VQVAE, check_scales


#: the clamp of the per-head log temperature: ln 100, computed through float32 as the official code does
MAX_SCALE_MUL = torch.log(torch.tensor(100, device="cpu")).item()


@dataclass(frozen=True)
class VARConfig:
    depth: int = 16
    embed_dim: int = 0  # 0: 64 * depth (every release)
    num_heads: int = 0  # 0: depth (head width 64)
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    attn_l2_norm: bool = True  # the released files (their blocks carry scale_mul_1H11)
    cond_drop_rate: float = 0.1
    num_classes: int = 1000
    vocab_size: int = 4096
    Cvae: int = 32
    patch_nums: tuple[int, ...] = PATCH_NUMS

    def __post_init__(self):
        if not self.embed_dim:
            object.__setattr__(self, "embed_dim", 64 * self.depth)
        if not self.num_heads:
            object.__setattr__(self, "num_heads", self.depth)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_tokens(self) -> int:
        """L: 680 for the released patch_nums."""
        return sum(pn * pn for pn in self.patch_nums)

    @property
    def first_l(self) -> int:
        return self.patch_nums[0] ** 2

    @property
    def begin_ends(self) -> list[tuple[int, int]]:
        """[begin, end) of each scale's positions in the 680."""
        ends = [0]
        for pn in self.patch_nums:
            ends.append(ends[-1] + pn * pn)
        return list(zip(ends[:-1], ends[1:]))


#: the released 256 px models; parameters as the paper counts them (310M, 600M, 1.0B, 2.0B)
VAR_CONFIGS: dict[str, dict] = {
    "VAR-d16": dict(depth=16),
    "VAR-d20": dict(depth=20),
    "VAR-d24": dict(depth=24),
    "VAR-d30": dict(depth=30),
}


def var_config(depth: int, **overrides) -> VARConfig:
    """The released architecture of a depth (16, 20, 24, 30) or, with `overrides`, a variant of it (tests)."""
    name = f"VAR-d{depth}"
    if name not in VAR_CONFIGS and not overrides:
        raise ValueError(f"no released VAR has depth {depth}; known: {', '.join(VAR_CONFIGS)}")
    return VARConfig(**{**VAR_CONFIGS.get(name, dict(depth=depth)), **overrides})


# --------------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------------

class SelfAttention(nn.Module):
    def __init__(self, config: VARConfig):
        super().__init__()
        C, H = config.embed_dim, config.num_heads
        self.num_heads, self.head_dim = H, config.head_dim
        self.l2_norm = config.attn_l2_norm
        if self.l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, H, 1, 1), 4.0).log())
            self.max_scale_mul = MAX_SCALE_MUL
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(C))
        self.v_bias = nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))
        self.proj = nn.Linear(C, C)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None, start: int | None = None) -> torch.Tensor:
        """Teacher forcing: `attn_bias` the block-causal mask. Cached sampling: `start` is the first position of
        x in the sequence; its keys/values join the cache and x attends to everything cached so far."""
        B, L, C = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, head_dim]
        if self.l2_norm:
            scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            q = F.normalize(q, dim=-1).mul(scale_mul)
            k = F.normalize(k, dim=-1)
        if start is not None:
            end = start + L
            self.kv_cache.k[:, :, start:end] = k
            self.kv_cache.v[:, :, start:end] = v
            k, v = self.kv_cache.k[:, :, :end], self.kv_cache.v[:, :, :end]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(B, L, C))


class FFN(nn.Module):
    def __init__(self, config: VARConfig):
        super().__init__()
        hidden = round(config.embed_dim * config.mlp_ratio)
        self.fc1 = nn.Linear(config.embed_dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, config.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class AdaLNSelfAttn(nn.Module):
    """Pre-norm block whose LayerNorms take scale and shift, and whose branches take a gain, from the class."""

    def __init__(self, config: VARConfig):
        super().__init__()
        C = config.embed_dim
        self.C = C
        self.attn = SelfAttention(config)
        self.ffn = FFN(config)
        self.ln_wo_grad = nn.LayerNorm(C, eps=config.norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, attn_bias: torch.Tensor | None,
                start: int | None = None) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond).view(-1, 1, 6, self.C).unbind(2)
        x = x + self.attn(self.ln_wo_grad(x).mul(scale1.add(1)).add_(shift1), attn_bias, start).mul_(gamma1)
        return x + self.ffn(self.ln_wo_grad(x).mul(scale2.add(1)).add_(shift2)).mul(gamma2)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, config: VARConfig):
        super().__init__()
        self.C = config.embed_dim
        self.ln_wo_grad = nn.LayerNorm(self.C, eps=config.norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(self.C, 2 * self.C))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x).mul(scale.add(1)).add_(shift)


def scale_masks(patch_nums: tuple[int, ...], device: torch.device | str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(lvl_1L, attn_bias_for_masking): each position's scale index [1, L] (int64), and the additive mask
    [1, 1, L, L] that lets position i see position j iff scale(j) <= scale(i)."""
    d = torch.cat([torch.full((pn * pn,), i, device=device) for i, pn in enumerate(patch_nums)]).view(1, -1, 1)
    dT = d.transpose(1, 2)
    bias = torch.where(d >= dT, 0.0, -torch.inf).reshape(1, 1, d.shape[1], d.shape[1])
    return dT[:, 0].contiguous(), bias.contiguous()


# --------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------

class VAR(nn.Module):
    def __init__(self, config: VARConfig, vae: VQVAE | None = None):
        super().__init__()
        self.config = config
        C, L, S = config.embed_dim, config.num_tokens, len(config.patch_nums)
        self.pos_start = nn.Parameter(torch.empty(1, config.first_l, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, L, C))
        lvl_1L, attn_bias = scale_masks(config.patch_nums)
        self.register_buffer("lvl_1L", lvl_1L)
        self.register_buffer("attn_bias_for_masking", attn_bias)
        self.word_embed = nn.Linear(config.Cvae, C)
        self.class_emb = nn.Embedding(config.num_classes + 1, C)
        self.lvl_embed = nn.Embedding(S, C)
        self.blocks = nn.ModuleList(AdaLNSelfAttn(config) for _ in range(config.depth))
        self.head_nm = AdaLNBeforeHead(config)
        self.head = nn.Linear(C, config.vocab_size)
        std = math.sqrt(1 / C / 3)  # the official constructor's init of the embeddings (checkpoints replace it)
        for p in (self.pos_start, self.pos_1LC, self.class_emb.weight, self.lvl_embed.weight):
            nn.init.trunc_normal_(p.data, std=std)
        # The tokenizer is not a submodule: its weights are not VAR's (the official code holds it the same way).
        self.vae_ref: tuple[VQVAE, ...] = ()
        if vae is not None:
            self.attach_vae(vae)

    # ---- the tokenizer ------------------------------------------------------------------------------------

    def attach_vae(self, vae: VQVAE) -> None:
        """Use `vae`'s codebook and Phi convs for teacher forcing and sampling; it must match the vocabulary,
        feature width and scales this transformer was built for."""
        c = self.config
        if (vae.vocab_size, vae.Cvae, tuple(vae.patch_nums)) != (c.vocab_size, c.Cvae, tuple(c.patch_nums)):
            raise ValueError(f"the VQVAE (vocab {vae.vocab_size}, Cvae {vae.Cvae}, scales {vae.patch_nums}) does not "
                             f"fit this VAR (vocab {c.vocab_size}, Cvae {c.Cvae}, scales {c.patch_nums})")
        self.vae_ref = (vae,)

    @property
    def vae(self) -> VQVAE:
        if not self.vae_ref:
            raise RuntimeError("no VQVAE attached: VAR(config, vae=...) or attach_vae(vae)")
        return self.vae_ref[0]

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def reset_buffers(self) -> None:
        """Recompute the scale index and the mask (after construction on the meta device)."""
        lvl_1L, attn_bias = scale_masks(self.config.patch_nums, device=self.lvl_1L.device)
        self.lvl_1L = lvl_1L
        self.attn_bias_for_masking = attn_bias.to(self.attn_bias_for_masking.dtype)
        for block in self.blocks:
            block.attn.zero_k_bias = torch.zeros_like(block.attn.zero_k_bias)

    # ---- teacher forcing ----------------------------------------------------------------------------------

    def logits(self, labels: torch.Tensor, x_wo_first: torch.Tensor) -> torch.Tensor:
        """labels [B] (num_classes = the null class) and the inputs of scales 1..k [B, n, Cvae] -> float32 logits
        [B, first_l + n, V] of scales 0..k (n = 0 gives the first scale's alone). No class dropout."""
        c = self.config
        B, end = labels.shape[0], c.first_l + x_wo_first.shape[1]
        sos = cond = self.class_emb(labels)
        sos = sos.unsqueeze(1).expand(B, c.first_l, -1) + self.pos_start.expand(B, c.first_l, -1)
        x = torch.cat((sos, self.word_embed(x_wo_first.float())), dim=1)
        x = x + (self.lvl_embed(self.lvl_1L[:, :end].expand(B, -1)) + self.pos_1LC[:, :end])
        attn_bias = self.attn_bias_for_masking[:, :, :end, :end]
        for block in self.blocks:
            x = block(x, cond, attn_bias)
        return self.head_logits(x, cond)

    def forward(self, labels: torch.Tensor, x_wo_first: torch.Tensor) -> torch.Tensor:
        """Training-time forward: `logits` with class dropout (labels -> the null class, probability
        cond_drop_rate) when the model is in training mode."""
        if self.training and self.config.cond_drop_rate > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.config.cond_drop_rate
            labels = torch.where(drop, self.config.num_classes, labels)
        return self.logits(labels, x_wo_first)

    @torch.no_grad()
    def teacher_forced_logits(self, labels: torch.Tensor, scales: list[torch.Tensor]) -> torch.Tensor:
        """The logits [B, 680, V] of every scale given the true coarser ones (official `forward` on
        `idxBl_to_var_input(scales)`), without class dropout."""
        scales = check_scales(scales, self.config.patch_nums, self.config.vocab_size)
        labels = check_labels(labels, scales[0].shape[0], self.config.num_classes, allow_null=True)
        device = self.head.weight.device
        return self.logits(labels.to(device), self.vae.quantize.teacher_forcing_input([s.to(device) for s in scales]))

    def head_logits(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_nm(h.float(), cond).float()).float()

    # ---- cached sampling (generate.py) ---------------------------------------------------------------------

    def setup_cache(self, rows: int, dtype: torch.dtype | None = None) -> None:
        """A static cache of keys/values for `rows` sequences of all 680 positions, per block."""
        c, weight = self.config, self.head.weight
        for block in self.blocks:
            block.attn.kv_cache = KVCache(rows, c.num_tokens, c.num_heads, c.head_dim, dtype or weight.dtype,
                                          weight.device)

    def clear_cache(self) -> None:
        for block in self.blocks:
            block.attn.kv_cache = None

    def level_positions(self) -> torch.Tensor:
        """lvl_embed(scale of each position) + pos_1LC: [1, 680, C], added to every input."""
        return self.lvl_embed(self.lvl_1L) + self.pos_1LC

    def cached_step(self, x: torch.Tensor, cond: torch.Tensor, start: int) -> torch.Tensor:
        """One scale: its input x [rows, l, C] (already embedded) at positions start..start+l -> logits
        [rows, l, V]. Its keys/values are cached for the finer scales."""
        for block in self.blocks:
            x = block(x, cond, None, start)
        return self.head_logits(x, cond)


def check_labels(labels: torch.Tensor | list[int], n: int | None, num_classes: int,
                 allow_null: bool = False) -> torch.Tensor:
    """Class labels as int64 [B] in [0, num_classes) (or num_classes, the null class, where `allow_null`), or a
    one-line BenchError. A list of ints is taken as such a tensor."""
    if isinstance(labels, (list, tuple)) and all(isinstance(y, int) and not isinstance(y, bool) for y in labels):
        labels = torch.tensor(labels, dtype=torch.long)
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point() \
            or labels.is_complex() or labels.dtype == torch.bool:
        raise BenchError(f"labels must be an integer tensor [B], found "
                         f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}"
                         f"{f' {labels.dtype}' if isinstance(labels, torch.Tensor) else ''}")
    if n is not None and labels.shape[0] != n:
        raise BenchError(f"{labels.shape[0]} labels for {n} samples")
    top = num_classes + 1 if allow_null else num_classes
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= top):
        raise BenchError(f"labels must lie in [0, {top}), found {int(labels.min())}..{int(labels.max())}")
    return labels.long()
