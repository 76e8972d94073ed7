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

Which architecture a file is built into:
  * a checkpoint written by `bench llamagen train-vq` / `train-gpt` carries its model config (`vq_config` /
    `gpt_config`), and a `.safetensors` export (`export_safetensors`, e.g. the demo weights shipped in
    `weights/`) carries it as JSON metadata: the model is built from that config, so a GPT trained on 3 classes
    or a non-official width loads as what it is. A model name given as well must agree with it (layers,
    heads and width; channel layout for a tokenizer), else the file is refused as the wrong one;
  * an official checkpoint carries no config: the named architecture (`model`, VQ-16 / GPT-B by default), with
    the class count and codebook size read off the weight shapes (the embedding tables hold them).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from bench.checkpoint import find_state_dict, load_torch_file
from bench.errors import BenchError
from generators.llamagen.gpt import GPT, GPT_CONFIGS, GPTConfig, gpt_config
from generators.llamagen.vq import VQ_CONFIGS, VQConfig, VQModel, vq_config

#: containers a checkpoint may wrap its weights in: the official c2i releases use "model"
CONTAINER_KEYS = ("model", "module", "state_dict")
#: buffers the official checkpoints carry that are not weights (recomputed at load)
_NON_WEIGHT_SUFFIXES = ("freqs_cis", "kv_cache.k_cache", "kv_cache.v_cache", "kv_cache.k", "kv_cache.v",
                        "causal_mask")
_EXAMPLES = 5
#: the config fields that name an architecture: a file whose stored config differs in one of them is not the model
#: asked for (class count, codebook size and token grid are the dataset's, and may differ under one name)
GPT_ARCH_FIELDS = ("n_layer", "n_head", "dim", "n_kv_head", "multiple_of", "ffn_dim_multiplier")
VQ_ARCH_FIELDS = ("ch", "encoder_ch_mult", "decoder_ch_mult", "z_channels", "num_res_blocks")
#: the `format` entry of an export's safetensors metadata (whose values must all be strings: configs are JSON)
META_FORMAT = "llamagen"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint file in any accepted container, prefixes stripped, non-weights dropped."""
    return read_checkpoint(path, "gpt")[0]  # the kind only selects which stored config is read alongside


def read_checkpoint(path: str | os.PathLike, kind: str) -> tuple[dict[str, torch.Tensor], dict | None, str | None]:
    """(weights, the stored model config or None, the model name it was trained as or None) of a torch checkpoint
    or a safetensors export, for `kind` "gpt" or "vq".

    train-gpt / train-vq store the config under "gpt_config" / "vq_config" and the name in their train config
    ("gpt_model" / "vq_model"); an export keeps both under the same keys in its metadata.
    """
    config_key, name_key = f"{kind}_config", f"{kind}_model"
    if is_safetensors(path):
        state, metadata = _read_safetensors(path)
        config = _parse_json_config(metadata.get(config_key), path, config_key)
        name = metadata.get(name_key)
    else:
        obj = load_torch_file(path, "LlamaGen checkpoint")
        state = find_state_dict(obj, CONTAINER_KEYS, path)
        config, name = None, None
        if isinstance(obj, dict):
            config = obj.get(config_key)
            train_config = obj.get("train_config")
            name = train_config.get(name_key) if isinstance(train_config, dict) else None
        if config is not None and not isinstance(config, dict):
            raise BenchError(f"{path}: its {config_key!r} is a {type(config).__name__}, not a config dict")
    state = {k: v for k, v in state.items() if not k.endswith(_NON_WEIGHT_SUFFIXES)}
    return state, config, name if isinstance(name, str) else None


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether a file is in the safetensors format (told by its content, whatever its name): an 8-byte
    little-endian header length, then the JSON header itself."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size


def _read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise BenchError(f"{path}: reading .safetensors needs the safetensors package: pip install safetensors") \
            from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise BenchError(f"{path}: cannot be read as a safetensors file ({type(err).__name__}: {err})") from None


def _parse_json_config(text: str | None, path: str | os.PathLike, key: str) -> dict | None:
    if text is None:
        return None
    try:
        config = json.loads(text)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise BenchError(f"{path}: its {key!r} metadata is not a JSON object; re-export the file")
    return config


def _build_config(cls: type, fields: dict[str, Any], path: str | os.PathLike, key: str):
    """A GPTConfig / VQConfig from a stored dict, refusing fields this version does not know."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise BenchError(f"{path}: its {key} has fields this version of the LlamaGen code does not know "
                         f"({', '.join(unknown)}); it was written by another version")
    return cls(**fields)


def _check_requested(path: str | os.PathLike, kind: str, model: str, named: Any, stored: Any,
                     fields: tuple[str, ...], trained_as: str | None) -> None:
    """Refuse a file whose stored architecture is not the one `model` names."""
    differ = [f"{k}: {getattr(stored, k)!r} in the file, {getattr(named, k)!r} in {model}"
              for k in fields if getattr(stored, k) != getattr(named, k)]
    if differ:
        raise BenchError(f"{path} holds another {kind} than the {model} asked for"
                         f"{f' (it was trained as {trained_as})' if trained_as else ''}:\n  " + "\n  ".join(differ) +
                         f"\nThe file describes its own architecture: ask for {trained_as or 'no model name'} "
                         "(or leave the model out), or give the file meant for this model.")


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


def load_vq(path: str | os.PathLike, model: str | None = None, device: str | torch.device = "cpu") -> VQModel:
    """A LlamaGen tokenizer in eval mode: an official checkpoint (architecture `model`, VQ-16 by default), a
    train-vq checkpoint or a `.safetensors` export (architecture from the file; `model`, if given, must agree)."""
    if model is not None and model not in VQ_CONFIGS:
        raise BenchError(f"unknown VQ model {model!r}; known: {', '.join(VQ_CONFIGS)}")
    state, stored, trained_as = read_checkpoint(path, "vq")
    if stored is not None:
        config = _build_config(VQConfig, stored, path, "vq_config")
        if model is not None:
            _check_requested(path, "tokenizer", model, vq_config(model), config, VQ_ARCH_FIELDS, trained_as)
        what = f"the LlamaGen tokenizer its config describes (from {path})"
    else:
        model = model or "VQ-16"
        codebook = state.get("quantize.embedding.weight")  # its rows are the codebook: official sizes vary
        sizes = {} if codebook is None or codebook.ndim != 2 else \
            dict(codebook_size=codebook.shape[0], codebook_embed_dim=codebook.shape[1])
        config, what = vq_config(model, **sizes), f"LlamaGen {model} (from {path})"
    with torch.device("meta"):
        vq = VQModel(config)
    vq = vq.to_empty(device="cpu")
    # `codebook_used` only records recent assignments during training; it does not affect inference.
    if hasattr(vq.quantize, "codebook_used"):
        vq.quantize.codebook_used.zero_()
    load_strict(vq, state, what, optional=("quantize.codebook_used",))
    return vq.to(device).eval()


def load_gpt(path: str | os.PathLike, model: str | None = None, image_size: int | None = None,
             downsample: int = 16, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> GPT:
    """A class-conditional LlamaGen GPT in eval mode: an official checkpoint (architecture `model`, GPT-B by
    default), a train-gpt checkpoint or a `.safetensors` export (architecture from the file; `model`, if given,
    must agree).

    The weights do not depend on the resolution (positions are rotary, not learned), so the token grid is the
    caller's: `image_size // downsample` per side when `image_size` is given (an official checkpoint's sizes come
    from its documentation, presets.py), else the grid the file was trained on (256 // 16 for an official one).
    `dtype` casts the weights like the official sampler's `--precision` (`model.to(dtype)`).
    """
    if model is not None and model not in GPT_CONFIGS:
        raise BenchError(f"unknown GPT model {model!r}; known: {', '.join(GPT_CONFIGS)}")
    if image_size is not None and image_size % downsample:
        raise BenchError(f"image_size {image_size} is not a multiple of the downsample factor {downsample}")
    grid = None if image_size is None else {"block_size": (image_size // downsample) ** 2}
    state, stored, trained_as = read_checkpoint(path, "gpt")
    if stored is not None:
        config = _build_config(GPTConfig, stored, path, "gpt_config")
        if model is not None:
            _check_requested(path, "GPT", model, gpt_config(model), config, GPT_ARCH_FIELDS, trained_as)
        config = dataclasses.replace(config, **(grid or {}))
        what = f"the LlamaGen GPT its config describes (from {path})"
    else:
        model = model or "GPT-B"
        # The official files carry no config, but their embedding tables say the vocabulary and class count.
        sizes = {}
        if (table := state.get("tok_embeddings.weight")) is not None and table.ndim == 2:
            sizes["vocab_size"] = table.shape[0]
        if (table := state.get("cls_embedding.embedding_table.weight")) is not None and table.ndim == 2:
            sizes["num_classes"] = table.shape[0] - 1  # the last row is the null class
        config = gpt_config(model, **{"block_size": 256, **(grid or {}), **sizes})
        what = f"LlamaGen {model} (from {path})"
    with torch.device("meta"):
        gpt = GPT(config)
    gpt = gpt.to_empty(device="cpu")
    load_strict(gpt, state, what)
    return gpt.to(device=device, dtype=dtype).eval()


def export_safetensors(path: str | os.PathLike, out: str | os.PathLike, kind: str,
                       dtype: torch.dtype | None = torch.float16, extra: dict[str, str] | None = None) -> Path:
    """Write the weights of a train-vq / train-gpt checkpoint (`kind` "vq" or "gpt") as `.safetensors`: weights
    only (no optimizer, discriminator or RNG state), cast to `dtype` (None keeps float32), the model config as
    JSON metadata so `load_vq` / `load_gpt` rebuild the model from the file alone.

    The file is checked by loading it back before it is renamed into place.
    """
    from safetensors.torch import save_file

    from bench.atomic import atomic_path

    if kind not in ("vq", "gpt"):
        raise BenchError(f"kind must be 'vq' or 'gpt', found {kind!r}")
    state, config, name = read_checkpoint(path, kind)
    if config is None:
        raise BenchError(f"{path}: carries no {kind}_config; export checkpoints written by bench llamagen "
                         f"train-{kind}")
    state = {k: v for k, v in state.items() if k != "quantize.codebook_used"}  # training bookkeeping
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    metadata = {"format": META_FORMAT, f"{kind}_config": json.dumps(config, sort_keys=True),
                **({f"{kind}_model": name} if name else {}), **(extra or {})}
    out = Path(out)
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
        (load_vq if kind == "vq" else load_gpt)(tmp)  # it must load back, strictly, before it replaces anything
    return out
