"""The `extract` DINOv2 and CLIP share: a torch network run over uint8 images in chunks of `batch_size`.

A subclass sets `name` (also the name of its one array), `arrays`, `batch_size`, and `_forward(uint8 chunk) ->
float [n, width]`, which runs under `torch.inference_mode` and `exact_float32` (no TF32 on GPUs).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.batches import check_images
from bench.device import exact_float32


class ChunkedExtractor:
    """`extract(images)` -> {name: float32 [N, width]}, the images validated and cut into chunks of `batch_size`."""

    name: str
    arrays: dict[str, int]
    batch_size: int

    def extract(self, images) -> dict[str, np.ndarray]:
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        images = check_images(images)
        starts = range(0, len(images), self.batch_size)
        with torch.inference_mode(), exact_float32():
            parts = [np.asarray(self._forward(images[i:i + self.batch_size]), np.float32)
                     for i in tqdm(starts, desc=self.name, leave=False, disable=len(starts) < 8)]
        if not parts:
            return {self.name: np.zeros((0, self.arrays[self.name]), np.float32)}
        return {self.name: np.concatenate(parts)}

    def _forward(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError
