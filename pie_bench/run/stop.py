"""Graceful stop: SIGTERM (a preempted node, ``kill``) and SIGINT (Ctrl-C) end a run at the next sample
boundary instead of wherever the signal lands.

The first signal only sets a flag, which the runner reads before each sample: the sample (or batch) in
flight is finished and recorded, nothing new starts, rank 0 merges the shards and writes the leaderboard
marked ``partial``, the lock is released, and the CLI exits 128 + the signal (143 for SIGTERM, 130 for
SIGINT). A second signal exits at once: the kernel drops the lock, and a record torn by that exit is
redone on resume.

Under a launcher every process of a terminal's foreground group gets the Ctrl-C and torchrun forwards
it to its workers a moment later, so there a repeat within ``LAUNCHER_REPEAT_S`` is the same request,
not a second one. Each rank that is signalled also leaves ``.pie_bench.stop`` in the run folder, so a
signal that reached one rank alone (``kill`` of one pid) still stops every rank at its next sample, and
rank 0 still merges.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Optional

STOP_NAME = ".pie_bench.stop"
SIGNALS = (signal.SIGTERM, signal.SIGINT)
LAUNCHER_REPEAT_S = 1.0


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class RunStopped(Exception):
    """A run ended early by a signal, after recording what was done. Not a HarnessError: the CLI exits
    ``exit_code`` (128 + the signal), as a process killed by that signal would, not 2."""

    def __init__(self, signum: int, message: str, board: Optional[dict] = None):
        super().__init__(message)
        self.signum, self.board = signum, board
        self.exit_code = 128 + signum


class StopRequest:
    """``with StopRequest(folder, launched): ... if stop.requested(): ...`` - the handlers are installed
    for the body (main thread only: Python allows no other) and the previous ones restored after it."""

    def __init__(self, stop_file: Optional[Path] = None, launched: bool = False):
        self.stop_file = Path(stop_file) if stop_file else None
        self.launched = launched
        self.signum: Optional[int] = None
        self._first_at = 0.0
        self._delivered = False  # a signal reached this process (not just the other ranks' stop file)
        self._previous: dict[int, object] = {}

    # -- handlers ------------------------------------------------------------------------------------
    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if not self._delivered:
            self._delivered, self._first_at = True, time.monotonic()
            self.signum = self.signum or signum
            self.announce()
            # os.write, not logging: a handler may run inside a logging call that holds its lock
            os.write(2, f"{signal_name(signum)}: finishing the sample in flight, then writing a partial "
                        "leaderboard and exiting; send it again to exit at once\n".encode())
            return
        if self.launched and time.monotonic() - self._first_at < LAUNCHER_REPEAT_S:
            return  # the launcher forwarding the same Ctrl-C
        os.write(2, f"{signal_name(signum)} again: exiting at once; rerun the same command to resume\n".encode())
        os._exit(128 + signum)

    # -- the runner's side ---------------------------------------------------------------------------
    def clear_stale(self) -> None:
        """Rank 0, holding the lock: a stop file left by a run killed after its stop request is no request."""
        if self.stop_file is not None:
            try:
                self.stop_file.unlink()
            except OSError:
                pass

    def announce(self) -> None:
        """Tell the other ranks through the run folder (only under a launcher)."""
        if self.launched and self.signum is not None and self.stop_file is not None:
            try:
                self.stop_file.write_text(str(self.signum))
            except OSError:
                pass  # the launcher's forwarding still reaches them

    def requested(self) -> bool:
        if self.signum is None and self.launched and self.stop_file is not None and self.stop_file.exists():
            try:
                self.signum = int(self.stop_file.read_text().strip() or signal.SIGTERM)
            except (OSError, ValueError):
                self.signum = int(signal.SIGTERM)
        return self.signum is not None
