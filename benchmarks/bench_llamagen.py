"""LlamaGen token-generation speed on this machine: GPT-B (random weights) with CFG, 256x256 (256 tokens).

Compares, in one run and on the same model:
  * cached    -- static KV cache, one-token decode steps (generate.py), eager
  * compiled  -- the same with torch.compile on the one-token step (--compile)
  * bf16      -- the cached loop with bfloat16 weights (`--precision bf16`; the softmax stays float32)
  * naive     -- no cache: the whole prefix is recomputed at every step (generate_tokens_naive's scheme)
and reports tokens/s, seconds per image (token generation only), the ratio to naive, the VQ-16 decode time
per image, and peak memory.

To stay short on a shared CPU, only `--steps` decode steps are timed and the cost of the 256-token image is
extrapolated: cached steps cost the same at every position (attention over <= 264 cached keys is negligible
next to the weight matmuls), and naive step t costs a + b * t, fitted from two prefix lengths.

    python benchmarks/bench_llamagen.py --batch 8 32 --steps 16 [--compile] [--threads 1]

GPU mode (`--gpu`): whole images, not extrapolated -- `generate_tokens` for all 256 tokens of GPT-B and GPT-XL
(random weights, bf16, CFG 2.0) at batch 64-256, eager against torch.compile'd decode steps, in images/s:

    python benchmarks/bench_llamagen.py --gpu --models GPT-B GPT-XL --batch 64 128 256
"""

from __future__ import annotations

import argparse
import copy
import resource
import time

import torch

from bench.generator import per_sample_generators, per_sample_seeds  # noqa: E402
from generators.llamagen.generate import generate_tokens, sample_from_logits
from generators.llamagen.gpt import GPT, gpt_config
from generators.llamagen.vq import VQModel, vq_config

NUM_TOKENS = 256  # 256x256 image, downsample 16


def timed(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


class Clock:
    """Wall and process-CPU seconds of a block: on a shared machine the CPU time is the steadier number."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def cached_step_seconds(gpt: GPT, batch: int, steps: int, compile: bool) -> tuple[float, float]:
    """Mean (wall, CPU) seconds of one CFG decode step (2*batch rows) including sampling, after warm-up."""
    labels = torch.arange(batch) % 1000
    rows = torch.cat([labels, torch.full_like(labels, 1000)])
    gens = per_sample_generators(per_sample_seeds(0, batch), "cpu")
    gpt.setup_kv_cache(rows.shape[0])
    step = torch.compile(gpt.decode_step, fullgraph=True, dynamic=False) if compile else gpt.decode_step
    with torch.no_grad():
        logits = gpt.prefill(rows)
        tok = sample_from_logits(logits[:batch] * 2 - logits[batch:], gens)

        def one(t):
            nonlocal tok
            out = step(torch.cat([tok, tok])[:, None], torch.tensor([t]))
            tok = sample_from_logits(out[batch:] + (out[:batch] - out[batch:]) * 2.0, gens)

        for t in range(1, 3):  # warm-up (and compilation)
            one(t)
        with Clock() as clock:
            for t in range(3, 3 + steps):
                one(t)
    return clock.wall / steps, clock.cpu / steps


def naive_image_seconds(gpt: GPT, batch: int) -> float:
    """Seconds to generate all 256 tokens by full recomputation, from timings at two prefix lengths."""
    labels = torch.arange(batch) % 1000
    rows = torch.cat([labels, torch.full_like(labels, 1000)])
    lengths = (16, 64)
    with torch.no_grad():
        costs = [timed(lambda n=n: gpt(rows, torch.zeros(rows.shape[0], n, dtype=torch.long))) for n in lengths]
    b = (costs[1] - costs[0]) / (lengths[1] - lengths[0])
    a = costs[0] - b * lengths[0]
    return sum(a + b * t for t in range(1, NUM_TOKENS + 1))


def gpu_images_per_second(model_name: str, batches: list[int]) -> None:
    """Images/s of full 256-token CFG generation on CUDA in bf16, eager vs compiled one-token steps."""
    torch.manual_seed(0)
    gpt = GPT(gpt_config(model_name, block_size=NUM_TOKENS)).eval().to("cuda", torch.bfloat16)
    torch.nn.init.normal_(gpt.output.weight, std=0.02)
    print(f"{model_name}, CUDA ({torch.cuda.get_device_name()}), bf16, CFG 2.0, {NUM_TOKENS} tokens/image")
    print(f"{'batch':>5} {'mode':>9} {'s/batch':>8} {'images/s':>9} {'vs eager':>8}")
    for batch in batches:
        labels = torch.arange(batch, device="cuda") % 1000
        eager = None
        for name, compile in (("eager", False), ("compiled", True)):
            generate_tokens(gpt, labels, cfg_scale=2.0, seed=0, compile=compile)  # warm-up / compilation
            torch.cuda.synchronize()
            start = time.perf_counter()
            generate_tokens(gpt, labels, cfg_scale=2.0, seed=1, compile=compile)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            eager = eager or seconds
            print(f"{batch:>5} {name:>9} {seconds:>8.2f} {batch / seconds:>9.1f} {eager / seconds:>7.2f}x")
    print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=16, help="decode steps timed per configuration")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile'd step")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-vq", action="store_true")
    parser.add_argument("--gpu", action="store_true", help="CUDA mode: whole images at --batch, bf16, eager vs compile")
    parser.add_argument("--models", nargs="+", default=["GPT-B", "GPT-XL"], help="GPU mode: models to time")
    args = parser.parse_args()
    if args.gpu:
        for model_name in args.models:
            gpu_images_per_second(model_name, args.batch)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gpt = GPT(gpt_config("GPT-B", block_size=NUM_TOKENS)).eval()
    torch.nn.init.normal_(gpt.output.weight, std=0.02)  # the official init zeroes it: uniform logits
    gpt_bf16 = copy.deepcopy(gpt).to(torch.bfloat16)  # --precision bf16: the weights cast, as the plugin does
    print(f"GPT-B, CFG 2.0, {NUM_TOKENS} tokens/image, fp32, {torch.get_num_threads()} threads; "
          f"{args.steps} timed steps per configuration, full image extrapolated")
    print(f"{'batch':>5} {'mode':>9} {'step ms':>8} {'tokens/s':>9} {'s/image':>8} {'vs naive':>8} "
          f"{'CPU s/image':>11}")
    for batch in args.batch:
        naive = naive_image_seconds(gpt, batch) / batch
        print(f"{batch:>5} {'naive':>9} {'':>8} {NUM_TOKENS / naive:>9.1f} {naive:>8.2f} {1.0:>8.2f}")
        modes = [("cached", gpt, False), ("bf16", gpt_bf16, False)] + ([("compiled", gpt, True)] if args.compile else [])
        for name, model, compile in modes:
            step, cpu = cached_step_seconds(model, batch, args.steps, compile)
            per_image = step * NUM_TOKENS / batch
            print(f"{batch:>5} {name:>9} {step * 1e3:>8.1f} {batch / step:>9.1f} {per_image:>8.2f} "
                  f"{naive / per_image:>7.1f}x {cpu * NUM_TOKENS / batch:>11.2f}")
        cache_mb = 2 * gpt.config.n_layer * 2 * batch * 264 * gpt.config.dim * 4 / 2**20
        print(f"{batch:>5} KV cache: {cache_mb:.0f} MiB (fp32)")
    if not args.skip_vq:
        vq = VQModel(vq_config("VQ-16")).eval()
        codes = torch.randint(0, 16384, (1, 16, 16))
        vq.decode_codes(codes)
        print(f"VQ-16 decode, one 256x256 image: {timed(lambda: vq.decode_codes(codes), 2):.2f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"peak resident memory of the process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
