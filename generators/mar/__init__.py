"""MAR (Li et al. 2024, "Autoregressive Image Generation without Vector Quantization"): a masked autoregressive
transformer over continuous KL-16 VAE tokens, each token sampled by a small diffusion MLP, in the official
checkpoint layout.

    vae = load_vae("kl16.ckpt")
    mar = load_mar("checkpoint-last.pth", "MAR-B")                  # the EMA weights, as evaluated
    latents = generate_latents(mar, labels, num_iter=256, cfg_scale=2.9, seed=0)  # sample i: (seed, i) only
    images = decode_latents(vae, latents)                            # [B, 3, 256, 256] in [-1, 1]

Modules: vae.py (KL-16 tokenizer), model.py (transformer, diffusion MLP, loading), generate.py (sampling),
presets.py (released checkpoints and evaluation settings as data).
"""

from generators.mar.generate import generate_latents
from generators.mar.model import load_mar
from generators.mar.vae import decode_latents, load_vae

__all__ = ["load_mar", "load_vae", "generate_latents", "decode_latents"]
