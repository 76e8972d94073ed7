"""Loading VAR's released files: `vae_ch160v4096z32.pth` (the multi-scale VQVAE) and `var_d{16,20,24,30}.pth`
(the transformers), bare state dicts saved with torch.save, read with `torch.load(weights_only=True)`
(`bench.checkpoint`) or from a `.safetensors` copy, and loaded with strict key and shape checking.

What a file is, is told by its keys before anything is built, so the usual mistakes get one line each: a LlamaGen
GPT or tokenizer, a DiT, the VQVAE given as the transformer (or the reverse), a transformer of another depth
than the one asked for (the file's depth is the number of `blocks.{i}`; the message names it), a truncated or
corrupt file. The architecture's sizes the files do not name (class count, vocabulary, Cvae, width, heads) are
read off their shapes, so the small models the tests make load through the same path as the release.

The official `VQVAE.load_state_dict` replaces `quantize.ema_vocab_hit_SV` (training statistics, [scales, vocab])
when its scale count differs from the model's; this loader does the same, and nothing else is lenient.
"""

from __future__ import annotations

import os
import re
import torch

from bench.checkpoint import find_state_dict, load_torch_file
from bench.errors import BenchError
from generators.llamagen.checkpoints import _read_safetensors, is_safetensors, load_strict
from generators.var.model import VAR, var_config
from generators.var.vqvae import VQVAE, VQVAEConfig

#: containers a state dict may be wrapped in (the release: none, a bare state dict)
CONTAINER_KEYS = ("model", "state_dict", "module")

#: what a state dict is, told by keys only one kind of file has; checked in this order
_KINDS: tuple[tuple[str, str, re.Pattern], ...] = tuple((kind, words, re.compile(pattern)) for kind, words, pattern in (
    ("llamagen-gpt", "a LlamaGen GPT checkpoint", r"^(tok_embeddings\.|cls_embedding\.|layers\.\d+\.attention\.)"),
    ("llamagen-vq", "a LlamaGen VQ tokenizer checkpoint", r"^(encoder\.conv_blocks\.|quantize\.codebook_used$)"),
    ("dit", "a DiT checkpoint", r"^(x_embedder\.|t_embedder\.|y_embedder\.)"),
    ("var", "a VAR transformer checkpoint (var_d*.pth)", r"^(class_emb\.weight$|blocks\.\d+\.attn\.mat_qkv\.)"),
    ("vae", "a VAR VQVAE checkpoint (vae_ch160v4096z32.pth)", r"^(quantize\.quant_resi\.|encoder\.down\.)"),
))
_DESCRIBE = {kind: words for kind, words, _ in _KINDS}


def read_weights(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a torch or safetensors file (a bare state dict or one under CONTAINER_KEYS)."""
    if is_safetensors(path):
        return _read_safetensors(path)[0]
    return find_state_dict(load_torch_file(path, what), CONTAINER_KEYS, path)


def checkpoint_kind(state: dict[str, torch.Tensor]) -> str | None:
    """"var", "vae", "llamagen-gpt", "llamagen-vq", "dit", or None when the keys say nothing known."""
    for kind, _, pattern in _KINDS:
        if any(pattern.search(k) for k in state):
            return kind
    return None


def _require_kind(path: str | os.PathLike, state: dict[str, torch.Tensor], expected: str) -> None:
    kind = checkpoint_kind(state)
    if kind != expected:
        found = _DESCRIBE[kind] if kind else f"no known checkpoint (keys {sorted(state)[:4]}...)"
        raise BenchError(f"{path} is {found}, not {_DESCRIBE[expected]}; give the file meant for it")


def _shape(state: dict[str, torch.Tensor], key: str, path, dim: int) -> int:
    if key not in state or state[key].ndim <= dim:
        raise BenchError(f"{path} lacks {key!r} (or it has the wrong rank): not a complete VAR file")
    return int(state[key].shape[dim])


def load_vae(path: str | os.PathLike, device: str | torch.device = "cpu",
             config: VQVAEConfig | None = None) -> VQVAE:
    """The multi-scale VQVAE in eval mode, its gradients off. The release's sizes are read off the file (codebook,
    Cvae, base width, levels, res blocks, Phi count); `config` overrides the inference (e.g. other patch_nums)."""
    state = read_weights(path, "VAR VQVAE checkpoint")
    _require_kind(path, state, "vae")
    if config is None:
        ch = _shape(state, "encoder.conv_in.weight", path, 0)
        first_convs = (re.match(r"encoder\.down\.(\d+)\.block\.0\.conv1\.weight$", k) for k in state)
        levels = sorted(int(m.group(1)) for m in first_convs if m)
        ch_mult = tuple(_shape(state, f"encoder.down.{i}.block.0.conv1.weight", path, 0) // ch for i in levels)
        res_blocks = len({k.split(".")[4] for k in state if k.startswith("encoder.down.0.block.")})
        shared = len({k.split(".")[3] for k in state if k.startswith("quantize.quant_resi.qresi_ls.")})
        config = VQVAEConfig(vocab_size=_shape(state, "quantize.embedding.weight", path, 0),
                             Cvae=_shape(state, "quantize.embedding.weight", path, 1), ch=ch, ch_mult=ch_mult,
                             num_res_blocks=res_blocks, share_quant_resi=shared)
    try:
        with torch.device("meta"):
            vae = VQVAE(config)
    except ValueError as err:
        raise BenchError(f"{path}: its shapes describe no VQVAE this code builds ({err})") from None
    vae = vae.to_empty(device="cpu")
    hits = vae.quantize.ema_vocab_hit_SV
    hits.zero_()
    if "quantize.ema_vocab_hit_SV" in state and state["quantize.ema_vocab_hit_SV"].shape[0] != hits.shape[0]:
        state = {**state, "quantize.ema_vocab_hit_SV": hits}  # training statistics for other scales (as official)
    load_strict(vae, state, f"the VAR VQVAE (from {path})")
    vae = vae.to(device).eval()
    vae.requires_grad_(False)
    return vae


def load_var(path: str | os.PathLike, vae: VQVAE, depth: int = 16,
             device: str | torch.device | None = None) -> VAR:
    """A VAR transformer of the given depth (16, 20, 24 or 30 for the release), in eval mode, attached to `vae`
    (whose codebook it reads and writes through), on `device` (default: the VQVAE's)."""
    state = read_weights(path, "VAR transformer checkpoint")
    _require_kind(path, state, "var")
    found = 1 + max((int(k.split(".")[1]) for k in state if re.match(r"blocks\.\d+\.", k)), default=-1)
    width = _shape(state, "class_emb.weight", path, 1)
    if found != depth:
        raise BenchError(f"{path} holds a VAR of depth {found} (width {width}, i.e. var_d{found}.pth), not the "
                         f"depth {depth} asked for; pass depth={found} or give var_d{depth}.pth")
    l2_norm = "blocks.0.attn.scale_mul_1H11" in state
    sizes = dict(num_classes=_shape(state, "class_emb.weight", path, 0) - 1,
                 vocab_size=_shape(state, "head.weight", path, 0), Cvae=_shape(state, "word_embed.weight", path, 1),
                 embed_dim=width, attn_l2_norm=l2_norm, patch_nums=tuple(vae.patch_nums))
    if l2_norm:
        sizes["num_heads"] = _shape(state, "blocks.0.attn.scale_mul_1H11", path, 1)
    try:
        config = var_config(depth, **sizes)
        with torch.device("meta"):
            var = VAR(config)
    except ValueError as err:
        raise BenchError(f"{path}: its shapes describe no VAR this code builds ({err})") from None
    var = var.to_empty(device="cpu")
    var.reset_buffers()
    for key in ("lvl_1L", "attn_bias_for_masking"):  # derived from the scales: a file must agree, not override
        ours = getattr(var, key)
        if key in state and (state[key].shape != ours.shape or not torch.equal(state[key].to(ours.dtype), ours)):
            raise BenchError(f"{path}: its {key} buffer is not the one scales {config.patch_nums} define; the file "
                             "was made for other patch_nums or is corrupt")
    load_strict(var, state, f"VAR-d{depth} (from {path})")
    try:
        var.attach_vae(vae)
    except ValueError as err:
        raise BenchError(f"{path}: {err}") from None
    return var.to(device or vae.quant_conv.weight.device).eval()
