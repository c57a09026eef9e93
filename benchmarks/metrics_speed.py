"""Time the PIE-Bench metric suite per 512x512 sample: toy backbone, and real-size architectures
(DINO ViT-B/8, SqueezeNet LPIPS at full size, open_clip ViT-L/14) with random weights, since real
weights cannot be downloaded here. Prints seconds per sample for each metric and the suite.

Then the metrics over sets (``--sets``, ``--sets-only``): seconds per 100 images for each, split into the
per-image feature pass (what the harness caches, the sources once for all editors) and the statistic with
its 200-resample bootstrap. The toy Inception-v3 and ResNet-50 are the real architectures at real size
(random weights), so their times are the real models' on this CPU; the diversity scores run on 25 samples
x 4 seeds = 100 images.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metrics_speed.py [--samples 4] [--skip-real] [--sets]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PIE_BENCH_CACHE", str(Path(__file__).resolve().parent.parent / ".cache" / "pie_bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from metrics.base import MetricBatch  # noqa: E402
from metrics.registry import PROTOCOL_METRICS, build_metrics, get_metric_class  # noqa: E402


def make_batch(n: int, seed: int = 0) -> MetricBatch:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:512, :512]
    srcs, eds, masks = [], [], []
    for i in range(n):
        base = (np.stack([np.sin(xx / (17 + i)), np.cos(yy / 23), np.sin((xx + yy) / 31)], -1) * 100 + 128)
        src = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
        mask = ((yy - 256) / 150) ** 2 + ((xx - 250) / 180) ** 2 <= 1
        ed = src.copy()
        ed[mask] = 255 - ed[mask]
        ed = np.clip(ed.astype(np.int16) + rng.integers(-4, 5, ed.shape), 0, 255).astype(np.uint8)
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
        srcs.append(src), eds.append(ed), masks.append(mask)
    return MetricBatch.from_arrays(srcs, eds, masks, ["a photo of a cake"] * n, ["a photo of a red cake"] * n)


def real_size_random_metrics(device: str) -> list:
    """The protocol metrics with the real architectures and sizes, random weights, built in memory."""
    import open_clip

    from metrics.clip_score import ClipScorer
    from metrics.lpips_metric import build_lpips, toy_trunk_file
    from metrics.structure import VITB8, DinoViT

    out = []
    for name in PROTOCOL_METRICS:
        m = get_metric_class(name)()
        m.backbone, m.device = "real-size random", torch.device(device)
        out.append(m)
    torch.manual_seed(0)
    dino = DinoViT(**VITB8).eval().requires_grad_(False).to(device)
    lp = build_lpips("squeeze", toy_trunk_file("squeeze")).to(device)  # SqueezeNet is its real size already
    clip, _, preprocess = open_clip.create_model_and_transforms("ViT-L-14", pretrained=None, device=device,
                                                               force_quick_gelu=True)
    scorer = ClipScorer(clip, preprocess, open_clip.get_tokenizer("ViT-L-14"), device)
    for m in out:
        if m.name == "structure_distance":
            m.model = dino
        elif m.name == "lpips_unedit_part":
            m.model, m.resolution = lp, None
        elif m.name.startswith("clip_"):
            m.scorer = scorer
    return out


def time_suite(metrics: list, batch: MetricBatch, repeats: int) -> dict[str, float]:
    for m in metrics:  # warm-up: lazy init, allocator, first-call kernels
        m.compute(batch)
    n = batch.source.shape[0]
    per = {}
    for m in metrics:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            m.compute(batch)
            best = min(best, time.perf_counter() - t0)
        per[m.name] = best / n
    return per


def report(title: str, per: dict[str, float]) -> None:
    print(f"\n{title}")
    for k, v in per.items():
        print(f"  {k:42s} {v * 1000:9.1f} ms/sample")
    print(f"  {'suite total':42s} {sum(per.values()) * 1000:9.1f} ms/sample")


def time_set_metrics(n: int = 100, seeds: int = 4) -> None:
    """Seconds per ``n`` 512x512 images for every built-in set metric (features + statistic/bootstrap)."""
    from metrics.registry import SEED_METRICS, SET_METRICS
    from metrics.sets import SeedMetric, bootstrap
    from pie_bench.run import set_scores

    batch = make_batch(n)
    edited = batch.edited.mul(255).round().to(torch.uint8)
    reference = batch.source.mul(255).round().to(torch.uint8)
    print(f"\nmetrics over sets, {n} edited 512x512 images (+ {n} references where the metric has one), toy weights "
          "= real-size architectures")
    print(f"  {'metric':26s} {'features s':>11s} {'statistic+CI s':>15s} {'total s/100 img':>16s}")
    done_features: dict[str, tuple] = {}
    for name in list(SET_METRICS) + list(SEED_METRICS):
        if name.endswith("_target"):
            continue  # the same cost as its _source twin
        (m,) = build_metrics([name], "toy")
        t0 = time.perf_counter()
        if isinstance(m, SeedMetric):
            per_sample = [m.pairwise(edited[i:i + seeds]) for i in range(0, n, seeds)]
            feats = time.perf_counter() - t0
            t1 = time.perf_counter()
            bootstrap(m, np.asarray(per_sample), None)
        else:
            key = m.feature_cache_key()
            shared = key in done_features
            if not shared:  # the harness computes one feature pass per image for every metric sharing it
                fe = np.concatenate([m.features(edited[i:i + set_scores.CHUNK]) for i in range(0, n, set_scores.CHUNK)])
                fr = np.concatenate([m.features(reference[i:i + set_scores.CHUNK])
                                     for i in range(0, n, set_scores.CHUNK)])
                done_features[key] = ((time.perf_counter() - t0) / 2, fe, fr)  # per n images (two passes)
            feats, fe, fr = done_features[key]
            t1 = time.perf_counter()
            bootstrap(m, fe, fr if m.reference else None)
        stat = time.perf_counter() - t1
        scale = 100 / n
        note = " (features shared with the metric above)" if not isinstance(m, SeedMetric) and shared else ""
        print(f"  {name:26s} {feats * scale:11.2f} {stat * scale:15.2f} {(feats + stat) * scale:16.2f}{note}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=4, help="samples per compute() call (batch across samples)")
    p.add_argument("--real-samples", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--sets", action="store_true", help="also time the metrics over sets (100 images each)")
    p.add_argument("--sets-only", action="store_true")
    p.add_argument("--set-images", type=int, default=100)
    args = p.parse_args()
    if args.sets_only:
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
        time_set_metrics(args.set_images)
        return
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, 512x512 samples")

    t0 = time.perf_counter()
    toy = build_metrics(PROTOCOL_METRICS, "toy", args.device)
    print(f"toy suite load: {time.perf_counter() - t0:.2f} s (once per run)")
    batch = make_batch(args.samples)
    toy_per = time_suite(toy, batch, args.repeats)
    report(f"toy backbone, batch of {args.samples}", toy_per)
    one = time_suite(toy, make_batch(1), args.repeats)
    report("toy backbone, one sample per call (how runner.score_sample calls it today)", one)

    if not args.skip_real:
        t0 = time.perf_counter()
        real = real_size_random_metrics(args.device)
        print(f"\nreal-size random models built in {time.perf_counter() - t0:.1f} s")
        real_per = time_suite(real, make_batch(args.real_samples), max(1, args.repeats - 1))
        report(f"real-size architectures (random weights), batch of {args.real_samples}", real_per)
        print(f"\nratio real-size / toy suite: {sum(real_per.values()) / sum(toy_per.values()):.0f}x")
    if args.sets:
        time_set_metrics(args.set_images)


if __name__ == "__main__":
    main()
