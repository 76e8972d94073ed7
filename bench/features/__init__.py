"""Feature networks behind one registry: images in, named feature arrays out.

Every network is described by a `FeatureNetwork`: the arrays it provides (name -> width), how to load it, and
what it is. Metrics ask for arrays by name ("pool", "spatial", "logits", "dinov2"); the pipeline works out
which networks provide them, loads each once and runs each once per image batch (`bench.features.cache`).

    from bench.features import load_extractor
    dinov2 = load_extractor("dinov2", weights="dinov2_vitl14_pretrain.pth", device="cpu")
    dinov2.extract(images)          # uint8 [N, H, W, 3] -> {"dinov2": float32 [N, 1024]}

Adding a network is one file with a `NETWORK = FeatureNetwork(...)` and one line in `_MODULES` below; its
`embedding` array then gets every feature-space metric (FD, KID, Precision/Recall, density/coverage, Vendi) in
bench/metrics/registry.py. An extractor object has `name`, `arrays`, `provenance` (weights source and sha256,
`official_weights`, preprocessing, backend), `has_logits`/`logits_unavailable_reason` where it can lack an
output, and `extract(images)`.

Weights a user names by path are used whatever they are, as a checkpoint given by path is; a file that is not the
published one is recorded as `official_weights: false`, and `weights_warnings` says once that numbers in its
feature space are not comparable with published ones.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from bench.errors import BenchError
from bench.features.featureset import FeatureSet

__all__ = ["EXTRACTORS", "FeatureNetwork", "FeatureSet", "Extractor", "NetworkOption", "load_extractor",
           "load_extractors", "network_for", "UnofficialWeightsWarning", "weights_warnings"]


class Extractor(Protocol):
    name: str
    arrays: dict[str, int]
    provenance: dict[str, Any]

    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class NetworkOption:
    """A command-line option a network owns (`--dinov2-weights`): the flag, the loader argument it sets, and its
    click settings. `bench eval`, `bench ref build` and `bench run` offer every registered network's options."""

    flag: str
    argument: str
    help: str
    default: Any = None
    choices: tuple[str, ...] | None = None
    is_path: bool = False


@dataclass(frozen=True)
class FeatureNetwork:
    """A registered feature network: its arrays (name -> width), its loader, its options and what it is."""

    name: str
    arrays: dict[str, int]
    load: Callable[..., Extractor]
    description: str
    #: arrays the loaded network may lack (Inception's logits need softmax weights not every file has)
    optional: tuple[str, ...] = field(default=())
    options: tuple[NetworkOption, ...] = field(default=())
    #: the array the feature-space metrics compare (FD, KID, Precision/Recall, ...), None for none
    embedding: str | None = None
    #: how metric titles name the network ("FD_DINOv2")
    title: str = ""


#: the modules that define a `NETWORK`; one line per feature network
_MODULES = ("bench.features.inception", "bench.features.dinov2", "bench.features.clip")

EXTRACTORS: dict[str, FeatureNetwork] = {}
for _module in _MODULES:
    _network = importlib.import_module(_module).NETWORK
    EXTRACTORS[_network.name] = _network


def network_for(array: str) -> FeatureNetwork:
    """The network that provides a feature array ("pool" -> inception)."""
    for network in EXTRACTORS.values():
        if array in network.arrays:
            return network
    known = ", ".join(f"{a} ({n.name})" for n in EXTRACTORS.values() for a in n.arrays)
    raise BenchError(f"no feature network provides {array!r}; known arrays: {known}")


def weights_warnings(extractors: Iterable[Extractor]) -> list[str]:
    """One line per loaded network whose weights are not the published file (`official_weights: false`)."""
    out = []
    for extractor in extractors:
        prov = getattr(extractor, "provenance", None) or {}
        if prov.get("official_weights") is False:
            name = getattr(extractor, "name", "inception")
            network = EXTRACTORS.get(name)
            title = network.title if network is not None and network.title else name
            digest = str(prov.get("weights_sha256") or prov.get("sha256") or "?")[:12]
            out.append(f"{title} weights {prov.get('weights') or prov.get('path')} (sha256 {digest}...) are not the "
                       f"published file: metrics in the {title} feature space are not comparable with published "
                       "numbers")
    return out


class UnofficialWeightsWarning(UserWarning):
    """Weights a user named that are not the published file: numbers in their feature space are theirs alone."""


def load_extractor(name: str = "inception", **options: Any) -> Extractor:
    """Load a registered network by name with its own options (weights=..., device=..., ...); an
    `UnofficialWeightsWarning` says when the weights are not the published file."""
    if name not in EXTRACTORS:
        raise BenchError(f"unknown feature network {name!r}; known: {', '.join(EXTRACTORS)}")
    extractor = EXTRACTORS[name].load(**options)
    for message in weights_warnings([extractor]):
        warnings.warn(message, UnofficialWeightsWarning, stacklevel=2)
    return extractor


def load_extractors(arrays: Iterable[str], device: str = "cpu", allow_download: bool = True,
                    options: dict[str, dict[str, Any]] | None = None) -> list[Extractor]:
    """The registered networks that provide `arrays`, each loaded once, with its own options ({network: {...}}).
    Quiet about other weights: the commands record `weights_warnings` in their result and print them once."""
    names = dict.fromkeys(network_for(a).name for a in arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnofficialWeightsWarning)
        return [load_extractor(name, device=device, allow_download=allow_download, **(options or {}).get(name, {}))
                for name in names]
