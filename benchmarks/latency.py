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

``--backbone sd-random`` builds the SD1.x architecture (UNet 860M, VAE, CLIP-L text encoder; the IP2P
8-channel and iCD w-embedding variants; random rank-64 iCD adapters) with random weights, in memory:
timing needs no weights. Peak FLOP/s: 989 TFLOP/s on CUDA (H100 dense bf16), measured with a matmul on
the CPU. Editors that cannot be imported or loaded are reported as unavailable.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

EDITORS = ("ddim_p2p", "nti_p2p", "npi_p2p", "ip2p", "pix2pix_zero", "icd")
STEP_KEY = {"ddim_p2p": "num_ddim_steps", "nti_p2p": "num_ddim_steps", "npi_p2p": "num_ddim_steps",
            "ip2p": "num_inference_steps", "pix2pix_zero": "num_inference_steps"}  # iCD: its 4+4 schedule
VARIANT = {"ip2p": "ip2p", "icd": "icd"}
H100_PEAK = 989e12  # dense bf16/fp16 tensor-core FLOP/s (SXM); the brief's figure for CUDA devices
TOL = 1e-3
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


# ---------------------------------------------------------------------------------------------
# device helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def cpu_matmul_peak(n: int = 1024, reps: int = 5) -> float:
    """Best-of FLOP/s of an fp32 n×n matmul with this process's thread count (the CPU 'peak')."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(timed(torch.device("cpu"), lambda: a @ b)[0] for _ in range(reps))
    return 2 * n ** 3 / best


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return H100_PEAK, f"989 TFLOP/s (H100 dense bf16, the reference figure; device: {name})"
    p = cpu_matmul_peak()
    return p, f"{p / 1e9:.1f} GFLOP/s (measured: fp32 1024² matmul, {torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------------------------
# sd-random: the real SD1.x architecture with random weights, registered as a backbone


def sd_random_backbone(variant: str, device: torch.device, dtype: torch.dtype, fp32_source=None):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from editors.backbone import DDIM_KWARGS, Backbone, cache_root, write_clip_tokenizer_files

    if fp32_source is not None:  # same random weights in another dtype
        import copy

        mods = {k: copy.deepcopy(getattr(fp32_source, k)).to(dtype) for k in ("unet", "vae", "text_encoder")}
        tokenizer = fp32_source.tokenizer
    else:
        torch.manual_seed(0)
        with torch.device(device):
            unet = UNet2DConditionModel(
                sample_size=64, in_channels=8 if variant == "ip2p" else 4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                time_cond_proj_dim=512 if variant == "icd" else None)
            vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                                layers_per_block=2, latent_channels=4, sample_size=512)
            text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                                num_attention_heads=12, num_hidden_layers=12,
                                                max_position_embeddings=77, hidden_act="quick_gelu",
                                                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                                                projection_dim=768))
        mods = {"unet": unet, "vae": vae, "text_encoder": text}
        if dtype != torch.float32:
            mods = {k: m.to(dtype) for k, m in mods.items()}
        tok_dir = cache_root() / "sd-random" / "tokenizer"
        if not (tok_dir / "tokenizer_config.json").exists():
            write_clip_tokenizer_files(tok_dir)
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    for m in mods.values():
        m.requires_grad_(False)
        m.eval()
    return Backbone(tokenizer=tokenizer, scheduler=DDIMScheduler(**DDIM_KWARGS), model_id=f"sd-random:{variant}",
                    variant=variant, is_toy=False, device=device, dtype=dtype, resolution=512, **mods)


def register_sd_random(variants, device, dtypes) -> None:
    """Put sd-random backbones into ``editors.backbone``'s cache, so ``--backbone sd-random`` loads them."""
    from editors import backbone as B

    for variant in variants:
        base = None
        for dtype in sorted(set(dtypes), key=lambda d: d != torch.float32):
            bb = sd_random_backbone(variant, device, dtype, fp32_source=base)
            base = base or bb
            for unet_id in (None, B.ICD_TEACHER_UNET):
                B._CACHE[("sd-random", variant, str(device), dtype, unet_id)] = bb


def sd_random_icd_loras(device) -> str:
    """Random rank-64 iCD adapters (the real rank) for the sd-random UNet, as a local adapter folder."""
    from editors.backbone import load_backbone
    from editors.icd import ICDConfig, build_toy_lora_folder

    bb = load_backbone("sd-random", device, torch.float32, variant="icd")
    return str(build_toy_lora_folder(bb.unet, ICDConfig(), rank=64, seed=0).resolve())


# ---------------------------------------------------------------------------------------------
# measurement helpers


@contextmanager
def captured_decode(bb):
    seen = []
    original = bb.decode

    def decode(latents):
        seen.append(latents.detach().float().clone())
        return original(latents)

    bb.decode = decode
    try:
        yield seen
    finally:
        del bb.decode


def backbone_of(ed):
    return getattr(ed, "backbone", None) or getattr(ed, "bb")


def unit_costs(bb) -> dict:
    """FLOPs of one UNet forward (batch 1, full text length), one VAE encode and one decode at this
    backbone's resolution, counted with FlopCounterMode (explicit attention, so attention is counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.reference.common import explicit_attention

    r, f = bb.resolution, bb.vae_scale_factor
    dev, dt = bb.device, bb.dtype
    x = torch.zeros(1, bb.unet.config.in_channels, r // f, r // f, device=dev, dtype=dt)
    ctx = torch.zeros(1, bb.max_length, bb.unet.config.cross_attention_dim, device=dev, dtype=dt)
    kw = {}
    if bb.unet.config.time_cond_proj_dim:
        kw["timestep_cond"] = torch.zeros(1, bb.unet.config.time_cond_proj_dim, device=dev, dtype=dt)
    out = {}
    with torch.no_grad():
        with explicit_attention(bb.unet), FlopCounterMode(display=False) as fc:
            bb.unet(x, 500, encoder_hidden_states=ctx, **kw)
        out["U"] = fc.get_total_flops()
        img = torch.zeros(1, 3, r, r, device=dev, dtype=dt)
        with FlopCounterMode(display=False) as fc:
            bb.vae.encode(img)
        out["E"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            bb.vae.decode(torch.zeros(1, bb.vae.config.latent_channels, r // f, r // f, device=dev, dtype=dt))
        out["D"] = fc.get_total_flops()
    return out


def floor_units(name: str, cfg, extras: dict) -> tuple[float, str]:
    """Minimal UNet forward-equivalents per image (editors.md §7; fwd+bwd without weight gradients =
    2.08 U for NTI, 2.15 U for Pix2Pix-Zero's guidance step)."""
    n = getattr(cfg, STEP_KEY.get(name, ""), 0)
    if name == "ddim_p2p":
        return 5 * n, f"{n} inversion + 4x{n} edit"
    if name == "npi_p2p":
        return 4 * n, f"{n} inversion + 3x{n} edit (∅src = c_src)"
    if name == "nti_p2p":
        k = int(extras.get("nti_iterations", n * getattr(cfg, "inner_steps", 10)))
        return 7 * n + 2.08 * k, f"{n} inversion + 2x{n} eps_c/advance + {k} Adam its x2.08 + 4x{n} edit"
    if name == "ip2p":
        return 3 * n, f"3x{n}"
    if name == "pix2pix_zero":
        return 8.3 * n, f"{n} inversion + {n} reference + {n}x(2x2.15 guided fwd+bwd + 2)"
    if name == "icd":
        k = len(cfg.forward_timesteps)
        m = len(cfg.reverse_timesteps)
        return k + 2 * m, f"{k} forward + 2x{m} reverse"
    raise KeyError(name)


def counted_flops(fn):
    """FLOPs of ``fn`` (forward and backward), or a one-line reason when FlopCounterMode cannot follow it
    (its module hooks clash with ``torch.autograd.grad`` on leaf inputs, as Pix2Pix-Zero's guidance uses)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as fc:
            fn()
    except RuntimeError as exc:
        return f"not counted: {one_line(exc)[:120]}"
    return fc.get_total_flops()


def clear_shared_state() -> None:
    try:
        from editors.inversion import INVERSION_CACHE

        INVERSION_CACHE.clear()  # each timed image pays for its own inversion
    except Exception:
        pass


def run_reference(name: str, ed, sample, seed: int):
    g = torch.Generator().manual_seed(seed)
    if name in ("ddim_p2p", "nti_p2p", "npi_p2p"):
        from benchmarks.reference.p2p import p2p_reference

        return p2p_reference(ed, sample, name.split("_")[0])
    if name == "ip2p":
        from benchmarks.reference.ip2p import ip2p_reference

        return ip2p_reference(ed, sample, g)
    if name == "pix2pix_zero":
        from benchmarks.reference.pix2pix_zero import pix2pix_zero_reference

        return pix2pix_zero_reference(ed, sample, g)
    if name == "icd":
        from benchmarks.reference.icd import icd_reference

        return icd_reference(ed, sample, g)
    raise KeyError(name)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


# ---------------------------------------------------------------------------------------------
# harness overhead


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


# ---------------------------------------------------------------------------------------------
# one editor


def bench_editor(name, args, device, dtype, samples, peak) -> dict:
    from benchmarks.reference.common import count_unet_rows, unets_of
    from editors.registry import get_editor_class

    res = {"editor": name}
    try:
        cls = get_editor_class(name)
    except Exception as exc:
        return {**res, "status": "unavailable", "reason": one_line(exc)}
    overrides = {}
    if name in STEP_KEY and args.steps:
        overrides[STEP_KEY[name]] = args.steps
    if name == "nti_p2p" and args.nti_inner_steps is not None:
        overrides["inner_steps"] = args.nti_inner_steps
    if name == "icd" and args.icd_lora_source:
        overrides["lora_source"] = args.icd_lora_source
    if args.compile and "torch_compile" in {f.name for f in dataclasses.fields(cls.Config)}:
        overrides["torch_compile"] = args.compile  # ours only: the reference stays eager
    try:
        ours = cls(**overrides)
        ours.load(args.backbone, device, dtype)
        ref = cls(**{k: v for k, v in overrides.items() if k != "torch_compile"})
        ref.load(args.backbone, device, torch.float32)
    except Exception as exc:
        return {**res, "status": "unavailable", "reason": one_line(exc)}
    res["config"] = {k: v for k, v in ours.config_dict().items() if isinstance(v, (int, float, str, bool))}
    bb, bb_ref = backbone_of(ours), backbone_of(ref)
    seed = args.seed

    def run_ours(s):
        clear_shared_state()
        with torch.inference_mode(False):
            return ours.edit(s, torch.Generator().manual_seed(seed))

    def run_ref(s):
        with torch.inference_mode(False):
            return run_reference(name, ref, s, seed)

    # check: same edited latent
    try:
        with captured_decode(bb) as seen, count_unet_rows(*unets_of(ours)) as rows:
            out = run_ours(samples[0])
        ours_lat = seen[-1][-1:]
        ours_rows = rows[0]
        r = run_ref(samples[0])
    except ImportError as exc:
        return {**res, "status": "unavailable", "reason": one_line(exc)}
    except Exception as exc:
        return {**res, "status": "error", "reason": one_line(exc), "traceback": traceback.format_exc(limit=4)[-1500:]}
    diff = (ours_lat - r.latents.to(ours_lat)).abs().max().item()
    both_fp32 = dtype == torch.float32
    res["check"] = {"max_abs_latent_diff": diff, "tolerance": TOL if both_fp32 else None,
                    "passed": (diff <= TOL) if both_fp32 else None,
                    "note": "" if both_fp32 else f"ours in {args.dtype}, reference in fp32: reported, not judged"}
    res["unet_evals_per_image"] = {"ours": ours_rows, "reference": r.extras["unet_evals"]}
    res["ours_extras"] = {k: v for k, v in out.extras.items() if isinstance(v, (int, float, str, bool))}

    # time: warm-up, then alternate ours / reference so drifting load affects both alike
    for _ in range(args.warmup):
        run_ours(samples[0])
        run_ref(samples[0])
    t_ours, t_ref = [], []
    for rep in range(args.repeats):
        for s in samples:
            t_ours.append(timed(device, lambda: run_ours(s))[0])
            t_ref.append(timed(device, lambda: run_ref(s))[0])
    s_ours, s_ref = statistics.median(t_ours), statistics.median(t_ref)
    res["ours_s_per_image"] = s_ours
    res["reference_s_per_image"] = s_ref
    res["ratio"] = s_ref / s_ours
    res["timings"] = {"ours": t_ours, "reference": t_ref}

    if args.batch_size > 1 and ours.batches():
        batch = (samples * args.batch_size)[:args.batch_size]

        def run_batch():
            clear_shared_state()
            return ours.edit_batch(batch, [torch.Generator().manual_seed(seed) for _ in batch])

        with torch.inference_mode(False):
            run_batch()
            tb = statistics.median(timed(device, run_batch)[0] for _ in range(args.repeats))
        res["ours_batched"] = {"batch_size": args.batch_size, "s_per_image": tb / args.batch_size,
                               "ratio_vs_reference": s_ref / (tb / args.batch_size)}

    # FLOPs: the algorithm's floor, and what each implementation actually executes
    units = unit_costs(bb)
    n_units, how = floor_units(name, ours.config, out.extras)
    floor = units["E"] + units["D"] + n_units * units["U"]
    res["flops"] = {"U": units["U"], "E": units["E"], "D": units["D"], "floor_unet_units": n_units,
                    "floor_formula": f"E + D + ({how}) U", "floor": floor,
                    "floor_s_at_peak": floor / peak, "achieved_fraction_of_peak": floor / (s_ours * peak)}
    if args.count_flops:
        res["flops"]["counted_ours"] = counted_flops(lambda: run_ours(samples[0]))
        res["flops"]["counted_reference"] = counted_flops(lambda: run_ref(samples[0]))
        res["flops"]["note"] = ("counted: FlopCounterMode over one whole edit (forward and backward); fused SDPA "
                                "kernels without a registered formula (e.g. on the CPU) are not counted")
    res["status"] = "ok"
    del ours, ref
    return res


# ---------------------------------------------------------------------------------------------


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
