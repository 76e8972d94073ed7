"""DiT sampling speed: seconds per DiT step and per image, with and without classifier-free guidance.

CPU mode (default without CUDA): DiT-S/2 and DiT-XL/2 at 256x256, fp32, random weights, batch 8. Each
configuration is timed over a few network evaluations and extrapolated to the paper's 250 steps; the VAE
decode is not included. Three ways to run one step are compared against the unguided step (the baseline):
  no-cfg         one forward of B latents (cfg_scale = 1)
  cfg-batched    one forward of 2B ([cond; null], `forward_with_cfg`, what the sampler does)
  cfg-unbatched  two forwards of B (conditional, then null)

GPU mode (default with CUDA): bf16 autocast + torch.compile against an eager TF32 baseline, batch 64-256,
end-to-end images/s = a few real sampler steps extrapolated to 250, plus the SD-VAE decode of the batch
(random weights in the sd-vae-ft-ema architecture).

    python benchmarks/bench_dit.py                      # CPU numbers
    python benchmarks/bench_dit.py --mode gpu --batches 64 128 256
"""

from __future__ import annotations

import argparse
import time

import torch

from generators.dit.diffusion import sample_latents
from generators.dit.models import DiT, DiTConfig
from generators.dit.presets import LATENT_SCALE

PAPER_STEPS = 250


def build(model: str, device: torch.device) -> DiT:
    """A random-weight DiT (adaLN weights randomised too, so no branch is skipped by zeros)."""
    torch.manual_seed(0)
    net = DiT(DiTConfig.named(model, 256)).eval().to(device)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02)
    return net


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def time_step(net: DiT, batch: int, mode: str, reps: int, device: torch.device) -> float:
    """Seconds per sampler step (one network evaluation of a batch) in `mode`, best of `reps` after a warm-up."""
    latent = torch.randn(batch, 4, net.config.input_size, net.config.input_size, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    null = torch.full_like(labels, 1000)
    t = torch.full((batch,), 500, device=device)

    def step() -> None:
        if mode == "no-cfg":
            net(latent, t, labels)
        elif mode == "cfg-batched":
            net.forward_with_cfg(torch.cat([latent, latent]), torch.cat([t, t]), torch.cat([labels, null]), 1.5)
        else:
            net(latent, t, labels)
            net(latent, t, null)

    times = []
    for _ in range(reps + 1):  # the first call is a warm-up
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times[1:]) if reps else times[0]


def cpu_mode(models: list[str], batch: int, reps: int) -> None:
    device = torch.device("cpu")
    timing = f"best of {reps} after 1 warm-up" if reps else "one call, no warm-up"
    print(f"CPU, {torch.get_num_threads()} threads, fp32, batch {batch}, {timing} "
          f"(per image = 250 steps extrapolated; VAE decode excluded)")
    print(f"{'model':10s} {'mode':14s} {'s/step':>9s} {'s/image':>9s} {'vs no-cfg':>10s}")
    for model in models:
        net = build(model, device)
        baseline = None
        for mode in ("no-cfg", "cfg-batched", "cfg-unbatched"):
            seconds = time_step(net, batch, mode, reps, device)
            baseline = baseline or seconds
            print(f"{model:10s} {mode:14s} {seconds:9.3f} {seconds * PAPER_STEPS / batch:9.2f} "
                  f"{seconds / baseline:9.2f}x", flush=True)
        del net


def sd_vae(device: torch.device) -> torch.nn.Module:
    """The sd-vae-ft-ema architecture with random weights (only its speed matters here)."""
    from diffusers.models import AutoencoderKL

    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                         norm_num_groups=32).eval().to(device)


@torch.no_grad()
def gpu_mode(models: list[str], batches: list[int], steps: int, compile: bool, device: torch.device) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"{name}: {steps} real sampler steps (cfg 1.5, DDPM) extrapolated to 250, plus VAE decode; "
          f"baseline = eager TF32")
    vae = sd_vae(device)
    print(f"{'model':10s} {'batch':>5s} {'setting':18s} {'s/step':>8s} {'decode s':>9s} {'img/s':>8s} {'speed-up':>9s}")
    for model in models:
        net = build(model, device)
        compiled = build(model, device)
        if compile:
            compiled.forward = torch.compile(compiled.forward)
        for batch in batches:
            labels = torch.randint(0, 1000, (batch,), device=device)
            baseline = None
            for setting, module, dtype in (("tf32 eager", net, None),
                                           ("bf16" + (" compiled" if compile else " eager"), compiled, torch.bfloat16)):
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
                # warm-up (compilation) on 2 steps, then time `steps` sampler steps (per-step cost does not
                # depend on which of the 1000 timesteps are kept)
                run = lambda n: sample_latents(module, labels, cfg_scale=1.5, num_steps=n, autocast_dtype=dtype)
                run(2)
                sync(device)
                start = time.perf_counter()
                latents = run(steps)
                sync(device)
                per_step = (time.perf_counter() - start) / steps
                start = time.perf_counter()
                for z in latents.split(16):
                    vae.decode(z / LATENT_SCALE)
                sync(device)
                decode = time.perf_counter() - start
                images_per_s = batch / (per_step * PAPER_STEPS + decode)
                baseline = baseline or images_per_s
                print(f"{model:10s} {batch:5d} {setting:18s} {per_step:8.4f} {decode:9.3f} {images_per_s:8.3f} "
                      f"{images_per_s / baseline:8.2f}x", flush=True)
        del net, compiled
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--models", nargs="+", default=["DiT-S/2", "DiT-XL/2"])
    parser.add_argument("--batch", type=int, default=8, help="CPU batch size")
    parser.add_argument("--reps", type=int, default=1, help="CPU timed repetitions per setting")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256], help="GPU batch sizes")
    parser.add_argument("--steps", type=int, default=10, help="GPU sampler steps timed per setting")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--device", default="cuda", help="GPU mode device (cpu only to smoke-test the script)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mode = args.mode if args.mode != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
    if mode == "gpu":
        gpu_mode(args.models, args.batches, args.steps, compile=not args.no_compile, device=torch.device(args.device))
    else:
        cpu_mode(args.models, args.batch, args.reps)


if __name__ == "__main__":
    main()
