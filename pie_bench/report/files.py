"""How the report writes its files (their names follow the run folder's rule, ``core.paths.safe_name``)."""
from __future__ import annotations

import os
from pathlib import Path

from pie_bench.run.results import atomic_write_bytes


def write_file(path: Path, data: bytes) -> None:
    """Atomic write, world-readable: a report is meant to be served or shared (mkstemp makes 0600)."""
    atomic_write_bytes(path, data, fsync=False)
    os.chmod(path, 0o644)
