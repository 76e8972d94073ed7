"""The feature networks' command-line options, offered by every command that extracts features.

Each network declares its own options (`NetworkOption` in its file); `network_options` adds all of them to a
click command and collects the given values per network, so `bench eval`, `bench ref build` and `bench run`
take `--inception`, `--dinov2-weights`, ... without listing them, and a new network's options appear everywhere.
"""

from __future__ import annotations

from typing import Any, Callable

import click

from bench.features import EXTRACTORS

#: where the collected {network: {argument: value}} lives in the click context
_KEY = "bench.features.options"


def network_options(func: Callable) -> Callable:
    """Click decorator: every registered network's options; read them back with `given_options(ctx)`."""
    for network in reversed(list(EXTRACTORS.values())):
        for option in reversed(network.options):
            def record(ctx: click.Context, param: click.Parameter, value: Any, network=network.name,
                       argument=option.argument) -> None:
                if value is not None:
                    ctx.meta.setdefault(_KEY, {}).setdefault(network, {})[argument] = value

            kind = (click.Choice(option.choices) if option.choices else
                    click.Path(exists=True, dir_okay=False) if option.is_path else str)
            func = click.option(option.flag, type=kind, default=option.default, show_default=option.default is not None,
                                expose_value=False, callback=record, help=option.help)(func)
    return func


def given_options(ctx: click.Context) -> dict[str, dict[str, Any]]:
    """{network: {loader argument: value}} from the options `network_options` added."""
    return dict(ctx.meta.get(_KEY, {}))
