"""The HTML board in a real browser: Debian's headless Chromium, driven by selenium through Debian's chromedriver.

A board is generated from synthetic results (a cfg sweep of one model beside the paper's curve, a DiT run, and
a run named `<img src=x onerror=...>`), opened from file://, and checked the way a reader would meet it: no
console errors, no network request, the table sorts both ways, the charts are drawn at a visible size, a row
opens onto its settings, and the injected name is inert text.

Chromium is required, not optional: CI installs it (`apt-get install chromium chromium-driver`, see .ci/run),
so a missing browser fails here with the command that installs it rather than skipping silently. Selenium
Manager never downloads a driver: the driver and browser paths are given, and SE_OFFLINE is set.

The screenshot is written to the test's temporary folder (set BENCH_BOARD_SCREENSHOT=PATH to keep it). The
README's picture is not this synthetic board but the demo's real one (README, "Leaderboards").
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.report import build, to_html
from bench.result import Result
from test_report_helpers import write_result

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver && pip install selenium (CI: .ci/run)"
EVIL = "<img src=x onerror=alert(document.domain)>"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--window-size=1400,1000"]


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"the board's browser test needs headless Chromium; missing {', '.join(missing)}: {INSTALL}",
                    pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"the board's browser test needs selenium: {INSTALL}", pytrace=False)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield browser
    browser.quit()


def _grid(path: Path, seed: int) -> None:
    """A 4x4 grid of smooth colour fields standing in for samples (what `bench run --save-grid` writes)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:64] / 63.0
    tiles = []
    for _ in range(16):
        a, b, c = rng.uniform(0, 1, (3, 3))
        tile = np.stack([a[i] * x + b[i] * y + c[i] * np.sin(6 * (x + y) + i) for i in range(3)], axis=-1)
        tiles.append((255 * (tile - tile.min()) / (np.ptp(tile) + 1e-9)).astype(np.uint8))
    rows = [np.concatenate(tiles[r * 4:(r + 1) * 4], axis=1) for r in range(4)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


@pytest.fixture(scope="module")
def board_file(tmp_path_factory) -> tuple[Path, list[tuple[str, float]]]:
    runs = tmp_path_factory.mktemp("runs")
    sweep = ((1.5, 12.41, 94.1), (1.75, 8.13, 126.0), (2.0, 6.52, 155.2), (2.25, 6.18, 180.9), (2.5, 6.33, 198.7))
    for i, (cfg, fid, inception) in enumerate(sweep):
        folder = runs / f"llamagen-b-cfg{cfg}"
        folder.mkdir()
        _grid(folder / "grid.png", i) if cfg == 2.25 else None
        write_result(folder, f"llamagen-b-cfg{cfg}", fid, cfg=cfg, inception_score=inception,
                     precision=0.72 + 0.05 * i, recall=0.53 - 0.03 * i, sfid=7.3 + 0.2 * i,
                     noise={"fid": 0.04, "inception_score": 1.2}, grid="grid.png" if cfg == 2.25 else None,
                     created=f"2026-12-0{i + 1}T09:00:00Z")
    write_result(runs / "evil", EVIL, 6.9, cfg=2.0, num_samples=10000, inception_score=150.0,
                 warnings=("10000 samples: papers report 50000; FID is biased upward with fewer",))
    dit = Result(task="sample", run_id="dit-xl-2", generator="dit-xl-2",
                 metrics={"fid": 2.31, "sfid": 4.68, "inception_score": 276.5, "precision": 0.82, "recall": 0.58},
                 reference={"name": "imagenet256", "sha256": "a" * 64, "num_ref": 10000, "resolution": 256},
                 samples={"num_samples": 50000, "resolution": 256},
                 settings={"generator_config": {"model": "DiT-XL/2", "image_size": 256, "eval_size": 256,
                                                "cfg_scale": 1.5, "steps": 250}, "num_samples": 50000},
                 provenance={"bench": "0.1.0", "features": {"inception": {"sha256": "c" * 64}},
                             "distances": "ADM float16"},
                 noise={"method": "bootstrap", "resamples": 10, "std": {"fid": 0.03}},
                 created="2026-12-06T09:00:00Z")
    (runs / "dit").mkdir()
    dit.write(runs / "dit" / "result.json")
    board = build([runs], compare=True, baseline="llamagen-b-cfg2.0")
    page = runs.parent / "board.html"
    page.write_text(to_html(board, title="LlamaGen-B cfg sweep vs the paper"))
    return page, list(zip(board.board["run"], board.board["fid"]))


@pytest.fixture(scope="module")
def opened(driver, board_file):
    page, fids = board_file
    driver.get_log("performance")  # drop what the browser did before (its start page)
    driver.get(page.as_uri())
    driver.execute_script("return document.readyState")
    return driver, page, fids


def _runs(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#board > tbody > tr'))"
        ".map(r => r.querySelector('summary').textContent)")


def test_no_console_errors_and_no_network(opened):
    driver, page, _ = opened
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    requests = [message["params"] for message in (json.loads(e["message"])["message"]
                                                  for e in driver.get_log("performance"))
                if message["method"] == "Network.requestWillBeSent"]
    by_page = [r["request"]["url"] for r in requests if r.get("documentURL") == page.as_uri()]
    assert page.as_uri() in by_page and all(u == page.as_uri() or u.startswith("data:") for u in by_page), by_page
    anywhere = [r["request"]["url"] for r in requests]  # the browser's own pages included: nothing leaves the machine
    assert not [u for u in anywhere if u.split(":")[0] in ("http", "https", "ws", "wss", "ftp")], anywhere


def test_the_injected_name_is_inert_visible_text(opened):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    driver, _, _ = opened
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text
    assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"], img[onerror]').length") == 0
    shown = [s for s in driver.find_elements(By.CSS_SELECTOR, "#board summary") if s.text == EVIL]
    assert len(shown) == 1 and shown[0].is_displayed()


def test_table_sorts_both_ways(opened):
    from selenium.webdriver.common.by import By

    driver, _, fids = opened
    assert _runs(driver) == [run for run, _ in fids]  # as ranked: lower FID first
    header = next(th for th in driver.find_elements(By.CSS_SELECTOR, "#board > thead th") if th.text == "FID")
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    assert _runs(driver) == [run for run, _ in sorted(fids, key=lambda r: r[1])]
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    assert _runs(driver) == [run for run, _ in sorted(fids, key=lambda r: -r[1])]
    names = next(th for th in driver.find_elements(By.CSS_SELECTOR, "#board > thead th") if th.text == "run")
    names.click()
    assert _runs(driver)[0] == EVIL  # "<" sorts before letters
    header.click()  # back to ascending FID for the screenshot
    header.click() if header.get_attribute("aria-sort") != "ascending" else None


def test_charts_and_grid_render_at_a_visible_size(opened):
    from selenium.webdriver.common.by import By

    driver, _, _ = opened
    images = driver.find_elements(By.CSS_SELECTOR, "img.chart") + driver.find_elements(By.CSS_SELECTOR, ".grids img")
    assert len(images) == 6  # cfg, size, precision-recall, seconds per image, IS-FID charts and one grid
    for image in images:
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image)
        size = image.size
        assert size["width"] > 100 and size["height"] > 100, (image.get_attribute("alt"), size)


def test_a_row_opens_onto_its_settings_then_screenshot(opened, tmp_path):
    from selenium.webdriver.common.by import By

    driver, _, _ = opened
    summary = driver.find_elements(By.CSS_SELECTOR, "#board summary")[0]
    provenance = summary.find_element(By.XPATH, "..").find_element(By.CLASS_NAME, "provenance")
    assert not provenance.is_displayed()
    summary.click()
    assert provenance.is_displayed() and "generator_config.cfg_scale" in provenance.text
    summary.click()
    width = driver.execute_script("return document.getElementById('board').scrollWidth") + 80
    driver.set_window_size(min(max(width, 1400), 2600), 1000)  # wide enough for every column
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(min(max(width, 1400), 2600), min(height + 140, 3000))
    shot = tmp_path / "board.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("BENCH_BOARD_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["BENCH_BOARD_SCREENSHOT"])
