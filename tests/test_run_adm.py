"""With ADM's metrics, `bench run` reports exactly what `bench eval` says of the npz it saved.

(The same check with the real Inception passes too, but takes minutes on a shared 2-core CPU; the stand-in
extractor keeps it in the suite. Run and evaluator extract the same single batch, so equality is exact.)
"""

from __future__ import annotations

import pytest

from bench.evaluate import evaluate
from bench.run.executor import RunSettings, execute
from bench.run.sample import SampleTask
from test_run_helpers import ProjectionExtractor
from test_run_helpers import toy_fixture  # noqa: F401  (the `toy` fixture)


class Extractor(ProjectionExtractor):
    provenance = {"name": "test-projection", "weights_sha256": "test-projection"}
    logits_unavailable_reason = None


@pytest.mark.parametrize("labels", ["random", "balanced"])
def test_run_metrics_equal_evaluating_the_saved_batch(toy, tmp_path, labels):
    settings = RunSettings(generator="toy", batch_size=40, shard_size=40, ref=str(toy), runs_dir=str(tmp_path / "runs"),
                           run_id="adm")
    result = execute(SampleTask(num_samples=40, save_npz=True, seed=1, labels=labels), settings,
                     extractors=[Extractor()])
    metrics = result["metrics"]
    expected = evaluate(toy, tmp_path / "runs" / "adm" / "samples.npz", Extractor())
    assert metrics == expected["metrics"] and result["unavailable"] == expected["unavailable"]
    # what `bench report` compares, in the same places as `bench eval` puts them
    assert result["reference"]["num_ref"] == expected["reference"]["num_ref"]
    assert result["samples"]["num_samples"] == expected["samples"]["num_samples"]
    assert result["reference"]["sha256"] == expected["reference"]["sha256"]
    for key in ("features", "distances"):
        assert result["provenance"][key] == expected["provenance"][key], key
    assert result["settings"]["metrics"] == expected["settings"]["metrics"]
    assert metrics["fid"] > 0 and 0 <= metrics["precision"] <= 1


def test_bench_report_reads_run_results(toy, tmp_path):
    from bench.report import compare, leaderboard, load_results

    for run_id, n in (("a", 40), ("b", 40), ("c", 30)):
        execute(SampleTask(num_samples=n), RunSettings(generator="toy", batch_size=10, shard_size=10, ref=str(toy),
                                                       runs_dir=str(tmp_path / "runs"), run_id=run_id),
                extractors=[Extractor()])
    table, differing = compare(load_results([tmp_path / "runs"]))
    assert table["run"].tolist() == ["a", "b", "c"]
    assert table["fid"].notna().all() and table["inception_score"].notna().all()
    assert table["comparable"].tolist() == [True, True, False]  # 30 samples: not comparable with 40
    assert "num_samples" in differing
    assert set(leaderboard(table)["run"]) == {"a", "b", "c"}
