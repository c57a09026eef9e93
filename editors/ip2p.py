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

The sampling loop is the one of diffusers' ``StableDiffusionInstructPix2PixPipeline`` (built here from
the shared backbone's modules, nothing loaded twice, and kept as ``self.pipe`` for its scheduler
config), written out so that it can (1) keep the latents and the Euler-ancestral step in fp32 while the
UNet runs in the backbone's dtype (bf16/fp16 on a GPU), (2) batch several samples into one UNet call
(``edit_batch``: rows [c_1..c_B, ∅..., ∅...], each sample's noise drawn from its own generator, so a
sample's output does not depend on its batch-mates), and (3) skip the pipeline's per-call prompt and
image re-processing. Attention stays diffusers' fused SDPA (nothing here reads attention maps).
``tests/test_fast_vs_reference.py`` checks it equals the shipped pipeline (fp32, to 1e-3).
The image latent is the VAE posterior mode, unscaled, as in the original and in diffusers.

Against the authors' code (PnPInversion's ``run_editing_instructpix2pix.py``: k-diffusion's
``CompVisDenoiser`` + ``sample_euler_ancestral``), checked by running it on the toy backbone
(``tests/golden/ip2p-*.npz``, README there):
  * noise levels: k-diffusion's ``get_sigmas(n)`` (``k_diffusion_sigmas``): t = linspace(999, 0, n), sigma
    interpolated in log sigma over LDM's float64-cumprod ``alphas_cumprod``. diffusers' Euler-ancestral
    interpolates sigma linearly, which differs where t is fractional (50 steps: up to 7.6e-5 relative; toy
    final latent 4.3e-4 → 1.2e-4 from the authors' once fixed). The UNet sees t itself, where k-diffusion
    passes ``sigma_to_t(sigma)`` (the same t to ~1e-4).
  * uint8: truncation (``x.type(torch.uint8)``), not diffusers' rounding (``numpy_to_pil``).
  * noise: the same draws in the same order (initial latent × sigma_0, then one per step) from the
    sample's generator; the authors draw with the global RNG of the model's device (CUDA) after
    ``setup_seed(1234)``, so on a GPU their per-seed noise cannot be reproduced by a CPU generator (the
    harness keeps its device-independent CPU draws; on the CPU the two are the same numbers).
  * precision: PIE-Bench ran under ``autocast("cuda")`` (fp16 matmuls); the harness runs the UNet in the
    backbone's dtype with fp32 latents and sampler arithmetic.
Measured (toy, fp32, 10 and 50 steps, 2 samples): final latent max |Δ| ≤ 2.2e-4, uint8 ≤ 1 level on
≤ 0.02 % of the values.

A sample without an instruction (PIE_Bench_pp has none) is skipped with a recorded reason:
``requires`` includes ``instruction`` and ``Editor.skip_reason`` reports it before ``edit`` runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from PIL import Image

from pie_bench.core.sample import Sample

from editors.backbone import load_backbone
from editors.base import EditOutput, Editor, EditorConfig
from editors.compile import compile_unet


@dataclass
class InstructPix2PixConfig(EditorConfig):
    num_inference_steps: int = 50  # PIE-Bench (the original CLI: 100)
    guidance_scale: float = 7.5  # text guidance s_T
    image_guidance_scale: float = 1.5  # image guidance s_I; diffusers disables all guidance below 1
    torch_compile: str = ""  # "" (eager) or a torch.compile mode, e.g. reduce-overhead (CUDA graphs); editors.compile
    compile_backend: str = "inductor"


def euler_ancestral_scheduler(ddim_config):
    """The original sampler (k-diffusion Euler ancestral, linspace sigmas) with the backbone's betas."""
    from diffusers import EulerAncestralDiscreteScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")
    return EulerAncestralDiscreteScheduler(**{k: ddim_config[k] for k in keys if k in ddim_config},
                                           timestep_spacing="linspace")


def k_diffusion_sigmas(ddim_config, n: int) -> tuple[list[float], torch.Tensor]:
    """The original sampler's noise levels: k-diffusion's ``CompVisDenoiser.get_sigmas(n)`` over the LDM model's
    ``alphas_cumprod`` (betas and their cumulative product in float64, stored as float32, as LDM's
    ``register_schedule`` does): t = linspace(T-1, 0, n), sigma(t) interpolated linearly in log sigma between
    the two neighbouring training levels, then a final 0. Returns (n + 1 sigmas, the n timesteps)."""
    import numpy as np

    T = int(ddim_config.get("num_train_timesteps", 1000))
    kind, b0, b1 = ddim_config.get("beta_schedule", "scaled_linear"), ddim_config["beta_start"], ddim_config["beta_end"]
    if ddim_config.get("trained_betas") is not None:
        betas = np.asarray(ddim_config["trained_betas"], dtype=np.float64)
    elif kind == "scaled_linear":  # LDM's "linear": linspace of the square roots
        betas = np.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=np.float64) ** 2
    elif kind == "linear":
        betas = np.linspace(b0, b1, T, dtype=np.float64)
    else:
        from diffusers import DDPMScheduler

        betas = DDPMScheduler(**{k: v for k, v in ddim_config.items() if not k.startswith("_")}).betas.double().numpy()
    ac = torch.tensor(np.cumprod(1.0 - betas), dtype=torch.float32)
    log_sigmas = (((1 - ac) / ac) ** 0.5).log()
    t = torch.linspace(T - 1, 0, n)
    lo, hi, w = t.floor().long(), t.ceil().long(), t.frac()
    sigmas = ((1 - w) * log_sigmas[lo] + w * log_sigmas[hi]).exp()
    return sigmas.tolist() + [0.0], t


class InstructPix2PixEditor(Editor):
    name = "ip2p"
    Config = InstructPix2PixConfig
    requires = frozenset({"image", "instruction"})
    paper = "Brooks et al., InstructPix2Pix: Learning to Follow Image Editing Instructions, CVPR 2023"
    stochastic = True  # the initial latent and every Euler-ancestral step draw noise from the generator

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        from diffusers import StableDiffusionInstructPix2PixPipeline

        super().load(backbone, device, dtype)
        self.backbone = bb = load_backbone(backbone, device, dtype, variant="ip2p")
        if bb.unet.config.in_channels != 2 * bb.vae.config.latent_channels:
            from pie_bench.core.errors import ConfigError

            raise ConfigError(f"ip2p: backbone {backbone!r} has a UNet with {bb.unet.config.in_channels} input "
                              "channels; InstructPix2Pix needs the 8-channel UNet of timbrooks/instruct-pix2pix")
        self.pipe = StableDiffusionInstructPix2PixPipeline(
            vae=bb.vae, text_encoder=bb.text_encoder, tokenizer=bb.tokenizer, unet=bb.unet,
            scheduler=euler_ancestral_scheduler(bb.scheduler.config), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        self.pipe.set_progress_bar_config(disable=True)
        self.unet = compile_unet(bb.unet, self.config.torch_compile, self.config.compile_backend, self.name)

    def source_image(self, sample: Sample) -> Image.Image:
        """The source at the backbone's working resolution (512 for SD, 64 for the toy)."""
        img = Image.fromarray(sample.image)
        r = self.backbone.resolution
        return img if img.size == (r, r) else img.resize((r, r), Image.LANCZOS)

    @property
    def guided(self) -> bool:
        # diffusers' rule: guidance only when s_T > 1 and s_I >= 1, else a single conditional row
        return self.config.guidance_scale > 1 and self.config.image_guidance_scale >= 1

    @torch.no_grad()
    def edit_latents_batch(self, samples: list[Sample], generators: list[torch.Generator]) -> torch.Tensor:
        """Final latents (B, 4, h, w), fp32, for several samples sharing one UNet call per step."""
        if len(samples) != len(generators):
            raise ValueError("edit_latents_batch: one generator per sample")
        cfg, bb, unet = self.config, self.backbone, self.unet
        B, dev = len(samples), bb.device
        sigmas, timesteps = k_diffusion_sigmas(self.backbone.scheduler.config, cfg.num_inference_steps)
        timesteps = timesteps.to(dev)
        text = bb.encode_prompt([s.instruction for s in samples])
        images = torch.cat([bb.image_to_tensor(s.image) for s in samples])
        img_lat = bb.vae.encode(images).latent_dist.mode()
        if self.guided:
            null = bb.encode_prompt([""]).expand(B, -1, -1)
            context = torch.cat([text, null, null])
            img_lat = torch.cat([img_lat, img_lat, torch.zeros_like(img_lat)])
        else:
            context = text
        shape = (1, bb.vae.config.latent_channels, *img_lat.shape[-2:])
        n = len(timesteps)
        # Every normal draw (the initial latent, then one per step) is made where each generator lives (the
        # CPU for the harness), in the order diffusers' randn_tensor makes them. The CPU sampler fills
        # blocks of 16, so when a draw's size is a multiple of 16 one draw of n + 1 latents yields the same
        # numbers: all of them are then drawn up front and copied to the device once, not once per step.
        upfront = all(g.device.type == "cpu" for g in generators) and math.prod(shape) % 16 == 0
        if upfront:
            bank = torch.stack([torch.randn((n + 1, *shape[1:]), generator=g, dtype=torch.float32)
                                for g in generators], 1).to(dev)  # (n + 1, B, C, h, w)
            draw_all = iter(bank)
            draw_next = lambda: next(draw_all)
        else:
            draw_next = lambda: torch.cat([torch.randn(shape, generator=g, device=g.device, dtype=torch.float32)
                                           .to(dev) for g in generators])
        x = draw_next() * sigmas[0]  # the original: torch.randn_like(...) * sigmas[0]
        rows = 3 if self.guided else 1
        dtype = getattr(unet, "dtype", bb.dtype)
        for i, t in enumerate(timesteps):
            sigma, sigma_to = sigmas[i], sigmas[i + 1]
            x_in = (x / (sigma ** 2 + 1) ** 0.5).repeat(rows, 1, 1, 1)
            eps = unet(torch.cat([x_in, img_lat.to(x_in)], dim=1).to(dtype), t,
                       encoder_hidden_states=context.to(dtype), return_dict=False)[0].float()
            if self.guided:
                e_text, e_img, e_null = eps.chunk(3)
                eps = e_null + cfg.guidance_scale * (e_text - e_img) + cfg.image_guidance_scale * (e_img - e_null)
            # Euler ancestral (k-diffusion's sample_euler_ancestral, eta 1)
            sigma_up = (sigma_to ** 2 * (sigma ** 2 - sigma_to ** 2) / sigma ** 2) ** 0.5
            sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
            x = x + eps * (sigma_down - sigma)
            x = x + draw_next() * sigma_up
        return x

    def edit_latents(self, sample: Sample, generator: torch.Generator) -> torch.Tensor:
        return self.edit_latents_batch([sample], [generator])

    def edit_batch(self, samples: list[Sample], generators: list[torch.Generator]) -> list[EditOutput]:
        """Edit several samples in one batched sampling loop (``--batch-size``); same outputs as ``edit``
        one by one up to floating-point reassociation."""
        latents = self.edit_latents_batch(samples, generators)
        evals = self.config.num_inference_steps * (3 if self.guided else 1)
        images = self.backbone.decode(latents, quantize="truncate")  # PnPInversion: x.type(torch.uint8)
        return [EditOutput(image=im, extras={"unet_evals": evals, "batch_size": len(samples),
                                             "final_latent": latents[i:i + 1].float().cpu().numpy()})
                for i, im in enumerate(images)]

