"""The generator contract and the plugin registry.

A generator plugin turns (class labels, per-sample seeds) into uint8 NHWC images. Sample i of a run must
depend only on (run seed, i) and its label -- never on batch size, process count or device order -- so
that sharded, resumed and single-process runs produce identical images and identical metrics.

Plugins register factories under the `bench.generators` entry-point group, one entry point per preset:

    [project.entry-points."bench.generators"]
    llamagen-xl = "generators.llamagen.plugin:llamagen_xl"

A factory is called as `factory(ckpt=None, device="cpu", **overrides)` and returns a `Generator`.
Overrides are the CLI's sampling settings (cfg_scale, top_k, top_p, temperature, steps, precision,
compile, ...); a factory rejects ones it does not understand with a `BenchError`.
"""

from __future__ import annotations

import abc
from importlib.metadata import entry_points
from typing import Any, Callable

import numpy as np
import torch

from bench.download import RemoteFile
from bench.errors import BenchError

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

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """The full resolved configuration (model, checkpoint, every sampling setting), JSON-serialisable."""

    @abc.abstractmethod
    def required_files(self) -> list[RemoteFile]:
        """Every file the generator needs, with pinned sha256 and source."""

    @abc.abstractmethod
    def sample(self, labels: torch.Tensor, seeds: torch.Tensor) -> np.ndarray:
        """Generate one image per (label, seed): labels and seeds are int64 [B]; returns uint8 [B, H, W, 3].

        `seeds[i]` alone must determine the randomness of image i (see the module docstring).
        """

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Tokenizers only: encode and decode uint8 [B, H, W, 3] images, returning the same shape."""
        raise BenchError(f"generator {self.name!r} is not a tokenizer: it cannot reconstruct images")


def available_generators() -> dict[str, Any]:
    """Preset name -> entry point, for every installed plugin."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_generator_factory(name: str) -> Callable[..., Generator]:
    """The factory for a preset, or a `BenchError` that lists the known presets."""
    known = available_generators()
    if name not in known:
        listing = ", ".join(sorted(known)) or "(none installed)"
        raise BenchError(f"unknown generator {name!r}. Known generators: {listing}")
    return known[name].load()
