"""VAR (Tian et al. 2024, "Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale Prediction"):
the multi-scale VQVAE and the class-conditional next-scale transformer, in the official state-dict layout, with a
KV-cached guided sampler whose randomness is per sample.

    vae = load_vae("vae_ch160v4096z32.pth")
    var = load_var("var_d16.pth", vae=vae, depth=16)
    scales = generate_scales(var, labels, cfg_scale=1.5, top_k=900, top_p=0.96, seed=0)   # 10 maps [B, pn * pn]
    images = decode_scales(vae, scales)                                                    # [B, 3, 256, 256]
    scales = encode_scales(vae, images)                                 # images in [-1, 1] -> the 10 token maps

Modules: vqvae.py (tokenizer), model.py (transformer), generate.py (sampling), checkpoints.py (loading),
presets.py (released files and settings as data). docs/var.md explains next-scale prediction and VAR's cfg.
"""

from generators.var.checkpoints import load_vae, load_var
from generators.var.generate import generate_scales
from generators.var.vqvae import decode_scales, encode_scales

__all__ = ["load_vae", "load_var", "encode_scales", "decode_scales", "generate_scales"]
