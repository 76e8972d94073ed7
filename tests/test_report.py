"""Leaderboards: loading result files, deltas, comparability, CSV and escaped HTML."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.errors import BenchError
from bench.report import compare, leaderboard, load_results, to_html


def _write(folder, run_id, fid, num_samples=50000, ref="aa", cfg=1.5, name="result.json", **metrics):
    """A `bench run` result, laid out as `bench.run.loop` writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    result = {"run_id": run_id, "metrics": {"fid": fid, "inception_score": 200.0 + fid, "precision": 0.8, **metrics},
              "num_samples": num_samples, "config": {"generator_config": {"cfg_scale": cfg}},
              "reference": {"name": "imagenet256", "path": "/cache/VIRTUAL_imagenet256_labeled.npz", "sha256": ref}}
    (folder / name).write_text(json.dumps(result))


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
    assert differing["config.generator_config.cfg_scale"] == [1.5, 2.0, 1.5]
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
    assert "Warning" not in out.output  # said once, as the error
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no result files"):
        load_results([tmp_path / "empty"])


def test_non_finite_metrics_sort_and_get_deltas(tmp_path):
    """Strict JSON stores a perfect reconstruction's PSNR as "inf"; the column must stay numeric."""
    _write(tmp_path / "finite", "finite", 2.0, psnr=30.0)
    _write(tmp_path / "perfect", "perfect", 1.0, psnr="inf")
    _write(tmp_path / "undefined", "undefined", 3.0, psnr="nan", ssim="-inf")
    table = load_results([tmp_path])
    assert pd.api.types.is_float_dtype(table["psnr"]) and pd.api.types.is_float_dtype(table["ssim"])
    assert leaderboard(table, "psnr")["run"].tolist() == ["perfect", "finite", "undefined"]  # NaN ranks last
    compared, _ = compare(table)
    assert compared["psnr delta"].tolist()[:2] == [0.0, float("inf")] and pd.isna(compared["psnr delta"][2])
    out = CliRunner().invoke(cli, ["report", str(tmp_path), "--sort-by", "psnr", "--compare"])
    assert out.exit_code == 0, out.output
    assert "psnr delta" in out.output and "inf" in out.output


def test_board_shows_reference_and_sample_count_without_compare(tmp_path):
    """Runs scored against other reference batches or with fewer samples are visible on a plain board, including
    the earlier result a run folder keeps per reference batch (`result-<sha12>.json`)."""
    _write(tmp_path / "runs" / "a", "a", 2.0, ref="1" * 64)
    _write(tmp_path / "runs" / "a", "a", 1.0, ref="2" * 64, name=f"result-{'2' * 12}.json")
    _write(tmp_path / "runs" / "b", "b", 1.5, num_samples=10000, ref="1" * 64)
    evaluated = {"fid": 0.5, "num_samples": 5000,
                 "reference": {"path": "/refs/my_ref.npz", "sha256": "3" * 64}}  # `bench eval --json`
    (tmp_path / "runs" / "eval").mkdir()
    (tmp_path / "runs" / "eval" / "result.json").write_text(json.dumps(evaluated))
    board = leaderboard(load_results([tmp_path / "runs"]))
    assert board[["run", "reference", "num_samples"]].values.tolist() == [
        ["eval", "my_ref.npz@333333333333", 5000], ["a", "imagenet256@222222222222", 50000],
        ["b", "imagenet256@111111111111", 10000], ["a", "imagenet256@111111111111", 50000]]
    assert "comparable" not in board and "baseline" not in board
    out = CliRunner().invoke(cli, ["report", str(tmp_path / "runs"), "--csv", str(tmp_path / "b.csv"),
                                   "--html", str(tmp_path / "b.html")])
    assert out.exit_code == 0, out.output
    assert "imagenet256@222222222222" in out.output and "10000" in out.output
    csv = pd.read_csv(tmp_path / "b.csv")
    assert csv["reference"].tolist()[0] == "my_ref.npz@333333333333" and csv["num_samples"].tolist()[0] == 5000
    assert "imagenet256@111111111111" in (tmp_path / "b.html").read_text()


def test_cfg_scale_is_read_from_the_generator_config(runs):
    assert leaderboard(load_results([runs]))["cfg_scale"].tolist() == [1.5, 2.0, 1.5]


def test_a_setting_only_some_runs_record_differs(tmp_path):
    _write(tmp_path / "run", "run", 2.0)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "result.json").write_text(json.dumps({"fid": 3.0, "num_samples": 50000,
                                                               "reference": {"sha256": "aa"}}))
    _, differing = compare(load_results([tmp_path]))
    assert differing["config.generator_config.cfg_scale"][1] == 1.5 and pd.isna(
        differing["config.generator_config.cfg_scale"][0])  # the eval result (listed first) records no cfg scale


def test_compare_marks_the_baseline_row(runs):
    table, _ = compare(load_results([runs]), baseline=1)
    board = leaderboard(table)
    assert board["run"][board["baseline"]].tolist() == ["b"] and board["baseline"].sum() == 1
    out = CliRunner().invoke(cli, ["report", str(runs), "--compare", "--baseline", "1"])
    assert out.exit_code == 0 and "baseline" in out.output


def test_integer_fields_stay_integers_when_a_row_lacks_them(tmp_path):
    _write(tmp_path / "a", "a", 2.0, num_samples=100)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "result.json").write_text(json.dumps({"run_id": "b", "fid": 1.0}))
    table = load_results([tmp_path])
    assert table["num_samples"].dtype == "Int64"
    assert table["fid"].dtype == "float64" and table["config.generator_config.cfg_scale"].dtype == "float64"
    out = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "100" in out.output and "100.0" not in out.output and "<NA>" not in out.output
    assert "100.0" not in leaderboard(table).to_csv(index=False)
    assert "&lt;NA&gt;" not in to_html(leaderboard(table), {})


def test_unreadable_result_files_are_skipped_with_a_warning(runs):
    (runs / "corrupt").mkdir()
    (runs / "corrupt" / "result.json").write_text('{"run_id": "corr')
    (runs / "corrupt" / "result-0123456789ab.json").write_text("[1, 2]")
    (runs / "garbled").mkdir()
    (runs / "garbled" / "result.json").write_text(json.dumps({"run_id": "garbled", "fid": "low"}))
    out = CliRunner().invoke(cli, ["report", str(runs)])
    assert out.exit_code == 0, out.output
    assert out.stdout.count("\n") == 4  # header and the three good runs
    for problem in (f"{runs / 'corrupt' / 'result.json'}: not a readable result file",
                    f"{runs / 'corrupt' / 'result-0123456789ab.json'}: a result file holds a JSON object, found list",
                    f"{runs / 'garbled' / 'result.json'}: not a usable result file (fid is 'low', not a number)"):
        assert f"Warning: skipped {problem}" in out.stderr
    with pytest.raises(BenchError, match="no readable result file: .*found list"):
        load_results([runs / "corrupt"])


def test_sorting_by_a_delta_follows_its_metric_and_outcomes_are_not_settings(tmp_path):
    for name, fid in (("a", 3.0), ("b", 2.0), ("c", 4.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(
            {"run_id": name, "fid": fid, "wall_time_s": fid * 10, "fingerprint": name, "num_samples": 10}))
    table, differing = compare(load_results([tmp_path]), baseline=0)
    assert leaderboard(table, "fid delta")["run"].tolist() == ["b", "a", "c"]  # lower FID first
    assert not {"wall_time_s", "fingerprint", "run_id"} & set(differing)
