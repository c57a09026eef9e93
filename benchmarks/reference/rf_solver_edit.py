"""Reference-style RF-Solver-Edit and FireFlow: the loops as the authors' ``flux/sampling.py`` runs them
(``denoise`` / ``denoise_rf_solver`` / ``denoise_fireflow``), written here from reading that code, for
``benchmarks/latency.py`` and the tests: one image at a time, their ``info`` dict driving the value sharing
(string keys ``"{t}_{second_order}_{block}_single_V"``, stored on the CPU during the inversion and moved
back to the device at each injection, as their ``SingleStreamBlock`` does with ``.cpu()`` / ``.cuda()``),
inversion on the reversed grid and reversed injection list. On FLUX: packed latents, direct transformer
calls with the guidance input, their ``get_schedule`` (linspace(1, 0, N+1) shifted by mu of the packed
length). On SD3 (which their code does not cover) the same loops with the harness's stand-ins: CFG for
the target guidance, the scheduler's sigmas. The V hook sits on the value projections of the blocks the
editor shares (``editor.layers``), as in the editor; only the bookkeeping around it is theirs.
"""
from __future__ import annotations

import math

import torch

from benchmarks.reference.common import RefResult, count_unet_rows
from benchmarks.reference.flow import _finish, _flux_call, _flux_setup, _image


def get_schedule(num_steps: int, image_seq_len: int, base_shift: float = 0.5, max_shift: float = 1.15) -> list:
    timesteps = torch.linspace(1, 0, num_steps + 1)
    m = (max_shift - base_shift) / (4096 - 256)
    mu = m * image_seq_len + base_shift - m * 256
    return (math.exp(mu) / (math.exp(mu) + (1 / timesteps - 1) ** 1.0)).tolist()


class InfoValueProcessor:
    """Their per-block rule: with ``info['inject']``, store V under the info key when inverting, replace it
    (if stored: FireFlow's check, always true for RF-Solver) when sampling."""

    def __init__(self, inner, block: int, info: dict):
        self.inner, self.block, self.info = inner, block, info

    def __call__(self, attn, *args, **kwargs):
        info = self.info
        if not info.get("inject"):
            return self.inner(attn, *args, **kwargs)
        base = f"{info['t']}_{info['second_order']}_{self.block}_single_V"

        def hook_for(proj):
            def hook(module, inputs, out):
                name = f"{base}_{proj}"
                if info["inverse"]:
                    info["feature"][name] = out.cpu()
                elif name in info["feature"]:
                    v = info["feature"][name].to(out.device)
                    return v.repeat(out.shape[0] // v.shape[0], *([1] * (v.ndim - 1)))
                return None
            return hook

        handles = [m.register_forward_hook(hook_for(p)) for p in ("to_v", "add_v_proj")
                   if (m := getattr(attn, p, None)) is not None]
        try:
            return self.inner(attn, *args, **kwargs)
        finally:
            for h in handles:
                h.remove()


def denoise(model, img, timesteps: list, inverse: bool, info: dict, guidance: float, strategy: str):
    inject_list = [True] * info["inject_step"] + [False] * (len(timesteps[:-1]) - info["inject_step"])
    if inverse:
        timesteps, inject_list = timesteps[::-1], inject_list[::-1]
    next_velocity = None
    for i, (t_curr, t_prev) in enumerate(zip(timesteps[:-1], timesteps[1:])):
        info.update(t=t_prev if inverse else t_curr, inverse=inverse, second_order=False, inject=inject_list[i])
        if strategy == "fireflow" and next_velocity is not None:
            pred = next_velocity
        else:
            pred = model(img, t_curr, guidance)
        if strategy == "reflow":
            img = img + (t_prev - t_curr) * pred
            continue
        img_mid = img + (t_prev - t_curr) / 2 * pred
        info["second_order"] = True
        pred_mid = model(img_mid, t_curr + (t_prev - t_curr) / 2, guidance)
        if strategy == "rf_solver":
            first_order = (pred_mid - pred) / ((t_prev - t_curr) / 2)
            img = img + (t_prev - t_curr) * pred + 0.5 * (t_prev - t_curr) ** 2 * first_order
        else:  # fireflow, rf_midpoint
            next_velocity = pred_mid
            img = img + (t_prev - t_curr) * pred_mid
    return img


@torch.no_grad()
def rf_solver_edit_reference(editor, sample) -> RefResult:
    bb, c = editor.backbone, editor.config
    flux = bb.family == "flux"
    z0 = bb.vae.encode(_image(bb, sample)).latent_dist.mode()
    z0 = (z0 - bb.vae.config.shift_factor) * bb.vae.config.scaling_factor
    info = {"feature": {}, "inject_step": c.inject}
    saved = dict(bb.transformer.attn_processors)
    shared = set(editor.layers)
    bb.transformer.set_attn_processor({n: InfoValueProcessor(p, int(n.split(".")[1]), info) if n in shared else p
                                       for n, p in saved.items()})
    try:
        with count_unet_rows(bb.transformer) as rows:
            if flux:
                pipe, img, ids = _flux_setup(bb, z0)
                src, tar = (pipe.encode_prompt(prompt=p, prompt_2=None, device=bb.device,
                                               max_sequence_length=bb.max_sequence_length)
                            for p in (sample.source_prompt, sample.target_prompt))
                timesteps = get_schedule(c.num_steps, img.shape[1])

                def model_for(enc):
                    return lambda x, t, g: _flux_call(bb, x, torch.full((1,), t, dtype=x.dtype), *enc, ids, g)
                inv_model, edit_model, target_guidance = model_for(src), model_for(tar), c.guidance
            else:
                pipe, img = bb.pipe, z0
                se, _, sp, _ = pipe.encode_prompt(prompt=sample.source_prompt, prompt_2=None, prompt_3=None,
                                                  do_classifier_free_guidance=False, device=bb.device,
                                                  max_sequence_length=bb.max_sequence_length)
                te, tn, tp, tnp = pipe.encode_prompt(prompt=sample.target_prompt, prompt_2=None, prompt_3=None,
                                                     negative_prompt=c.negative_prompt,
                                                     do_classifier_free_guidance=True, device=bb.device,
                                                     max_sequence_length=bb.max_sequence_length)
                timesteps = bb.schedule(c.num_steps)[1].tolist()

                def inv_model(x, t, g):
                    return bb.transformer(hidden_states=x, timestep=torch.full((1,), 1000 * t), return_dict=False,
                                          encoder_hidden_states=se, pooled_projections=sp)[0]

                def edit_model(x, t, g):
                    vu, vc = bb.transformer(hidden_states=torch.cat([x, x]), timestep=torch.full((2,), 1000 * t),
                                            encoder_hidden_states=torch.cat([tn, te]), return_dict=False,
                                            pooled_projections=torch.cat([tnp, tp]))[0].chunk(2)
                    return vu + g * (vc - vu)
                target_guidance = c.cfg_scale
            z = denoise(inv_model, img, timesteps, True, info, 1.0, c.sampling_strategy)
            x = denoise(edit_model, z, timesteps, False, info, target_guidance, c.sampling_strategy)
            if flux:
                x = pipe._unpack_latents(x, bb.resolution, bb.resolution, pipe.vae_scale_factor)
    finally:
        bb.transformer.set_attn_processor(saved)
    return _finish(bb, x, rows)
