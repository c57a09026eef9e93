"""Where each attention layer of a diffusers ``UNet2DConditionModel`` sits: down/mid/up, self or
cross, and its downscale relative to the latent. Derived from the model's own block structure, so the
SD1.x numbers (64² latent, 16² blend maps, five blend layers) and the toy ones (16² latent, 8² maps)
both fall out of the same code."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttnLayer:
    name: str       # processor key, e.g. "up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor"
    place: str      # "down" | "mid" | "up"
    is_cross: bool
    downscale: int  # latent side / this layer's side

    def side(self, latent_hw: tuple[int, int]) -> tuple[int, int]:
        return latent_hw[0] // self.downscale, latent_hw[1] // self.downscale


def _block_scales(unet) -> dict[str, int]:
    """Downscale of every down/mid/up block from where the model places its (up/down)samplers."""
    scales, scale = {}, 1
    for i, block in enumerate(unet.down_blocks):
        scales[f"down_blocks.{i}"] = scale
        if getattr(block, "downsamplers", None) is not None:
            scale *= 2
    scales["mid_block"] = scale
    for i, block in enumerate(unet.up_blocks):
        scales[f"up_blocks.{i}"] = scale
        if getattr(block, "upsamplers", None) is not None:
            scale //= 2
    return scales


def attention_layers(unet: torch.nn.Module) -> list[AttnLayer]:
    """Every attention processor slot of ``unet`` with its place, kind and downscale."""
    from diffusers.models.attention_processor import Attention

    scales = _block_scales(unet)
    layers = []
    for name, module in unet.named_modules():
        if not isinstance(module, Attention):
            continue
        parts = name.split(".")
        block = "mid_block" if parts[0] == "mid_block" else ".".join(parts[:2])
        if block not in scales:
            continue  # an attention outside the down/mid/up path (none in SD1.x)
        place = "mid" if block == "mid_block" else parts[0].split("_")[0]
        layers.append(AttnLayer(f"{name}.processor", place, bool(module.is_cross_attention), scales[block]))
    return layers


def blend_layers(layers: list[AttnLayer], downscale: int | None = None) -> list[AttnLayer]:
    """LocalBlend's layers: the cross-attention layers of the down and up blocks at their coarsest
    resolution (SD1.x: the five 16² layers of a 64² latent), or at ``downscale`` when given."""
    candidates = [l for l in layers if l.is_cross and l.place in ("down", "up")]
    if not candidates:
        return []
    target = downscale or max(l.downscale for l in candidates)
    return [l for l in candidates if l.downscale == target]
