"""Reference-style Pix2Pix-Zero: diffusers' (deprecated, still shipped) ``StableDiffusionPix2PixZeroPipeline``
as shipped: ``invert()`` then ``__call__`` with CFG (the caption as negative prompt, so the reference
pass runs two rows), every cross-attention map of the reference pass stored for all steps and copied
to the CPU, explicit attention (no SDPA) in every layer, fp32. Raises ``ImportError`` once diffusers
drops the pipeline (the benchmark then reports the reference as unavailable)."""
from __future__ import annotations

import torch
from PIL import Image

from benchmarks.reference.common import RefResult, count_unet_rows


def pipeline_class():
    from diffusers.pipelines.deprecated.stable_diffusion_variants.pipeline_stable_diffusion_pix2pix_zero import \
        StableDiffusionPix2PixZeroPipeline

    return StableDiffusionPix2PixZeroPipeline


def pix2pix_zero_reference(editor, sample, generator: torch.Generator, bb=None) -> RefResult:
    from diffusers import DDIMInverseScheduler

    bb = bb or editor.backbone
    cfg = editor.config
    pipe = pipeline_class()(
        vae=bb.vae, text_encoder=bb.text_encoder, tokenizer=bb.tokenizer, unet=bb.unet, scheduler=bb.new_scheduler(),
        feature_extractor=None, safety_checker=None, caption_generator=None, caption_processor=None,
        inverse_scheduler=DDIMInverseScheduler.from_config(bb.scheduler.config), requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
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
            out = bb.decode(latents)[0]
    finally:
        bb.unet.set_attn_processor(saved)
        # the pipeline's prepare_unet makes the cross-attention layers trainable and its guidance
        # backward() fills their .grad: undo both so the shared backbone stays frozen for other editors
        bb.unet.requires_grad_(False)
        for p in bb.unet.parameters():
            p.grad = None
    return RefResult(latents=latents.float(), image=out, extras={"unet_evals": rows[0]})
