"""The generator contract: what a plugin implements (`Generator`), how a preset is registered (`Preset`), and the
settings it takes (`PluginOption`). Discovery of installed plugins is bench/plugins.py.

A generator plugin turns (class labels, per-sample seeds) into uint8 NHWC images. Sample i of a run must
depend only on (run seed, i) and its label -- never on batch size, process count or device order -- so
that sharded, resumed and single-process runs produce identical images and identical metrics.

A plugin family registers one entry point under `bench.generators`, naming a function of no arguments that
returns its presets by name, each a `Preset`:

    [project.entry-points."bench.generators"]
    llamagen = "generators.llamagen.plugin:presets"        # -> {"llamagen-xl": Preset(...), ...}

A `Preset` is the one place a setting is checked: it declares the options it takes (`PluginOption`: name, type,
default, choices and the range a value must lie in), and calling it -- `preset(ckpt=None, device="cpu",
**overrides)` -- refuses unknown names and wrong types, choices or ranges with one `BenchError` naming the flag,
then builds the `Generator` from the checked values. The common options (`COMMON_OPTIONS`: --cfg-scale,
--precision, --compile) are `bench run` flags; a plugin's own are given as `--set NAME=VALUE`.

Weights: the harness resolves `required_files()` itself (explicit paths from `explicit_files()` -- by default
`--ckpt` for the first file -- then the cache, then a download; offline, one message lists every missing
file), verifies their sha256 and hands the paths to `load()`. So building a preset must be cheap -- build the
object, touch no weights -- and `bench generators` describes a preset from its `PresetInfo` without any download.
"""

from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from bench.download import RemoteFile
from bench.errors import BenchError
from bench.run.plan import sample_seeds



class Generator(abc.ABC):
    """A class-conditional image generator as the harness sees it."""

    #: preset name, e.g. "llamagen-xl"
    name: str
    #: resolution the generator produces
    image_size: int
    #: resolution images are resized to before scoring (the 384 LlamaGen models are scored at 256)
    eval_size: int = 256
    num_classes: int = 1000
    #: whether `sample` works (a tokenizer alone cannot sample): `bench run` checks it before any weights load
    can_sample: bool = True
    #: whether `reconstruct` works (tokenizers): `--task reconstruct` checks it before any weights load
    can_reconstruct: bool = False

    @property
    def default_reference(self) -> str:
        """The reference batch `bench run` scores against without `--ref`: ADM's ImageNet batch at the eval size.
        A preset trained on other data (the offline demo) names its own."""
        return f"imagenet{self.eval_size}"

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

        The default does nothing, for generators that need no files or load them when built.
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

    def reconstruct_with_codes(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """What `--task reconstruct` calls: the reconstructions and, for a discrete tokenizer, the codebook indices
        it decoded them from, int64 [B, tokens], so the task can count the codebook usage the tokenizer papers print
        (LlamaGen's Table 2). Discrete tokenizers override this to return both from one encoder pass; by default
        there are no codes."""
        return self.reconstruct(images), None

    def codebook_size(self) -> int | None:
        """Discrete tokenizers: entries in the codebook the codes index (None: no codebook, no usage metric)."""
        return None


@dataclass(frozen=True)
class PresetInfo:
    """What `bench generators` shows for a preset without building it: the model and the paper's settings."""

    model: str
    image_size: int
    eval_size: int
    paper_settings: dict[str, Any] = field(default_factory=dict)
    paper: str = ""
    #: where `paper_settings` come from (e.g. the official sampling command), when not from the paper's table
    settings_source: str = ""
    #: a FID the model's release states for these settings (e.g. its README); `bench generators` checks it against
    #: the paper's tables in reports/published.csv and shows both where they disagree
    claimed_fid: float | None = None


@dataclass(frozen=True)
class PluginOption:
    """One sampling setting a preset takes: `bench run --set NAME=VALUE` (or the flag of a common one).

    `type` is int, float, bool or str, or a tuple of them (DiT's steps: 250 or "ddim25"); `default` is what the
    preset uses when the option is not given (None: it depends, `help` says on what).
    """

    name: str
    type: type | tuple[type, ...]
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] = ()
    #: (valid(value) -> bool, what it must be): the range a value must lie in; None takes the common rule of its name
    #: (`SAMPLING_RULES`: cfg_scale >= 1, temperature > 0, ...). A rule may raise `BenchError` to say more.
    rule: tuple[Callable[[Any], bool], str] | None = None

    @property
    def flag(self) -> str:
        return option_flag(self.name)

    def coerce(self, value: Any, preset: str) -> Any:
        """`value` as this option's type (an int where a float is declared becomes a float; a number where only
        str is declared, its text), or a `BenchError` naming the option and what it must be."""
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        out = _MISSING
        if isinstance(value, bool):
            out = value if bool in types else _MISSING
        elif isinstance(value, int) and int in types:
            out = value
        elif isinstance(value, float) and int in types and float not in types and value.is_integer():
            out = int(value)
        elif isinstance(value, (int, float)) and float in types:
            out = float(value)
        elif isinstance(value, str) and str in types:
            out = value
        elif isinstance(value, (int, float)) and str in types:
            out = str(value)
        if out is _MISSING or (self.choices and out not in self.choices):
            expected = f"one of {', '.join(map(str, self.choices))}" if self.choices else \
                " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in types)
            raise BenchError(f"generator {preset!r}: {self.flag} must be {expected}, found {value!r}")
        rule = self.rule or SAMPLING_RULES.get(self.name)  # the common rules are numeric: text passes them
        applies = rule is not None and not isinstance(out, bool) and (self.rule is not None or not isinstance(out, str))
        try:
            valid = not applies or rule[0](out)
        except BenchError as err:  # a rule that says more itself (DiT's step spec)
            raise BenchError(f"generator {preset!r}: {self.flag}: {err}") from None
        if not valid:
            raise BenchError(f"generator {preset!r}: {self.flag} must be {rule[1]}, found {value!r}")
        return out


_MISSING = object()
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}

#: the sampling settings most generators share: `bench run` has a flag for each (--cfg-scale, --precision,
#: --compile), the rest of a plugin's options are given as --set NAME=VALUE. Plugins that take one declare it
#: too, with their own default.
COMMON_OPTIONS: tuple[PluginOption, ...] = (
    PluginOption("cfg_scale", float, None, "classifier-free guidance scale [the preset's paper value, e.g. 1.75 "
                                           "for llamagen-xl]"),
    PluginOption("precision", str, None, "compute precision [bf16 on GPU for LlamaGen, tf32 for DiT, fp32 on CPU]",
                 choices=("fp32", "tf32", "bf16", "fp16")),
    PluginOption("compile", bool, None, "torch.compile the generator's step"),
)


def option_flag(name: str) -> str:
    """How a user gives a setting: `--cfg-scale` for a common one, `--set top_k` for a plugin's own."""
    return f"--{name.replace('_', '-')}" if name in {o.name for o in COMMON_OPTIONS} else f"--set {name}"


#: what each common sampling setting must be, where an option declares no rule of its own. A NaN or out-of-range
#: value would still sample, silently wrong (NaN guidance turns every token to 0; a temperature of 0 is greedy
#: decoding), so it is refused up front.
SAMPLING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "cfg_scale": (lambda v: math.isfinite(v) and v >= 1, "a finite number >= 1 (1 = no guidance)"),
    "temperature": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "top_k": (lambda v: v >= 0, "an integer >= 0 (0 = every token)"),
    "top_p": (lambda v: 0 < v <= 1, "a number in (0, 1] (1 = off)"),
    "cfg_interval": (lambda v: v >= -1, "an integer >= -1 (-1 = guide every token)"),
    "eta": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0 (0 = deterministic DDIM)"),
}


@dataclass(frozen=True)
class Preset:
    """A registered preset: its name, the options it takes, what `bench generators` shows, and how to build it.

    `build(ckpt=..., device=..., **settings)` receives only declared options, checked and typed (an option the user
    did not give is left out: the generator uses its preset's default). Calling the preset checks, then builds.
    """

    name: str
    build: Callable[..., Generator]
    options: tuple[PluginOption, ...] = ()
    info: PresetInfo | None = None

    def settings(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """`overrides` checked against the declared options and coerced to their types (None = not given)."""
        by_name = {o.name: o for o in self.options}
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = [k for k in given if k not in by_name]
        if unknown:
            takes = ", ".join(o.flag for o in self.options) or "none"
            raise BenchError(f"generator {self.name!r} does not take {', '.join(map(option_flag, sorted(unknown)))}; "
                             f"it takes: {takes} (`bench generators {self.name}` explains each)")
        return {k: by_name[k].coerce(v, self.name) for k, v in given.items()}

    def __call__(self, ckpt: str | Path | None = None, device: str | torch.device = "cpu",
                 **overrides: Any) -> Generator:
        return self.build(ckpt=ckpt, device=device, **self.settings(overrides))


def preset_info(preset: Preset) -> dict[str, Any] | None:
    """The preset's `PresetInfo` as a dict, or None where the plugin gave none."""
    info = getattr(preset, "info", None)
    return asdict(info) if isinstance(info, PresetInfo) else None


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Decoder output float [B, 3, H, W] nominally in [-1, 1] -> uint8 [B, H, W, 3]: clamp(127.5 x + 128) then a
    truncating cast, the conversion the official LlamaGen and DiT samplers use (rounding instead moves FID)."""
    return torch.clamp(127.5 * images.float() + 128.0, 0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1] (ToTensor + Normalize(0.5, 0.5), as the tokenizers were trained; the inverse of `to_uint8` up to its rounding)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise BenchError(f"expected uint8 images [B, H, W, 3], found {images.dtype} {tuple(images.shape)}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


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
