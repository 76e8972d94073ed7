"""With ADM's metrics, `bench run` reports exactly what `bench eval` says of the npz it saved.

(The same check with the real Inception passes too, but takes minutes on a shared 2-core CPU; the stand-in
extractor keeps it in the suite. Run and evaluator extract the same single batch, so equality is exact.)
"""

from __future__ import annotations

import pytest

from bench.evaluate import evaluate
from bench.run import RunSettings, run
from test_run_helpers import ProjectionExtractor
from test_run_helpers import toy_fixture  # noqa: F401  (the `toy` fixture)


class Extractor(ProjectionExtractor):
    provenance = {"name": "test-projection", "weights_sha256": "test-projection"}
    logits_unavailable_reason = None


@pytest.mark.parametrize("labels", ["random", "balanced"])
def test_run_metrics_equal_evaluating_the_saved_batch(toy, tmp_path, labels):
    settings = RunSettings(generator="toy", num_samples=40, batch_size=40, shard_size=40, ref=str(toy),
                           runs_dir=str(tmp_path / "runs"), run_id="adm", save_npz=True, seed=1, labels=labels)
    metrics = run(settings, extractor=Extractor())["metrics"]
    expected = evaluate(toy, tmp_path / "runs" / "adm" / "samples.npz", Extractor())
    for key in ("inception_score", "fid", "sfid", "precision", "recall", "num_ref", "num_samples"):
        assert metrics[key] == expected[key], key
    assert metrics["fid"] > 0 and 0 <= metrics["precision"] <= 1
