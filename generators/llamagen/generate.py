"""Sampling image tokens from a LlamaGen GPT: batched classifier-free guidance, a static KV cache and a
decode loop that fits on one screen (gpt-fast style), with per-sample reproducible randomness.

Semantics follow the official `autoregressive/models/generate.py`:
  * CFG: conditional rows and null-class rows (label = num_classes) run as one batch [cond; null];
    logits = uncond + (cond - uncond) * cfg_scale. (The official code batches the null rows only when
    cfg_scale > 1; here any cfg_scale != 1 is applied as written, and 1 means no null rows.)
  * cfg_interval: the first token always uses CFG; decode step i (which samples token i + 1) uses it
    while i <= cfg_interval; -1 means every token. The null rows keep running after the interval so
    the cache and shapes stay static.
  * temperature: logits / max(temperature, 1e-5); then top-k (keep logits >= the k-th largest, so ties
    at the threshold survive), then top-p (drop tokens once the cumulative probability of the tokens
    sorted above them already exceeds top_p; the most likely token always stays). top_k = 1 is greedy.

Determinism: each sample owns a torch.Generator seeded with its own seed, and every random draw of row i
comes from that generator (Gumbel-max: argmax(log p + G), G = -log(-log U), which samples exactly from p).
So sample i depends only on its seed and label -- never on batch size, batch order or process count. The
CPU and CUDA generators produce different streams, so the same seed gives different images on each.
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from bench.generator import per_sample_generators, per_sample_seeds
from generators.llamagen.gpt import GPT


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then top-p (nucleus) filtering of logits [B, V]: removed entries become -inf."""
    if top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum > top_p
        remove[:, 1:] = remove[:, :-1].clone()  # shift right: keep the token that crosses top_p
        remove[:, 0] = False
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return logits


def sample_from_logits(logits: torch.Tensor, generators: list[torch.Generator], temperature: float = 1.0,
                       top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """One token per row of float logits [B, V], row i's noise drawn from generators[i] only."""
    logits = logits.float() / max(temperature, 1e-5)
    if top_k > 0 or top_p < 1.0:
        logits = filter_logits(logits, top_k, top_p)
    uniform = torch.stack([torch.rand(logits.shape[-1], generator=g, device=logits.device) for g in generators])
    gumbel = -torch.log(-torch.log(uniform))
    return torch.argmax(logits.log_softmax(-1) + gumbel, dim=-1)


def _decode_fn(gpt: GPT, compile: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The one-token step, compiled once per model when asked (static shapes: [B, 1] at one position)."""
    if not compile:
        return gpt.decode_step
    if getattr(gpt, "_compiled_decode_step", None) is None:
        mode = "reduce-overhead" if gpt.output.weight.is_cuda else None
        gpt._compiled_decode_step = torch.compile(gpt.decode_step, mode=mode, fullgraph=True, dynamic=False)
    return gpt._compiled_decode_step


@torch.no_grad()
def generate_tokens(gpt: GPT, labels: torch.Tensor, cfg_scale: float = 1.0, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, cfg_interval: float = -1, seed: int | torch.Tensor = 0,
                    compile: bool = False, progress: bool = False) -> torch.Tensor:
    """Sample block_size image tokens per label: labels int64 [B] -> LongTensor [B, block_size].

    `seed` is either per-sample int64 seeds [B] (what a harness passes) or one int, in which case sample i
    of this call is sample i of a run seeded `seed` (`bench.generator.per_sample_seeds`).
    """
    device = gpt.output.weight.device
    labels = labels.to(device=device, dtype=torch.long)
    B, N = labels.shape[0], gpt.config.block_size
    generators = per_sample_generators(per_sample_seeds(seed, B), device)
    guided = cfg_scale != 1.0
    rows = torch.cat([labels, torch.full_like(labels, gpt.num_classes)]) if guided else labels
    gpt.setup_kv_cache(rows.shape[0])
    step = _decode_fn(gpt, compile)

    def pick(logits: torch.Tensor, use_cfg: bool) -> torch.Tensor:
        if guided:
            cond, uncond = logits.split(B)
            logits = uncond + (cond - uncond) * cfg_scale if use_cfg else cond
        return sample_from_logits(logits, generators, temperature, top_k, top_p)

    tokens = torch.empty(B, N, dtype=torch.long, device=device)
    tokens[:, 0] = pick(gpt.prefill(rows), use_cfg=True)
    for t in tqdm(range(1, N), desc="tokens", disable=not progress, leave=False):
        prev = tokens[:, t - 1:t]
        logits = step(torch.cat([prev, prev]) if guided else prev, torch.tensor([t], device=device))
        tokens[:, t] = pick(logits, use_cfg=cfg_interval <= -1 or t - 1 <= cfg_interval)
    return tokens


@torch.no_grad()
def generate_tokens_naive(gpt: GPT, labels: torch.Tensor, cfg_scale: float = 1.0, temperature: float = 1.0,
                          top_k: int = 0, top_p: float = 1.0, cfg_interval: float = -1,
                          seed: int | torch.Tensor = 0) -> torch.Tensor:
    """Reference decoder without a cache: recomputes the whole prefix with teacher forcing at every step.
    Same sampling and randomness as `generate_tokens`, quadratic cost; the benchmark's baseline and the
    tests' independent check of the cached loop."""
    device = gpt.output.weight.device
    labels = labels.to(device=device, dtype=torch.long)
    B, N = labels.shape[0], gpt.config.block_size
    generators = per_sample_generators(per_sample_seeds(seed, B), device)
    guided = cfg_scale != 1.0
    rows = torch.cat([labels, torch.full_like(labels, gpt.num_classes)]) if guided else labels
    tokens = torch.zeros(B, N, dtype=torch.long, device=device)
    for t in range(N):
        # forward() drops the last input token, so pass one placeholder after the prefix.
        prefix = torch.cat([tokens[:, :t], tokens[:, :1]], dim=1)
        logits = gpt(rows, torch.cat([prefix, prefix]) if guided else prefix)[:, t]
        if guided:
            cond, uncond = logits.split(B)
            use_cfg = t == 0 or cfg_interval <= -1 or t - 1 <= cfg_interval
            logits = uncond + (cond - uncond) * cfg_scale if use_cfg else cond
        tokens[:, t] = sample_from_logits(logits, generators, temperature, top_k, top_p)
    return tokens
