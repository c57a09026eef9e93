"""Stops and starts with real processes: two runs started at the same instant on one folder (exactly one
runs), SIGTERM -> 143 with a partial leaderboard, the lock released and a resume that completes, SIGINT ->
130, a second Ctrl-C exiting at once, and SIGTERM reaching one rank of a torchrun launch stopping them all."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

import cli as cli_module
from metrics.registry import build_metrics
from pie_bench.datasets.pie import load_dataset
from pie_bench.run.lock import HOLDER_NAME, lock_is_free
from pie_bench.run.results import read_records
from pie_bench.run.run_folder import RunFolder
from pie_bench.run.runner import BenchOptions, run_bench
from pie_bench.run.stop import STOP_NAME
from tests import fault_editors
from tests.test_robust import comparable

REPO = Path(__file__).resolve().parent.parent
METRICS = "psnr_unedit_part,mse_unedit_part"
ARGS = ["--editors", "identity,slow", "--editor-arg", "slow.delay=0.3", "--limit", "6"]

RACE = """
import os, sys, time
from pie_bench.core.errors import ResultsError
from pie_bench.run.lock import FolderLock
root, rounds = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
t0 = float(sys.stdin.readline())  # the same instant for every process, sent once all are ready
for r in range(rounds):
    time.sleep(max(0.0, t0 + 1.5 * r - time.time() - 0.05))
    while time.time() < t0 + 1.5 * r:
        pass  # spin the last 50 ms: every process leaves the barrier within a scheduler tick
    lock = FolderLock(root, f"round {r}")
    try:
        lock.acquire()
    except ResultsError as exc:
        print(r, os.getpid(), "refused", exc, flush=True)
        continue
    print(r, os.getpid(), "held", flush=True)
    time.sleep(0.8)
    lock.release()
"""


@pytest.fixture
def faults(monkeypatch):
    fault_editors.register(monkeypatch)


def bench(out: Path, tmp_path: Path, *args: str, **env) -> subprocess.Popen:
    cmd = [sys.executable, "cli.py", "bench", "--data", "smoke", "--metrics", METRICS, "--no-progress",
           "--no-report", "--out", str(out), *args]
    return subprocess.Popen(cmd, cwd=REPO, env={**fault_editors.plugin_env(tmp_path, REPO), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def started(markers: Path) -> list[tuple[str, int]]:
    if not markers.exists():
        return []
    return [(sid, int(pid)) for sid, pid in (ln.rsplit(":", 1) for ln in markers.read_text().split())]


def wait_for(markers: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while len(started(markers)) < n:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the run never got that far"
        time.sleep(0.05)


def assert_clean_folder(out: Path) -> None:
    """No torn record, no half-written PNG, nothing held: what a clean stop must leave."""
    data = (out / "samples.jsonl").read_bytes()
    assert data.endswith(b"\n")
    recs = read_records([out / "samples.jsonl"])
    assert len(recs) == data.count(b"\n")  # every line a whole record
    for r in recs:
        if r.status == "ok":
            with Image.open(out / r.image) as im:
                im.load()  # a truncated PNG raises here
    assert not list(out.rglob("*.tmp"))
    assert lock_is_free(out) and not (out / HOLDER_NAME).exists() and not (out / STOP_NAME).exists()


def test_runs_started_at_the_same_instant_exactly_one_runs(tmp_path):
    root = tmp_path / "race"
    root.mkdir()
    rounds = 3
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(root), str(rounds)], cwd=REPO, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    assert all(p.stdout.readline().strip() == "ready" for p in procs)
    t0 = time.time() + 0.5
    for p in procs:
        p.stdin.write(f"{t0}\n")
        p.stdin.flush()
    lines = [ln.split(" ", 3) for p in procs for ln in p.communicate(timeout=60)[0].splitlines()]
    assert all(p.returncode == 0 for p in procs)
    for r in range(rounds):
        held = [pid for rnd, pid, what, *_ in lines if rnd == str(r) and what == "held"]
        refused = [rest[0] for rnd, pid, what, *rest in lines if rnd == str(r) and what == "refused"]
        assert len(held) == 1 and len(refused) == 3, lines
        assert all(f"another run (pid {held[0]} on " in m and f"round {r}" in m for m in refused), refused

    # the same through the CLI: two bench commands launched together on one folder
    out = tmp_path / "run"
    args = ["--editors", "identity,slow", "--editor-arg", "slow.delay=0.7", "--limit", "3"]
    a, b = bench(out, tmp_path, *args), bench(out, tmp_path, *args)
    results = {p.pid: (p.wait(timeout=180), p.communicate()) for p in (a, b)}
    codes = sorted(rc for rc, _ in results.values())
    assert codes == [0, 2], results
    winner = next(pid for pid, (rc, _) in results.items() if rc == 0)
    errors = [ln for rc, (_, err) in results.values() if rc == 2 for ln in err.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:") and f"another run (pid {winner} on " in errors[0]
    recs = read_records([out / "samples.jsonl"])
    assert len(recs) == len({r.key for r in recs}) == 6


def test_sigterm_finishes_the_sample_writes_a_partial_board_and_resume_completes(faults, tmp_path, caplog):
    out, markers = tmp_path / "run", tmp_path / "markers"
    proc = bench(out, tmp_path, *ARGS, PIE_BENCH_TEST_MARKERS=str(markers))
    wait_for(markers, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "stopped by SIGTERM" in err and "rerun the same command to resume" in err
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["partial"] is True and board["stopped_by"] == "SIGTERM"
    # the slow sample in flight when the signal came was finished and recorded, and nothing after it began
    slow = [r for r in read_records([out / "samples.jsonl"]) if r.editor == "slow"]
    assert len(slow) == len(started(markers)) == board["editors"]["slow"]["n"] < 6
    assert_clean_folder(out)

    with caplog.at_level(logging.WARNING, logger="pie_bench"):
        rerun = CliRunner().invoke(cli_module.cli, ["bench", "--data", "smoke", "--metrics", METRICS, "--no-progress",
                                                    "--no-report", "--out", str(out), *ARGS], catch_exceptions=False)
    assert rerun.exit_code == 0, rerun.output
    assert "ended without releasing" not in caplog.text  # a clean stop leaves no holder behind
    recs = read_records([out / "samples.jsonl"])
    assert len(recs) == len({r.key for r in recs}) == 12
    resumed = json.loads((out / "leaderboard.json").read_text())
    assert resumed["partial"] is False and resumed["stopped_by"] == ""
    clean = run_bench(load_dataset("smoke", limit=6), BenchOptions(editors=["identity", "slow"],
                                                                   editor_args={"slow": {"delay": "0.3"}}),
                      build_metrics(METRICS.split(",")), tmp_path / "clean")
    assert comparable(resumed) == comparable(clean)


def test_sigint_exits_130_and_a_second_one_exits_at_once(tmp_path):
    out, markers = tmp_path / "run", tmp_path / "markers"
    proc = bench(out, tmp_path, *ARGS, PIE_BENCH_TEST_MARKERS=str(markers))
    wait_for(markers, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "stopped by SIGINT" in err and "Traceback" not in err, err[-3000:]
    assert json.loads((out / "leaderboard.json").read_text())["partial"] is True
    assert_clean_folder(out)

    # a sample that never ends: the first Ctrl-C waits for it, the second exits at once
    hung, markers2 = tmp_path / "hung", tmp_path / "markers2"
    proc = bench(hung, tmp_path, *ARGS, PIE_BENCH_TEST_MARKERS=str(markers2), PIE_BENCH_TEST_HANG_AT="2")
    wait_for(markers2, 2, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.5)
    assert proc.poll() is None  # still finishing the sample in flight
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - t0 < 5, err[-3000:]
    assert "SIGINT again: exiting at once" in err and "Traceback" not in err
    assert lock_is_free(hung)  # the kernel dropped the lock with the process
    assert len(read_records([hung / "samples.jsonl"])) == 6 + 1  # identity's 6 and the first slow sample


def test_sigterm_to_one_torchrun_rank_stops_every_rank_and_rank0_merges(faults, tmp_path):
    out, markers = tmp_path / "two", tmp_path / "markers"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "cli.py", "bench",
           "--data", "smoke", "--metrics", METRICS, "--no-progress", "--no-report", "--out", str(out),
           "--editors", "slow", "--editor-arg", "slow.delay=0.4", "--limit", "10"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**fault_editors.plugin_env(tmp_path, REPO),
                                                "PIE_BENCH_TEST_MARKERS": str(markers)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while len({pid for _, pid in started(markers)}) < 2:  # both ranks are editing
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        one_rank = started(markers)[-1][1]
        os.kill(one_rank, signal.SIGTERM)  # that rank alone: it tells the other through the run folder
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert err.count("stopped by SIGTERM") == 1, err[-3000:]  # rank 0 alone reports
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["partial"] is True and board["stopped_by"] == "SIGTERM" and board["processes"] == 2
    recs = RunFolder(out).records()
    assert board["editors"]["slow"]["n"] == len(recs) < 10  # rank 0 merged both shards
    assert {r.rank for r in recs} == {0, 1}
    assert lock_is_free(out) and not (out / HOLDER_NAME).exists() and not (out / STOP_NAME).exists()
    resumed = run_bench(load_dataset("smoke", limit=10), BenchOptions(editors=["slow"],
                                                                      editor_args={"slow": {"delay": "0.4"}}),
                        build_metrics(METRICS.split(",")), out)
    assert resumed["partial"] is False and resumed["editors"]["slow"]["n_ok"] == 10
    assert len(RunFolder(out).records()) == len(read_records(RunFolder(out).shard_paths())) == 10
