"""Soak: a long run killed over and over must end exactly where an uninterrupted run ends.

One ShapesEdit folder of ``--samples`` samples, fast editors (identity, blank, oracle, seeded jitter) and a
fault editor (``flaky``: raises, returns NaN or black, or raises CUDA OOM on a seeded 5 % of samples). The
same ``bench`` command runs once uninterrupted (the reference) and once soaked: launched again and again,
alternating 1 process and 2 (torchrun), each launch SIGKILLed - its whole process group, as a preempted
node dies - at a seeded random moment, one launch stopped with SIGTERM instead, then one launch left
to finish. At the end every record and the leaderboard must equal the reference's: the same metrics,
the same failures, 0 records lost, 0 duplicated.

    python benchmarks/soak.py --samples 300 --kills 10 --seed 21 --out results/bench/soak.json

``--fuzz-scale K`` also runs the property-based input tests with K times their CI example counts.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402  (accelerate's dependency)

from pie_bench.run.lock import HOLDER_NAME, lock_is_free  # noqa: E402
from pie_bench.run.results import read_records  # noqa: E402
from pie_bench.run.run_folder import RunFolder  # noqa: E402
from pie_bench.run.stop import STOP_NAME  # noqa: E402
from tests import fault_editors  # noqa: E402

EDITORS = "identity,blank,oracle,jitter,flaky"
METRICS = "psnr_unedit_part,mse_unedit_part,ssim_unedit_part,gt_psnr"
# per-launch moments, seconds after the launch: 1 process starts in ~3 s, torchrun's 2 in ~8 s on 2 cores
KILL_WINDOW = {1: (0.5, 9.0), 2: (1.0, 15.0)}


def bench_cmd(data: Path, out: Path, world: int, seed: int) -> list[str]:
    args = ["cli.py", "bench", "--data", str(data), "--editors", EDITORS, "--metrics", METRICS,
            "--editor-arg", f"flaky.fault_seed={seed}", "--no-progress", "--no-report", "--out", str(out)]
    if world == 1:  # one process: not the default's one rank per core (bench --processes auto)
        return [sys.executable, *args, "--processes", "1"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world), *args]


def count_lines(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in out.glob("samples*.jsonl"))


def launch(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    fh = open(log, "ab")
    fh.write(f"\n$ {' '.join(cmd)}\n".encode())
    fh.flush()
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launch and every process under it at once, as a preempted node dies, and wait until
    all are gone. torchrun starts each rank in a session of its own, so a process-group kill would leave
    the ranks running as orphans."""
    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    _, alive = psutil.wait_procs(procs, timeout=30)
    if alive:
        raise RuntimeError(f"still alive 30 s after SIGKILL: {[p.pid for p in alive]}")


def per_sample(out: Path) -> dict:
    """(editor, sample) -> what must not depend on kills or process counts (PNG bytes included)."""
    table = {}
    for r in RunFolder(out).records():
        png = hashlib.sha256((out / r.image).read_bytes()).hexdigest() if r.image else None
        table[(r.editor, r.sample_id)] = (r.status, r.error, r.config_hash, r.seed, r.edit_type, r.metrics, png)
    return table


def comparable(board: dict) -> dict:
    """The leaderboard without what legitimately differs between launches (times, hosts, process counts)."""
    drop = {"created_at", "git", "packages", "device", "command", "run", "processes", "processes_in_records"}
    out = {k: v for k, v in board.items() if k not in drop}
    out["editors"] = {
        name: {**{k: v for k, v in e.items() if k not in ("latency", "latency_per_rank", "devices", "ranks")},
               "per_category": {c: {k: v for k, v in pc.items() if k != "latency"}
                                for c, pc in e["per_category"].items()}}
        for name, e in board["editors"].items()}
    return out


def soak(data: Path, work: Path, kills: int, seed: int, env: dict, log: Path) -> dict:
    rng = random.Random(seed)
    out = work / "soak"
    n_launches = kills + 1  # every kill, plus the SIGTERM launch
    term_at = rng.choice([i for i in range(n_launches) if i % 2 == 1])  # a 2-process launch
    launches, t_start = [], time.perf_counter()
    for i in range(n_launches + 1):  # the last one runs to the end
        world = 1 if i % 2 == 0 else 2
        before = count_lines(out)
        t0 = time.perf_counter()
        proc = launch(bench_cmd(data, out, world, seed), env, log)
        entry = {"launch": i, "processes": world, "records_before": before}
        if i == n_launches:
            entry.update(signal="none (ran to the end)", rc=proc.wait())
        elif i == term_at:  # once the run is writing records: a stop must find something to finish
            while count_lines(out) == before and proc.poll() is None:
                time.sleep(0.05)
            delay = rng.uniform(0.5, 3.0)
            time.sleep(delay)
            assert proc.poll() is None, f"launch {i} ended before its SIGTERM; use more --samples"
            ranks = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(signal.SIGTERM)  # to the launcher, which forwards it to every rank
            rc = proc.wait(timeout=120)
            _, alive = psutil.wait_procs(ranks, timeout=60)
            assert not alive, f"ranks {[p.pid for p in alive]} outlived the SIGTERM"
            board = json.loads((out / "leaderboard.json").read_text())
            text = log.read_text(errors="replace")
            entry.update(signal="SIGTERM", after_first_record_s=round(delay, 2), rc=rc,
                         partial=board["partial"], stopped_by=board["stopped_by"],
                         rank0_reported_stop=text.count("stopped by SIGTERM") - sum(
                             e.get("rank0_reported_stop", 0) for e in launches),
                         merged_records=sum(e["n"] for e in board["editors"].values()),
                         lock_free=lock_is_free(out), holder_left=(out / HOLDER_NAME).exists(),
                         stop_file_left=(out / STOP_NAME).exists())
            assert board["partial"] and board["stopped_by"] == "SIGTERM", entry
            assert entry["merged_records"] == len(RunFolder(out).records()), entry
            assert entry["lock_free"] and not entry["holder_left"] and not entry["stop_file_left"], entry
        else:
            delay = rng.uniform(*KILL_WINDOW[world])
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
            assert proc.poll() is None, f"launch {i} finished before its kill at {delay:.1f} s; use more --samples"
            kill_tree(proc)
            entry.update(signal="SIGKILL", at_s=round(delay, 2), lock_free=lock_is_free(out))
            assert entry["lock_free"], entry  # the kernel dropped it with the process
        entry.update(records_after=count_lines(out), wall_s=round(time.perf_counter() - t0, 1))
        launches.append(entry)
        print(f"  launch {i}: {world} process(es), {entry['signal']}, records {before} -> {entry['records_after']}",
              flush=True)
    return {"out": out, "launches": launches, "wall_s": time.perf_counter() - t_start}


def run_fuzz(scale: int, seed: int, env: dict) -> dict:
    """The property-based input tests at ``scale`` times their CI example counts."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz_inputs.py",
                          "tests/test_fuzz_results.py"], cwd=REPO, capture_output=True, text=True,
                         env={**env, "PIE_BENCH_FUZZ_SCALE": str(scale), "PIE_BENCH_FUZZ_SEED": str(seed)})
    found = re.search(r"fuzz: (\d+) generated cases \(seed (\d+)", res.stdout)
    return {"scale": scale, "seed": seed, "cases": int(found.group(1)) if found else None,
            "passed": res.returncode == 0, "wall_s": round(time.perf_counter() - t0, 1),
            "tail": "" if res.returncode == 0 else res.stdout[-2000:]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--kills", type=int, default=10, help="SIGKILLed launches (one SIGTERM launch comes on top)")
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--fuzz-scale", type=int, default=0, help="also run the fuzz tests at K x their CI examples")
    ap.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="Write the figures as JSON here")
    args = ap.parse_args(argv)
    from pie_bench.datasets.shapes import write_pie

    t_all = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="pie_bench_soak_"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "launches.log"
    env = {**fault_editors.plugin_env(work, REPO), "PIE_BENCH_DIST_TIMEOUT_S": "300"}
    data = write_pie(work / "data", n=args.samples, seed=args.seed)
    print(f"soak: {args.samples} samples x {EDITORS} under {work}", flush=True)

    t0 = time.perf_counter()
    ref = subprocess.run(bench_cmd(data, work / "reference", 1, args.seed), cwd=REPO, env=env, capture_output=True)
    ref_s = time.perf_counter() - t0
    assert ref.returncode in (0, 1), ref.stderr[-3000:]  # 1: the flaky editor's failures, recorded
    print(f"  reference (uninterrupted, 1 process): {ref_s:.0f} s", flush=True)

    result = soak(data, work, args.kills, args.seed, env, log)
    out, launches = result["out"], result["launches"]
    reference, soaked = per_sample(work / "reference"), per_sample(out)
    lines = [(r.editor, r.sample_id) for r in read_records(RunFolder(out).shard_paths())]
    counts = Counter(lines)
    expected = set(reference)
    board_ref = json.loads((work / "reference" / "leaderboard.json").read_text())
    board = json.loads((out / "leaderboard.json").read_text())
    figures = {
        "command": "python benchmarks/soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "samples": args.samples, "editors": EDITORS.split(","), "metrics": METRICS.split(","), "seed": args.seed,
        "kills_sigkill": sum(e["signal"] == "SIGKILL" for e in launches),
        "stops_sigterm": sum(e["signal"] == "SIGTERM" for e in launches),
        "launches": len(launches), "processes_alternated": [e["processes"] for e in launches],
        "records_expected": len(expected), "records_compared": len(expected & set(soaked)),
        "records_lost": len(expected - set(counts)), "records_duplicated": sum(c - 1 for c in counts.values()),
        "records_unexpected": len(set(soaked) - expected),
        "records_differing": sum(reference[k] != soaked.get(k) for k in expected),
        "failures_reference": board_ref["n_failed"], "failures_soaked": board["n_failed"],
        "leaderboard_equal": comparable(board) == comparable(board_ref), "partial_at_end": board["partial"],
        "leftover_temp_files": len(list(out.rglob("*.tmp"))),
        "wall_s": {"reference": round(ref_s, 1), "soak": round(result["wall_s"], 1)},
        "per_launch": launches,
    }
    if args.fuzz_scale:
        figures["fuzz"] = run_fuzz(args.fuzz_scale, args.seed, env)
    figures["wall_s"]["total"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps({k: v for k, v in figures.items() if k != "per_launch"}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
    return figures


if __name__ == "__main__":
    f = main()
    ok = (f["records_lost"] == f["records_duplicated"] == f["records_differing"] == f["records_unexpected"] == 0
          and f["leaderboard_equal"] and not f["partial_at_end"] and f.get("fuzz", {}).get("passed", True))
    sys.exit(0 if ok else 1)
