"""LlamaGen (Sun et al. 2024, "Autoregressive Model Beats Diffusion"): VQ image tokenizer + class-conditional
Llama GPT, in the official checkpoint layout, with batched-CFG KV-cache sampling.

    vq = load_vq("vq_ds16_c2i.pt")
    gpt = load_gpt("c2i_L_384.pt", "GPT-L", image_size=384)
    tokens = generate_tokens(gpt, labels, cfg_scale=2.0, seed=0)   # sample i depends on (seed, i) only
    images = vq.decode_codes(tokens.view(-1, 24, 24))

Modules: vq.py (tokenizer), gpt.py (transformer), generate.py (sampling), checkpoints.py (loading),
presets.py (released checkpoints as data), plugin.py (the harness `Generator`).
"""

from generators.llamagen.checkpoints import load_gpt, load_vq
from generators.llamagen.generate import generate_tokens

__all__ = ["load_vq", "load_gpt", "generate_tokens"]
