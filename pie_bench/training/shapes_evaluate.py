"""Acceptance figures for the ShapesEdit models.

    python -m pie_bench.training.shapes_evaluate base --n 200          # prompted colour/shape accuracy of the base model
    python -m pie_bench.training.shapes_evaluate reconstruction --n 30  # DDIM vs null-text inversion (vs iCD) PSNR

Results print as JSON and, with ``--record``, are stored under ``evaluation`` in the models' manifest.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


@torch.no_grad()
def base_accuracy(n: int = 200, seed: int = 0, steps: int = 50, guidance: float = 7.5, batch: int = 50) -> dict:
    """Text-to-image from ``n`` random scene captions; the colour and shape of every object are read
    back analytically (``attributes.prompt_hits``)."""
    from editors.backbone import load_backbone

    from pie_bench.datasets.shapes.attributes import prompt_hits
    from pie_bench.datasets.shapes.scenes import random_scene
    from pie_bench.training.shapes_sampling import generate

    bb = load_backbone("shapes")
    rng = np.random.default_rng([seed, 7777])
    scenes = [random_scene(rng) for _ in range(n)]
    hits = []
    t0 = time.time()
    for i in range(0, n, batch):
        chunk = scenes[i:i + batch]
        images = generate(bb, [s.caption() for s in chunk], seed=seed + i, steps=steps, guidance=guidance)
        hits += [prompt_hits(im, s, ("colour", "shape", "background")) for im, s in zip(images, chunk)]
    colour = np.mean([h["colour"] for h in hits])
    shape = np.mean([h["shape"] for h in hits])
    both = np.mean([h["colour"] and h["shape"] for h in hits])
    background = np.mean([h["background"] for h in hits])
    single = [h for h, s in zip(hits, scenes) if len(s.objects) == 1]
    return {"n": n, "seed": seed, "steps": steps, "guidance": guidance,
            "colour_accuracy": round(100 * float(colour), 1), "shape_accuracy": round(100 * float(shape), 1),
            "colour_and_shape_accuracy": round(100 * float(both), 1),
            "background_accuracy": round(100 * float(background), 1),
            "chance": {"colour_single_object": 16.7, "shape_single_object": 25.0, "background": 25.0},
            "single_object_colour_and_shape_accuracy": round(100 * float(np.mean(
                [h["colour"] and h["shape"] for h in single])), 1) if single else None,
            "seconds": round(time.time() - t0, 1)}


@torch.no_grad()
def reconstruction(n: int = 30, steps: int = 50, guidance: float = 7.5, inner_steps: int = 10) -> dict:
    """Source-image reconstruction on the ``shapes`` set: VAE alone, DDIM inversion + CFG sampling, and
    null-text inversion + CFG sampling (PIE-Bench settings: 50 steps, guidance 7.5, 10 inner steps)."""
    from editors.backbone import load_backbone
    from editors.inversion import DDIMSchedule, ddim_invert, ddim_sample, null_text_inversion
    from pie_bench.datasets.pie import load_dataset

    from pie_bench.datasets.shapes import load_shapes  # noqa: F401  (registers the data source)

    bb = load_backbone("shapes")
    ds = load_dataset("shapes", limit=n)
    icd = None
    from editors.icd import ICDEditor

    if ICDEditor.backbone_unavailable("shapes") is None:
        icd = ICDEditor()
        icd.load("shapes")
    sched = DDIMSchedule(bb.scheduler, steps)
    uncond = bb.encode_prompt([""])
    rows = []
    t0 = time.time()
    for s in ds.samples:
        z0 = bb.encode_image(s.image)
        cond = bb.encode_prompt([s.source_prompt])
        traj = ddim_invert(bb.unet, z0, cond, sched)
        ddim = bb.decode(ddim_sample(bb.unet, traj[-1], cond, uncond, sched, guidance))[0]
        nti = null_text_inversion(bb.unet, traj, cond, uncond, sched, guidance=guidance, inner_steps=inner_steps)
        nti_img = bb.decode(ddim_sample(bb.unet, traj[-1], cond, nti.embeddings, sched, guidance))[0]
        vae = bb.decode(z0)[0]
        rows.append({"id": s.id, "vae": _psnr(vae, s.image), "ddim": _psnr(ddim, s.image), "nti": _psnr(nti_img, s.image)})
        if icd is not None:
            rows[-1]["icd"] = _psnr(icd_reconstruction(icd, s), s.image)
    out = {"n": len(rows), "steps": steps, "guidance": guidance, "inner_steps": inner_steps,
           "seconds": round(time.time() - t0, 1)}
    if icd is not None:
        out["icd"] = {"forward": list(icd.config.forward_timesteps), "reverse": list(icd.config.reverse_timesteps),
                      "guidance": 0.0, "unet_calls": 8}
    for k in ("vae", "ddim", "nti") + (("icd",) if icd is not None else ()):
        out[f"psnr_{k}"] = round(float(np.mean([r[k] for r in rows])), 2)
    out["nti_better_fraction"] = round(float(np.mean([r["nti"] > r["ddim"] for r in rows])), 3)
    return out


def icd_reconstruction(editor, sample) -> np.ndarray:
    """iCD's 4 forward + 4 reverse consistency steps with the source prompt and w = 0 (the source row of an
    edit), seeded as the harness seeds sample 0."""
    bb = editor.backbone
    cond = bb.encode_prompt([sample.source_prompt])
    x_T = editor.invert(bb.encode_image(sample.image), cond, torch.Generator().manual_seed(0))
    latents = editor.generate(x_T, torch.cat([cond, cond]))
    return bb.decode(latents[:1], quantize="truncate")[0]


def record(key: str, value: dict) -> None:
    from pie_bench.datasets.shapes import MODELS

    path = MODELS / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.setdefault("evaluation", {})[key] = value
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def evaluation_parser(doc: str, what: tuple, steps: int, guidance: float) -> argparse.ArgumentParser:
    """The options every ShapesEdit evaluation command takes (this one and ``shapes_flow_evaluate``)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("what", choices=what)
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--guidance", type=float, default=guidance)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--record", action="store_true", help="Store the result in the models' manifest.json.")
    return p


def report(res: dict, module: str, argv, key: str, store: bool) -> None:
    """Print an evaluation with the command that made it; with ``store``, record it in the manifest."""
    res["command"] = f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])
    print(json.dumps(res, indent=2))
    if store:
        record(key, res)


def main(argv=None) -> None:
    args = evaluation_parser(__doc__, ("base", "reconstruction"), 50, 7.5).parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.what == "base":
        res = base_accuracy(args.n or 200, args.seed, args.steps, args.guidance)
    else:
        res = reconstruction(args.n or 30, args.steps, args.guidance)
    report(res, "pie_bench.training.shapes_evaluate", argv, f"{args.what}@guidance{args.guidance}", args.record)


if __name__ == "__main__":
    main()
