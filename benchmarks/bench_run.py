"""Overhead of `bench run` over bare sampling + feature extraction, and its peak memory versus --num-samples.

    python benchmarks/bench_run.py [--num-samples 4096] [--batch-size 64]

A tiny conv generator (per-sample seeded latents, like the real plugins) and a tiny conv feature extractor
run on CPU, so the harness's own costs -- label/seed hashing, shard files, progress, gathering -- are not
hidden behind a big network. The baseline is the loop a hand-written script would run: sample a batch,
extract features, keep them, score once. Peak memory is the child process's max RSS for two run sizes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.run.executor  # noqa: E402
from bench.generator import Generator  # noqa: E402
from bench.run.executor import RunSettings, execute  # noqa: E402
from bench.run.plan import SamplingPlan  # noqa: E402
from bench.references import Reference  # noqa: E402
from bench.run.sample import SampleTask  # noqa: E402


class TinyConvGenerator(Generator):
    """4x8x8 Gaussian latents per seed -> two convs and an upsample -> 32x32 RGB."""

    name, image_size, eval_size, num_classes = "tiny-conv", 32, 32, 1000

    def __init__(self, ckpt=None, device="cpu", **overrides):
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(4, 32, 3, padding=1), nn.GELU(), nn.Upsample(scale_factor=4),
                                 nn.Conv2d(32, 3, 3, padding=1), nn.Tanh()).eval()
        self.embed = nn.Embedding(1000, 4)

    def config(self):
        return {"model": "tiny-conv"}

    def required_files(self):
        return []

    def sample(self, labels, seeds):
        z = torch.stack([torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        with torch.no_grad():
            x = self.net(z + self.embed(labels)[:, :, None, None])
        return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


class TinyExtractor:
    """A strided conv and global pooling: 64-d 'pool', 32-d 'spatial', 10 'logits'."""

    provenance = {"name": "tiny-extractor"}
    has_logits = True

    def __init__(self):
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 106, 5, stride=2)

    def extract(self, images):
        with torch.no_grad():
            h = self.conv(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).mean(dim=(2, 3)).numpy()
        return {"pool": h[:, :64], "spatial": h[:, 64:96], "logits": h[:, 96:]}


class BigTinyConvGenerator(TinyConvGenerator):
    """The same, nearest-upsampled to 128x128: images big enough that holding them all would show in RSS."""

    name, image_size, eval_size = "tiny-conv-128", 128, 128

    def sample(self, labels, seeds):
        return super().sample(labels, seeds).repeat(4, axis=1).repeat(4, axis=2)


def trivial_scorer(ref, extractors, metrics=None):
    return lambda features: {"metrics": {"mean_pool": float(features["pool"].mean()), "n": len(features["pool"])}}


def baseline(num_samples: int, batch_size: int, seed: int) -> tuple[float, float]:
    """What a bare script does: the same samples and features, no shards, no files. (wall s, CPU s)"""
    start, cpu = time.perf_counter(), time.process_time()
    gen, ex = TinyConvGenerator(), TinyExtractor()
    plan = SamplingPlan(num_samples, 1000, seed)
    feats = []
    for b in range(0, num_samples, batch_size):
        idx = np.arange(b, min(b + batch_size, num_samples))
        images = gen.sample_for_eval(torch.from_numpy(plan.labels(idx)), torch.from_numpy(plan.seeds(idx)))
        feats.append(ex.extract(images))
    trivial_scorer(None, None)({k: np.concatenate([f[k] for f in feats]) for k in feats[0]})
    return time.perf_counter() - start, time.process_time() - cpu


def harness(num_samples: int, batch_size: int, seed: int, runs_dir: str, save_npz: bool = False,
            generator: type = TinyConvGenerator) -> tuple[float, float]:
    """The same work through `bench.run.executor.execute` (generator built inside, shards, result.json). (wall s,
    CPU s)"""
    bench.run.executor.load_preset = lambda name: generator
    bench.run.executor.resolve_reference = lambda name, allow_download=True: Reference(name, Path(__file__), None)
    task = SampleTask(num_samples=num_samples, seed=seed, save_npz=save_npz)
    settings = RunSettings(generator="tiny-conv", batch_size=batch_size, shard_size=1024, runs_dir=runs_dir, ref="none")
    start, cpu = time.perf_counter(), time.process_time()
    execute(task, settings, extractors=[TinyExtractor()], scorer=trivial_scorer)
    return time.perf_counter() - start, time.process_time() - cpu


def child_peak_rss(num_samples: int, batch_size: int) -> float:
    """Max RSS (MiB) of a fresh process doing one 128x128 `bench run --save-npz` of `num_samples`."""
    with tempfile.TemporaryDirectory() as runs:
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_run, resource; "
                f"bench_run.harness({num_samples}, {batch_size}, 0, {runs!r}, True, bench_run.BigTinyConvGenerator); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    base, runs = [], []
    for r in range(args.repeats):  # interleaved, best of N: the machine is shared
        base.append(baseline(args.num_samples, args.batch_size, r))
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(harness(args.num_samples, args.batch_size, r, tmp))
    bw, bc = min(x[0] for x in base), min(x[1] for x in base)
    hw, hc = min(x[0] for x in runs), min(x[1] for x in runs)
    print(f"bare sample+extract : wall {bw:.3f} s ({args.num_samples / bw:.0f} img/s), CPU {bc:.3f} s")
    print(f"bench run           : wall {hw:.3f} s ({args.num_samples / hw:.0f} img/s), CPU {hc:.3f} s")
    print(f"harness overhead    : wall {100 * (hw / bw - 1):+.1f} %, CPU {100 * (hc / bc - 1):+.1f} %  (target < 5 %)")
    small, large = args.num_samples // 4, args.num_samples * 2
    rss = {n: child_peak_rss(n, args.batch_size) for n in (small, large)}
    for n, mib in rss.items():
        print(f"peak RSS, 128x128, --num-samples {n:6d} --save-npz : {mib:.0f} MiB "
              f"(all images would be {n * 128 * 128 * 3 / 2**20:.0f} MiB)")
    print(json.dumps({"overhead_wall": hw / bw, "overhead_cpu": hc / bc, "peak_rss_mib": rss}))


if __name__ == "__main__":
    main()
