"""Shared by the property-based input tests: one seed and one example budget for all of them, a count of
the cases actually generated (printed at the end of the run), and the checks every property shares.

CI runs each test at its ``examples(n)`` budget with seed 21; ``PIE_BENCH_FUZZ_SCALE=K`` multiplies the
budgets and ``PIE_BENCH_FUZZ_SEED`` picks another seed (``benchmarks/soak.py --fuzz-scale``). The example
database is off, so a run depends on the seed alone."""
from __future__ import annotations

import os
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, seed, settings

SEED = int(os.environ.get("PIE_BENCH_FUZZ_SEED", "21"))
SCALE = max(1, int(os.environ.get("PIE_BENCH_FUZZ_SCALE", "1")))
CASES: Counter = Counter()  # test name -> cases run


def fuzz(n: int):
    """``@fuzz(300)``: at most ``n`` x SCALE generated cases from the fixed seed, no deadline (CPU time
    on a shared 2-core machine varies), no example database."""
    def wrap(fn):
        fn = settings(max_examples=n * SCALE, deadline=None, database=None, derandomize=False,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                             HealthCheck.function_scoped_fixture])(fn)
        return seed(SEED)(fn)
    return wrap


def count(name: str) -> None:
    CASES[name] += 1



def assert_one_line(exc: BaseException, *names: str) -> None:
    """A user-facing error: one line, naming the thing at fault (one of ``names``) and a fix after it."""
    msg = str(exc)
    assert "\n" not in msg and "\r" not in msg, repr(msg)
    assert any(n in msg for n in names), f"{msg!r} names none of {names}"
    # the fix: a clause after "; ", or the expected form ("expected an integer, got 'x'", "e.g. ...")
    assert "; " in msg or "expected " in msg or "e.g. " in msg, f"{msg!r} gives no fix"
    assert "Traceback" not in msg


# -- "never a path outside the data root opened" -----------------------------------------------------
# An audit hook sees every open() the interpreter makes; while a sandbox is watched, each file opened
# under it must lie under its allowed root. Audit hooks cannot be removed, so one is added, once.
_WATCH: list = []


def _audit(event: str, args) -> None:
    if event != "open" or not _WATCH:
        return
    path = args[0]
    if not isinstance(path, (str, bytes, os.PathLike)):
        return  # a file descriptor
    try:
        text = os.fsdecode(path)
    except (TypeError, ValueError):
        return
    sandbox, allowed, seen = _WATCH[-1]
    full = os.path.abspath(text)
    if full.startswith(sandbox + os.sep) and not (full == allowed or full.startswith(allowed + os.sep)):
        seen.append(full)


sys.addaudithook(_audit)


@contextmanager
def opens_only_under(sandbox: Path, allowed: Path):
    """Collect every file opened under ``sandbox`` but outside ``allowed``; the caller asserts it is empty."""
    seen: list[str] = []
    _WATCH.append((os.path.abspath(sandbox), os.path.abspath(allowed), seen))
    try:
        yield seen
    finally:
        _WATCH.pop()
