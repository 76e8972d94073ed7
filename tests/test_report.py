"""Leaderboards: loading result files, deltas, comparability, CSV and escaped HTML."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.errors import BenchError
from bench.report import compare, leaderboard, load_results, to_html


def _write(folder, run_id, fid, num_samples=50000, ref="aa", cfg=1.5):
    folder.mkdir(parents=True)
    result = {"run_id": run_id, "metrics": {"fid": fid, "inception_score": 200.0 + fid, "precision": 0.8},
              "num_samples": num_samples, "reference": {"sha256": ref}, "config": {"cfg_scale": cfg}}
    (folder / "result.json").write_text(json.dumps(result))


@pytest.fixture
def runs(tmp_path):
    _write(tmp_path / "runs" / "a", "a", 2.5)
    _write(tmp_path / "runs" / "b", "b", 2.0, cfg=2.0)
    _write(tmp_path / "runs" / "c", "<script>alert(1)</script>", 1.0, num_samples=10000, ref="bb")
    return tmp_path / "runs"


def test_deltas_and_differing_settings(runs):
    table, differing = compare(load_results([runs]))
    assert list(table["run"]) == ["a", "b", "<script>alert(1)</script>"]
    assert table["fid delta"].tolist() == pytest.approx([0.0, -0.5, -1.5])
    assert differing["config.cfg_scale"] == [1.5, 2.0, 1.5]
    assert "reference.sha256" in differing and "num_samples" in differing
    # c used another reference batch and sample count: its lower FID is not comparable
    assert table["comparable"].tolist() == [True, True, False]


def test_eval_and_run_results_of_the_same_setting_are_comparable(tmp_path):
    """A `bench run` result (metrics nested, extra settings) and a `bench eval` result (metrics top level)."""
    common = {"num_samples": 8, "num_ref": 20, "reference": {"sha256": "ab"},
              "provenance": {"inception": {"sha256": "cd"}, "distances": "ADM"}}
    run = {"run_id": "run", "metrics": {"fid": 3.0}, "settings": {"num_samples": 8}, **common}
    evaluated = {"fid": 3.5, **common}
    for name, result in (("run", run), ("eval", evaluated)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(result))
    table, _ = compare(load_results([tmp_path / "run", tmp_path / "eval"]))
    assert table["comparable"].tolist() == [True, True]
    assert table["fid delta"].tolist() == pytest.approx([0.0, 0.5])
    evaluated["provenance"]["inception"]["sha256"] = "other weights"
    (tmp_path / "eval" / "result.json").write_text(json.dumps(evaluated))
    table, _ = compare(load_results([tmp_path / "run", tmp_path / "eval"]))
    assert table["comparable"].tolist() == [True, False]


def test_leaderboard_ranks_lower_fid_first_and_higher_is_first(runs):
    table = load_results([runs])
    assert leaderboard(table, "fid")["run"].tolist()[0] == "<script>alert(1)</script>"
    assert leaderboard(table, "inception_score")["run"].tolist()[0] == "a"


def test_html_escapes_user_strings(runs):
    table, differing = compare(load_results([runs]))
    page = to_html(leaderboard(table), differing)
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_cli_writes_csv_and_html(runs, tmp_path):
    out = CliRunner().invoke(cli, ["report", str(runs), "--compare", "--csv", str(tmp_path / "b.csv"),
                                   "--html", str(tmp_path / "b.html")])
    assert out.exit_code == 0, out.output
    assert "Settings that differ" in out.output
    csv = pd.read_csv(tmp_path / "b.csv")
    assert csv["fid"].tolist() == [1.0, 2.0, 2.5]
    assert (tmp_path / "b.html").read_text().startswith("<!DOCTYPE html>")


def test_bad_result_files(tmp_path):
    (tmp_path / "result.json").write_text("{not json")
    with pytest.raises(BenchError, match="not a readable result file"):
        load_results([tmp_path / "result.json"])
    out = CliRunner().invoke(cli, ["report", str(tmp_path / "result.json")])
    assert out.exit_code == 2 and "Traceback" not in out.output and "not a readable" in out.output
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no result files"):
        load_results([tmp_path / "empty"])
