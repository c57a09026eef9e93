"""Sampling from an exported ShapesEdit model: plain text-to-image DDIM with classifier-free guidance,
and the grid of sixteen captions (reference renderings above generations) saved next to the weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pie_bench.datasets.shapes.scenes import random_scene, render
from pie_bench.training.shapes_config import GEN_SIZE
from pie_bench.training.shapes_data import to_model_pixels


@torch.no_grad()
def sample_grid(out: Path, seed: int) -> None:
    """Sixteen prompts through the exported model with DDIM (50 steps, CFG 5): a visual sanity check."""
    from editors.backbone import load_backbone

    bb = load_backbone(str(out / "sd"))
    rng = np.random.default_rng([seed, 99])
    scenes = [random_scene(rng) for _ in range(16)]
    images = generate(bb, [s.caption() for s in scenes], seed=seed, steps=50, guidance=5.0)
    refs = [np.asarray(Image.fromarray(to_model_pixels(render(s, GEN_SIZE))).resize((64, 64), Image.NEAREST))
            for s in scenes]
    gens = [np.asarray(Image.fromarray(im).resize((64, 64), Image.BICUBIC)) for im in images]
    rows = [np.concatenate([np.concatenate(refs[i:i + 8], 1), np.concatenate(gens[i:i + 8], 1)], 0)
            for i in (0, 8)]
    Image.fromarray(np.concatenate(rows, 0)).save(out / "samples.png")


@torch.no_grad()
def generate(bb, prompts, *, seed: int = 0, steps: int = 50, guidance: float = 5.0) -> np.ndarray:
    """Plain text-to-image DDIM sampling with classifier-free guidance on a loaded backbone."""
    sched = bb.new_scheduler()
    sched.set_timesteps(steps)
    cond = bb.encode_prompt(prompts)
    uncond = bb.encode_prompt([""] * len(prompts))
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn((len(prompts), bb.unet.config.in_channels, bb.latent_size, bb.latent_size), generator=gen)
    for t in sched.timesteps:
        eps = bb.unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        eu, ec = eps.chunk(2)
        z = sched.step(eu + guidance * (ec - eu), t, z).prev_sample
    return bb.decode(z)
