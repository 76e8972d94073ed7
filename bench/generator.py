"""The generator contract and the plugin registry.

A generator plugin turns (class labels, per-sample seeds) into uint8 NHWC images. Sample i of a run must
depend only on (run seed, i) and its label -- never on batch size, process count or device order -- except
through float rounding: kernels may sum in another order for another batch shape (e.g. GEMM blocking on AVX-512
vs AVX2 CPUs). The harness cuts each shard into batches from its own start, so every image is sampled in the
same batch whatever the process count, and sharded, resumed and single-process runs at the same --batch-size
produce bitwise identical images and metrics; another --batch-size changes them by rounding only (DiT: pixels
within +-1 on a tiny fraction of them; a sampler of discrete tokens: a draw that rounding tips continues as
another sample of the same distribution; see README.md).

Plugins register factories under the `bench.generators` entry-point group, one entry point per preset:

    [project.entry-points."bench.generators"]
    llamagen-xl = "generators.llamagen.plugin:llamagen_xl"

A factory is called as `factory(ckpt=None, device="cpu", **overrides)` and returns a `Generator`.
Overrides are the CLI's sampling settings (cfg_scale, top_k, top_p, temperature, steps, precision,
compile, ...); a factory rejects ones it does not understand with a `BenchError` (`check_overrides` helps).

Weights: the harness resolves `required_files()` itself (explicit paths from `explicit_files()` -- by default
`--ckpt` for the first file -- then the cache, then a download; offline, one message lists every missing
file), verifies their sha256 and hands the paths to `load()`.
So a factory should be cheap -- build the object, touch no weights -- and `bench generators` can describe
a preset without any download. A factory may carry a `PresetInfo` (see `describe`) for that listing.
"""

from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from bench.download import RemoteFile
from bench.errors import BenchError
from bench.run.plan import sample_seeds

ENTRY_POINT_GROUP = "bench.generators"


class Generator(abc.ABC):
    """A class-conditional image generator as the harness sees it."""

    #: preset name, e.g. "llamagen-xl"
    name: str
    #: resolution the generator produces
    image_size: int
    #: resolution images are resized to before scoring (the 384 LlamaGen models are scored at 256)
    eval_size: int = 256
    num_classes: int = 1000
    #: whether `reconstruct` works (tokenizers): `--task reconstruct` checks it before any weights load
    can_reconstruct: bool = False

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """The full resolved configuration (model, checkpoint, every sampling setting), JSON-serialisable.

        It keys resumable runs, so it must not contain the device (rank 1 on cuda:1 runs the same config).
        """

    @abc.abstractmethod
    def required_files(self) -> list[RemoteFile]:
        """Every file the generator needs, with pinned sha256 and source; the main checkpoint first."""

    def explicit_files(self) -> dict[str, Path] | None:
        """Local paths the user gave (e.g. `--ckpt`), keyed by `RemoteFile.filename`.

        The default None means: `--ckpt` replaces the first of `required_files()`. A generator whose
        `--ckpt` is another file, or that takes more than one path, overrides this.
        """
        return None

    def load(self, files: dict[str, Path]) -> None:
        """Load weights from resolved, checksum-verified files (keyed by `RemoteFile.filename`).

        The default does nothing, for generators that need no files or load them in their factory.
        """

    @abc.abstractmethod
    def sample(self, labels: torch.Tensor, seeds: torch.Tensor) -> np.ndarray:
        """Generate one image per (label, seed): labels and seeds are int64 [B]; returns uint8 [B, H, W, 3].

        `seeds[i]` alone must determine the randomness of image i (see the module docstring).
        """

    def to_eval_size(self, images: np.ndarray) -> np.ndarray:
        """Resize uint8 [B, image_size, image_size, 3] images to `eval_size` the way the preset's paper did.

        The default is PIL bicubic on the uint8 images (how ADM-style reference batches are resized). A
        preset whose official script resizes differently overrides this -- or `sample_for_eval`, when the
        official resize happens before quantisation (LlamaGen: `F.interpolate(x, mode="bicubic")` on the
        decoder's float [-1, 1] output, then `clamp(127.5 * x + 128, 0, 255).to(uint8)`).
        """
        if images.shape[1] == self.eval_size and images.shape[2] == self.eval_size:
            return images
        size = (self.eval_size, self.eval_size)
        return np.stack([np.asarray(Image.fromarray(im).resize(size, Image.BICUBIC)) for im in images])

    def sample_for_eval(self, labels: torch.Tensor, seeds: torch.Tensor) -> np.ndarray:
        """The images that are scored: uint8 [B, eval_size, eval_size, 3]."""
        return self.to_eval_size(self.sample(labels, seeds))

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Tokenizers only: encode and decode uint8 [B, H, W, 3] images, returning the same shape."""
        raise BenchError(f"generator {self.name!r} is not a tokenizer: it cannot reconstruct images")


@dataclass(frozen=True)
class PresetInfo:
    """What `bench generators` shows for a preset without building it: the model and the paper's settings."""

    model: str
    image_size: int
    eval_size: int
    paper_settings: dict[str, Any] = field(default_factory=dict)
    paper: str = ""


def describe(info: PresetInfo) -> Callable[[Callable[..., Generator]], Callable[..., Generator]]:
    """Decorator attaching a `PresetInfo` to a factory: `@describe(PresetInfo(...))`."""

    def attach(factory: Callable[..., Generator]) -> Callable[..., Generator]:
        factory.preset_info = info
        return factory

    return attach


def preset_info(factory: Callable[..., Generator]) -> dict[str, Any] | None:
    """The factory's `PresetInfo` as a dict, or None where the plugin attached none."""
    info = getattr(factory, "preset_info", None)
    return asdict(info) if isinstance(info, PresetInfo) else None


def check_overrides(preset: str, overrides: dict[str, Any], accepted: set[str]) -> None:
    """Reject sampling settings a preset does not take, naming the ones it does (for factories)."""
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        takes = ", ".join("--" + k.replace("_", "-") for k in sorted(accepted)) or "none"
        raise BenchError(f"generator {preset!r} does not take {flags}; it takes: {takes}")


#: what each common sampling setting must be. A NaN or out-of-range value would still sample, silently wrong (NaN
#: guidance turns every token to 0; a temperature of 0 is greedy decoding), so it is refused up front.
SAMPLING_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "cfg_scale": (lambda v: math.isfinite(v) and v >= 1, "a finite number >= 1 (1 = no guidance)"),
    "temperature": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "top_k": (lambda v: float(v).is_integer() and v >= 0, "an integer >= 0 (0 = every token)"),
    "top_p": (lambda v: 0 < v <= 1, "a number in (0, 1] (1 = off)"),
    "cfg_interval": (lambda v: float(v).is_integer() and v >= -1, "an integer >= -1 (-1 = guide every token)"),
    "eta": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0 (0 = deterministic DDIM)"),
}


def check_sampling(preset: str, settings: dict[str, Any]) -> None:
    """Refuse a sampling setting outside its range (`SAMPLING_RULES`), naming the flag and what it must be."""
    for key, value in settings.items():
        if key not in SAMPLING_RULES or value is None:
            continue
        valid, expected = SAMPLING_RULES[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not valid(value):
            raise BenchError(f"generator {preset!r}: --{key.replace('_', '-')} must be {expected}, found {value!r}")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Decoder output float [B, 3, H, W] nominally in [-1, 1] -> uint8 [B, H, W, 3]: clamp(127.5 x + 128) then a
    truncating cast, the conversion the official LlamaGen and DiT samplers use (rounding instead moves FID)."""
    return torch.clamp(127.5 * images.float() + 128.0, 0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def per_sample_seeds(seed: int | torch.Tensor, n: int) -> torch.Tensor:
    """The int64 seeds [n] of one generator call: given per-sample seeds pass through; one int `seed` means
    samples 0..n-1 of a run seeded `seed` (bench.run.plan.sample_seeds), for direct library use."""
    if isinstance(seed, torch.Tensor):
        seeds = seed.reshape(-1).to(torch.int64)
        if seeds.shape[0] != n:
            raise BenchError(f"{seeds.shape[0]} per-sample seeds for {n} samples")
        return seeds
    return torch.from_numpy(sample_seeds(int(seed), np.arange(n)))


def per_sample_generators(seeds: torch.Tensor, device: torch.device | str) -> list[torch.Generator]:
    """One torch.Generator per sample: every random draw of sample i comes from its own generator, so batch
    size, batch order and process count cannot change an image."""
    return [torch.Generator(device=device).manual_seed(int(s) & 0xFFFF_FFFF_FFFF_FFFF) for s in seeds.tolist()]


def available_generators() -> dict[str, Any]:
    """Preset name -> entry point, for every installed plugin."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_generator_factory(name: str) -> Callable[..., Generator]:
    """The factory for a preset, or a `BenchError` that lists the known presets."""
    known = available_generators()
    if name not in known:
        listing = ", ".join(sorted(known)) or "(none installed)"
        raise BenchError(f"unknown generator {name!r}. Known generators: {listing}")
    try:
        return known[name].load()
    except Exception as err:  # a broken third-party plugin: say which, not a traceback into its import
        raise BenchError(f"generator {name!r}: its plugin {known[name].value} fails to import "
                         f"({type(err).__name__}: {err})") from None
