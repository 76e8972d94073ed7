"""LlamaGen class-conditional GPT (Sun et al. 2024): a plain Llama decoder over VQ code indices.

One file, every block visible. The parameter names and shapes are those of the official release
(FoundationVision/LlamaGen `autoregressive/models/gpt.py`), so its checkpoints load with strict=True:

    cls_embedding.embedding_table.weight   [num_classes + 1, dim]   (last row: the null class for CFG)
    tok_embeddings.weight                  [vocab_size, dim]
    layers.{i}.attention.wqkv.weight       [(n_head + 2 n_kv_head) head_dim, dim]   (fused q, k, v)
    layers.{i}.attention.wo.weight         [dim, dim]
    layers.{i}.feed_forward.w1/w3.weight   [hidden, dim]   (SwiGLU gate / up)
    layers.{i}.feed_forward.w2.weight      [dim, hidden]   (down)
    layers.{i}.attention_norm.weight, layers.{i}.ffn_norm.weight, norm.weight   [dim]  (RMSNorm)
    output.weight                          [vocab_size, dim]

The sequence is [class token, image token 0, ..., image token N-1]; the logits at position p predict image
token p. Two entry points share the same blocks:

* `forward(labels, tokens)` -- teacher forcing over a whole sequence (training, scoring), causal SDPA.
* `prefill(labels)` / `decode_step(tokens, input_pos)` -- one position at a time against a static,
  preallocated KV cache (gpt-fast style), for sampling; see generate.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def find_multiple(n: int, k: int) -> int:
    """Smallest multiple of k that is >= n (the SwiGLU hidden size and cache length are rounded up so)."""
    return n if n % k == 0 else n + k - n % k


@dataclass
class GPTConfig:
    dim: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None  # None: plain multi-head attention (every released model)
    multiple_of: int = 256  # SwiGLU hidden size is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    token_dropout_p: float = 0.1
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.1
    ffn_dropout_p: float = 0.1
    drop_path_rate: float = 0.0
    num_classes: int = 1000
    vocab_size: int = 16384
    cls_token_num: int = 1
    block_size: int = 256  # number of image tokens: (image_size / downsample) ** 2

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def ffn_hidden(self) -> int:
        """Llama's SwiGLU width: 2/3 of 4*dim (so the 3-matrix FFN costs what a 2-matrix 4x FFN does),
        optionally scaled, then rounded up to `multiple_of` -- e.g. GPT-B: 2048, GPT-XL: 3584."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return find_multiple(hidden, self.multiple_of)

    @property
    def grid_size(self) -> int:
        return math.isqrt(self.block_size)


# The official model family (layers, heads, width); parameter counts are the paper's.
GPT_CONFIGS: dict[str, dict[str, int]] = {
    "GPT-B": dict(n_layer=12, n_head=12, dim=768),  # 111M
    "GPT-L": dict(n_layer=24, n_head=16, dim=1024),  # 343M
    "GPT-XL": dict(n_layer=36, n_head=20, dim=1280),  # 775M
    "GPT-XXL": dict(n_layer=48, n_head=24, dim=1536),  # 1.4B
    "GPT-XXXL": dict(n_layer=48, n_head=40, dim=2560),  # 3.9B
    "GPT-1B": dict(n_layer=22, n_head=32, dim=2048),  # 1.2B
    "GPT-3B": dict(n_layer=24, n_head=32, dim=3200),  # 3.1B
    "GPT-7B": dict(n_layer=32, n_head=32, dim=4096),  # 6.6B
    # The embedded demo's model (not an official one): 3.7M parameters over VQ-demo's 512 codes, 8 classes
    # (the demo's photographs). Its dataset-dependent sizes are defaults a code dataset's own replace.
    "GPT-demo": dict(n_layer=4, n_head=4, dim=256, num_classes=8, vocab_size=512, block_size=64),
}


def gpt_config(model: str, **overrides) -> GPTConfig:
    """The config of a named model, e.g. gpt_config("GPT-B", block_size=576); `overrides` replace any field."""
    if model not in GPT_CONFIGS:
        raise ValueError(f"unknown GPT model {model!r}; known: {', '.join(GPT_CONFIGS)}")
    return GPTConfig(**{**GPT_CONFIGS[model], **overrides})


# --------------------------------------------------------------------------------------------------------
# 2D rotary position embedding
# --------------------------------------------------------------------------------------------------------

def precompute_rope_2d(grid_size: int, head_dim: int, base: float, cls_token_num: int) -> torch.Tensor:
    """(cos, sin) per position and rotation pair: float32 [cls_token_num + grid_size**2, head_dim // 2, 2].

    Image token p sits at row p // grid, column p % grid (raster order). The head_dim//2 rotation pairs
    are split in two halves: the first rotates by the row, the second by the column, each half with the
    frequencies base^(-2k/(head_dim/2)), k < head_dim/4.

    The class token(s) get cos = sin = 0 -- as in the official implementation, which zero-fills those
    rows -- so their queries and keys are zeroed after rotation. This is not a no-op rotation (that would
    be cos 1 / sin 0); it is what the released checkpoints were trained with, so it is reproduced here.
    """
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(0, half, 2, device="cpu")[: half // 2].float() / half))  # [head_dim/4]
    angles = torch.outer(torch.arange(grid_size, device="cpu").float(), freqs)  # [grid, head_dim // 4]
    rows = angles[:, None, :].expand(grid_size, grid_size, -1)
    cols = angles[None, :, :].expand(grid_size, grid_size, -1)
    grid = torch.cat([rows, cols], dim=-1).reshape(grid_size * grid_size, -1)  # [grid**2, head_dim // 2]
    rope = torch.stack([torch.cos(grid), torch.sin(grid)], dim=-1)
    return torch.cat([torch.zeros(cls_token_num, rope.shape[1], 2, device="cpu"), rope])


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2k], x[2k+1]) of x [B, T, H, D] by rope [T, D // 2, 2], in float32."""
    xp = x.float().reshape(*x.shape[:-1], -1, 2)
    cos = rope[None, :, None, :, 0]
    sin = rope[None, :, None, :, 1]
    out = torch.stack([xp[..., 0] * cos - xp[..., 1] * sin, xp[..., 1] * cos + xp[..., 0] * sin], dim=-1)
    return out.flatten(3).type_as(x)


# --------------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 even for bf16/fp16 weights (as the official model), then scale.
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class KVCache(nn.Module):
    """Static preallocated keys/values [B, kv_heads, max_seq, head_dim], written in place at `input_pos`.

    Non-persistent buffers: a model saved after sampling keeps the official state-dict layout.
    """

    def __init__(self, batch_size: int, max_seq: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str | None):
        super().__init__()
        shape = (batch_size, kv_heads, max_seq, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        self.k[:, :, input_pos] = k
        self.v[:, :, input_pos] = v
        return self.k, self.v


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One query per row against the whole static cache, written out: softmax(q k^T / sqrt(d), masked) v.

    For a single query the CPU SDPA kernels are slow (flash attention in bf16 is ~5x slower than this; fp32
    ~1.4x), and decode steps are what sampling spends its time on. The softmax runs in float32.
    """
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(~mask, float("-inf"))
    return scores.float().softmax(dim=-1).to(q.dtype) @ v


class Attention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.n_head, self.kv_heads, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.wqkv = nn.Linear(config.dim, (config.n_head + 2 * config.kv_heads) * config.head_dim, bias=False)
        self.wo = nn.Linear(config.dim, config.dim, bias=False)
        self.resid_dropout = nn.Dropout(config.resid_dropout_p)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, rope: torch.Tensor, input_pos: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Causal self-attention. Without `input_pos`: the whole sequence at once (is_causal). With it:
        the positions `input_pos` of a cached decode, attending to the cache under the boolean `mask`."""
        B, T, C = x.shape
        kv_dim = self.kv_heads * self.head_dim
        q, k, v = self.wqkv(x).split([C, kv_dim, kv_dim], dim=-1)
        q = apply_rope(q.view(B, T, self.n_head, self.head_dim), rope).transpose(1, 2)
        k = apply_rope(k.view(B, T, self.kv_heads, self.head_dim), rope).transpose(1, 2)
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        if input_pos is not None:
            k, v = self.kv_cache.update(input_pos, k, v)
        if self.kv_heads != self.n_head:
            k = k.repeat_interleave(self.n_head // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.n_head // self.kv_heads, dim=1)
        if input_pos is not None and T == 1:
            y = decode_attention(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None,
                dropout_p=self.config.attn_dropout_p if self.training else 0.0)
        return self.resid_dropout(self.wo(y.transpose(1, 2).reshape(B, T, C)))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.ffn_hidden, bias=False)
        self.w3 = nn.Linear(config.dim, config.ffn_hidden, bias=False)
        self.w2 = nn.Linear(config.ffn_hidden, config.dim, bias=False)
        self.ffn_dropout = nn.Dropout(config.ffn_dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop a residual branch for whole samples with probability p (training only)."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class TransformerBlock(nn.Module):
    def __init__(self, config: GPTConfig, drop_path_p: float):
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.drop_path_p = drop_path_p

    def forward(self, x: torch.Tensor, rope: torch.Tensor, input_pos: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        h = x + drop_path(self.attention(self.attention_norm(x), rope, input_pos, mask), self.drop_path_p,
                          self.training)
        return h + drop_path(self.feed_forward(self.ffn_norm(h)), self.drop_path_p, self.training)


class ClassEmbedding(nn.Module):
    """Class label -> the conditioning token. Row `num_classes` is the null class used for CFG; dropping
    labels during training is the caller's job (replace them with `num_classes`)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels).unsqueeze(1)  # [B, 1, dim]


# --------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------

class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.grid_size ** 2 != config.block_size:
            raise ValueError(f"block_size must be a square number of tokens, got {config.block_size}")
        if config.cls_token_num != 1:
            raise ValueError("class-conditional LlamaGen uses exactly one class token (cls_token_num=1)")
        self.config = config
        self.cls_embedding = ClassEmbedding(config.num_classes, config.dim)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.tok_dropout = nn.Dropout(config.token_dropout_p)
        rates = [config.drop_path_rate * i / max(config.n_layer - 1, 1) for i in range(config.n_layer)]
        self.layers = nn.ModuleList(TransformerBlock(config, p) for p in rates)
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        # A plain attribute, not a buffer: `model.to(torch.bfloat16)` must leave the rotations in float32.
        self.rope = precompute_rope_2d(config.grid_size, config.head_dim, config.rope_base, config.cls_token_num)
        self.register_buffer("causal_mask", None, persistent=False)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Official init: N(0, 0.02) for linear and embedding weights, zero output head (uniform logits)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=self.config.initializer_range)
        nn.init.zeros_(self.output.weight)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.output(self.norm(h)).float()

    def forward(self, labels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: labels [B] (num_classes = null class), tokens [B, T] (T <= block_size) ->
        float32 logits [B, T, vocab], where row i is the distribution of tokens[:, i] given the label and
        tokens[:, :i]. The input is [class token, tokens[:, :-1]]; the last token is never read."""
        T = tokens.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"{T} tokens exceed block_size {self.config.block_size}")
        h = torch.cat([self.cls_embedding(labels), self.tok_embeddings(tokens[:, :-1])], dim=1)
        h = self.tok_dropout(h)
        self.rope = self.rope.to(h.device)
        rope = self.rope[:T]
        for layer in self.layers:
            h = layer(h, rope)
        return self._head(h)

    @torch.no_grad()
    def teacher_forced_logits(self, labels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """`forward` without gradients (dropout follows train/eval mode, so call on an eval model)."""
        return self(labels, tokens)

    # ---- cached decoding (gpt-fast style) ----------------------------------------------------------------

    def setup_kv_cache(self, batch_size: int, dtype: torch.dtype | None = None) -> None:
        """Allocate a static cache for `batch_size` rows and the full sequence (cls + block_size tokens,
        rounded up to a multiple of 8). Reallocated only when the batch size or dtype changes."""
        dtype = dtype or self.tok_embeddings.weight.dtype
        device = self.tok_embeddings.weight.device
        cache = self.layers[0].attention.kv_cache
        if cache is not None and cache.k.shape[0] == batch_size and cache.k.dtype == dtype \
                and cache.k.device == device:
            return
        max_seq = find_multiple(self.config.cls_token_num + self.config.block_size, 8)
        for layer in self.layers:
            layer.attention.kv_cache = KVCache(batch_size, max_seq, self.config.kv_heads, self.config.head_dim,
                                               dtype, device)
        self.causal_mask = torch.tril(torch.ones(max_seq, max_seq, dtype=torch.bool, device=device))
        self.rope = self.rope.to(device)

    def _forward_cached(self, h: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        mask = self.causal_mask[None, None, input_pos]  # [1, 1, T, max_seq]: row p sees positions <= p
        rope = self.rope[input_pos]
        for layer in self.layers:
            h = layer(h, rope, input_pos, mask)
        return self._head(h)

    def prefill(self, labels: torch.Tensor) -> torch.Tensor:
        """Write the class token at position 0 into the cache; returns logits [B, vocab] of image token 0."""
        input_pos = torch.zeros(1, dtype=torch.long, device=labels.device)
        return self._forward_cached(self.cls_embedding(labels), input_pos)[:, -1]

    def decode_step(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """Feed image tokens [B, 1] at sequence position input_pos [1] (= token index + 1); returns the
        logits [B, vocab] of the next image token. Static shapes: this is the function to torch.compile."""
        return self._forward_cached(self.tok_embeddings(tokens), input_pos)[:, -1]
