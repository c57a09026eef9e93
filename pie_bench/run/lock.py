"""One writer per output folder.

The lock is a kernel file lock on ``<out>/.pie_bench.lock`` taken through ``filelock`` (``flock`` on
POSIX, ``LockFileEx`` on Windows). The kernel drops it when the holding process ends, however it ends
(SIGKILL, the OOM killer, a preempted node), so there is no stale lock to judge and nothing to take
over, and two runs started at the same instant race inside the kernel: exactly one wins. The lock file
itself stays in place on POSIX (waiters must share its inode), so whether a folder is free is asked by
trying the lock (``lock_is_free``), never by looking for the file.

Beside it, ``.pie_bench.holder.json`` names the holder (host, pid, start time, command) for the one-line
refusal. It is written once the lock is won and removed on release, so one found by the next holder
names a run that ended without releasing (killed), which that run says as it starts.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Callable, Optional

from filelock import FileLock, Timeout

from pie_bench.core.errors import ResultsError
from pie_bench.core.provenance import now_iso
from pie_bench.run.results import atomic_write_json, write_error

log = logging.getLogger("pie_bench")

LOCK_NAME = ".pie_bench.lock"
HOLDER_NAME = ".pie_bench.holder.json"
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
# the winner writes the holder file a few milliseconds after taking the lock; a loser in that window
# waits this long for it, so the refusal can name who holds the folder
HOLDER_WAIT_S = 1.0


def read_holder(path: Path) -> Optional[dict]:
    """The holder file's content; None when absent, {} when unreadable (torn by a kill mid-write)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe(holder: Optional[dict]) -> str:
    if not holder:
        return "a run that has not named itself yet"
    text = f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('since', '?')}"
    command = " ".join(str(holder.get("command") or "").split())
    return f"{text}: {command[:160]}" if command else text


class FolderLock:
    """``with FolderLock(path): ...`` - raises ResultsError if another run holds the folder."""

    def __init__(self, root: Path, command: str = "", note: Optional[Callable[[str], None]] = None):
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.holder_path = self.root / HOLDER_NAME
        self.note = note or (lambda text: log.warning(text))
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "since": now_iso(), "command": command}
        self._lock: Optional[FileLock] = None
        self.held = False

    def acquire(self) -> "FolderLock":
        if self.held:
            return self
        # thread_local=False: the run may release from another thread than the one that acquired
        # (a signal handler's stack, a launcher's callback); the hold belongs to the process
        self._lock = FileLock(self.path, thread_local=False)
        try:
            self._lock.acquire(blocking=False)
        except Timeout:
            raise ResultsError(self._refusal()) from None
        except OSError as exc:
            if exc.errno in NOT_WRITABLE:
                raise ResultsError(f"{self.root}: output folder is not writable ({exc.strerror}); "
                                   "choose a writable --out or fix its permissions") from None
            raise write_error(self.path, exc) from None
        try:
            left = read_holder(self.holder_path)
            if left is not None:
                self.note(f"{self.root}: the previous run ({describe(left)}) ended without releasing this folder "
                          "(killed?); its finished samples are kept and the rest is redone")
            atomic_write_json(self.holder_path, self.info)
        except OSError as exc:
            self._lock.release()
            if exc.errno in NOT_WRITABLE:
                raise ResultsError(f"{self.root}: output folder is not writable ({exc.strerror}); "
                                   "choose a writable --out or fix its permissions") from None
            raise write_error(self.holder_path, exc) from None
        self.held = True
        return self

    def _refusal(self) -> str:
        deadline = time.monotonic() + HOLDER_WAIT_S
        holder = read_holder(self.holder_path)
        while not holder and time.monotonic() < deadline:
            time.sleep(0.05)
            holder = read_holder(self.holder_path)
        remote = bool(holder) and holder.get("host") != self.info["host"]
        fix = ("wait for it to finish (its host holds the lock until that process ends) or use another --out"
               if remote else "wait for it to finish or use another --out")
        return f"{self.root}: another run ({describe(holder)}) is writing this output folder; {fix}"

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:  # the holder file goes first, so it never names a run that no longer holds the lock
            if read_holder(self.holder_path) == self.info:
                self.holder_path.unlink()
        except OSError:
            pass  # a read-only or full folder: the next holder overwrites it
        finally:
            self._lock.release()

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_is_free(root: Path) -> bool:
    """Whether no process holds ``root``'s lock now (tried, then released at once)."""
    probe = FileLock(Path(root) / LOCK_NAME, thread_local=False)
    try:
        probe.acquire(blocking=False)
    except Timeout:
        return False
    probe.release()
    return True
