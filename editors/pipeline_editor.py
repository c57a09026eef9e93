"""Instruction editors that run an official diffusers pipeline as shipped: the part shared by
``editors.qwen_image_edit`` (``QwenImageEditPipeline``) and ``editors.flux_kontext`` (``FluxKontextPipeline``).

An edit is one call of the pipeline the way its model card calls it (``pipe(image=..., prompt=...)`` with the
card's settings); the harness adds only what surrounds the call:
  * the prompt is the sample's ``editing_instruction`` (PIE-Bench's instruction, as InstructPix2Pix reads it);
    a sample without one is skipped with the reason (``requires``);
  * a batch (``--batch-size``) is one call with lists: images, instructions and one generator per sample. Both
    pipelines draw each row's initial noise from that row's generator and encode the source with the VAE's
    posterior mode, so a row does not depend on its batch-mates (outputs equal one-by-one up to float
    reassociation; ``tests/test_instruction_editors.py``);
  * the pipeline works at its own resolution (both choose 1024x1024 for a square source: PIE-Bench's 512x512 is
    upsampled inside the pipeline, as a user's call does); the editor computes that size the pipeline's way
    and passes it, so it knows how to unpack the latents;
  * the call returns the final latents (``output_type="latent"``), decoded by ``PipelineBackbone.decode`` with
    the pipeline's own steps (its ``_unpack_latents``, the VAE's latent normalisation, ``vae.decode``, its
    ``image_processor.postprocess`` to PIL) and resized to PIE-Bench's 512x512 with PIL bicubic, antialiased, as
    every editor's ``editors.backbone.images_to_uint8``. The parity tests check this equals the image of the
    pipeline's own decode.

Backbone specs: the editor's alias (its hub id), ``toy`` (the editor's own tiny random model written once as a
diffusers folder and loaded back with ``from_pretrained``, the path real weights take), a hub id or a local
folder. Neither model has a ShapesEdit counterpart, nor runs on the SD or SD3 backbones: ``--editors all``
leaves them out there with the reason (``backbone_unavailable``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Optional

import numpy as np
import torch
from PIL import Image

from editors.backbone import LoadCache, pipeline_from_pretrained
from editors.base import EditOutput, Editor
from editors.flow_backbone import UNET_BACKBONES, is_flow_alias
from pie_bench.core.errors import ConfigError
from pie_bench.core.sample import IMAGE_SIZE, Sample

SHAPES = ("shapes", "shapes-flow")

_PIPES = LoadCache()


def load_pipeline(pipeline_cls, path: str, spec: str, device, dtype: torch.dtype):
    """``pipeline_cls.from_pretrained(path)`` once per (pipeline, path, device, dtype) in this process."""
    return _PIPES.get_or_load((pipeline_cls.__name__, path, str(device), dtype), lambda: pipeline_from_pretrained(
        pipeline_cls, path, spec, device, dtype,
        "download it once with `huggingface-cli download` or pass a local diffusers folder"))


@dataclass
class PipelineBackbone:
    """The loaded pipeline and how its latents become PIE-Bench images."""

    pipe: object
    model_id: str
    is_toy: bool
    # (pipe, packed latents, height, width) -> VAE output in [-1, 1], (B, 3, height, width): the pipeline's tail
    decode_pixels: Callable

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, height: int, width: int, size: int = IMAGE_SIZE) -> np.ndarray:
        """Packed final latents -> uint8 (B, size, size, 3): the pipeline's decode to PIL, then bicubic to size."""
        pixels = self.decode_pixels(self.pipe, latents, height, width)
        out = []
        for im in self.pipe.image_processor.postprocess(pixels, output_type="pil"):
            out.append(np.asarray(im if im.size == (size, size) else im.resize((size, size), Image.BICUBIC)))
        return np.stack(out)


class PipelineEditor(Editor):
    """An instruction editor on one diffusers pipeline. Subclasses set ``pipeline_name`` (the diffusers class) and
    ``aliases`` ({spec: hub id}) and implement ``build_toy``, ``call_settings``, ``working_size`` and
    ``decode_pixels``."""

    requires = frozenset({"image", "instruction"})
    stochastic = True  # the initial latent is drawn from the sample's generator
    pipeline_name: ClassVar[str] = ""
    aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def backbone_unavailable(cls, backbone: str) -> Optional[str]:
        runs_on = f"{', '.join(cls.aliases)}, toy, a hub id or a local {cls.pipeline_name} folder"
        if backbone in SHAPES:
            return f"{cls.name} has no ShapesEdit model (it runs on {runs_on})"
        if backbone in UNET_BACKBONES or is_flow_alias(backbone):  # the other families' names
            return f"{cls.name} runs its own pipeline ({runs_on}), not the {backbone!r} backbone"
        return None

    @classmethod
    def build_toy(cls) -> Path:
        """The toy model folder (built once per config under the cache)."""
        raise NotImplementedError

    def call_settings(self, batch: int) -> dict:
        """The pipeline call's settings (the model card's) for a batch of ``batch`` rows."""
        raise NotImplementedError

    def working_size(self, image: Image.Image) -> tuple[int, int]:
        """(width, height) the pipeline generates at for this source, as its ``__call__`` chooses it."""
        raise NotImplementedError

    @staticmethod
    def decode_pixels(pipe, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The pipeline's own decode of its packed final latents (the tail of its ``__call__``)."""
        raise NotImplementedError

    def passes_per_step(self) -> int:
        """Transformer passes per denoising step (2 with true classifier-free guidance)."""
        return 1

    def prepare_image(self, image: Image.Image) -> Image.Image:
        """The source as handed to the pipeline (the PIL image itself unless a pipeline needs it pre-sized)."""
        return image

    def resolve(self, spec: str) -> tuple[str, bool]:
        if spec == "toy":
            return str(self.build_toy()), True
        return self.aliases.get(spec, spec), False

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        import diffusers

        super().load(backbone, device, dtype)
        why = self.backbone_unavailable(backbone)
        if why:
            raise ConfigError(why)
        path, is_toy = self.resolve(backbone)
        self.pipe = load_pipeline(getattr(diffusers, self.pipeline_name), path, backbone, self.device, dtype)
        self.backbone = PipelineBackbone(pipe=self.pipe, model_id=f"toy:{self.name}" if is_toy else path,
                                         is_toy=is_toy, decode_pixels=self.decode_pixels)

    @torch.no_grad()
    def edit_batch(self, samples: list[Sample], generators: list[torch.Generator]) -> list[EditOutput]:
        if len(samples) != len(generators):
            raise ValueError(f"{self.name}: one generator per sample")
        settings = self.call_settings(len(samples))
        images = [self.prepare_image(Image.fromarray(s.image)) for s in samples]
        width, height = self.working_size(images[0])
        latents = self.pipe(image=images, prompt=[s.instruction for s in samples], generator=list(generators),
                            height=height, width=width, output_type="latent", **settings).images
        pixels = self.backbone.decode(latents, height, width)
        evals = settings["num_inference_steps"] * self.passes_per_step()
        return [EditOutput(image=pixels[i], extras={
            "transformer_evals": evals, "batch_size": len(samples), "working_resolution": f"{width}x{height}",
            "final_latent": latents[i:i + 1].detach().float().cpu().numpy()}) for i in range(len(samples))]
