"""Plug-and-Play (``pnp``; PIE-Bench ``ddim+pnp``) and Direct Inversion + Plug-and-Play
(``direct_inversion_pnp``; PIE-Bench ``directinversion+pnp``).

Tumanyan et al., "Plug-and-Play Diffusion Features for Text-Driven Image-to-Image Translation", CVPR
2023: the target is generated from the inverted noise with the target prompt while a source branch,
fed the source's latents, lends it its decoder features: the residual block's output at the coarsest
attention level of the decoder (SD1.x ``up_blocks[1].resnets[1]``) for the first ``pnp_f_t`` of the
steps, and the self-attention queries and keys of the decoder (every up-block self-attention but the
first) for the first ``pnp_attn_t``. PIE-Bench's code (``cure-lab/PnPInversion: run_editing_pnp.py``;
Ju et al., ICLR 2024 for the Direct Inversion variant): **SD v1.5** (``--backbone sd14`` is taken as
``sd15`` here, as the paper's table footnote says), 50 DDIM steps, CFG 7.5 with the negative prompt
"ugly, blurry, black, low res, unrealistic", ``pnp_f_t`` 0.8, ``pnp_attn_t`` 0.5, inversion with the
source prompt (DDIM at guidance 1, the same trajectory the P2P editors invert, shared through the cache),
the source branch conditioned on the empty prompt. Published (PnP Inversion paper, main table):
DDIM+PnP Structure 28.22e-3, PSNR 22.28, LPIPS 113.46e-3, MSE 83.64e-4, SSIM 79.05e-2, CLIP 25.41 /
22.55; DI+PnP 24.29e-3 / 22.46 / 106.06e-3 / 80.45e-4 / 79.68e-2 / 25.41 / 22.62.

What the source branch is fed, as the authors' code does it:
* ``pnp`` (DDIM): the latents of a guidance-1 DDIM *reconstruction* from ``x_T`` with the source prompt,
  one step ahead: the target starts from the reconstruction after the first step and at step ``i``
  (timestep ``t_i``) the source row holds the reconstruction after step ``i`` (``noisy_latent[-1 - i]``
  of the reversed list). Kept as the authors run it.
* ``direct_inversion_pnp``: the inversion itself, aligned: the target starts from ``x_T`` and at step
  ``i`` the source row holds ``z_{N-i}`` (no reconstruction pass).

Checked against the authors' ``run_editing_pnp.py`` (adapted private copy on the toy backbone,
``tests/golden/README.md``): final latents agree to 1.3e-4 for both variants. Deviations: no
reconstruction pass for the Direct Inversion variant (the authors compute one and never use it); fp32 (or ``--dtype``) where the authors run the UNet in fp16; injection through a forward
hook on the residual block's ``conv2`` (the authors' patched ``forward`` replaces the same tensor, after
``conv2`` and before the skip connection) and a diffusers attention processor with SDPA (theirs: explicit
einsum attention); on UNets other than SD1.x the layers follow the rule above (toy/ShapesEdit: feature
injection at ``up_blocks[0].resnets[1]``, attention in ``up_blocks[0].attentions[1]`` and
``up_blocks[1].attentions[0, 1]``).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from editors.attention import HeadAttnProcessor, swapped_processors
from editors.base import EditOutput, Editor, EditorConfig, inversion_batch_outputs
from editors.inversion import DDIMSchedule, UNetCounter, invert_shared, unet_eps
from pie_bench.core.errors import ConfigError
from pie_bench.core.sample import Sample

PNP_NEGATIVE_PROMPT = "ugly, blurry, black, low res, unrealistic"


@dataclass
class PnPConfig(EditorConfig):
    num_ddim_steps: int = 50   # n_timesteps
    guidance_scale: float = 7.5
    pnp_f_t: float = 0.8       # feature injection for the first int(pnp_f_t * steps) steps
    pnp_attn_t: float = 0.5    # self-attention q/k injection for the first int(pnp_attn_t * steps) steps
    negative_prompt: str = PNP_NEGATIVE_PROMPT
    share_inversion: bool = True


class PnPInjection:
    """Which steps inject, and the batch row each row copies from (``source_of[row]``; source rows map to
    themselves)."""

    def __init__(self, f_steps: int, attn_steps: int, source_of: list[int]):
        self.f_steps, self.attn_steps, self.source_of = f_steps, attn_steps, source_of
        self.step = 0

    def rows(self, device) -> torch.Tensor:
        return torch.as_tensor(self.source_of, device=device)


class PnPAttnProcessor(HeadAttnProcessor):
    """Self-attention with the target's queries and keys replaced by the source's (values its own)."""

    def __init__(self, injection: PnPInjection):
        self.injection = injection

    def attend(self, attn, q, k, v, mask):
        if self.injection.step < self.injection.attn_steps:
            idx = self.injection.rows(q.device)
            q, k = q.index_select(0, idx), k.index_select(0, idx)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def injection_points(unet) -> tuple[torch.nn.Module, list[str]]:
    """(the residual block whose output is injected, the self-attention processors injected)."""
    attn_blocks = [b for b in unet.up_blocks if getattr(b, "attentions", None)]
    if not attn_blocks or len(attn_blocks[0].resnets) < 2:
        raise ConfigError("Plug-and-Play needs a UNet decoder with attention blocks of >= 2 residual blocks")
    names = [f"up_blocks.{list(unet.up_blocks).index(b)}.attentions.{a}.transformer_blocks.0.attn1.processor"
             for b in attn_blocks for a in range(len(b.attentions))]
    return attn_blocks[0].resnets[1], names[1:]


@contextlib.contextmanager
def feature_injection(resnet, injection: PnPInjection):
    """The residual branch's output (after ``conv2``, before the skip connection) of the target rows
    replaced by the source's, for the first ``f_steps`` steps."""
    def hook(module, args, out):
        if injection.step < injection.f_steps:
            return out.index_select(0, injection.rows(out.device))
        return out

    handle = resnet.conv2.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class PnPEditor(Editor):
    name = "pnp"
    Config = PnPConfig
    paper = "Plug-and-Play (Tumanyan et al., CVPR 2023), DDIM inversion; PIE-Bench settings (SD v1.5)"
    requires = frozenset({"image", "source_prompt", "target_prompt"})
    direct_inversion = False

    def bind_backbone(self, backbone: str) -> None:
        # PIE-Bench's PnP rows run SD v1.5 (the table footnote): the sd14 alias means sd15 here, and the
        # run records what ran
        super().bind_backbone("sd15" if backbone == "sd14" else backbone)

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        from editors.backbone import load_backbone

        super().load(backbone, device, dtype)
        if self.config.num_ddim_steps < 1:
            raise ConfigError(f"--editor-arg {self.name}.num_ddim_steps must be >= 1")
        self.backbone = load_backbone(self.backbone_id, device, dtype)
        self.resnet, self.attn_layers = injection_points(self.backbone.unet)

    def source_latents(self, traj, c_src, sched, counter) -> list[torch.Tensor]:
        """What the source row holds at each step ``i`` (``[0]`` is also the target's start)."""
        n = sched.num_steps
        if self.direct_inversion:
            return [traj[n - i] for i in range(n)]
        rec, x = [], traj[-1]
        for t in sched.timesteps:  # guidance-1 reconstruction with the source prompt (extract_latents)
            x = sched.step(x, unet_eps(self.backbone.unet, x, t, c_src, counter), t)
            rec.append(x)
        return rec

    def edit_batch(self, samples: list[Sample], generators: list[torch.Generator]) -> list[EditOutput]:
        cfg, bb = self.config, self.backbone
        b, g = len(samples), cfg.guidance_scale
        counter, sched = UNetCounter(), DDIMSchedule(bb.scheduler, cfg.num_ddim_steps)
        n = sched.num_steps
        texts = bb.encode_prompt([s.source_prompt for s in samples] + [s.target_prompt for s in samples]
                                 + ["", cfg.negative_prompt])
        c_src, c_tgt, empty, neg = texts[:b], texts[b:2 * b], texts[2 * b:2 * b + 1], texts[2 * b + 1:]
        t0 = time.perf_counter()
        traj, cached = invert_shared(bb, samples, [s.source_prompt for s in samples], c_src, sched, counter,
                                     cfg.share_inversion)
        feed = self.source_latents(traj, c_src, sched, counter)
        inversion_s = (time.perf_counter() - t0) / b
        ctx = torch.cat([empty.expand(b, -1, -1), neg.expand(b, -1, -1), c_tgt])  # [source, target ∅, target c]
        injection = PnPInjection(int(n * cfg.pnp_f_t), int(n * cfg.pnp_attn_t),
                                 list(range(b)) + list(range(b)) + list(range(b)))
        x = feed[0].clone()
        with swapped_processors(bb.unet, lambda name, _: PnPAttnProcessor(injection)
                                if name in self.attn_layers else None), feature_injection(self.resnet, injection):
            for i, t in enumerate(sched.timesteps):
                injection.step = i
                eps = unet_eps(bb.unet, torch.cat([feed[i], x, x]), t, ctx, counter)
                e_u, e_c = eps[b:2 * b], eps[2 * b:]
                x = sched.step(x, e_u + g * (e_c - e_u), t)
        images = bb.decode(x)
        return inversion_batch_outputs(images, x, counter, inversion_s, cached)


class DirectInversionPnPEditor(PnPEditor):
    name = "direct_inversion_pnp"
    paper = "Direct Inversion (Ju et al., ICLR 2024) + Plug-and-Play (Tumanyan et al., CVPR 2023); PIE-Bench settings"
    direct_inversion = True
