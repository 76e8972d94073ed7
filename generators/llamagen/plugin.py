"""The LlamaGen `Generator`: VQ tokenizer + GPT behind the harness contract, one factory per preset.

Scored images are made exactly as the official `sample_c2i_ddp.py` makes them:
    decode codes -> float image (unclamped)
    -> [384-px models] F.interpolate(size=256, mode="bicubic")   (align_corners=False, no antialias)
    -> uint8(clamp(127.5 * x + 128, 0, 255))                     (the cast truncates: floor for x >= 0)
The resize runs on the float image, before quantisation, so it cannot be reproduced by resizing the uint8
output afterwards: `sample()` returns the native-resolution images and `sample_for_eval()` (what the harness
scores) applies the official float resize itself.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.download import RemoteFile, resolve_all
from bench.errors import BenchError
from bench import generator as contract
from bench.generator import Generator, PluginOption, PresetInfo, from_uint8, to_uint8
from generators.llamagen.checkpoints import load_gpt, load_vq
from generators.llamagen.generate import generate_tokens
from generators.llamagen.gpt import GPT, gpt_config
from generators.llamagen.presets import PRESETS, Preset, packaged_path, remote_file
from generators.llamagen.vq import VQModel, vq_config

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: the settings `generate_tokens` takes, each defaulting to the preset's
SAMPLING_KEYS = ("cfg_scale", "cfg_interval", "top_k", "top_p", "temperature")


def preset_options(preset: Preset) -> tuple[PluginOption, ...]:
    """What a preset takes (`bench run --set NAME=VALUE`, or the common flags), with its own values as defaults."""
    vq = () if getattr(preset, "random_seed", None) is not None else (
        PluginOption("vq_ckpt", str, None, f"a local tokenizer checkpoint ({preset.vq_file}) [cache, else download]"),)
    if preset.gpt_model is None:
        return vq
    return (
        PluginOption("cfg_scale", float, preset.cfg_scale, "classifier-free guidance scale (1: none)"),
        PluginOption("cfg_interval", int, int(preset.cfg_interval), "guide the first N tokens only (-1: every token)"),
        PluginOption("top_k", int, preset.top_k, "sample among the k most likely tokens (0: all)"),
        PluginOption("top_p", float, preset.top_p, "nucleus sampling mass (1.0: off)"),
        PluginOption("temperature", float, preset.temperature, "softmax temperature"),
        PluginOption("precision", str, None, "GPT weights and compute [bf16 on GPU, fp32 on CPU]",
                     choices=tuple(PRECISIONS)),
        PluginOption("compile", bool, False, "torch.compile the decoding step"),
    ) + vq


def resize_for_eval(images: torch.Tensor, size: int) -> torch.Tensor:
    """The official 384 -> 256 step: bicubic (a = -0.75), align_corners=False, no antialiasing, on floats."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)


class LlamaGen(Generator):
    """A LlamaGen preset. Building it touches no weights: the harness resolves `required_files()` and calls
    `load()`; library users can call `sample()` directly, which resolves (and downloads) on first use."""

    def __init__(self, preset: Preset, ckpt: str | None = None, device: str = "cpu", **overrides: Any):
        """`overrides` are the preset's options as `Preset` checked them (bench/generator.py), and `allow_download`."""
        tokenizer = preset.gpt_model is None
        if preset.random_seed is not None and ckpt:  # no files to point at
            raise BenchError(f"generator {preset.name!r} holds random weights: it takes no checkpoint")
        self.preset = preset
        self.name = preset.name
        self.can_reconstruct = tokenizer
        self.can_sample = not tokenizer  # bench run refuses to sample a tokenizer before any work
        self.device = torch.device(device)
        if tokenizer:  # the one checkpoint of a tokenizer preset is the VQ model's
            self.ckpt, self.vq_ckpt = None, overrides.get("vq_ckpt") or ckpt
        else:
            self.ckpt, self.vq_ckpt = ckpt, overrides.get("vq_ckpt")
            named = re.search(r"_(\d+)\.pt$", Path(ckpt).name) if ckpt else None
            if named and int(named.group(1)) != preset.image_size:  # the weights alone cannot tell
                warnings.warn(f"{ckpt}: the name says a {named.group(1)} px model, but {preset.name} samples at "
                              f"{preset.image_size} px; a GPT's weights fit any size (RoPE learns no positions), "
                              "so make sure it is the file you mean", stacklevel=2)
        self.sampling = {} if tokenizer else {
            k: overrides[k] if overrides.get(k) is not None else getattr(preset, k) for k in SAMPLING_KEYS}
        default_precision = "bf16" if self.device.type == "cuda" else "fp32"  # official sampler: bf16
        self.precision = overrides.get("precision") or default_precision
        self.compile = bool(overrides.get("compile") or False)
        self.allow_download = overrides.get("allow_download", True)
        self.image_size = preset.image_size
        self.eval_size = preset.eval_size
        self.num_classes = preset.num_classes
        self._gpt = None
        self._vq = None

    # ---- contract -------------------------------------------------------------------------------------

    @property
    def default_reference(self) -> str:
        """The demo presets score against the demo's own packaged val split; the releases against ADM's batch."""
        return self.preset.reference or super().default_reference

    def config(self) -> dict[str, Any]:
        """The resolved configuration. `gpt_ckpt` / `vq_ckpt` name the files actually used: a user's `--ckpt` or
        `vq_ckpt` by its own name (provenance.checkpoints holds its path and sha256). `official_weights` is False
        when any user file replaced one of the preset's own (a release's, or the demo's packaged ones); such a run
        records no README FID, since the release's number says nothing about other weights, and the board matches
        only official weights with the paper's rows."""
        p = self.preset
        official = not (self.ckpt or self.vq_ckpt)
        return {
            "generator": self.name, "model": p.gpt_model or p.vq_model, "gpt_model": p.gpt_model,
            "gpt_ckpt": Path(self.ckpt).name if self.ckpt else p.gpt_file, "vq_model": p.vq_model,
            "vq_ckpt": Path(self.vq_ckpt).name if self.vq_ckpt else p.vq_file, "official_weights": official,
            "downsample": p.downsample,
            **({} if p.random_seed is None else {"weights": f"random (seed {p.random_seed})"}),
            "num_classes": self.num_classes,
            "image_size": self.image_size, "eval_size": self.eval_size,
            "eval_resize": ("F.interpolate bicubic (align_corners=False, no antialias) on the float decoder "
                            "output, then uint8" if self.image_size != self.eval_size else "none"),
            **self.sampling,
            **({} if p.gpt_model is None else {
                "precision": self.precision, "compile": self.compile,
                # one GPT step per token, on [cond; uncond] rows when guided (speed beside quality on the board)
                "forward_passes_per_image": (p.image_size // p.downsample) ** 2
                * (2 if self.sampling["cfg_scale"] > 1 else 1)}),
            "readme_fid": p.readme_fid if official else None,
        }

    def required_files(self) -> list[RemoteFile]:
        """The GPT checkpoint first (what `--ckpt` names), then the tokenizer; none for a random-weights preset.

        A pinned sha256 identifies the preset's own file; a file the user gives in its place is theirs (recorded
        by its own sha256 in the result), so it is not held to the pin."""
        user = {self.preset.gpt_file: self.ckpt, self.preset.vq_file: self.vq_ckpt}
        return [dataclasses.replace(remote_file(name), sha256=None) if user.get(name) else remote_file(name)
                for name in (self.preset.gpt_file, self.preset.vq_file) if name]

    def explicit_files(self) -> dict[str, Path]:
        """User-given paths, and for packaged presets the files inside the package (nothing to download)."""
        p = self.preset
        packaged = {name: packaged_path(name) for name in (p.gpt_file, p.vq_file) if name and p.packaged}
        given = {p.gpt_file: self.ckpt, p.vq_file: self.vq_ckpt}
        return {**packaged, **{name: Path(path).expanduser() for name, path in given.items() if name and path}}

    def load(self, files: dict[str, Path]) -> None:
        p = self.preset
        if p.random_seed is not None:
            self._gpt, self._vq = random_models(p, self.device, PRECISIONS[self.precision])
            return
        self._vq = load_vq(files[p.vq_file], p.vq_model, device=self.device)
        if self._vq.downsample != p.downsample:
            raise BenchError(f"{files[p.vq_file]}: a tokenizer with downsampling {self._vq.downsample}, but "
                             f"{p.name} decodes a {p.image_size // p.downsample}-token grid (downsampling "
                             f"{p.downsample})")
        if p.gpt_model is not None:
            self._gpt = load_gpt(files[p.gpt_file], p.gpt_model, p.image_size, p.downsample, device=self.device,
                                 dtype=PRECISIONS[self.precision])
            if self.ckpt:  # a user's GPT brings its own classes (trained on 3 classes: labels are drawn below 3)
                self.num_classes = self._gpt.num_classes
            check_pair(self._gpt, self._vq, p, files[p.gpt_file], self.num_classes)

    def sample(self, labels: torch.Tensor, seeds: torch.Tensor) -> np.ndarray:
        """uint8 [B, image_size, image_size, 3] at the native resolution (384 for most presets)."""
        return _stacked([to_uint8(image) for image in self._sample_float(labels, seeds)], self.image_size)

    def sample_for_eval(self, labels: torch.Tensor, seeds: torch.Tensor) -> np.ndarray:
        """uint8 [B, eval_size, eval_size, 3]: the official float bicubic resize, then the uint8 conversion."""
        return _stacked([to_uint8(resize_for_eval(image, self.eval_size))
                         for image in self._sample_float(labels, seeds)], self.eval_size)

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        return self.reconstruct_with_codes(images)[0]

    def reconstruct_with_codes(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.preset.gpt_model is not None:
            return super().reconstruct(images), None  # refused: not a tokenizer
        x = from_uint8(images)
        d = self.preset.downsample
        if x.shape[-1] % d or x.shape[-2] % d:
            raise BenchError(f"image sides must be multiples of {d} for {self.name}, found {tuple(x.shape[-2:])}")
        _, vq = self._models()
        # One image at a time: conv kernels round differently for different batch sizes.
        codes = [vq.encode_to_codes(x[i:i + 1].to(self.device)) for i in range(x.shape[0])]
        return (np.concatenate([to_uint8(vq.decode_codes(c)) for c in codes]),
                torch.cat([c.reshape(1, -1) for c in codes]).cpu().numpy().astype(np.int64))

    def codebook_size(self) -> int | None:
        return None if self.preset.gpt_model is not None else self._models()[1].config.codebook_size

    # ---- internals ------------------------------------------------------------------------------------

    def _sample_float(self, labels: torch.Tensor, seeds: torch.Tensor) -> list[torch.Tensor]:
        """Decoded float images [1, 3, H, W], one per sample: decoding one image at a time keeps image i's decode
        independent of the batch it was sampled in (conv kernels round differently per batch size). Its tokens are as
        well, unless the batched GPT's rounding tips a near-tied draw (then image i is another sample)."""
        if self.preset.gpt_model is None:
            raise BenchError(f"{self.name} is a tokenizer: it reconstructs images, it cannot sample them")
        labels, seeds = torch.as_tensor(labels).long().view(-1), torch.as_tensor(seeds).long().view(-1)
        if labels.shape != seeds.shape:
            raise BenchError(f"{labels.shape[0]} labels but {seeds.shape[0]} seeds")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise BenchError(f"class labels must lie in [0, {self.num_classes}), found "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        if not labels.numel():  # an empty batch: nothing to generate (token generation needs one row)
            return []
        gpt, vq = self._models()
        tokens = generate_tokens(gpt, labels, seed=seeds, compile=self.compile, **self.sampling)
        grid = self.preset.image_size // self.preset.downsample
        return [vq.decode_codes(codes[None]) for codes in tokens.view(-1, grid, grid)]

    def _models(self):
        if self._vq is None:
            remotes = self.required_files()
            paths = resolve_all(remotes, self.explicit_files(), self.allow_download)
            self.load({r.filename: path for r, path in zip(remotes, paths)})
        return self._gpt, self._vq


def check_pair(gpt: GPT, vq: VQModel, preset: Preset, gpt_path: Path, num_classes: int) -> None:
    """Refuse a GPT that cannot drive this preset: its classes must be the ones sampled (the harness draws labels
    below `num_classes`: the preset's for its own files, the checkpoint's for a user's) and its vocabulary the
    tokenizer's codebook."""
    if gpt.num_classes != num_classes:
        raise BenchError(f"{gpt_path}: a GPT conditioned on {gpt.num_classes} classes, but {preset.name} samples "
                         f"{num_classes} classes; use the preset its classes belong to")
    if gpt.config.vocab_size != vq.config.codebook_size:
        raise BenchError(f"{gpt_path}: a GPT over {gpt.config.vocab_size} codes, but the {preset.vq_model} "
                         f"tokenizer of {preset.name} has {vq.config.codebook_size}; it was trained on another "
                         "tokenizer's codes")


def random_models(preset: Preset, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> tuple[GPT | None, VQModel]:
    """The preset's GPT and tokenizer with the weights a training run starts from (each module's own init),
    drawn from `preset.random_seed` alone: the same on every machine, and the global RNG is left untouched.

    An untrained GPT's output head is zero (the official init), so its tokens are uniformly random: the floor
    every trained model must beat.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(preset.random_seed)
        vq = VQModel(vq_config(preset.vq_model)).eval()
        gpt = None
        if preset.gpt_model is not None:
            gpt = GPT(gpt_config(preset.gpt_model, num_classes=preset.num_classes,
                                 vocab_size=vq.config.codebook_size,
                                 block_size=(preset.image_size // preset.downsample) ** 2))
            gpt = gpt.to(device=device, dtype=dtype).eval()
    return gpt, vq.to(device)


def _stacked(images: list[np.ndarray], size: int) -> np.ndarray:
    """uint8 [B, size, size, 3] from one-image arrays, also for B = 0."""
    return np.concatenate(images) if images else np.zeros((0, size, size, 3), np.uint8)


def _info(preset: Preset) -> PresetInfo:
    demo = preset.packaged or preset.random_seed is not None
    model = f"LlamaGen {preset.gpt_model or preset.vq_model}"
    if preset.random_seed is not None:
        model += f" with random weights (seed {preset.random_seed})"
    elif demo:
        model += " + VQ-demo" * (preset.gpt_model is not None) + ", trained on the demo photos"
    return PresetInfo(
        model=model, image_size=preset.image_size, eval_size=preset.eval_size,
        paper_settings={} if preset.gpt_model is None else {
            "cfg_scale": preset.cfg_scale, "top_k": preset.top_k, "top_p": preset.top_p,
            "temperature": preset.temperature},
        paper=("the embedded demo (generators/llamagen/weights/README.md), not a paper model" if demo else
               "Sun et al. 2024, arXiv:2406.06525"),
        settings_source=preset.settings_source, claimed_fid=preset.readme_fid)


def presets() -> dict[str, contract.Preset]:
    """The `bench.generators` entry point: every preset of presets.py (a new preset is one edit there)."""
    return {name: contract.Preset(name, functools.partial(LlamaGen, p), preset_options(p), _info(p))
            for name, p in PRESETS.items()}
