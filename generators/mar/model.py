"""MAR: the masked autoregressive transformer with a per-token diffusion head (Li et al. 2024), written to load the
official checkpoints (LTH14/mar `checkpoint-last.pth`) as they are.

The network, in the official key layout (`models/mar.py`, `models/diffloss.py`):

    class_emb.weight                         [1000, E]   class embeddings
    fake_latent                              [1, E]      the null class (classifier-free guidance, unconditional)
    z_proj.{weight,bias}, z_proj_ln.*        tokens (16-d continuous VAE latents) -> E, then LayerNorm
    encoder_pos_embed_learned                [1, 64 + 256, E]   learned; the first 64 are the buffer's
    encoder_blocks.N.*, encoder_norm.*       ViT blocks (timm `Block` keys: norm1, attn.qkv, attn.proj, norm2,
                                             mlp.fc1, mlp.fc2) over the 64 buffer tokens + the known tokens
    decoder_embed.*, mask_token              E -> D; the mask token fills every unknown position
    decoder_pos_embed_learned                [1, 64 + 256, D]
    decoder_blocks.N.*, decoder_norm.*       ViT blocks over all 64 + 256 positions
    diffusion_pos_embed_learned              [1, 256, D]   added to the decoder output: z, one per position
    diffloss.net.*                           SimpleMLPAdaLN: the denoiser eps(x_t | t, z) of each token

The 64 buffer tokens all hold the class embedding (or `fake_latent`), so the encoder never runs on an empty
sequence. Encoder and decoder have the same width and half of the blocks each (MAR-B 2 x 12 at 768, MAR-L
2 x 16 at 1024, MAR-H 2 x 20 at 1280, 16 heads except MAR-B's 12).

The diffusion head is a small MLP (MAR-B 6 blocks x 1024, L 8 x 1280, H 12 x 1536 in the released models),
conditioned on z + the timestep embedding through adaLN, predicting eps and a learned-range variance (2 x 16
outputs) of the improved-DDPM cosine process with 1000 training steps, respaced to the sampling steps
(`generators.dit.diffusion`). Sampling is in `generate.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn

from bench.checkpoint import find_state_dict, load_torch_file
from bench.errors import BenchError
from generators.dit.models import Attention, FinalLayer, Mlp, TimestepEmbedder, modulate


@dataclass(frozen=True)
class MARConfig:
    encoder_embed_dim: int = 1024
    encoder_depth: int = 16
    encoder_num_heads: int = 16
    decoder_embed_dim: int = 1024
    decoder_depth: int = 16
    decoder_num_heads: int = 16
    diffloss_d: int = 8  # denoising MLP blocks
    diffloss_w: int = 1280  # denoising MLP width
    mlp_ratio: float = 4.0
    img_size: int = 256
    vae_stride: int = 16
    patch_size: int = 1
    vae_embed_dim: int = 16
    buffer_size: int = 64
    class_num: int = 1000

    @property
    def seq_h(self) -> int:
        return self.img_size // self.vae_stride // self.patch_size

    @property
    def seq_len(self) -> int:
        return self.seq_h**2

    @property
    def token_embed_dim(self) -> int:
        return self.vae_embed_dim * self.patch_size**2


#: the released models: transformer sizes of `mar_base/large/huge`, DiffLoss MLPs of the README's commands
MAR_CONFIGS: dict[str, MARConfig] = {
    "MAR-B": MARConfig(768, 12, 12, 768, 12, 12, diffloss_d=6, diffloss_w=1024),
    "MAR-L": MARConfig(1024, 16, 16, 1024, 16, 16, diffloss_d=8, diffloss_w=1280),
    "MAR-H": MARConfig(1280, 20, 16, 1280, 20, 16, diffloss_d=12, diffloss_w=1536),
}


def mar_config(model: str, **overrides) -> MARConfig:
    """The config of a released model ("MAR-B", "MAR-L", "MAR-H"); `overrides` replace any field."""
    if model not in MAR_CONFIGS:
        raise KeyError(model)
    return replace(MAR_CONFIGS[model], **overrides)


# --------------------------------------------------------------------------------------------------------------
# Transformer
# --------------------------------------------------------------------------------------------------------------

class Block(nn.Module):
    """timm's ViT `Block` as MAR builds it (qkv bias, LayerNorm eps 1e-6, exact GELU; its dropouts are off at
    inference and its LayerScale / DropPath are identities): pre-norm attention and MLP, each residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), approximate="none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MAR(nn.Module):
    """(known tokens, mask, class embedding) -> z [B, 256, D]: one condition vector per position for the head."""

    def __init__(self, config: MARConfig):
        super().__init__()
        c = self.config = config
        E, D, T = c.encoder_embed_dim, c.decoder_embed_dim, c.seq_len + c.buffer_size
        self.class_emb = nn.Embedding(c.class_num, E)
        self.fake_latent = nn.Parameter(torch.zeros(1, E))
        self.z_proj = nn.Linear(c.token_embed_dim, E)
        self.z_proj_ln = nn.LayerNorm(E, eps=1e-6)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, T, E))
        self.encoder_blocks = nn.ModuleList(
            [Block(E, c.encoder_num_heads, c.mlp_ratio) for _ in range(c.encoder_depth)])
        self.encoder_norm = nn.LayerNorm(E, eps=1e-6)
        self.decoder_embed = nn.Linear(E, D)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, D))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, T, D))
        self.decoder_blocks = nn.ModuleList(
            [Block(D, c.decoder_num_heads, c.mlp_ratio) for _ in range(c.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(D, eps=1e-6)
        self.diffusion_pos_embed_learned = nn.Parameter(torch.zeros(1, c.seq_len, D))
        self.diffloss = DiffLoss(c.token_embed_dim, D, c.diffloss_w, c.diffloss_d)

    @property
    def num_classes(self) -> int:
        return self.config.class_num

    def _with_buffer(self, mask: torch.Tensor) -> torch.Tensor:
        """[B, 256] mask (1 = unknown) -> [B, 64 + 256] with the buffer always known."""
        return torch.cat([torch.zeros(mask.shape[0], self.config.buffer_size, device=mask.device,
                                      dtype=mask.dtype), mask], dim=1)

    def forward_mae_encoder(self, tokens: torch.Tensor, mask: torch.Tensor,
                            class_embedding: torch.Tensor) -> torch.Tensor:
        """Encode the 64 buffer tokens (each the class embedding) and the known tokens.

        tokens [B, 256, 16], mask [B, 256] (1 = unknown; every row the same count), class_embedding [B, E] ->
        [B, 64 + known, E]. Unknown positions are dropped, as in MAE; the survivors keep position order.
        """
        x = self.z_proj(tokens)
        B, _, E = x.shape
        buffer = class_embedding.unsqueeze(1).expand(B, self.config.buffer_size, E).to(x.dtype)
        x = torch.cat([buffer, x], dim=1) + self.encoder_pos_embed_learned
        x = self.z_proj_ln(x)
        x = x[self._with_buffer(mask) == 0].reshape(B, -1, E)
        for block in self.encoder_blocks:
            x = block(x)
        return self.encoder_norm(x)

    def forward_mae_decoder(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scatter the encoded tokens back among mask tokens, decode all positions -> z [B, 256, D]."""
        x = self.decoder_embed(x)
        keep = self._with_buffer(mask) == 0
        B, T = keep.shape
        padded = self.mask_token.to(x.dtype).expand(B, T, x.shape[-1]).clone()
        padded[keep] = x.reshape(-1, x.shape[-1])
        x = padded + self.decoder_pos_embed_learned
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)[:, self.config.buffer_size:]
        return x + self.diffusion_pos_embed_learned

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, h*w, C p p] -> [B, C, h p, w p]; each token's vector is laid out (channel, p_row, p_col)."""
        c, p, h = self.config.vae_embed_dim, self.config.patch_size, self.config.seq_h
        x = tokens.reshape(tokens.shape[0], h, h, c, p, p)
        return x.permute(0, 3, 1, 4, 2, 5).reshape(tokens.shape[0], c, h * p, h * p)

    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, C, h p, w p] -> [B, h*w, C p p], the inverse of `unpatchify`."""
        B, c, H, W = latents.shape
        p = self.config.patch_size
        x = latents.reshape(B, c, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(B, (H // p) * (W // p), c * p * p)


# --------------------------------------------------------------------------------------------------------------
# Diffusion head
# --------------------------------------------------------------------------------------------------------------

class ResBlock(nn.Module):
    """LayerNorm -> adaLN modulation -> Linear, SiLU, Linear -> gated residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 3 * channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))


class SimpleMLPAdaLN(nn.Module):
    """The denoiser of one token: (x_t [N, 16], t [N], z [N, D]) -> [N, 32] (eps, variance interpolation)."""

    def __init__(self, in_channels: int, model_channels: int, out_channels: int, z_channels: int, num_res_blocks: int):
        super().__init__()
        self.in_channels = in_channels
        self.time_embed = TimestepEmbedder(model_channels)
        self.cond_embed = nn.Linear(z_channels, model_channels)
        self.input_proj = nn.Linear(in_channels, model_channels)
        self.res_blocks = nn.ModuleList([ResBlock(model_channels) for _ in range(num_res_blocks)])
        self.final_layer = FinalLayer(model_channels, 1, out_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(x)
        y = self.time_embed(t) + self.cond_embed(c)
        for block in self.res_blocks:
            x = block(x, y)
        return self.final_layer(x, y)


class DiffLoss(nn.Module):
    """Holds the denoising MLP under the official name (`diffloss.net`); the sampling loop is `generate.py`'s."""

    def __init__(self, target_channels: int, z_channels: int, width: int, depth: int):
        super().__init__()
        self.in_channels = target_channels
        self.net = SimpleMLPAdaLN(target_channels, width, 2 * target_channels, z_channels, depth)


# --------------------------------------------------------------------------------------------------------------
# Checkpoint loading
# --------------------------------------------------------------------------------------------------------------

#: the weight sets of a training checkpoint (`util/misc.py save_model`): the EMA (what the paper evaluates) or
#: the raw weights
WEIGHTS = ("model_ema", "model")


def _shape_config(state: dict[str, torch.Tensor]) -> tuple[int, ...] | None:
    """(encoder width, depth, decoder width, depth, MLP width, depth) read off the weights; None if unreadable."""
    try:
        return (state["z_proj.weight"].shape[0], _count(state, "encoder_blocks."),
                state["decoder_embed.weight"].shape[0], _count(state, "decoder_blocks."),
                state["diffloss.net.input_proj.weight"].shape[0], _count(state, "diffloss.net.res_blocks."))
    except (KeyError, IndexError, AttributeError):
        return None


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def _arch(config: MARConfig) -> tuple[int, ...]:
    return (config.encoder_embed_dim, config.encoder_depth, config.decoder_embed_dim, config.decoder_depth,
            config.diffloss_w, config.diffloss_d)


def _describe(arch: tuple[int, ...]) -> str:
    e, ed, d, dd, w, wd = arch
    return f"encoder {ed} x {e}, decoder {dd} x {d}, DiffLoss MLP {wd} x {w}"


def _which(arch: tuple[int, ...]) -> str:
    """"MAR-L (encoder 16 x 1024, ...)" for a released architecture, else just the sizes."""
    names = [name for name, c in MAR_CONFIGS.items() if _arch(c) == arch]
    return f"{names[0]} ({_describe(arch)})" if names else _describe(arch)


def read_weights(path: str | Path, weights: str = "model_ema") -> dict[str, torch.Tensor]:
    """The `weights` entry ("model_ema" or "model") of a MAR training checkpoint, read weights-only."""
    if weights not in WEIGHTS:
        raise BenchError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    obj = load_torch_file(path, "MAR checkpoint")
    if not isinstance(obj, dict):
        raise BenchError(f"{path}: expected a MAR training checkpoint (a dict with {' / '.join(WEIGHTS)}), "
                         f"found {type(obj).__name__}")
    if weights not in obj:
        tensors = sum(isinstance(v, torch.Tensor) for v in obj.values())
        has = (f"a bare state dict of {tensors} tensors" if tensors == len(obj) and obj
               else f"keys {', '.join(map(repr, sorted(map(str, obj))))}")
        raise BenchError(f"{path} has no {weights!r} entry (it has {has}); MAR's checkpoint-last.pth holds "
                         f"'model' and 'model_ema'")
    if not isinstance(obj[weights], dict):
        raise BenchError(f"{path}: its {weights!r} entry is a {type(obj[weights]).__name__}, not a state dict")
    return find_state_dict(obj[weights], (), path)


def load_mar(path: str | Path, model: str | MARConfig = "MAR-B", weights: str = "model_ema") -> MAR:
    """Build `model` ("MAR-B" / "MAR-L" / "MAR-H", or an explicit `MARConfig`) and load the `weights` entry of the
    training checkpoint `path` into it strictly. Returned in eval mode on the CPU.

    The paper and the official evaluation sample from the EMA weights ("model_ema"); "model" holds the raw
    weights of the last training step (sampling from them gives far worse FIDs).
    """
    if isinstance(model, str) and model not in MAR_CONFIGS:
        raise BenchError(f"unknown MAR model {model!r}; expected one of {', '.join(MAR_CONFIGS)}")
    config = model if isinstance(model, MARConfig) else MAR_CONFIGS[model]
    name = model if isinstance(model, str) else "the given MARConfig"
    state = read_weights(path, weights)
    with torch.device("meta"):  # shapes only: a wrong file is refused before 1-4 GB of weights are allocated
        expected = {k: tuple(v.shape) for k, v in MAR(config).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        if not set(expected) & set(found):
            raise BenchError(f"{path} is not a MAR checkpoint: its {weights!r} entry has none of MAR's weights "
                             f"(it has e.g. {', '.join(sorted(found)[:3])})")
        arch = _shape_config(state)
        if arch is not None and arch != _arch(config):
            raise BenchError(f"{path} is {_which(arch)}, not {name} ({_describe(_arch(config))}); "
                             f"pick the model the file was trained as")
        missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        detail = "; ".join(part for part in (
            f"{len(missing)} missing keys (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})" if unexpected else "",
            f"{wrong[0]}: expected shape {list(expected[wrong[0]])}, found {list(found[wrong[0]])}" if wrong else "",
        ) if part)
        raise BenchError(f"{path} ({weights}) does not fit {name}: {detail}")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise BenchError(f"{path} ({weights}): tensor {bad} holds NaN or infinite values")
    with torch.device("meta"):
        net = MAR(config)
    net.load_state_dict(state, strict=True, assign=True)  # the file's tensors become the parameters: no 2nd copy
    return net.eval()
