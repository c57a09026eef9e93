"""Runs survive faults, kills and full disks: fault-injection editors, --fail-fast, exit codes, the
output-folder lock (a real holder process, then SIGKILLed), SIGKILL part-way then resume, and ENOSPC while
writing records."""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli as cli_module
from metrics.registry import build_metrics
from pie_bench.datasets.pie import load_dataset
from pie_bench.core.errors import ResultsError
from pie_bench.run.lock import HOLDER_NAME, FolderLock, lock_is_free
from pie_bench.run.results import decode_float, read_records
from pie_bench.run.run_folder import RunFolder
from pie_bench.run.runner import BenchOptions, any_failed, run_bench
from tests import fault_editors

REPO = Path(__file__).resolve().parent.parent
METRICS = ["psnr_unedit_part", "mse_unedit_part"]


@pytest.fixture
def faults(monkeypatch):
    fault_editors.register(monkeypatch)


@pytest.fixture(scope="module")
def ds4():
    return load_dataset("smoke", limit=4)


@pytest.fixture(scope="module")
def metrics():
    return build_metrics(METRICS)


def comparable(board: dict) -> dict:
    """A leaderboard without what legitimately differs between two runs of the same command."""
    drop_top = {"created_at", "git", "packages", "device", "command", "run", "processes_in_records"}
    out = {k: v for k, v in board.items() if k not in drop_top}
    eds = {}
    for name, e in board["editors"].items():
        e = {k: v for k, v in e.items() if k not in ("latency", "latency_per_rank", "devices", "ranks")}
        e["per_category"] = {c: {k: v for k, v in pc.items() if k != "latency"} for c, pc in e["per_category"].items()}
        eds[name] = e
    out["editors"] = eds
    return out


def test_injected_faults_are_failed_excluded_and_counted(faults, ds4, metrics, tmp_path):
    bad = ds4.samples[1].id
    editors = ["raise_on", "nan_on", "black_on", "oom_on"]
    opts = BenchOptions(editors=editors, editor_args={e: {"fail_on": bad} for e in editors})
    board = run_bench(ds4, opts, metrics, tmp_path / "run")
    expected = {"raise_on": "RuntimeError: injected failure", "nan_on": "non-finite pixel values",
                "black_on": "all-black image", "oom_on": "OutOfMemoryError: CUDA out of memory"}
    recs = read_records(RunFolder(tmp_path / "run").shard_paths())
    for name, needle in expected.items():
        e = board["editors"][name]
        assert (e["n"], e["n_ok"], e["n_failed"]) == (4, 3, 1)
        assert e["failures"][0]["sample_id"] == bad and needle in e["failures"][0]["error"]
        failed = [r for r in recs if r.editor == name and r.status == "failed"]
        assert len(failed) == 1 and failed[0].metrics == {} and failed[0].image is None
        assert "\n" not in failed[0].error
        # the mean is over the 3 ok samples alone (a failure scored 0 would drag MSE/PSNR down)
        ok_mse = [r.metric("mse_unedit_part") for r in recs if r.editor == name and r.status == "ok"]
        assert e["metrics"]["mse_unedit_part"]["n"] == 3
        assert decode_float(e["metrics"]["mse_unedit_part"]["mean"]) == pytest.approx(sum(ok_mse) / 3)
    assert "--retry-failed" in board["editors"]["oom_on"]["failures"][0]["error"]
    assert board["n_failed"] == 4 and any_failed(board)
    assert not (tmp_path / "run" / "black_on" / f"{bad}.png").exists()

    # --retry-failed redoes only the failed samples; with the fault gone they now succeed
    opts2 = BenchOptions(editors=["raise_on"], editor_args={"raise_on": {"fail_on": bad}}, retry_failed=True)
    again = run_bench(ds4, opts2, metrics, tmp_path / "run")
    assert again["editors"]["raise_on"]["n_failed"] == 1  # same config: the fault is still injected


def _bench(runner, *args):
    return runner.invoke(cli_module.cli, ["bench", "--data", "smoke", "--metrics", ",".join(METRICS), "--no-progress", "--no-report",
                                          *args], catch_exceptions=False)


def test_exit_code_and_fail_fast(faults, ds4, tmp_path):
    runner = CliRunner()
    bad = ds4.samples[1].id
    ok = _bench(runner, "--editors", "identity", "--limit", "4", "--out", str(tmp_path / "ok"))
    assert ok.exit_code == 0, ok.output
    failed = _bench(runner, "--editors", "raise_on", "--editor-arg", f"raise_on.fail_on={bad}", "--limit", "4",
                    "--out", str(tmp_path / "failed"))
    assert failed.exit_code == 1, failed.output  # the run finished, but a sample failed
    assert len(read_records([tmp_path / "failed" / "samples.jsonl"])) == 4
    ff = _bench(runner, "--editors", "raise_on,identity", "--editor-arg", f"raise_on.fail_on={bad}", "--limit", "4",
                "--fail-fast", "--out", str(tmp_path / "ff"))
    assert ff.exit_code == 2
    assert f"raise_on failed on sample {bad}" in ff.output and "--fail-fast" in ff.output
    recs = read_records([tmp_path / "ff" / "samples.jsonl"])
    assert [r.sample_id for r in recs] == [s.id for s in ds4.samples[:2]]  # stopped at the failure
    assert lock_is_free(tmp_path / "ff") and not (tmp_path / "ff" / HOLDER_NAME).exists()  # released on the way out


HOLD_LOCK = """
import sys, time
from pie_bench.run.lock import FolderLock
lock = FolderLock(sys.argv[1], "python hold.py --out x").acquire()  # kept: a dropped lock is released
print("held", flush=True)
time.sleep(600)
"""


def test_folder_lock_refuses_a_live_holder_and_frees_on_sigkill(tmp_path, caplog):
    """The kernel lock: a live holder is named in the refusal; SIGKILLed, it holds nothing, and the next
    run takes the folder at once and says the last one ended without releasing."""
    root = tmp_path / "out"
    root.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root)], cwd=REPO, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == b"held"
        assert not lock_is_free(root)
        with pytest.raises(ResultsError) as err:
            FolderLock(root).acquire()
        msg = str(err.value)
        assert "\n" not in msg and f"another run (pid {holder.pid} on {socket.gethostname()}" in msg
        assert "python hold.py --out x" in msg and "wait for it to finish or use another --out" in msg
        # a holder on another node of a shared filesystem: named as such
        info = json.loads((root / HOLDER_NAME).read_text())
        (root / HOLDER_NAME).write_text(json.dumps({**info, "host": "another-node"}))
        with pytest.raises(ResultsError, match="on another-node.*its host holds the lock until that process ends"):
            FolderLock(root).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        holder.kill()
        holder.wait()
    assert lock_is_free(root) and (root / HOLDER_NAME).exists()  # the kernel let go; the side file stayed
    with caplog.at_level(logging.WARNING, logger="pie_bench"):
        with FolderLock(root, "rerun") as lock:
            assert json.loads((root / HOLDER_NAME).read_text()) == lock.info and not lock_is_free(root)
    assert f"pid {holder.pid} on another-node" in caplog.text and "ended without releasing" in caplog.text
    assert lock_is_free(root) and not (root / HOLDER_NAME).exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pie_bench"):
        FolderLock(root).acquire().release()  # a clean release leaves nothing to report
    assert "ended without releasing" not in caplog.text


def test_disk_full_while_writing_records(ds4, metrics, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_write = os.write
    calls = {"n": 0}

    def full_after_two(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("samples.jsonl"):
            calls["n"] += 1
            if calls["n"] > 2:
                real_write(fd, bytes(data)[:17])  # a short write, then the device is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_after_two)
    with pytest.raises(ResultsError) as err:
        run_bench(ds4, BenchOptions(editors=["identity"]), metrics, out)
    msg = str(err.value)
    assert "\n" not in msg and "samples.jsonl" in msg and "No space left on device" in msg
    assert f"sample {ds4.samples[2].id}" in msg and "free disk space and rerun" in msg
    data = (out / "samples.jsonl").read_bytes()
    assert data.endswith(b"\n") and len(read_records([out / "samples.jsonl"])) == 2  # half line rolled back
    assert lock_is_free(out) and not (out / HOLDER_NAME).exists()
    monkeypatch.setattr(os, "write", real_write)
    board = run_bench(ds4, BenchOptions(editors=["identity"]), metrics, out)
    recs = read_records([out / "samples.jsonl"])
    assert board["editors"]["identity"]["n_ok"] == 4 and len({r.key for r in recs}) == len(recs) == 4


def test_sigkill_part_way_then_resume_equals_uninterrupted_run(faults, ds4, metrics, tmp_path, caplog):
    out = tmp_path / "killed"
    markers = tmp_path / "markers"
    args = ["--editors", "identity,slow", "--editor-arg", "slow.delay=0.05", "--limit", "6", "--out", str(out)]
    env = {**fault_editors.plugin_env(tmp_path, REPO), "PIE_BENCH_TEST_MARKERS": str(markers),
           "PIE_BENCH_TEST_HANG_AT": "3"}  # killed while editing its 3rd slow sample
    proc = subprocess.Popen([sys.executable, "cli.py", "bench", "--data", "smoke", "--metrics", ",".join(METRICS), "--no-progress",
                             "--no-report", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if markers.exists() and len(markers.read_text().split()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        # a second run on the same folder while the first is alive is refused
        with pytest.raises(ResultsError, match=f"another run \\(pid {proc.pid}"):
            run_bench(load_dataset("smoke", limit=6), BenchOptions(editors=["identity"]), metrics, out)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    shard = out / "samples.jsonl"
    lines = shard.read_bytes().split(b"\n")[:-1]
    before = [json.loads(x) for x in lines]
    assert len(before) == 6 + 2 and (out / HOLDER_NAME).exists() and lock_is_free(out)
    # the kill landed mid-write of the last record: leave half of it, as a torn line
    torn = before[-1]
    shard.write_bytes(b"\n".join(lines[:-1]) + b"\n" + lines[-1][: len(lines[-1]) // 2])

    with caplog.at_level(logging.WARNING, logger="pie_bench"):
        rerun = _bench(CliRunner(), *args)
    assert rerun.exit_code == 0, rerun.output
    assert "ended without releasing" in caplog.text and f"pid {proc.pid}" in caplog.text
    recs = read_records([shard])
    keys = [r.key for r in recs]
    assert len(keys) == len(set(keys)) == 12  # nothing twice, nothing missing
    assert shard.read_bytes().count(b"\n") == 12
    redone = [r for r in recs if (r.editor, r.sample_id) == (torn["editor"], torn["sample_id"])]
    assert len(redone) == 1 and redone[0].created_at >= torn["created_at"]

    clean = run_bench(load_dataset("smoke", limit=6), BenchOptions(editors=["identity", "slow"],
                                                                   editor_args={"slow": {"delay": "0.05"}}),
                      metrics, tmp_path / "clean")
    resumed = json.loads((out / "leaderboard.json").read_text())
    assert comparable(resumed) == comparable(clean)
    assert not math.isnan(decode_float(clean["editors"]["slow"]["metrics"]["psnr_unedit_part"]["mean"]))
