"""`bench run`: streaming sample-and-score, provenance, resume, outputs and every user-facing fault."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import bench.features
import bench.run.cli
import bench.run.executor
import bench.run.score
from bench.batches import NpzImages
from bench.cli import _Group
from bench.download import RemoteFile
from bench.errors import BenchError, ChecksumError
from bench.metrics.registry import arrays_needed, sample_size_warnings, select
from bench.report import build
from bench.result import json_safe
from bench.run.cli import run_command
from bench.run.executor import RunSettings, execute
from bench.run.plan import SamplingPlan
from bench.run.sample import SampleTask
from test_run_helpers import ProjectionExtractor, ToyGenerator, toy_factory, toy_scorer, write_ref
from test_run_helpers import toy_fixture  # noqa: F401  (the `toy` fixture)

TASK_FIELDS = ("num_samples", "seed", "labels", "save_npz", "save_grid")


def settings(tmp_path: Path, ref: Path, **kw) -> tuple[SampleTask, RunSettings]:
    """A sample task of 40 samples seeded 3 and its run settings; keywords go to whichever takes them."""
    task = dict(num_samples=40, seed=3)
    task.update({k: kw.pop(k) for k in TASK_FIELDS if k in kw})
    base = dict(generator="toy", batch_size=7, shard_size=16, ref=str(ref), runs_dir=str(tmp_path / "runs"), run_id="r")
    base.update(kw)
    return SampleTask(**task), RunSettings(**base)


def go(run: tuple[SampleTask, RunSettings], **kw):
    task, s = run
    return execute(task, s, extractors=[ProjectionExtractor()], scorer=toy_scorer, **kw)


def direct_images(n: int, seed: int = 3, labels: str = "random", **overrides) -> tuple[np.ndarray, np.ndarray]:
    """The run's eval-size images computed straight from the plan, the toy and PIL, in one batch."""
    plan = SamplingPlan(n, 10, seed, labels)
    idx = np.arange(n)
    full = toy_factory(**overrides).sample(torch.from_numpy(plan.labels(idx)), torch.from_numpy(plan.seeds(idx)))
    small = np.stack([np.asarray(Image.fromarray(im).resize((8, 8), Image.BICUBIC)) for im in full])
    return small, plan.labels(idx)


def cli(args: list[str], **replaced):
    """`bench run ARGS`; `replaced` (extractors=, scorer=) stand in for the real feature networks and scorer."""
    group = _Group()
    group.add_command(run_command)
    if not replaced:
        return CliRunner().invoke(group, ["run", *args])
    real = bench.run.executor.execute
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench.run.cli, "execute", lambda task, s: real(task, s, **replaced))
        return CliRunner().invoke(group, ["run", *args])


def test_metrics_equal_an_independent_computation(toy, tmp_path):
    result = go(settings(tmp_path, toy))
    images, _ = direct_images(40)
    ex = ProjectionExtractor()
    expected = toy_scorer(type("R", (), {"path": toy})(), [ex])(ex.extract(images))["metrics"]
    assert result["metrics"]["n"] == 40
    assert result["metrics"]["fid"] == pytest.approx(expected["fid"], rel=1e-9)
    assert result["metrics"]["is"] == pytest.approx(expected["is"], rel=1e-9)
    on_disk = json.loads((tmp_path / "runs" / "r" / "result.json").read_text())
    assert on_disk["metrics"] == result["metrics"]


def test_result_records_provenance(toy, tmp_path):
    result = go(settings(tmp_path, toy, overrides={"temperature": 0.5}))
    assert result["schema_version"] == 1 and result["task"] == "sample" and result["run_id"] == "r"
    assert result["settings"]["generator_config"]["temperature"] == 0.5
    assert result["settings"]["generator_config"]["device"] == "cpu"
    assert result["reference"]["sha256"] == hashlib.sha256(toy.read_bytes()).hexdigest()
    assert result["reference"]["resolution"] == 8 and result["reference"]["path"] == str(toy.resolve())
    s = result["settings"]
    assert s["seed"] == 3 and s["num_samples"] == 40 and s["labels"] == "random" and s["batch_size"] == 7
    assert s["metrics"] == ["inception_score", "fid", "sfid", "precision_recall"]
    assert result["samples"] == {"num_samples": 40, "resolution": 8, "path": None}
    assert {"python", "torch", "numpy", "bench"} <= set(result["provenance"]["versions"])
    assert result["provenance"]["features"] == {"inception": ProjectionExtractor.provenance}
    assert len(result["provenance"]["fingerprint"]) == 64
    timing = result["timing"]
    assert timing["images_generated"] == 40 and timing["images_resumed"] == 0 and timing["world_size"] == 1
    assert timing["images_per_s"] > 0 and timing["wall_time_s"] > 0
    assert result["provenance"]["device"].startswith("cpu")
    assert s["extractors"] == {"inception": ProjectionExtractor.provenance}


def test_fingerprint_keeps_the_device_type_not_the_rank_device(toy, tmp_path):
    class OnGpu(ProjectionExtractor):
        provenance = {"name": "test-projection", "device": "cuda:3"}

    task, s = settings(tmp_path, toy)
    generator = toy_factory(device="cuda:1")
    task.prepare(generator, s.shard_size)
    config = bench.run.executor.run_config(task, s, generator, {}, [OnGpu()])
    assert config["generator_config"]["device"] == "cuda" and config["extractors"]["inception"]["device"] == "cuda"


def test_shards_hold_features_in_index_order_whatever_the_batch_size(toy, tmp_path):
    go(settings(tmp_path, toy, batch_size=5))
    shards = sorted((tmp_path / "runs" / "r" / "shards").glob("*.features.npz"))
    assert [p.name.split(".")[0] for p in shards] == ["00000000-00000016", "00000016-00000032", "00000032-00000040"]
    images, labels = direct_images(40)
    pool = np.concatenate([np.load(p)["pool"] for p in shards])
    np.testing.assert_allclose(pool, ProjectionExtractor().extract(images)["pool"], rtol=1e-12)
    np.testing.assert_array_equal(np.concatenate([np.load(p)["label"] for p in shards]), labels)


def test_interrupted_run_resumes_to_identical_metrics(toy, tmp_path):
    whole = go(settings(tmp_path, toy, run_id="whole"))
    finished = []

    def interrupt_after_two(shard):
        finished.append(shard)
        if len(finished) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="2 of 3 shards are finished"):
        go(settings(tmp_path, toy, run_id="cut"), on_shard_done=interrupt_after_two)
    assert len(list((tmp_path / "runs" / "cut" / "shards").glob("*.features.npz"))) == 2
    resumed = go(settings(tmp_path, toy, run_id="cut"))
    assert resumed["timing"]["images_generated"] == 8 and resumed["timing"]["images_resumed"] == 32
    assert resumed["metrics"] == whole["metrics"]


def test_changed_config_refuses_to_reuse_shards(toy, tmp_path):
    go(settings(tmp_path, toy))
    with pytest.raises(BenchError, match=r"generator_config.temperature: 1.0 -> 0.7"):
        go(settings(tmp_path, toy, overrides={"temperature": 0.7}))
    with pytest.raises(BenchError, match=r"seed: 3 -> 4"):
        go(settings(tmp_path, toy, seed=4))


def test_a_run_resumes_with_another_batch_size(toy, tmp_path):
    """What the out-of-memory advice asks for: sample i depends on (seed, i) only, so the shards are reused."""
    whole = go(settings(tmp_path, toy, run_id="whole"))

    def interrupt(shard):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        go(settings(tmp_path, toy, run_id="cut"), on_shard_done=interrupt)
    resumed = go(settings(tmp_path, toy, run_id="cut", batch_size=3))
    assert resumed["timing"]["images_resumed"] == 16
    # equal up to float rounding: batched matmuls may sum in another order for another batch size
    assert resumed["metrics"] == pytest.approx(whole["metrics"], rel=1e-12)


def test_a_folder_in_use_by_another_process_is_refused(toy, tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "runs" / "r"
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
                               str(folder / ".lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BenchError, match="in use by another bench run"):
            go(settings(tmp_path, toy))
        assert not (folder / "manifest.json").exists()
    finally:
        holder.communicate("")
    assert go(settings(tmp_path, toy))["timing"]["images_generated"] == 40  # free again once the other run ends


@pytest.mark.parametrize("damage", ["truncate", "empty", "flip", "other_samples"])
def test_damaged_shards_are_set_aside_and_sampled_again(toy, tmp_path, damage, capsys):
    whole = go(settings(tmp_path, toy, run_id="whole"))
    go(settings(tmp_path, toy))
    shard = tmp_path / "runs" / "r" / "shards" / "00000016-00000032.features.npz"
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        shard.write_bytes(b"")
    elif damage == "flip":
        shard.write_bytes(data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])
    else:
        other = tmp_path / "runs" / "r" / "shards" / "00000000-00000016.features.npz"
        shard.write_bytes(other.read_bytes())
    resumed = go(settings(tmp_path, toy))
    assert resumed["timing"]["images_generated"] == 16 and resumed["metrics"] == whole["metrics"]
    assert shard.with_name(shard.name + ".corrupt").exists()
    assert "is damaged" in capsys.readouterr().err


def test_scoring_against_another_reference_keeps_the_first_result(toy, tmp_path):
    first = go(settings(tmp_path, toy))
    other = write_ref(tmp_path / "other.npz", n=30)
    second = go(settings(tmp_path, other))
    folder = tmp_path / "runs" / "r"
    assert second["timing"]["images_generated"] == 0  # the samples are shared; only the scoring differs
    kept = folder / f"result-{first['reference']['sha256'][:12]}.json"
    assert json.loads(kept.read_text())["metrics"] == first["metrics"]
    assert json.loads((folder / "result.json").read_text())["reference"]["sha256"] == second["reference"]["sha256"]
    go(settings(tmp_path, other))  # the same reference again replaces its own result only
    assert sorted(p.name for p in folder.glob("result*.json")) == sorted(["result.json", kept.name])


@pytest.mark.parametrize("run_id", ["../escaped", "a/b", "..", ""])
def test_run_id_must_name_a_folder_inside_runs_dir(toy, tmp_path, run_id):
    with pytest.raises(BenchError, match="--run-id"):
        settings(tmp_path, toy, run_id=run_id)


def test_default_run_id_follows_the_config(toy, tmp_path):
    a = go(settings(tmp_path, toy, run_id=None))
    b = go(settings(tmp_path, toy, run_id=None, seed=4))
    again = go(settings(tmp_path, toy, run_id=None))
    assert a["run_id"].startswith("toy-") and a["run_id"] != b["run_id"]
    assert again["run_id"] == a["run_id"] and again["timing"]["images_generated"] == 0


def test_labels_modes_reach_the_generator(toy, tmp_path):
    go(settings(tmp_path, toy, labels="balanced", num_samples=30, shard_size=30))
    labels = np.load(tmp_path / "runs" / "r" / "shards" / "00000000-00000030.features.npz")["label"]
    assert np.bincount(labels, minlength=10).tolist() == [3] * 10


def test_save_npz_writes_the_adm_batch_in_index_order(toy, tmp_path):
    result = go(settings(tmp_path, toy, save_npz=True))
    npz_path = Path(result["outputs"]["npz"])
    assert result["samples"]["path"] == str(npz_path)
    images, labels = direct_images(40)
    with np.load(npz_path) as npz:
        np.testing.assert_array_equal(npz["arr_0"], images)
        np.testing.assert_array_equal(npz["arr_1"], labels)
    assert NpzImages(npz_path).shape == (40, 8, 8, 3)
    assert not list((tmp_path / "runs" / "r" / "shards").glob("*.images.npy"))  # folded into the npz


def test_save_npz_survives_an_interruption(toy, tmp_path):
    def interrupt_first(shard):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        go(settings(tmp_path, toy, save_npz=True), on_shard_done=interrupt_first)
    assert len(list((tmp_path / "runs" / "r" / "shards").glob("*.images.npy"))) == 1
    result = go(settings(tmp_path, toy, save_npz=True))
    with np.load(result["outputs"]["npz"]) as npz:
        np.testing.assert_array_equal(npz["arr_0"], direct_images(40)[0])


def test_save_npz_after_a_run_without_images_regenerates_them(toy, tmp_path):
    go(settings(tmp_path, toy))
    result = go(settings(tmp_path, toy, save_npz=True))
    assert result["timing"]["images_generated"] == 40
    with np.load(result["outputs"]["npz"]) as npz:
        np.testing.assert_array_equal(npz["arr_0"], direct_images(40)[0])


def test_save_grid_tiles_the_first_samples_at_full_resolution(toy, tmp_path):
    result = go(settings(tmp_path, toy, num_samples=10, save_grid=True))
    grid = np.asarray(Image.open(result["outputs"]["grid"]))
    assert grid.shape == (3 * 16, 4 * 16, 3)  # 10 samples: 4 columns, 3 rows
    plan = SamplingPlan(10, 10, 3)
    idx = np.arange(10)
    full = toy_factory().sample(torch.from_numpy(plan.labels(idx)), torch.from_numpy(plan.seeds(idx)))
    np.testing.assert_array_equal(grid[16:32, 0:16], full[4])
    assert not grid[32:, 32:].any()  # the two unused cells stay black


def test_a_finished_runs_grid_is_reused_not_sampled_again(toy, tmp_path, monkeypatch):
    """Re-running a finished run with --save-grid sampled its 64 grid images again every time (most of the cached
    demo re-run); now only when the grid was made in batches of another size (their rounding could differ)."""
    calls = []
    real = ToyGenerator.sample
    monkeypatch.setattr(ToyGenerator, "sample", lambda self, labels, seeds: calls.append(len(labels)) or
                        real(self, labels, seeds))
    first = go(settings(tmp_path, toy, num_samples=10, save_grid=True))
    before = Path(first["outputs"]["grid"]).read_bytes()
    calls.clear()
    again = go(settings(tmp_path, toy, num_samples=10, save_grid=True))
    assert calls == [] and Path(again["outputs"]["grid"]).read_bytes() == before
    go(settings(tmp_path, toy, num_samples=10, save_grid=True, batch_size=4))
    assert sum(calls) == 10  # another batch size: the grid is drawn again (the run itself is resumed, not sampled)
    assert "grid.json" not in " ".join(build([tmp_path / "runs"]).skipped)


def test_out_of_memory_says_so_and_keeps_finished_shards(toy, tmp_path):
    ToyGenerator.oom_after_calls = 3  # batches of 7 in shards of 16: 3 batches finish shard 0
    with pytest.raises(BenchError, match=r"out of memory on cpu with a batch of 7.*smaller --batch-size, e\.g\. 3"):
        go(settings(tmp_path, toy))
    assert [p.name for p in (tmp_path / "runs" / "r" / "shards").glob("*.features.npz")] == [
        "00000000-00000016.features.npz"]
    ToyGenerator.oom_type = torch.cuda.OutOfMemoryError
    with pytest.raises(BenchError, match="out of memory"):
        go(settings(tmp_path, toy, run_id="b"))


def test_other_runtime_errors_are_not_disguised_as_oom(toy, tmp_path, monkeypatch):
    def broken(self, labels, seeds):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(ToyGenerator, "sample", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        go(settings(tmp_path, toy))


def test_wrong_images_from_a_generator_are_reported(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(ToyGenerator, "sample_for_eval", lambda self, labels, seeds: np.zeros((len(labels), 8, 8, 3)))
    with pytest.raises(BenchError, match=r"returned \(dtype\('float64'\).*uint8 \(7, 8, 8, 3\)"):
        go(settings(tmp_path, toy))


def test_reference_at_another_resolution_is_refused_unless_forced(toy, tmp_path):
    ref16 = write_ref(tmp_path / "ref16.npz", size=16)
    with pytest.raises(BenchError, match=r"holds 16x16 images but the generator is scored at 8x8"):
        go(settings(tmp_path, ref16))
    assert not (tmp_path / "runs" / "r").exists()  # refused before any sampling


def test_forced_resolution_mismatch_is_recorded(toy, tmp_path, monkeypatch):
    ref16 = write_ref(tmp_path / "ref16.npz", size=16)
    task, s = settings(tmp_path, ref16, force=True)
    result = execute(task, s, extractors=[ProjectionExtractor()],
                     scorer=lambda ref, extractors, metrics: (lambda f, metrics=None: {"metrics": {"n": len(f["pool"])}}))
    assert any("16x16" in w and "--force" in w for w in result["warnings"])


def test_json_safe_keeps_results_strict_json():
    out = json_safe({"a": np.float32(0.5), "b": float("inf"), "c": np.nan, "d": np.arange(2),
                               "e": Path("/x"), "f": (1, None, True), 3: np.int64(7)})
    assert out == {"a": 0.5, "b": "inf", "c": "nan", "d": [0, 1], "e": "/x", "f": [1, None, True], "3": 7}
    json.dumps(out, allow_nan=False)


def test_sample_size_warnings_name_the_unreliable_metrics():
    adm = select(None)
    warnings = " | ".join(sample_size_warnings(3, {"pool": 2048, "spatial": 2023, "logits": 1008}, adm))
    assert "FID is unreliable" in warnings and "sFID is unreliable" in warnings
    assert "Inception Score is unreliable" in warnings and "Precision/Recall are undefined" in warnings
    # no Inception Score (weights without softmax): no warning about one
    assert not any("Inception Score" in w for w in sample_size_warnings(3, {"pool": 2048, "spatial": 2023}, adm))
    assert sample_size_warnings(50_000, {"pool": 2048, "spatial": 2023}, adm) == []
    assert not any("FID is unreliable" in w for w in sample_size_warnings(2049, {"pool": 2048, "spatial": 2023}, adm))
    assert any(w.startswith("FID") for w in sample_size_warnings(2048, {"pool": 2048}, adm))


def test_small_runs_warn_in_the_result(toy, tmp_path):
    result = go(settings(tmp_path, toy, num_samples=5))
    assert any(w.startswith("FID is unreliable") for w in result["warnings"])  # 5 samples, 6-d pool


# -- weights --------------------------------------------------------------------------------------------------
def toy_checkpoint(path: Path, offset: float) -> tuple[Path, str]:
    torch.save({"offset": torch.tensor(offset)}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_is_verified_loaded_and_recorded(toy, tmp_path):
    ckpt, digest = toy_checkpoint(tmp_path / "toy.pt", 40.0)
    ToyGenerator.files = [RemoteFile("toy.pt", digest, url="http://127.0.0.1:9/toy.pt")]
    result = go(settings(tmp_path, toy, ckpt=str(ckpt)))
    assert result["provenance"]["checkpoints"] == {"toy.pt": {"path": str(ckpt.resolve()), "sha256": digest}}
    assert result["settings"]["files"] == {"toy.pt": digest}
    assert result["settings"]["generator_config"]["offset"] == 40.0
    ToyGenerator.files = []
    plain = go(settings(tmp_path, toy, run_id="plain"))
    assert result["metrics"]["fid"] != plain["metrics"]["fid"]


def test_generator_can_map_ckpt_to_another_file(toy, tmp_path, monkeypatch):
    ckpt, digest = toy_checkpoint(tmp_path / "gpt.pt", 7.0)
    ToyGenerator.files = [RemoteFile("vq.pt", "0" * 64, url="http://127.0.0.1:9/vq.pt"),
                          RemoteFile("gpt.pt", digest, url="http://127.0.0.1:9/gpt.pt")]
    (tmp_path / "vq").mkdir()
    vq, vq_digest = toy_checkpoint(tmp_path / "vq" / "vq.pt", 3.0)
    ToyGenerator.files[0] = RemoteFile("vq.pt", vq_digest)
    monkeypatch.setattr(ToyGenerator, "explicit_files", lambda self: {"gpt.pt": ckpt, "vq.pt": vq})
    result = go(settings(tmp_path, toy, ckpt=str(ckpt)))
    assert result["settings"]["files"] == {"vq.pt": vq_digest, "gpt.pt": digest}


def test_checksum_mismatch_is_refused(toy, tmp_path):
    ckpt, _ = toy_checkpoint(tmp_path / "toy.pt", 40.0)
    ToyGenerator.files = [RemoteFile("toy.pt", "0" * 64, url="http://127.0.0.1:9/toy.pt")]
    with pytest.raises(ChecksumError, match="expected 0{64}\n  found    [0-9a-f]{64}"):
        go(settings(tmp_path, toy, ckpt=str(ckpt)))


def test_missing_weights_offline_list_file_source_and_destination(toy, tmp_path):
    ToyGenerator.files = [RemoteFile("toy.pt", None, url="http://127.0.0.1:9/toy.pt"),
                          RemoteFile("toy_vq.pt", None, hf_repo="someone/toy", hf_filename="vq.pt")]
    res = cli(["--generator", "toy", "--ref", str(toy), "--runs-dir", str(tmp_path / "runs"), "--offline"])
    assert res.exit_code == 2
    assert "toy.pt\n      from: http://127.0.0.1:9/toy.pt" in res.output
    assert "toy_vq.pt\n      from: https://huggingface.co/someone/toy/resolve/main/vq.pt" in res.output
    assert "put it at:" in res.output and "Traceback" not in res.output
    # with a registry reference, the same message names the reference batch too
    res = cli(["--generator", "toy", "--ref", "imagenet64", "--runs-dir", str(tmp_path / "runs"), "--offline"])
    assert res.exit_code == 2 and "toy.pt\n" in res.output
    assert ("VIRTUAL_imagenet64_labeled.npz\n      from: https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
            "ref_batches/imagenet/64/VIRTUAL_imagenet64_labeled.npz") in res.output


def test_ckpt_for_a_generator_without_files_is_refused(toy, tmp_path):
    with pytest.raises(BenchError, match="needs no checkpoint"):
        go(settings(tmp_path, toy, ckpt=str(toy)))


# -- command line ---------------------------------------------------------------------------------------------
def fake_execute(seen: dict):
    def execute(task, s):
        seen.update(task=task, s=s)
        return {"run_id": "x", "metrics": {"fid": 1.0, "inception_score": None},
                "unavailable": {"inception_score": "no softmax layer in these weights"}}

    return execute


def test_cli_forwards_only_given_sampling_settings(toy, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(bench.run.cli, "execute", fake_execute(seen))
    res = cli(["-g", "toy", "--set", "temperature=0.5", "--precision", "bf16", "--no-compile", "--num-samples", "8",
               "--labels", "balanced", "--seed", "9", "--batch-size", "4", "--device", "cpu", "--metrics", "+kid"])
    assert res.exit_code == 0, res.output
    s, task = seen["s"], seen["task"]
    assert s.overrides == {"temperature": 0.5, "precision": "bf16", "compile": False}
    assert (task.num_samples, task.labels, task.seed, s.batch_size, s.device, s.metrics) == (8, "balanced", 9, 4, "cpu",
                                                                                            "+kid")
    # one formatter with `bench eval`: ADM's wording, and why a metric is missing (not "inception_score: None")
    assert "FID: 1.0" in res.output and "Inception Score: unavailable (no softmax layer in these weights)" in res.output


def test_cli_set_values_are_typed_and_deprecated_flags_are_aliases_of_set(toy, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(bench.run.cli, "execute", fake_execute(seen))
    vq = str(tmp_path / "vq.pt")
    res = cli(["-g", "toy", "--set", "steps=ddim25", "--set", "sampler=ddim", "--set", "eta=0.5", "--set", "vae=mse",
               "--set", "cfg-all-channels=true", "--set", "cfg_interval=7", "--set", f"vq_ckpt={vq}", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    with_set = seen["s"].overrides
    assert with_set == {"steps": "ddim25", "sampler": "ddim", "eta": 0.5, "vae": "mse", "cfg_all_channels": True,
                        "cfg_interval": 7, "vq_ckpt": vq}
    res = cli(["-g", "toy", "--steps", "ddim25", "--sampler", "ddim", "--eta", "0.5", "--vae", "mse",
               "--cfg-all-channels", "--cfg-interval", "7", "--vq-ckpt", vq, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert seen["s"].overrides == with_set  # the old flags mean exactly --set
    cli(["-g", "toy", "--steps", "250", "--top-k", "5", "--top-p", "0.9", "--temperature", "0.5", "--device", "cpu"])
    assert seen["s"].overrides == {"steps": 250, "top_k": 5, "top_p": 0.9, "temperature": 0.5}  # numbers stay numbers
    cli(["-g", "toy", "--cfg-first-3-channels", "--device", "cpu"])
    assert seen["s"].overrides == {"cfg_all_channels": False}


def test_cli_help_marks_the_deprecated_flags_and_points_to_the_plugin_options():
    out = CliRunner().invoke(run_command, ["--help"], terminal_width=200).output
    for flag, name in [("--top-k", "top_k"), ("--steps", "steps"), ("--vq-ckpt", "vq_ckpt"), ("--eta", "eta")]:
        line = next(line for line in out.splitlines() if line.strip().startswith(flag))
        assert f"(deprecated: --set {name}=VALUE)" in line
    assert "(deprecated: --set cfg_all_channels=true|false)" in out
    assert "--set NAME=VALUE" in out and "bench generators NAME" in out


@pytest.mark.parametrize("args,message", [
    (["--set", "temperature"], "--set 'temperature': expected NAME=VALUE"),
    (["--set", "=3"], "expected NAME=VALUE"),
    (["--set", "temperature=0.5", "--set", "temperature=0.7"], "temperature is given twice, as 0.5 and 0.7"),
    (["--temperature", "0.5", "--set", "temperature=0.7"], "temperature is given twice"),
    (["--set", "temperature=hot"], "generator 'toy': --set temperature must be a number, found 'hot'"),
    (["--set", "precision=fp8"], "--precision must be one of fp32, bf16, found 'fp8'"),
    (["--set", "temperature=true"], "--set temperature must be a number, found True"),
])
def test_cli_set_mistakes_are_one_line_errors(toy, tmp_path, args, message):
    res = cli(["-g", "toy", "--ref", str(toy), "--runs-dir", str(tmp_path / "runs"), "--device", "cpu", *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "runs").exists()


def test_cli_set_values_are_coerced_to_the_declared_types(toy, tmp_path):
    """An integer given for a float option is the float; the run records it as the generator got it."""
    res = cli(["-g", "toy", "--ref", str(toy), "--runs-dir", str(tmp_path / "runs"), "--run-id", "t", "--device", "cpu",
               "--set", "temperature=1", "--num-samples", "4", "--shard-size", "4"],
              extractors=[ProjectionExtractor()])
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "runs" / "t" / "result.json").read_text())["settings"]["generator_config"]
    assert config["temperature"] == 1.0 and isinstance(config["temperature"], float)


def test_cli_rejects_settings_the_generator_does_not_take(toy, tmp_path):
    res = cli(["-g", "toy", "--top-k", "5", "--steps", "3", "--ref", str(toy), "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert ("generator 'toy' does not take --set steps, --set top_k; it takes: --set temperature, --cfg-scale, "
            "--precision (`bench generators toy` explains each)" in res.output)


def test_cli_unknown_generator_lists_the_known_ones(toy, tmp_path, monkeypatch):
    class EP:
        def __init__(self, name):
            self.name, self.value = name, f"somewhere:{name}"

        def load(self):
            return lambda: {self.name: dataclasses.replace(toy_factory, name=self.name)}

    monkeypatch.setattr("bench.plugins.entry_points", lambda group: [EP("dit-xl-2"), EP("llamagen-xl")])
    res = cli(["-g", "nope", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "unknown generator 'nope'. Known generators: dit-xl-2, llamagen-xl" in res.output


def test_cli_end_to_end_and_ctrl_c(toy, tmp_path, monkeypatch):
    args = ["-g", "toy", "--ref", str(toy), "--runs-dir", str(tmp_path / "runs"), "--run-id", "c",
            "--num-samples", "20", "--shard-size", "10", "--batch-size", "10"]
    ToyGenerator.oom_after_calls = 1
    ToyGenerator.oom_type = KeyboardInterrupt  # Ctrl-C during the second shard
    res = cli(args, extractors=[ProjectionExtractor()], scorer=toy_scorer)
    assert res.exit_code == 130
    assert "Interrupted: 1 of 2 shards are finished and kept" in res.output
    ToyGenerator.oom_after_calls = None
    res = cli(args, extractors=[ProjectionExtractor()], scorer=toy_scorer)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "runs" / "c" / "result.json").read_text())["timing"]["images_resumed"] == 10


@pytest.mark.filterwarnings("ignore::bench.metrics.SingularCovarianceWarning")  # 40 samples, 6-d features
def test_cli_metrics_plus_kid_reach_result_json(toy, tmp_path, monkeypatch):
    """`--metrics +kid`: the feature networks the metrics need are loaded, and KID lands in result.json's metrics."""
    loaded = []

    def load_extractor(name, **options):
        loaded.append((name, options))
        return ProjectionExtractor()

    monkeypatch.setattr(bench.features, "load_extractor", load_extractor)
    res = cli(["-g", "toy", "--ref", str(toy), "--runs-dir", str(tmp_path / "runs"), "--run-id", "k", "--device", "cpu",
               "--num-samples", "40", "--shard-size", "20", "--metrics", "+kid"])
    assert res.exit_code == 0, res.output
    assert loaded == [("inception", {"device": "cpu", "allow_download": True, "backend": "torch"})]  # not DINOv2
    result = json.loads((tmp_path / "runs" / "k" / "result.json").read_text())
    assert {"inception_score", "fid", "sfid", "precision", "recall", "kid"} == set(result["metrics"])
    assert result["metrics"]["kid"] is not None and result["details"]["kid_subset_size"] == 12  # half the 24 refs
    assert result["settings"]["metrics"] == ["inception_score", "fid", "sfid", "precision_recall", "kid"]
    assert "KID: " in res.output
    res = cli(["-g", "toy", "--ref", str(toy), "--runs-dir", str(tmp_path / "runs"), "--metrics", "+nope"])
    assert res.exit_code == 2 and "unknown metric 'nope'" in res.output
    # A network's own options reach its loader: --inception (issue: the IS warning named a flag bench run lacked)
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"x")
    loaded.clear()
    res = cli(["-g", "toy", "--ref", str(toy), "--runs-dir", str(tmp_path / "runs"), "--run-id", "w", "--device", "cpu",
               "--num-samples", "40", "--shard-size", "20", "--metrics", "+fd_dinov2", "--inception", str(weights),
               "--dinov2-resize", "pil"])
    assert res.exit_code == 0, res.output
    assert loaded == [("inception", {"device": "cpu", "allow_download": True, "backend": "torch",
                                     "weights": str(weights)}),
                      ("dinov2", {"device": "cpu", "allow_download": True, "resize": "pil"})]


def test_a_device_torch_cannot_use_is_refused_before_loading(toy, tmp_path):
    with pytest.raises(BenchError, match="not a torch device"):
        settings(tmp_path, toy, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(BenchError, match="sees no CUDA GPU"):
            settings(tmp_path, toy, device="cuda")


def test_a_bad_reference_fails_before_any_sampling(toy, tmp_path):
    sampled = []
    one = tmp_path / "one.npz"
    np.savez(one, np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(BenchError, match="1 image"):  # the default scorer, which reads the reference
        execute(*settings(tmp_path, one), extractors=[ProjectionExtractor()], on_shard_done=sampled.append)
    wide = tmp_path / "wide.npz"
    np.savez(wide, np.zeros((4, 8, 12, 3), np.uint8))
    with pytest.raises(BenchError, match="8x12 images; a reference batch is square"):
        go(settings(tmp_path, wide), on_shard_done=sampled.append)
    assert sampled == []
    with pytest.raises(BenchError, match="at least 2"):
        settings(tmp_path, toy, num_samples=1)


def test_shards_of_another_bench_version_are_not_mixed_in(toy, tmp_path, monkeypatch):
    go(settings(tmp_path, toy))
    real = bench.run.executor.package_versions
    monkeypatch.setattr(bench.run.executor, "package_versions", lambda: {**real(), "bench": "99.0"})
    with pytest.raises(BenchError, match=r"bench: '0\.1\.0' -> '99\.0'"):
        go(settings(tmp_path, toy))


def test_offline_runs_never_download_feature_weights_and_warn_before_sampling(monkeypatch, capsys):
    asked = {}

    class NoSoftmax:
        name, has_logits = "inception", False
        logits_unavailable_reason = "the torchscript Inception weights have no softmax layer"

    def fake_load_extractor(name, **kw):
        asked.update(kw, name=name)
        return NoSoftmax()

    monkeypatch.setattr(bench.features, "load_extractor", fake_load_extractor)
    adm = select(None)
    extractors = bench.features.load_extractors(arrays_needed(adm), "cpu", allow_download=False)
    assert asked == {"name": "inception", "device": "cpu", "allow_download": False}
    assert bench.run.executor.missing_array_warnings(extractors, adm) == [
        "no Inception Score for this run: the torchscript Inception weights have no softmax layer"]
    assert bench.run.executor.missing_array_warnings(extractors, select("fid")) == []  # no IS asked for


def test_runs_record_a_bootstrap_noise_estimate(toy, tmp_path, monkeypatch):
    """result.json's `noise`: the spread of each metric over resamples of the samples (seeded), recomputed here
    with numpy/scipy from the run's own shard features; Precision/Recall, beyond a size, are named as not
    estimated (here the size limit is set to 0)."""
    import scipy.linalg

    monkeypatch.setattr(bench.run.score, "RESAMPLE_PAIRS", 0)
    monkeypatch.setattr(bench.features, "load_extractor", lambda name, **kw: ProjectionExtractor())
    res = cli(["-g", "toy", "--ref", str(toy), "--runs-dir", str(tmp_path / "runs"), "--run-id", "n", "--device", "cpu",
               "--num-samples", "40", "--shard-size", "20", "--noise-resamples", "4"])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "runs" / "n" / "result.json").read_text())
    noise = result["noise"]
    assert noise["method"] == "bootstrap" and noise["resamples"] == 4 and noise["not_estimated"] == ["precision_recall"]
    assert set(noise["std"]) == {"fid", "sfid", "inception_score"}

    shards = sorted((tmp_path / "runs" / "n" / "shards").glob("*.features.npz"))
    pool = np.concatenate([np.load(f)["pool"] for f in shards]).astype(np.float64)
    with np.load(toy) as npz:
        ref = ProjectionExtractor().extract(npz["arr_0"])["pool"].astype(np.float64)

    def fid(a, b):
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2)
                     - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))

    rng = np.random.default_rng(0)
    fids = [fid(pool[rng.integers(0, 40, 40)], ref) for _ in range(4)]
    assert noise["std"]["fid"] == pytest.approx(np.std(fids, ddof=1), rel=1e-5)
    res = cli(["-g", "toy", "--ref", str(toy), "--runs-dir", str(tmp_path / "runs"), "--run-id", "n", "--device", "cpu",
               "--num-samples", "40", "--shard-size", "20", "--noise-resamples", "0"])
    assert res.exit_code == 0 and json.loads((tmp_path / "runs" / "n" / "result.json").read_text())["noise"] == {}


def test_small_runs_resample_precision_and_recall_too(toy, tmp_path, monkeypatch):
    """The demo's 400 x 512 k-NN costs nothing: its noise estimate covers Precision/Recall (a cfg sweep's
    precision-for-recall trade is judged by it), recomputed here from the shard features with the same draws."""
    from bench.metrics import precision_recall

    monkeypatch.setattr(bench.features, "load_extractor", lambda name, **kw: ProjectionExtractor())
    res = cli(["-g", "toy", "--ref", str(toy), "--runs-dir", str(tmp_path / "runs"), "--run-id", "p", "--device", "cpu",
               "--num-samples", "40", "--shard-size", "20", "--noise-resamples", "4"])
    assert res.exit_code == 0, res.output
    noise = json.loads((tmp_path / "runs" / "p" / "result.json").read_text())["noise"]
    assert "not_estimated" not in noise and {"precision", "recall"} <= set(noise["std"])
    pool = np.concatenate([np.load(f)["pool"] for f in sorted((tmp_path / "runs" / "p" / "shards").glob("*.features.npz"))])
    with np.load(toy) as npz:
        ref = ProjectionExtractor().extract(npz["arr_0"])["pool"]
    rng = np.random.default_rng(0)
    draws = [precision_recall(ref, pool[rng.integers(0, 40, 40)]) for _ in range(4)]
    for i, key in enumerate(("precision", "recall")):
        assert noise["std"][key] == pytest.approx(np.std([d[i] for d in draws], ddof=1), rel=1e-9, abs=1e-12)


def test_a_cfg_sweep_is_one_command_with_one_resumable_run_per_value(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(bench.features, "load_extractor", lambda name, **kw: ProjectionExtractor())
    args = ["-g", "toy", "--ref", str(toy), "--runs-dir", str(tmp_path / "runs"), "--run-id", "sw", "--device", "cpu",
            "--num-samples", "20", "--shard-size", "10", "--noise-resamples", "0", "--cfg-scale", "1.5,2,2.25"]
    res = cli(args)
    assert res.exit_code == 0, res.output
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["sw-cfg1.5", "sw-cfg2", "sw-cfg2.25"]
    cfgs = [json.loads((tmp_path / "runs" / f / "result.json").read_text())["settings"]["generator_config"]["cfg_scale"]
            for f in folders]
    assert cfgs == [1.5, 2.0, 2.25] and "compare them: bench report" in res.output
    again = cli(args)  # every run resumes: no image is generated twice
    assert again.exit_code == 0 and again.output.count("images_generated") == 0
    for f in folders:
        assert json.loads((tmp_path / "runs" / f / "result.json").read_text())["timing"]["images_generated"] == 0
    for bad, message in [("1.5,x", "comma-separated numbers"), ("2,2", "given twice")]:
        res = cli(args[:-1] + [bad])
        assert res.exit_code == 2 and message in res.output


def test_bench_run_without_a_generator_is_the_demo_and_refuses_run_options(monkeypatch, tmp_path):
    """No -g: the offline demo (run_demo), which takes only --runs-dir, --device and --offline (a no-op: it never
    downloads); any run option without -g is a
    mistake said in one line, not a demo that ignores it."""
    import bench.demo.benchmark

    calls = []
    monkeypatch.setattr(bench.demo.benchmark, "run_demo", lambda **kw: calls.append(kw))
    res = cli(["--runs-dir", str(tmp_path / "r"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert calls == [{"runs_dir": tmp_path / "r" / "demo", "device": "cpu"}]
    res = cli(["--offline", "--runs-dir", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert calls[-1] == {"runs_dir": tmp_path / "o" / "demo", "device": "cpu"}
    for args in (["--num-samples", "10"], ["--cfg-scale", "2"], ["--set", "top_k=5"], ["--metrics", "+kid"]):
        res = cli(args)
        assert res.exit_code == 2 and "name the generator with -g" in res.output, (args, res.output)
    assert len(calls) == 2


def test_runs_score_the_new_metrics_with_their_labels_and_name_what_noise_leaves_out(toy, tmp_path, monkeypatch):
    """`bench run --metrics fid,vendi,density_coverage`: Vendi per class from the run's own labels and density/coverage,
    recomputed here with the vendi-score and prdc packages from the run's shard features; the noise estimate
    resamples Vendi and names the k-NN metrics it leaves out."""
    from prdc import compute_prdc
    from vendi_score import vendi

    monkeypatch.setattr(bench.run.score, "RESAMPLE_PAIRS", 0)  # as if the batches were large
    monkeypatch.setattr(bench.features, "load_extractor", lambda name, **kw: ProjectionExtractor())
    res = cli(["-g", "toy", "--ref", str(toy), "--runs-dir", str(tmp_path / "runs"), "--run-id", "v", "--device", "cpu",
               "--num-samples", "40", "--shard-size", "20", "--noise-resamples", "3",
               "--metrics", "fid,vendi,density_coverage"])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "runs" / "v" / "result.json").read_text())
    shards = sorted((tmp_path / "runs" / "v" / "shards").glob("*.features.npz"))
    pool = np.concatenate([np.load(f)["pool"] for f in shards]).astype(np.float64)
    labels = SamplingPlan(40, 10, 0, "random").labels(np.arange(40))
    with np.load(toy) as npz:
        ref = ProjectionExtractor().extract(npz["arr_0"])["pool"]
    m = result["metrics"]
    assert m["vendi"] == pytest.approx(vendi.score_dual(pool), rel=1e-9)
    per_class = np.mean([vendi.score_K(pool[labels == c] @ pool[labels == c].T, normalize=True)
                         for c in np.unique(labels)])
    assert m["vendi_per_class"] == pytest.approx(per_class, rel=1e-9)
    official = compute_prdc(ref, pool, nearest_k=5)
    assert (m["density"], m["coverage"]) == pytest.approx((official["density"], official["coverage"]), rel=1e-12)
    assert result["noise"]["not_estimated"] == ["density_coverage"]
    assert {"fid", "vendi", "vendi_per_class"} <= set(result["noise"]["std"])


def test_warnings_can_be_left_to_the_board(toy, tmp_path, capsys):
    """The demo's runs record their warnings without printing each (its board says each once, with the runs)."""
    task, s = settings(tmp_path, toy, num_samples=3)
    quiet = dataclasses.replace(s, echo_warnings=False)
    result = go((task, quiet))
    assert any("FID is unreliable" in w for w in result["warnings"])
    assert "Warning:" not in capsys.readouterr().err
    go((task, dataclasses.replace(s, run_id="loud")))
    assert "Warning: FID is unreliable" in capsys.readouterr().err


def test_a_finished_run_folder_keeps_no_lock_file(toy, tmp_path, held_lock):
    """Empty `.lock` files stayed in finished run and training folders; a released lock's file is removed (while a
    run holds the folder, a second one is still refused)."""
    from bench.locks import lock_folder, release_folder

    go(settings(tmp_path, toy, num_samples=4))
    assert not (tmp_path / "runs" / "r" / ".lock").exists() and (tmp_path / "runs" / "r" / "result.json").exists()
    lock_folder(tmp_path / "train", "is in use")
    assert (tmp_path / "train" / ".lock").exists()
    release_folder(tmp_path / "train")  # what the trainers call when they finish
    assert list((tmp_path / "train").iterdir()) == []
    with held_lock(tmp_path / "runs" / "r"):
        with pytest.raises(BenchError, match="is in use by another bench run"):
            go(settings(tmp_path, toy, num_samples=4))
