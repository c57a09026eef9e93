"""What the report writes to disk, and under which file names."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pie_bench.run.results import atomic_write_bytes


def write_file(path: Path, data: bytes) -> None:
    """Atomic write, world-readable: a report is meant to be served or shared (mkstemp makes 0600)."""
    atomic_write_bytes(path, data, fsync=False)
    os.chmod(path, 0o644)


def safe_name(text: str) -> str:
    """File name for an id or editor name; a hash suffix keeps ids that sanitise alike apart."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).lstrip(".") or "_"
    return safe if safe == text else f"{safe}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
