"""The HTML report in a real browser: headless Chromium through Selenium, on the small real run of
``tests/test_report.py`` and on a leaderboard far wider than the window. Skipped (with the reason) where
Chromium/chromedriver/selenium are missing; CI installs them (``apt-get install -y chromium
chromium-driver``, ``pip install selenium==4.27.1``)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pie_bench.report.html import write_compare_report, write_report
from tests.test_report import EDITORS, ERROR_TEXT, FAIL_ID, SAMPLES, SKIP_ID, run, worse_copy  # noqa: F401  (run: fixture)

# ---------------------------------------------------------------------------------------------
# in a real browser


def chromium_paths():
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed: pip install selenium==4.27.1")
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_paths()
    if not binary or not driver_path:
        pytest.skip("headless Chromium not found (needs `chromium` and `chromedriver` on PATH: "
                    "apt-get install -y chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    # an explicit driver path: Selenium Manager must not try to download one
    driver = webdriver.Chrome(options=opts, service=Service(driver_path))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def open_page(driver, index: Path):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(index.resolve().as_uri())
    WebDriverWait(driver, 15).until(
        lambda d: d.execute_script("return document.readyState === 'complete' && "
                                   "Array.from(document.images).every(i => i.complete)"))


def screenshot(driver, name: str, tmp_path: Path) -> Path:
    """Full-page screenshot, kept under $PIE_BENCH_SCREENSHOTS when set (to look at it)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 120, 8000))
    folder = Path(os.environ.get("PIE_BENCH_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    return path


def visible(driver, css: str) -> int:
    from selenium.webdriver.common.by import By

    return sum(1 for e in driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed())


def test_report_in_browser(run, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    open_page(d, run["index"])
    shot = screenshot(d, "report.png", tmp_path)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[0] > 1500 and img.std() > 10
    # the toy banner is the first thing on the page: its yellow fills the top-left corner
    assert np.abs(img[8, 8] - np.array([255, 243, 191])).max() <= 6, img[8, 8]
    assert d.find_element(By.ID, "toy-banner").is_displayed()

    # nothing from the dataset ran, and the injected <img src=x> is text, not an element
    assert d.execute_script("return window.__xss === undefined && document.scripts.length === 1")
    assert "<script>window.__xss = 1</script>" in d.find_element(By.ID, "gallery").text

    # every image loaded (thumbnails and both plots)
    widths = d.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert widths and all(w > 0 for _, w in widths), [s for s, w in widths if not w]
    assert {"pareto.svg", "categories.svg"} <= {s for s, _ in widths}

    # leaderboard: one row per editor, overall and per category (only where the editor has samples)
    rows = d.find_elements(By.CSS_SELECTOR, "#overall tbody tr")
    assert sorted(r.get_attribute("data-editor-row") for r in rows) == sorted(EDITORS)
    cats = sorted({c for _, c in SAMPLES.values()})
    for c in cats:
        n_rows = len(d.find_elements(By.CSS_SELECTOR, f"#category-{c} tbody tr"))
        assert n_rows == len(EDITORS), c
    def counts(table_id):
        return {r.get_attribute("data-editor-row"): r.find_elements(By.TAG_NAME, "td")[1].text
                for r in d.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")}

    assert counts("overall") == {"identity": "4/0/0", "flaky": "2/1/1"}  # ok/failed/skipped
    assert counts("category-1")["flaky"] == "1/0/1" and counts("category-2")["flaky"] == "0/1/0"
    overall_text = d.find_element(By.ID, "overall").text
    assert "PSNR ↑" in overall_text and "MSE x10^4 ↓" in overall_text
    # a metric averaged over all of a row's samples shows no n of its own: the counts column says it once
    assert "n=2" not in overall_text and "n=4" not in overall_text

    # gallery: source + mask for every sample, one target, identity everywhere, flaky on 2 of 4
    n = len(SAMPLES)
    assert len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) == 2 * n + 1 + n + 2
    assert visible(d, "#gallery tbody tr") == n
    fail_cell = d.find_element(By.CSS_SELECTOR, f'tr[data-sample="{FAIL_ID}"] td[data-editor="flaky"]')
    assert "failed" in fail_cell.text and ERROR_TEXT in fail_cell.text
    skip_cell = d.find_element(By.CSS_SELECTOR, f'tr[data-sample="{SKIP_ID}"] td[data-editor="flaky"]')
    assert "skipped" in skip_cell.text and "no <instruction>" in skip_cell.text

    # filters change what is visible
    cat_select = Select(d.find_element(By.ID, "filter-category"))
    for c in cats:
        cat_select.select_by_value(str(c))
        expected = sum(1 for _, cc in SAMPLES.values() if cc == c)
        assert visible(d, "#gallery tbody tr") == expected, c
        assert d.find_element(By.ID, "gallery-count").text == f"{expected} of {n} samples shown"
    cat_select.select_by_value("all")
    assert visible(d, "#gallery tbody tr") == n
    ed_select = Select(d.find_element(By.ID, "filter-editor"))
    ed_select.select_by_value("flaky")
    assert visible(d, '#gallery [data-editor="identity"]') == 0 and visible(d, '#gallery td[data-editor="flaky"]') == n
    ed_select.select_by_value("all")
    status = Select(d.find_element(By.ID, "filter-status"))
    for value, sid in (("failed", FAIL_ID), ("skipped", SKIP_ID)):
        status.select_by_value(value)
        shown = [r.get_attribute("data-sample") for r in d.find_elements(By.CSS_SELECTOR, "#gallery tbody tr")
                 if r.is_displayed()]
        assert shown == [sid]
    status.select_by_value("all")

    # sorting: a click orders the column ascending, a second click descending (undefined last)
    table = d.find_element(By.ID, "category-1")
    headers = table.find_elements(By.CSS_SELECTOR, "thead th")
    col = next(i for i, th in enumerate(headers) if th.text.startswith("MSE"))

    def column():
        vals = [r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-v")
                for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
        return [float(v) for v in vals]

    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", table)  # as a reader scrolls to it
    headers[col].click()
    assert column() == sorted(column()) and headers[col].get_attribute("aria-sort") == "ascending"
    headers[col].click()
    assert column() == sorted(column(), reverse=True)
    assert len(set(column())) == 2  # identity's 0 and flaky's inverted colours really differ


def test_compare_report_in_browser(run, browser, tmp_path):
    from selenium.webdriver.common.by import By

    index = write_compare_report(run["dir"] / "leaderboard.json", worse_copy(run, tmp_path), tmp_path / "cmp")
    open_page(browser, index)
    screenshot(browser, "compare.png", tmp_path)
    flagged = [r for r in browser.find_elements(By.CSS_SELECTOR, "#compare tbody tr.regression")]
    assert len(flagged) == 1 and "flaky" in flagged[0].text and "REGRESSION" in flagged[0].text
    assert "1 flagged change(s), 1 regression(s)" in browser.find_element(By.ID, "compare-summary").text
    assert browser.find_element(By.ID, "toy-banner").is_displayed()
    widths = browser.execute_script("return Array.from(document.images).map(i => i.naturalWidth)")
    assert widths and all(w > 0 for w in widths)
    for tag in ("a", "b"):
        rows = browser.find_elements(By.CSS_SELECTOR, f"#leaderboard-{tag} tbody tr")
        assert sorted(r.get_attribute("data-editor-row") for r in rows) == sorted(EDITORS)


def test_wide_leaderboard_scrolls_in_its_box_with_the_editor_column_sticky(browser, tmp_path):
    """ShapesEdit's committed board with ten more metrics: far wider than a 1400-pixel window."""
    from selenium.webdriver.common.by import By

    from tests.test_tables import many_metrics_board

    board = many_metrics_board()
    board["editors"] = {"blank": board["editors"].pop("blank"), **board["editors"]}  # a bound listed first
    (tmp_path / "leaderboard.json").write_text(json.dumps(board))
    index = write_report(tmp_path)
    d = browser
    d.set_window_size(1400, 1000)
    open_page(d, index)
    # the page itself never scrolls sideways: only the table's own box does
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    wrap = d.find_element(By.CSS_SELECTOR, "#overall").find_element(By.XPATH, "..")
    assert "table-wrap" in wrap.get_attribute("class")
    assert d.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth + 500", wrap)
    # the ground-truth columns that matter on ShapesEdit come first, in view without scrolling
    first = [th.text for th in d.find_elements(By.CSS_SELECTOR, "#overall thead th")][:4]
    assert first[2].startswith("Attr acc"), first
    d.execute_script("arguments[0].scrollLeft = arguments[0].scrollWidth", wrap)
    box = d.execute_script("return arguments[0].getBoundingClientRect().toJSON()", wrap)
    last = d.find_elements(By.CSS_SELECTOR, "#overall thead th")[-1]
    rect = d.execute_script("return arguments[0].getBoundingClientRect().toJSON()", last)
    assert last.text == "p95" and box["left"] <= rect["left"] and rect["right"] <= box["right"] + 1
    editor = d.find_element(By.CSS_SELECTOR, "#overall tbody tr td.editor")
    ed_rect = d.execute_script("return arguments[0].getBoundingClientRect().toJSON()", editor)
    assert abs(ed_rect["left"] - box["left"]) <= 2 and editor.is_displayed()  # stuck to the box's left edge
    screenshot(d, "report-wide-scrolled.png", tmp_path)
    # bounds: drawn apart, last, never bold
    rows = d.find_elements(By.CSS_SELECTOR, "#overall tbody tr")
    assert sorted(r.get_attribute("data-editor-row") for r in rows[-3:]) == ["blank", "identity", "oracle"]
    assert all("bound" in r.get_attribute("class") for r in rows[-3:])
    assert not any("bound" in (r.get_attribute("class") or "") for r in rows[:-3])
    assert not d.find_elements(By.CSS_SELECTOR, "#overall tr.bound td.best")
    assert d.find_elements(By.CSS_SELECTOR, "#overall tr:not(.bound) td.best")
    # no toy banner (the editors ran on trained models); the toy-weight columns are marked instead
    assert not d.find_elements(By.ID, "toy-banner")
    note = d.find_element(By.CSS_SELECTOR, "#leaderboard .toy-metrics").text
    assert "LPIPS" in note and "Structure" in note
