"""Sampling VAR's 10 token maps, coarse to fine, with a KV cache and classifier-free guidance: one forward pass
per scale (twice the rows with guidance), ten in all -- where LlamaGen takes 256 passes for 256 tokens.

Semantics of the official `VAR.autoregressive_infer_cfg` (more_smooth=False, the FID setting):
  * rows [cond; null]: the labels, then as many rows of the null class 1000; both run every scale so the null
    rows' cache is complete.
  * guidance ramps with the scale: at scale si of S, t = cfg_scale * si / (S - 1) and
    logits = (1 + t) * cond - t * uncond. Scale 0 is unguided, the last gets 1 + cfg_scale: the official README's
    "cfg 1.5" multiplies the conditional logits by 1.0, 1.17, ..., 2.5 over the 10 scales (see docs/var.md).
    cfg_scale 0 is no guidance (the null rows are then skipped: the result is the same).
  * top-k keeps every logit >= the k-th largest (ties at the threshold survive; k = 1 is greedy up to ties);
    top-p (> 0) then drops the tokens whose cumulative probability, summed from the least likely up, stays
    <= 1 - top_p (the most likely token always stays); 0 = off (the official default, and this one's).
  * no temperature; each token is one draw of torch.multinomial from the softmax of the filtered logits.
  * the next scale reads f_hat (the sum of the upsampled, Phi-refined embeddings so far) area-downsampled to its
    grid, through word_embed, plus its level and position embeddings (official `get_next_autoregressive_input`).

Randomness, and what differs from the official sampler: the official code seeds one torch.Generator per call and
draws every sample's tokens from it, so a sample depends on the batch it was drawn in (its size and its
position). Here each sample owns a generator seeded with its own seed and draws its tokens with the same call the
official code makes for a batch of one (multinomial over its [pn * pn, V] probabilities). So sample i depends only
on (its seed, its label), never on the batch; and a batch of one with seed s reproduces the official
`autoregressive_infer_cfg(B=1, g_seed=s, ...)` token for token on the same device, up to float rounding of the
logits. Batches of more than one sample differ from the official draws; their distribution is the same.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from bench.errors import BenchError
from bench.generator import per_sample_generators, per_sample_seeds
from generators.var.model import VAR, check_labels


def cfg_ramp(cfg_scale: float, num_scales: int) -> list[float]:
    """The guidance weight t of each scale: cfg_scale * si / (num_scales - 1), computed in the official order."""
    return [cfg_scale * (si / (num_scales - 1)) for si in range(num_scales)]


def guide(logits: torch.Tensor, t: float) -> torch.Tensor:
    """[cond; uncond] rows -> (1 + t) cond - t uncond."""
    cond, uncond = logits.chunk(2)
    return (1 + t) * cond - t * uncond


def filter_top_k_top_p(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Filtered copy of logits [..., V] (removed entries -inf) as the official `sample_with_top_k_top_p_`."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), largest=True, sorted=False, dim=-1)[0].amin(-1, keepdim=True)
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if top_p > 0:
        sorted_logits, order = logits.sort(dim=-1, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False
        logits = logits.masked_fill(remove.scatter(-1, order, remove), -torch.inf)
    return logits


def sample_tokens(logits: torch.Tensor, generators: list[torch.Generator], top_k: int = 0,
                  top_p: float = 0.0) -> torch.Tensor:
    """logits [B, l, V] -> tokens [B, l]; row i's draws come from generators[i] alone."""
    probs = filter_top_k_top_p(logits, top_k, top_p).softmax(dim=-1)
    return torch.stack([torch.multinomial(p, num_samples=1, replacement=True, generator=g)[:, 0]
                        for p, g in zip(probs, generators)])


def check_settings(cfg_scale: float, top_k: int, top_p: float) -> None:
    if not (isinstance(cfg_scale, (int, float)) and cfg_scale >= 0 and cfg_scale < float("inf")):
        raise BenchError(f"cfg_scale must be a finite number >= 0 (0 = no guidance), found {cfg_scale!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise BenchError(f"top_k must be an integer >= 0 (0 = every token, 1 = greedy), found {top_k!r}")
    if not (isinstance(top_p, (int, float)) and 0 <= top_p <= 1):
        raise BenchError(f"top_p must be in [0, 1] (0 = off), found {top_p!r}")


def _prepare(var: VAR, labels: torch.Tensor, cfg_scale: float, top_k: int, top_p: float,
             seed: int | torch.Tensor):
    check_settings(cfg_scale, top_k, top_p)
    labels = check_labels(labels, None, var.num_classes).to(var.head.weight.device)
    B = labels.shape[0]
    generators = per_sample_generators(per_sample_seeds(seed, B), labels.device)
    guided = cfg_scale != 0
    rows = torch.cat([labels, torch.full_like(labels, var.num_classes)]) if guided else labels
    return labels, generators, guided, rows


@torch.no_grad()
def generate_scales(var: VAR, labels: torch.Tensor, cfg_scale: float = 1.5, top_k: int = 0, top_p: float = 0.0,
                    seed: int | torch.Tensor = 0, progress: bool = False) -> list[torch.Tensor]:
    """Sample the 10 token maps [B, pn * pn] for labels int64 [B]; decode them with `decode_scales`.

    `seed` is per-sample int64 seeds [B] (what a harness passes) or one int: sample i of this call is then sample
    i of a run seeded `seed` (`bench.generator.per_sample_seeds`). The release's FID setting is cfg_scale 1.5,
    top_k 900, top_p 0.96 (presets.py); the defaults are the official function's (no top-k, no top-p).
    """
    labels, generators, guided, rows = _prepare(var, labels, cfg_scale, top_k, top_p, seed)
    c, quant = var.config, var.vae.quantize
    B, S, side = labels.shape[0], len(c.patch_nums), c.patch_nums[-1]
    ramp = cfg_ramp(cfg_scale, S)
    cond = var.class_emb(rows)
    lvl_pos = var.level_positions()
    x = cond.unsqueeze(1).expand(-1, c.first_l, -1) + var.pos_start.expand(rows.shape[0], c.first_l, -1) \
        + lvl_pos[:, :c.first_l]
    f_hat = torch.zeros(B, c.Cvae, side, side, device=cond.device)  # float32 whatever the model's dtype, as official
    scales = []
    var.setup_cache(rows.shape[0])
    try:
        for si, (begin, end) in enumerate(tqdm(c.begin_ends, desc="scales", disable=not progress, leave=False)):
            logits = var.cached_step(x, cond, begin)
            tokens = sample_tokens(guide(logits, ramp[si]) if guided else logits, generators, top_k, top_p)
            scales.append(tokens)
            pn = c.patch_nums[si]
            h = quant.embedding(tokens).transpose_(1, 2).reshape(B, c.Cvae, pn, pn)
            nxt = quant.next_input(si, f_hat, h)
            if si != S - 1:
                nxt = nxt.view(B, c.Cvae, -1).transpose(1, 2).to(var.word_embed.weight.dtype)
                x = var.word_embed(nxt) + lvl_pos[:, end:c.begin_ends[si + 1][1]]
                x = x.repeat(2, 1, 1) if guided else x
    finally:
        var.clear_cache()
    return scales


@torch.no_grad()
def generate_scales_naive(var: VAR, labels: torch.Tensor, cfg_scale: float = 1.5, top_k: int = 0,
                          top_p: float = 0.0, seed: int | torch.Tensor = 0) -> list[torch.Tensor]:
    """Reference sampler without a cache: each scale reruns the whole prefix by teacher forcing on the maps
    sampled so far (`VAR.logits` under the block-causal mask). Same sampling and randomness as
    `generate_scales`; the tests' independent check of the cached loop."""
    labels, generators, guided, rows = _prepare(var, labels, cfg_scale, top_k, top_p, seed)
    c, quant = var.config, var.vae.quantize
    ramp = cfg_ramp(cfg_scale, len(c.patch_nums))
    scales: list[torch.Tensor] = []
    for si, (begin, end) in enumerate(c.begin_ends):
        x = quant.teacher_forcing_input(scales) if scales else rows.new_zeros(labels.shape[0], 0, c.Cvae).float()
        logits = var.logits(rows, x.repeat(2, 1, 1) if guided else x)[:, begin:end]
        scales.append(sample_tokens(guide(logits, ramp[si]) if guided else logits, generators, top_k, top_p))
    return scales
