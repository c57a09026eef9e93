"""Reference-style MasaCtrl and Direct Inversion + MasaCtrl, run the way PIE-Bench's code
(``cure-lab/PnPInversion``: ``run_editing_masactrl.py``, ``models/masactrl/``) runs them:

* DDIM + MasaCtrl: ``MasaCtrlPipeline.invert`` with the empty prompt at guidance 7.5 (two identical UNet
  rows per step, guidance a no-op); Direct Inversion: ``DirectInversion.invert`` (conditional-only DDIM
  inversion, then the 4-row offset pass on [∅, ∅, "", target]);
* the unused "direct synthesis" pass of the target prompt alone (``image_fixed``), decoded;
* the edit on [∅src, ∅tgt, "", target] with explicit attention in every layer, the mutual self-attention
  chosen by counting layers (``cur_att_layer // 2`` in ``range(start_layer, 16)``, SD1.x's count scaled to
  the UNet as the editor does) and steps; for Direct Inversion the offsets added to the source row.
"""
from __future__ import annotations

import math

import torch

from benchmarks.reference.common import RefResult, count_unet_rows
from benchmarks.reference.direct_inversion import offsets
from benchmarks.reference.p2p import _alphas, _unet, next_step


class MasaRefProcessor:
    """The official ``ca_forward`` + ``MutualSelfAttentionControl.forward`` as a diffusers processor."""

    def __init__(self, state: dict):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        st = self.state
        is_cross = encoder_hidden_states is not None
        ctx = encoder_hidden_states if is_cross else hidden_states
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(ctx))
        v = attn.head_to_batch_dim(attn.to_v(ctx))
        probs = (torch.einsum("bid,bjd->bij", q, k) * attn.scale).softmax(-1)
        layer = st["layer"]
        st["layer"] += 1
        if st["layer"] == st["num_layers"]:
            st["layer"], st["step"] = 0, st["step"] + 1
        active = (st["control"] and not is_cross and layer // 2 >= st["first"]
                  and st["start_step"] <= st["step"] < st["total_steps"])
        if not active:
            out = torch.einsum("bij,bjd->bid", probs, v)
        else:
            h = attn.heads
            halves = []
            for qh, kh, vh in zip(q.chunk(2), k.chunk(2), v.chunk(2)):  # unconditional, conditional
                ks, vs = kh[:h], vh[:h]  # the source's keys and values (its first row's heads)
                rows = qh.shape[0] // h
                p = (torch.einsum("bid,bjd->bij", qh, ks.repeat(rows, 1, 1)) * attn.scale).softmax(-1)
                halves.append(torch.einsum("bij,bjd->bid", p, vs.repeat(rows, 1, 1)))
            out = torch.cat(halves)
        return attn.to_out[0](attn.batch_to_head_dim(out))


def masactrl_reference(editor, sample) -> RefResult:
    bb, cfg = editor.backbone, editor.config
    n, g = cfg.num_ddim_steps, cfg.guidance_scale
    sched = _alphas(bb, n)
    blocks = len(editor.self_layers)
    first = cfg.start_layer if blocks == cfg.total_layers else math.ceil(cfg.start_layer * blocks / cfg.total_layers)
    state = {"layer": 0, "step": 0, "num_layers": 2 * blocks, "first": first, "control": False,
             "start_step": cfg.start_step, "total_steps": cfg.total_steps}
    saved = dict(bb.unet.attn_processors)
    bb.unet.set_attn_processor({name: MasaRefProcessor(state) for name in saved})
    try:
        with torch.no_grad(), count_unet_rows(bb.unet) as rows:
            empty = bb.encode_prompt([""]).float()
            text = bb.encode_prompt(["", sample.target_prompt]).float()
            z0 = bb.vae.encode(bb.image_to_tensor(sample.image))["latent_dist"].mean * bb.scaling_factor
            traj, x = [z0], z0.clone()
            for i in range(n):
                t = sched.timesteps[n - i - 1]
                if editor.direct_inversion:  # DirectInversion.ddim_loop: conditional only
                    eps = _unet(bb.unet, x, t, empty)
                else:  # MasaCtrlPipeline.invert at guidance 7.5: [∅, ""]
                    eu, ec = _unet(bb.unet, torch.cat([x, x]), t, torch.cat([empty, empty])).chunk(2)
                    eps = eu + g * (ec - eu)
                x = next_step(sched, eps, t, x)
                traj.append(x)
            noise_loss = offsets(bb, traj, text, empty, g, sched) if editor.direct_inversion else None
            x = traj[-1].clone()  # image_fixed: the target prompt alone, never used
            for t in sched.timesteps:
                state["step"] = 0
                eu, ec = _unet(bb.unet, torch.cat([x, x]), t, torch.cat([empty, text[1:]])).chunk(2)
                x = sched.step(eu + g * (ec - eu), t, x)["prev_sample"]
            bb.decode(x)
            state.update(control=True, layer=0, step=0)
            lat = traj[-1].expand(2, -1, -1, -1).clone()
            ctx = torch.cat([empty, empty, text])
            for i, t in enumerate(sched.timesteps):
                eu, ec = _unet(bb.unet, torch.cat([lat, lat]), t, ctx).chunk(2)
                lat = sched.step(eu + g * (ec - eu), t, lat)["prev_sample"]
                if noise_loss is not None:
                    lat = torch.cat([lat[:1] + noise_loss[i][:1], lat[1:]])
            images = bb.decode(lat)
    finally:
        bb.unet.set_attn_processor(saved)
    return RefResult(latents=lat[1:2], image=images[1], extras={"unet_evals": rows[0]})
