"""The installed generator presets: the `bench.generators` entry points, each a plugin family's `presets()`.

One layout: an entry point names a function of no arguments returning {preset name: `bench.generator.Preset`}.
A family whose import or listing fails is kept under its entry point's name, so `bench generators` shows why
and `load_preset` names it instead of a traceback, and it cannot hide the other plugins.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

from bench.errors import BenchError
from bench.generator import Preset

ENTRY_POINT_GROUP = "bench.generators"


@dataclass(frozen=True)
class Listed:
    """One installed preset, or a family that fails (`error`): `load()` gives the preset or raises the error."""

    name: str
    value: str  # the family's entry point, e.g. "generators.llamagen.plugin:presets"
    preset: Preset | None = None
    error: Exception | None = None

    def load(self) -> Preset:
        if self.error is not None:
            raise self.error
        return self.preset


def _family(ep) -> dict[str, Preset]:
    listing = ep.load()()
    presets = dict(listing)
    wrong = [name for name, preset in presets.items() if not isinstance(preset, Preset) or preset.name != name]
    if wrong:
        raise BenchError(f"entry point {ep.value} must return {{name: bench.generator.Preset}} keyed by each "
                         f"preset's own name; wrong for {', '.join(map(repr, wrong))}")
    return presets


def available_generators() -> dict[str, Listed]:
    """Preset name -> `Listed`, for every installed plugin family."""
    known: dict[str, Listed] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            presets = _family(ep)
        except Exception as err:  # a broken family must not hide the other plugins
            known[ep.name] = Listed(ep.name, ep.value, error=err)
            continue
        known.update({name: Listed(name, ep.value, preset) for name, preset in presets.items()})
    return known


def load_preset(name: str) -> Preset:
    """The preset called `name`, or a `BenchError` that lists the known presets."""
    known = available_generators()
    if name not in known:
        listing = ", ".join(sorted(known)) or "(none installed)"
        raise BenchError(f"unknown generator {name!r}. Known generators: {listing}")
    try:
        return known[name].load()
    except Exception as err:  # a broken third-party plugin: say which, not a traceback into its import
        raise BenchError(f"generator {name!r}: its plugin {known[name].value} fails to load "
                         f"({type(err).__name__}: {err})") from None
