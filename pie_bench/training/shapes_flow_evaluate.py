"""Evaluate the ShapesEdit flow model as the SD model is evaluated (``shapes_evaluate``): prompt following
(text-to-image through ``StableDiffusion3Pipeline``, colour / shape / background read back analytically
from 200 random captions) and reconstruction (the VAE alone; Euler inversion of the rectified-flow ODE
under the source prompt, then sampling back under it, unguided and with guidance).

    python -m pie_bench.training.shapes_flow_evaluate follow --n 200 [--record]
    python -m pie_bench.training.shapes_flow_evaluate reconstruction --n 30 [--record]
    python -m pie_bench.training.shapes_flow_evaluate follow --ckpt .cache/flow_train/flow.pt   # mid-training

``--ckpt`` reads a training checkpoint (``torch.load(weights_only=True)``) into the exported folder's
components, so a run can be judged before it ends.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pie_bench.training.shapes_evaluate import _psnr, evaluation_parser, report


def flow_backbone(ckpt: Optional[str] = None):
    from editors.flow_backbone import load_flow_backbone

    bb = load_flow_backbone("shapes")
    bb.model_id = os.path.relpath(bb.model_id) if Path(bb.model_id).is_relative_to(Path.cwd()) else bb.model_id
    if ckpt:
        state = torch.load(ckpt, weights_only=True)
        bb.transformer.load_state_dict(state["modules"]["transformer"])
        bb.model_id = f"{bb.model_id} (transformer from {ckpt}, step {state['step']})"
    return bb


@torch.no_grad()
def follow(bb, n: int = 200, seed: int = 0, steps: int = 28, guidance: float = 7.0, batch: int = 50) -> dict:
    """Text-to-image from ``n`` random scene captions (the SD model's evaluation seed), read back with
    ``attributes.prompt_hits``; SD3's pipeline defaults (28 steps, guidance 7.0)."""
    from pie_bench.datasets.shapes.attributes import prompt_hits
    from pie_bench.datasets.shapes.scenes import random_scene

    rng = np.random.default_rng([seed, 7777])
    scenes = [random_scene(rng) for _ in range(n)]
    hits = []
    t0 = time.time()
    for i in range(0, n, batch):
        chunk = scenes[i:i + batch]
        z = bb.pipe(prompt=[s.caption() for s in chunk], negative_prompt=[""] * len(chunk), num_inference_steps=steps,
                    guidance_scale=guidance, height=bb.resolution, width=bb.resolution, output_type="latent",
                    max_sequence_length=bb.max_sequence_length,
                    generator=torch.Generator().manual_seed(seed + i)).images
        hits += [prompt_hits(im, s, ("colour", "shape", "background")) for im, s in zip(bb.decode(z), chunk)]
    mean = {k: round(100 * float(np.mean([h[k] for h in hits])), 1) for k in ("colour", "shape", "background")}
    return {"model": bb.model_id, "n": n, "seed": seed, "steps": steps, "guidance": guidance,
            "colour_accuracy": mean["colour"], "shape_accuracy": mean["shape"],
            "colour_and_shape_accuracy": round(100 * float(np.mean([h["colour"] and h["shape"] for h in hits])), 1),
            "background_accuracy": mean["background"],
            "chance": {"colour_single_object": 16.7, "shape_single_object": 25.0, "background": 25.0},
            "seconds": round(time.time() - t0, 1)}


@torch.no_grad()
def euler(bb, z: torch.Tensor, cond, uncond, guidance: float, steps: int, invert: bool) -> torch.Tensor:
    """The pipeline's Euler steps over its own sigmas; ``invert`` walks them from data to noise."""
    timesteps, sigmas = bb.schedule(steps)
    order = range(steps - 1, -1, -1) if invert else range(steps)
    for i in order:
        # inverting, the velocity is taken at the current (less noisy) point: the explicit Euler step backwards
        t = sigmas[i + 1] * 1000 if invert else timesteps[i]
        v = bb.velocity(z, t, cond, uncond, guidance)
        z = z + (sigmas[i] - sigmas[i + 1]) * v if invert else z + (sigmas[i + 1] - sigmas[i]) * v
    return z


@torch.no_grad()
def reconstruction(bb, n: int = 30, steps: int = 28, guidance: float = 7.0) -> dict:
    """PSNR against the source of: the VAE round trip; Euler inversion under the source prompt then Euler
    sampling under it, unguided (the ODE's own error) and at ``guidance`` for the sampling half."""
    from pie_bench.datasets.pie import load_dataset

    ds = load_dataset("shapes", limit=n)
    uncond = bb.encode_prompt([""])
    rows = []
    t0 = time.time()
    for s in ds.samples:
        z0 = bb.encode_image(s.image)
        cond = bb.encode_prompt([s.source_prompt])
        z1 = euler(bb, z0, cond, None, 1.0, steps, invert=True)
        rows.append({"vae": _psnr(bb.decode(z0)[0], s.image),
                     "flow": _psnr(bb.decode(euler(bb, z1, cond, None, 1.0, steps, invert=False))[0], s.image),
                     "flow_cfg": _psnr(bb.decode(euler(bb, z1, cond, uncond, guidance, steps, invert=False))[0],
                                       s.image)})
    out = {"model": bb.model_id, "n": len(rows), "steps": steps, "guidance": guidance,
           "seconds": round(time.time() - t0, 1)}
    for k in ("vae", "flow", "flow_cfg"):
        out[f"psnr_{k}"] = round(float(np.mean([r[k] for r in rows])), 2)
    return out


def main(argv=None) -> None:
    p = evaluation_parser(__doc__, ("follow", "reconstruction"), 28, 7.0)
    p.add_argument("--ckpt", default=None, help="A training checkpoint's transformer instead of the exported one.")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    bb = flow_backbone(args.ckpt)
    if args.what == "follow":
        res = follow(bb, args.n or 200, args.seed, args.steps, args.guidance)
    else:
        res = reconstruction(bb, args.n or 30, args.steps, args.guidance)
    report(res, "pie_bench.training.shapes_flow_evaluate", argv, f"flow_{args.what}@guidance{args.guidance}", args.record)


if __name__ == "__main__":
    main()
