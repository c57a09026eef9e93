"""The Prompt-to-Prompt edit pass and the editor base shared by ddim_p2p, nti_p2p and npi_p2p.

PIE-Bench (``cure-lab/PnPInversion``, ``run_editing_p2p.py`` + ``models/p2p_editor.py``) runs every
inversion+P2P method the same way once the inversion is done: prompts ``[source, target]`` with ``[ ]``
removed, 50 DDIM steps, CFG 7.5, ``cross_replace_steps {'default_': 0.4}``, ``self_replace_steps 0.6``,
``is_replace_controller`` left False (Refine), LocalBlend on ``blended_word`` (start 0.2, threshold 0.3)
and the target blended word re-weighted x2. The methods differ only in the null embedding each step
uses: ``""`` (DDIM), optimised per step (null-text), the source prompt (negative-prompt).

Checked against the official code (an adapted copy run on the toy backbone; ``tests/golden/README.md``):
final latents agree to ~2e-4 and the uint8 images to 1 level on <0.2 % of pixels
(``tests/test_golden_official.py``). What matches it: timesteps 981, 961, ..., 1 (``steps_offset`` 1,
which the official pipeline forces), uint8 by truncation (``Backbone.decode``), blend/eq words matched
exactly on whitespace-split words (``word_match``). Differences kept, all numerically invisible:
fused SDPA where the official materialises every attention map (the P2P processors compute explicit
probabilities only where they edit or store), no reconstruction pass, no 0-iteration null-text loop for
DDIM, frozen UNet weights for null-text inversion, the conditional prediction reused for the step that
advances null-text inversion, and for negative-prompt inversion the source branch's identical ∅ row
dropped from the batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from editors.base import EditOutput, Editor, EditorConfig
from editors.inversion import DDIMSchedule, Embeddings, UNetCounter, invert_shared, unet_eps
from pie_bench.core.errors import ConfigError
from pie_bench.core.sample import Sample

from editors.p2p.controller import MODES, P2PBatch, P2PController


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
    word_match: str = "exact"     # blend/eq words found as PIE-Bench does (exact whitespace-split word);
                                  # "lenient" also ignores case and punctuation (editors.p2p.align)
    share_inversion: bool = True  # reuse the DDIM trajectory another P2P editor computed for this sample


def _rows_of(u: torch.Tensor, b: int) -> torch.Tensor:
    """One null embedding per sample: a single (1, T, D) embedding is shared by all ``b``."""
    return u.expand(b, *u.shape[1:]) if u.shape[0] == 1 else u


@torch.no_grad()
def p2p_sample(unet, controller: Union[P2PController, P2PBatch], x_T: torch.Tensor, cond: torch.Tensor,
               uncond: Optional[Embeddings], sched: DDIMSchedule, guidance: float,
               counter: Optional[UNetCounter] = None, source_uncond_is_cond: bool = False,
               source_trajectory: Optional[list] = None) -> torch.Tensor:
    """Edit pass for ``B`` samples: each sample's two branches start from its ``x_T`` row; returns the
    final latents ``[source_1, target_1, source_2, ...]`` (fp32, 2B rows).

    ``cond``: (2B, T, D) = [source_1, target_1, ...] prompt embeddings. ``uncond``: a (1 or B, T, D)
    embedding or one per step. The UNet batch is ``[∅ rows, c_src_1, c_tgt_1, ..., c_src_B, c_tgt_B]``
    with ∅ rows ``[∅_1, ∅_1, ..., ∅_B, ∅_B]``; with ``source_uncond_is_cond`` (negative-prompt inversion:
    ∅ = c_src, so the source branch is unguided) the identical source ∅ rows are dropped,
    ``[∅_1, ..., ∅_B, c rows]``; at guidance 1 only the c rows run. Sample ``j``'s controller rows are
    ``2j - 2B`` / ``2j - 2B + 1`` (counted from the end) in every layout: -2/-1 for one sample.

    ``source_trajectory`` (Direct Inversion, Ju et al. ICLR 2024): the inversion ``[z_0 .. z_N]`` (B rows
    each); after every step the source rows are set to the trajectory's next latent. The authors add the
    offset ``z*_{t-1} - step(z*_t)`` (computed in a separate pass) to the source's step; since the source
    branch is at ``z*_t`` when the offset applies, the sum is ``z*_{t-1}`` (up to float rounding), so the
    offset pass is not needed, and neither is the source's ∅ row (its only use is the source's step):
    the batch is ``[∅_tgt rows, c rows]`` as for negative-prompt inversion."""
    batch = controller if isinstance(controller, P2PBatch) else P2PBatch([controller])
    b = x_T.shape[0]
    if len(batch.controllers) != b or cond.shape[0] != 2 * b:
        raise ValueError(f"p2p_sample: {b} starting latents need {b} controllers and {2 * b} prompt rows, got "
                         f"{len(batch.controllers)} and {cond.shape[0]}")
    for j, c in enumerate(batch.controllers):
        if (c.source_row, c.target_row) != (2 * j - 2 * b, 2 * j - 2 * b + 1):
            raise ValueError(f"p2p_sample: controller {j} of {b} must use rows ({2 * j - 2 * b}, "
                             f"{2 * j - 2 * b + 1}), got ({c.source_row}, {c.target_row})")
    latents = x_T.float().repeat_interleave(2, 0)
    if source_trajectory is not None:
        source_uncond_is_cond = True  # the source's own guided step is overwritten: skip its ∅ row
    n = len(sched.timesteps)
    with batch.attach(unet):
        for i, t in enumerate(sched.timesteps):
            batch.begin_step(i)
            if guidance == 1 or uncond is None:
                eps = unet_eps(unet, latents, t, cond, counter)
            else:
                u = _rows_of(uncond if isinstance(uncond, torch.Tensor) else uncond[i], b)
                if source_uncond_is_cond:
                    out = unet_eps(unet, torch.cat([latents[1::2], latents]), t, torch.cat([u, cond]), counter)
                    eps_u_tgt, eps = out[:b], out[b:].clone()
                    eps[1::2] = eps_u_tgt + guidance * (eps[1::2] - eps_u_tgt)
                else:
                    out = unet_eps(unet, torch.cat([latents, latents]), t,
                                   torch.cat([u.repeat_interleave(2, 0), cond]), counter)
                    eps_u, eps_c = out.chunk(2)
                    eps = eps_u + guidance * (eps_c - eps_u)
            latents = sched.step(latents, eps, t)
            if source_trajectory is not None:
                latents[0::2] = source_trajectory[n - 1 - i].float()
            latents = batch.after_step(latents)
    return latents


class InversionP2PEditor(Editor):
    """Base for the inversion + Prompt-to-Prompt editors. Subclasses implement ``null_embeddings``."""

    Config = P2PEditConfig
    requires = frozenset({"image", "source_prompt", "target_prompt"})
    source_uncond_is_cond = False
    direct_inversion = False  # Direct Inversion: the source branch follows the inversion (p2p_sample)

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        from editors.backbone import load_backbone

        super().load(backbone, device, dtype)
        if self.config.controller not in MODES:
            raise ConfigError(f"--editor-arg {self.name}.controller={self.config.controller!r}: expected one of "
                              f"{', '.join(MODES)}")
        from editors.p2p.align import MATCHES

        if self.config.word_match not in MATCHES:
            raise ConfigError(f"--editor-arg {self.name}.word_match={self.config.word_match!r}: expected one of "
                              f"{', '.join(MATCHES)}")
        if self.config.num_ddim_steps < 1:
            raise ConfigError(f"--editor-arg {self.name}.num_ddim_steps must be >= 1")
        self.backbone = load_backbone(backbone, device, dtype)

    # -- per-method part -------------------------------------------------------------------------
    def null_embeddings(self, *, trajectory, cond_src, uncond, sched, counter, extras) -> Embeddings:
        raise NotImplementedError

    # -- shared parts ----------------------------------------------------------------------------
    def controller_for(self, sample: Sample, source_row: int = -2, target_row: int = -1) -> P2PController:
        cfg = self.config
        blend = eq = None
        if sample.blended_words:
            src_word, tgt_word = sample.blended_words
            blend = ((src_word,), (tgt_word,)) if cfg.local_blend else None
            eq = {tgt_word: cfg.eq_value} if cfg.eq_value != 1 else None
        return P2PController.from_prompts(
            self.backbone.tokenizer, sample.source_prompt, sample.target_prompt, num_steps=cfg.num_ddim_steps,
            mode=cfg.controller, cross_replace_steps=cfg.cross_replace_steps,
            self_replace_steps=cfg.self_replace_steps, blend_words=blend, equalizer=eq,
            blend_start=cfg.blend_start, blend_threshold=cfg.blend_threshold, max_length=self.backbone.max_length,
            source_row=source_row, target_row=target_row, word_match=cfg.word_match)

    def invert(self, samples: list[Sample], cond_src: torch.Tensor, sched: DDIMSchedule, counter: UNetCounter,
               extras: dict) -> list[torch.Tensor]:
        """DDIM trajectories of the samples, batched (shared between the P2P editors of this process:
        samples another editor inverted come from the cache, the rest are inverted together)."""
        trajectory, extras["inversion_cached"] = invert_shared(
            self.backbone, samples, [smp.source_prompt for smp in samples], cond_src, sched, counter,
            share=self.config.share_inversion)
        return trajectory


    def edit_batch(self, samples: list[Sample], generators: list[torch.Generator]) -> list[EditOutput]:
        """Invert and edit several samples through one UNet batch (``--batch-size``); each output equals
        its own ``edit`` up to floating-point reassociation. Per-sample extras report the batch's UNet
        work divided by the batch size."""
        cfg, bb = self.config, self.backbone
        b = len(samples)
        counter, extras = UNetCounter(), {}
        sched = DDIMSchedule(bb.scheduler, cfg.num_ddim_steps)
        # before any UNet work: bad prompts fail fast
        controllers = [self.controller_for(s, 2 * j - 2 * b, 2 * j - 2 * b + 1) for j, s in enumerate(samples)]
        texts = bb.encode_prompt([p for s in samples for p in (s.source_prompt, s.target_prompt)] + [""])
        cond, uncond = texts[:2 * b], texts[2 * b:]
        t0 = time.perf_counter()
        traj = self.invert(samples, cond[0::2], sched, counter, extras)
        nulls = self.null_embeddings(trajectory=traj, cond_src=cond[0::2], uncond=uncond, sched=sched,
                                     counter=counter, extras=extras)
        if bb.device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(bb.device)
        inversion_s = (time.perf_counter() - t0) / b
        latents = p2p_sample(bb.unet, P2PBatch(controllers), traj[-1], cond, nulls, sched, cfg.guidance_scale,
                             counter, source_uncond_is_cond=self.source_uncond_is_cond,
                             source_trajectory=traj if self.direct_inversion else None)
        images = bb.decode(latents[1::2])
        shared = {"unet_calls": counter.calls, "unet_evals": counter.evals / b, "unet_backward": counter.backward / b,
                  "inversion_s": inversion_s, "inversion_cached": extras.pop("inversion_cached") / b}
        if b == 1:
            shared = {k: (int(v) if k.startswith("unet_") else v) for k, v in shared.items()}
            shared["inversion_cached"] = bool(shared["inversion_cached"])
        else:
            shared["batch_size"] = b
        per_sample = extras.pop("per_sample", [{}] * b)
        outs = []
        for j, (image, c) in enumerate(zip(images, controllers)):
            ex = {**shared, **extras, **per_sample[j], **c.describe()}
            # the target's final latent, fp32 (1, C, h, w): for golden tests against the official code (the
            # runner keeps only scalar extras)
            ex["final_latent"] = latents[2 * j + 1:2 * j + 2].detach().float().cpu().numpy()
            if c.last_mask is not None:
                ex["blend_mask_fraction"] = float(c.last_mask.float().mean())
            outs.append(EditOutput(image=np.ascontiguousarray(image), extras=ex))
        return outs
