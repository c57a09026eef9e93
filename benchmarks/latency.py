"""Latency of every editor: the harness's fast path against a reference-style implementation of the same
algorithm (``benchmarks/reference``), side by side in one invocation, same steps, sample and seed.

For each editor it builds both, checks that they give the same edited latent (the tolerance is 1e-3
when both run in fp32; with --dtype bf16/fp16 the difference is reported, not judged), then times
them and prints seconds per image, the ratio, UNet evaluations per image (counted by a hook on the
UNet, so both sides are counted the same way), the FLOP floor of the algorithm (unit costs U, E, D
counted with ``torch.utils.flop_counter.FlopCounterMode`` on this backbone, multiplied by the minimal
pass counts of ``../shared/reference/editors.md`` §7) and the fraction of the device's peak that the
fast path achieves against that floor. The harness's own per-image overhead (data loading, metrics,
PNG + JSONL writes) is measured separately and reported as a fraction of editor time.

    python benchmarks/latency.py --device cpu --backbone toy                        # results/bench/cpu-toy.json
    python benchmarks/latency.py --device cuda --dtype bf16 --backbone sd-random    # real-size SD1.x, 512²
    python benchmarks/latency.py --backbone toy-flux --editors flowedit,rf_inversion --steps 28   # FLUX toy

The flow editors (``flowedit``, ``rf_inversion``, ``rf_solver_edit``, ``fireflow``) run on ``toy`` (the SD3
toy) or ``toy-flux``; their references (``benchmarks/reference/flow.py``, ``rf_solver_edit.py``) are the
loops as the authors' code runs them, and "UNet" counts their transformer passes. FlowEdit keeps its
family's T and n_max whatever ``--steps`` says.

``--backbone sd-random`` builds the SD1.x architecture (UNet 860M, VAE, CLIP-L text encoder; the IP2P
8-channel and iCD w-embedding variants; random rank-64 iCD adapters) with random weights, in memory:
timing needs no weights. Peak FLOP/s: 989 TFLOP/s on CUDA (H100 dense bf16), measured with a matmul on
the CPU. Editors that cannot be imported or loaded are reported as unavailable.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.editor_bench import bench_editor  # noqa: E402
from benchmarks.overhead import harness_overhead  # noqa: E402
from benchmarks.sd_random import register_sd_random, sd_random_icd_loras  # noqa: E402
from benchmarks.timing import peak_flops  # noqa: E402

EDITORS = ("ddim_p2p", "nti_p2p", "npi_p2p", "ip2p", "pix2pix_zero", "icd", "direct_inversion_p2p", "masactrl",
           "direct_inversion_masactrl", "pnp", "direct_inversion_pnp", "ledits_pp", "flowedit", "rf_inversion",
           "rf_solver_edit", "fireflow", "flux_kontext", "qwen_image_edit")
VARIANT = {"ip2p": "ip2p", "icd": "icd"}
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 for our editors (default: bf16 on CUDA, fp32 "
                                                 "on CPU); references always run fp32")
    p.add_argument("--backbone", default="toy", help="toy | sd-random (real-size SD1.x, random weights, 512²)")
    p.add_argument("--editors", default=",".join(EDITORS))
    p.add_argument("--steps", type=int, default=50, help="sampling steps (iCD keeps its 4+4 schedule)")
    p.add_argument("--nti-inner-steps", type=int, default=None)
    p.add_argument("--samples", type=int, default=1, help="smoke-set images timed per repeat")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1, help="also time editors with edit_batch at this batch size")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--no-count-flops", dest="count_flops", action="store_false",
                   help="skip counting the FLOPs of one whole edit per implementation")
    p.add_argument("--no-overhead", dest="overhead", action="store_false",
                   help="skip measuring the harness overhead (data loading, metrics, writes)")
    p.add_argument("--icd-lora-source", default=None)
    p.add_argument("--compile", default="", metavar="MODE",
                   help="torch.compile mode for the editors that offer it (icd, ip2p), e.g. reduce-overhead "
                        "(CUDA graphs); compilation happens in the warm-up, outside the timings")
    p.add_argument("--out", default=None, help="JSON path (default results/bench/<device>-<backbone>.json)")
    args = p.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device)
    args.dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    if args.dtype not in DTYPES:
        p.error(f"--dtype {args.dtype}: expected fp32, bf16 or fp16")
    dtype = DTYPES[args.dtype]
    names = [n.strip() for n in args.editors.split(",") if n.strip()]
    from editors.backbone import quiet_hf_progress

    quiet_hf_progress()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 reference as the original code runs by default
    t_setup = time.perf_counter()
    if args.backbone == "sd-random":
        variants = sorted({VARIANT.get(n, "sd") for n in names})
        register_sd_random(variants, device, [dtype, torch.float32])
        if "icd" in names and not args.icd_lora_source:
            args.icd_lora_source = sd_random_icd_loras(device)
    from pie_bench.datasets.pie import load_dataset

    ds = load_dataset("smoke")
    samples = [s for s in ds.samples if s.instruction and s.blended_words][: args.samples] or ds.samples[: args.samples]
    peak, peak_note = peak_flops(device, dtype)
    report = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "dtype": args.dtype, "reference_dtype": "fp32", "backbone": args.backbone, "steps": args.steps,
              "samples": [s.id for s in samples], "repeats": args.repeats, "seed": args.seed,
              "torch": torch.__version__, "peak_flops": peak, "peak_note": peak_note,
              "command": "python benchmarks/latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "editors": {}}
    try:
        import diffusers

        report["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    report["setup_s"] = time.perf_counter() - t_setup
    report["harness_overhead"] = harness_overhead(device) if args.overhead else None
    ov = report["harness_overhead"]["total_s"] if args.overhead else 0.0

    hdr = f"{'editor':<13} {'ours s/img':>10} {'ref s/img':>10} {'ratio':>6} {'UNet ev ours/ref':>17} " \
          f"{'floor TF':>9} {'floor s':>8} {'achieved':>8} {'overhead':>8} {'check':>10}"
    print(f"device {report['device_name']} ({device}), ours {args.dtype} vs reference fp32, backbone {args.backbone}, "
          f"{args.steps} steps, peak {peak_note}")
    print(hdr)
    for name in names:
        r = bench_editor(name, args, device, dtype, samples, peak)
        report["editors"][name] = r
        if r["status"] != "ok":
            print(f"{name:<13} {r['status']}: {r['reason']}")
            continue
        r["harness_overhead_fraction"] = ov / r["ours_s_per_image"] if args.overhead else None
        ev = r["unet_evals_per_image"]
        c = r["check"]
        check = ("ok" if c["passed"] else "MISMATCH") if c["passed"] is not None else f"d={c['max_abs_latent_diff']:.1e}"
        f = r["flops"]
        print(f"{name:<13} {r['ours_s_per_image']:>10.3f} {r['reference_s_per_image']:>10.3f} {r['ratio']:>5.2f}x "
              f"{ev['ours']:>8}/{ev['reference']:<8} {f['floor'] / 1e12:>9.4f} {f['floor_s_at_peak']:>8.4f} "
              f"{f['achieved_fraction_of_peak']:>7.1%} {ov / r['ours_s_per_image']:>7.1%} {check:>10}")
        if "ours_batched" in r:
            b = r["ours_batched"]
            print(f"{'':<13} batch {b['batch_size']}: {b['s_per_image']:.3f} s/img ({b['ratio_vs_reference']:.2f}x)")
    h = report["harness_overhead"] or {"data_loading_s": 0, "metrics_s": 0, "writes_s": 0, "metrics_used": ["skipped"]}
    print(f"harness overhead per image: data {h['data_loading_s'] * 1e3:.1f} ms, metrics {h['metrics_s'] * 1e3:.1f} ms "
          f"({', '.join(h['metrics_used']) or 'none available'}), writes {h['writes_s'] * 1e3:.1f} ms")
    out = Path(args.out) if args.out else ROOT / "results" / "bench" / f"{device.type}-{args.backbone}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    bad = [n for n, r in report["editors"].items() if r.get("status") == "error"
           or (r.get("check") or {}).get("passed") is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
