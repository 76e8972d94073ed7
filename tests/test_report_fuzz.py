"""`bench report` always writes a board: a fuzzer-like set of hand-edited or damaged result files, each beside two
good ones, is either read (its values within the schema's types and ranges) or skipped with a one-line warning
naming it -- never a traceback, never no board (issue: `fid: 1e400`, `noise.std.fid: "abc"`, `run_id: 12345` and
`cfg_scale: "high"` each killed the whole board)."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from bench import result as schema
from bench.cli import cli
from bench.errors import BenchError
from bench.report import build, to_csv, to_html, to_latex, to_markdown, report_text
from test_report_helpers import write_result

#: raw JSON text put in place of a value (1e400 parses to inf, NaN is Python's non-strict literal)
BAD_VALUES = ("null", '"abc"', "1e400", "NaN", "-0.5", "true", '[1, "x"]', '{"a": null}')


def leaves(obj, path=()):
    """Every (path, value) of a JSON object, containers included."""
    for key, value in obj.items():
        yield path + (key,), value
        if isinstance(value, dict):
            yield from leaves(value, path + (key,))


def edited(result: dict, path: tuple, raw: str) -> str:
    """The result as JSON text with the field at `path` replaced by the raw JSON `raw`."""
    marker = "@@FUZZ@@"
    data = json.loads(json.dumps(result))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = marker
    return json.dumps(data).replace(json.dumps(marker), raw)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    paths = [write_result(folder / "a", "a", 2.5, noise={"fid": 0.05}),
             write_result(folder / "b", "b", 2.0, cfg=2.0, noise={"fid": 0.04}, psnr=30.0)]
    return paths, json.loads(paths[1].read_text())


def test_every_edited_field_gives_a_board(good, tmp_path):
    paths, template = good
    targets = list(leaves(template))
    assert len(targets) > 40
    failures = []
    for i, (path, _) in enumerate(targets):
        for raw in BAD_VALUES:
            bad = tmp_path / f"{i}-{BAD_VALUES.index(raw)}.json"
            bad.write_text(edited(template, path, raw))
            try:
                board = build([*paths, bad], compare=True)
                for render in (to_csv, to_markdown, to_latex):
                    render(board.board)
                report_text(board)
                assert len(board.board) in (2, 3)
                assert len(board.board) == 3 or any(str(bad) in s for s in board.skipped)
            except Exception as err:  # noqa: BLE001 -- the point is that nothing escapes
                failures.append(f"{'.'.join(path)} = {raw}: {type(err).__name__}: {err}")
            bad.unlink()
    assert not failures, "\n".join(failures[:20])


@pytest.mark.parametrize("path,raw", [(("metrics", "fid"), "1e400"), (("noise", "std", "fid"), '"abc"'),
                                      (("run_id",), "12345"), (("settings", "generator_config", "cfg_scale"), '"high"'),
                                      (("metrics", "fid"), "-1"), (("noise", "std", "fid"), "-0.1"),
                                      (("metrics", "precision"), "1.5"), (("metrics", "fid"), "NaN")])
def test_the_reported_files_are_skipped_with_a_warning_and_the_html_board_is_written(good, tmp_path, path, raw):
    paths, template = good
    bad = tmp_path / "bad" / "result.json"
    bad.parent.mkdir()
    bad.write_text(edited(template, path, raw))
    with pytest.raises(BenchError, match=".".join(path).replace("metrics.", "") if path[0] != "run_id" else "run_id"):
        schema.read(bad)
    out = CliRunner().invoke(cli, ["report", str(paths[0].parent.parent), str(bad), "--compare",
                                   "--html", str(tmp_path / "b.html"), "--csv", str(tmp_path / "b.csv")])
    assert out.exit_code == 0, out.output
    assert "skipped" in out.output.lower() and str(bad) in out.output
    assert (tmp_path / "b.html").stat().st_size > 1000 and (tmp_path / "b.csv").exists()


def test_values_bench_itself_writes_pass_the_check():
    """What `json_safe` writes for a perfect reconstruction ("inf" PSNR) and an undefined metric ("nan") are read."""
    for key, value in (("psnr", "inf"), ("fid", "nan"), ("kid", -0.001), ("ssim", -0.2), ("fid", 0), ("psnr", 99.0)):
        schema.check_metric(key, value)
    for key, value in (("fid", "inf"), ("fid", -1e-9), ("precision", 1.0001), ("recall", "-inf"), ("fid", math.inf),
                       ("fid", True), ("fid", "low")):
        with pytest.raises(BenchError):
            schema.check_metric(key, value)
