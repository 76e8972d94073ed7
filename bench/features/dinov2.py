"""FD_DINOv2's feature extractor: DINOv2 ViT-L/14 CLS features, as NVlabs/edm2's `calculate_metrics.py` computes them.

EDM2 (and dgm-eval, which it follows) report a Frechet distance in the feature space of DINOv2 ViT-L/14 beside
FID. Its detector (`DINOv2Detector`) takes uint8 NCHW images and

1. resizes them to 224 x 224 (default `resize_mode='torch'`: `F.interpolate(x.float(), size=(224, 224),
   mode='bicubic', antialias=True)` on the 0..255 values; `'pil'`: PIL BICUBIC on the uint8 image, dgm-eval's
   original and slower recipe, which rounds to uint8 again),
2. divides by 255 -- *after* the resize in both modes -- then subtracts the ImageNet mean (0.485, 0.456, 0.406)
   and divides by the std (0.229, 0.224, 0.225),
3. runs `torch.hub.load('facebookresearch/dinov2:main', 'dinov2_vitl14')` and keeps its output, the final-norm
   CLS token (`x_norm_clstoken`): float32 [N, 1024].

The network below is that hub model written out in one file: patch embedding (a 14 x 14 stride-14 conv), a CLS
token, learned positional embeddings for a 37 x 37 grid (img_size 518), 24 pre-norm blocks (LayerNorm eps 1e-6,
attention with a qkv bias, GELU MLP of ratio 4, LayerScale on both branches), a final LayerNorm. No register
tokens; `mask_token` is in the checkpoint (used only in training) and is loaded so loading can be strict.

Positional embeddings at 224 px. The table is for a 37 x 37 grid and a 224 px input has a 16 x 16 grid, so the
hub model interpolates it in `interpolate_pos_encoding`. This module follows the official code on `main`, which
is what EDM2 loads (dinov2/models/vision_transformer.py since the register-token release; the hub entry
`_make_dinov2_model` passes `interpolate_offset=0.1, interpolate_antialias=False`; the code before that release
computed the same thing inline, `w0 + 0.1` and a scale factor, without an antialias argument):

    M = 37; sx, sy = (16 + 0.1) / M, (16 + 0.1) / M
    F.interpolate(table [1, dim, M, M], scale_factor=(sx, sy), mode="bicubic", antialias=False)

The output size is floor(37 * 16.1 / 37) = 16, but torch maps output to input coordinates with the scale factor
it was given, not with 16/37, so the `+ 0.1` ("historical kludge", kept "for backward-compatibility" in the
official comment) changes the values, not only the size. Newer official code takes `size=(16, 16)` only when
`interpolate_offset` is 0, which the hub model never sets; HuggingFace's `Dinov2Model` (transformers 5.x) does
use `size=`, so its features at 224 px differ from the official ones (tests/test_dinov2.py compares against it
at 518 px, where no interpolation happens, and with the official table at 224 px).

EDM2 calls the tensor resize `resize_mode='torch'`; here it is `resize="tensor"` (the default), and `"pil"`.
TF32 is turned off on CUDA. calculate_metrics.py sets no TF32 flag, so there cuDNN's default (TF32 convs on
Ampere and newer) runs the patch-embedding conv in TF32: a ~1e-3 relative difference in that one layer.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from bench.checkpoint import find_state_dict, load_torch_file
from bench.device import check_device
from bench.download import RemoteFile, resolve_weights, sha256_file
from bench.errors import BenchError
from bench.features.chunked import ChunkedExtractor

# The authors publish no digest. This is the one independent public projects pin for this URL, with its byte size
# (1,217,586,395): finegrain-ai/refiners' DINOv2 conversion script (`src/refiners/conversion/models/dinov2.py`),
# and several projects' asset manifests for RoMa / DeDoDe, which download the same file. docs/checksums.md.
WEIGHTS = RemoteFile(
    "dinov2_vitl14_pretrain.pth", "d5383ea8f4877b2472eb973e0fd72d557c7da5d3611bd527ceeb1d7162cbf428",
    url="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
)

#: EDM2's input size and normalisation (torchvision's ImageNet constants)
RESOLUTION = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("tensor", "pil")


@dataclass(frozen=True)
class ViTConfig:
    """DINOv2's `DinoVisionTransformer` hyper-parameters; the defaults are `dinov2_vitl14`'s."""

    img_size: int = 518  # the positional-embedding table is for img_size // patch_size = 37 patches a side
    patch_size: int = 14
    dim: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_ratio: float = 4.0
    eps: float = 1e-6  # every LayerNorm
    interpolate_offset: float = 0.1  # the hub model's; see the module docstring

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def hidden(self) -> int:
        return int(self.dim * self.mlp_ratio)


VITL14 = ViTConfig()


# ----------------------------------------------------------------------------------------------------------------
# The network, in the official state-dict layout


class PatchEmbed(nn.Module):
    """Non-overlapping patch_size x patch_size patches -> dim, as a strided conv: [B, 3, H, W] -> [B, H*W/p^2, dim]."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, config.dim, kernel_size=config.patch_size, stride=config.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (with bias) and an output projection."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.dim, 3 * config.dim, bias=True)
        self.proj = nn.Linear(config.dim, config.dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        # [B, N, 3*C] -> three [B, heads, N, C/heads]; the official split is (3, heads, head_dim) along features
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v, no mask, no dropout
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """fc1 -> GELU (exact, erf) -> fc2."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.dim, config.hidden)
        self.fc2 = nn.Linear(config.hidden, config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    """A learned per-channel scale on a residual branch (`gamma`, initialised small in training)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(config.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim, eps=config.eps)
        self.attn = Attention(config)
        self.ls1 = LayerScale(config)
        self.norm2 = nn.LayerNorm(config.dim, eps=config.eps)
        self.mlp = Mlp(config)
        self.ls2 = LayerScale(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """Normalised float images [B, 3, H, W] (H, W multiples of the patch size) -> final-norm CLS token [B, dim]."""

    def __init__(self, config: ViTConfig = VITL14):
        super().__init__()
        self.config = config
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.grid ** 2, config.dim))
        self.mask_token = nn.Parameter(torch.zeros(1, config.dim))  # training only (masked patches); never used here
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.dim, eps=config.eps)

    def interpolate_pos_encoding(self, rows: int, cols: int) -> torch.Tensor:
        """The positional embeddings for a rows x cols patch grid, [1, 1 + rows*cols, dim] (official formula: see
        the module docstring). The official code calls the two sizes (w, h) but takes them from x.shape[-2:],
        i.e. (rows, cols), and gives the first scale to the row axis, as here."""
        M = self.config.grid
        if rows == cols == M:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        offset = self.config.interpolate_offset
        patch_pos = F.interpolate(
            patch_pos.float().reshape(1, M, M, -1).permute(0, 3, 1, 2),
            scale_factor=((rows + offset) / M, (cols + offset) / M),
            mode="bicubic",
            antialias=False,
        )
        assert patch_pos.shape[-2:] == (rows, cols), patch_pos.shape
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([cls_pos, patch_pos.to(cls_pos.dtype)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        p = self.config.patch_size
        if height % p or width % p:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {p}")
        tokens = self.patch_embed(x)  # [B, rows*cols, dim]
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(height // p, width // p)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]  # x_norm_clstoken


# ----------------------------------------------------------------------------------------------------------------
# Weights


def expected_shapes(config: ViTConfig = VITL14) -> dict[str, tuple[int, ...]]:
    """Every key of the official checkpoint and its shape, read off the network (built on the meta device)."""
    with torch.device("meta"):
        net = DinoVisionTransformer(config)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def check_state_dict(state_dict: dict[str, torch.Tensor], config: ViTConfig, where: str) -> None:
    """Strict loading, with a message: every key present, none extra, every shape right (torch's own strict
    error lists only names, and a shape mismatch of a ViT-B file says nothing about the model size)."""
    want = expected_shapes(config)
    missing = [k for k in want if k not in state_dict]
    extra = sorted(k for k in state_dict if k not in want)
    wrong = [f"{k}: expected {list(want[k])}, found {list(state_dict[k].shape)}"
             for k in want if k in state_dict and tuple(state_dict[k].shape) != want[k]]
    if not (missing or extra or wrong):
        return
    lines = [f"{where}: not a DINOv2 ViT (dim {config.dim}, depth {config.depth}, patch {config.patch_size}) "
             "state dict in the official layout (dinov2_vitl14_pretrain.pth)"]
    for label, items in (("missing keys", missing), ("unexpected keys", extra), ("wrong shapes", wrong)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            lines.append(f"  {label}: {shown}")
    found = state_dict.get("cls_token")
    if found is not None and found.shape[-1] != config.dim:
        lines.append(f"  its embedding width is {found.shape[-1]}, not {config.dim}: another model size (DINOv2 "
                     "ViT-S/14 has 384, ViT-B/14 768, ViT-L/14 1024, ViT-g/14 1536)")
    if any(k.startswith("register_tokens") for k in extra):
        lines.append("  (register tokens: this is a *_reg4 checkpoint; FD_DINOv2 uses the one without registers)")
    raise BenchError("\n".join(lines))


def build_network(state_dict: dict[str, torch.Tensor], config: ViTConfig = VITL14,
                  where: str = "state dict") -> DinoVisionTransformer:
    """The network with `state_dict` loaded strictly, in float32, in eval mode."""
    check_state_dict(state_dict, config, where)
    with torch.device("meta"):
        net = DinoVisionTransformer(config)
    net.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True, assign=True)
    return net.eval().requires_grad_(False)


def random_state_dict(seed: int = 0, config: ViTConfig = VITL14) -> dict[str, torch.Tensor]:
    """Random weights in the official layout, for tests: big enough that every part of the network matters
    (LayerScale gammas near 1 rather than training's 1e-5, positional embeddings as large as the patch
    embeddings, so a wrong interpolation shows)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int, std: float = 1.0, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g).mul_(std).add_(mean)

    fan_in = 3 * config.patch_size ** 2
    out = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith("gamma"):
            out[name] = randn(*shape, std=0.2, mean=1.0)
        elif name.endswith(("norm1.weight", "norm2.weight")) or name == "norm.weight":
            out[name] = randn(*shape, std=0.1, mean=1.0)
        elif name.endswith("bias"):
            out[name] = randn(*shape, std=0.1)
        elif name == "patch_embed.proj.weight":
            out[name] = randn(*shape, std=fan_in ** -0.5 * 4)  # inputs are normalised pixels of std ~1
        elif name.endswith("weight"):  # Linear [out, in]
            out[name] = randn(*shape, std=shape[1] ** -0.5)
        else:  # cls_token, pos_embed, mask_token
            out[name] = randn(*shape)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing


def preprocess(images: np.ndarray, resize: str = "tensor", device: str | torch.device = "cpu") -> torch.Tensor:
    """EDM2's `DINOv2Detector` input: uint8 NHWC -> normalised float32 NCHW [N, 3, 224, 224] on `device`.

    'tensor': float bicubic with antialias on the 0..255 values (on `device`, as EDM2 runs it), then /255.
    'pil': PIL BICUBIC on the uint8 image (rounded to uint8 again), then /255. Both normalise with ImageNet's
    mean/std by subtracting, then dividing, as EDM2 does. Images already 224 x 224 are resized too (an identity
    up to float rounding), as EDM2 does.
    """
    if resize == "pil":
        images = np.stack([np.asarray(Image.fromarray(im, "RGB").resize((RESOLUTION, RESOLUTION),
                                                                        Image.Resampling.BICUBIC))
                           for im in images])
    # contiguous NCHW, as EDM2's data loader hands it over (the memory layout picks the interpolation kernel)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
    if resize == "tensor":
        x = F.interpolate(x.to(torch.float32), size=(RESOLUTION, RESOLUTION), mode="bicubic", antialias=True)
    elif resize != "pil":
        raise BenchError(f"resize: expected one of {', '.join(RESIZE_MODES)}, found {resize!r}")
    x = x.to(torch.float32) / 255
    x = x - torch.tensor(MEAN, device=x.device).reshape(1, -1, 1, 1)
    return x / torch.tensor(STD, device=x.device).reshape(1, -1, 1, 1)


# ----------------------------------------------------------------------------------------------------------------
# The extractor


class DINOv2Extractor(ChunkedExtractor):
    """`extract(images)` -> {"dinov2": float32 [N, 1024]}, in chunks of `batch_size`; `provenance`, `has_logits`."""

    name = "dinov2"
    arrays = {"dinov2": VITL14.dim}  # feature array name -> width

    def __init__(self, state_dict: dict[str, torch.Tensor], config: ViTConfig = VITL14, device: str = "cpu",
                 batch_size: int = 64, resize: str = "tensor", provenance: dict | None = None,
                 where: str = "state dict"):
        _check_options(batch_size, resize)
        self.device = torch.device(check_device(device))
        self.net = build_network(state_dict, config, where).to(self.device)
        self.config = config
        self.arrays = {"dinov2": config.dim}
        self.batch_size = batch_size
        self.resize = resize
        self.has_logits = False
        self.provenance = {"network": "dinov2_vitl14" if config == VITL14 else f"dinov2 ViT {config}",
                           **(provenance or {}), "resize": resize, "resolution": RESOLUTION,
                           "device": str(device), "torch": torch.__version__, "python": platform.python_version()}

    def _forward(self, images: np.ndarray) -> np.ndarray:
        return self.net(preprocess(images, self.resize, self.device)).float().cpu().numpy()


def _check_options(batch_size: int, resize: str) -> None:
    if resize not in RESIZE_MODES:
        raise BenchError(f"resize: expected one of {', '.join(RESIZE_MODES)}, found {resize!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BenchError(f"batch_size: expected a positive integer, found {batch_size!r}")


def load(weights: str | Path | None = None, device: str = "cpu", batch_size: int = 64, allow_download: bool = True,
         resize: str = "tensor") -> DINOv2Extractor:
    """The FD_DINOv2 extractor: `weights` if given (the user's file, whatever its digest: `official_weights` says
    whether it is the published one), else the official `dinov2_vitl14_pretrain.pth` from the cache or a download
    (1.2 GB, held to its pin); offline, a MissingFilesError says where to put the file. Options are checked before
    anything is fetched."""
    _check_options(batch_size, resize)
    check_device(device)
    path, official = resolve_weights(WEIGHTS, weights, allow_download)
    state_dict = find_state_dict(load_torch_file(path, "DINOv2 checkpoint"), ("model", "state_dict"), path)
    provenance = {"weights": str(path), "weights_sha256": sha256_file(path), "weights_source": WEIGHTS.source,
                  "official_weights": official}
    return DINOv2Extractor(state_dict, VITL14, device, batch_size, resize, provenance, where=str(path))


# The registration (bench/features/__init__.py lists this module): FD_DINOv2 reads the "dinov2" array.
from bench.features import FeatureNetwork, NetworkOption  # noqa: E402  (the registry imports this module while it loads)

NETWORK = FeatureNetwork(
    name="dinov2",
    arrays={"dinov2": VITL14.dim},
    load=lambda **options: load(**options),  # looked up at call time, so a test may replace `load`
    description="DINOv2 ViT-L/14 final-norm CLS token, EDM2's preprocessing (FD_DINOv2)",
    embedding="dinov2",
    title="DINOv2",
    options=(
        NetworkOption("--dinov2-weights", "weights", is_path=True,
                      help="DINOv2 weights for FD_DINOv2 and the other *_dinov2 metrics: your file is used as given "
                           "(results say when it is not the published one) [dinov2_vitl14_pretrain.pth: cache, else "
                           "download]."),
        NetworkOption("--dinov2-resize", "resize", default="tensor", choices=RESIZE_MODES,
                      help="FD_DINOv2 preprocessing: EDM2's default bicubic antialiased tensor resize to 224, or "
                           "dgm-eval's PIL bicubic resize."),
    ),
)
