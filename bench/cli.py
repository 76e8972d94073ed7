"""The `bench` command line: one click group, one subcommand per job.

Subcommands live beside the code they drive and are attached here, so `bench --help` lists everything.
User mistakes (`BenchError`) are printed as one clear message, never as a traceback.
"""

from __future__ import annotations

import sys

import click

from bench import __version__
from bench.errors import BenchError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BenchError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bench")
def cli() -> None:
    """Sample ImageNet 256x256 generators and score them exactly as the papers do.

    \b
    bench eval REF.npz SAMPLE.npz     drop-in for ADM's evaluator (FID, sFID, IS, Precision, Recall)
    bench ref build SOURCE -o OUT.npz build reference statistics from an npz or an image folder
    """


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
