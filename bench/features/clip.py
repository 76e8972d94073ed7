"""CMMD's feature extractor: the image tower of OpenAI CLIP ViT-L/14 at 336 px, as google-research/cmmd runs it.

CMMD (Jayasumana et al., 2024) compares CLIP image embeddings. The official tool (google-research/google-research
`cmmd/`: `io_util.py`, `embedding.py`, scenic's CLIP port) takes each image and

1. center-crops it to a square (side min(w, h), top (h - side) // 2, left (w - side) // 2) and resizes it to
   336 x 336 with PIL's `Image.BICUBIC` (which antialiases when shrinking) -- a uint8 RGB image again;
2. divides by 255 in float32;
3. resizes to 336 x 336 with `jax.image.resize(method='bicubic')`, which the image already has: at scale 1 the
   cubic kernel weighs each pixel 1 and its neighbours 0, an identity, so it is not repeated here;
4. normalises with CLIP's mean (0.48145466, 0.4578275, 0.40821073) and std (0.26862954, 0.26130258, 0.27577711);
5. runs CLIP ViT-L/14-336px's image tower (`vit_l14_336px`, the weights of OpenAI's `ViT-L-14-336px.pt`) and keeps
   `encode_image(normalize=True)`: the final-LayerNorm CLS token times `proj`, divided by its L2 norm.

Output: float32 [N, 768], unit rows. The network below is OpenAI's `VisionTransformer` (clip/model.py) written out
in one file, in its state-dict layout under `visual.`: a 14 x 14 stride-14 patch conv without bias, a class
embedding, learned positional embeddings for the 24 x 24 grid, `ln_pre`, 24 pre-norm residual blocks (LayerNorm
eps 1e-5; multi-head attention with a fused `in_proj` of q, k, v and an `out_proj`, 16 heads of 64; an MLP of
width 4096 with QuickGELU, x * sigmoid(1.702 x)), `ln_post` on the CLS token and the projection `proj` [1024, 768].

Weights. OpenAI publishes `ViT-L-14-336px.pt`, a TorchScript archive of the whole CLIP model (text tower
included) in float16; the URL's second-to-last component is the file's sha256, which OpenAI's own `clip._download`
and scenic check, and so does `bench/download.py` here. The archive is read for its tensors only
(`bench.checkpoint.torchscript_tensors`: its code is never compiled or run); a plain state dict with the same keys
(`visual.*`, as `torch.jit.load(...).state_dict()` or open_clip give) is read with `torch.load(weights_only=True)`.
The float16 values are widened to float32, as OpenAI's `clip.load(device="cpu")` does. Only the image tower is kept.
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

from bench.checkpoint import find_state_dict, is_torchscript, load_torch_file, torchscript_tensors
from bench.device import check_device
from bench.download import RemoteFile, resolve_weights, sha256_file
from bench.errors import BenchError
from bench.features.chunked import ChunkedExtractor

# OpenAI's clip.py `_MODELS["ViT-L/14@336px"]`; the path's second-to-last component is the sha256 of the file, which
# clip.py's `_download` (and scenic's `download.download(expected_sha256=url.split('/')[-2])`) checks.
WEIGHTS = RemoteFile(
    "ViT-L-14-336px.pt", "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
    url="https://openaipublic.azureedge.net/clip/models/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/"
        "ViT-L-14-336px.pt",
)

#: CLIP's normalisation (OpenAI clip.py `_transform`, scenic `IMAGE_MEAN` / `IMAGE_STD`)
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
#: the state-dict prefix of the image tower in the whole model's checkpoint
PREFIX = "visual."


@dataclass(frozen=True)
class CLIPConfig:
    """The image tower's hyper-parameters; the defaults are ViT-L/14@336px's (OpenAI's `build_model` reads them off
    the checkpoint: heads = width // 64)."""

    image_size: int = 336
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    heads: int = 16
    output_dim: int = 768
    eps: float = 1e-5  # every LayerNorm (torch's default)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


VITL14_336 = CLIPConfig()


# ----------------------------------------------------------------------------------------------------------------
# The network, in OpenAI's state-dict layout (under `visual.`)


class Attention(nn.Module):
    """nn.MultiheadAttention's parameters (`in_proj_weight` rows [q; k; v], `out_proj`), self-attention, no mask."""

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.heads = config.heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * config.width, config.width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * config.width))
        self.out_proj = nn.Linear(config.width, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).reshape(B, N, 3, self.heads, C // self.heads) \
            .permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        return self.out_proj(y.transpose(1, 2).reshape(B, N, C))


class QuickGELU(nn.Module):
    """CLIP's activation: x * sigmoid(1.702 x), not the erf GELU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Mlp(nn.Module):
    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.width, 4 * config.width)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(4 * config.width, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.width, eps=config.eps)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.width, eps=config.eps)
        self.mlp = Mlp(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(config) for _ in range(config.layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """Normalised images [B, 3, image_size, image_size] -> unit image embeddings [B, output_dim]."""

    def __init__(self, config: CLIPConfig = VITL14_336):
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv2d(3, config.width, kernel_size=config.patch_size, stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(config.width))
        self.positional_embedding = nn.Parameter(torch.empty(config.grid ** 2 + 1, config.width))
        self.ln_pre = nn.LayerNorm(config.width, eps=config.eps)
        self.transformer = Transformer(config)
        self.ln_post = nn.LayerNorm(config.width, eps=config.eps)
        self.proj = nn.Parameter(torch.empty(config.width, config.output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            raise ValueError(f"input {tuple(x.shape[-2:])}: the positional embeddings are for {size} x {size}")
        tokens = self.conv1(x).flatten(2).transpose(1, 2)  # [B, grid*grid, width]
        tokens = torch.cat([self.class_embedding.expand(len(x), 1, -1), tokens], dim=1) + self.positional_embedding
        tokens = self.transformer(self.ln_pre(tokens))
        embedding = self.ln_post(tokens[:, 0]) @ self.proj
        return embedding / embedding.norm(dim=-1, keepdim=True)  # encode_image(normalize=True)


# ----------------------------------------------------------------------------------------------------------------
# Weights


def expected_shapes(config: CLIPConfig = VITL14_336) -> dict[str, tuple[int, ...]]:
    """Every key of the image tower (without `visual.`) and its shape, read off the network on the meta device."""
    with torch.device("meta"):
        net = VisionTransformer(config)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def image_tower(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `visual.*` tensors of a whole-model state dict, without the prefix (a tower-only dict is kept as it is)."""
    if any(k.startswith(PREFIX) for k in state_dict):
        return {k[len(PREFIX):]: v for k, v in state_dict.items() if k.startswith(PREFIX)}
    return dict(state_dict)


def check_state_dict(tower: dict[str, torch.Tensor], config: CLIPConfig, where: str) -> None:
    """Strict loading with a message that names what is wrong: missing, extra and misshapen keys, and the model."""
    want = expected_shapes(config)
    missing = [k for k in want if k not in tower]
    extra = sorted(k for k in tower if k not in want)
    wrong = [f"{k}: expected {list(want[k])}, found {list(tower[k].shape)}"
             for k in want if k in tower and tuple(tower[k].shape) != want[k]]
    if not (missing or extra or wrong):
        return
    lines = [f"{where}: not the image tower of CLIP ViT-L/14@{config.image_size}px in OpenAI's layout "
             f"(width {config.width}, {config.layers} blocks, patch {config.patch_size}, {config.output_dim}-d output)"]
    for label, items in (("missing keys", missing), ("unexpected keys", extra), ("wrong shapes", wrong)):
        if items:
            shown = ", ".join(PREFIX + k for k in items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            lines.append(f"  {label}: {shown}")
    positions = tower.get("positional_embedding")
    if positions is not None and positions.ndim == 2 and positions.shape[0] != config.grid ** 2 + 1:
        side = round((positions.shape[0] - 1) ** 0.5) * config.patch_size
        lines.append(f"  its positional embeddings are for {side} px, not {config.image_size}: CMMD uses "
                     f"{WEIGHTS.filename}, not the 224 px ViT-L-14.pt")
    raise BenchError("\n".join(lines))


def build_network(state_dict: dict[str, torch.Tensor], config: CLIPConfig = VITL14_336,
                  where: str = "state dict") -> VisionTransformer:
    """The image tower with `state_dict` (whole model or tower only) loaded strictly, float32, eval mode."""
    tower = image_tower(state_dict)
    check_state_dict(tower, config, where)
    with torch.device("meta"):
        net = VisionTransformer(config)
    net.load_state_dict({k: v.float() for k, v in tower.items()}, strict=True, assign=True)
    return net.eval().requires_grad_(False)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A TorchScript archive (OpenAI's release) read as data, or a torch file holding a state dict."""
    if is_torchscript(path):
        return torchscript_tensors(path, "CLIP TorchScript archive")
    return find_state_dict(load_torch_file(path, "CLIP checkpoint"), ("state_dict", "model"), path)


def random_state_dict(seed: int = 0, config: CLIPConfig = VITL14_336) -> dict[str, torch.Tensor]:
    """Random image-tower weights under `visual.`, for tests: scaled so that every part of the network matters
    (positional embeddings as large as the patch embeddings, LayerNorm gains away from 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in expected_shapes(config).items():
        value = torch.randn(*shape, generator=g)
        if name.endswith("bias"):
            value *= 0.1
        elif name.split(".")[-2:-1] in (["ln_1"], ["ln_2"], ["ln_pre"], ["ln_post"]):  # LayerNorm gains
            value = 1 + 0.1 * value
        elif name == "conv1.weight":
            value *= (3 * config.patch_size ** 2) ** -0.5 * 4  # inputs are normalised pixels of std ~1
        elif name == "proj":
            value *= config.width ** -0.5
        elif name.endswith("weight"):  # Linear and in_proj: [out, in]
            value *= shape[1] ** -0.5
        out[PREFIX + name] = value  # class and positional embeddings stay N(0, 1)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """CMMD's `_center_crop_and_resize`: the centred square of side min(w, h), PIL BICUBIC to size x size, uint8."""
    im = Image.fromarray(image, "RGB")
    w, h = im.size
    side = min(w, h)
    top, left = (h - side) // 2, (w - side) // 2
    return np.asarray(im.crop((left, top, left + side, top + side)).resize((size, size), resample=Image.BICUBIC))


def preprocess(images: np.ndarray, size: int = VITL14_336.image_size,
               device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 NHWC -> CLIP's input: cropped and resized as CMMD does, /255, (x - mean) / std; float32 NCHW."""
    x = np.stack([center_crop_resize(im, size) for im in images]).astype(np.float32) / 255
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    mean = torch.tensor(MEAN, dtype=torch.float32, device=x.device).reshape(1, -1, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32, device=x.device).reshape(1, -1, 1, 1)
    return (x - mean) / std


# ----------------------------------------------------------------------------------------------------------------
# The extractor


class CLIPExtractor(ChunkedExtractor):
    """`extract(images)` -> {"clip": float32 [N, 768] unit rows}, in chunks of `batch_size`; `provenance`."""

    name = "clip"
    arrays = {"clip": VITL14_336.output_dim}

    def __init__(self, state_dict: dict[str, torch.Tensor], config: CLIPConfig = VITL14_336, device: str = "cpu",
                 batch_size: int = 32, provenance: dict | None = None, where: str = "state dict"):
        _check_batch_size(batch_size)
        self.device = torch.device(check_device(device))
        self.net = build_network(state_dict, config, where).to(self.device)
        self.config = config
        self.arrays = {"clip": config.output_dim}
        self.batch_size = batch_size
        self.has_logits = False
        self.provenance = {"network": "clip_vit_l14_336px" if config == VITL14_336 else f"clip ViT {config}",
                           **(provenance or {}),
                           "preprocessing": f"center crop, PIL BICUBIC to {config.image_size}, /255, CLIP mean/std",
                           "resolution": config.image_size, "device": str(device), "torch": torch.__version__,
                           "python": platform.python_version()}

    def _forward(self, images: np.ndarray) -> np.ndarray:
        return self.net(preprocess(images, self.config.image_size, self.device)).float().cpu().numpy()


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise BenchError(f"batch_size: expected a positive integer, found {batch_size!r}")


def load(weights: str | Path | None = None, device: str = "cpu", batch_size: int = 32,
         allow_download: bool = True) -> CLIPExtractor:
    """CMMD's extractor: `weights` if given (the user's file, whatever its digest: `official_weights` says whether
    it is the published one), else OpenAI's `ViT-L-14-336px.pt` from the cache or a download (about 0.9 GB, held to
    its pin); offline, a MissingFilesError says where to put it. Options are checked before anything is fetched."""
    _check_batch_size(batch_size)
    check_device(device)
    path, official = resolve_weights(WEIGHTS, weights, allow_download)
    provenance = {"weights": str(path), "weights_sha256": sha256_file(path), "weights_source": WEIGHTS.source,
                  "official_weights": official}
    return CLIPExtractor(read_weights(path), VITL14_336, device, batch_size, provenance, where=str(path))


# The registration (bench/features/__init__.py lists this module): CMMD and the *_clip metrics read "clip".
from bench.features import FeatureNetwork, NetworkOption  # noqa: E402  (the registry imports this module while it loads)

NETWORK = FeatureNetwork(
    name="clip",
    arrays={"clip": VITL14_336.output_dim},
    load=lambda **options: load(**options),  # looked up at call time, so a test may replace `load`
    description="OpenAI CLIP ViT-L/14@336px image embedding (L2-normalised), CMMD's preprocessing",
    embedding="clip",
    title="CLIP",
    options=(
        NetworkOption("--clip-weights", "weights", is_path=True,
                      help="CLIP weights for CMMD and the *_clip metrics: OpenAI's ViT-L-14-336px.pt (TorchScript) or "
                           "a state dict with its keys; your file is used as given (results say when it is not the "
                           "published one) [cache, else download]."),
    ),
)
