"""Data-parallel runs: 2 gloo processes under torchrun give exactly the single-process records and
leaderboard metrics, and a resume may use another process count, 1 -> 2 and 2 -> 1 (the cache is keyed
by sample, not by rank)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metrics.registry import build_metrics
from pie_bench.datasets.pie import load_dataset
from pie_bench.run.distributed import Dist, is_main_process, shard
from pie_bench.core.errors import ResultsError
from pie_bench.run.lock import HOLDER_NAME, lock_is_free
from pie_bench.run.results import read_records
from pie_bench.run.run_folder import RunFolder
from pie_bench.run.runner import BenchOptions, run_bench
from tests import fault_editors

REPO = Path(__file__).resolve().parent.parent
METRICS = ["psnr_unedit_part", "mse_unedit_part"]
EDITORS = ["identity", "jitter"]


def per_sample(folder: Path) -> dict:
    """(editor, sample) -> what must not depend on the process layout."""
    recs = read_records(RunFolder(folder).shard_paths())
    keys = [r.key for r in recs]
    assert len(keys) == len(set(keys)), "duplicate records"
    return {(r.editor, r.sample_id): (r.status, r.config_hash, r.seed, r.edit_type, r.metrics, r.image) for r in recs}


def board_metrics(board: dict) -> dict:
    return {name: {"n": e["n"], "n_ok": e["n_ok"], "metrics": e["metrics"],
                   "per_category": {c: v["metrics"] for c, v in e["per_category"].items()}}
            for name, e in board["editors"].items()}


def test_shard_is_a_deterministic_partition():
    items = list(range(23))
    parts = [shard(items, r, 4) for r in range(4)]
    assert sorted(x for p in parts for x in p) == items
    assert parts == [shard(items, r, 4) for r in range(4)]
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard(items, 0, 1) == items


def test_rank0_merge_appends_only_missing_lines(tmp_path):
    """Across nodes without a shared folder, rank 0 receives each rank's new lines and appends the ones
    its copy lacks; on a shared folder (all present) it writes nothing."""
    from pie_bench.run.results import JsonlWriter, SampleRecord, append_missing_lines

    src = tmp_path / "node1.jsonl"
    w = JsonlWriter(src)
    for sid in ("a", "b", "c"):
        w.write(SampleRecord(sample_id=sid, editor="e", config_hash="h", dataset="d", dataset_sha256="s" * 16,
                             edit_type=0, status="ok", rank=1, world=2))
    w.close()
    lines = w.lines
    assert append_missing_lines(src, lines) == 0 and src.read_text().count("\n") == 3
    dst = tmp_path / "node0" / "samples.rank1.jsonl"
    dst.parent.mkdir()
    dst.write_text(lines[0] + "\n")
    assert append_missing_lines(dst, lines) == 2
    assert [r.sample_id for r in read_records([dst])] == ["a", "b", "c"]


def test_single_process_dist_and_rank_env(monkeypatch):
    d = Dist()
    assert d.on_main(lambda: 5) == 5 and d.gather("x") == ["x"] and d.broadcast(3) == 3
    with pytest.raises(ResultsError, match="boom"):
        d.on_main(lambda: (_ for _ in ()).throw(ResultsError("boom")))
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()


def test_two_gloo_processes_match_single_process_and_resume_across_counts(tmp_path, monkeypatch):
    fault_editors.register(monkeypatch)
    metrics = build_metrics(METRICS)
    ds4 = load_dataset("smoke", limit=4)
    two = tmp_path / "two"
    # an interrupted single-process run got as far as one identity sample: the 2 ranks must split
    # only the remaining work (rank 0 reads the folder and broadcasts what is done)
    run_bench(ds4, BenchOptions(editors=["identity"]), metrics, two, samples=ds4.samples[:1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "cli.py", "bench", "--data", "smoke", "--editors", ",".join(EDITORS), "--metrics", ",".join(METRICS), "--limit", "4",
           "--no-progress", "--no-report", "--out", str(two)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=fault_editors.plugin_env(tmp_path, REPO), capture_output=True,
                         text=True, timeout=240)
    elapsed = time.perf_counter() - t0
    print(f"2-process torchrun bench (2 editors x 4 samples): {elapsed:.1f} s")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("leaderboard:") == 1  # rank 0 alone prints
    assert sorted(p.name for p in two.glob("samples*.jsonl")) == ["samples.jsonl", "samples.rank0.jsonl",
                                                                  "samples.rank1.jsonl"]
    by_rank = [read_records([two / f"samples.rank{k}.jsonl"]) for k in (0, 1)]
    assert [len(r) for r in by_rank] == [4, 3]  # 3 identity + 4 jitter, strided over the ranks
    assert all(r.world == 2 and r.rank == k for k in (0, 1) for r in by_rank[k])
    assert ds4.samples[0].id not in {r.sample_id for r in by_rank[0] + by_rank[1] if r.editor == "identity"}
    board2 = json.loads((two / "leaderboard.json").read_text())
    assert board2["processes"] == 2
    assert board2["editors"]["jitter"]["ranks"] == [0, 1]
    assert [r["rank"] for r in board2["editors"]["jitter"]["latency_per_rank"]] == [0, 1]
    assert all(r["device"].startswith("cpu") for r in board2["editors"]["jitter"]["latency_per_rank"])
    assert lock_is_free(two) and not (two / HOLDER_NAME).exists()

    one = tmp_path / "one"
    board1 = run_bench(ds4, BenchOptions(editors=EDITORS), metrics, one)
    assert board1["processes"] == 1
    assert per_sample(two) == per_sample(one)
    assert board_metrics(board2) == board_metrics(board1)
    # jitter really varies per sample, so a seeding or sharding slip would show
    assert len({v[4]["mse_unedit_part"] for k, v in per_sample(one).items() if k[0] == "jitter"}) == 4

    # resume the 2-process folder with 1 process and more samples: only the new samples run
    ds6 = load_dataset("smoke", limit=6)
    resumed = run_bench(ds6, BenchOptions(editors=EDITORS), metrics, two)
    assert len(read_records([two / "samples.jsonl"])) == 1 + 2 * 2
    fresh = run_bench(ds6, BenchOptions(editors=EDITORS), metrics, tmp_path / "fresh")
    assert per_sample(two) == per_sample(tmp_path / "fresh")
    assert board_metrics(resumed) == board_metrics(fresh)
    assert resumed["processes"] == 1 and resumed["processes_in_records"] == [1, 2]
