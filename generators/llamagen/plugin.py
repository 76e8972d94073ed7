"""The LlamaGen `Generator`: VQ tokenizer + GPT behind the harness contract, one factory per preset.

Images leave exactly as the official `sample_c2i_ddp.py` writes them:
    decode codes -> float image (unclamped)
    -> [384-px models] F.interpolate(size=256, mode="bicubic")   (align_corners=False, no antialias)
    -> uint8(clamp(127.5 * x + 128, 0, 255))                     (the cast truncates: floor for x >= 0)
The resize happens on the float image, before quantisation, so it cannot be reproduced by resizing the
uint8 output afterwards. With `resize="official"` (default) the plugin therefore does it itself and reports
`image_size == eval_size == 256`; with `resize="none"` it returns the native 384-px images and leaves the
resize to the harness (`image_size` 384, `eval_size` 256).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.download import RemoteFile, resolve_all
from bench.errors import BenchError
from bench.generator import Generator
from generators.llamagen.checkpoints import load_gpt, load_vq
from generators.llamagen.generate import generate_tokens
from generators.llamagen.presets import PRESETS, Preset, remote_file

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SAMPLING_KEYS = ("cfg_scale", "cfg_interval", "top_k", "top_p", "temperature")
OTHER_KEYS = ("vq_ckpt", "precision", "compile", "resize", "allow_download")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] nominally in [-1, 1] -> uint8 [B, H, W, 3], the official conversion (truncating)."""
    return torch.clamp(127.5 * images.float() + 128.0, 0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1] (ToTensor + Normalize(0.5, 0.5), as for training)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise BenchError(f"expected uint8 images [B, H, W, 3], found {images.dtype} {tuple(images.shape)}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def resize_for_eval(images: torch.Tensor, size: int) -> torch.Tensor:
    """The official 384 -> 256 step: bicubic (a = -0.75), align_corners=False, no antialiasing, on floats."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)


class LlamaGen(Generator):
    """A LlamaGen preset. Weights are resolved and loaded on first use, so `config()` and
    `required_files()` work offline and without the checkpoints."""

    def __init__(self, preset: Preset, ckpt: str | None = None, device: str = "cpu", **overrides: Any):
        unknown = sorted(set(overrides) - set(SAMPLING_KEYS) - set(OTHER_KEYS))
        if unknown:
            raise BenchError(f"{preset.name} does not understand {', '.join(unknown)}; it accepts "
                             f"{', '.join(SAMPLING_KEYS + OTHER_KEYS)}")
        if preset.gpt_model is None and any(overrides.get(k) is not None for k in SAMPLING_KEYS):
            raise BenchError(f"{preset.name} is a tokenizer: it has no sampling settings")
        self.preset = preset
        self.name = preset.name
        self.device = torch.device(device)
        if preset.gpt_model is None:  # tokenizer preset: the one checkpoint is the VQ model's
            self.ckpt, self.vq_ckpt = None, overrides.get("vq_ckpt") or ckpt
        else:
            self.ckpt, self.vq_ckpt = ckpt, overrides.get("vq_ckpt")
        self.sampling = {k: overrides[k] if overrides.get(k) is not None else getattr(preset, k)
                         for k in SAMPLING_KEYS}
        default_precision = "bf16" if self.device.type == "cuda" else "fp32"  # official sampler: bf16
        self.precision = overrides.get("precision") or default_precision
        if self.precision not in PRECISIONS:
            raise BenchError(f"precision must be one of {', '.join(PRECISIONS)}, found {self.precision!r}")
        self.compile = bool(overrides.get("compile") or False)
        self.resize = overrides.get("resize") or "official"
        if self.resize not in ("official", "none"):
            raise BenchError(f"resize must be 'official' or 'none', found {self.resize!r}")
        self.allow_download = overrides.get("allow_download", True)
        self.eval_size = preset.eval_size
        self.image_size = preset.eval_size if self.resize == "official" else preset.image_size
        self._gpt = None
        self._vq = None

    # ---- contract -------------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        p = self.preset
        return {
            "generator": self.name, "gpt_model": p.gpt_model, "gpt_ckpt": self.ckpt or p.gpt_file,
            "vq_model": p.vq_model, "vq_ckpt": self.vq_ckpt or p.vq_file, "downsample": p.downsample,
            "generation_size": p.image_size, "image_size": self.image_size, "eval_size": self.eval_size,
            "resize": ("float bicubic (F.interpolate, align_corners=False, no antialias) before uint8"
                       if self.resize == "official" and p.image_size != p.eval_size else self.resize),
            **(self.sampling if p.gpt_model else {}),
            "precision": self.precision, "compile": self.compile, "device": str(self.device),
            "paper_fid": p.paper_fid,
        }

    def required_files(self) -> list[RemoteFile]:
        files = [remote_file(self.preset.vq_file)]
        if self.preset.gpt_file:
            files.append(remote_file(self.preset.gpt_file))
        return files

    def sample(self, labels: torch.Tensor, seeds: torch.Tensor) -> np.ndarray:
        if self.preset.gpt_model is None:
            raise BenchError(f"{self.name} is a tokenizer: it reconstructs images, it cannot sample them")
        labels, seeds = torch.as_tensor(labels).long().view(-1), torch.as_tensor(seeds).long().view(-1)
        if labels.shape != seeds.shape:
            raise BenchError(f"{labels.shape[0]} labels but {seeds.shape[0]} seeds")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise BenchError(f"class labels must lie in [0, {self.num_classes}), found "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        gpt, _ = self._models()
        tokens = generate_tokens(gpt, labels, seed=seeds, compile=self.compile, **self.sampling)
        grid = self.preset.image_size // self.preset.downsample
        return np.concatenate([self._decode(codes[None]) for codes in tokens.view(-1, grid, grid)])

    def _decode(self, codes: torch.Tensor) -> np.ndarray:
        """One image at a time: conv kernels round differently for different batch sizes, and image i
        must not depend on the batch it was sampled in."""
        images = self._vq.decode_codes(codes)
        if self.resize == "official":
            images = resize_for_eval(images, self.eval_size)
        return to_uint8(images)

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        if self.preset.gpt_model is not None:
            return super().reconstruct(images)
        x = from_uint8(images)
        d = self.preset.downsample
        if x.shape[-1] % d or x.shape[-2] % d:
            raise BenchError(f"image sides must be multiples of {d} for {self.name}, found {tuple(x.shape[-2:])}")
        _, vq = self._models()
        return np.concatenate([to_uint8(vq.decode_codes(vq.encode_to_codes(x[i:i + 1].to(self.device))))
                               for i in range(x.shape[0])])

    # ---- loading --------------------------------------------------------------------------------------

    def _models(self):
        if self._vq is None:
            p = self.preset
            explicit = {p.vq_file: self.vq_ckpt, p.gpt_file: self.ckpt}
            paths = resolve_all(self.required_files(), {k: v for k, v in explicit.items() if k and v},
                                self.allow_download)
            self._vq = load_vq(paths[0], p.vq_model, device=self.device)
            if p.gpt_model is not None:
                self._gpt = load_gpt(paths[1], p.gpt_model, p.image_size, p.downsample, device=self.device,
                                     dtype=PRECISIONS[self.precision])
        return self._gpt, self._vq


def _factory(name: str):
    def factory(ckpt: str | None = None, device: str = "cpu", **overrides: Any) -> LlamaGen:
        return LlamaGen(PRESETS[name], ckpt=ckpt, device=device, **overrides)

    factory.__name__ = name.replace("-", "_")
    factory.__doc__ = f"The {name} preset (see generators/llamagen/presets.py)."
    return factory


llamagen_b = _factory("llamagen-b")
llamagen_b_256 = _factory("llamagen-b-256")
llamagen_l = _factory("llamagen-l")
llamagen_l_256 = _factory("llamagen-l-256")
llamagen_xl = _factory("llamagen-xl")
llamagen_xxl = _factory("llamagen-xxl")
llamagen_3b = _factory("llamagen-3b")
llamagen_vq16 = _factory("llamagen-vq16")
llamagen_vq8 = _factory("llamagen-vq8")
