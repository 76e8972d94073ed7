"""DiT presets as data: which network, which checkpoint, which sampling settings reproduce which paper number.

Paper numbers (Peebles & Xie 2023, Tables 4 and 5; 50K samples, ADM evaluation suite, 250 DDPM steps, cfg 1.5,
sd-vae-ft-ema, guidance on 3 of 4 latent channels as in the released sample_ddp.py):
  * DiT-XL/2 256x256: FID 2.27, sFID 4.60, IS 278.24, Precision 0.83, Recall 0.57 (vs ADM's 256 reference batch)
  * DiT-XL/2 512x512: FID 3.04, sFID 5.02, IS 240.82, Precision 0.84, Recall 0.54 -- evaluated at 512x512
    against ADM's 512 reference batch (VIRTUAL_imagenet512.npz), not downsampled; hence eval_size = 512.

Checksums: the official release publishes none. DiT-XL-2-256x256.pt (2,700,611,775 bytes), the two VAE
safetensors (334,643,276 bytes each) and their config.json (547 bytes, the same file in both repos) carry the
sha256 that independent public projects pin for the same URL and size; DiT-XL-2-512x512.pt has none (used
unverified; key/shape-checked on load, its sha256 recorded in results).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.download import RemoteFile
from generators.dit.models import DiTConfig

#: the latent scale DiT (and Stable Diffusion) trained with: latents = 0.18215 * VAE posterior sample
LATENT_SCALE = 0.18215
#: the Stable Diffusion VAE fine-tunes DiT uses; "ema" is the paper's default
VAES = {"ema": "stabilityai/sd-vae-ft-ema", "mse": "stabilityai/sd-vae-ft-mse"}
#: the files `AutoencoderKL.from_pretrained` needs from a hub VAE folder
VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
#: pinned sha256 of the VAE files. The configs are pinned too: an edit that keeps every tensor shape (e.g.
#: norm_num_groups or act_fn) loads without complaint and silently changes what the decoder computes.
VAE_SHA256 = {
    ("ema", "config.json"): "92d3dfb746fca211a2c9e019e285f8597412211728dce3c5bcf4eda0f2d62e7e",
    ("mse", "config.json"): "92d3dfb746fca211a2c9e019e285f8597412211728dce3c5bcf4eda0f2d62e7e",
    ("ema", "diffusion_pytorch_model.safetensors"): "32db726da04f06c1b6b14c0043ce115cc87a501482945c5add89a40d838fcb46",
    ("mse", "diffusion_pytorch_model.safetensors"): "a1d993488569e928462932c8c38a0760b874d166399b14414135bd9c42df5815",
}


@dataclass(frozen=True)
class DiTPreset:
    name: str
    model: str | DiTConfig  # one of models.MODEL_NAMES (or an explicit config, for experiments and tests)
    image_size: int
    eval_size: int
    checkpoint: RemoteFile
    cfg_scale: float = 1.5
    steps: int | str = 250
    sampler: str = "ddpm"
    eta: float = 0.0
    vae: str = "ema"
    num_classes: int = 1000
    paper: dict[str, float] = field(default_factory=dict)


def vae_files(vae: str) -> list[RemoteFile]:
    """The hub files of VAE `vae` ("ema" / "mse"), cached side by side under `<cache>/sd-vae-ft-<vae>/`."""
    repo = VAES[vae]
    folder = repo.split("/")[1]
    return [RemoteFile(f"{folder}/{f}", sha256=VAE_SHA256.get((vae, f)), hf_repo=repo, hf_filename=f)
            for f in VAE_FILES]


PRESETS: dict[str, DiTPreset] = {
    "dit-xl-2": DiTPreset(
        name="dit-xl-2",
        model="DiT-XL/2",
        image_size=256,
        eval_size=256,
        checkpoint=RemoteFile("DiT-XL-2-256x256.pt",
                              sha256="9ec1876e4c03471bca126663a30e2d1b20610b6d2f87850a39a36f25cc685521",
                              url="https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt"),
        paper={"fid": 2.27, "sfid": 4.60, "is": 278.24, "precision": 0.83, "recall": 0.57},
    ),
    "dit-xl-2-512": DiTPreset(
        name="dit-xl-2-512",
        model="DiT-XL/2",
        image_size=512,
        eval_size=512,
        checkpoint=RemoteFile("DiT-XL-2-512x512.pt", sha256=None,
                              url="https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-512x512.pt"),
        paper={"fid": 3.04, "sfid": 5.02, "is": 240.82, "precision": 0.84, "recall": 0.54},
    ),
}
