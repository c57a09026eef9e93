"""Reference-style iCD (``yandex-research/invertible-cd``, ``utils/{generation,inversion,p2p}.py``): the
reverse consistency model runs on [∅, ∅, src, tgt] (with the w-embedding UNet the ∅ rows are computed
and thrown away; P2P's controller edits ``attn[h//2:]``), explicit attention with the reference P2P
controller (maps stored and copied to the CPU each step), fp32, and three decodes (input
reconstruction, source, target) as the editing script saves them."""
from __future__ import annotations

import torch

from benchmarks.reference.common import RefResult, count_unet_rows, explicit_attention, unets_of
from benchmarks.reference.p2p import RefControl


def icd_reference(editor, sample, generator: torch.Generator, bb=None, cpu_copy: bool = True) -> RefResult:
    from editors.icd import boundaries, consistency_step

    bb = bb or editor.backbone
    cfg, ac = editor.config, editor.alphas_cumprod
    edit = editor.controller_for(sample)
    models = getattr(editor, "models", None) or {}
    fwd_unet, rev_unet = models.get("forward", bb.unet), models.get("reverse", bb.unet)
    with count_unet_rows(*unets_of(editor)) as rows, torch.no_grad():
        text = bb.encode_prompt([sample.source_prompt, sample.target_prompt]).float()
        null = bb.encode_prompt([""]).float()
        z0 = bb.vae.encode(bb.image_to_tensor(sample.image)).latent_dist.mean * bb.scaling_factor
        with explicit_attention(fwd_unet):
            x_T = editor.invert(z0, text[:1], generator)
        bb.decode(z0)
        latents = x_T.float().expand(2, *x_T.shape[1:]).clone()
        control = RefControl(rev_unet, 2, tuple(x_T.shape[-2:]), edit, cpu_copy)
        context = torch.cat([null, null, text])
        with explicit_attention(rev_unet, control):
            for t, s in boundaries(cfg.reverse_timesteps, "reverse"):
                w = [0.0, 0.0] + editor.guidance_rows(t)
                eps = editor.eps("reverse", torch.cat([latents, latents]), t, context, w)[2:]
                latents = consistency_step(eps, latents, t, s, ac)
                latents = control.local_blend(latents)
        images = bb.decode(latents)
    return RefResult(latents=latents[1:2], image=images[1], extras={"unet_evals": rows[0]})
