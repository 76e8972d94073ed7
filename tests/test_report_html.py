"""The HTML board: self-contained, every user string escaped (text, attributes, script data, chart SVGs), the
settings behind each row, charts, sample grids. A real browser loads it in test_board_browser.py."""

import base64
import html
import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from bench.report import build, to_html
from bench.report import html as page
from test_report_helpers import REF_B, write_result

EVIL = "<img src=x onerror=alert(1)>"
SCRIPT_END = "</script><script>alert(2)</script>"


class Elements(HTMLParser):
    """Every element and attribute the page really contains, as a browser's tokenizer sees them."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


@pytest.fixture
def board_page(tmp_path):
    for cfg, fid in ((1.5, 12.3), (1.75, 8.2), (2.0, 6.5), (2.25, 6.1)):
        write_result(tmp_path / "runs" / f"cfg{cfg}", f"b-cfg{cfg}", fid, cfg=cfg, noise={"fid": 0.05},
                     inception_score=120 + 20 * cfg)
    write_result(tmp_path / "runs" / "near", "near", 6.56, cfg=2.0, noise={"fid": 0.05})
    write_result(tmp_path / "runs" / "evil", EVIL, 6.0, cfg=2.0, ref=REF_B, warnings=(f"warned {EVIL}",),
                 generator_note=None, seed_text=None)
    write_result(tmp_path / "runs" / "end", SCRIPT_END, 7.0, cfg=2.0, seed_text=None)
    board = build([tmp_path / "runs"], compare=True, baseline="b-cfg2.0")
    return board, to_html(board, title=f"board {EVIL}")


def test_user_strings_are_text_not_markup(board_page):
    _, text = board_page
    elements = Elements(text)
    assert not any(tag == "img" and attrs.get("src") == "x" for tag, attrs in elements.tags)
    assert not any(any(k.startswith("on") for k in attrs) for _, attrs in elements.tags)
    scripts = [attrs for tag, attrs in elements.tags if tag == "script"]
    assert scripts == [{"type": "application/json", "id": "board-data"}, {}]  # the data and the page's own script
    assert [s for s in elements.scripts if "alert" in s] == [elements.scripts[0]]  # names only inside the JSON
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


def test_script_data_cannot_end_its_element(board_page):
    board, text = board_page
    data_block = re.search(r"<script type='application/json' id='board-data'>(.*?)</script>", text, re.S).group(1)
    assert "<" not in data_block and ">" not in data_block and "&" not in data_block
    data = json.loads(data_block)
    assert data["columns"] == page.shown_columns(board) and "fid noise" not in data["columns"]
    assert [row[0] for row in data["rows"]] == board.board["run"].tolist()
    assert SCRIPT_END in [row[0] for row in data["rows"]]


def test_the_page_is_self_contained(board_page):
    _, text = board_page
    elements = Elements(text)
    for tag, attrs in elements.tags:
        for name in ("src", "href"):
            if name in attrs:
                assert attrs[name].startswith("data:"), (tag, name, attrs[name][:40])
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text.replace("docs/metrics.md", ""))
    policy = next(a["content"] for t, a in elements.tags if a.get("http-equiv") == "Content-Security-Policy")
    assert policy.startswith("default-src 'none'; img-src data:;") and "unsafe-inline" not in policy.split(
        "script-src")[1]


def test_each_row_carries_its_settings_and_provenance(board_page):
    _, text = board_page
    assert text.count("<details>") == 7
    assert "<h3>Settings</h3>" in text and "generator_config.cfg_scale" in text
    assert "provenance.features.inception.path" in text and "timing.wall_time_s" in text
    assert f"warned {EVIL}" not in text and "warned &lt;img src=x onerror=alert(1)&gt;" in text


def test_flags_reasons_and_noise_are_shown(board_page):
    _, text = board_page
    assert "no\" title=\"reference batch bbbbbbbbbbbb vs aaaaaaaaaaaa in the baseline\">✗" in text
    assert 'class="beyond worse" title="beyond noise: worse than the baseline">+5.800' in text  # cfg 1.5's FID
    assert 'class="beyond better" title="beyond noise: better than the baseline">-0.400' in text  # cfg 2.25
    assert 'class="within" title="within noise">+0.060' in text  # 0.06 <= 2 sqrt(0.05^2 + 0.05^2) = 0.141
    assert "2 x sqrt(std_run^2 + std_baseline^2)" in text
    assert "<h2>Published numbers at the runs' settings</h2>" in text and "6.437" in text
    assert "<h2>Settings that differ between runs</h2>" in text
    assert "True" not in re.sub(r"<script.*?</script>", "", text, flags=re.S)


def test_charts_are_svg_images_and_escape_their_text(board_page):
    _, text = board_page
    charts = re.findall(r"<img class='chart' src='data:image/svg\+xml;base64,([^']+)' alt='([^']*)'", text)
    titles = [alt.split(":")[0] for _, alt in charts]
    assert titles == ["FID and IS vs cfg scale", "FID vs model size", "Precision vs recall", "FID vs seconds per image",
                      "IS vs FID"]
    for svg, _ in charts:
        decoded = base64.b64decode(svg).decode()
        assert decoded.lstrip().startswith("<?xml") and "<svg" in decoded
        assert "<img" not in decoded and "</script>" not in decoded  # run names, as glyphs and escaped comments
    precision_recall = base64.b64decode(charts[2][0]).decode()
    assert "&lt;img src=x onerror=alert(1)&gt;" in precision_recall  # matplotlib's comment for the label


def test_cfg_chart_without_inception_score_has_no_empty_panel(tmp_path):
    """Runs scored with Inception weights that lack the softmax layer (the offline demo) and no paper curve: the
    chart is FID alone (one axes), and says why IS is missing, instead of an empty IS panel."""
    for cfg, fid in ((1.0, 291.5), (2.0, 291.2), (4.0, 296.3)):
        write_result(tmp_path / f"cfg{cfg:g}", f"cfg{cfg:g}", fid, cfg=cfg, model=None, image_size=256,
                     inception_score=None)
    text = to_html(build([tmp_path]))
    charts = re.findall(r"<img class='chart' src='data:image/svg\+xml;base64,([^']+)' alt='([^']*)'", text)
    svg, alt = charts[0]
    assert alt.startswith("FID vs cfg scale:") and "no Inception Score recorded" in alt
    decoded = base64.b64decode(svg).decode()
    assert 'id="axes_1"' in decoded and 'id="axes_2"' not in decoded
    write_result(tmp_path / "cfg8", "cfg8", 310.0, cfg=8.0, model=None, image_size=256)  # one run with IS
    svg, alt = re.findall(r"<img class='chart' src='data:image/svg\+xml;base64,([^']+)' alt='([^']*)'",
                          to_html(build([tmp_path])))[0]
    assert alt.startswith("FID and IS vs cfg scale:") and 'id="axes_2"' in base64.b64decode(svg).decode()


def test_precision_recall_chart_reads_when_points_coincide(tmp_path):
    """Four demo runs at precision 0, recall 0 drew four labels on top of each other on an axis from -0.04 to 0.04:
    now one label names them all, on the unit square."""
    for name in ("a", "b", "c"):
        write_result(tmp_path / name, name, 2.0, model=None, precision=0.0, recall=0.0)
    write_result(tmp_path / "d", "d", 3.0, model=None, precision=0.5, recall=0.25)
    charts = re.findall(r"<img class='chart' src='data:image/svg\+xml;base64,([^']+)' alt='([^']*)'",
                        to_html(build([tmp_path])))
    svg = next(base64.b64decode(s).decode() for s, alt in charts if alt.startswith("Precision vs recall"))
    labels = re.findall(r"<!-- (.*?) -->", svg)
    assert "a, b, c" in labels and "d" in labels and not {"a", "b", "c"} & set(labels)
    ticks = re.findall(r"<!-- (-?[0-9.]+) -->", svg)
    assert "1.0" in ticks and "0.04" not in ticks


def test_fid_vs_seconds_per_image_by_device(tmp_path):
    """Speed beside quality: each run's FID at its recorded seconds per image, grouped by the device it ran on."""
    write_result(tmp_path / "fast", "fast", 4.0)
    write_result(tmp_path / "slow", "slow", 2.0)
    for name, speed, device in (("fast", 50.0, "cuda (NVIDIA H100)"), ("slow", 0.5, "cpu (x86_64)")):
        path = tmp_path / name / "result.json"
        result = json.loads(path.read_text())
        result["timing"]["images_per_s"], result["provenance"]["device"] = speed, device
        path.write_text(json.dumps(result))
    charts = re.findall(r"<img class='chart' src='data:image/svg\+xml;base64,([^']+)' alt='([^']*)'",
                        to_html(build([tmp_path])))
    svg, alt = next((base64.b64decode(s).decode(), a) for s, a in charts if a.startswith("FID vs seconds per image"))
    assert "2 runs; speeds compare only runs of the same device" in alt
    labels = re.findall(r"<!-- (.*?) -->", svg)
    assert {"fast", "slow", "cuda (NVIDIA H100)", "cpu (x86_64)"} <= set(labels)


def test_sample_grids_are_inlined_up_to_a_size(tmp_path, monkeypatch):
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    folder = tmp_path / "runs" / "a"
    folder.mkdir(parents=True)
    Image.fromarray(pixels).save(folder / "grid.png")
    write_result(folder, "a", 2.0, grid="runs/a/grid.png")        # relative to where `bench run` ran
    write_result(tmp_path / "runs" / "b", "b", 3.0, grid="/elsewhere/grid.png")
    (tmp_path / "runs" / "c").mkdir()
    (tmp_path / "runs" / "c" / "grid.png").write_text("not an image")
    write_result(tmp_path / "runs" / "c", "c", 4.0, grid="grid.png")
    text = to_html(build([tmp_path / "runs"]))
    inlined = re.findall(r"<img src='data:image/png;base64,([^']+)' alt='samples of a'>", text)
    assert len(inlined) == 1 and base64.b64decode(inlined[0]) == (folder / "grid.png").read_bytes()
    assert "b: sample grid /elsewhere/grid.png not found" in text
    assert "not inlined (not a PNG)" in text
    monkeypatch.setattr(page, "MAX_GRID_BYTES", 100)
    assert "MiB inlined" in to_html(build([tmp_path / "runs"]))


def test_sort_values_keep_numbers_numbers():
    assert page.sort_value(float("inf")) == "Infinity" and page.sort_value(float("nan")) is None
    assert page.sort_value(np.int64(3)) == 3.0 and page.sort_value(True) == 1 and page.sort_value("x") == "x"


def test_the_papers_own_timing_column_is_drawn_in_its_own_unit(tmp_path):
    """A VAR run brings VAR's Table 1 Time column (relative to VAR-d30, the authors' GPU) onto the speed chart, in a
    panel of its own: its points sit at the printed times on a log axis (checked against log10 of the times), and
    a board with no timed model has no such panel."""
    write_result(tmp_path / "var", "var", 3.5, model="VAR-d16", image_size=256, cfg=1.5)
    charts = re.findall(r"<img class='chart' src='data:image/svg\+xml;base64,([^']+)' alt='([^']*)'",
                        to_html(build([tmp_path])))
    svg, alt = next((base64.b64decode(s).decode(), a) for s, a in charts if a.startswith("FID vs seconds per image"))
    timed = "DiT-L/2, DiT-XL/2, VAR-d16, VAR-d20, VAR-d24, VAR-d30, VAR-d30-re"
    assert f"the papers' own timing of {timed}" in html.unescape(alt)
    assert "arXiv:2404.02905v2 Table 1, time x VAR-d30" in re.findall(r"<!-- (.*?) -->", svg)
    # each label is a text group right after its comment; the x of its translate() is the point's x + 4 pt
    label = r"<!-- ((?:VAR|DiT)-[^ ]*?) -->\s*<g [^>]*?transform=\"translate\(([-0-9.]+) "
    x = {name: float(at) for name, at in re.findall(label, svg)}
    assert set(x) >= {"VAR-d16", "VAR-d20", "VAR-d24", "DiT-L/2", "DiT-XL/2"}, x
    per_decade = (x["DiT-XL/2"] - x["VAR-d16"]) / (math.log10(45) - math.log10(0.4))
    for name, time in (("VAR-d20", 0.5), ("VAR-d24", 0.6), ("DiT-L/2", 31)):
        assert x[name] - x["VAR-d16"] == pytest.approx(per_decade * (math.log10(time) - math.log10(0.4)), abs=0.5)

    other = tmp_path / "only-gpt"
    write_result(other, "gpt", 3.0)  # LlamaGen-B: no paper prints its time
    alts = re.findall(r"alt='(FID vs [^']*)'", to_html(build([other])))
    assert alts and not any("papers' own timing" in html.unescape(a) for a in alts)
