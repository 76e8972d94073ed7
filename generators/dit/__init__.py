"""DiT (Peebles & Xie 2023), the diffusion baseline: network (`models`), diffusion and samplers (`diffusion`),
presets as data (`presets`) and the harness plugin (`plugin`)."""

from generators.dit.diffusion import Diffusion, sample_latents, space_timesteps
from generators.dit.models import DiT, DiTConfig, load_dit

__all__ = ["DiT", "DiTConfig", "Diffusion", "load_dit", "sample_latents", "space_timesteps"]
