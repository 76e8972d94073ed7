"""Loading LlamaGen checkpoints: the containers the official scripts accept, strict key/shape checking, and
the public `load_vq` / `load_gpt`.

Containers (as in the official `sample_c2i_ddp.py`, which tries them in this order):
  * `{"model": state_dict, ...}`      DDP training checkpoints (also the VQ tokenizers)
  * `{"module": state_dict, ...}`     DeepSpeed
  * `{"state_dict": state_dict, ...}`
  * a bare state dict                 FSDP-consolidated checkpoints (the official `--from-fsdp`: XXL, 3B)
Beyond the official script, `_orig_mod.` (torch.compile) and `module.` (DDP wrapper) prefixes are stripped,
so checkpoints saved from wrapped models load too, and keys that hold no weights (`freqs_cis`, KV caches,
masks, which older code versions registered as buffers) are ignored. Everything else must match exactly:
the official script loads with strict=False, which silently ignores a wrong file; here a foreign or mis-sized
checkpoint is a `BenchError` listing what was expected and what was found.

Files are read with `torch.load(weights_only=True)`. Training checkpoints also pickle their
`argparse.Namespace` of arguments; that one plain-data class is allowed, nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from bench.checkpoint import find_state_dict, load_torch_file
from bench.errors import BenchError
from generators.llamagen.gpt import GPT, GPT_CONFIGS, gpt_config
from generators.llamagen.vq import VQ_CONFIGS, VQModel, vq_config

#: containers a checkpoint may wrap its weights in: the official c2i releases use "model"
CONTAINER_KEYS = ("model", "module", "state_dict")
#: buffers the official checkpoints carry that are not weights (recomputed at load)
_NON_WEIGHT_SUFFIXES = ("freqs_cis", "kv_cache.k_cache", "kv_cache.v_cache", "kv_cache.k", "kv_cache.v",
                        "causal_mask")
_EXAMPLES = 5


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint file in any accepted container, prefixes stripped, non-weights dropped."""
    state = find_state_dict(load_torch_file(path, "LlamaGen checkpoint"), CONTAINER_KEYS, path)
    return {k: v for k, v in state.items() if not k.endswith(_NON_WEIGHT_SUFFIXES)}


def _examples(items: list[str]) -> str:
    shown = ", ".join(items[:_EXAMPLES])
    return f"[{shown}{', ...' if len(items) > _EXAMPLES else ''}] ({len(items)} in all)"


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], what: str, optional: tuple[str, ...] = ()) -> None:
    """Copy `state` into `model`, or raise a `BenchError` naming missing, unexpected and mis-shaped keys.

    `optional` keys may be absent (they keep the model's values): used only for training-time bookkeeping.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [f"{k}: expected {tuple(expected[k].shape)}, found {tuple(state[k].shape)}"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mis_shaped:
        lines = [f"the checkpoint does not fit {what} ({len(expected)} tensors expected, {len(state)} found)"]
        if missing:
            lines.append(f"  missing keys: {_examples(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {_examples(unexpected)}")
        if mis_shaped:
            lines.append(f"  shape mismatches: {_examples(mis_shaped)}")
        lines.append("  Is it the right file for this model (e.g. a GPT checkpoint given as the VQ tokenizer, "
                     "or GPT-L weights for a GPT-B preset)?")
        raise BenchError("\n".join(lines))
    model.load_state_dict({**{k: expected[k] for k in optional if k not in state}, **state}, strict=True)


def load_vq(path: str | os.PathLike, model: str = "VQ-16", device: str | torch.device = "cpu") -> VQModel:
    """An official (or layout-compatible) LlamaGen tokenizer in eval mode."""
    if model not in VQ_CONFIGS:
        raise BenchError(f"unknown VQ model {model!r}; known: {', '.join(VQ_CONFIGS)}")
    with torch.device("meta"):
        vq = VQModel(vq_config(model))
    vq = vq.to_empty(device="cpu")
    # `codebook_used` only records recent assignments during training; it does not affect inference.
    if hasattr(vq.quantize, "codebook_used"):
        vq.quantize.codebook_used.zero_()
    load_strict(vq, read_state_dict(path), f"LlamaGen {model} (from {path})", optional=("quantize.codebook_used",))
    return vq.to(device).eval()


def load_gpt(path: str | os.PathLike, model: str = "GPT-B", image_size: int = 256, downsample: int = 16,
             device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> GPT:
    """An official (or layout-compatible) class-conditional LlamaGen GPT in eval mode.

    The weights do not depend on the resolution (positions are rotary, not learned), so `image_size` and
    `downsample` -- which set the token grid -- must come from the checkpoint's documentation (presets.py).
    `dtype` casts the weights like the official sampler's `--precision` (`model.to(dtype)`).
    """
    if model not in GPT_CONFIGS:
        raise BenchError(f"unknown GPT model {model!r}; known: {', '.join(GPT_CONFIGS)}")
    if image_size % downsample:
        raise BenchError(f"image_size {image_size} is not a multiple of the downsample factor {downsample}")
    with torch.device("meta"):
        gpt = GPT(gpt_config(model, block_size=(image_size // downsample) ** 2))
    gpt = gpt.to_empty(device="cpu")
    load_strict(gpt, read_state_dict(path), f"LlamaGen {model} (from {path})")
    return gpt.to(device=device, dtype=dtype).eval()
