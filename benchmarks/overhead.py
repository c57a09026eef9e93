"""The harness's own per-image cost outside the editor (data loading, protocol metrics, PNG and JSONL
writes), which ``benchmarks/latency.py`` reports as a fraction of editor time."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks.timing import one_line, timed


def harness_overhead(device, n_images: int = 3) -> dict:
    """Per-image seconds the harness spends outside the editor: loading and decoding a sample, scoring it
    with the protocol metrics available offline, writing the PNG and the JSONL record."""
    import numpy as np

    from metrics.registry import PROTOCOL_METRICS, available_metrics, build_metrics
    from pie_bench.datasets.pie import load_dataset
    from pie_bench.run.results import JsonlWriter, SampleRecord
    from pie_bench.run.runner import save_png, score_sample

    out = {}
    t, ds = timed(torch.device("cpu"), lambda: load_dataset("smoke"))  # fresh samples: images not decoded yet
    chosen = ds.samples[:n_images]
    t_img = sum(timed(torch.device("cpu"), lambda s=s: (s.image, s.mask))[0] for s in chosen)
    out["data_loading_s"] = t / len(ds.samples) + t_img / len(chosen)
    names, unavailable = available_metrics(PROTOCOL_METRICS)
    metrics, failed = [], dict(unavailable)
    for n in names:
        try:
            metrics.extend(build_metrics([n], backbone="toy", device=str(device)))
        except Exception as exc:  # weights not cached offline etc.
            failed[n] = one_line(exc)
    edited = [np.ascontiguousarray(s.image[::-1]) for s in chosen]  # any 512² image will do
    score_sample(metrics, chosen[0], edited[0])  # warm-up (model moves, first-call allocations)
    t_m = sum(timed(device, lambda s=s, e=e: score_sample(metrics, s, e))[0] for s, e in zip(chosen, edited))
    out["metrics_s"] = t_m / len(chosen)
    out["metrics_used"] = [m.name for m in metrics]
    out["metrics_unavailable"] = sorted(failed)
    with tempfile.TemporaryDirectory() as tmp:
        writer = JsonlWriter(Path(tmp) / "records.jsonl")
        t_w = 0.0
        for i, (s, e) in enumerate(zip(chosen, edited)):
            rec = SampleRecord(sample_id=s.id, editor="bench", config_hash="0" * 12, dataset="smoke",
                               dataset_sha256="0" * 64, edit_type=s.edit_type, status="ok")
            dt, _ = timed(torch.device("cpu"), lambda: (save_png(Path(tmp) / f"{i}.png", e), writer.write(rec)))
            t_w += dt
        writer.close()
    out["writes_s"] = t_w / len(chosen)
    out["total_s"] = out["data_loading_s"] + out["metrics_s"] + out["writes_s"]
    return out
