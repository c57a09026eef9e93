"""Reference-style FlowEdit and RF-Inversion: each algorithm the way its authors' code runs it, written here
(not copied) from reading that code, on the harness's flow backbones (the pipeline object, its transformer
and VAE), for ``benchmarks/latency.py`` and ``tests/test_flow_reference.py``.

- FlowEdit (``fallenshock/FlowEdit``, ``FlowEdit_utils.py``): on SD3 one transformer call of four rows per
  step ([uncond, cond] x [source, target]) with CFG per branch, prompts through the pipeline's
  ``encode_prompt`` with CFG; on FLUX packed latents, the pipeline's ``encode_prompt`` per branch, two
  transformer calls per step with the guidance scales as the guidance input, sigmas read off the scheduler
  (``_init_step_index``); noise ``randn_like`` the (packed) latent. The plain-sampling tail of the last
  ``n_min`` steps is written as the FLUX function has it (the SD3 function multiplies its step by
  ``t_im1 - t_im1`` = 0 there; the authors' configs use n_min 0, so this never ran for them).
- RF-Inversion (diffusers' ``examples/community/pipeline_flux_rf_inversion.py``): packed latents, the
  image latent a VAE posterior sample, y_1 ``randn_like`` it, the forward loop feeding ``i / N`` as the
  timestep, the reverse loop with ``t_i = 1 - t / 1000``; on SD3 (which the community pipeline does not
  cover) the same loops on unpacked latents, the target prompt with CFG batched as StableDiffusion3Pipeline.

Noise comes from the sample's generator where the authors call torch's global one (same draws, same order).
"""
from __future__ import annotations

import torch
from PIL import Image

from benchmarks.reference.common import RefResult, count_unet_rows


def _image(bb, sample) -> torch.Tensor:
    r = bb.resolution
    img = Image.fromarray(sample.image)
    img = img if img.size == (r, r) else img.resize((r, r), Image.LANCZOS)
    return bb.pipe.image_processor.preprocess(img).to(bb.device, bb.dtype)


def _flux_call(bb, x, t, emb, pooled, text_ids, ids, guidance):
    g = None if guidance is None or not bb.transformer.config.guidance_embeds else \
        torch.tensor([guidance], device=bb.device).expand(x.shape[0])
    return bb.transformer(hidden_states=x, timestep=t, guidance=g, encoder_hidden_states=emb,
                          pooled_projections=pooled, txt_ids=text_ids, img_ids=ids, return_dict=False)[0]


def _flux_setup(bb, latent):
    pipe = bb.pipe
    b, c, h, w = latent.shape
    packed = pipe._pack_latents(latent, b, c, h, w)
    ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, bb.device, bb.dtype)
    return pipe, packed, ids


def _finish(bb, latent, rows) -> RefResult:
    return RefResult(latents=latent.float(), image=bb.decode(latent, quantize="round")[0],
                     extras={"unet_evals": rows[0]})


@torch.no_grad()
def flowedit_reference(editor, sample, generator: torch.Generator) -> RefResult:
    bb, c = editor.backbone, editor.settings
    T, n_min, n_max, n_avg = c["T_steps"], c["n_min"], c["n_max"], c["n_avg"]
    x_src = bb.vae.encode(_image(bb, sample)).latent_dist.mode()
    x_src = (x_src - bb.vae.config.shift_factor) * bb.vae.config.scaling_factor
    timesteps, sigmas = bb.schedule(T)
    with count_unet_rows(bb.transformer) as rows:
        if bb.family == "flux":
            pipe, x0, ids = _flux_setup(bb, x_src)
            src = pipe.encode_prompt(prompt=sample.source_prompt, prompt_2=None, device=bb.device,
                                     max_sequence_length=bb.max_sequence_length)
            tar = pipe.encode_prompt(prompt=sample.target_prompt, prompt_2=None, device=bb.device,
                                     max_sequence_length=bb.max_sequence_length)

            def v_both(z_src, z_tar, t):
                return (_flux_call(bb, z_src, t.expand(1) / 1000, *src, ids, c["src_guidance_scale"]),
                        _flux_call(bb, z_tar, t.expand(1) / 1000, *tar, ids, c["tar_guidance_scale"]))
        else:
            pipe, x0 = bb.pipe, x_src
            enc = [pipe.encode_prompt(prompt=p, prompt_2=None, prompt_3=None,
                                      negative_prompt=editor.config.negative_prompt, do_classifier_free_guidance=True,
                                      device=bb.device, max_sequence_length=bb.max_sequence_length)
                   for p in (sample.source_prompt, sample.target_prompt)]
            emb = torch.cat([enc[0][1], enc[0][0], enc[1][1], enc[1][0]])
            pooled = torch.cat([enc[0][3], enc[0][2], enc[1][3], enc[1][2]])

            def v_both(z_src, z_tar, t):
                v = bb.transformer(hidden_states=torch.cat([z_src, z_src, z_tar, z_tar]), timestep=t.expand(4),
                                   encoder_hidden_states=emb, pooled_projections=pooled, return_dict=False)[0]
                su, sc, tu, tc = v.chunk(4)
                return su + c["src_guidance_scale"] * (sc - su), tu + c["tar_guidance_scale"] * (tc - tu)

        z_edit, x_tar = x0.clone(), None
        for i, t in enumerate(timesteps):
            if T - i > n_max:
                continue
            s_i, s_next = sigmas[i], sigmas[i + 1]
            if T - i > n_min:
                v_delta = torch.zeros_like(x0)
                for _ in range(n_avg):
                    noise = torch.randn(x0.shape, generator=generator).to(x0)
                    z_src = (1 - s_i) * x0 + s_i * noise
                    v_src, v_tar = v_both(z_src, z_edit + z_src - x0, t)
                    v_delta += (v_tar - v_src) / n_avg
                z_edit = z_edit + (s_next - s_i) * v_delta
            else:
                if x_tar is None:
                    noise = torch.randn(x0.shape, generator=generator).to(x0)
                    x_tar = z_edit + (s_i * noise + (1 - s_i) * x0) - x0
                x_tar = x_tar + (s_next - s_i) * v_both(x_tar, x_tar, t)[1]  # the source half is wasted work
        out = z_edit if x_tar is None else x_tar
        if bb.family == "flux":
            out = pipe._unpack_latents(out, bb.resolution, bb.resolution, pipe.vae_scale_factor)
    return _finish(bb, out, rows)


@torch.no_grad()
def rf_inversion_reference(editor, sample, generator: torch.Generator) -> RefResult:
    bb, c = editor.backbone, editor.config
    flux = bb.family == "flux"
    y0 = bb.vae.encode(_image(bb, sample)).latent_dist.sample(generator=generator)
    y0 = (y0 - bb.vae.config.shift_factor) * bb.vae.config.scaling_factor
    n_steps = c.num_inversion_steps
    with count_unet_rows(bb.transformer) as rows:
        if flux:
            pipe, y0, ids = _flux_setup(bb, y0)
            src = pipe.encode_prompt(prompt=c.source_prompt, prompt_2=c.source_prompt, device=bb.device,
                                     max_sequence_length=bb.max_sequence_length)
            tar = pipe.encode_prompt(prompt=sample.target_prompt, prompt_2=None, device=bb.device,
                                     max_sequence_length=bb.max_sequence_length)

            def v_inv(y, t_i):
                return _flux_call(bb, y, t_i.reshape(1), *src, ids, c.source_guidance_scale)

            def v_tar(x, t):
                return _flux_call(bb, x, t.expand(1).to(x.dtype) / 1000, *tar, ids, editor.guidance_scale)
        else:
            pipe = bb.pipe
            emb, _, pooled, _ = pipe.encode_prompt(prompt=c.source_prompt, prompt_2=None, prompt_3=None,
                                                   do_classifier_free_guidance=False, device=bb.device,
                                                   max_sequence_length=bb.max_sequence_length)
            te, tn, tp, tnp = pipe.encode_prompt(prompt=sample.target_prompt, prompt_2=None, prompt_3=None,
                                                 negative_prompt=c.negative_prompt, do_classifier_free_guidance=True,
                                                 device=bb.device, max_sequence_length=bb.max_sequence_length)

            def v_inv(y, t_i):
                return bb.transformer(hidden_states=y, timestep=(1000 * t_i).reshape(1), encoder_hidden_states=emb,
                                      pooled_projections=pooled, return_dict=False)[0]

            def v_tar(x, t):
                v = bb.transformer(hidden_states=torch.cat([x, x]), timestep=t.expand(2),
                                   encoder_hidden_states=torch.cat([tn, te]), pooled_projections=torch.cat([tnp, tp]),
                                   return_dict=False)[0]
                vu, vc = v.chunk(2)
                return vu + editor.guidance_scale * (vc - vu)
        # the pipeline's retrieve_timesteps (FLUX: linspace(1, 1/N, N) shifted by mu) for both loops
        timesteps, sigmas = bb.schedule(n_steps)
        # Algorithm 1: controlled forward ODE
        y1 = torch.randn(y0.shape, generator=generator).to(y0)
        y, n = y0, len(sigmas)
        for i in range(n - 1):
            t_i = torch.tensor(i / n, dtype=y.dtype, device=bb.device)
            u = v_inv(y, t_i)
            y = y + (u + c.gamma * ((y1 - y) / (1 - t_i) - u)) * (sigmas[i] - sigmas[i + 1])
        # Algorithm 2: controlled reverse ODE
        start, stop = int(c.start_timestep * n_steps), min(int(c.stop_timestep * n_steps), n_steps)
        x = y
        for i, t in enumerate(timesteps):
            t_i = 1 - t / 1000
            v = -v_tar(x, t)
            eta = c.eta if start <= i < stop else 0.0
            x = x + (v + eta * ((y0 - x) / (1 - t_i) - v)) * (sigmas[i] - sigmas[i + 1])
        if flux:
            x = pipe._unpack_latents(x, bb.resolution, bb.resolution, pipe.vae_scale_factor)
    return _finish(bb, x, rows)
