"""Shared test fixtures. Toy weights are cached under .cache/ (git-ignored) so repeated runs are fast."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
os.environ.setdefault("PIE_BENCH_CACHE", str(REPO / ".cache" / "pie_bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite starts CLI subprocesses (torchrun with 2 ranks among them) beside this process: with one
# OpenMP pool per process sized to all cores, the pools spin against each other and runs here got up
# to 100x slower. One thread each keeps every process's speed predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# For the same reason `bench` runs in the process that calls it (its default, `--processes auto`, would
# start one rank per core); tests/test_spawn.py runs the multi-process launch on purpose.
os.environ.setdefault("PIE_BENCH_PROCESSES", "1")


@pytest.fixture(scope="session")
def piebench_mini() -> Path:
    """The real PIE-Bench annotations in ../shared/piebench-mini (present in CI beside the clone)."""
    path = SHARED / "piebench-mini"
    if not (path / "mapping_file.json").exists():
        pytest.skip(f"real PIE-Bench sample data not found at {path} (CI places ../shared beside the clone)")
    return path


@pytest.fixture(scope="session")
def smoke():
    from pie_bench.datasets.pie import load_dataset

    return load_dataset("smoke")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the tests marked slow (the small soak); or set PIE_BENCH_SLOW=1")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("PIE_BENCH_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow (a small soak): run with --runslow or PIE_BENCH_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    import sys

    support = sys.modules.get("tests.fuzz_support")
    if support is not None and support.CASES:
        per_test = ", ".join(f"{k} {v}" for k, v in sorted(support.CASES.items()))
        terminalreporter.write_line(f"fuzz: {sum(support.CASES.values())} generated cases (seed {support.SEED}, "
                                    f"scale {support.SCALE}): {per_test}")
