"""HTML report: rendered from a small real run and looked at in headless Chromium through Selenium.

The run goes through the real runner: ``identity`` plus a test editor that inverts colours, fails on
one sample and skips another, on a PIE-format folder whose prompts and ids carry HTML. Browser tests
skip (with the reason) where Chromium/chromedriver/selenium are missing; CI installs them
(``apt-get install -y chromium chromium-driver``, ``pip install selenium==4.27.1``).
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from editors.base import EditOutput, Editor, EditorConfig
from pie_bench.core.errors import ResultsError
from pie_bench.report.html import pareto_front, write_compare_report, write_report

XSS_PROMPT = 'a red motorcycle <script>window.__xss = 1</script> in a garage'
XSS_TARGET = 'a red [<img src=x onerror="window.__xss = 2">] in a barn'
ODD_ID = '122000000900"<b>'
FAIL_ID, SKIP_ID = "213000000900", "322000000900"
ERROR_TEXT = "boom <b>not bold</b>"
SAMPLES = {  # id -> (smoke image, category); two samples share category 1
    "000000000900": ("motorcycle.png", 0),
    ODD_ID: ("astronaut.png", 1),
    FAIL_ID: ("colorwheel.png", 2),
    SKIP_ID: ("camera.png", 1),
}
EDITORS = ["identity", "flaky"]


class FlakyEditor(Editor):
    """Inverts colours; fails on FAIL_ID, skips SKIP_ID. uses_backbone: labelled toy on --backbone toy."""

    name = "flaky"
    Config = EditorConfig
    paper = "test editor"

    def skip_reason(self, sample):
        return "no <instruction> for this one" if sample.id == SKIP_ID else None

    def edit(self, sample, generator: torch.Generator):
        if sample.id == FAIL_ID:
            raise RuntimeError(ERROR_TEXT)
        return EditOutput(image=255 - sample.image)


def make_pie_folder(root: Path) -> Path:
    from pie_bench.datasets.smoke import MAPPING_FILE, build_smoke_image

    smoke = json.loads(MAPPING_FILE.read_text())
    by_image = {e["image_path"]: e for e in smoke.values()}
    (root / "annotation_images").mkdir(parents=True)
    mapping = {}
    for sid, (image, cat) in SAMPLES.items():
        entry = dict(by_image[image], editing_type_id=str(cat))
        Image.fromarray(build_smoke_image(image)).save(root / "annotation_images" / image)
        mapping[sid] = entry
    first = mapping["000000000900"]
    first["original_prompt"], first["editing_prompt"] = XSS_PROMPT, XSS_TARGET
    # a ground-truth image for one sample: the report then shows a target column
    mapping[ODD_ID]["target_image_path"] = "motorcycle.png"
    (root / "mapping_file.json").write_text(json.dumps(mapping))
    return root


def bench(data_root: Path, out: Path, editors=EDITORS, metrics_backbone="toy") -> dict:
    from editors import registry as reg
    from pie_bench.core.registry import Entry
    from metrics.registry import build_metrics
    from pie_bench.datasets.pie import load_dataset
    from pie_bench.run.runner import BenchOptions, run_bench

    table = reg.registry(refresh=True)
    table["flaky"] = Entry("flaky", "tests.test_report:FlakyEditor", "test", "editor", _obj=FlakyEditor)
    try:
        ds = load_dataset(str(data_root))
        metrics = build_metrics(["psnr_unedit_part", "mse_unedit_part"], metrics_backbone)
        return run_bench(ds, BenchOptions(editors=list(editors), backbone="toy"), metrics, out)
    finally:
        reg.registry(refresh=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    data = make_pie_folder(base / "pie")
    out = base / "run"
    board = bench(data, out)
    index = write_report(out)
    return {"dir": out, "data": data, "board": board, "index": index, "base": base}


# ---------------------------------------------------------------------------------------------
# static checks (no browser)


def test_report_files_and_escaping(run):
    index = run["index"]
    assert index == run["dir"] / "report" / "index.html"
    text = index.read_text()
    assert run["board"]["toy"] and 'id="toy-banner"' in text
    # every dataset string escaped: only the report's own inline script, no live markup from prompts/ids/errors
    assert text.count("<script") == 1
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=&quot;window.__xss = 2&quot;&gt;" in text
    assert 'data-sample="122000000900&quot;&lt;b&gt;"' in text
    assert "boom &lt;b&gt;not bold&lt;/b&gt;" in text and "no &lt;instruction&gt;" in text
    # self-contained: nothing fetched from the network
    assert "http://" not in text.replace("http-equiv", "") and "https://" not in text
    for rel in ("pareto.svg", "categories.svg", "images/_source", "images/_mask", "images/_target",
                "images/identity", "images/flaky"):
        assert (index.parent / rel).exists(), rel
    assert len(list((index.parent / "images" / "flaky").iterdir())) == 2  # failed and skipped have no image
    thumb = Image.open(next((index.parent / "images" / "_mask").iterdir()))
    assert thumb.size == (256, 256)


def test_mask_overlay_tints_only_the_edit_region(run):
    from pie_bench.datasets.pie import load_dataset
    from pie_bench.report.html import mask_overlay

    s = load_dataset(str(run["data"])).samples[0]
    out = mask_overlay(s.image, s.mask)
    assert s.mask.any() and (~s.mask).any()
    np.testing.assert_array_equal(out[~s.mask], s.image[~s.mask])
    inside = out[s.mask].astype(int) - s.image[s.mask].astype(int)
    assert inside[:, 0].mean() > 0 and inside[:, 1].mean() < 0  # towards red


@pytest.mark.parametrize("change", ["missing", "other_annotations"])
def test_report_without_the_dataset_shows_outputs_only(run, tmp_path, change):
    copy = tmp_path / "run"
    shutil.copytree(run["dir"], copy, ignore=shutil.ignore_patterns("report"))
    manifest = json.loads((copy / "run.json").read_text())
    if change == "missing":
        manifest["dataset"]["source"] = str(tmp_path / "gone")
    else:  # the data folder is there but its annotations changed since the run
        data = tmp_path / "pie"
        shutil.copytree(run["data"], data)
        mapping = json.loads((data / "mapping_file.json").read_text())
        mapping["000000000900"]["original_prompt"] = "changed"
        (data / "mapping_file.json").write_text(json.dumps(mapping))
        manifest["dataset"]["source"] = str(data)
    (copy / "run.json").write_text(json.dumps(manifest))
    index = write_report(copy, tmp_path / "out")
    text = index.read_text()
    assert 'id="source-note"' in text
    assert ("not on this machine" if change == "missing" else "other annotations") in text
    assert not (tmp_path / "out" / "images" / "_source").exists()
    assert len(list((tmp_path / "out" / "images" / "identity").iterdir())) == len(SAMPLES)


def test_real_pie_annotations_with_a_missing_image(piebench_mini, tmp_path):
    """piebench-mini lacks the image of 000000000000: the editor's failure and the unreadable source
    both show in that row, the other row is complete."""
    board = bench(piebench_mini, tmp_path / "run", editors=["identity"])
    assert board["editors"]["identity"]["n_failed"] == 1
    text = write_report(tmp_path / "run").read_text()
    row0 = text.split('data-sample="000000000000"')[1].split("</tr>")[0]
    assert "source unreadable" in row0 and "is missing" in row0 and 'data-status="failed"' in row0
    row1 = text.split('data-sample="000000000001"')[1].split("</tr>")[0]
    assert row1.count("<img ") == 3 and "failed" not in row1
    assert "No metric with values to plot" not in text  # the finite MSE still makes the category chart


def test_rerun_redoes_only_changed_thumbnails(run, tmp_path):
    copy, out = tmp_path / "run", tmp_path / "out"
    shutil.copytree(run["dir"], copy, ignore=shutil.ignore_patterns("report"))
    write_report(copy, out)
    thumbs = out / "images" / "identity"
    before = {p.name: p.stat().st_mtime_ns for p in thumbs.iterdir()}
    write_report(copy, out)  # nothing changed: nothing rewritten
    assert {p.name: p.stat().st_mtime_ns for p in thumbs.iterdir()} == before
    changed = copy / "identity" / "000000000900.png"
    Image.new("RGB", (512, 512), (0, 200, 0)).save(changed)
    os.utime(changed, ns=(1, 1))  # an output older than its thumbnail must still not leave it stale
    write_report(copy, out)
    after = {p.name: p.stat().st_mtime_ns for p in thumbs.iterdir()}
    assert [n for n in after if after[n] != before[n]] == ["000000000900.jpg"]
    green = np.asarray(Image.open(thumbs / "000000000900.jpg")).reshape(-1, 3).mean(0)
    assert green[1] > 190 and green[0] < 15 and green[2] < 15


def test_missing_leaderboard_is_one_line_error(tmp_path):
    with pytest.raises(ResultsError, match="no leaderboard.json here"):
        write_report(tmp_path)


def test_pareto_front_is_exactly_the_non_dominated_points():
    rng = random.Random(0)
    for _ in range(200):
        pts = [(rng.choice([0.1, 0.2, 0.5, 1.0, 2.0]), rng.choice([1.0, 2.0, 3.0, 4.0])) for _ in range(rng.randint(1, 8))]
        for hib in (True, False):
            better = (lambda a, b: a > b) if hib else (lambda a, b: a < b)
            front = set(pareto_front(pts, hib))
            for p in set(pts):
                dominated = any(q[0] <= p[0] and not better(p[1], q[1]) and q != p for q in pts)
                assert (p in front) == (not dominated), (pts, hib, p)


def test_plots_prefer_the_papers_headline_metrics():
    from pie_bench.report.html import plot_metrics

    def board(names):
        return {"metric_info": {n: {} for n in names},
                "editors": {"e": {"metrics": {n: {"mean": 1.0, "n": 3} for n in names}}}}

    full = ["structure_distance", "psnr_unedit_part", "lpips_unedit_part", "clip_similarity_target_image"]
    assert plot_metrics(board(full)) == ["clip_similarity_target_image", "lpips_unedit_part"]
    assert plot_metrics(board(["psnr_unedit_part", "mse_unedit_part", "lpips_unedit_part"])) == \
        ["lpips_unedit_part", "psnr_unedit_part"]
    empty = board(full)
    empty["editors"]["e"]["metrics"]["clip_similarity_target_image"]["n"] = 0  # no defined value: not plotted
    assert plot_metrics(empty) == ["lpips_unedit_part", "structure_distance"]


def test_cli_report_bench_and_compare(run, tmp_path):
    from cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["report", str(run["dir"]), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "index.html").is_file()
    res = runner.invoke(cli, ["report", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no leaderboard.json" in res.output

    # a real (non-toy) pixel-metric run of the identity baseline: report by default, no toy banner
    common = ["bench", "--data", "smoke", "--editors", "identity", "--limit", "2", "--metrics", "psnr_unedit_part",
              "--metrics-backbone", "real", "--no-progress"]
    res = runner.invoke(cli, [*common, "--out", str(tmp_path / "b1")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "b1" / "report" / "index.html").read_text()
    assert 'id="toy-banner"' not in text and 'data-editor-row="identity"' in text
    res = runner.invoke(cli, [*common, "--out", str(tmp_path / "b2"), "--no-report"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "b2" / "leaderboard.json").is_file() and not (tmp_path / "b2" / "report").exists()

    b_path = worse_copy(run, tmp_path)
    res = runner.invoke(cli, ["compare", str(run["dir"] / "leaderboard.json"), str(b_path), "--html", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "cmp" / "index.html").read_text()
    assert text.count('class="regression"') == 1 and "REGRESSION" in text


def worse_copy(run, tmp_path) -> Path:
    """B: flaky's background MSE far worse than A's (beyond 2 stderr); everything else unchanged."""
    board = json.loads((run["dir"] / "leaderboard.json").read_text())
    m = board["editors"]["flaky"]["metrics"]["mse_unedit_part"]
    m["mean"] = m["mean"] + 10 * (m["stderr"] or 0.01) + 0.05
    path = tmp_path / "B" / "leaderboard.json"
    path.parent.mkdir()
    path.write_text(json.dumps(board))
    return path


EVIL = """<script>alert(1)</script>"'&"""
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;"


def test_templates_escape_dataset_strings(tmp_path):
    """A sample id, a prompt, a dataset and an editor name carrying a script, both quotes and & come out as
    text in the run's page and in the compare page: the templates escape them (autoescape), and no
    hand-escaping helper is left in the report package."""
    import re

    from pie_bench.datasets.smoke import MAPPING_FILE, build_smoke_image
    from pie_bench.report import render

    root = tmp_path / "pie"
    (root / "annotation_images").mkdir(parents=True)
    entry = dict(next(iter(json.loads(MAPPING_FILE.read_text()).values())), editing_type_id="1")
    entry["original_prompt"], entry["editing_prompt"] = f"a cat {EVIL}", f"a [dog {EVIL}]"
    Image.fromarray(build_smoke_image(entry["image_path"])).save(root / "annotation_images" / entry["image_path"])
    sid = f"100000000900{EVIL}"
    (root / "mapping_file.json").write_text(json.dumps({sid: entry}))
    bench(root, tmp_path / "run", editors=["identity"])
    text = write_report(tmp_path / "run").read_text()
    assert text.count("<script") == 1 and "alert(1)</script>" not in text  # only the report's own script
    assert f'data-sample="100000000900{EVIL_ESCAPED}"' in text
    assert f"a cat {EVIL_ESCAPED}" in text and f"<mark>dog {EVIL_ESCAPED}</mark>" in text

    board = json.loads((tmp_path / "run" / "leaderboard.json").read_text())
    for b, name in ((board, "A"), (json.loads(json.dumps(board)), "B")):
        b["editors"] = {EVIL: b["editors"]["identity"]}
        b["run"] = b["dataset"]["name"] = EVIL + name
        b["dataset"]["annotations_sha256"] = name  # datasets differ: a note naming both
        (tmp_path / f"{name}.json").write_text(json.dumps(b))
    text = write_compare_report(tmp_path / "A.json", tmp_path / "B.json", tmp_path / "cmp").read_text()
    assert text.count("<script") == 1 and "alert(1)</script>" not in text
    assert f'data-editor-row="{EVIL_ESCAPED}"' in text and f"run {EVIL_ESCAPED}B" in text
    assert f"datasets differ: {EVIL_ESCAPED}A vs {EVIL_ESCAPED}B" in text

    assert render.environment().autoescape is True
    package = Path(render.__file__).parent
    for path in package.glob("*.py"):
        src = path.read_text()
        assert not re.search(r"\bh\(|html\.escape\(|\bescape\(", src) or path.name == "render.py", path.name
        assert not re.search(r"\bMarkup\(|\bSafe\(|__html__", src) or path.name == "render.py", path.name
    for path in (package / "templates").glob("*.html.j2"):
        assert not re.search(r"\|\s*safe\b|autoescape\s+false", path.read_text()), path.name


def test_thumbnails_made_ahead_on_threads_equal_the_ones_made_in_turn(tmp_path):
    """ThumbCache.warm makes the edits' thumbnails concurrently: the same files ``file`` makes one by one, a corrupt
    source is left for ``file`` to report, and a 512-px image halves by the exact box mean."""
    from PIL import Image

    from pie_bench.report.thumbnails import ThumbCache

    rng = np.random.default_rng(0)
    srcs = []
    for k in range(6):
        p = tmp_path / f"src{k}.png"
        # smooth (as an upsampled model output is), so JPEG's chroma subsampling leaves the comparison below alone
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((512, 512), Image.BICUBIC).save(p)
        srcs.append(p)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    ahead, in_turn = ThumbCache(tmp_path / "a"), ThumbCache(tmp_path / "b")
    ahead.warm([(s, tmp_path / "a" / "images" / f"{s.stem}.jpg") for s in srcs + [bad]], workers=2)
    for s in srcs:
        in_turn.file(s, tmp_path / "b" / "images" / f"{s.stem}.jpg")
        a = (tmp_path / "a" / "images" / f"{s.stem}.jpg").read_bytes()
        assert a == (tmp_path / "b" / "images" / f"{s.stem}.jpg").read_bytes()
        assert ahead.fresh(tmp_path / "a" / "images" / f"{s.stem}.jpg", in_turn.table[f"{s.stem}.jpg"])
    with pytest.raises(Exception):
        ahead.file(bad, tmp_path / "a" / "images" / "bad.jpg")
    img = np.asarray(Image.open(srcs[0]).convert("RGB")).astype(float)
    box = img.reshape(256, 2, 256, 2, 3).mean((1, 3))
    thumb = np.asarray(Image.open(tmp_path / "a" / "images" / "src0.jpg")).astype(float)
    assert thumb.shape == (256, 256, 3) and np.abs(thumb - box).mean() < 1.5  # JPEG q90 of the box mean
