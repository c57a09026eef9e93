"""Reference-style Plug-and-Play and Direct Inversion + PnP, run the way PIE-Bench's
``run_editing_pnp.py`` runs them: ``Preprocess.extract_latents`` (DDIM inversion with the source prompt,
then a guidance-1 reconstruction and its decode, computed for both variants), then ``PNP.run_pnp`` on
[source "", target negative prompt, target prompt] with explicit attention in every layer, the residual
block's output and the decoder self-attention queries/keys of the target rows replaced by the source's
for the first ``pnp_f_t`` / ``pnp_attn_t`` of the steps (``register_time`` on the timestep)."""
from __future__ import annotations

import torch

from benchmarks.reference.common import RefResult, count_unet_rows
from benchmarks.reference.p2p import _alphas, _unet, next_step


class PnPRefProcessor:
    def __init__(self, state: dict, inject: bool):
        self.state, self.inject = state, inject

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        is_cross = encoder_hidden_states is not None
        ctx = encoder_hidden_states if is_cross else hidden_states
        q, k = attn.to_q(hidden_states), attn.to_k(ctx)
        if self.inject and not is_cross and self.state["t"] in self.state["qk_timesteps"]:
            b = q.shape[0] // 3
            q[b:2 * b], k[b:2 * b], q[2 * b:], k[2 * b:] = q[:b], k[:b], q[:b], k[:b]
        q, k, v = attn.head_to_batch_dim(q), attn.head_to_batch_dim(k), attn.head_to_batch_dim(attn.to_v(ctx))
        probs = (torch.einsum("bid,bjd->bij", q, k) * attn.scale).softmax(-1)
        return attn.to_out[0](attn.batch_to_head_dim(torch.einsum("bij,bjd->bid", probs, v)))


def pnp_reference(editor, sample) -> RefResult:
    bb, cfg = editor.backbone, editor.config
    n, g = cfg.num_ddim_steps, cfg.guidance_scale
    sched = _alphas(bb, n)
    state = {"t": -1, "qk_timesteps": [int(t) for t in sched.timesteps[:int(n * cfg.pnp_attn_t)]],
             "conv_timesteps": [int(t) for t in sched.timesteps[:int(n * cfg.pnp_f_t)]]}
    saved = dict(bb.unet.attn_processors)
    bb.unet.set_attn_processor({name: PnPRefProcessor(state, name in editor.attn_layers) for name in saved})

    def conv_hook(module, args, out):
        if state["t"] in state["conv_timesteps"]:
            b = out.shape[0] // 3
            out = out.clone()
            out[b:2 * b], out[2 * b:] = out[:b], out[:b]
        return out

    handle = editor.resnet.conv2.register_forward_hook(conv_hook)
    try:
        with torch.no_grad(), count_unet_rows(bb.unet) as rows:
            src = bb.encode_prompt([sample.source_prompt]).float()
            z0 = bb.vae.encode(bb.image_to_tensor(sample.image))["latent_dist"].mean * bb.scaling_factor
            traj, x = [z0], z0.clone()
            for i in range(n):
                t = sched.timesteps[n - i - 1]
                x = next_step(sched, _unet(bb.unet, x, t, src), t, x)
                traj.append(x)
            rec, x = [], traj[-1]
            for t in sched.timesteps:  # ddim_sample: computed for both variants
                x = sched.step(_unet(bb.unet, x, t, src), t, x)["prev_sample"]
                rec.append(x)
            bb.decode(rec[-1])
            noisy = traj if editor.direct_inversion else list(reversed(rec))
            texts = bb.encode_prompt(["", cfg.negative_prompt, sample.target_prompt]).float()
            x = noisy[-1]
            for i, t in enumerate(sched.timesteps):
                state["t"] = int(t)
                eps = _unet(bb.unet, torch.cat([noisy[-1 - i], x, x]), t, texts)
                _, eu, ec = eps.chunk(3)
                x = sched.step(eu + g * (ec - eu), t, x)["prev_sample"]
            image = bb.decode(x)
    finally:
        handle.remove()
        bb.unet.set_attn_processor(saved)
    return RefResult(latents=x, image=image[0], extras={"unet_evals": rows[0]})
