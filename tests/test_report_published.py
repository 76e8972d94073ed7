"""bench.report.published: reports/published.csv read as package data, the rows a run or preset should
reproduce, and the presets' "paper FID" claims checked against the tables they come from."""

import pandas as pd
import pytest

from bench.report import build, published
from test_report_helpers import write_result

LLAMAGEN = "arXiv:2406.06525"
DIT = "arXiv:2212.09748"


def test_the_csv_is_package_data():
    from importlib.resources import files

    assert (files("reports") / "published.csv").is_file()
    table = published.published()
    assert len(table) == 307 and table["fid"].dtype == "float64"  # 238 LlamaGen + DiT, 7 VAR Table 1 (2 DiT), 62 MAR


@pytest.mark.parametrize("name, expected", [
    ("GPT-B", "LlamaGen-B"), ("LlamaGen GPT-XL", "LlamaGen-XL"), ("gpt-3b", "LlamaGen-3B"),
    ("LlamaGen-L", "LlamaGen-L"),
    ("DiT-XL/2", "DiT-XL/2"), ("GPT-7B", None), ("", None), (None, None)])
def test_model_names(name, expected):
    assert published.published_model(name) == expected


@pytest.mark.parametrize("model, image_size, cfg, fid, table", [
    ("GPT-B", 384, 2.0, 6.437, "Table 9"),      # the 300-epoch release, not Table 9's 50-epoch rows
    ("GPT-B", 384, 2.25, 6.092, "Table 9"),
    ("GPT-B", 256, 2.0, 5.464, "Table 8"),      # three decimals preferred over Table 6's truncated 5.46
    ("GPT-L", 256, 1.75, 3.805, "Table 8"),
    ("GPT-L", 384, 2.0, 3.075, "Table 9"),
    ("GPT-XL", 384, 1.75, 2.629, "Table 10"),
    ("GPT-XXL", 384, 1.75, 2.340, "Table 10"),
    ("GPT-3B", 384, 1.65, 2.189, "Table 10"),
    ("DiT-XL/2", 256, 1.5, 2.27, "Table 2"),    # DiT's own paper, not LlamaGen's Table 6 reprint
    ("DiT-XL/2", 512, 1.5, 3.04, "Table 3"),
    ("DiT-XL/2", 256, 1.0, 9.62, "Table 2"),    # cfg 1.0 = no guidance; 7M steps, not Table 4's 400K-step 19.47
    ("DiT-XL/2", 256, None, 9.62, "Table 2"),
])
def test_expected_fid(model, image_size, cfg, fid, table):
    value, source = published.expected_fid(model, image_size, cfg)
    assert value == pytest.approx(fid) and source.endswith(table)


def test_no_row_no_number():
    assert published.expected_fid("GPT-B", 384, 3.5) is None
    assert published.expected_fid("GPT-7B", 384, 2.0) is None
    assert published.paper_rows("GPT-B", 384, 256, 2.0, top_k=1000).empty  # another sampling setting
    assert not published.paper_rows("GPT-B", 384, 256, 2.0, top_k=0).empty


def test_known_preset_disagreements_are_named():
    """llamagen-b claims 6.09 at cfg 2.0 (Table 9: 6.437 at 2.0, 6.092 at 2.25); llamagen-l-256 claims 3.80 at
    cfg 2.0 (Table 8: 4.407 at 2.0, 3.805 at 1.75)."""
    assert published.claim_disagreement("GPT-B", 384, 2.0, 6.09, eval_size=256) == (
        f"claimed paper FID 6.09 at cfg 2.0, but {LLAMAGEN} Table 9 gives 6.437; 6.09 is its FID at cfg 2.25 "
        f"({LLAMAGEN} Table 9, 300 epochs)")
    assert published.claim_disagreement("GPT-L", 256, 2.0, 3.80) == (
        f"claimed paper FID 3.8 at cfg 2.0, but {LLAMAGEN} Table 8 gives 4.407; 3.8 is its FID at cfg 1.75 "
        f"({LLAMAGEN} Table 8, 300 epochs)")


@pytest.mark.parametrize("model, image_size, cfg, claimed", [
    ("GPT-B", 256, 2.0, 5.46), ("GPT-L", 384, 2.0, 3.07), ("GPT-XL", 384, 1.75, 2.62), ("GPT-XXL", 384, 1.75, 2.34),
    ("GPT-3B", 384, 1.65, 2.18), ("DiT-XL/2", 256, 1.5, 2.27), ("DiT-XL/2", 512, 1.5, 3.04)])
def test_the_other_presets_claims_agree(model, image_size, cfg, claimed):
    """A two-decimal claim of a three-decimal number (LlamaGen truncates: 2.629 -> 2.62) agrees."""
    assert published.claim_disagreement(model, image_size, cfg, claimed) is None


def test_paper_curve_is_one_training_length_of_one_paper():
    curve = published.paper_curve("GPT-B", 384, 256)
    assert curve["cfg"].tolist() == [1.0, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75]
    assert set(curve["epochs"]) == {300} and set(curve["source"]) == {f"{LLAMAGEN} Table 9"}
    assert published.paper_curve("DiT-XL/2", 256, 256)["fid"].tolist() == [9.62, 3.22, 2.27]


def test_family_curve_covers_most_models_at_one_training_length():
    family = published.family_at("GPT-B", 384, 256, 1.75)
    assert family["model"].tolist() == ["LlamaGen-B", "LlamaGen-L", "LlamaGen-XL", "LlamaGen-XXL", "LlamaGen-3B"]
    assert set(family["training"]) == {300}


def test_runs_are_matched_by_model_resolution_and_cfg(tmp_path):
    write_result(tmp_path / "b384", "b384", 6.5, cfg=2.0)
    write_result(tmp_path / "b256", "b256", 5.5, cfg=2.0, image_size=256)
    write_result(tmp_path / "odd-cfg", "odd-cfg", 7.0, cfg=3.3)
    write_result(tmp_path / "custom", "custom", 9.0, model=None)
    board = build([tmp_path], compare=True)
    paper = dict(zip(board.board["run"], board.board["paper fid"]))
    assert paper["b384"] == 6.437 and paper["b256"] == 5.464
    assert pd.isna(paper["odd-cfg"]) and pd.isna(paper["custom"])
    # only the rows some run matches are shown
    assert sorted(board.paper["fid"]) == [5.464, 6.437]


def test_runs_of_other_weights_than_the_release_match_no_paper_row(tmp_path):
    """`official_weights: false` (a user's checkpoint under a release preset) gets no paper FID or difference; a
    result without the field (written before it existed) counts as official."""
    import json

    write_result(tmp_path / "old", "old", 6.5, cfg=2.0)
    for run, official in (("release", True), ("mine", False)):
        path = write_result(tmp_path / run, run, 6.5, cfg=2.0)
        result = json.loads(path.read_text())
        result["settings"]["generator_config"]["official_weights"] = official
        path.write_text(json.dumps(result))
    board = build([tmp_path], compare=True)
    paper = dict(zip(board.board["run"], board.board["paper fid"]))
    delta = dict(zip(board.board["run"], board.board["fid vs paper"]))
    assert paper["old"] == paper["release"] == 6.437 and pd.isna(paper["mine"]) and pd.isna(delta["mine"])
    assert board.paper["fid"].tolist() == [6.437]
