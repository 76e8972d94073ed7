"""LPIPS (VGG16 variant): the perceptual distance LlamaGen's tokenizer is trained with.

LPIPS(x, y) = sum over five VGG16 stages l of mean_{h,w} w_l . (n(f_l(x)) - n(f_l(y)))^2, where f_l are the
relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 activations of an ImageNet-trained VGG16, n() divides each pixel's
feature vector by its L2 norm (+1e-10), and w_l are learned non-negative 1x1 "lin" heads.

Inputs are in [-1, 1]; the scaling layer maps them to the statistics VGG was trained on.

The parameter names match both published weight files, so real weights load unchanged:
  * `vgg.pth` (LPIPS v0.1 lin heads, as LlamaGen/taming ship it): keys `lin{k}.model.1.weight` (index 0 of each
    head is the dropout layer, which holds no weights);
  * torchvision's `vgg16-397923af.pth`: keys `features.{i}.weight|bias`, which are moved into the five slices
    here under the same layer indices (`net.slice{s}.{i}.weight`), exactly as LPIPS's own vgg16 wrapper names them.
torchvision itself is not needed: the VGG16 convolution stack is written out below.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn

from bench.download import RemoteFile, resolve, resolve_all
from bench.checkpoint import load_torch_file
from bench.errors import BenchError

#: LPIPS v0.1 linear heads for VGG: taming-transformers' copy (md5 d507d7349b931f0638a25a48a722f98a) is byte for
#: byte `lpips/weights/v0.1/vgg.pth` of the `lpips` 0.1.4 wheel on PyPI, whose sha256 is pinned here.
LPIPS_HEADS = RemoteFile("lpips_vgg.pth", "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
                         url="https://heibox.uni-heidelberg.de/f/607503859c864bc1b30b/?dl=1")
#: torchvision's ImageNet VGG16 weights (the backbone LPIPS measures features with); the name carries the prefix.
VGG16_WEIGHTS = RemoteFile("vgg16-397923af.pth", "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
                           url="https://download.pytorch.org/models/vgg16-397923af.pth")

#: torchvision vgg16 `features` layout: conv channels per index, "M" = 2x2 max pool. ReLUs sit after every conv.
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
#: LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: the features[0:4], [4:9], [9:16], [16:23], [23:30] slices.
_SLICE_BOUNDS = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]
CHANNELS = [64, 128, 256, 512, 512]


def _vgg16_feature_layers() -> list[nn.Module]:
    """The first 30 layers of torchvision's vgg16().features, in order (conv3x3 pad 1, in-place ReLU, maxpool)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = v
    assert len(layers) == 30
    return layers


class VGG16Slices(nn.Module):
    """VGG16 conv stack cut into the five slices LPIPS reads; returns the five relu activations."""

    def __init__(self):
        super().__init__()
        layers = _vgg16_feature_layers()
        for s, (lo, hi) in enumerate(_SLICE_BOUNDS, start=1):
            block = nn.Sequential()
            for i in range(lo, hi):
                block.add_module(str(i), layers[i])  # keep torchvision's index so `features.{i}` maps 1:1
            setattr(self, f"slice{s}", block)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for s in range(1, 6):
            x = getattr(self, f"slice{s}")(x)
            outs.append(x)
        return outs


class ScalingLayer(nn.Module):
    """Maps [-1, 1] images to VGG's input statistics (LPIPS's constants, i.e. ImageNet mean/std in [-1, 1] units)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class LinHead(nn.Module):
    """One LPIPS 'lin' head: dropout then a bias-free 1x1 conv to one channel (`model.1.weight` in vgg.pth)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def normalize_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise each pixel's feature vector (LPIPS adds eps to the norm, not inside the sqrt)."""
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """The frozen LPIPS-VGG distance; forward(x, y) returns [B, 1, 1, 1] like the reference implementation."""

    def __init__(self):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = VGG16Slices()
        for k, ch in enumerate(CHANNELS):
            setattr(self, f"lin{k}", LinHead(ch))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        # A loss network: always in eval mode, so its dropout never fires even inside a training loop.
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.net(self.scaling_layer(x))
        fy = self.net(self.scaling_layer(y))
        total = 0.0
        for k in range(len(CHANNELS)):
            diff = (normalize_channels(fx[k]) - normalize_channels(fy[k])) ** 2
            total = total + getattr(self, f"lin{k}")(diff).mean(dim=(2, 3), keepdim=True)
        return total

    def load_weights(self, heads: dict[str, torch.Tensor], vgg: dict[str, torch.Tensor]) -> None:
        """Load the lin heads (vgg.pth layout) and the backbone (torchvision `features.*` or `net.slice*` layout)."""
        state: dict[str, torch.Tensor] = {}
        for key, value in heads.items():
            if key.startswith("lin"):
                state[key] = value
        for key, value in vgg.items():
            if key.startswith("features."):
                idx = int(key.split(".")[1])
                if idx >= 30:
                    continue  # the final max pool and the classifier are not part of LPIPS
                slice_no = next(s for s, (lo, hi) in enumerate(_SLICE_BOUNDS, 1) if lo <= idx < hi)
                state[f"net.slice{slice_no}.{key[len('features.'):]}"] = value
            elif key.startswith("net."):
                state[key] = value
        expected = {k for k in self.state_dict() if not k.startswith("scaling_layer.")}
        missing = sorted(expected - state.keys())
        if missing:
            raise BenchError(
                f"LPIPS weights are incomplete: {len(missing)} tensors missing (e.g. {missing[:3]}). Expected the "
                "LPIPS heads file (keys lin0.model.1.weight ... lin4.model.1.weight) and torchvision's VGG16 "
                "weights (keys features.0.weight ... features.28.bias)."
            )
        own = self.state_dict()
        for key in expected:
            if tuple(state[key].shape) != tuple(own[key].shape):
                raise BenchError(f"LPIPS weight {key}: found shape {tuple(state[key].shape)}, "
                                 f"expected {tuple(own[key].shape)}")
        self.load_state_dict(state, strict=False)


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    state = load_torch_file(path, "LPIPS weights file")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BenchError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return state


def load_lpips(heads_path: str | Path | None = None, vgg_path: str | Path | None = None,
               allow_download: bool = True) -> LPIPS | None:
    """The pretrained LPIPS network, or None (with one clear warning) when its weights are not available.

    Training without the perceptual term still works, it is just not the published recipe; that is why this
    warns instead of failing.
    """
    if heads_path is not None or vgg_path is not None:
        # The user asked for LPIPS explicitly: a missing or wrong file is an error, not a silent downgrade.
        heads_file = resolve(LPIPS_HEADS, heads_path, allow_download=allow_download)
        vgg_file = resolve(VGG16_WEIGHTS, vgg_path, allow_download=allow_download)
    else:
        try:
            heads_file, vgg_file = resolve_all([LPIPS_HEADS, VGG16_WEIGHTS], allow_download=allow_download)
        except BenchError as err:
            warnings.warn(
                "LPIPS weights are not available, so the tokenizer trains WITHOUT the perceptual loss "
                f"(the published recipe uses it).\n{err}", RuntimeWarning, stacklevel=2,
            )
            return None
    model = LPIPS()
    model.load_weights(_load_state(heads_file), _load_state(vgg_file))
    return model
