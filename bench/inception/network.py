"""The 2015-12-05 Inception-v3 FID graph (`classify_image_graph_def.pb`) in PyTorch, as ADM's evaluator runs it.

ADM feeds float32 NHWC images in [0, 255] into the graph's `ExpandDims:0` and reads `pool_3:0` and
`mixed_6/conv:0`. Everything between is reproduced here with TensorFlow's conventions, each of which differs from
the PyTorch default one would reach for:

- resize: TF1 legacy `ResizeBilinear` (align_corners=False, half_pixel_centers=False), source coordinate
  `dst * in / out` computed in float32 -- not `F.interpolate`, which samples at half-pixel centres;
- normalisation: the graph's `Sub` (128) and `Mul` (1/128) nodes;
- padding: TF "SAME" pads `total = max((ceil(in/s) - 1) * s + k - in, 0)` with the odd cell at the bottom/right;
- average pools divide by the number of *valid* cells (count_include_pad=False);
- `mixed_10` pools its last branch with a *max* pool (a quirk of this graph that torchvision's Inception lacks);
- batch norm is `BatchNormWithGlobalNormalization`, epsilon 0.001, no gamma (scale_after_normalization=False).

Layers carry the graph's own names ("mixed_9/tower/mixed/conv") so weights map one-to-one from every source. Batch
norm is folded into the convolution at load time: the network only ever runs inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class InceptionConfig:
    """Every constant of the graph in one place."""

    input_size: int = 299  # ResizeBilinear/size
    bn_eps: float = 0.001  # variance_epsilon of every BatchNormWithGlobalNormalization node
    pool_dim: int = 2048  # pool_3
    num_classes: int = 1008  # softmax/weights columns
    spatial_layer: str = "mixed_6/conv"  # ADM's FID_SPATIAL_NAME
    spatial_size: int = 17  # mixed_6 is 17x17
    spatial_channels: int = 7  # ADM keeps spatial[..., :7]


CONFIG = InceptionConfig()


# ----------------------------------------------------------------------------------------------------------------
# TensorFlow conventions


def tf1_resize_bilinear(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """TF1 `ResizeBilinear(align_corners=False, half_pixel_centers=False)` of an NCHW float32 tensor.

    TF computes `scale = in / out` and `src = dst * scale` in float32, takes `floor(src)` and `min(ceil(src), in-1)`
    as neighbours, and interpolates along x then y as `a + (b - a) * lerp`. The same float32 operations in the same
    order are used here so the result matches TF to the last bit or two.
    """

    def axis(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
        src = torch.arange(out_size, dtype=torch.float32) * scale
        lower = src.floor()
        lerp = src - lower
        upper = src.ceil().clamp(max=in_size - 1)
        return lower.long().to(x.device), upper.long().to(x.device), lerp.to(x.device)

    y0, y1, y_lerp = axis(x.shape[2], out_h)
    x0, x1, x_lerp = axis(x.shape[3], out_w)
    # TF interpolates the rows y0 and y1 along x for every output pixel; interpolating every *source* row along x
    # once and then picking rows y0 and y1 gives the same floats with less work (256 source rows, not 2 x 299).
    left = x.index_select(3, x0)
    rows = left + (x.index_select(3, x1) - left) * x_lerp
    top = rows.index_select(2, y0)
    return top + (rows.index_select(2, y1) - top) * y_lerp[:, None]


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) along one axis: the odd cell goes after (bottom/right)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def tf_pool(x: torch.Tensor, kind: str, kernel: int, stride: int, padding: str) -> torch.Tensor:
    """TF `MaxPool` / `AvgPool` on NCHW: SAME pads max pools with -inf and averages only over valid cells."""
    if padding == "VALID":
        pool = F.max_pool2d if kind == "max" else F.avg_pool2d
        return pool(x, kernel, stride)
    (top, bottom), (left, right) = tf_same_pads(x.shape[2], kernel, stride), tf_same_pads(x.shape[3], kernel, stride)
    if top == bottom and left == right:  # symmetric: torch's own padding does exactly this (and is faster)
        if kind == "max":
            return F.max_pool2d(x, kernel, stride, padding=(top, left))
        return F.avg_pool2d(x, kernel, stride, padding=(top, left), count_include_pad=False)
    pads = (left, right, top, bottom)
    if kind == "max":
        return F.max_pool2d(F.pad(x, pads, value=-math.inf), kernel, stride)
    total = F.avg_pool2d(F.pad(x, pads), kernel, stride, divisor_override=1)
    count = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pads), kernel, stride, divisor_override=1)
    return total / count


# ----------------------------------------------------------------------------------------------------------------
# Blocks


class ConvBNReLU(nn.Module):
    """Conv2D -> BatchNormWithGlobalNormalization -> Relu, with the batch norm folded into weight and bias."""

    def __init__(self, name: str, c_in: int, c_out: int, kernel: tuple[int, int], stride: int = 1,
                 padding: str = "SAME"):
        super().__init__()
        self.name, self.stride, self.padding = name, stride, padding
        self.weight = nn.Parameter(torch.empty(c_out, c_in, *kernel), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(c_out), requires_grad=False)

    def load_folded(self, tensors: dict[str, torch.Tensor], eps: float) -> None:
        """y = (conv(x, w) - mean) * gamma / sqrt(var + eps) + beta  ==  conv(x, w * s) + (beta - mean * s)."""
        weight = tensors[f"{self.name}.weight"].double()
        scale = tensors[f"{self.name}.gamma"].double() / (tensors[f"{self.name}.var"].double() + eps).sqrt()
        if weight.shape != self.weight.shape:
            raise ValueError(f"{self.name}: weight {tuple(weight.shape)} != {tuple(self.weight.shape)}")
        self.weight.copy_((weight * scale[:, None, None, None]).float())
        self.bias.copy_((tensors[f"{self.name}.beta"].double() - tensors[f"{self.name}.mean"].double() * scale).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.weight.shape[2:]
        if kh == kw == 1 and self.stride == 1:
            # A 1x1 conv is a matmul over channels: on NHWC memory F.linear is one GEMM with the bias fused in.
            nhwc = x.permute(0, 2, 3, 1)
            return F.relu_(F.linear(nhwc, self.weight[:, :, 0, 0], self.bias)).permute(0, 3, 1, 2)
        if self.padding == "VALID":
            pad = (0, 0)
        else:
            top, bottom = tf_same_pads(x.shape[2], kh, self.stride)
            left, right = tf_same_pads(x.shape[3], kw, self.stride)
            if top != bottom or left != right:
                x, pad = F.pad(x, (left, right, top, bottom)), (0, 0)
            else:
                pad = (top, left)
        return F.relu_(F.conv2d(x, self.weight, self.bias, self.stride, pad))


class InceptionA(nn.Module):
    """mixed, mixed_1, mixed_2 (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, name: str, c_in: int, pool_features: int):
        super().__init__()
        self.conv = ConvBNReLU(f"{name}/conv", c_in, 64, (1, 1))
        self.tower = nn.Sequential(ConvBNReLU(f"{name}/tower/conv", c_in, 48, (1, 1)),
                                   ConvBNReLU(f"{name}/tower/conv_1", 48, 64, (5, 5)))
        self.tower_1 = nn.Sequential(ConvBNReLU(f"{name}/tower_1/conv", c_in, 64, (1, 1)),
                                     ConvBNReLU(f"{name}/tower_1/conv_1", 64, 96, (3, 3)),
                                     ConvBNReLU(f"{name}/tower_1/conv_2", 96, 96, (3, 3)))
        self.tower_2 = ConvBNReLU(f"{name}/tower_2/conv", c_in, pool_features, (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = tf_pool(x, "avg", 3, 1, "SAME")
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(pooled)], 1)


class ReductionA(nn.Module):
    """mixed_3 (35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, name: str, c_in: int):
        super().__init__()
        self.conv = ConvBNReLU(f"{name}/conv", c_in, 384, (3, 3), 2, "VALID")
        self.tower = nn.Sequential(ConvBNReLU(f"{name}/tower/conv", c_in, 64, (1, 1)),
                                   ConvBNReLU(f"{name}/tower/conv_1", 64, 96, (3, 3)),
                                   ConvBNReLU(f"{name}/tower/conv_2", 96, 96, (3, 3), 2, "VALID"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), tf_pool(x, "max", 3, 2, "VALID")], 1)


class InceptionC(nn.Module):
    """mixed_4 .. mixed_7 (17x17): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""

    def __init__(self, name: str, c_mid: int):
        super().__init__()
        self.conv = ConvBNReLU(f"{name}/conv", 768, 192, (1, 1))
        self.tower = nn.Sequential(ConvBNReLU(f"{name}/tower/conv", 768, c_mid, (1, 1)),
                                   ConvBNReLU(f"{name}/tower/conv_1", c_mid, c_mid, (1, 7)),
                                   ConvBNReLU(f"{name}/tower/conv_2", c_mid, 192, (7, 1)))
        self.tower_1 = nn.Sequential(ConvBNReLU(f"{name}/tower_1/conv", 768, c_mid, (1, 1)),
                                     ConvBNReLU(f"{name}/tower_1/conv_1", c_mid, c_mid, (7, 1)),
                                     ConvBNReLU(f"{name}/tower_1/conv_2", c_mid, c_mid, (1, 7)),
                                     ConvBNReLU(f"{name}/tower_1/conv_3", c_mid, c_mid, (7, 1)),
                                     ConvBNReLU(f"{name}/tower_1/conv_4", c_mid, 192, (1, 7)))
        self.tower_2 = ConvBNReLU(f"{name}/tower_2/conv", 768, 192, (1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Also returns the first branch: `mixed_6/conv` is ADM's spatial feature."""
        first = self.conv(x)
        pooled = tf_pool(x, "avg", 3, 1, "SAME")
        return torch.cat([first, self.tower(x), self.tower_1(x), self.tower_2(pooled)], 1), first


class ReductionB(nn.Module):
    """mixed_8 (17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, name: str):
        super().__init__()
        self.tower = nn.Sequential(ConvBNReLU(f"{name}/tower/conv", 768, 192, (1, 1)),
                                   ConvBNReLU(f"{name}/tower/conv_1", 192, 320, (3, 3), 2, "VALID"))
        self.tower_1 = nn.Sequential(ConvBNReLU(f"{name}/tower_1/conv", 768, 192, (1, 1)),
                                     ConvBNReLU(f"{name}/tower_1/conv_1", 192, 192, (1, 7)),
                                     ConvBNReLU(f"{name}/tower_1/conv_2", 192, 192, (7, 1)),
                                     ConvBNReLU(f"{name}/tower_1/conv_3", 192, 192, (3, 3), 2, "VALID"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), tf_pool(x, "max", 3, 2, "VALID")], 1)


class InceptionE(nn.Module):
    """mixed_9, mixed_10 (8x8): 1x1 | 1x1-(1x3,3x1) | 1x1-3x3-(1x3,3x1) | pool-1x1 (avg in mixed_9, MAX in mixed_10)."""

    def __init__(self, name: str, c_in: int, pool: str):
        super().__init__()
        self.pool = pool
        self.conv = ConvBNReLU(f"{name}/conv", c_in, 320, (1, 1))
        self.tower = ConvBNReLU(f"{name}/tower/conv", c_in, 384, (1, 1))
        self.tower_mixed = ConvBNReLU(f"{name}/tower/mixed/conv", 384, 384, (1, 3))
        self.tower_mixed_1 = ConvBNReLU(f"{name}/tower/mixed/conv_1", 384, 384, (3, 1))
        self.tower_1 = nn.Sequential(ConvBNReLU(f"{name}/tower_1/conv", c_in, 448, (1, 1)),
                                     ConvBNReLU(f"{name}/tower_1/conv_1", 448, 384, (3, 3)))
        self.tower_1_mixed = ConvBNReLU(f"{name}/tower_1/mixed/conv", 384, 384, (1, 3))
        self.tower_1_mixed_1 = ConvBNReLU(f"{name}/tower_1/mixed/conv_1", 384, 384, (3, 1))
        self.tower_2 = ConvBNReLU(f"{name}/tower_2/conv", c_in, 192, (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.tower(x), self.tower_1(x)
        pooled = tf_pool(x, self.pool, 3, 1, "SAME")
        return torch.cat([self.conv(x), self.tower_mixed(a), self.tower_mixed_1(a),
                          self.tower_1_mixed(b), self.tower_1_mixed_1(b), self.tower_2(pooled)], 1)


# ----------------------------------------------------------------------------------------------------------------
# The network


class InceptionV3(nn.Module):
    """uint8-range NHWC images -> (pool_3 [N, 2048], mixed_6/conv [N, 17, 17, 192] NHWC)."""

    def __init__(self, config: InceptionConfig = CONFIG):
        super().__init__()
        self.config = config
        self.register_buffer("input_sub", torch.tensor(128.0))
        self.register_buffer("input_mul", torch.tensor(1 / 128))
        self.conv = ConvBNReLU("conv", 3, 32, (3, 3), 2, "VALID")
        self.conv_1 = ConvBNReLU("conv_1", 32, 32, (3, 3), 1, "VALID")
        self.conv_2 = ConvBNReLU("conv_2", 32, 64, (3, 3))
        self.conv_3 = ConvBNReLU("conv_3", 64, 80, (1, 1), 1, "VALID")
        self.conv_4 = ConvBNReLU("conv_4", 80, 192, (3, 3), 1, "VALID")
        self.mixed = InceptionA("mixed", 192, 32)
        self.mixed_1 = InceptionA("mixed_1", 256, 64)
        self.mixed_2 = InceptionA("mixed_2", 288, 64)
        self.mixed_3 = ReductionA("mixed_3", 288)
        self.mixed_4 = InceptionC("mixed_4", 128)
        self.mixed_5 = InceptionC("mixed_5", 160)
        self.mixed_6 = InceptionC("mixed_6", 160)
        self.mixed_7 = InceptionC("mixed_7", 192)
        self.mixed_8 = ReductionB("mixed_8")
        self.mixed_9 = InceptionE("mixed_9", 1280, "avg")
        self.mixed_10 = InceptionE("mixed_10", 2048, "max")

    def layers(self) -> list[ConvBNReLU]:
        return [m for m in self.modules() if isinstance(m, ConvBNReLU)]

    @torch.no_grad()
    def load_canonical(self, tensors: dict[str, torch.Tensor]) -> InceptionV3:
        """Load the canonical state dict (see `bench.inception.weights`), folding batch norm into the convs."""
        self.input_sub.fill_(float(tensors["input.sub"]))
        self.input_mul.fill_(float(tensors["input.mul"]))
        for layer in self.layers():
            layer.load_folded(tensors, self.config.bn_eps)
        return self

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: float32 NCHW in [0, 255] (any size; channels_last memory is fastest)."""
        size = self.config.input_size
        x = tf1_resize_bilinear(images, size, size)  # ResizeBilinear
        x = (x - self.input_sub) * self.input_mul  # Sub, Mul
        x = self.conv_2(self.conv_1(self.conv(x)))  # 149, 147, 147
        x = tf_pool(x, "max", 3, 2, "VALID")  # pool: 73
        x = self.conv_4(self.conv_3(x))  # 73, 71
        x = tf_pool(x, "max", 3, 2, "VALID")  # pool_1: 35
        x = self.mixed_2(self.mixed_1(self.mixed(x)))
        x = self.mixed_3(x)  # 17
        x, _ = self.mixed_4(x)
        x, _ = self.mixed_5(x)
        x, spatial = self.mixed_6(x)
        x, _ = self.mixed_7(x)
        x = self.mixed_10(self.mixed_9(self.mixed_8(x)))  # 8
        pool = tf_pool(x, "avg", 8, 8, "VALID")  # pool_3
        return pool.flatten(1), spatial.permute(0, 2, 3, 1)
