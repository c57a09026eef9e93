"""``bench --processes N``: the command re-runs itself as N local ranks; the records and the leaderboard
equal one process's, the ranks print once, a SIGTERM to the launching process stops every rank at a sample
boundary and the launch exits as that signal would; ``auto`` picks one process per core on a CPU only."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from metrics.registry import build_metrics
from pie_bench.core.errors import ConfigError
from pie_bench.datasets.pie import load_dataset
from pie_bench.run import spawn
from pie_bench.run.lock import lock_is_free
from pie_bench.run.run_folder import RunFolder
from pie_bench.run.runner import BenchOptions, run_bench
from tests import fault_editors
from tests.test_distributed import EDITORS, METRICS, REPO, board_metrics, per_sample


def test_process_count_rules(monkeypatch):
    monkeypatch.delenv("PIE_BENCH_PROCESSES", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(spawn, "usable_cores", lambda: 2)
    assert spawn.process_count("auto", "cpu") == 2
    monkeypatch.setattr(spawn, "usable_cores", lambda: 64)
    assert spawn.process_count("auto", "cpu") == spawn.AUTO_MAX
    assert spawn.process_count("auto", "cuda") == 1 and spawn.process_count("auto", "cuda:1") == 1
    assert spawn.process_count("3", "cuda") == 3  # asked for explicitly
    monkeypatch.setenv("PIE_BENCH_PROCESSES", "1")
    assert spawn.process_count("auto", "cpu") == 1  # the environment overrides auto ...
    assert spawn.process_count("2", "cpu") == 2  # ... but not an explicit count
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert spawn.process_count("2", "cpu") == 1  # a rank never launches again
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ConfigError, match="--processes"):
            spawn.parse_processes(bad)


def test_argv_and_exit_status_helpers():
    assert spawn.strip_processes(["cli.py", "bench", "--processes", "2", "--limit", "3", "--processes=4"]) == \
        ["cli.py", "bench", "--limit", "3"]
    assert spawn.exit_code([0, 0]) == 0 and spawn.exit_code([143, 143]) == 143
    assert spawn.exit_code([0, 1]) == 1 and spawn.exit_code([2, 1]) == 2


def _env(tmp_path):
    env = fault_editors.plugin_env(tmp_path, REPO)
    env.pop("PIE_BENCH_PROCESSES", None)
    return env


def test_two_local_processes_equal_one(tmp_path, monkeypatch):
    fault_editors.register(monkeypatch)
    two = tmp_path / "two"
    cmd = [sys.executable, "cli.py", "bench", "--data", "smoke", "--editors", ",".join(EDITORS), "--metrics",
           ",".join(METRICS), "--limit", "4", "--no-progress", "--no-report", "--out", str(two), "--processes", "2"]
    res = subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("leaderboard:") == 1  # rank 0 alone prints
    board2 = json.loads((two / "leaderboard.json").read_text())
    assert board2["processes"] == 2 and board2["editors"]["jitter"]["ranks"] == [0, 1]
    assert "--processes" not in board2["command"]  # the ranks ran the command without it
    assert lock_is_free(two)
    one = tmp_path / "one"
    board1 = run_bench(load_dataset("smoke", limit=4), BenchOptions(editors=EDITORS), build_metrics(METRICS), one)
    assert per_sample(two) == per_sample(one)
    assert board_metrics(board2) == board_metrics(board1)


def test_sigterm_to_the_launcher_stops_every_rank(tmp_path):
    out, markers = tmp_path / "two", tmp_path / "markers"
    cmd = [sys.executable, "cli.py", "bench", "--data", "smoke", "--metrics", ",".join(METRICS), "--no-progress",
           "--no-report", "--out", str(out), "--editors", "slow", "--editor-arg", "slow.delay=0.4", "--limit", "10",
           "--processes", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**_env(tmp_path), "PIE_BENCH_TEST_MARKERS": str(markers)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while len({line.split(":")[1] for line in (markers.read_text().split() if markers.exists() else [])}) < 2:
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)  # the launcher alone: it passes the signal to its ranks
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert err.count("stopped by SIGTERM") == 1, err[-3000:]  # rank 0 alone reports
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["partial"] is True and board["stopped_by"] == "SIGTERM" and board["processes"] == 2
    recs = RunFolder(out).records()
    assert {r.rank for r in recs} == {0, 1} and board["editors"]["slow"]["n"] == len(recs) < 10
    assert lock_is_free(out)
