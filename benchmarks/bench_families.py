"""Seconds per image of the autoregressive families side by side on one machine, random weights at release size:
LlamaGen GPT-B (111M, raster next-token: 256 steps, cfg 2.0), VAR-d16 (310M, next-scale: 10 steps, the README's
cfg 1.5 / top-k 900 / top-p 0.96) and MAR-B (208M, masked AR over continuous tokens + a diffusion head).

Each model generates `--batch` images for a few classes; the decoder (VQ-16, VAR's VQVAE, the KL-16 VAE) is timed
apart, one image at a time as the plugins decode. MAR at its paper setting (256 autoregressive steps x 100
diffusion steps) takes minutes per image on a CPU, so it is measured at num_iter 16 with 100 diffusion steps and
the per-step costs are extrapolated to num_iter 64 and 256 (transformer passes scale with num_iter; the head's MLP
work, 256 tokens x 100 steps, does not, only its number of sequential calls does). Ratios are against GPT-B
measured in the same run.

    python benchmarks/bench_families.py --batch 4
"""

from __future__ import annotations

import argparse
import time

import torch

from generators.llamagen.generate import generate_tokens
from generators.llamagen.gpt import GPT, gpt_config
from generators.llamagen.vq import VQModel, vq_config
from generators.mar.generate import generate_latents
from generators.mar.model import MAR, MAR_CONFIGS
from generators.mar.vae import KLConfig, KLVAE, decode_latents
from generators.var.generate import generate_scales
from generators.var.model import VAR, var_config
from generators.var.vqvae import VQVAE, VQVAEConfig, decode_scales


def randomise(module: torch.nn.Module, std: float = 0.02) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)
    return module.eval()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.no_grad()
def llamagen(labels: torch.Tensor) -> tuple[float, float]:
    gpt = randomise(GPT(gpt_config("GPT-B", block_size=256)))
    vq = randomise(VQModel(vq_config("VQ-16")))
    holder = {}
    gen = timed(lambda: holder.setdefault("t", generate_tokens(gpt, labels, cfg_scale=2.0, seed=0)))
    dec = timed(lambda: vq.decode_codes(holder["t"][:1].view(1, 16, 16)))
    return gen / len(labels), dec


@torch.no_grad()
def var(labels: torch.Tensor) -> tuple[float, float]:
    vae = randomise(VQVAE(VQVAEConfig()))
    model = randomise(VAR(var_config(16), vae=vae))
    holder = {}
    gen = timed(lambda: holder.setdefault("s", generate_scales(model, labels, cfg_scale=1.5, top_k=900, top_p=0.96,
                                                               seed=0)))
    dec = timed(lambda: decode_scales(vae, [s[:1] for s in holder["s"]]))
    return gen / len(labels), dec


@torch.no_grad()
def mar(labels: torch.Tensor, num_iter: int = 16, steps: int = 100) -> tuple[float, float, float]:
    """(s/image at num_iter, s per transformer pass per image, decode s); the head's cost = total - passes."""
    model = randomise(MAR(MAR_CONFIGS["MAR-B"]))
    vae = randomise(KLVAE(KLConfig()))
    holder = {}
    total = timed(lambda: holder.setdefault("z", generate_latents(model, labels, num_iter=num_iter, cfg_scale=2.9,
                                                                  sampling_steps=steps, seed=0)))
    head_only = timed(lambda: generate_latents(model, labels, num_iter=1, cfg_scale=2.9, sampling_steps=steps, seed=0))
    per_pass = max(total - head_only, 0.0) / (num_iter - 1)
    dec = timed(lambda: decode_latents(vae, holder["z"][:1]))
    return total / len(labels), per_pass / len(labels), dec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    labels = torch.arange(args.batch) * 7
    rows = []
    gpt_gen, gpt_dec = llamagen(labels)
    rows.append(("LlamaGen GPT-B, 256 tokens, cfg 2.0", 512, gpt_gen, gpt_dec))
    var_gen, var_dec = var(labels)
    rows.append(("VAR-d16, 10 scales (680 tokens), cfg 1.5", 20, var_gen, var_dec))
    mar16, per_pass, mar_dec = mar(labels)
    head = mar16 - 16 * per_pass  # the head's 256 x 100 MLP evaluations (x2 guided), whatever num_iter
    for num_iter in (64, 256):
        rows.append((f"MAR-B, num_iter {num_iter} x 100 diffusion steps (extrapolated from 16)", 2 * num_iter,
                     head + num_iter * per_pass, mar_dec))
    print(f"batch {args.batch}, {args.threads} threads, fp32, random weights")
    print(f"{'model':<62} {'passes':>6} {'gen s/img':>9} {'decode s':>8} {'total s/img':>11} {'vs GPT-B':>8}")
    base = gpt_gen + gpt_dec
    for name, passes, gen, dec in rows:
        print(f"{name:<62} {passes:>6} {gen:>9.2f} {dec:>8.2f} {gen + dec:>11.2f} {(gen + dec) / base:>7.2f}x")
    print(f"MAR-B: {per_pass:.3f} s per transformer pass per image (guided pair), head {head:.2f} s per image")


if __name__ == "__main__":
    main()
