"""Set metrics through real runs: recorded in the leaderboard with n and an interval, recomputed (never
appended twice) when a killed run resumes, ``--seeds K`` resumable per seed with the diversity scores, old
leaderboards still readable, and the terminal and HTML tables showing them."""
from __future__ import annotations

import io
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

import cli as cli_module
from pie_bench.datasets.pie import load_dataset
from pie_bench.report.tables import print_leaderboard
from pie_bench.run.leaderboard import load_leaderboard
from pie_bench.run.results import decode_float, read_records
from tests import fault_editors

REPO = Path(__file__).resolve().parent.parent
SETS = ["psnr_unedit_part", "pr_source", "psd_source", "kid_source", "fid_source"]


def _bench(*args) -> str:
    result = CliRunner().invoke(cli_module.cli, ["bench", "--no-progress", "--no-report", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _sets(board: dict) -> dict:
    return {name: {m: (s["value"], s["ci_low"], s["ci_high"], s["n"], s["reason"]) for m, s in e["set_metrics"].items()}
            for name, e in board["editors"].items()}


def test_set_metrics_survive_sigkill_and_resume(tmp_path, monkeypatch):
    """SIGKILL part-way; the resumed run's set metrics are those of an uninterrupted run: every sample in
    each set once, the values recomputed over all of them."""
    fault_editors.register(monkeypatch)
    out, markers = tmp_path / "killed", tmp_path / "markers"
    args = ["--data", "smoke", "--metrics", ",".join(SETS), "--editors", "identity,slow",
            "--editor-arg", "slow.delay=0.05", "--limit", "6"]
    env = {**fault_editors.plugin_env(tmp_path, REPO), "PIE_BENCH_TEST_MARKERS": str(markers),
           "PIE_BENCH_TEST_HANG_AT": "4"}
    proc = subprocess.Popen([sys.executable, "cli.py", "bench", "--no-progress", "--no-report", *args, "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if markers.exists() and len(markers.read_text().split()) >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "leaderboard.json").exists()  # killed before any leaderboard: nothing to trust yet
    done_before = len(read_records([out / "samples.jsonl"]))
    assert 6 <= done_before < 12
    _bench(*args, "--out", str(out))
    _bench(*args, "--out", str(out))  # a second resume adds nothing and recomputes the same numbers
    clean = tmp_path / "clean"
    _bench(*args, "--out", str(clean))
    resumed, uninterrupted = (json.loads((p / "leaderboard.json").read_text()) for p in (out, clean))
    assert _sets(resumed) == _sets(uninterrupted)
    ident = resumed["editors"]["identity"]["set_metrics"]
    assert {m: ident[m]["n"] for m in ident} == {"pr_source": 6, "psd_source": 6, "kid_source": 6, "fid_source": 6}
    assert ident["pr_source"]["value"] == 0 and ident["psd_source"]["value"] == 0
    # FID needs 10 images: NaN with the reason, never a number from 6
    assert ident["fid_source"]["value"] is None and "n=6 < 10" in ident["fid_source"]["reason"]
    assert resumed["set_metric_info"]["kid_source"]["toy"] is True
    assert "FID is biased" in resumed["set_metric_info"]["fid_source"]["note"]


def test_seeds_run_stochastic_editors_k_times_resumably_and_score_diversity(tmp_path):
    out = tmp_path / "seeds"
    base = ["--data", "shapes", "--backbone", "shapes", "--metrics", "psnr_unedit_part,pr_source", "--limit", "3",
            "--editors", "identity,ip2p", "--editor-arg", "ip2p.num_inference_steps=4", "--out", str(out)]
    _bench(*base, "--seeds", "3")
    recs = read_records([out / "samples.jsonl"])
    ip2p = [r for r in recs if r.editor == "ip2p"]
    assert sorted((r.seed_index, r.seed) for r in ip2p if r.sample_id == ip2p[0].sample_id) == \
        [(0, 1234), (1, 1235), (2, 1236)]
    assert len(ip2p) == 9 and len([r for r in recs if r.editor == "identity"]) == 3  # deterministic: once
    assert all((out / "ip2p" / "seed2" / f"{r.sample_id}.png").is_file() for r in ip2p if r.seed_index == 2)
    board = json.loads((out / "leaderboard.json").read_text())
    ip, ident = board["editors"]["ip2p"], board["editors"]["identity"]
    assert ip["seeds"] == 3 and ip["stochastic"] and ip["n"] == 3  # the per-sample means read seed 0 only
    div = ip["set_metrics"]
    assert div["diversity_resnet50"]["value"] > 0 and div["diversity_lpips"]["value"] > 0
    assert 0 < div["diversity_ms_ssim"]["value"] < 1 and div["diversity_resnet50"]["n"] == 3
    assert ident["set_metrics"]["diversity_resnet50"]["value"] == 0
    assert ident["set_metrics"]["diversity_ms_ssim"]["value"] == 1
    assert "deterministic" in ident["set_metrics"]["diversity_lpips"]["note"]
    # the report's gallery shows the first seed, one row per sample
    from pie_bench.report.gallery import run_records
    from pie_bench.report.model import board_view, load_board
    from pie_bench.run.run_folder import RunFolder

    shown = run_records(RunFolder(out), board_view(load_board(out / "leaderboard.json")))
    assert len(shown) == 6 and {r.seed_index for r in shown} == {0}
    # the same command again redoes nothing; one more seed adds exactly that seed's records
    _bench(*base, "--seeds", "3")
    assert len(read_records([out / "samples.jsonl"])) == 12
    _bench(*base, "--seeds", "4")
    recs = read_records([out / "samples.jsonl"])
    assert len(recs) == 15 and sorted({r.seed_index for r in recs if r.editor == "ip2p"}) == [0, 1, 2, 3]
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["editors"]["ip2p"]["seeds"] == 4
    # the first seed's numbers are those of a run without --seeds
    single = tmp_path / "single"
    _bench(*base[:-1], str(single))
    one = json.loads((single / "leaderboard.json").read_text())["editors"]["ip2p"]
    assert one["metrics"] == board["editors"]["ip2p"]["metrics"]
    assert one["set_metrics"]["pr_source"] == board["editors"]["ip2p"]["set_metrics"]["pr_source"]
    # a further seed that failed is counted (exit 1, a footnote) and left out of that sample's diversity
    shard = out / "samples.jsonl"
    lines = shard.read_text().splitlines()
    at = next(i for i, ln in enumerate(lines) if '"seed_index": 3' in ln and '"ip2p"' in ln)
    rec = json.loads(lines[at])
    lines[at] = json.dumps({**rec, "status": "failed", "error": "boom", "metrics": {}, "image": None})
    shard.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli_module.cli, ["bench", "--no-progress", "--no-report", *base, "--seeds", "4"],
                                catch_exceptions=False)
    assert result.exit_code == 1 and "failed runs of further seeds" in result.output
    ip = json.loads((out / "leaderboard.json").read_text())["editors"]["ip2p"]
    assert ip["n_failed_seeds"] == 1 and ip["n_failed"] == 0 and ip["set_metrics"]["diversity_lpips"]["n"] == 3


def test_old_leaderboards_without_set_metrics_load_and_print():
    board = load_leaderboard(REPO / "results" / "shapes.json")
    assert board.set_metric_info == {} and all(not e.set_metrics for e in board.editors.values())
    buf = io.StringIO()
    print_leaderboard(board, Console(file=buf, width=120), per_category=False)
    assert "metrics over sets" not in buf.getvalue() and "identity" in buf.getvalue()


def test_tables_and_report_show_set_metrics_with_intervals_and_reasons(tmp_path):
    out = tmp_path / "run"
    _bench("--data", "smoke", "--metrics", "psnr_unedit_part,pr_source,psd_source,fid_source", "--editors",
           "identity,blank", "--limit", "4", "--out", str(out))
    buf = io.StringIO()
    print_leaderboard(load_leaderboard(out / "leaderboard.json"), Console(file=buf, width=140), per_category=False)
    text = buf.getvalue()
    assert "metrics over sets" in text and "PR vs source" in text and "n/a: n=4 < 10" in text
    assert "FID is biased" in text and "[low, high]" in text
    from pie_bench.report.html import write_report

    html = write_report(out).read_text()
    assert 'id="set-overall"' in html and "FID vs source" in html and 'title="n=4 &lt; 10' in html
    board = json.loads((out / "leaderboard.json").read_text())
    blank = board["editors"]["blank"]["set_metrics"]["pr_source"]
    assert decode_float(blank["ci_low"]) <= decode_float(blank["value"]) <= decode_float(blank["ci_high"])
    assert decode_float(blank["value"]) > 0 and not math.isnan(decode_float(blank["value"]))


@pytest.mark.parametrize("name", ["identity", "blank", "oracle", "ddim_p2p"])
def test_editors_declared_deterministic_ignore_the_seed(name):
    """The declaration the diversity scores rely on: a deterministic editor's output is the same for any seed."""
    import numpy as np
    import torch

    from editors.base import as_edit_output
    from pie_bench.run.runner import instantiate_editors

    ds = load_dataset("shapes", limit=1)
    ed = instantiate_editors([name], {name: {"num_ddim_steps": "3"}} if name == "ddim_p2p" else {})[0]
    assert not ed.stochastic
    ed.load("shapes")
    outs = [as_edit_output(ed.edit(ds.samples[0], torch.Generator().manual_seed(s)), "x", name).image for s in (1, 2)]
    assert np.array_equal(outs[0], outs[1])


def test_compare_flags_set_metric_changes_beyond_their_intervals(tmp_path):
    from pie_bench.report.compare import compare_leaderboards

    a = json.loads((REPO / "results" / "shapes.json").read_text())
    a["set_metric_info"] = {"pr_source": {"higher_is_better": False}}
    a["schema_version"] = 3
    b = json.loads(json.dumps(a))
    stats = {"value": 1.0, "ci_low": 0.9, "ci_high": 1.1, "n": 30, "reason": "", "note": "", "higher_is_better": False}
    a["editors"]["identity"]["set_metrics"] = {"pr_source": stats}
    b["editors"]["identity"]["set_metrics"] = {"pr_source": {**stats, "value": 1.05, "ci_low": 0.95, "ci_high": 1.15}}
    b["editors"]["blank"]["set_metrics"] = {"pr_source": {**stats, "value": 2.0}}
    a["editors"]["blank"]["set_metrics"] = {"pr_source": stats}
    rows = {(r["editor"], r["metric"]): r for r in compare_leaderboards(a, b)["rows"]}
    assert not rows[("identity", "pr_source")]["flagged"]  # within the intervals
    assert rows[("blank", "pr_source")]["regression"]  # lower is better, and it doubled
