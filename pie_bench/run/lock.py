"""One writer per output folder.

The lock is a small JSON file created with O_EXCL (atomic on local filesystems and NFSv3+), holding
the owner's host, pid and process start time. A lock whose owner is gone - no such pid, a zombie,
or a pid since reused by another process - is stale: the next run takes it over and says so. A lock
from another host cannot be checked, so the message says how to clear it by hand.
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

from pie_bench.core.errors import ResultsError
from pie_bench.core.provenance import now_iso

log = logging.getLogger("pie_bench")

LOCK_NAME = ".pie_bench.lock"
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def _proc_start(pid: int) -> Optional[str]:
    """Kernel start time of ``pid`` (clock ticks since boot), to tell a reused pid from the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may contain spaces and parentheses
    return fields[19] if len(fields) > 19 else None


def _proc_state(pid: int) -> Optional[str]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()[0]


def owner_alive(info: dict) -> bool:
    """Whether the process recorded in a lock still runs. Unknown hosts count as alive."""
    if info.get("host") != socket.gethostname():
        return True
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if _proc_state(pid) == "Z":  # killed but not yet reaped: it will never write again
        return False
    start = _proc_start(pid)
    return not (start and info.get("start") and start != info["start"])


class FolderLock:
    """``with FolderLock(path): ...`` - raises ResultsError if a live run holds the folder."""

    def __init__(self, root: Path, command: str = "", note: Optional[Callable[[str], None]] = None):
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.note = note or (lambda text: log.warning(text))
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "start": _proc_start(os.getpid()),
                     "since": now_iso(), "command": command}
        self.held = False

    def _describe(self, info: dict) -> str:
        return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('since', '?')}"

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return 0.0

    def _read(self) -> Optional[dict]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            info = json.loads(text)
            return info if isinstance(info, dict) else {}
        except ValueError:
            return {}  # empty or torn: its writer died between create and write

    def acquire(self) -> "FolderLock":
        payload = json.dumps(self.info).encode()
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder is None:
                    continue  # released between our open and read: try again
                if not holder and self._age() < 5.0:
                    time.sleep(0.1)  # just created, its owner is still writing it
                    continue
                if holder and owner_alive(holder):
                    remote = holder.get("host") != self.info["host"]
                    fix = (f"if that run is dead, delete {self.path}" if remote
                           else "wait for it to finish or use another --out")
                    raise ResultsError(f"{self.root}: another run ({self._describe(holder)}) is writing this "
                                       f"output folder; {fix}") from None
                self._take_over(holder)
                continue
            except OSError as exc:
                if exc.errno in NOT_WRITABLE:
                    raise ResultsError(f"{self.root}: output folder is not writable ({exc.strerror}); "
                                       "choose a writable --out or fix its permissions") from None
                if exc.errno == errno.ENOSPC:
                    raise ResultsError(f"{self.root}: no space left on device; free space and rerun") from None
                raise
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.held = True
            return self
        raise ResultsError(f"{self.root}: could not take the output-folder lock {self.path}; "
                           "another run keeps replacing it - use another --out")

    def _take_over(self, holder: dict) -> None:
        """Move the stale lock aside, then check it is the one judged stale (not a fresh lock another
        run created meanwhile); a fresh one is put back."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text() or "{}")
        except ValueError:
            moved = {}
        if moved != holder:
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        who = self._describe(holder) if holder else "an unreadable lock"
        self.note(f"{self.root}: taking over a stale lock left by a run that is no longer alive ({who}); "
                  "its finished samples are kept and the rest is redone")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._read() == self.info:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
