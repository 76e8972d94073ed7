"""`torchrun --nproc_per_node=2 bench run ...` on CPU (gloo) gives exactly the single-process run, and a
run killed with SIGKILL resumes to exactly the uninterrupted result.

The test launches this file under torchrun; run as a script it is the worker (toy generator, stand-in
extractor and scorer). `--separate-folders` gives each rank its own run folder, as on nodes without a shared
filesystem, so rank 0 must receive rank 1's shards over the process group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

try:  # the fixture, when collected by pytest
    from test_run_helpers import toy_fixture  # noqa: F401  (the `toy` fixture)
except ImportError:  # the torchrun worker puts tests/ on sys.path itself
    pass

HERE = Path(__file__).resolve().parent


def worker(runs_dir: str, ref: str, separate: bool) -> None:
    sys.path.insert(0, str(HERE))
    import bench.run.executor
    from test_run_helpers import toy_factory

    bench.run.executor.load_preset = lambda name: toy_factory
    rank = int(os.environ["RANK"])
    folder = f"{runs_dir}/node{rank}" if separate else runs_dir
    run(folder, ref)


def run(runs_dir: str, ref: str):
    """The run every test here makes: 5 shards over 2 ranks (rank 0 takes shards 0, 2, 4 and rank 1 shards 1, 3)."""
    from bench.run.executor import RunSettings, execute
    from bench.run.sample import SampleTask
    from test_run_helpers import ProjectionExtractor, toy_scorer

    task = SampleTask(num_samples=45, seed=11, labels="balanced", save_npz=True)
    settings = RunSettings(generator="toy", batch_size=4, shard_size=10, ref=ref, runs_dir=runs_dir, run_id="d",
                           device="cpu")
    return execute(task, settings, extractors=[ProjectionExtractor()], scorer=toy_scorer)


def torchrun(runs_dir: Path, ref: Path, separate: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
           str(runs_dir), str(ref)] + (["--separate-folders"] if separate else [])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("separate", [False, True], ids=["shared-folder", "separate-folders"])
def test_two_processes_equal_one(toy, tmp_path, separate):
    single = run(str(tmp_path / "single"), str(toy))
    proc = torchrun(tmp_path / "multi", toy, separate)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    main = tmp_path / "multi" / ("node0" if separate else "") / "d"
    multi = json.loads((main / "result.json").read_text())
    assert multi["timing"]["world_size"] == 2 and multi["timing"]["images_generated"] == 45
    assert multi["metrics"] == single["metrics"]
    assert multi["provenance"]["fingerprint"] == single["provenance"]["fingerprint"]
    with np.load(main / "samples.npz") as a, np.load(tmp_path / "single" / "d" / "samples.npz") as b:
        np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
        np.testing.assert_array_equal(a["arr_1"], b["arr_1"])
    if separate:  # rank 1 produced only its own shards; rank 0 received them
        rank1 = sorted(p.name for p in (tmp_path / "multi" / "node1" / "d" / "shards").glob("*.features.npz"))
        assert rank1 == ["00000010-00000020.features.npz", "00000030-00000040.features.npz"]
        assert not (tmp_path / "multi" / "node1" / "d" / "result.json").exists()




def slow_worker(runs_dir: str, ref: str) -> None:
    """A single process that is killed (SIGKILL) in the middle of its second shard."""
    import time

    sys.path.insert(0, str(HERE))
    import bench.run.executor
    from test_run_helpers import ToyGenerator, toy_factory

    slow_sample = ToyGenerator.sample

    def sample(self, labels, seeds):
        time.sleep(0.3)
        return slow_sample(self, labels, seeds)

    ToyGenerator.sample = sample
    bench.run.executor.load_preset = lambda name: toy_factory
    run(runs_dir, ref)


def test_killed_run_resumes_to_identical_metrics(toy, tmp_path):
    import signal
    import time

    whole = run(str(tmp_path / "whole"), str(toy))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.Popen([sys.executable, __file__, str(tmp_path / "cut"), str(toy), "--slow"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "cut" / "d" / "shards"
    deadline = time.time() + 120
    while not list(shards.glob("*.features.npz")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # into the second shard (3 batches of 0.3 s each)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in shards.glob("*.features.npz"))
    assert finished and len(finished) < 5, finished
    assert list(shards.glob(".*.tmp"))  # the shard being written when killed
    resumed = run(str(tmp_path / "cut"), str(toy))
    assert resumed["timing"]["images_resumed"] == 10 * len(finished)
    assert resumed["metrics"] == whole["metrics"]
    assert not list(shards.glob(".*.tmp"))  # the killed shard's half-written images were cleaned up
    with np.load(tmp_path / "cut" / "d" / "samples.npz") as a, np.load(tmp_path / "whole" / "d" / "samples.npz") as b:
        np.testing.assert_array_equal(a["arr_0"], b["arr_0"])


if __name__ == "__main__":
    if "--slow" in sys.argv:
        slow_worker(sys.argv[1], sys.argv[2])
    else:
        worker(sys.argv[1], sys.argv[2], "--separate-folders" in sys.argv)
