"""The VAR `Generator`: the multi-scale VQVAE + the next-scale transformer behind the harness contract.

Images are made as the official `autoregressive_infer_cfg` makes them (generate.py: 10 scales, guidance ramping
with the scale, top-k 900 / top-p 0.96 in the README's FID recipe), decoded with `idxBl_to_img(last_one=True)`
(vqvae.py) and quantised with `clamp(127.5 x + 128, 0, 255).to(uint8)`, the conversion LlamaGen's and DiT's
samplers use (VAR never published its FID sampling script). One image is decoded at a time, so a decode does not
depend on the batch it was sampled in. `var-vae` is the tokenizer alone, for `--task reconstruct`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import generator as contract
from bench.download import RemoteFile
from bench.errors import BenchError
from bench.generator import Generator, PluginOption, PresetInfo, from_uint8, to_uint8
from generators.var.checkpoints import load_vae, load_var
from generators.var.generate import generate_scales
from generators.var.presets import PAPER, PRESETS, VARPreset
from generators.var.vqvae import decode_scales, encode_scales

#: VAR's guidance is a ramp t = cfg * si / 9 from 0 at the first scale: 0 means none (not LlamaGen's 1)
CFG_RULE = (lambda v: v == v and 0 <= v < float("inf"), "a finite number >= 0 (0 = no guidance; VAR's ramp)")


def preset_options(preset: VARPreset) -> tuple[PluginOption, ...]:
    vae = (PluginOption("vae_ckpt", str, None, "a local VQVAE checkpoint (vae_ch160v4096z32.pth) [cache, else "
                                               "download]"),)
    if preset.depth is None:
        return vae
    return (
        PluginOption("cfg_scale", float, preset.cfg_scale,
                     "guidance at the last scale; it ramps from 0 over the 10 scales (not LlamaGen's cfg)",
                     rule=CFG_RULE),
        PluginOption("top_k", int, preset.top_k, "sample among the k most likely tokens, ties kept (0: all)"),
        PluginOption("top_p", float, preset.top_p, "nucleus mass (0: off, as the official function)",
                     rule=(lambda v: 0 <= v <= 1, "a number in [0, 1] (0 = off)")),
    ) + vae


class VARGenerator(Generator):
    """A VAR preset; weights are loaded by `load` (the harness resolves and verifies the files first)."""

    def __init__(self, preset: VARPreset, ckpt: str | None = None, device: str = "cpu", cfg_scale: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, vae_ckpt: str | None = None):
        self.preset, self.name = preset, preset.name
        self.image_size, self.eval_size, self.num_classes = preset.image_size, preset.eval_size, preset.num_classes
        self.can_sample = preset.depth is not None
        self.can_reconstruct = not self.can_sample
        self.device = torch.device(device)
        self.ckpt, self.vae_ckpt = (ckpt, vae_ckpt) if self.can_sample else (None, vae_ckpt or ckpt)
        self.sampling = {} if not self.can_sample else {
            "cfg_scale": preset.cfg_scale if cfg_scale is None else cfg_scale,
            "top_k": preset.top_k if top_k is None else top_k, "top_p": preset.top_p if top_p is None else top_p}
        self.vae = self.var = None

    def config(self) -> dict[str, Any]:
        """What decides the images. `forward_passes_per_image` counts transformer calls (10 scales, each on 2 rows
        with guidance: 680 tokens in all); `official_weights` is False when a user file replaced the release's."""
        p = self.preset
        guided = self.sampling.get("cfg_scale", 0) > 0
        return {
            "generator": self.name, "model": f"VAR-d{p.depth}" if p.depth else "VAR VQVAE", "depth": p.depth,
            "var_ckpt": Path(self.ckpt).name if self.ckpt else (p.var_file.filename if p.var_file else None),
            "vae_ckpt": Path(self.vae_ckpt).name if self.vae_ckpt else p.vae_file.filename,
            "official_weights": not (self.ckpt or self.vae_ckpt), "num_classes": self.num_classes,
            "image_size": self.image_size, "eval_size": self.eval_size, **self.sampling,
            **({"more_smooth": p.more_smooth, "cfg_convention": "VAR ramp: t = cfg_scale * si / 9 at scale si",
                "forward_passes_per_image": 10 * (2 if guided else 1), "tokens_per_image": 680}
               if self.can_sample else {}),
            "readme_fid": p.readme_fid if not (self.ckpt or self.vae_ckpt) else None,
        }

    def required_files(self) -> list[RemoteFile]:
        """The transformer first (what `--ckpt` names), then the VQVAE; a user's file has no pinned sha256."""
        p = self.preset
        vae = RemoteFile(Path(self.vae_ckpt).name, None) if self.vae_ckpt else p.vae_file
        if not self.can_sample:
            return [vae]
        return [RemoteFile(Path(self.ckpt).name, None) if self.ckpt else p.var_file, vae]

    def explicit_files(self) -> dict[str, Path]:
        files = self.required_files()
        given = ([self.ckpt] if self.can_sample else []) + [self.vae_ckpt]
        return {f.filename: Path(g).expanduser() for f, g in zip(files, given) if g}

    def load(self, files: dict[str, Path]) -> None:
        names = [f.filename for f in self.required_files()]
        self.vae = load_vae(files[names[-1]], device=self.device)
        if self.can_sample:
            self.var = load_var(files[names[0]], self.vae, depth=self.preset.depth, device=self.device)
            self.num_classes = self.var.config.num_classes

    def sample(self, labels: torch.Tensor, seeds: torch.Tensor) -> np.ndarray:
        if self.var is None:
            raise BenchError(f"{self.name}: no weights loaded (the harness loads them; library users call load())")
        labels = torch.as_tensor(labels).long().view(-1).to(self.device)
        if not labels.numel():
            return np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        scales = generate_scales(self.var, labels, seed=torch.as_tensor(seeds).long().view(-1), **self.sampling)
        return np.concatenate([to_uint8(decode_scales(self.vae, [s[i:i + 1] for s in scales]))
                               for i in range(labels.shape[0])])

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        return self.reconstruct_with_codes(images)[0]

    def reconstruct_with_codes(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The codes are all 10 token maps of each image, coarse to fine: int64 [B, 680]."""
        if self.can_sample:
            return super().reconstruct(images), None  # refused: not a tokenizer
        x = from_uint8(images).to(self.device)
        scales = [encode_scales(self.vae, x[i:i + 1]) for i in range(x.shape[0])]  # one image at a time, as sampled
        return (np.concatenate([to_uint8(decode_scales(self.vae, s)) for s in scales]),
                torch.cat([torch.cat(s, dim=1) for s in scales]).cpu().numpy().astype(np.int64))

    def codebook_size(self) -> int | None:
        """The one codebook all 10 scales share (4096 entries in the release)."""
        return None if self.can_sample or self.vae is None else self.vae.config.vocab_size


def _info(preset: VARPreset) -> PresetInfo:
    if preset.depth is None:
        return PresetInfo(model="VAR VQVAE (vae_ch160v4096z32)", image_size=256, eval_size=256,
                          paper="Tian et al. 2024, arXiv:2404.02905")
    return PresetInfo(
        model=f"VAR-d{preset.depth}", image_size=preset.image_size, eval_size=preset.eval_size,
        paper_settings={"cfg_scale": preset.cfg_scale, "top_k": preset.top_k, "top_p": preset.top_p},
        paper=f"Tian et al. 2024, {PAPER}: " + ", ".join(f"{k} {v}" for k, v in preset.paper.items()),
        settings_source=preset.settings_source, claimed_fid=preset.readme_fid)


def presets() -> dict[str, contract.Preset]:
    """The `bench.generators` entry point: every VAR preset of presets.py."""
    return {name: contract.Preset(name, functools.partial(VARGenerator, p), preset_options(p), _info(p))
            for name, p in PRESETS.items()}
