"""`export`: a train-vq / train-gpt checkpoint -> a small `.safetensors` file that loads on its own.

A training checkpoint holds the optimizer state (twice the weights), the discriminator, RNG states and pickled
settings; a model that ships with the package (the demo weights in `weights/`) needs only the weights and the
config that says how to build the model around them. `checkpoints.export_safetensors` writes exactly that, and
`load_vq` / `load_gpt` read it back strictly.

    bench llamagen export runs/gpt/checkpoints/0000300/model.pt gpt.safetensors
    python -m generators.llamagen.export runs/gpt/checkpoints/0000300/model.pt weights/demo_gpt.safetensors
"""

from __future__ import annotations

import click
import torch

from bench.errors import BenchError
from generators.llamagen.checkpoints import export_safetensors, read_checkpoint

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


@click.command("export", context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--dtype", default="fp16", type=click.Choice(sorted(DTYPES)),
              help="Storage precision of the weights (they are cast back to the model's dtype on load); fp16 halves "
                   "the file, and its rounding is far below what sampling can tell apart.")
def export_command(checkpoint: str, output: str, dtype: str) -> None:
    """Write the weights and model config of a LlamaGen training CHECKPOINT (checkpoints/<step>/model.pt of
    `bench llamagen train-vq` or `train-gpt`) to OUTPUT as safetensors, without optimizer or training state."""
    kind = "gpt" if read_checkpoint(checkpoint, "gpt")[1] is not None else "vq"
    out = export_safetensors(checkpoint, output, kind, DTYPES[dtype])
    click.echo(f"wrote {out} ({kind}, {dtype}, {out.stat().st_size / 2**20:.1f} MiB)")


def main() -> None:
    """`python -m generators.llamagen.export`: a user mistake is one line, not a traceback (as under `bench`)."""
    try:
        export_command.main(standalone_mode=False)
    except click.ClickException as err:
        err.show()
        raise SystemExit(err.exit_code) from None
    except click.exceptions.Abort:
        raise SystemExit(1) from None
    except BenchError as err:
        raise SystemExit(f"Error: {err}") from None


if __name__ == "__main__":
    main()
