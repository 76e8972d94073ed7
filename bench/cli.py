"""The `bench` command line: one click group, one subcommand per job.

`bench eval`, `bench ref` and `bench report` are defined here; `bench run` and `bench generators` live beside the
harness they drive and are imported when used (`LAZY_COMMANDS`); plugins add theirs through the `bench.commands`
entry-point group (`bench llamagen ...`). So this module imports no generator plugin, and `bench --help` still
lists everything. User mistakes (`BenchError`) are printed as one clear message, never as a traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import click
import numpy as np

from bench import __version__, atomic
from bench.device import check_device
from bench.errors import BenchError
from bench.features.cli import given_options, network_options
from bench.metrics.registry import METRICS


#: commands defined beside the code they drive, imported only when used (`bench eval` never loads the run harness)
LAZY_COMMANDS = {"run": "bench.run.cli:run_command", "generators": "bench.run.cli:generators_command"}
#: the entry-point group through which plugins add commands: each names a click command or group, added under
#: the entry point's name, e.g. `llamagen = "generators.llamagen.cli:llamagen_group"`
COMMANDS_GROUP = "bench.commands"


class _TrackedStream:
    """A text stream that remembers whether what was last written to it ended a line.

    A progress bar redraws its line with '\r' and ends it only when it closes, and a bar abandoned by an
    exception is not closed until later: a message written then would be glued to the bar's text. Writing
    through this wrapper lets the CLI start its own messages on a fresh line, on a terminal and in a log alike.
    """

    def __init__(self, stream):
        self._stream = stream
        self.at_line_start = True

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        if text:
            self.at_line_start = text.endswith("\n")
        return written

    def fresh_line(self) -> None:
        """End the current line if something (a progress bar) left it open."""
        if not self.at_line_start:
            self.write("\n")
            self.flush()

    def __getattr__(self, name: str):  # flush, isatty, fileno, encoding, ...: the wrapped stream's
        return getattr(self._stream, name)


class _Group(click.Group):
    """A click group whose commands report to the user in one voice: a `BenchError` as one `Error:` line (exit
    status 2) instead of a traceback, a Python warning as one `Warning:` line (not Python's two lines of
    file:line and source code), an interruption (Ctrl-C) as `Interrupted` with exit status 130 (the shell's
    128 + SIGINT) -- each on a line of its own even when a progress bar was drawing. The overrides last only
    while a command runs, so library use of bench keeps Python's own warning display."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:  # click would turn a Ctrl-C while arguments are parsed into "Aborted!" and exit status 1
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            self.interrupted(_TrackedStream(sys.stderr), None)

    def invoke(self, ctx: click.Context):
        stderr = _TrackedStream(sys.stderr)
        saved = sys.stderr
        sys.stderr = stderr  # progress bars and messages alike write to sys.stderr: through the tracker
        try:
            with warnings.catch_warnings():
                warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: \
                    self.show_warning(stderr, message)
                return super().invoke(ctx)
        except BenchError as err:
            self.settle(stderr)
            click.echo(f"Error: {err}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as interrupt:
            self.interrupted(stderr, interrupt)
        except click.exceptions.Abort as abort:
            if isinstance(abort.__context__, EOFError):  # a prompt that met the end of its input: not a Ctrl-C
                raise
            self.interrupted(stderr, None)
        finally:
            sys.stderr = saved

    @staticmethod
    def settle(stderr: _TrackedStream) -> None:
        """Before a last message: close the progress bars the exception left open (each would otherwise redraw
        itself below the message when it is garbage-collected) and end a line left open."""
        from tqdm.std import tqdm

        for bar in sorted(tqdm._instances, key=lambda bar: -abs(getattr(bar, "pos", 0))):  # inner bars first
            with contextlib.suppress(Exception):
                bar.close()
        stderr.fresh_line()

    @staticmethod
    def show_warning(stderr: _TrackedStream, message: Warning | str) -> None:
        """`warnings.showwarning` while a command runs: the message alone, as bench's own warnings read."""
        stderr.fresh_line()
        click.echo(f"Warning: {message}", err=True)

    @staticmethod
    def interrupted(stderr: _TrackedStream, interrupt: KeyboardInterrupt | None) -> None:
        """Ctrl-C: 'Interrupted', with what the command said survives it (e.g. `bench run`'s kept shards)."""
        detail = str(interrupt) if interrupt is not None else ""
        _Group.settle(stderr)
        click.echo(f"Interrupted{': ' + detail if detail else ''}", err=True)
        sys.exit(130)


class _BenchGroup(_Group):
    """`bench`: the commands defined here, the lazily imported ones, and the plugins' (`bench.commands`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        plugins = {ep.name for ep in entry_points(group=COMMANDS_GROUP)}
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS, *plugins})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in LAZY_COMMANDS:
            module, _, attribute = LAZY_COMMANDS[name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
        elif command is None:
            command = plugin_command(name)
        return command


def plugin_command(name: str) -> click.Command | None:
    """The command a plugin registers under `name`, or None; one that fails to import is named in a warning."""
    found = [ep for ep in entry_points(group=COMMANDS_GROUP) if ep.name == name]
    if not found:
        return None
    try:
        command = found[0].load()
    except Exception as err:  # a broken plugin must not take the other commands down with a traceback
        click.echo(f"Warning: plugin command {name!r} ({found[0].value}) fails to import "
                   f"({type(err).__name__}: {err})", err=True)
        return None
    if not isinstance(command, click.Command):
        click.echo(f"Warning: plugin command {name!r} ({found[0].value}) is not a click command", err=True)
        return None
    return command


@click.group(cls=_BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bench")
def cli() -> None:
    """Sample ImageNet 256x256 generators and score them exactly as the papers do.

    \b
    bench run --generator llamagen-xl  sample 50k images and score them against ImageNet 256
    bench eval REF.npz SAMPLE.npz      drop-in for ADM's evaluator (FID, sFID, IS, Precision, Recall)
    bench ref build SOURCE -o OUT.npz  reference statistics from an npz or an ImageNet-style folder
    bench report runs/ --compare       leaderboard of results, flagging runs that are not comparable
    bench generators [NAME]            the installed generator presets, their paper settings and options
    bench llamagen train-vq|extract-codes|train-gpt   train LlamaGen from scratch (the LlamaGen plugin's)
    """


_extraction_options = [
    click.option("--device", default="cpu", show_default=True, callback=lambda ctx, param, value: check_device(value),
                 help="torch device for feature extraction."),
    click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                 help="Images per feature-network batch."),
]


def extraction_options(func):
    """--device, --batch-size, and every feature network's own options (--inception, --dinov2-weights, ...)."""
    for option in reversed(_extraction_options):
        func = option(func)
    return network_options(func)


@cli.command("eval")
@click.argument("ref_batch")
@click.argument("sample_batch", type=click.Path(exists=True))
@extraction_options
@click.option("--metrics", "metric_spec", default=None, metavar="LIST",
              help="Which metrics: '+kid,+fd_dinov2' adds to ADM's five, '-sfid' drops one, 'fid,kid' is exactly "
                   "these. Known: " + ", ".join(m.name for m in METRICS.values() if m.compute) + ". See docs/metrics.md.")
@click.option("--exact", is_flag=True,
              help="Precision/Recall with float64 distances instead of ADM's float16 ones (moves them by up to ~0.006).")
@click.option("--kid-subset-size", type=click.IntRange(min=2), default=None,
              help="KID subset size [min(1000, half the smaller batch), so the spread over subsets means something].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the result (metrics under `metrics`, schema in bench/result.py) to this JSON file.")
@click.option("--no-cache", is_flag=True, help="Recompute activations even if cached for these inputs.")
@click.option("--force", is_flag=True, help="Score batches of different resolutions anyway (ADM would not).")
@click.option("--kid", "with_kid", is_flag=True, help="Deprecated: use --metrics +kid.")
@click.pass_context
def eval_command(ctx, ref_batch, sample_batch, device, batch_size, metric_spec, exact, kid_subset_size, json_path,
                 no_cache, force, with_kid):
    """Score SAMPLE_BATCH against REF_BATCH: a drop-in for ADM's evaluations/evaluator.py.

    Both are ADM-format .npz files (uint8 NHWC images in `arr_0`) or folders of PNG/JPEG images; REF_BATCH may
    also be a registered name, as `bench run --ref` takes it (imagenet256, ..., demo64). A reference
    .npz that carries `mu`, `sigma`, `mu_s`, `sigma_s` (like VIRTUAL_imagenet256_labeled.npz) has its FID/sFID
    statistics taken from there, as ADM does. Prints ADM's five lines, then any metric added with --metrics:

    \b
      Inception Score, FID, sFID, Precision, Recall
      bench eval ref.npz samples.npz --metrics +kid,+fd_dinov2 --json result.json

    A folder's images are scored as they are (no crop; Inception resizes each to 299x299), as ADM scores an
    npz: turn an ImageNet-style folder into a reference with `bench ref build`, which applies ADM's center crop.

    Paper-comparable numbers need 50,000 samples against ADM's 10,000-image reference batch; see
    docs/metrics.md for what each number means and every convention it follows.
    """
    from bench.evaluate import evaluate, summary_lines
    from bench.features import load_extractors
    from bench.metrics import registry
    from bench.references import known_references, resolve_reference

    ref = resolve_reference(ref_batch)  # a registered name (demo64, imagenet256) or a path

    if json_path:
        _check_output(json_path, "--json", [ref_batch, sample_batch])
    metrics = registry.select(metric_spec)
    if with_kid and registry.METRICS["kid"] not in metrics:  # the deprecated --kid adds it, whatever --metrics says
        metrics.append(registry.METRICS["kid"])
    extractors = load_extractors(registry.arrays_needed(metrics), device, options=given_options(ctx))
    result = evaluate(ref.path, sample_batch, extractors=extractors, metrics=metrics, exact=exact,
                      kid_subset_size=kid_subset_size, batch_size=batch_size, cache=not no_cache, force=force,
                      ref_name=ref.name if ref.name in known_references() else None)
    for warning in result["warnings"]:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(summary_lines(result))
    if json_path:
        try:
            atomic.write_json(json_path, result)
        except OSError as err:
            raise BenchError(f"--json {json_path}: cannot write it ({err}); the numbers above are all there is") from None


def _check_output(path: str, option: str, inputs: list[str]) -> None:
    """Refuse, before any work, an output that would overwrite an input or that cannot be written."""
    target = Path(path).resolve()
    for given in inputs:
        if Path(given).resolve() == target:
            raise BenchError(f"{option} {path} is also an input; writing it would destroy that input")
    parent = target.parent
    if not parent.is_dir():
        raise BenchError(f"{option} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise BenchError(f"{option} {path}: the folder {parent} is not writable")


@cli.group("ref")
def ref_group() -> None:
    """Reference batches: build FID statistics from images."""


@ref_group.command("build")
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="The .npz to write (outside SOURCE), with its provenance record beside it as OUTPUT.json.")
@click.option("--image-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="For an image folder: ADM's center crop (BOX halving, BICUBIC resize, center crop) to this size.")
@click.option("--no-crop", is_flag=True, help="Use folder images as they are (no ADM center crop).")
@click.option("--include-images", is_flag=True,
              help="Also store the (cropped) images as arr_0, so the batch serves Precision/Recall too.")
@click.option("--subset", type=click.IntRange(min=1), default=None,
              help="With --include-images: store a seeded random N of the images (ADM's batches hold 10,000); "
                   "the statistics still cover every image.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which --subset is drawn.")
@extraction_options
@click.option("--dinov2", "with_dinov2", is_flag=True,
              help="Also store DINOv2 statistics (mu_dinov2, sigma_dinov2) for FD_DINOv2 (and, with --include-images, "
                   "the stored images' DINOv2 features as feat_dinov2).")
@click.option("--clip", "with_clip", is_flag=True,
              help="Also store CLIP statistics (mu_clip, sigma_clip) for FD_CLIP and, with --include-images, the "
                   "stored images' CLIP embeddings as feat_clip for CMMD.")
@click.pass_context
def ref_build_command(ctx, source, output, image_size, no_crop, include_images, subset, seed, device, batch_size,
                      with_dinov2, with_clip):
    """Compute a reference batch (mu, sigma, mu_s, sigma_s[, arr_0]) from an .npz or an image folder.

    For an ImageNet-style folder (class subfolders of JPEGs) this reproduces how ADM's reference batches were
    made: each image is center-cropped with ADM's `center_crop_arr`, the statistics cover the whole folder, and
    `--include-images --subset 10000` stores 10,000 random images for Precision/Recall (all 1.28M would be
    ~250 GB, and Precision/Recall depend on the reference count). The output is written atomically.

    A folder's images are its .png, .jpg/.jpeg, .bmp, .webp, .tif/.tiff, .ppm/.pgm/.pbm/.pnm and .gif files (a
    GIF's first frame), in any letter case and in any subfolder; other files, hidden files and everything in
    hidden folders (.thumbnails/) are skipped, with a notice that says how many and why.

    Beside OUTPUT, OUTPUT.json records how it was made: the source and its content digest, the images counted
    and skipped, the crop, the stored subset, the Inception (DINOv2, CLIP) weights with their sha256 and the
    backend that ran them, the package versions, and OUTPUT's own sha256 (a record whose sha256 differs from
    OUTPUT's describes another build). It sits beside the .npz rather than inside it: ADM's evaluator and other
    tools read these .npz files and expect arrays only.
    """
    from bench.batches import FolderImages, open_images
    from bench.features import load_extractors, weights_warnings
    from bench.references import build_reference

    target = Path(output).resolve()
    if Path(source).is_dir() and Path(source).resolve() in target.parents:
        raise BenchError(f"--output {output} lies inside {source}, the folder the reference is built from: it "
                         "could overwrite one of its images, and the next build from that folder would find it "
                         "there; write it outside the folder")
    _check_output(output, "--output", [source])
    _check_output(f"{output}.json", "--output's provenance record", [source])
    if subset is not None and not include_images:
        raise BenchError("--subset chooses which images --include-images stores; give both")
    given = ctx.get_parameter_source("image_size") == click.core.ParameterSource.COMMANDLINE
    if Path(source).is_file() and (given or no_crop):
        raise BenchError(f"--image-size and --no-crop apply to image folders; {source} is an npz, used as it is")
    crop = None if (no_crop or Path(source).is_file()) else image_size
    images = open_images(source, center_crop=crop)
    if target.exists() and isinstance(images, FolderImages) and any(f.resolve() == target for f in images.files):
        raise BenchError(f"--output {output} is one of the images of {source} (linked into it); writing it would "
                         "destroy that image")
    if images.num_images < 2:
        raise BenchError(f"{source}: {images.num_images} image(s); statistics need at least 2 (ADM's: 10,000)")
    if include_images and isinstance(images, FolderImages) and not crop and len(sizes := images.sizes()) > 1:
        shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
        raise BenchError(f"{source}: images of {len(sizes)} sizes ({shown}) cannot be stored as one arr_0; "
                         "drop --no-crop to center-crop them to --image-size")
    if subset is not None and subset > images.num_images:
        raise BenchError(f"--subset {subset}: {source} holds only {images.num_images} images")
    extra = (["dinov2"] if with_dinov2 else []) + (["clip"] if with_clip else [])
    arrays = ["pool", "spatial"] + extra
    extractors = load_extractors(arrays, device, options=given_options(ctx))
    for warning in weights_warnings(extractors):
        click.echo(f"Warning: {warning}", err=True)
    stored = build_reference(images, output, extractors, arrays, include_images=include_images, subset=subset,
                             seed=seed, batch_size=batch_size, store_rows=extra if include_images else ())
    shown = f" and {stored} of the images" if include_images else ""
    click.echo(f"wrote {output}: statistics of {images.num_images} images{shown} (provenance: {output}.json)")


@cli.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--compare", is_flag=True,
              help="Deltas against the baseline (beyond/within sampling noise where results carry an estimate), "
                   "comparability with the reason, the published rows matched, and every setting that differs.")
@click.option("--baseline", default="0", show_default=True,
              help="The run to compare to: its name, or its row number in the order the files were found.")
@click.option("--sort-by", default=None,
              help="Metric (or 'fid delta', ...) to rank by, in its direction: lower FID, higher IS first "
                   "[fid; a board without FID: its first metric, e.g. rfid].")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="Write the table as CSV (column keys, full precision).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Write a self-contained HTML page: sortable table, settings behind each row, charts, sample grids.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), default=None,
              help="Write the table as a Markdown table.")
@click.option("--latex", "latex_path", type=click.Path(dir_okay=False), default=None,
              help="Write the table as a LaTeX booktabs tabular.")
@click.option("--title", default="bench leaderboard", show_default=True, help="Title of the HTML page.")
def report_command(results, compare, baseline, sort_by, csv_path, html_path, markdown_path, latex_path, title):
    """Leaderboard of result files: `bench run`'s runs/<id>/result.json, `bench eval --json` outputs.

    RESULTS are result files, or folders searched (recursively) for *.json files in bench's result schema
    (bench/result.py); any other JSON file, or a damaged one, is skipped with a warning naming it. Rows are
    named by run_id, else by file name. Every metric a result holds gets a column (IS, KID, FD_DINOv2, ...),
    and each run's model, resolution and cfg scale are matched with the paper's number (reports/published.csv).

    \b
    bench report runs/                                 rank by FID
    bench report runs/ --compare --baseline my-base    deltas, noise, comparability, what differs
    bench report runs/ --compare --html board.html --markdown board.md --latex board.tex

    With --compare, rows whose reference batch, sample or reference count, Inception weights, Precision/Recall
    distances, or DINOv2/CLIP weights (where both rows used them) differ from the baseline are marked not
    comparable, with the reason: a lower FID against another reference batch is not a better model. A delta is beyond noise when |delta| > 2 sqrt(std_run^2 +
    std_baseline^2), from the bootstrap estimates results carry (docs/metrics.md).
    """
    from bench import report

    outputs = {"--csv": csv_path, "--html": html_path, "--markdown": markdown_path, "--latex": latex_path}
    for option, path in outputs.items():
        if path:
            _check_output(path, option, list(results))
    board = report.build(results, compare=compare, baseline=baseline, sort_by=sort_by or "fid",
                         default_sort=sort_by is None)
    for skipped in board.skipped:
        click.echo(f"Warning: skipped {skipped}", err=True)
    click.echo(report.report_text(board))
    for path in report.write(board, csv=csv_path, html=html_path, markdown=markdown_path, latex=latex_path,
                             title=title):
        click.echo(f"wrote {path}", err=True)


@cli.command("regress")
@click.option("--tokenizer", "preset", required=True, help="Tokenizer preset, e.g. llamagen-demo-vq or llamagen-vq16.")
@click.option("--vq-ckpt", type=click.Path(dir_okay=False), default=None,
              help="Your tokenizer checkpoint [the preset's own file].")
@click.option("--data", type=click.Path(exists=True), default=None,
              help="Validation images: a folder (center-cropped) or an npz [the demo dataset's val split].")
@click.option("--baseline", "baseline_path", type=click.Path(dir_okay=False), required=True,
              help="JSON of baselines keyed by preset (see reference_stats/baselines.json).")
@click.option("--update", is_flag=True, help="Measure and (re)write this preset's baseline instead of gating.")
@click.option("--device", default="cpu", show_default=True, callback=lambda ctx, param, value: check_device(value))
@click.option("--offline", is_flag=True, help="Never download; list what is missing instead.")
def regress_command(preset, vq_ckpt, data, baseline_path, update, device, offline):
    """rFID regression gate: fail (exit 1) when a tokenizer got worse than its recorded baseline.

    Reconstructs a fixed validation split and compares rFID (vs the originals), PSNR and SSIM with the
    baseline entry for the preset, within the tolerances stored there (they absorb float rounding across CPU
    kinds). The checkpoint is what the gate judges: a new tokenizer file of the same architecture is gated against
    the baseline (the file it was measured on is recorded beside it). A baseline measured on another architecture,
    split or Inception weights is refused (exit 2). The originals' features are cached: a second call extracts
    only the reconstructions'.

    \b
    bench regress --tokenizer llamagen-demo-vq --baseline reference_stats/baselines.json
    bench regress --tokenizer llamagen-vq16 --vq-ckpt mine.pt --data val/ --baseline b.json --update
    """
    import pandas as pd

    from bench.regress import regress

    verdict, current = regress(preset, baseline_path, vq_ckpt=vq_ckpt, data=data, update=update, device=device,
                               allow_download=not offline)
    if verdict is None:
        numbers = ", ".join(f"{k} {v:.4f}" for k, v in current.items())
        click.echo(f"baseline for {preset} written to {baseline_path}: {numbers}")
        return
    click.echo(pd.DataFrame(verdict.table).to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if not verdict.passed:
        click.echo(f"FAIL: {verdict.failures[0]}" + (f" (and {len(verdict.failures) - 1} more)"
                                                     if len(verdict.failures) > 1 else ""), err=True)
        sys.exit(1)
    click.echo(f"PASS: {preset} is within its baseline's tolerances")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
