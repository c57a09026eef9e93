"""FLUX.1 Kontext [dev] (``flux_kontext``): instruction editing by in-context generation with a rectified-flow
transformer.

Paper: Black Forest Labs, "FLUX.1 Kontext: Flow Matching for In-Context Image Generation and Editing in Latent
Space", 2025 (arXiv:2506.15742); weights ``black-forest-labs/FLUX.1-Kontext-dev`` (FLUX.1 [dev] non-commercial
licence, gated). The source's VAE latents are appended to the noisy latents as extra tokens (their rotary ids
offset by one in the first axis) and the instruction enters through CLIP-L and T5-XXL, as in FLUX.1 [dev]; the
model is guidance-distilled (the guidance scale is a transformer input, one pass per step). Run as shipped:
diffusers' ``FluxKontextPipeline`` (``editors.pipeline_editor`` says what the harness adds around the call).

Settings: the model card's and diffusers' example: guidance 2.5, the pipeline's 28 steps and its flow-matching
schedule (dynamic shift from the checkpoint's scheduler config), no true CFG, T5 sequence length 512, bf16 weights
on a GPU. No PIE-Bench numbers published (the paper reports its own KontextBench).

Resolution: the pipeline snaps the source to the nearest of Kontext's training resolutions
(``PREFERRED_KONTEXT_RESOLUTIONS``: 1024x1024 for a square image, LANCZOS) and generates 1024x1024 (its default
``max_area``), so PIE-Bench's 512x512 source is upsampled inside the pipeline and the output brought back to
512x512.

Memory (bf16 weights, counted from the published configs on the meta device, ``benchmarks/flow_cost.py`` for the
FLUX.1 [dev] architecture Kontext shares): transformer 11.90 B parameters, T5-XXL encoder 4.76 B, CLIP-L 0.12 B,
VAE 0.08 B: ~33.7 GB.

Backbones: ``flux-kontext`` (the hub id), a hub id or a local folder of a ``FluxKontextPipeline``, ``toy``: the toy
FLUX of ``editors.flux_backbone`` (its transformer, CLIP, T5 and tokenizers, same configs and seeds) in a
FluxKontextPipeline folder. Toy deviation, kept for CPU speed: its VAE has six blocks (32x compression; the toy
FLUX's has three, 4x, for 64 px) because Kontext always works at 1024x1024, which with 4x would be 2 x 16384
image tokens; at 32x it is 2 x 256.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from editors.backbone import TOY_SEED, toy_folder
from editors.base import EditorConfig
from editors.pipeline_editor import PipelineEditor

FLUX_KONTEXT_DEV = "black-forest-labs/FLUX.1-Kontext-dev"
MAX_AREA = 1024 ** 2  # FluxKontextPipeline's default max_area


@dataclass
class FluxKontextConfig(EditorConfig):
    num_inference_steps: int = 28
    guidance_scale: float = 2.5  # the distilled guidance (an input of the transformer), not classifier-free
    max_sequence_length: int = 512  # T5 tokens


def toy_kontext_configs() -> dict:
    from editors.flux_backbone import toy_flux_configs

    cfg = toy_flux_configs()
    cfg["vae"] = dict(cfg["vae"], block_out_channels=(8, 8, 16, 16, 32, 32),
                      down_block_types=("DownEncoderBlock2D",) * 6, up_block_types=("UpDecoderBlock2D",) * 6)
    return cfg


def build_toy_kontext_folder(seed: int = TOY_SEED, root: Optional[Path] = None) -> Path:
    """Create (once) the toy FLUX.1 Kontext as a diffusers FluxKontextPipeline folder: the toy FLUX's seeds per
    component, so everything but the VAE has the toy FLUX's weights."""
    from editors.flux_backbone import write_toy_flux_components

    cfg = toy_kontext_configs()

    def write(tmp: Path) -> None:
        write_toy_flux_components(tmp, cfg, seed, "FluxKontextPipeline")

    return toy_folder("flux-kontext", cfg, seed, write, root)


class FluxKontextEditor(PipelineEditor):
    name = "flux_kontext"
    Config = FluxKontextConfig
    paper = "Black Forest Labs, FLUX.1 Kontext: Flow Matching for In-Context Image Generation and Editing, 2025"
    backbones = ("flux-kontext (black-forest-labs/FLUX.1-Kontext-dev: 12B transformer + T5-XXL + CLIP-L, ~33.7 GB "
                 "bf16 weights), a hub id or local folder, toy")
    pipeline_name = "FluxKontextPipeline"
    aliases = {"flux-kontext": FLUX_KONTEXT_DEV}

    @classmethod
    def build_toy(cls) -> Path:
        return build_toy_kontext_folder()

    def call_settings(self, batch: int) -> dict:
        c = self.config
        return dict(num_inference_steps=c.num_inference_steps, guidance_scale=c.guidance_scale,
                    max_sequence_length=c.max_sequence_length)

    def working_size(self, image) -> tuple[int, int]:
        # FluxKontextPipeline.__call__ without height/width: a square at its default max_area (1024**2), floored
        # to the 2x2-packed latent grid; the source's own size only picks the conditioning resolution
        m = self.pipe.vae_scale_factor * 2
        side = round(MAX_AREA ** 0.5) // m * m
        return side, side

    @staticmethod
    def decode_pixels(pipe, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        # the tail of FluxKontextPipeline.__call__
        z = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
        z = (z / pipe.vae.config.scaling_factor) + pipe.vae.config.shift_factor
        return pipe.vae.decode(z, return_dict=False)[0]
