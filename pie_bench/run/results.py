"""Typed results schema: per-sample JSONL records and the leaderboard JSON.

Records are appended and flushed as each sample finishes; the leaderboard is derived from
them and written atomically. ``SCHEMA_VERSION`` changes whenever either format changes
incompatibly; readers refuse other versions with a one-line error.
"""
from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from pie_bench.core.errors import ResultsError, shown
from pie_bench.core.sample import edit_type_name

SCHEMA_VERSION = 1  # of the per-sample records and the run manifest (the leaderboard's: run.leaderboard)
STATUSES = ("ok", "failed", "skipped")


# ---------------------------------------------------------------------------------------------
# float encoding: JSON has no NaN/inf. NaN (undefined metric) -> null; +-inf (e.g. PSNR of identical
# images, as torchmetrics computes it) -> "inf"/"-inf", so the two are never confused.


def encode_float(x: Optional[float]):
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def decode_float(x) -> float:
    if x is None:
        return float("nan")
    if isinstance(x, str):
        return float(x)
    return float(x)


# ---------------------------------------------------------------------------------------------
# per-sample records


@dataclass
class SampleRecord:
    sample_id: str
    editor: str
    config_hash: str
    dataset: str
    dataset_sha256: str
    edit_type: int
    status: str  # ok | failed | skipped
    error: Optional[str] = None
    latency_s: Optional[float] = None
    warmup: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)  # encoded floats
    image: Optional[str] = None  # path relative to the run folder
    seed: Optional[int] = None
    rank: int = 0
    world: int = 1  # processes in the run that wrote this record
    device: str = ""
    created_at: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    # which of ``bench --seeds K``'s runs of a stochastic editor (seed = the config's seed + seed_index);
    # 0, the only one without --seeds, is what the per-sample means use
    seed_index: int = 0
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return record_key(self.editor, self.config_hash, self.dataset_sha256, self.sample_id, self.seed_index)

    def metric(self, name: str) -> float:
        return decode_float(self.metrics.get(name))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> "SampleRecord":
        if not isinstance(d, dict):
            raise ResultsError(f"{where}: not a sample record (a JSON {type(d).__name__}); delete that line to redo "
                               "the sample")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultsError(f"{where}: record schema version {shown(version)[:40]} is not {SCHEMA_VERSION}; "
                               "this folder was written by another harness version - use a new --out folder")
        problem = record_problem(d)
        if problem:
            raise ResultsError(f"{where}: not a sample record ({problem}); delete that line to redo the sample")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


_NUMBER = (int, float)
# field -> (accepted types, required); the aggregation and the leaderboard read these without checks
RECORD_FIELDS = {
    "sample_id": (str, True), "editor": (str, True), "config_hash": (str, True), "dataset": (str, True),
    "dataset_sha256": (str, True), "edit_type": (int, True), "status": (str, True),
    "error": ((str, type(None)), False), "latency_s": ((*_NUMBER, type(None)), False), "warmup": (bool, False),
    "metrics": (dict, False), "image": ((str, type(None)), False), "seed": ((int, type(None)), False),
    "rank": (int, False), "world": (int, False), "device": (str, False), "created_at": (str, False),
    "extras": (dict, False), "seed_index": (int, False)}


def record_problem(d: dict) -> str:
    """What makes ``d`` no record this harness wrote ("" when it is one)."""
    for name, (types, required) in RECORD_FIELDS.items():
        if name not in d:
            if required:
                return f"field {name!r} is missing"
            continue
        value = d[name]
        # JSON true/false load as bool, which Python counts as an int: only "warmup" may be one
        if not isinstance(value, types) or (isinstance(value, bool) and name != "warmup"):
            return f"field {name!r} is {type(value).__name__}"
    if d["status"] not in STATUSES:
        return f"status {shown(d['status'])[:40]} is not one of {', '.join(STATUSES)}"
    for name, value in d.get("metrics", {}).items():
        if not (value is None or value in ("inf", "-inf") or (isinstance(value, _NUMBER) and not isinstance(value, bool))):
            return f"metric {shown(name)[:40]} is {shown(value)[:40]}"
    return ""


def record_key(editor: str, config_hash: str, dataset_sha: str, sample_id: str, seed_index: int = 0) -> str:
    key = f"{editor}|{config_hash}|{dataset_sha[:16]}|{sample_id}"
    return key + f"|seed{seed_index}" if seed_index else key  # records before --seeds keep their keys


def read_records(paths: Iterable[Path]) -> list[SampleRecord]:
    """Read JSONL shards. A truncated or corrupt final line (a killed writer) is ignored, so the
    sample it described is simply redone; corruption elsewhere is an error naming the line."""
    out: list[SampleRecord] = []
    for path in paths:
        if not path.exists():
            continue
        lines = path.read_bytes().split(b"\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                is_tail = all(not rest.strip() for rest in lines[i + 1:])
                if is_tail:
                    continue  # torn last write from a killed run: redo that sample
                raise ResultsError(f"{path}:{i + 1}: corrupt record line; delete that line to redo the sample") from None
            out.append(SampleRecord.from_dict(d, f"{path}:{i + 1}"))
    return out


def latest_by_key(records: Iterable[SampleRecord]) -> dict[str, SampleRecord]:
    """One record per key; a later ok record replaces an earlier failed one (retries)."""
    table: dict[str, SampleRecord] = {}
    for r in records:
        prev = table.get(r.key)
        if prev is None or prev.status != "ok" or r.status == "ok":
            table[r.key] = r
    return table


class JsonlWriter:
    """Append-only record writer: one ``write(2)`` per record on an O_APPEND descriptor, fsynced at
    once, so a killed run loses at most the sample in flight. A torn tail line from an earlier kill is
    cut off first. A failed write (disk full) is rolled back to the last whole line and reported as a
    one-line ResultsError; every record before it stays intact."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lines: list[str] = []  # written by this process, for the merge on rank 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._repair_tail()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(self.path, exc) from None

    def _repair_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)

    def write(self, record: SampleRecord) -> None:
        line = record.to_json()
        data = line.encode() + b"\n"
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            os.fsync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, start)  # no half line for the next write to land after
            except OSError:
                pass
            raise write_error(self.path, exc, record.sample_id) from None
        self.lines.append(line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def write_error(path: Path, exc: OSError, sample_id: Optional[str] = None) -> ResultsError:
    """One line for a failed result write; ENOSPC/EDQUOT/EROFS/EACCES name their fix."""
    what = f"could not record sample {sample_id}" if sample_id else "could not write"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space and rerun the same command to resume (finished samples are kept)"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "choose a writable --out or fix its permissions"
    else:
        fix = "check the disk and rerun the same command to resume (finished samples are kept)"
    return ResultsError(f"{path}: {what} ({exc.strerror or exc}); {fix}")


def append_missing_lines(path: Path, lines: list[str]) -> int:
    """Append the lines ``path`` lacks (rank 0 merging a shard written on another node); on a shared
    filesystem they are all present already and nothing is written."""
    path = Path(path)
    have = set()
    if path.exists():
        have = {ln for ln in path.read_text(errors="replace").split("\n") if ln.strip()}
    missing = [ln for ln in lines if ln not in have]
    if missing:
        writer = JsonlWriter(path)
        try:
            for ln in missing:
                writer.write(SampleRecord.from_dict(json.loads(ln), str(path)))
        finally:
            writer.close()
    return len(missing)


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``; the folder is
    fsynced too when ``fsync`` is set, so the rename itself survives a power cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from the rest of the team
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n").encode())


# ---------------------------------------------------------------------------------------------
# aggregation


def metric_stats(values: Iterable[float], higher_is_better: bool) -> dict:
    """Mean over defined values (NaN excluded; the count n is reported), stderr = sd/sqrt(n)."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        return {"mean": None, "stderr": None, "n": 0, "higher_is_better": higher_is_better}
    mean = float(arr.mean()) if np.all(np.isfinite(arr)) else float(np.mean(arr))
    finite = arr[np.isfinite(arr)]
    stderr = float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 and np.isfinite(mean) else 0.0
    return {"mean": encode_float(mean), "stderr": encode_float(stderr), "n": n, "higher_is_better": higher_is_better}


def latency_stats(records: list[SampleRecord]) -> dict:
    timed = [r.latency_s for r in records if r.status == "ok" and not r.warmup and r.latency_s is not None]
    n_warm = sum(1 for r in records if r.status == "ok" and r.warmup)
    if not timed:
        return {"p50": None, "p95": None, "mean": None, "n": 0, "warmup_excluded": n_warm}
    arr = np.asarray(timed)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)), "mean": float(arr.mean()),
            "n": int(arr.size), "warmup_excluded": n_warm}


def _metric_block(records: list[SampleRecord], metric_info: dict) -> dict:
    ok = [r for r in records if r.status == "ok"]
    names = list(metric_info) or sorted({m for r in ok for m in r.metrics})
    return {m: metric_stats((r.metric(m) for r in ok if m in r.metrics),
                            metric_info.get(m, {}).get("higher_is_better", True)) for m in names}


def summarise_editor(records: list[SampleRecord], metric_info: dict) -> dict:
    # one order whatever the shards, launches and process counts that wrote them, so a resumed or
    # multi-process run sums its floats in the same order, and lists the same failures, as one clean run
    records = sorted(records, key=lambda r: (r.edit_type, r.sample_id))
    by_status = {s: sum(1 for r in records if r.status == s) for s in STATUSES}
    per_cat: dict[str, dict] = {}
    for cat in sorted({r.edit_type for r in records}):
        rs = [r for r in records if r.edit_type == cat]
        per_cat[str(cat)] = {"name": edit_type_name(cat), "n_ok": sum(r.status == "ok" for r in rs),
                             "n_failed": sum(r.status == "failed" for r in rs),
                             "metrics": _metric_block(rs, metric_info), "latency": latency_stats(rs)}
    failures = [{"sample_id": r.sample_id, "error": r.error} for r in records if r.status == "failed"]
    per_rank = []
    for rank, world, device in sorted({(r.rank, r.world, r.device) for r in records}):
        rs = [r for r in records if (r.rank, r.world, r.device) == (rank, world, device)]
        per_rank.append({"rank": rank, "processes": world, "device": device, **latency_stats(rs)})
    skipped = [{"sample_id": r.sample_id, "reason": r.error} for r in records if r.status == "skipped"]
    return {"n": len(records), "n_ok": by_status["ok"], "n_failed": by_status["failed"],
            "n_skipped": by_status["skipped"], "metrics": _metric_block(records, metric_info),
            "latency": latency_stats(records), "latency_per_rank": per_rank, "per_category": per_cat,
            "failures": failures[:50], "skipped": skipped[:50],
            "devices": sorted({r.device for r in records if r.device}),
            "ranks": sorted({r.rank for r in records})}
