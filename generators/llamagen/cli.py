"""`bench llamagen ...`: the LlamaGen trainers as a plugin command group.

Registered in the `bench.commands` entry-point group (pyproject.toml), so `bench` lists it without importing
the trainers until they are used.
"""

from __future__ import annotations

import click

from generators.llamagen.codes import extract_codes_command
from generators.llamagen.export import export_command
from generators.llamagen.train_gpt import train_gpt_command
from generators.llamagen.train_vq import train_vq_command


@click.group("llamagen")
def llamagen_group() -> None:
    """LlamaGen training: VQ tokenizer, code extraction, AR model (single GPU, CPU, or torchrun), and the export of a
    training checkpoint to the weights-only file sampling needs."""


for _command in (train_vq_command, extract_codes_command, train_gpt_command, export_command):
    llamagen_group.add_command(_command)
