"""The DiT generator plugin: DiT-XL/2 + DDPM/DDIM sampling + the SD VAE decoder, as the harness sees it.

Images are made exactly as the official sample_ddp.py makes them: latents from the reverse process are divided
by 0.18215, decoded by `AutoencoderKL` (sd-vae-ft-ema by default), and quantised with
`clamp(127.5 * x + 128, 0, 255).to(uint8)` -- i.e. floor(127.5 * x + 128), which rounds 127.5 * (x + 1).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from bench.download import RemoteFile, resolve_all
from bench.errors import BenchError
from bench import generator as contract
from bench.generator import Generator, PluginOption, PresetInfo, to_uint8
from generators.dit.diffusion import SAMPLERS, TRAIN_STEPS, sample_latents, space_timesteps
from generators.dit.models import DiT, key_listing, load_dit
from generators.dit.presets import LATENT_SCALE, PRESETS, VAES, DiTPreset, vae_files

#: precision -> autocast dtype. "tf32" (fp32 storage, TF32 matmuls on Ampere+) is sample_ddp.py's default.
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def preset_options(preset: DiTPreset) -> tuple[PluginOption, ...]:
    """What a DiT preset takes (`bench run --set NAME=VALUE`, or the common flags), with its own defaults."""
    return (
        PluginOption("cfg_scale", float, preset.cfg_scale, "classifier-free guidance scale (1: none)"),
        PluginOption("steps", (int, str), preset.steps, "sampling steps, e.g. 250, or a respacing like ddim25",
                     rule=(valid_steps, "a step count in 1..1000 or a respacing like ddim25")),
        PluginOption("sampler", str, preset.sampler, "reverse process", choices=tuple(SAMPLERS)),
        PluginOption("eta", float, preset.eta, "DDIM noise (0: deterministic)"),
        PluginOption("vae", str, preset.vae, f"{' | '.join(VAES)} | a local diffusers AutoencoderKL folder",
                     rule=(lambda v: v in VAES or Path(v).expanduser().is_dir(),
                           f"one of {', '.join(VAES)} or a local VAE folder")),
        PluginOption("cfg_all_channels", bool, False, "guide all 4 latent channels instead of the official first 3"),
        PluginOption("precision", str, "tf32", "DiT compute precision", choices=tuple(PRECISIONS)),
        PluginOption("compile", bool, False, "torch.compile the DiT forward"),
    )


def valid_steps(steps: int | str) -> bool:
    """A respacing `space_timesteps` accepts (it raises a `BenchError` saying what is wrong otherwise)."""
    space_timesteps(TRAIN_STEPS, steps)
    return True


#: images decoded per VAE call: the decoder's 512-channel 256x256 activations dominate memory, not DiT's
VAE_CHUNK = 16


def load_vae(folder: str | Path) -> torch.nn.Module:
    """An `AutoencoderKL` from a local hub-layout folder (config.json + diffusion_pytorch_model.*), in eval mode.

    Strict: for weights the file lacks, diffusers only logs a warning and keeps a random initialisation (and it
    ignores extra ones), so a partial or foreign weights file would decode noise. Here any key that does not
    match the model built from config.json is an error.
    """
    try:
        from diffusers.models import AutoencoderKL
    except ImportError:
        raise BenchError("DiT decodes with the Stable Diffusion VAE from diffusers: pip install 'bench[dit]' "
                         "(or pip install diffusers)") from None

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise BenchError(f"VAE folder {folder} has no config.json; expected the layout of a hub VAE repo "
                         f"(config.json and diffusion_pytorch_model.safetensors), e.g. {VAES['ema']}")
    try:
        vae, info = AutoencoderKL.from_pretrained(folder, local_files_only=True, output_loading_info=True)
    except Exception as e:  # wrong config, missing/corrupt weights file, mis-shaped tensors
        raise BenchError(f"cannot load the VAE from {folder}: {type(e).__name__}: {e}") from e
    # missing_keys, unexpected_keys, mismatched_keys (tuples: key, found shape, expected shape), error_msgs
    problems = [f"  {what.replace('_', ' ')} ({len(items)}): "
                f"{key_listing(sorted(i[0] if isinstance(i, tuple) else str(i) for i in items))}"
                for what, items in info.items() if items]
    if problems:
        raise BenchError("\n".join([f"cannot load the VAE from {folder}: its weights do not match the "
                                     f"AutoencoderKL that its config.json describes"] + problems))
    return vae.eval()


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """TF32 matmuls for "tf32" only, restoring the process-wide flags afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class DiTGenerator(Generator):
    """A DiT preset with resolved sampling settings; weights are loaded by `load` (or lazily by `sample`)."""

    def __init__(self, preset: DiTPreset, ckpt: str | Path | None = None, device: str | torch.device = "cpu",
                 cfg_scale: float | None = None, steps: int | str | None = None, sampler: str | None = None,
                 eta: float | None = None, precision: str | None = None, compile: bool | None = None,
                 vae: str | None = None, cfg_all_channels: bool | None = None):
        self.preset = preset
        self.name = preset.name
        self.image_size = preset.image_size
        self.eval_size = preset.eval_size
        self.num_classes = preset.num_classes
        self.ckpt = Path(ckpt).expanduser() if ckpt is not None else None
        self.device = torch.device(device)
        self.cfg_scale = float(preset.cfg_scale if cfg_scale is None else cfg_scale)
        self.steps = preset.steps if steps is None else steps
        self.sampler = preset.sampler if sampler is None else sampler
        self.eta = float(preset.eta if eta is None else eta)
        self.precision = "tf32" if precision is None else precision
        self.compile = bool(compile)
        self.vae = preset.vae if vae is None else str(vae)
        self.cfg_all_channels = bool(cfg_all_channels)
        self.model: DiT | None = None
        self.autoencoder: torch.nn.Module | None = None

    def config(self) -> dict[str, Any]:
        checkpoint = self.required_files()[0]
        return {
            "preset": self.name, "image_size": self.image_size,
            "model": self.preset.model if isinstance(self.preset.model, str) else asdict(self.preset.model),
            "eval_size": self.eval_size, "num_classes": self.num_classes,
            "checkpoint": checkpoint.filename, "checkpoint_sha256": checkpoint.sha256,
            "cfg_scale": self.cfg_scale, "cfg_all_channels": self.cfg_all_channels, "steps": self.steps,
            "sampler": self.sampler, "eta": self.eta, "clip_denoised": False, "precision": self.precision,
            "compile": self.compile, "vae": self.vae if self.vae in VAES else str(Path(self.vae).resolve()),
            "latent_scale": LATENT_SCALE,
            # one DiT forward per step, on [cond; null] rows when guided (speed beside quality on the board)
            "forward_passes_per_image": len(space_timesteps(TRAIN_STEPS, self.steps)) * (2 if self.cfg_scale > 1 else 1),
        }

    def required_files(self) -> list[RemoteFile]:
        """The DiT checkpoint first (a user's own checkpoint has no pinned sha256), then the hub VAE files."""
        checkpoint = self.preset.checkpoint if self.ckpt is None else RemoteFile(self.ckpt.name, sha256=None)
        return [checkpoint] + (vae_files(self.vae) if self.vae in VAES else [])

    def load(self, files: dict[str, Path] | None = None) -> None:
        """Load DiT and the VAE from resolved files; with none given, resolve them (cache, then download)."""
        if files is None:
            remotes = self.required_files()
            explicit = {remotes[0].filename: self.ckpt} if self.ckpt is not None else None
            files = {r.filename: p for r, p in zip(remotes, resolve_all(remotes, explicit))}
        remotes = self.required_files()
        model = load_dit(files[remotes[0].filename], self.preset.model, self.image_size, self.num_classes)
        self.model = model.to(self.device)
        if self.compile:
            self.model.forward = torch.compile(self.model.forward)  # forward_with_cfg calls it too
        folder = Path(files[remotes[1].filename]).parent if self.vae in VAES else Path(self.vae).expanduser()
        self.autoencoder = load_vae(folder).to(self.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents [B, 4, h, w] -> uint8 [B, 8h, 8w, 3] through the VAE in fp32, in chunks of VAE_CHUNK."""
        chunks = [self.autoencoder.decode(z / LATENT_SCALE).sample for z in latents.split(VAE_CHUNK)]
        return to_uint8(torch.cat(chunks))

    def sample(self, labels: torch.Tensor, seeds: torch.Tensor) -> np.ndarray:
        if labels.numel() == 0:  # the sampler cannot run an empty batch, and it needs no weights
            return np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        if self.model is None:
            self.load()
        with matmul_precision(self.precision):
            latents = sample_latents(
                self.model, labels.to(self.device), cfg_scale=self.cfg_scale, num_steps=self.steps,
                sampler=self.sampler, eta=self.eta, seed=seeds.to(torch.int64), cfg_all_channels=self.cfg_all_channels,
                autocast_dtype=PRECISIONS[self.precision],
            )
            return self.decode(latents)


def _info(preset: DiTPreset) -> PresetInfo:
    settings = {"cfg_scale": preset.cfg_scale, "steps": preset.steps, "sampler": preset.sampler,
                "vae": VAES[preset.vae], "cfg_channels": "first 3 of 4 latent channels"}
    return PresetInfo(model=preset.model, image_size=preset.image_size, eval_size=preset.eval_size,
                      paper_settings=settings,
                      paper="Peebles & Xie 2023, Scalable Diffusion Models with Transformers: "
                            + ", ".join(f"{k} {v}" for k, v in preset.paper.items()))


def presets() -> dict[str, contract.Preset]:
    """The `bench.generators` entry point: every DiT preset of presets.py (a new preset is one edit there)."""
    return {name: contract.Preset(name, functools.partial(DiTGenerator, p), preset_options(p), _info(p))
            for name, p in PRESETS.items()}
