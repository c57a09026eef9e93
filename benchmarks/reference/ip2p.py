"""Reference-style InstructPix2Pix: diffusers' ``StableDiffusionInstructPix2PixPipeline`` as shipped
(one call per image, prompt and image re-processed each call, latents in the pipeline's dtype), with
the original LDM code's explicit attention (no SDPA) and fp32 weights, as PIE-Bench's vendored
``instruct-pix2pix`` code runs it (its fp16 autocast aside)."""
from __future__ import annotations

import torch
from PIL import Image

from benchmarks.reference.common import RefResult, count_unet_rows, explicit_attention


def ip2p_reference(editor, sample, generator: torch.Generator, bb=None) -> RefResult:
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from editors.ip2p import euler_ancestral_scheduler

    bb = bb or editor.backbone
    cfg = editor.config
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=bb.vae, text_encoder=bb.text_encoder, tokenizer=bb.tokenizer, unet=bb.unet,
        scheduler=euler_ancestral_scheduler(bb.scheduler.config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    r = bb.resolution
    image = Image.fromarray(sample.image)
    image = image if image.size == (r, r) else image.resize((r, r), Image.LANCZOS)
    with explicit_attention(bb.unet), count_unet_rows(bb.unet) as rows, torch.no_grad():
        latents = pipe(prompt=sample.instruction, image=image, num_inference_steps=cfg.num_inference_steps,
                       guidance_scale=cfg.guidance_scale, image_guidance_scale=cfg.image_guidance_scale,
                       generator=generator, output_type="latent").images
        out = bb.decode(latents)[0]
    return RefResult(latents=latents.float(), image=out, extras={"unet_evals": rows[0]})
