"""The MAR `Generator`: KL-16 VAE + the masked autoregressive transformer with its diffusion head.

Images are made as the official `main_mar.py --evaluate` makes them: `sample_tokens` (generate.py: one random
order per sample, the cosine mask schedule over `num_iter` steps, linear or constant cfg on the noise prediction
only, temperature on the head's step noise), the VAE decode of latents / 0.2325, then
round(clip((x + 1) / 2, 0, 1) * 255), which is `clamp(127.5 x + 128, 0, 255).to(uint8)`. The official evaluation
runs under fp16 autocast on the GPU (`precision`, default fp16 on CUDA and fp32 on the CPU).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import generator as contract
from bench.download import RemoteFile
from bench.generator import Generator, PluginOption, PresetInfo, to_uint8
from generators.dit.diffusion import TRAIN_STEPS, space_timesteps
from generators.mar.generate import generate_latents
from generators.mar.model import load_mar
from generators.mar.presets import PRESETS, MARPreset
from generators.mar.vae import decode_latents, load_vae

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _steps(spec: int | str) -> bool:
    space_timesteps(TRAIN_STEPS, spec)  # raises a BenchError saying what is wrong
    return True


def preset_options(preset: MARPreset) -> tuple[PluginOption, ...]:
    return (
        PluginOption("cfg_scale", float, preset.cfg_scale, "classifier-free guidance scale at the last step (1: none)"),
        PluginOption("cfg_schedule", str, preset.cfg_schedule, "linear: 1 + (cfg - 1) * (256 - masked) / 256 per "
                     "step, as the paper; constant: cfg at every step", choices=("linear", "constant")),
        PluginOption("num_iter", int, preset.num_iter, "autoregressive steps (transformer passes)",
                     rule=(lambda v: 1 <= v <= 256, "an integer in 1..256")),
        PluginOption("sampling_steps", (int, str), preset.sampling_steps, "the diffusion head's steps (of 1000)",
                     rule=(_steps, "a step count in 1..1000 or a respacing like 50,50")),
        PluginOption("temperature", float, preset.temperature, "scales the head's per-step noise (0: none)",
                     rule=(lambda v: v == v and 0 <= v < float("inf"), "a finite number >= 0")),
        PluginOption("weights", str, preset.weights, "which weights of checkpoint-last.pth (the paper: EMA)",
                     choices=("model_ema", "model")),
        PluginOption("precision", str, None, "autocast dtype [fp16 on GPU as the official evaluation, fp32 on CPU]",
                     choices=tuple(PRECISIONS)),
        PluginOption("vae_ckpt", str, None, "a local KL-16 VAE (kl16.ckpt) [cache, else download]"),
    )


class MARGenerator(Generator):
    """A MAR preset; weights are loaded by `load` (the harness resolves and verifies the files first)."""

    def __init__(self, preset: MARPreset, ckpt: str | None = None, device: str = "cpu", vae_ckpt: str | None = None,
                 precision: str | None = None, **sampling: Any):
        self.preset, self.name = preset, preset.name
        self.image_size, self.eval_size, self.num_classes = preset.image_size, preset.eval_size, preset.num_classes
        self.device = torch.device(device)
        self.ckpt, self.vae_ckpt = ckpt, vae_ckpt
        self.precision = precision or ("fp16" if self.device.type == "cuda" else "fp32")
        keys = ("cfg_scale", "cfg_schedule", "num_iter", "sampling_steps", "temperature", "weights")
        self.settings = {k: sampling[k] if sampling.get(k) is not None else getattr(preset, k) for k in keys}
        self.mar = self.vae = None

    def config(self) -> dict[str, Any]:
        """What decides the images; forward passes per image counted apart for the transformer (num_iter, x2 with
        guidance) and the diffusion head's MLP (256 tokens x sampling steps, x2 with guidance)."""
        s, guided = self.settings, 2 if self.settings["cfg_scale"] != 1.0 else 1
        steps = len(space_timesteps(TRAIN_STEPS, s["sampling_steps"]))
        return {
            "generator": self.name, "model": self.preset.model,
            "checkpoint": Path(self.ckpt).name if self.ckpt else self.preset.checkpoint.filename,
            "vae_ckpt": Path(self.vae_ckpt).name if self.vae_ckpt else self.preset.vae.filename,
            "official_weights": not (self.ckpt or self.vae_ckpt) and s["weights"] == "model_ema",
            "num_classes": self.num_classes, "image_size": self.image_size, "eval_size": self.eval_size, **s,
            "precision": self.precision, "latent_scale": 0.2325,
            "transformer_passes_per_image": s["num_iter"] * guided,
            "diffloss_mlp_passes_per_image": 256 * steps * guided,
        }

    def required_files(self) -> list[RemoteFile]:
        ckpt = RemoteFile(Path(self.ckpt).name, None) if self.ckpt else self.preset.checkpoint
        vae = RemoteFile(Path(self.vae_ckpt).name, None) if self.vae_ckpt else self.preset.vae
        return [ckpt, vae]

    def explicit_files(self) -> dict[str, Path]:
        return {f.filename: Path(g).expanduser() for f, g in zip(self.required_files(), (self.ckpt, self.vae_ckpt))
                if g}

    def load(self, files: dict[str, Path]) -> None:
        ckpt, vae = (files[f.filename] for f in self.required_files())
        self.mar = load_mar(ckpt, self.preset.model, weights=self.settings["weights"]).to(self.device)
        self.vae = load_vae(vae).to(self.device)

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def sample(self, labels: torch.Tensor, seeds: torch.Tensor) -> np.ndarray:
        labels = torch.as_tensor(labels).long().view(-1).to(self.device)
        if not labels.numel():
            return np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        s = {k: v for k, v in self.settings.items() if k != "weights"}
        with self._autocast():
            latents = generate_latents(self.mar, labels, seed=torch.as_tensor(seeds).long().view(-1), **s)
            return np.concatenate([to_uint8(decode_latents(self.vae, latents[i:i + 1].float()))
                                   for i in range(latents.shape[0])])


def _info(preset: MARPreset) -> PresetInfo:
    return PresetInfo(
        model=preset.model, image_size=preset.image_size, eval_size=preset.eval_size,
        paper_settings={"cfg_scale": preset.cfg_scale, "cfg_schedule": preset.cfg_schedule,
                        "num_iter": preset.num_iter, "sampling_steps": preset.sampling_steps,
                        "temperature": preset.temperature},
        paper="Li et al. 2024, arXiv:2406.11838 Table 4: " + ", ".join(f"{k} {v}" for k, v in preset.paper.items()),
        settings_source="the official README's evaluation command")


def presets() -> dict[str, contract.Preset]:
    """The `bench.generators` entry point: every MAR preset of presets.py."""
    return {name: contract.Preset(name, functools.partial(MARGenerator, p), preset_options(p), _info(p))
            for name, p in PRESETS.items()}
