"""Leaderboard compare, show and score commands."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cli
from pie_bench.report.compare import compare_leaderboards
from pie_bench.datasets.pie import load_dataset
from pie_bench.run.results import SCHEMA_VERSION, metric_stats


def board(mean, stderr, n_failed=0, hib=True):
    return {"kind": "pie_bench.leaderboard", "schema_version": SCHEMA_VERSION,
            "dataset": {"name": "d", "annotations_sha256": "x"}, "metrics_backbone": "toy",
            "editors": {"e": {"config_hash": "h", "n_failed": n_failed, "n": 10,
                              "metrics": {"m": {"mean": mean, "stderr": stderr, "n": 10, "higher_is_better": hib}}}}}


def test_compare_flags_beyond_two_combined_stderr():
    a = board(1.0, 0.1)
    within = compare_leaderboards(a, board(1.2, 0.1))  # 0.2 < 2*sqrt(0.02)=0.283
    assert not within["rows"][0]["flagged"]
    beyond = compare_leaderboards(a, board(0.6, 0.1))  # 0.4 > 0.283, and worse for higher-is-better
    assert beyond["rows"][0]["flagged"] and beyond["rows"][0]["regression"]
    better = compare_leaderboards(a, board(1.4, 0.1))
    assert better["rows"][0]["flagged"] and not better["rows"][0]["regression"]
    lower = compare_leaderboards(board(1.0, 0.1, hib=False), board(1.4, 0.1, hib=False))
    assert lower["rows"][0]["regression"]
    failed = compare_leaderboards(a, board(1.0, 0.1, n_failed=2))
    assert any(r["metric"] == "n_failed" and r["regression"] for r in failed["rows"])


def test_compare_incompatible_schema_is_one_line(tmp_path):
    a, b = board(1.0, 0.1), board(1.0, 0.1)
    b["schema_version"] = 999
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    res = CliRunner().invoke(cli.cli, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert res.exit_code == 2 and "schema version 999" in res.output and "regenerate" in res.output


def test_compare_cli_fail_on_regression(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(board(1.0, 0.01)))
    (tmp_path / "b.json").write_text(json.dumps(board(0.5, 0.01)))
    runner = CliRunner()
    assert runner.invoke(cli.cli, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]).exit_code == 0
    res = runner.invoke(cli.cli, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--fail-on-regression"])
    assert res.exit_code == 1 and "REGRESSION" in res.output


def test_metric_stats_exclude_nan_and_report_n():
    s = metric_stats([1.0, float("nan"), 3.0], True)
    assert s["mean"] == 2.0 and s["n"] == 2 and s["stderr"] == pytest.approx(1.0)
    assert metric_stats([float("nan")], True)["n"] == 0
    assert metric_stats([float("inf"), 5.0], True)["mean"] == "inf"


def test_score_folder_pnp_layout(tmp_path):
    """`score` reads <dir>/annotation_images/<image_path>, crops strips to their last 512x512 panel."""
    ds = load_dataset("smoke", limit=3)
    root = tmp_path / "method"
    for i, s in enumerate(ds.samples):
        target = root / "annotation_images" / s.image_path
        target.parent.mkdir(parents=True, exist_ok=True)
        if i == 0:  # the official 4-panel strip: [text | source | reconstruction | edited]
            strip = np.zeros((512, 2048, 3), np.uint8)
            strip[:, -512:] = s.image
            Image.fromarray(strip).save(target)
        elif i == 1:
            Image.fromarray(s.image).save(target)
        # the third sample's image is missing: recorded as failed, excluded from means
    out = tmp_path / "scored"
    res = CliRunner().invoke(cli.cli, ["score", str(root), "--limit", "3", "--metrics", "mse_unedit_part",
                                       "--out", str(out)])
    assert res.exit_code == 0, res.output
    b = json.loads((out / "leaderboard.json").read_text())["editors"]["method"]
    assert b["n_ok"] == 2 and b["n_failed"] == 1
    assert b["metrics"]["mse_unedit_part"] == {"mean": 0.0, "stderr": 0.0, "n": 2, "higher_is_better": False}
    assert "no edited image" in b["failures"][0]["error"]


def test_show_renders_tables(tmp_path):
    b = board(1.0, 0.1)
    b.update({"toy": True, "toy_note": "toy numbers", "metric_info": {"m": {"scale": 1000, "higher_is_better": True}}})
    b["editors"]["e"].update({"n_ok": 10, "n_skipped": 0, "latency": {"p50": 0.5, "p95": 2.0}, "per_category": {},
                              "toy": True})
    p = tmp_path / "l.json"
    p.write_text(json.dumps(b))
    res = CliRunner().invoke(cli.cli, ["show", str(p)])
    assert res.exit_code == 0 and "1000.00" in res.output and "toy" in res.output.lower() and "500 ms" in res.output
