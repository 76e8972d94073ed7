"""What a kind of `bench run` does with its shards; the executor (bench/run/executor.py) does everything else.

    SampleTask (sample.py)            sample i -> eval-size image -> feature arrays       FID, sFID, IS, P/R, ...
    ReconstructTask (reconstruct.py)  image i of --data -> encode/decode -> features of both, PSNR, SSIM -> rFID, ...

A task supplies its configuration (fingerprinted: it keys the run folder), its shards, how one batch of item
indices becomes arrays (one row per item: features, per-item values), and how the gathered arrays are scored.
It never claims, locks or gathers the run folder, never sees the process group, the reference or the result
file, so a new kind of run is one class. A task is a dataclass whose fields are what the user asked of it; they are recorded in the result.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Iterator

import numpy as np

from bench.generator import Generator
from bench.metrics.bootstrap import bootstrap_spread, noise_record
from bench.run.shards import RunFolder, Shard

#: every loaded feature network over uint8 [B, H, W, 3] images -> {array name: [B, D]}
Extract = Callable[[np.ndarray], dict[str, np.ndarray]]
#: one set of feature arrays against the reference, with the selected metrics -> {"metrics", "unavailable", "details"}
Score = Callable[[dict[str, np.ndarray]], dict[str, Any]]


class Task(abc.ABC):
    #: the result's `task`
    name: str
    #: inserted in the default run id, `<generator>-<tag>-<fingerprint>` ("" for none)
    run_id_tag: str = ""

    def check(self, generator: Generator) -> None:
        """Refuse a generator that cannot do this task; called before its weights are fetched."""

    @abc.abstractmethod
    def prepare(self, generator: Generator, shard_size: int) -> None:
        """Set up the inputs once the generator is built: a bad input fails here, before any sampling."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """What decides the shards' contents besides the generator, its files and the feature networks."""

    @abc.abstractmethod
    def shards(self) -> list[Shard]:
        """Every shard of the run, in index order."""

    def keeps_images(self, folder: RunFolder) -> bool:
        """Whether shards also store the eval-size images `process` returns under "images" (read on rank 0)."""
        return False

    def inputs(self, todo: list[Shard]) -> Iterator[tuple[Shard, np.ndarray | None]]:
        """Each shard of `todo`, in order, with its input rows; None where the task makes them from the indices."""
        for shard in todo:
            yield shard, None

    @abc.abstractmethod
    def process(self, generator: Generator, indices: np.ndarray, rows: np.ndarray | None,
                extract: Extract) -> dict[str, np.ndarray]:
        """One batch: arrays with one row per index (stored in the shard), and "images" when `keeps_images`."""

    @abc.abstractmethod
    def score(self, arrays: dict[str, np.ndarray], score: Score) -> dict[str, Any]:
        """{"metrics", "unavailable", "details"} from all shards' arrays, concatenated in index order ("index" too)."""

    def noise(self, arrays: dict[str, np.ndarray], score: Score, resamples: int, seed: int = 0) -> dict[str, Any]:
        """The result's `noise` block: the spread of `self.score` over bootstrap resamples of the items (every array
        resampled by the same rows, so a reconstruction stays paired with its original). `score` scores only the
        metrics cheap enough to repeat (the executor leaves out Precision/Recall)."""
        std = bootstrap_spread(lambda rows: self.score({k: v[rows] for k, v in arrays.items()}, score)["metrics"],
                               len(arrays["index"]), resamples, seed)
        return noise_record(std, resamples, seed)

    def outputs(self, folder: RunFolder, shards: list[Shard], arrays: dict[str, np.ndarray], generator: Generator,
                batch_size: int) -> dict[str, str]:
        """Files beside result.json, by name ("npz", "grid"); written on rank 0 once the run is scored."""
        return {}
