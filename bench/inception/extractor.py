"""The feature extractor others call: uint8 NHWC images -> ADM's pool / spatial / logits features.

Both backends produce the same dict: `pool` [N, 2048] (pool_3), `spatial` [N, 2023] (the first 7 channels of
`mixed_6/conv`, flattened in NHWC order as ADM does), and `logits` [N, 1008] (pool_3 @ softmax/weights, no bias)
when the weights carry the softmax layer.
"""

from __future__ import annotations

import platform
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.batches import check_images
from bench.device import exact_float32
from bench.errors import BenchError
from bench.inception.network import CONFIG, InceptionV3
from bench.inception.weights import InceptionWeights, logits_unavailable_reason


class TorchInception:
    """The PyTorch network with batch norm folded, channels_last, under inference_mode.

    On CPU a batch is cut into chunks of `cpu_chunk` images run by one single-threaded worker per core, instead of
    one OpenMP team per op: OpenMP waits at a barrier after every op for its slowest thread, which on a shared
    machine (a descheduled thread) halves throughput; independent chunks keep every core busy.
    """

    cpu_chunk = 4

    def __init__(self, weights: InceptionWeights, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.net = InceptionV3().load_canonical(weights.tensors).eval().to(self.device)
        self.net = self.net.to(memory_format=torch.channels_last)
        softmax = weights.tensors.get("softmax.weight")
        self.softmax = None if softmax is None else softmax.to(self.device)
        self.workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="inception") if self.workers > 1 else None

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        with exact_float32():  # set here, once, not in the workers: the flags are process-wide
            if self.pool is None or len(images) <= self.cpu_chunk:
                return self.forward(images)
            chunks = [images[i:i + self.cpu_chunk] for i in range(0, len(images), self.cpu_chunk)]
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # process-wide in torch too; restored below
            try:
                parts = list(self.pool.map(self.forward, chunks))
            finally:
                torch.set_num_threads(threads)
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    @torch.inference_mode()
    def forward(self, images: np.ndarray) -> dict[str, np.ndarray]:
        # NHWC uint8 -> NCHW float32 view whose memory is already channels_last.
        x = torch.from_numpy(np.require(images, requirements=["C", "W"])).to(self.device).permute(0, 3, 1, 2).float()
        pool, spatial = self.net(x)
        out = {"pool": pool, "spatial": spatial[..., :CONFIG.spatial_channels].reshape(len(x), -1)}
        if self.softmax is not None:
            out["logits"] = pool @ self.softmax
        return {k: v.float().cpu().numpy() for k, v in out.items()}


class InceptionExtractor:
    """`extract(images)` in chunks of `batch_size`; `has_logits`, `logits_unavailable_reason`, `provenance`."""

    name = "inception"

    def __init__(self, weights: InceptionWeights, backend: str = "torch", device: str = "cpu", batch_size: int = 50):
        if backend == "torch":
            self.runner = TorchInception(weights, device)
        elif backend == "tf":
            from bench.inception.tf_backend import TFInception

            self.runner = TFInception(weights)
        else:
            raise BenchError(f"backend: expected 'torch' or 'tf', found {backend!r}")
        if batch_size < 1:
            raise BenchError(f"batch_size: expected a positive integer, found {batch_size}")
        self.batch_size = batch_size
        self.backend = backend
        self.has_logits = weights.has_logits
        self.logits_unavailable_reason = logits_unavailable_reason(weights)
        self.provenance = {**weights.provenance, "backend": backend, "device": str(device),
                           "torch": torch.__version__, "tensorflow": _tf_version(backend),
                           "python": platform.python_version()}
        if backend == "tf":
            self.provenance["tf_graph"] = ("imported " + str(weights.graph_path) if weights.graph_path
                                           else "written from the canonical weights (tf_backend.build_graph_def)")

    @property
    def arrays(self) -> dict[str, int]:
        """The feature arrays this extractor returns (logits only with softmax weights), name -> width."""
        widths = {"pool": CONFIG.pool_dim, "spatial": CONFIG.spatial_size ** 2 * CONFIG.spatial_channels,
                  "logits": CONFIG.num_classes}
        return {k: v for k, v in widths.items() if k != "logits" or self.has_logits}

    def extract(self, images) -> dict[str, np.ndarray]:
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        images = check_images(images)
        starts = range(0, len(images), self.batch_size)
        parts = [self.runner.run(images[i:i + self.batch_size])
                 for i in tqdm(starts, desc="inception", leave=False, disable=len(starts) < 8)]
        return {k: np.concatenate([p[k] for p in parts]).astype(np.float32, copy=False) if parts
                else np.zeros((0, width), np.float32) for k, width in self.arrays.items()}


def _tf_version(backend: str) -> str | None:
    if backend != "tf":
        return None
    import tensorflow as tf

    return tf.__version__
