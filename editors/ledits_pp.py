"""LEDITS++ (``ledits_pp``) on diffusers' official ``LEditsPPPipelineStableDiffusion``.

Brack et al., "LEDITS++: Limitless Image Editing using Text-to-Image Models", CVPR 2024: edit-friendly
DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024) with the multistep SDE-DPM-Solver++ (order 2),
then semantic guidance (SEGA) towards or away from edit *concepts*, each confined to the region its
cross-attention and the noise estimate single out (implicit masking; intersect mask on). The pipeline
is the authors' own contribution to diffusers (``pipelines/ledits_pp``, since v0.27); this editor builds
it from the loaded backbone (its UNet, VAE, text encoder, tokenizer; the scheduler config turned into
``DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_order=2)``, which is what the
pipeline itself does with SD's scheduler) and calls ``invert`` and ``__call__`` unchanged.

A PIE sample has prompts, not concepts. The mapping (recorded in every output's extras): every
bracketed span of the target prompt is a concept to add, every bracketed span of the source prompt a
concept to remove (``reverse_editing_direction``); spans present in both prompts cancel out. Without
any bracketed span the target blended word is added, else the whole target prompt.

Settings (PIE-Bench has no LEDITS++ protocol and the paper no PIE-Bench numbers; the paper tunes
TEdBench++ per image): those of the diffusers documentation's example, written by the authors:
``num_inversion_steps`` 50, ``skip`` 0.1, ``edit_guidance_scale`` 10, ``edit_threshold`` 0.75; the
pipeline's defaults for the rest: inversion unguided (``source_prompt`` "", ``source_guidance_scale``
3.5 unused then), ``edit_warmup_steps`` 0, intersect mask on, no cross-attention-only mask. The
inversion draws its noise from the sample's generator. One sample per call: the pipeline edits a batch
of images with one list of concepts, and each PIE sample has its own.

Deviation: the pipeline reads its cross-attention masks at latent/4 only (SD1.x's 16² layers); on a UNet
without cross-attention there (the toy and ShapesEdit models) the intersect/cross-attention masks are
off and the noise-based mask alone confines the edit (extras ``ledits_mask``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image

from editors.base import EditOutput, Editor, EditorConfig
from pie_bench.core.errors import ConfigError
from pie_bench.core.sample import Sample

_SPAN = re.compile(r"\[([^\[\]]+)\]")


@dataclass
class LEditsPPConfig(EditorConfig):
    num_inversion_steps: int = 50
    skip: float = 0.1
    source_guidance_scale: float = 3.5
    inversion_prompt: str = "empty"     # "empty" (the pipeline default: unguided inversion) or "source"
    edit_guidance_scale: float = 10.0
    edit_threshold: float = 0.75
    edit_warmup_steps: int = 0
    use_intersect_mask: bool = True
    use_cross_attn_mask: bool = False


def edit_concepts(sample: Sample) -> tuple[list[str], list[bool]]:
    """(concepts, reverse_editing_direction) for a PIE sample: target spans added, source spans removed."""
    add = [s.strip() for s in _SPAN.findall(sample.target_prompt_raw) if s.strip()]
    remove = [s.strip() for s in _SPAN.findall(sample.source_prompt_raw) if s.strip()]
    both = set(add) & set(remove)
    add, remove = [a for a in add if a not in both], [r for r in remove if r not in both]
    if not add and not remove:
        if sample.blended_words and sample.blended_words[1]:
            add = [sample.blended_words[1]]
        elif sample.target_prompt:
            add = [sample.target_prompt]
    return add + remove, [False] * len(add) + [True] * len(remove)


def ledits_pipeline(bb):
    """``LEditsPPPipelineStableDiffusion`` over a loaded backbone's modules (no copy of the weights)."""
    from diffusers import DPMSolverMultistepScheduler, LEditsPPPipelineStableDiffusion

    sched = DPMSolverMultistepScheduler.from_config(bb.scheduler.config, algorithm_type="sde-dpmsolver++",
                                                    solver_order=2)
    pipe = LEditsPPPipelineStableDiffusion(vae=bb.vae, text_encoder=bb.text_encoder, tokenizer=bb.tokenizer,
                                           unet=bb.unet, scheduler=sched, safety_checker=None,
                                           feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class LEditsPPEditor(Editor):
    name = "ledits_pp"
    Config = LEditsPPConfig
    paper = "LEDITS++ (Brack et al., CVPR 2024), diffusers LEditsPPPipelineStableDiffusion; documented example settings"
    requires = frozenset({"image", "target_prompt"})

    @classmethod
    def backbone_unavailable(cls, backbone: str) -> Optional[str]:
        why = super().backbone_unavailable(backbone)
        if why:
            return why
        if backbone == "shapes":  # --editors all only; named explicitly it runs
            return ("left out of --editors all on ShapesEdit: its UNet has no cross-attention at latent/4, which "
                    "LEDITS++'s implicit mask reads, so the method would run without it (not as published), "
                    "unbatched at ~0.8 s per sample; name it (--editors ledits_pp) to run it anyway")
        return None

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        from editors.backbone import load_backbone

        super().load(backbone, device, dtype)
        cfg = self.config
        if cfg.inversion_prompt not in ("empty", "source"):
            raise ConfigError(f"--editor-arg {self.name}.inversion_prompt={cfg.inversion_prompt!r}: expected empty or source")
        if cfg.num_inversion_steps < 1 or not 0 <= cfg.skip < 1:
            raise ConfigError(f"--editor-arg {self.name}: num_inversion_steps must be >= 1 and skip in [0, 1)")
        self.backbone = load_backbone(backbone, device, dtype)
        self.pipe = ledits_pipeline(self.backbone)
        from editors.p2p.layers import attention_layers

        # the pipeline's attention mask reads cross-attention maps at latent/4 (SD1.x: the 16² layers of a
        # 64² latent); the toy and ShapesEdit UNets attend at latent/1 and /2 only, where it would fail:
        # there the mask is the noise-based one alone (recorded as ledits_mask)
        self.attention_mask_ok = any(l.is_cross and l.downscale == 4 for l in attention_layers(self.backbone.unet))

    def run_pipeline(self, pipe, sample: Sample, generator: Optional[torch.Generator]):
        """``invert`` + ``__call__`` for one sample; returns (final latents, concepts, reverse flags)."""
        cfg, res = self.config, self.backbone.resolution
        image = Image.fromarray(sample.image).resize((res, res), Image.LANCZOS)
        concepts, reverse = edit_concepts(sample)
        # the pipeline's invert() installs diffusers' explicit-probability AttnProcessor on every layer and
        # leaves it there, on the UNet every editor of the process shares: the processors are put back
        # after invert() (the edit then runs SDPA where the pipeline installs nothing of its own; the same
        # maths) and after the edit
        saved = dict(pipe.unet.attn_processors)
        try:
            pipe.invert(image=image, source_prompt=sample.source_prompt if cfg.inversion_prompt == "source" else "",
                        source_guidance_scale=cfg.source_guidance_scale, num_inversion_steps=cfg.num_inversion_steps,
                        skip=cfg.skip, generator=generator, height=res, width=res)
            pipe.unet.set_attn_processor(dict(saved))  # (set_attn_processor empties the dict it is given)
            n = len(concepts)
            out = pipe(editing_prompt=concepts, reverse_editing_direction=reverse,
                       edit_guidance_scale=[cfg.edit_guidance_scale] * n, edit_threshold=[cfg.edit_threshold] * n,
                       edit_warmup_steps=[cfg.edit_warmup_steps] * n,
                       use_intersect_mask=cfg.use_intersect_mask and self.attention_mask_ok,
                       use_cross_attn_mask=cfg.use_cross_attn_mask and self.attention_mask_ok, generator=generator,
                       output_type="latent")
        finally:
            pipe.unet.set_attn_processor(dict(saved))  # (set_attn_processor empties the dict it is given)
        return out.images, concepts, reverse

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        rows = [0]  # UNet batch rows the pipeline evaluates (the other editors count theirs in their loops)

        def count(module, args, kwargs):
            rows[0] += int((args[0] if args else kwargs["sample"]).shape[0])

        hook = self.backbone.unet.register_forward_pre_hook(count, with_kwargs=True)
        try:
            latents, concepts, reverse = self.run_pipeline(self.pipe, sample, generator)
        finally:
            hook.remove()
        # the pipeline's "pil" output: decode, then numpy_to_pil's (x * 255).round()
        image = self.backbone.decode(latents, quantize="round")[0]
        return EditOutput(image=np.ascontiguousarray(image), extras={
            "ledits_add": "; ".join(c for c, r in zip(concepts, reverse) if not r),
            "ledits_remove": "; ".join(c for c, r in zip(concepts, reverse) if r),
            "ledits_mask": ("intersect" if self.config.use_intersect_mask else "cross-attention"
                            if self.config.use_cross_attn_mask else "noise") if self.attention_mask_ok else "noise",
            "unet_evals": rows[0], "final_latent": latents[:1].detach().float().cpu().numpy()})
