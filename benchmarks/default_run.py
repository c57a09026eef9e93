"""Wall time of the embedded default (``python cli.py bench --editors all``) and what each editor adds to it.

Runs the command as a user would (fresh output folder, warm caches: a first, unmeasured ``--limit 1`` run
builds every cache), times it end to end, then reads each editor's share from its records: per rank, an
editor's span runs from its first record to the next editor's first record (the last editor's to the
leaderboard's write), so a span holds the editor's edits, their scoring and saving, and the next editor's
model load; the run's span is the slowest rank's. ``created_at`` has one-second resolution: each span is
good to about +-1 s.

    python benchmarks/default_run.py                       # results/bench/default-run.json
    python benchmarks/default_run.py --processes 1         # the same in one process
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pie_bench.run.results import read_records  # noqa: E402
from pie_bench.run.run_folder import RunFolder  # noqa: E402


def editor_spans(folder: Path) -> dict[str, float]:
    """Seconds each editor held the run (max over ranks), in run order."""
    recs = read_records(RunFolder(folder).shard_paths())
    end = datetime.fromtimestamp((folder / "leaderboard.json").stat().st_mtime).astimezone()
    spans: dict[str, float] = {}
    for rank in sorted({r.rank for r in recs}):
        firsts: dict[str, datetime] = {}
        for r in recs:
            if r.rank == rank and r.editor not in firsts:
                firsts[r.editor] = datetime.fromisoformat(r.created_at)
        names = list(firsts)
        for i, name in enumerate(names):
            stop = firsts[names[i + 1]] if i + 1 < len(names) else end
            spans[name] = max(spans.get(name, 0.0), (stop - firsts[name]).total_seconds())
    return spans


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", default="auto")
    p.add_argument("--editors", default="all")
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "default-run.json"))
    p.add_argument("--keep", default=None, help="Keep the measured run's folder here (e.g. to copy its leaderboard).")
    args = p.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k != "PIE_BENCH_PROCESSES"}
    base = [sys.executable, str(ROOT / "cli.py"), "bench", "--editors", args.editors, "--processes", args.processes,
            "--no-progress"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(base + ["--limit", "1", "--no-report", "--out", f"{tmp}/warm"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        t0 = time.perf_counter()
        run = Path(args.keep) if args.keep else Path(tmp) / "run"
        subprocess.run(base + ["--out", str(run)], check=True, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        spans = editor_spans(run)
        board = json.loads((run / "leaderboard.json").read_text())
    out = {"command": "python cli.py bench --editors " + args.editors + " --processes " + args.processes,
           "wall_s": round(wall, 1), "processes": board["processes"], "samples": board["dataset"]["n"],
           "editor_span_s": {k: round(v, 1) for k, v in spans.items()},
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                       "load_avg_1min_at_end": round(os.getloadavg()[0], 2)},
           "note": "spans from one-second created_at stamps: +-1 s each; a span includes the next editor's load"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
