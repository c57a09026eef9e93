"""Reference-style Pix2Pix-Zero: diffusers' (deprecated, still shipped) ``StableDiffusionPix2PixZeroPipeline``:
``invert()`` then ``__call__`` with CFG (the caption as negative prompt, so the reference pass runs two
rows), every cross-attention map of the reference pass stored for all steps and copied to the CPU,
explicit attention (no SDPA) in every layer, fp32. Raises ``ImportError`` once diffusers drops the
pipeline (the benchmark then reports the reference as unavailable).

Two pieces are set to what PIE-Bench's own code (``cure-lab/PnPInversion``, ``models/pix2pix_zero``)
does, because the shipped pipeline differs there and the editor follows the authors:

* the inverse scheduler, ``AuthorsInverseScheduler``: UNet at t = 1, 1 + Δ, …, 1000 − Δ + 1, the step
  at t from ᾱ[t − 1] to ᾱ[min(t + Δ, 1000) − 1] (diffusers' ``DDIMInverseScheduler`` runs ᾱ[t − Δ] → ᾱ[t]),
  and the edit scheduler with ``steps_offset`` 1 (timesteps 1000 − Δ + 1, …, 1);
* the regulariser's roll amounts, Python ``random.randrange`` from an RNG seeded with the sample's seed
  (the pipeline draws ``torch.randint`` from the generator): ``pipeline_class`` overrides only the
  draw inside the pipeline's own per-channel loop.

Everything else (the inversion and edit loops, the regulariser steps, the attention maps, the guidance
loss and its SGD step, CFG) is diffusers' code."""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.reference.common import RefResult, count_unet_rows


def pipeline_class():
    from diffusers.pipelines.deprecated.stable_diffusion_variants.pipeline_stable_diffusion_pix2pix_zero import \
        StableDiffusionPix2PixZeroPipeline

    class Pix2PixZeroPythonRolls(StableDiffusionPix2PixZeroPipeline):
        """The shipped pipeline, its roll amounts drawn from ``self.roll_rng`` (a ``random.Random``)."""

        roll_rng: random.Random = None

        def auto_corr_loss(self, hidden_states, generator=None):
            loss = 0.0
            for i in range(hidden_states.shape[0]):
                for j in range(hidden_states.shape[1]):
                    noise = hidden_states[i:i + 1, j:j + 1]
                    while True:
                        k = self.roll_rng.randrange(noise.shape[2] // 2)
                        loss += (noise * torch.roll(noise, shifts=k, dims=2)).mean() ** 2
                        loss += (noise * torch.roll(noise, shifts=k, dims=3)).mean() ** 2
                        if noise.shape[2] <= 8:
                            break
                        noise = F.avg_pool2d(noise, kernel_size=2)
            return loss

    return Pix2PixZeroPythonRolls


def authors_inverse_scheduler(config):
    from diffusers import DDIMInverseScheduler
    from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput

    class AuthorsInverseScheduler(DDIMInverseScheduler):
        def set_timesteps(self, num_inference_steps, device=None):
            self.num_inference_steps = num_inference_steps
            stride = self.config.num_train_timesteps // num_inference_steps
            self.timesteps = (torch.arange(num_inference_steps) * stride + 1).to(device)

        def step(self, model_output, timestep, sample, return_dict=True, **kwargs):
            T = self.config.num_train_timesteps
            t = int(timestep)
            a = self.alphas_cumprod[t - 1]
            a_next = self.alphas_cumprod[min(t + T // self.num_inference_steps, T) - 1]
            x0 = (sample - (1 - a).sqrt() * model_output) / a.sqrt()
            prev = a_next.sqrt() * x0 + (1 - a_next).sqrt() * model_output
            return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=x0) if return_dict else (prev, x0)

    return AuthorsInverseScheduler.from_config(config)


def build_pipeline(bb, seed: int):
    pipe = pipeline_class()(
        vae=bb.vae, text_encoder=bb.text_encoder, tokenizer=bb.tokenizer, unet=bb.unet,
        scheduler=bb.new_scheduler(steps_offset=1), feature_extractor=None, safety_checker=None,
        caption_generator=None, caption_processor=None, inverse_scheduler=authors_inverse_scheduler(bb.scheduler.config),
        requires_safety_checker=False)
    pipe.roll_rng = random.Random(seed)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pix2pix_zero_reference(editor, sample, generator: torch.Generator, bb=None) -> RefResult:
    bb = bb or editor.backbone
    cfg = editor.config
    pipe = build_pipeline(bb, generator.initial_seed())
    r = bb.resolution
    image = Image.fromarray(sample.image)
    image = image if image.size == (r, r) else image.resize((r, r), Image.LANCZOS)
    saved = dict(bb.unet.attn_processors)  # the pipeline replaces them for good
    try:
        with count_unet_rows(bb.unet) as rows, torch.no_grad():
            caption = editor.caption(sample)
            cond = bb.encode_prompt([caption]).float()
            emb = bb.encode_prompt([sample.target_prompt, sample.source_prompt]).float()
            inv = pipe.invert(prompt_embeds=cond, image=image, num_inference_steps=cfg.num_inference_steps,
                              guidance_scale=1, generator=generator, lambda_auto_corr=cfg.lambda_ac,
                              lambda_kl=cfg.lambda_kl, num_reg_steps=cfg.num_reg_steps,
                              num_auto_corr_rolls=cfg.num_ac_rolls, output_type="latent").latents
            latents = pipe(prompt_embeds=cond, negative_prompt_embeds=cond, source_embeds=emb[1:],
                           target_embeds=emb[:1], latents=inv, num_inference_steps=cfg.num_inference_steps,
                           guidance_scale=cfg.guidance_scale, cross_attention_guidance_amount=cfg.xa_guidance,
                           output_type="latent").images
            out = bb.decode(latents, quantize="round")[0]
    finally:
        bb.unet.set_attn_processor(saved)
        # the pipeline's prepare_unet makes the cross-attention layers trainable and its guidance
        # backward() fills their .grad: undo both so the shared backbone stays frozen for other editors
        bb.unet.requires_grad_(False)
        for p in bb.unet.parameters():
            p.grad = None
    return RefResult(latents=latents.float(), image=out, extras={"unet_evals": rows[0]})
