"""The run executor with a task of its own: resume after Ctrl-C, damaged shards, out of memory, no task imports.

`SquaresTask` is not a generator benchmark: item i is an 8x8 noise image seeded i, plus i**2 as a per-item value.
It shows what a task has to supply, and that the executor's skeleton (folder, shards, resume, gather, result)
does not depend on sampling or reconstruction.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.errors import BenchError
from bench.run.executor import RunSettings, execute
from bench.run.task import Task
from test_run_helpers import ProjectionExtractor, toy_scorer
from test_run_helpers import toy_fixture  # noqa: F401  (the `toy` fixture)


@dataclass
class SquaresTask(Task):
    count: int = 30

    name = "sample"  # a result's task is one of bench.result.TASKS
    run_id_tag = "squares"

    def prepare(self, generator, shard_size):
        self.processed: list[int] = []
        self._shards = [(s, min(s + shard_size, self.count)) for s in range(0, self.count, shard_size)]

    def config(self):
        return {"count": self.count}

    def shards(self):
        return self._shards

    def process(self, generator, indices, rows, extract):
        self.processed += indices.tolist()
        images = np.stack([np.random.default_rng(int(i)).integers(0, 256, (8, 8, 3), np.uint8) for i in indices])
        return {**extract(images), "square": indices.astype(np.float64) ** 2}

    def score(self, arrays, score):
        scored = score({k: arrays[k] for k in ("pool", "spatial", "logits")})
        return {**scored, "metrics": {**scored["metrics"], "sum_of_squares": float(arrays["square"].sum())}}


def settings(tmp_path: Path, ref: Path, **kw) -> RunSettings:
    return RunSettings(**{**dict(generator="toy", batch_size=4, shard_size=10, ref=str(ref),
                                 runs_dir=str(tmp_path / "runs"), run_id="sq"), **kw})


def go(task: SquaresTask, s: RunSettings, **kw):
    return execute(task, s, extractors=[ProjectionExtractor()], scorer=toy_scorer, **kw)


def test_a_task_supplies_only_its_shards_processing_and_scoring(toy, tmp_path):
    task = SquaresTask()
    result = go(task, settings(tmp_path, toy, run_id=None))
    assert result["metrics"]["sum_of_squares"] == sum(i * i for i in range(30)) and result["metrics"]["n"] == 30
    assert sorted(task.processed) == list(range(30))
    assert result["run_id"].startswith("toy-squares-") and result["settings"]["count"] == 30
    assert result["samples"]["num_samples"] == 30 and result["timing"]["images_generated"] == 30
    shard = np.load(tmp_path / "runs" / result["run_id"] / "shards" / "00000010-00000020.features.npz")
    assert set(shard.files) == {"pool", "spatial", "logits", "square", "index"}  # every array of every network
    np.testing.assert_array_equal(shard["index"], np.arange(10, 20))


def test_resume_after_an_interrupt_processes_only_the_rest(toy, tmp_path, capsys):
    whole = go(SquaresTask(), settings(tmp_path, toy, run_id="whole"))

    def stop(shard):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="1 of 3 shards are finished and kept in .*run the same command"):
        go(SquaresTask(), settings(tmp_path, toy), on_shard_done=stop)
    task = SquaresTask()
    resumed = go(task, settings(tmp_path, toy))
    assert sorted(task.processed) == list(range(10, 30))
    assert resumed["timing"]["images_resumed"] == 10 and resumed["metrics"] == whole["metrics"]


def test_a_damaged_shard_is_set_aside_and_processed_again(toy, tmp_path, capsys):
    first = go(SquaresTask(), settings(tmp_path, toy))
    shard = tmp_path / "runs" / "sq" / "shards" / "00000020-00000030.features.npz"
    shard.write_bytes(shard.read_bytes()[:100])
    task = SquaresTask()
    again = go(task, settings(tmp_path, toy))
    assert sorted(task.processed) == list(range(20, 30)) and again["metrics"] == first["metrics"]
    assert shard.with_name(shard.name + ".corrupt").exists() and "is damaged" in capsys.readouterr().err


def test_a_changed_task_config_refuses_the_folder(toy, tmp_path):
    go(SquaresTask(), settings(tmp_path, toy))
    with pytest.raises(BenchError, match="count: 30 -> 20"):
        go(SquaresTask(count=20), settings(tmp_path, toy))


def test_out_of_memory_in_a_task_gets_the_batch_size_advice(toy, tmp_path):
    class Hungry(SquaresTask):
        def process(self, generator, indices, rows, extract):
            if indices[0] >= 10:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().process(generator, indices, rows, extract)

    with pytest.raises(BenchError, match=r"out of memory on cpu with a batch of 4 \(items 10\.\.13\).*e\.g\. 2"):
        go(Hungry(), settings(tmp_path, toy))
    assert [p.name for p in (tmp_path / "runs" / "sq" / "shards").glob("*.npz")] == ["00000000-00000010.features.npz"]


def test_the_result_file_reads_back_through_the_schema(toy, tmp_path):
    from bench.result import read

    result = go(SquaresTask(), settings(tmp_path, toy))
    assert read(tmp_path / "runs" / "sq" / "result.json") == result
    assert json.loads((tmp_path / "runs" / "sq" / "manifest.json").read_text())["config"]["format"] == 2


def test_the_executor_imports_no_task():
    code = ("import sys, bench.run.executor; "
            "print(sorted(m for m in sys.modules if m in ('bench.run.sample', 'bench.run.reconstruct', "
            "'bench.run.cli') or m.startswith('generators')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
