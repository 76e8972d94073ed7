"""`bench report`: finding and reading result files, naming rows, deltas, comparability, noise, what differs,
and the terminal/CSV/Markdown/LaTeX formats. The HTML page is tested in test_report_html.py, the published
numbers in test_report_published.py, the bootstrap in test_report_noise.py."""

import json
import math

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.errors import BenchError
from bench.report import build, compare, leaderboard, load_results, report_text, to_csv, to_latex, to_markdown, to_text
from test_report_helpers import REF_B, write_json, write_result


@pytest.fixture
def runs(tmp_path):
    write_result(tmp_path / "runs" / "a", "a", 2.5)
    write_result(tmp_path / "runs" / "b", "b", 2.0, cfg=2.0)
    write_result(tmp_path / "runs" / "c", "<script>alert(1)</script>", 1.0, num_samples=10000, ref=REF_B)
    return tmp_path / "runs"


def report(*args):
    return CliRunner().invoke(cli, ["report", *map(str, args)])


# -- finding and reading -------------------------------------------------------------------------------------------
def test_rows_are_named_by_run_id_else_file_stem(tmp_path):
    """`bench report rep/ab.json rep/ac.json` used to label both rows `rep` (the folder)."""
    write_result(tmp_path / "rep", None, 2.0, name="ab.json")
    write_result(tmp_path / "rep", None, 3.0, name="ac.json")
    write_result(tmp_path / "rep", "named", 4.0, name="x.json")
    table = load_results([tmp_path / "rep" / "ab.json", tmp_path / "rep" / "ac.json", tmp_path / "rep" / "x.json"])
    assert table["run"].tolist() == ["ab", "ac", "named"]


def test_colliding_names_get_the_shortest_distinguishing_path(tmp_path):
    write_result(tmp_path / "runs" / "a", "a", 2.0)
    write_result(tmp_path / "runs" / "a", "a", 1.0, ref=REF_B, name=f"result-{REF_B[:12]}.json")
    write_result(tmp_path / "x", None, 3.0)
    write_result(tmp_path / "y", None, 4.0)
    table = load_results([tmp_path / "runs", tmp_path / "x", tmp_path / "y"])
    assert table["run"].tolist() == [f"a (result-{REF_B[:12]}.json)", "a (result.json)", "result (x/result.json)",
                                     "result (y/result.json)"]
    assert table["run"].is_unique


def test_folders_yield_every_schema_json_and_skip_others_with_a_warning(runs):
    """Any *.json of the schema is a result (not just result*.json); a JSON object that is not a result is no row
    (`{"foo": 1}` used to become the baseline); damaged files are skipped, each warning naming its file."""
    write_result(runs / "d", "renamed", 3.0, name="scored-against-val.json")
    write_json(runs / "foo.json", {"foo": 1})
    write_json(runs / "corrupt" / "result.json", '{"run_id": "corr')
    write_json(runs / "corrupt" / "list.json", "[1, 2]")
    write_json(runs / "garbled" / "result.json", {"schema_version": 1, "task": "eval", "metrics": {"fid": "low"}})
    write_json(runs / "a" / "manifest.json", {"fingerprint": "x", "config": {}})  # a run folder's own file: silent
    out = report(runs, "--compare")
    assert out.exit_code == 0, out.output
    assert "renamed" in out.stdout and "foo" not in out.stdout
    board = build([runs], compare=True).board
    assert sorted(board["run"]) == sorted(["a", "b", "<script>alert(1)</script>", "renamed"])
    for name, why in (("foo.json", "not a bench result"), ("corrupt/result.json", "not a readable result file"),
                      ("corrupt/list.json", "not a bench result (a JSON list)"), ("garbled/result.json", "'low'")):
        line = next(l for l in out.stderr.splitlines() if str(runs / name) in l)
        assert line.startswith("Warning: skipped ") and why in line
    assert "manifest.json" not in out.stderr


def test_help_and_search_agree(runs):
    """--help said folders are searched for result.json while the code globbed result*.json."""
    text = " ".join(report("--help").output.split())
    assert "searched (recursively) for *.json files in bench's result schema" in text
    assert "skipped with a warning naming it" in text


def test_a_single_damaged_file_is_an_error_said_once(tmp_path):
    write_json(tmp_path / "result.json", "{not json")
    with pytest.raises(BenchError, match="not a readable result file"):
        load_results([tmp_path / "result.json"])
    out = report(tmp_path / "result.json")
    assert out.exit_code == 2 and "Traceback" not in out.output and "not a readable" in out.output
    assert "Warning" not in out.output
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no result files"):
        load_results([tmp_path / "empty"])


def test_pre_schema_files_are_upgraded_and_compared_alike(tmp_path):
    """A `bench run` result of the first layout and a `bench eval --json` one: metrics read, settings compared."""
    common = {"num_samples": 8, "num_ref": 20, "reference": {"sha256": "ab"},
              "provenance": {"inception": {"sha256": "cd"}, "distances": "ADM"}}
    write_json(tmp_path / "run" / "result.json", {"run_id": "run", "metrics": {"fid": 3.0}, "config": {}, **common})
    write_json(tmp_path / "eval" / "result.json", {"fid": 3.5, **common})
    table, _ = compare(load_results([tmp_path / "run", tmp_path / "eval"]))
    assert table["run"].tolist() == ["run", "result"]
    assert table["comparable"].tolist() == [True, True]
    assert table["fid delta"].tolist() == pytest.approx([0.0, 0.5])
    common["provenance"]["inception"]["sha256"] = "other weights"
    write_json(tmp_path / "eval" / "result.json", {"fid": 3.5, **common})
    table, _ = compare(load_results([tmp_path / "run", tmp_path / "eval"]))
    assert table["comparable"].tolist() == [True, False]
    assert table["why not comparable"].tolist()[1] == "Inception weights other weight vs cd in the baseline"


def test_inception_weights_compare_by_their_feature_tensors_where_both_rows_record_them(tmp_path):
    """ADM's .pb and the bundled TorchScript of the same weights are different files with one features_sha256:
    comparable. Other feature tensors are not; a row without the digest (older results) falls back to the file's."""
    def write(name, file_sha, features_sha=None):
        inception = {"sha256": file_sha, **({"features_sha256": features_sha} if features_sha else {})}
        write_json(tmp_path / name / "result.json", {
            "run_id": name, "metrics": {"fid": 3.0}, "config": {}, "num_samples": 8, "num_ref": 20,
            "reference": {"sha256": "ab"}, "provenance": {"inception": inception, "distances": "ADM"}})

    write("a", "pb-file", "feat-1")
    write("b", "torchscript-file", "feat-1")
    write("c", "torchscript-file", "feat-2")
    write("d", "pb-file")
    write("e", "torchscript-file")
    table, _ = compare(load_results([tmp_path / n for n in "abcde"]))
    assert table["comparable"].tolist() == [True, True, False, True, False]
    why = table["why not comparable"].tolist()
    assert why[2] == "Inception weights feat-2 vs feat-1 in the baseline"
    assert why[4] == "Inception weights torchscript- vs pb-file in the baseline"  # digests show 12 characters


# -- comparing -----------------------------------------------------------------------------------------------------
def test_deltas_comparability_and_why(runs):
    table, _ = compare(load_results([runs]))
    assert table["run"].tolist() == ["a", "b", "<script>alert(1)</script>"]
    assert table["fid delta"].tolist() == pytest.approx([0.0, -0.5, -1.5])
    assert table["comparable"].tolist() == [True, True, False]
    assert table["why not comparable"].tolist()[2] == (
        "reference batch bbbbbbbbbbbb vs aaaaaaaaaaaa in the baseline; samples 10000 vs 50000 in the baseline")


def test_baseline_by_name_or_row(runs):
    table, _ = compare(load_results([runs]), baseline="b")
    assert table.loc[table["baseline"], "run"].tolist() == ["b"]
    assert table["fid delta"].tolist() == pytest.approx([0.5, 0.0, -1.0])
    with pytest.raises(BenchError, match="no such run"):
        compare(load_results([runs]), baseline="nope")
    with pytest.raises(BenchError, match="not a row"):
        compare(load_results([runs]), baseline=3)
    out = report(runs, "--compare", "--baseline", "1")
    assert out.exit_code == 0 and "baseline" in out.stdout


def test_settings_that_differ_are_keyed_by_run_in_board_order_without_padding(runs):
    """They were listed in input order (not the board's), padded with nan/<NA>, and repeated the warnings."""
    write_result(runs / "d", "d", 3.0, warnings=("only d warns",), seed_note=None)
    board = build([runs], compare=True)
    order = board.board["run"].tolist()
    assert order == ["<script>alert(1)</script>", "b", "a", "d"]  # ranked by FID
    cfg = board.differing["generator_config.cfg_scale"]
    assert list(cfg) == order and cfg == {"<script>alert(1)</script>": 1.5, "b": 2.0, "a": 1.5, "d": 1.5}
    assert list(board.differing["samples.num_samples"]) == order
    for values in board.differing.values():
        assert not any(isinstance(v, float) and math.isnan(v) for v in values.values())
        assert all(v is not pd.NA for v in values.values())
    assert not any("warning" in key for key in board.differing)
    assert board.warnings == {"only d warns": ["d"]}
    out = report(runs, "--compare")
    settings = out.stdout.split("Settings that differ between runs:")[1]
    assert "  generator_config.cfg_scale: <script>alert(1)</script>=1.5, b=2.0, a=1.5, d=1.5" in settings
    assert "nan" not in settings and "<NA>" not in settings and "only d warns" not in settings.split("Warnings")[0]
    assert "Warnings recorded by the runs:\n  [d] only d warns" in out.stdout


def test_a_setting_only_some_runs_record_is_no_difference_and_is_said_once(tmp_path):
    """An eval result records none of the sampling settings: "Settings that differ" listed ~50 settings that were
    equal wherever recorded. Only settings recorded with two values differ; who records fewer is said once."""
    write_result(tmp_path / "a", "a", 2.0)
    write_result(tmp_path / "b", "b", 3.0, cfg=None)
    write_result(tmp_path / "c", "c", 2.5, cfg=2.0)
    board = build([tmp_path], compare=True)
    assert board.differing["generator_config.cfg_scale"] == {"a": 1.5, "c": 2.0}
    assert board.unrecorded == {"b": ["generator_config.cfg_scale"]}
    write_result(tmp_path / "c", "c", 2.5, cfg=1.5)
    board = build([tmp_path], compare=True)
    assert "generator_config.cfg_scale" not in board.differing and board.unrecorded == {"b": ["generator_config.cfg_scale"]}
    out = report(tmp_path, "--compare").stdout
    assert "Settings that differ between runs: none" in out
    assert "Runs that record fewer settings (those are not compared):\n  b: 1 (generator_config.cfg_scale)" in out


def test_outcomes_are_not_settings(tmp_path):
    """Timings, paths, dates, versions and devices differ between any two runs; listing them hides what matters."""
    for name, fid, month in (("a", 3.0, 1), ("b", 2.0, 2)):
        path = write_result(tmp_path / name, name, fid, created=f"2026-0{month}-01T00:00:00Z", grid=f"{name}.png",
                            noise={"fid": 0.1 * month})
        result = json.loads(path.read_text())
        result["settings"]["extractors"] = {"inception": {"path": f"/home/{name}/inception.pth", "sha256": "same"}}
        result["provenance"]["checkpoints"] = {"gpt": {"path": f"/home/{name}/c2i_B_384.pt", "sha256": "same"}}
        result["provenance"]["versions"]["torch"] = f"2.{month}"
        path.write_text(json.dumps(result))
    _, differing = compare(load_results([tmp_path]))
    # wall time, created, run_id, runs_dir, outputs, noise, file paths and versions all differ; none is a setting
    assert differing == {}
    assert "Settings that differ between runs: none" in report(tmp_path, "--compare").stdout
    result["provenance"]["checkpoints"]["gpt"]["sha256"] = "another checkpoint"
    path.write_text(json.dumps(result))
    assert compare(load_results([tmp_path]))[1] == {"provenance.checkpoints.gpt.sha256": {"a": "same",
                                                                                        "b": "another checkpoint"}}


def test_compare_with_a_single_run(tmp_path):
    write_result(tmp_path / "only", "only", 2.0)
    out = report(tmp_path / "only" / "result.json", "--compare")
    assert out.exit_code == 0, out.output
    board = build([tmp_path], compare=True).board
    assert board["fid delta"].tolist() == [0.0] and board["comparable"].tolist() == [True]


def test_noise_verdicts_follow_the_rule(tmp_path):
    """beyond when |delta| > 2 sqrt(std_a^2 + std_b^2); nothing where either run has no estimate."""
    write_result(tmp_path / "base", "base", 2.00, noise={"fid": 0.03})
    write_result(tmp_path / "near", "near", 2.08, noise={"fid": 0.04})   # 0.08 <= 2 * 0.05 = 0.10
    write_result(tmp_path / "far", "far", 2.11, noise={"fid": 0.04})    # 0.11 > 0.10
    write_result(tmp_path / "none", "none", 2.50)                        # no estimate
    table, _ = compare(load_results([tmp_path]), baseline="base")
    verdicts = dict(zip(table["run"], table["fid noise"]))
    assert verdicts["near"] == "within" and verdicts["far"] == "beyond"
    assert pd.isna(verdicts["none"]) and pd.isna(verdicts["base"])
    assert "inception_score noise" not in table  # no run estimates IS noise
    out = report(tmp_path, "--compare", "--baseline", "base")
    assert "beyond" in out.stdout and "2 x sqrt(std_run^2 + std_baseline^2)" in out.stdout


# -- the board -------------------------------------------------------------------------------------------------
def test_every_metric_computed_gets_a_column_with_date_version_and_paper(tmp_path):
    """The board used to show no IS/KID column, no paper FID, no reason, no date or version, True/False."""
    write_result(tmp_path / "a", "a", 6.5, cfg=2.0, kid=0.0012, fd_dinov2=80.0)
    write_result(tmp_path / "b", "b", 7.0, cfg=2.0, num_samples=10000)
    board = build([tmp_path], compare=True).board
    for column in ("fid", "inception_score", "kid", "fd_dinov2", "paper fid", "fid vs paper", "paper source",
                   "why not comparable", "created", "bench", "reference", "num_samples"):
        assert column in board, column
    assert board["paper fid"].tolist() == [6.437, 6.437]  # LlamaGen-B 384->256, cfg 2.0: Table 9
    assert board["fid vs paper"].tolist() == pytest.approx([0.063, 0.563])
    assert board["created"].tolist() == ["2026-12-01", "2026-12-01"] and board["bench"].tolist() == ["0.1.0"] * 2
    text = to_text(board)
    for shown in ("IS", "KID", "FD_DINOv2", "paper FID", "✓", "✗", "samples 10000 vs 50000 in the baseline"):
        assert shown in text, shown
    assert "True" not in text and "False" not in text
    assert "0.00120" in text  # KID at the precision it is read at


def test_no_paper_columns_when_nothing_matches(tmp_path):
    write_result(tmp_path / "a", "a", 2.0, model="GPT-Custom")
    board = build([tmp_path], compare=True)
    assert "paper fid" not in board.board and board.paper.empty
    assert "Published numbers" not in report(tmp_path, "--compare").stdout


def test_ranking_follows_each_metrics_direction(runs):
    table = load_results([runs])
    assert leaderboard(table, "fid")["run"].tolist()[0] == "<script>alert(1)</script>"
    write_result(runs / "d", "d", 3.0, recall=0.9)
    assert leaderboard(load_results([runs]), "recall")["run"].tolist()[0] == "d"
    compared, _ = compare(load_results([runs]))
    assert leaderboard(compared, "fid delta")["run"].tolist()[0] == "<script>alert(1)</script>"
    with pytest.raises(BenchError, match="cannot sort by 'nope'"):
        leaderboard(table, "nope")


def test_a_board_without_fid_ranks_by_its_first_metric(tmp_path):
    """Tokenizer results have rFID, not FID: the default ranking falls back rather than failing."""
    for name, rfid in (("vq-a", 2.2), ("vq-b", 0.9)):
        write_json(tmp_path / name / "result.json", {"schema_version": 1, "task": "reconstruct", "run_id": name,
                                                     "metrics": {"rfid": rfid, "psnr": 20.0}})
    board = build([tmp_path])
    assert board.sort_by == "rfid" and board.board["run"].tolist() == ["vq-b", "vq-a"]
    with pytest.raises(BenchError, match="cannot sort by 'fid'"):
        build([tmp_path], sort_by="fid", default_sort=False)
    assert report(tmp_path).exit_code == 0
    out = report(tmp_path, "--sort-by", "fid")  # asked for explicitly: said, not replaced
    assert out.exit_code == 2 and "cannot sort by 'fid'" in out.output


def test_non_finite_metrics_sort_and_get_deltas(tmp_path):
    """Strict JSON stores a perfect reconstruction's PSNR as "inf"; the column must stay numeric."""
    write_result(tmp_path / "finite", "finite", 2.0, psnr=30.0, ssim=0.5)
    write_result(tmp_path / "perfect", "perfect", 1.0, psnr="inf")
    write_result(tmp_path / "undefined", "undefined", 3.0, psnr="nan", ssim="nan")
    table = load_results([tmp_path])
    assert pd.api.types.is_float_dtype(table["psnr"]) and pd.api.types.is_float_dtype(table["ssim"])
    assert leaderboard(table, "psnr")["run"].tolist() == ["perfect", "finite", "undefined"]  # NaN ranks last
    compared, _ = compare(table)
    assert compared["psnr delta"].tolist()[:2] == [0.0, float("inf")] and pd.isna(compared["psnr delta"][2])
    out = report(tmp_path, "--sort-by", "psnr", "--compare")
    assert out.exit_code == 0, out.output
    assert "PSNR Δ" in out.stdout and "inf" in out.stdout


def test_an_undefined_metric_is_not_shown_as_not_computed(tmp_path):
    """A NaN FID used to show as "-", the same as a metric never computed; now "NaN", and the board says why each
    value is missing (the result's `unavailable` reason, or computed-but-undefined)."""
    write_result(tmp_path / "a", "a", 2.0)
    write_result(tmp_path / "b", "b", "nan")
    write_result(tmp_path / "c", "c", None, cfg=2.0)
    result = json.loads((tmp_path / "c" / "result.json").read_text())
    result["unavailable"] = {"fid": "too few samples"}
    (tmp_path / "c" / "result.json").write_text(json.dumps(result))
    board = build([tmp_path], compare=True)
    text = to_text(board.board)
    lines = {line.split()[0]: line.split() for line in text.splitlines()[1:]}
    assert lines["b"][2:4] == ["1.50", "NaN"] and lines["c"][2:4] == ["2.00", "-"], text
    notes = report(tmp_path, "--compare").stdout
    assert "b: FID computed, but undefined (NaN)" in notes and "c: FID not computed: too few samples" in notes
    csv = to_csv(board.board).splitlines()
    assert any(l.startswith("b,") and ",nan," in l for l in csv) and not any(l.startswith("c,") and "nan" in l
                                                                              for l in csv)
    page = __import__("bench.report", fromlist=["to_html"]).to_html(board)
    assert 'title="not computed: too few samples">-<' in page and ">NaN<" in page


def test_reference_and_sample_count_without_compare(tmp_path):
    write_result(tmp_path / "a", "a", 2.0)
    write_result(tmp_path / "a", "a", 1.0, ref=REF_B, name=f"result-{REF_B[:12]}.json")
    write_result(tmp_path / "b", "b", 1.5, num_samples=10000)
    board = build([tmp_path]).board
    assert board[["reference", "num_samples"]].values.tolist() == [
        ["imagenet256@bbbbbbbbbbbb", 50000], ["imagenet256@aaaaaaaaaaaa", 10000], ["imagenet256@aaaaaaaaaaaa", 50000]]
    assert "comparable" not in board and "baseline" not in board


def test_integer_fields_stay_integers_when_a_row_lacks_them(tmp_path):
    write_result(tmp_path / "a", "a", 2.0, num_samples=100)
    write_json(tmp_path / "b" / "result.json", {"run_id": "b", "fid": 1.0})
    table = load_results([tmp_path])
    assert table["samples.num_samples"].dtype == "Int64" and table["fid"].dtype == "float64"
    out = report(tmp_path)
    assert out.exit_code == 0, out.output
    assert "100" in out.stdout and "100.0" not in out.stdout and "<NA>" not in out.stdout
    assert "100.0" not in to_csv(leaderboard(table))


# -- formats -------------------------------------------------------------------------------------------------------
def test_cli_writes_every_format(runs, tmp_path):
    paths = {f: tmp_path / f"board.{f}" for f in ("csv", "html", "md", "tex")}
    out = report(runs, "--compare", "--csv", paths["csv"], "--html", paths["html"], "--markdown", paths["md"],
                 "--latex", paths["tex"])
    assert out.exit_code == 0, out.output
    csv = pd.read_csv(paths["csv"])
    assert csv["fid"].tolist() == [1.0, 2.0, 2.5]
    assert csv["comparable"].tolist() == ["no", "yes", "yes"] and csv["baseline"].tolist() == ["no", "no", "yes"]
    assert paths["html"].read_text().startswith("<!DOCTYPE html>")
    assert paths["md"].read_text().startswith("| run | generator | cfg | FID |")
    assert paths["tex"].read_text().startswith(r"\begin{tabular}")
    for path in paths.values():
        assert f"wrote {path}" in out.stderr


def test_cli_refuses_to_overwrite_an_input(runs):
    out = report(runs / "a" / "result.json", "--csv", runs / "a" / "result.json")
    assert out.exit_code == 2 and "is also an input" in out.output


def test_markdown_and_latex_escape_user_strings(tmp_path):
    write_result(tmp_path / "a", "x|y *b* <img src=x> 100%_$#{}~^\\", 2.0)
    board = leaderboard(load_results([tmp_path]))
    markdown = to_markdown(board)
    row = markdown.splitlines()[2]
    assert row.startswith(r"| x\|y \*b\* &lt;img src=x&gt; 100%\_$\#{}~^\\ |")
    assert len(row.split(" | ")) == len(board.columns)  # the | in the name split no cell
    latex = to_latex(board)
    assert r"x|y *b* \textless{}img src=x\textgreater{} 100\%\_\$\#\{\}\textasciitilde{}\textasciicircum{}" \
           r"\textbackslash{}" in latex


def test_latex_flags_are_words_and_markdown_marks(runs):
    table, _ = compare(load_results([runs]))
    board = leaderboard(table)
    assert " & no & " in to_latex(board) and "✗" not in to_latex(board)
    assert "| ✗ |" in to_markdown(board)
    assert json.loads(json.dumps(to_csv(board)))  # plain text


def test_other_networks_weights_compare_where_both_rows_used_the_network(tmp_path):
    """Rows whose DINOv2 or CLIP weights (or DINOv2 resize) differ from the baseline's are not comparable; a row that
    did not use the network at all (FID only) stays comparable on what it has. New metrics get their own titles,
    directions and precision on the board."""
    def write(name, metrics, **features):
        write_json(tmp_path / name / "result.json", {
            "schema_version": 1, "task": "eval", "run_id": name, "metrics": metrics,
            "reference": {"sha256": "ab", "num_ref": 20}, "samples": {"num_samples": 8}, "settings": {},
            "provenance": {"features": {"inception": {"sha256": "cd"}, **features}}})

    official = {"weights_sha256": "d5383ea8f487", "resize": "tensor", "official_weights": True}
    write("base", {"fid": 3.0, "fd_dinov2": 100.0, "cmmd": 0.5}, dinov2=official,
          clip={"weights_sha256": "3035c92b3509", "official_weights": True})
    write("mine", {"fid": 2.9, "fd_dinov2": 90.0, "cmmd": 0.4}, dinov2={**official, "weights_sha256": "0123456789ab",
                                                                        "official_weights": False},
          clip={"weights_sha256": "3035c92b3509", "official_weights": True})
    write("pil", {"fid": 2.8, "fd_dinov2": 95.0}, dinov2={**official, "resize": "pil"})
    write("fid-only", {"fid": 2.7, "density": 1.02, "coverage": 0.81, "kid_dinov2": 0.0123456})
    table, _ = compare(load_results([tmp_path / n for n in ("base", "mine", "pil", "fid-only")]), baseline="base")
    assert table["comparable"].tolist() == [True, False, False, True]
    why = table["why not comparable"].tolist()
    assert why[1] == "DINOv2 weights 0123456789ab vs d5383ea8f487 in the baseline"
    assert why[2] == "DINOv2 resize pil vs tensor in the baseline"
    text = to_text(build([tmp_path], sort_by="cmmd").board)
    assert all(title in text for title in ("FD_DINOv2", "CMMD", "Density", "Coverage", "KID_DINOv2"))
    assert "0.01235" in text  # KID in any feature space is read to 5 decimals
    assert build([tmp_path], sort_by="cmmd").board["run"].tolist()[:2] == ["mine", "base"]  # lower CMMD first
    assert build([tmp_path], sort_by="coverage").board["run"].tolist()[0] == "fid-only"  # higher coverage first


def test_the_terminal_table_fits_120_columns_and_says_what_it_left_out(tmp_path):
    """The demo's table was ~260 columns wide; the terminal gets the run, cfg and metrics that fit, the CSV and HTML
    every column."""
    from bench.report.formats import TERMINAL_WIDTH

    for i, cfg in enumerate((1.0, 1.5, 2.0, 4.0)):
        write_result(tmp_path / f"r{i}", f"llamagen-demo-cfg{cfg:g}", 290.0 + i, cfg=cfg, noise={"fid": 1.0},
                     kid=0.2, sfid=80.0)
    board = build([tmp_path], compare=True)
    full = to_text(board.board)
    assert max(map(len, full.splitlines())) > TERMINAL_WIDTH
    out = report(tmp_path, "--compare").stdout
    table = out.split("\n\n")[0].splitlines()
    note = " ".join(line for line in table if not line.startswith(" ") and not line.startswith("llamagen"))
    assert max(map(len, table)) <= TERMINAL_WIDTH and "columns left out to fit 120 characters" in note
    assert table[0].split()[:3] == ["run", "cfg", "FID"] and "bench" in note
    assert "bench" in to_csv(board.board).splitlines()[0]


def test_a_board_can_say_what_it_is_in_one_line(tmp_path):
    from bench.report import to_html

    write_result(tmp_path / "a", "a", 2.0)
    board = build([tmp_path])
    board.about = "What to look at: <guidance> trades recall for precision."
    assert report_text(board).splitlines()[0] == board.about
    assert "<p class='about'>What to look at: &lt;guidance&gt; trades recall for precision.</p>" in to_html(board)
