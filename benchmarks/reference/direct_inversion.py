"""Reference-style Direct Inversion + P2P, run the way PIE-Bench's code (``cure-lab/PnPInversion``:
``models/p2p_editor.py: edit_image_directinversion``, ``models/p2p/inversion.py: DirectInversion``,
``models/p2p/p2p_guidance_forward.py: direct_inversion_p2p_guidance_forward``) runs it:

* DDIM inversion at guidance 1 (``ddim_loop``) and a decode of the input latent;
* ``offset_calculate``: from ``z*_T``, per step the guided prediction on [∅src, ∅tgt, c_src, c_tgt] at
  ``[z*_t, z*_t]``, offset ``o_t = z*_{t-1} - step(z*_t)`` for both rows (only the source's is used);
* a reconstruction pass (``AttentionStore``) and the edit pass, each on [∅src, ∅tgt, c_src, c_tgt]
  with ``o_t`` added to the source row after every step, then LocalBlend; both decoded.

Explicit attention everywhere (``RefControl``, as ``benchmarks/reference/p2p.py``), fp32.
"""
from __future__ import annotations

import torch

from benchmarks.reference.common import RefResult, count_unet_rows, explicit_attention
from benchmarks.reference.p2p import RefControl, _alphas, _unet, next_step, prev_step


@torch.no_grad()
def offsets(bb, traj, text, uncond, guidance, sched):
    """``DirectInversion.offset_calculate``: the per-step latent error of the guided step on the inversion."""
    n = len(sched.timesteps)
    ctx = torch.cat([uncond.expand(*text.shape), text])
    cur = torch.cat([traj[-1]] * text.shape[0])
    out = []
    for i, t in enumerate(sched.timesteps):
        prev = torch.cat([traj[n - i - 1]] * cur.shape[0])
        eu, ec = _unet(bb.unet, torch.cat([cur] * 2), t, ctx).chunk(2)
        rec = prev_step(sched, eu + guidance * (ec - eu), t, cur)
        loss = prev - rec
        out.append(loss)
        cur = rec + loss
    return out


@torch.no_grad()
def guidance_forward_offsets(bb, control, x_T, text, uncond, guidance, sched, noise_loss):
    latents = x_T.expand(text.shape[0], *x_T.shape[1:]).clone()
    ctx = torch.cat([uncond.expand(*text.shape), text])
    with explicit_attention(bb.unet, control):
        for i, t in enumerate(sched.timesteps):
            eu, ec = _unet(bb.unet, torch.cat([latents] * 2), t, ctx).chunk(2)
            latents = sched.step(eu + guidance * (ec - eu), t, latents)["prev_sample"]
            latents = torch.cat([latents[:1] + noise_loss[i][:1], latents[1:]])
            latents = control.local_blend(latents)
    return latents


def direct_inversion_p2p_reference(editor, sample, bb=None, cpu_copy: bool = True) -> RefResult:
    bb = bb or editor.backbone
    cfg = editor.config
    n = cfg.num_ddim_steps
    sched = _alphas(bb, n)
    edit = editor.controller_for(sample)
    with torch.no_grad():
        text = bb.encode_prompt([sample.source_prompt, sample.target_prompt]).float()
        uncond = bb.encode_prompt([""]).float()
    with count_unet_rows(bb.unet) as rows:
        with torch.no_grad(), explicit_attention(bb.unet):
            z0 = bb.vae.encode(bb.image_to_tensor(sample.image))["latent_dist"].mean * bb.scaling_factor
            bb.decode(z0)  # image_rec of ddim_inversion, unused by the edit
            traj, x = [z0], z0.clone()
            for i in range(n):
                t = sched.timesteps[n - i - 1]
                x = next_step(sched, _unet(bb.unet, x, t, text[:1]), t, x)
                traj.append(x)
            noise_loss = offsets(bb, traj, text, uncond, cfg.guidance_scale, sched)
        hw = tuple(z0.shape[-2:])
        rec = guidance_forward_offsets(bb, RefControl(bb.unet, 2, hw, None, cpu_copy), traj[-1], text, uncond,
                                       cfg.guidance_scale, _alphas(bb, n), noise_loss)
        bb.decode(rec[:1])
        latents = guidance_forward_offsets(bb, RefControl(bb.unet, 2, hw, edit, cpu_copy), traj[-1], text, uncond,
                                           cfg.guidance_scale, _alphas(bb, n), noise_loss)
        images = bb.decode(latents)
    return RefResult(latents=latents[1:2], image=images[1], extras={"unet_evals": rows[0], "source_latent": latents[:1]})
