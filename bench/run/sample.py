"""`bench run`'s default task: sample a generator and score the samples against the reference.

Sample i gets its label and seed from the `SamplingPlan` (pure functions of the run seed and i), is generated at
the preset's resolution and resized to its eval size the way its paper did (`Generator.sample_for_eval`), and
only its feature arrays are kept -- unless `--save-npz` asks for the images too. The gathered features are
scored with the selected metrics (ADM's five by default), exactly as `bench eval` scores a saved batch.

    bench run --generator llamagen-xl --ref imagenet256 --cfg-scale 1.75 --save-npz
    torchrun --nproc_per_node=8 -m bench.cli run --generator dit-xl-2 --set steps=250
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from bench.atomic import atomic_path
from bench.atomic import write_json as atomic_write_json
from bench.batches import NpzWriter
from bench.errors import BenchError
from bench.generator import Generator
from bench.metrics.registry import PAPER_NUM_SAMPLES
from bench.run.plan import LABEL_MODES, SamplingPlan
from bench.run.shards import RunFolder
from bench.run.task import Extract, Score, Shard, Task

GRID_SIZE = 64
NPZ_NAME = "samples.npz"


@dataclass
class SampleTask(Task):
    """Sample `num_samples` images with labels and seeds from `seed`; optionally keep them as an ADM npz and a grid."""

    num_samples: int = PAPER_NUM_SAMPLES
    seed: int = 0
    labels: str = "random"
    save_npz: bool = False
    save_grid: bool = False

    name = "sample"

    def __post_init__(self):
        if self.num_samples < 2:
            raise BenchError(f"--num-samples must be at least 2 (FID needs a covariance), found {self.num_samples}")
        if self.labels not in LABEL_MODES:
            raise BenchError(f"--labels must be one of {', '.join(LABEL_MODES)}, found {self.labels!r}")

    def check(self, generator: Generator) -> None:
        if not generator.can_sample:
            raise BenchError(f"generator {generator.name!r} is a tokenizer: it cannot sample images. Score it with "
                             f"`bench run -g {generator.name} --task reconstruct --data VAL_IMAGES`, or sample a "
                             "generator preset (`bench generators` lists them)")

    def prepare(self, generator: Generator, shard_size: int) -> None:
        self.plan = SamplingPlan(self.num_samples, generator.num_classes, self.seed, self.labels, shard_size)
        self.eval_shape = (generator.eval_size, generator.eval_size, 3)

    def config(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "seed": self.seed, "labels": self.labels}

    def shards(self) -> list[Shard]:
        return self.plan.shards()

    def keeps_images(self, folder: RunFolder) -> bool:
        return self.save_npz and not (folder.path / NPZ_NAME).exists()

    def process(self, generator: Generator, indices: np.ndarray, rows: np.ndarray | None,
                extract: Extract) -> dict[str, np.ndarray]:
        labels = self.plan.labels(indices)
        images = generator.sample_for_eval(torch.from_numpy(labels), torch.from_numpy(self.plan.seeds(indices)))
        expected = (len(indices), *self.eval_shape)
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape != expected:
            found = (images.dtype, images.shape) if isinstance(images, np.ndarray) else type(images).__name__
            raise BenchError(f"generator {generator.name!r} returned {found}; the contract is uint8 {expected}")
        return {**extract(images), "label": labels, "images": images}

    def score(self, arrays: dict[str, np.ndarray], score: Score) -> dict[str, Any]:
        return score(with_labels(arrays))

    def outputs(self, folder: RunFolder, shards: list[Shard], arrays: dict[str, np.ndarray], generator: Generator,
                batch_size: int) -> dict[str, str]:
        outputs = {}
        if self.save_npz:
            npz = folder.path / NPZ_NAME
            if not npz.exists():  # else it was written by an earlier run of the same samples, and shards hold none
                write_npz(folder, shards, arrays["label"], npz)
            outputs["npz"] = str(npz)
        if self.save_grid:
            outputs["grid"] = str(grid_for(generator, self.plan, batch_size, folder.path / "grid.png"))
        return outputs


def features_only(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A shard's feature arrays, without its bookkeeping (sample index and label)."""
    return {k: v for k, v in arrays.items() if k not in ("index", "label")}


def with_labels(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feature arrays and the samples' class labels (`label`), which per-class metrics (Vendi) read."""
    return {**features_only(arrays), "label": arrays["label"]}


def write_npz(folder: RunFolder, shards: list[Shard], labels: np.ndarray, path: Path) -> Path:
    """The ADM-format sample batch: `arr_0` uint8 NHWC in sample-index order, `arr_1` the int64 labels.

    Streamed shard by shard into the archive; the per-shard image files are removed once it is published.
    Sample order is already class-mixed (random labels are i.i.d., balanced ones a seeded shuffle), so
    ADM's Inception Score splits of 5000 consecutive samples never see a sorted class block.
    """
    first = folder.read_images(shards[0])
    writer = NpzWriter(path, len(labels), first.shape[1:])
    try:
        for shard in tqdm(shards, desc=f"write {path.name}", unit="shard"):
            writer.write(folder.read_images(shard))
    except BaseException:
        writer.abort()
        raise
    writer.close(arr_1=labels)
    for shard in shards:
        folder.shard_file(shard, "images").unlink()
    return path


def grid_for(generator: Generator, plan: SamplingPlan, batch_size: int, path: Path) -> Path:
    """The run's grid: the one already written in this run folder when it was made in batches of the same size
    (the folder's fingerprint fixes everything else that decides the images), else a new one. A finished run
    re-run with --save-grid then costs nothing; a grid from other batch shapes could differ by float rounding."""
    record = path.with_suffix(".json")
    made = {"batch_size": batch_size, "num_images": min(GRID_SIZE, plan.num_samples)}
    try:
        if path.is_file() and json.loads(record.read_text()) == made:
            return path
    except (OSError, ValueError):
        pass
    write_grid(generator, plan, batch_size, path)
    atomic_write_json(record, made)
    return path


def write_grid(generator: Generator, plan: SamplingPlan, batch_size: int, path: Path) -> Path:
    """A PNG grid of samples 0..63 at the generator's own resolution.

    They are regenerated from their per-sample seeds (one extra batch or two), so they are exactly the run's
    first samples without the run keeping any images.
    """
    indices = np.arange(min(GRID_SIZE, plan.num_samples))
    with torch.inference_mode():
        images = np.concatenate([
            generator.sample(torch.from_numpy(plan.labels(chunk)), torch.from_numpy(plan.seeds(chunk)))
            for chunk in np.array_split(indices, math.ceil(len(indices) / batch_size))
        ])
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    h, w = images.shape[1:3]
    canvas = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    return path
