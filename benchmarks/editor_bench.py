"""One editor under ``benchmarks/latency.py``: build the harness's fast path and the reference-style
implementation (``benchmarks/reference``), check that they give the same edited latent, count UNet
evaluations, time them alternately, and work out the FLOP floor and the achieved fraction of peak."""
from __future__ import annotations

import dataclasses
import statistics
import traceback
from contextlib import contextmanager

import torch

from benchmarks.flops import STEP_KEY, counted_flops, floor_units, unit_costs
from benchmarks.timing import one_line, timed

TOL = 1e-3


@contextmanager
def captured_decode(bb):
    seen = []
    original = bb.decode

    def decode(latents, *args, **kwargs):  # bb.decode's options (quantize, size) pass through
        seen.append(latents.detach().float().clone())
        return original(latents, *args, **kwargs)

    bb.decode = decode
    try:
        yield seen
    finally:
        del bb.decode


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
    if name == "direct_inversion_p2p":
        from benchmarks.reference.direct_inversion import direct_inversion_p2p_reference

        return direct_inversion_p2p_reference(ed, sample)
    if name in ("masactrl", "direct_inversion_masactrl"):
        from benchmarks.reference.masactrl import masactrl_reference

        return masactrl_reference(ed, sample)
    if name in ("pnp", "direct_inversion_pnp"):
        from benchmarks.reference.pnp import pnp_reference

        return pnp_reference(ed, sample)
    if name == "ledits_pp":
        from benchmarks.reference.ledits_pp import ledits_pp_reference

        return ledits_pp_reference(ed, sample, g)
    if name == "flowedit":
        from benchmarks.reference.flow import flowedit_reference

        return flowedit_reference(ed, sample, g)
    if name == "rf_inversion":
        from benchmarks.reference.flow import rf_inversion_reference

        return rf_inversion_reference(ed, sample, g)
    if name in ("flux_kontext", "qwen_image_edit"):
        from benchmarks.reference.pipeline import pipeline_reference

        return pipeline_reference(ed, sample, g)
    if name in ("rf_solver_edit", "fireflow"):
        from benchmarks.reference.rf_solver_edit import rf_solver_edit_reference

        return rf_solver_edit_reference(ed, sample)
    raise KeyError(name)


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
    bb, bb_ref = ours.backbone, ref.backbone
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
