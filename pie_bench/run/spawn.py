"""``bench --processes N``: one command that runs as N local data-parallel processes.

On a CPU the editors and metrics of the embedded default are small models whose operators barely
profit from a second thread (a 32-pixel UNet at batch 40, 512-pixel SSIM convolutions): two processes
of one thread each get nearly twice the throughput of one process of two threads. Rather than a second
code path, the command re-runs itself as the ranks of a ``torchrun``-style launch on this machine
(``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` 127.0.0.1 / a free ``MASTER_PORT``), so
sharding, per-rank JSONL files, the merge, resuming with any process count and stopping are the ones
``pie_bench.run.distributed`` already has and tests.

``auto`` (the default): on a CPU device and outside a launcher, one process per usable core, at most
``AUTO_MAX``, each with ``cores // N`` threads; otherwise 1. ``PIE_BENCH_PROCESSES`` overrides ``auto``.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Optional, Sequence

from pie_bench.core.errors import ConfigError

ENV = "PIE_BENCH_PROCESSES"
AUTO_MAX = 4


def env_world_size() -> int:
    for key in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if os.environ.get(key):
            try:
                return int(os.environ[key])
            except ValueError:
                raise ConfigError(f"environment variable {key}={os.environ[key]!r} is not an integer; "
                                  "launch with accelerate launch or torchrun") from None
    return 1


def is_main_process() -> bool:
    """True on rank 0 (or without a launcher); safe to call before the process group exists."""
    for key in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key]) == 0
    return True


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_processes(spec: str) -> Optional[int]:
    """``auto`` -> None, else a whole number >= 1 (one-line error otherwise)."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        return None
    if not spec.isdigit() or int(spec) < 1:
        raise ConfigError(f"--processes {spec!r}: give a whole number >= 1 or 'auto'")
    return int(spec)


def process_count(spec: str, device: str) -> int:
    """How many local processes this bench should run as (1: run in this process)."""
    if env_world_size() > 1:  # already a rank of accelerate/torchrun/our own launch
        return 1
    n = parse_processes(spec)
    if n is None:
        n = parse_processes(os.environ.get(ENV, "auto"))
    if n is not None:
        return n
    if not str(device).startswith("cpu"):  # GPUs: one process per device is accelerate's job
        return 1
    return max(1, min(usable_cores(), AUTO_MAX))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_processes(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--processes X`` / ``--processes=X`` (the ranks must not launch again; the recorded
    command stays the one the user typed, minus the process count, which the leaderboard records itself)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--processes":
            skip = True
        elif not a.startswith("--processes="):
            out.append(a)
    return out


def exit_code(codes: Sequence[int]) -> int:
    """Rank 0's exit status when it failed or was stopped, else the first other rank's failure."""
    if codes[0] != 0:
        return codes[0]
    return next((c for c in codes[1:] if c != 0), 0)


def run_as_processes(n: int, argv: Sequence[str], threads: Optional[int] = None) -> int:
    """Run ``python argv`` as ranks 0..n-1 of one local launch; return the launch's exit status.

    Ctrl-C reaches every rank from the terminal (one process group), so this process ignores it and waits;
    a SIGTERM sent to this process alone is passed to every rank, which stop at the next sample boundary
    as under torchrun."""
    threads = threads or max(1, usable_cores() // n)
    base = {**os.environ, "WORLD_SIZE": str(n), "LOCAL_WORLD_SIZE": str(n), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, *strip_processes(argv)]
    procs: list[subprocess.Popen] = []

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    # handlers first: a SIGTERM that arrives while the ranks start must still reach the ones started
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, forward)
    try:
        for r in range(n):
            procs.append(subprocess.Popen(cmd, env={**base, "RANK": str(r), "LOCAL_RANK": str(r), "GROUP_RANK": "0"}))
        # a rank killed by a signal reports -signum; a shell would say 128 + signum
        return exit_code([c if c >= 0 else 128 - c for c in (p.wait() for p in procs)])
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
