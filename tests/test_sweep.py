"""``sweep``: grids parsed and checked, every combination run through the runner into one resumable run
folder (shared inversions counted), the quality-speed front computed exactly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from pie_bench.report.sweep import char_plot, sweep_points
from pie_bench.run.results import SampleRecord
from pie_bench.run.sweep import expand, parse_grid

REPO = Path(__file__).resolve().parent.parent
ARGS = ["sweep", "--editor", "ddim_p2p", "--grid", "num_ddim_steps=2,3", "--grid", "self_replace_steps=0.2,0.6",
        "--data", "smoke", "--backbone", "toy", "--limit", "4", "--metrics", "mse_unedit_part", "--no-progress",
        "--no-report"]


def test_grid_expands_to_every_combination_with_typed_checks():
    variants = expand(parse_grid(["ddim_p2p", "nti_p2p"], ["num_ddim_steps=10,20", "nti_p2p.inner_steps=1,3"]))
    names = [v.alias for v in variants]
    assert names == ["ddim_p2p@num_ddim_steps=10", "ddim_p2p@num_ddim_steps=20",
                     "nti_p2p@num_ddim_steps=10,inner_steps=1", "nti_p2p@num_ddim_steps=10,inner_steps=3",
                     "nti_p2p@num_ddim_steps=20,inner_steps=1", "nti_p2p@num_ddim_steps=20,inner_steps=3"]
    assert all(v.editor in ("ddim_p2p", "nti_p2p") for v in variants)


def test_grid_file_form(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("nti_p2p:\n  num_ddim_steps: [10, 50]\n  self_replace_steps: 0.4\n")
    variants = expand(parse_grid([], [], str(path)))
    assert [v.args for v in variants] == [{"num_ddim_steps": "10", "self_replace_steps": "0.4"},
                                          {"num_ddim_steps": "50", "self_replace_steps": "0.4"}]


@pytest.mark.parametrize("args, needle", [
    (["--editor", "ddim_p2p", "--grid", "num_ddim_stepz=10,20"], "did you mean"),  # unknown field
    (["--editor", "ddim_p2p", "--grid", "num_ddim_steps=ten"], "num_ddim_steps"),  # wrong type
    (["--editor", "ddim_p2p", "--grid", "num_ddim_steps="], "empty value list"),
    (["--editor", "ddim_p2p", "--grid", "num_ddim_steps=10,,20"], "empty value list"),
    (["--editor", "ddim_p2p", "--grid", "num_ddim_steps"], "expected KEY=V1,V2"),
    (["--editor", "nope", "--grid", "x=1"], "nope"),
    (["--grid", "num_ddim_steps=10"], "--editor"),
    (["--editor", "ddim_p2p", "--grid", "num_ddim_steps=2", "--data", "smoke", "--backbone", "toy",
      "--metrics", "mse_unedit_part", "--metric", "nope"], "--metric nope"),  # refused before anything runs
])
def test_bad_grid_is_one_line_error(args, needle, tmp_path):
    res = CliRunner().invoke(cli.cli, ["sweep", *args, "--out", str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.output
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()


def test_front_on_hand_made_points():
    """Seven configurations with known (seconds, quality); the front is the non-dominated ones, bounds
    are shown but never on it."""
    pts = {"a": (1.0, 50.0), "b": (2.0, 70.0), "c": (3.0, 60.0), "d": (4.0, 80.0), "e": (4.0, 75.0),
           "f": (8.0, 80.0), "bound": (0.001, 99.0)}
    board = {"metric_info": {"q": {"scale": 1.0, "higher_is_better": True}}, "editors": {
        n: {"n_ok": 3, "bound": "x" if n == "bound" else "", "latency": {"p50": s, "n": 3},
            "metrics": {"q": {"mean": q, "stderr": 1.0, "n": 3}}} for n, (s, q) in pts.items()}}
    got = sweep_points(board, "q")
    assert [p.name for p in got if p.on_front] == ["a", "b", "d"]
    assert not next(p for p in got if p.name == "bound").on_front
    plot = char_plot(got, width=30, height=8)
    assert sum(line.count("*") for line in plot) == 3 and sum(line.count("x") for line in plot) == 1
    lower = {"metric_info": {"q": {"scale": 1.0, "higher_is_better": False}}, "editors": board["editors"]}
    assert [p.name for p in sweep_points(lower, "q") if p.on_front] == ["a"]


def records(out: Path) -> list[SampleRecord]:
    from pie_bench.run.run_folder import RunFolder

    return RunFolder(out).records()


def run_cli(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "cli.py", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_sweep_shares_inversions_and_resumes_after_a_kill(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    proc = run_cli([*ARGS, "--out", str(clean)])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    recs = records(clean)
    assert len(recs) == 16 and {r.status for r in recs} == {"ok"}  # 4 configurations x 4 samples
    # two step counts, each inverted once per sample; the second self_replace value reuses it
    assert sum(int(r.extras.get("inversion_cached", 0)) for r in recs) == 8
    assert "inversions shared between configurations (this and earlier launches): 8" in out
    board = json.loads((clean / "leaderboard.json").read_text())
    assert len(board["editors"]) == 4 and all(e["editor"] == "ddim_p2p" for e in board["editors"].values())
    assert "Pareto front" in out and "★" in out and "inv. reused" in out

    # timed fairly: each configuration with its own inversion, under the same names
    own = tmp_path / "own"
    proc = run_cli([*ARGS, "--no-share-inversions", "--out", str(own)])
    out_own, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out_own
    assert sum(int(r.extras.get("inversion_cached", 0)) for r in records(own)) == 0
    own_board = json.loads((own / "leaderboard.json").read_text())["editors"]
    assert set(own_board) == set(board["editors"]) and all(not e["config"]["share_inversion"] for e in own_board.values())

    proc = run_cli([*ARGS, "--out", str(killed)])
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(records(killed)) >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(records(killed))
    assert 6 <= partial < 16
    proc = run_cli([*ARGS, "--out", str(killed)])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    resumed = records(killed)
    keys = [(r.editor, r.sample_id) for r in resumed]
    assert len(keys) == len(set(keys)) == 16  # nothing lost, nothing twice
    a = json.loads((killed / "leaderboard.json").read_text())["editors"]
    for name, ed in board["editors"].items():
        assert a[name]["n_ok"] == 4
        assert a[name]["metrics"]["mse_unedit_part"]["mean"] == pytest.approx(ed["metrics"]["mse_unedit_part"]["mean"],
                                                                              abs=1e-6)
