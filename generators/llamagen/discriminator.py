"""PatchGAN discriminator (pix2pix / taming-transformers), as LlamaGen's tokenizer GAN loss uses it.

Each output logit judges one receptive-field patch (70x70 for the default 3 layers) as real or reconstructed,
so the adversarial signal is about local texture, which is what an L2 + LPIPS objective leaves blurry.

Layout (keys `main.{i}.*`, same indices as LlamaGen's `NLayerDiscriminator`, so its checkpoints load):
    conv4x4/2 (bias) -> LeakyReLU(0.2)
    n_layers-1 x [conv4x4/2 (no bias) -> BatchNorm -> LeakyReLU(0.2)], channels doubling up to 8*ndf
    conv4x4/1 (no bias) -> BatchNorm -> LeakyReLU(0.2)
    conv4x4/1 (bias) -> 1 channel of logits
All convs use padding 1. Weights start N(0, 0.02), BatchNorm scales N(1, 0.02), as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class DiscriminatorConfig:
    in_channels: int = 3
    ndf: int = 64  # channels of the first conv
    n_layers: int = 3  # number of stride-2 convs


class PatchGANDiscriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        config = config or DiscriminatorConfig()
        self.config = config
        ndf, n = config.ndf, config.n_layers
        layers: list[nn.Module] = [
            nn.Conv2d(config.in_channels, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for i in range(1, n):
            prev, mult = mult, min(2**i, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        prev, mult = mult, min(2**n, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(ndf * mult),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1),
        ]
        self.main = nn.Sequential(*layers)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] images in [-1, 1] -> [B, 1, h, w] patch logits."""
        return self.main(images)
