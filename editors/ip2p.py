"""InstructPix2Pix (``ip2p``): edit an image by following a written instruction.

Paper: Brooks, Holynski, Efros, "InstructPix2Pix: Learning to Follow Image Editing Instructions",
CVPR 2023 (arXiv:2211.09800). Weights: ``timbrooks/instruct-pix2pix`` (a Stable Diffusion UNet with
8 input channels: the noisy latent and the source image's latent, concatenated).

PIE-Bench settings (``cure-lab/PnPInversion: run_editing_instructpix2pix.py``): 50 steps (the
original CLI uses 100), text guidance 7.5, image guidance 1.5, Euler-ancestral sampling, seed 1234,
text = the sample's ``editing_instruction``. Each step is one UNet call on the batch
[instruction+image, empty+image, empty+no image] and

    eps = eps(∅,∅) + s_T (eps(c,img) - eps(∅,img)) + s_I (eps(∅,img) - eps(∅,∅)),

so a larger image guidance ``s_I`` keeps the output closer to the source.

The sampling loop is diffusers' ``StableDiffusionInstructPix2PixPipeline``, built from the shared
backbone's modules (nothing is loaded twice). The image latent is the VAE posterior mode, unscaled,
as in the original and in diffusers. The Euler-ancestral scheduler uses ``linspace`` timestep
spacing, which is what the original k-diffusion sampler's ``get_sigmas`` does.

A sample without an instruction (PIE_Bench_pp has none) is skipped with a recorded reason:
``requires`` includes ``instruction`` and ``Editor.skip_reason`` reports it before ``edit`` runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from pie_bench.sample import Sample

from .backbone import load_backbone
from .base import EditOutput, Editor, EditorConfig


@dataclass
class InstructPix2PixConfig(EditorConfig):
    num_inference_steps: int = 50  # PIE-Bench (the original CLI: 100)
    guidance_scale: float = 7.5  # text guidance s_T
    image_guidance_scale: float = 1.5  # image guidance s_I; diffusers disables all guidance below 1


def euler_ancestral_scheduler(ddim_config):
    """The original sampler (k-diffusion Euler ancestral, linspace sigmas) with the backbone's betas."""
    from diffusers import EulerAncestralDiscreteScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")
    return EulerAncestralDiscreteScheduler(**{k: ddim_config[k] for k in keys if k in ddim_config},
                                           timestep_spacing="linspace")


class InstructPix2PixEditor(Editor):
    name = "ip2p"
    Config = InstructPix2PixConfig
    requires = frozenset({"image", "instruction"})
    paper = "Brooks et al., InstructPix2Pix: Learning to Follow Image Editing Instructions, CVPR 2023"

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        from diffusers import StableDiffusionInstructPix2PixPipeline

        super().load(backbone, device, dtype)
        self.backbone = bb = load_backbone(backbone, device, dtype, variant="ip2p")
        if bb.unet.config.in_channels != 2 * bb.vae.config.latent_channels:
            from pie_bench.errors import ConfigError

            raise ConfigError(f"ip2p: backbone {backbone!r} has a UNet with {bb.unet.config.in_channels} input "
                              "channels; InstructPix2Pix needs the 8-channel UNet of timbrooks/instruct-pix2pix")
        self.pipe = StableDiffusionInstructPix2PixPipeline(
            vae=bb.vae, text_encoder=bb.text_encoder, tokenizer=bb.tokenizer, unet=bb.unet,
            scheduler=euler_ancestral_scheduler(bb.scheduler.config), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        self.pipe.set_progress_bar_config(disable=True)

    def source_image(self, sample: Sample) -> Image.Image:
        """The source at the backbone's working resolution (512 for SD, 64 for the toy)."""
        img = Image.fromarray(sample.image)
        r = self.backbone.resolution
        return img if img.size == (r, r) else img.resize((r, r), Image.LANCZOS)

    @torch.no_grad()
    def edit_latents(self, sample: Sample, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        return self.pipe(prompt=sample.instruction, image=self.source_image(sample),
                         num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale,
                         image_guidance_scale=cfg.image_guidance_scale, generator=generator,
                         output_type="latent").images

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        latents = self.edit_latents(sample, generator)
        guided = self.config.guidance_scale > 1 and self.config.image_guidance_scale >= 1
        return EditOutput(image=self.backbone.decode(latents)[0],
                          extras={"unet_evals": self.config.num_inference_steps * (3 if guided else 1)})
