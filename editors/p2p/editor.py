"""The Prompt-to-Prompt edit pass and the editor base shared by ddim_p2p, nti_p2p and npi_p2p.

PIE-Bench (``cure-lab/PnPInversion``, ``run_editing_p2p.py`` + ``models/p2p_editor.py``) runs every
inversion+P2P method the same way once the inversion is done: prompts ``[source, target]`` with ``[ ]``
removed, 50 DDIM steps, CFG 7.5, ``cross_replace_steps {'default_': 0.4}``, ``self_replace_steps 0.6``,
``is_replace_controller`` left False (Refine), LocalBlend on ``blended_word`` (start 0.2, threshold 0.3)
and the target blended word re-weighted x2. The methods differ only in the null embedding each step
uses: ``""`` (DDIM), optimised per step (null-text), the source prompt (negative-prompt).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from editors.base import EditOutput, Editor, EditorConfig
from editors.inversion import (INVERSION_CACHE, DDIMSchedule, Embeddings, UNetCounter, ddim_invert, unet_eps)
from pie_bench.errors import ConfigError
from pie_bench.sample import Sample

from .controller import MODES, P2PController


@dataclass
class P2PEditConfig(EditorConfig):
    """PIE-Bench's P2P settings. ``controller``: ``refine`` is what PIE-Bench runs (its scripts never set
    ``is_replace_controller``); ``auto`` picks Replace for prompts with the same word count (the P2P and
    iCD convention); ``replace`` forces Replace."""

    num_ddim_steps: int = 50
    guidance_scale: float = 7.5
    cross_replace_steps: float = 0.4
    self_replace_steps: float = 0.6
    controller: str = "refine"
    local_blend: bool = True
    blend_start: float = 0.2      # LocalBlend start_blend (fraction of steps)
    blend_threshold: float = 0.3  # LocalBlend th
    eq_value: float = 2.0         # PIE-Bench eq_params values for the target blended word (1 disables)
    share_inversion: bool = True  # reuse the DDIM trajectory another P2P editor computed for this sample


@torch.no_grad()
def p2p_sample(unet, controller: P2PController, x_T: torch.Tensor, cond: torch.Tensor, uncond: Optional[Embeddings],
               sched: DDIMSchedule, guidance: float, counter: Optional[UNetCounter] = None,
               source_uncond_is_cond: bool = False) -> torch.Tensor:
    """Edit pass: both branches start from ``x_T``; returns the final latents ``[source, target]`` (fp32).

    ``cond``: (2, T, D) = [source, target] prompt embeddings. ``uncond``: one (1, T, D) embedding or one
    per step. The UNet batch is ``[∅src, ∅tgt, c_src, c_tgt]``; with ``source_uncond_is_cond`` (negative-
    prompt inversion: ∅ = c_src, so the source branch is unguided) the identical ∅src row is dropped,
    ``[∅tgt, c_src, c_tgt]``; at guidance 1 only ``[c_src, c_tgt]`` runs. The controller's rows are -2/-1
    in every layout."""
    if controller.source_row != -2 or controller.target_row != -1:
        raise ValueError("p2p_sample lays the batch out with the source/target conditional rows last (-2, -1)")
    latents = x_T.float().expand(2, *x_T.shape[1:]).clone()
    with controller.attach(unet):
        for i, t in enumerate(sched.timesteps):
            controller.begin_step(i)
            if guidance == 1 or uncond is None:
                eps = unet_eps(unet, latents, t, cond, counter)
            else:
                u = uncond if isinstance(uncond, torch.Tensor) else uncond[i]
                if source_uncond_is_cond:
                    out = unet_eps(unet, torch.cat([latents[1:], latents]), t, torch.cat([u, cond]), counter)
                    eps_u_tgt, eps_c = out[:1], out[1:]
                    eps = torch.cat([eps_c[:1], eps_u_tgt + guidance * (eps_c[1:] - eps_u_tgt)])
                else:
                    out = unet_eps(unet, torch.cat([latents, latents]), t,
                                   torch.cat([u.expand(2, *u.shape[1:]), cond]), counter)
                    eps_u, eps_c = out.chunk(2)
                    eps = eps_u + guidance * (eps_c - eps_u)
            latents = sched.step(latents, eps, t)
            latents = controller.after_step(latents)
    return latents


class InversionP2PEditor(Editor):
    """Base for the inversion + Prompt-to-Prompt editors. Subclasses implement ``null_embeddings``."""

    Config = P2PEditConfig
    requires = frozenset({"image", "source_prompt", "target_prompt"})
    source_uncond_is_cond = False

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        from editors.backbone import load_backbone

        super().load(backbone, device, dtype)
        if self.config.controller not in MODES:
            raise ConfigError(f"--editor-arg {self.name}.controller={self.config.controller!r}: expected one of "
                              f"{', '.join(MODES)}")
        if self.config.num_ddim_steps < 1:
            raise ConfigError(f"--editor-arg {self.name}.num_ddim_steps must be >= 1")
        self.bb = load_backbone(backbone, device, dtype)

    # -- per-method part -------------------------------------------------------------------------
    def null_embeddings(self, *, trajectory, cond_src, uncond, sched, counter, extras) -> Embeddings:
        raise NotImplementedError

    # -- shared parts ----------------------------------------------------------------------------
    def controller_for(self, sample: Sample) -> P2PController:
        cfg = self.config
        blend = eq = None
        if sample.blended_words:
            src_word, tgt_word = sample.blended_words
            blend = ((src_word,), (tgt_word,)) if cfg.local_blend else None
            eq = {tgt_word: cfg.eq_value} if cfg.eq_value != 1 else None
        return P2PController.from_prompts(
            self.bb.tokenizer, sample.source_prompt, sample.target_prompt, num_steps=cfg.num_ddim_steps,
            mode=cfg.controller, cross_replace_steps=cfg.cross_replace_steps,
            self_replace_steps=cfg.self_replace_steps, blend_words=blend, equalizer=eq,
            blend_start=cfg.blend_start, blend_threshold=cfg.blend_threshold, max_length=self.bb.max_length)

    def invert(self, sample: Sample, cond_src: torch.Tensor, sched: DDIMSchedule, counter: UNetCounter,
               extras: dict) -> list[torch.Tensor]:
        """DDIM trajectory of the sample (shared between the P2P editors of this process)."""
        bb = self.bb
        key = INVERSION_CACHE.key(bb.model_id, bb.dtype, bb.device, sched.num_steps, sample.id,
                                  sample.source_prompt, sample.image)
        traj = INVERSION_CACHE.get(key, bb.device) if self.config.share_inversion else None
        extras["inversion_cached"] = traj is not None
        if traj is None:
            z0 = bb.encode_image(sample.image).float()
            traj = ddim_invert(bb.unet, z0, cond_src, sched, counter)
            if self.config.share_inversion:
                INVERSION_CACHE.put(key, traj)
        return traj

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        cfg, bb = self.config, self.bb
        counter, extras = UNetCounter(), {}
        sched = DDIMSchedule(bb.scheduler, cfg.num_ddim_steps)
        controller = self.controller_for(sample)  # before any UNet work: bad prompts fail fast
        texts = bb.encode_prompt([sample.source_prompt, sample.target_prompt, ""])
        cond, uncond = texts[:2], texts[2:]
        t0 = time.perf_counter()
        traj = self.invert(sample, cond[:1], sched, counter, extras)
        nulls = self.null_embeddings(trajectory=traj, cond_src=cond[:1], uncond=uncond, sched=sched,
                                     counter=counter, extras=extras)
        if bb.device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(bb.device)
        extras["inversion_s"] = time.perf_counter() - t0
        latents = p2p_sample(bb.unet, controller, traj[-1], cond, nulls, sched, cfg.guidance_scale, counter,
                             source_uncond_is_cond=self.source_uncond_is_cond)
        image = bb.decode(latents[1:2])[0]
        extras.update(counter.as_extras())
        extras.update(controller.describe())
        if controller.last_mask is not None:
            extras["blend_mask_fraction"] = float(controller.last_mask.float().mean())
        return EditOutput(image=np.ascontiguousarray(image), extras=extras)
