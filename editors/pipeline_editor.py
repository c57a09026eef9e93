"""Instruction editors that run an official diffusers pipeline as shipped: the part shared by
``editors.qwen_image_edit`` (``QwenImageEditPipeline``) and ``editors.flux_kontext`` (``FluxKontextPipeline``).

An edit is one call of the pipeline the way its model card calls it (``pipe(image=..., prompt=...)`` with the
card's settings); the harness adds only what surrounds the call:
  * the prompt is the sample's ``editing_instruction`` (PIE-Bench's instruction, as InstructPix2Pix reads it);
    a sample without one is skipped with the reason (``requires``);
  * a batch (``--batch-size``) is one call with lists: images, instructions and one generator per sample. Both
    pipelines draw each row's initial noise from that row's generator and encode the source with the VAE's
    posterior mode, so a row does not depend on its batch-mates (outputs equal one-by-one up to float
    reassociation; ``tests/test_qwen_image_edit.py``, ``tests/test_flux_kontext.py``);
  * the final latent is read through the pipelines' own ``callback_on_step_end`` hook at the last step;
  * the pipeline works at its own resolution (both choose 1024x1024 for a square source: PIE-Bench's 512x512
    is upsampled inside the pipeline, as a user's call would do) and its PIL output is resized to PIE-Bench's
    512x512 with PIL bicubic, antialiased, as every editor's ``editors.backbone.images_to_uint8``.

Backbone specs: the editor's alias (its hub id), ``toy`` (the editor's own tiny random model written once as a
diffusers folder and loaded back with ``from_pretrained``, the path real weights take), a hub id or a local
folder. Neither model has a ShapesEdit counterpart, nor runs on the SD or SD3 backbones: ``--editors all``
leaves them out there with the reason (``backbone_unavailable``).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import torch
from PIL import Image

from editors.backbone import quiet_hf_progress
from editors.base import EditOutput, Editor
from pie_bench.core.errors import ConfigError
from pie_bench.core.sample import IMAGE_SIZE, Sample

# the other backbone families' names (editors.backbone, editors.flow_backbone, editors.flux_backbone): not models
# these pipelines load
OTHER_FAMILIES = ("sd14", "sd15", "ip2p", "sd3", "sd3.5", "flux-dev", "flux-schnell", "toy-flux")
SHAPES = ("shapes", "shapes-flow")

_PIPES: dict[tuple, object] = {}
_LOCK = threading.Lock()


def load_pipeline(pipeline_cls, path: str, spec: str, device, dtype: torch.dtype):
    """``pipeline_cls.from_pretrained(path)`` once per (pipeline, path, device, dtype) in this process."""
    key = (pipeline_cls.__name__, path, str(device), dtype)
    with _LOCK:
        if key in _PIPES:
            return _PIPES[key]
        quiet_hf_progress()
        try:
            pipe = pipeline_cls.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError, EnvironmentError) as exc:
            offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
            where = f"local folder {path}" if Path(path).is_dir() else f"hub id {path}"
            raise ConfigError(f"backbone {spec!r}: cannot load {where}{offline} as {pipeline_cls.__name__}: "
                              f"{str(exc).splitlines()[0][:200]}; download it once with `huggingface-cli download` "
                              "or pass a local diffusers folder") from None
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        _PIPES[key] = pipe
        return pipe


class PipelineEditor(Editor):
    """An instruction editor on one diffusers pipeline. Subclasses set ``pipeline_name`` (the diffusers class),
    ``aliases`` ({spec: hub id}), ``build_toy`` and ``call_settings``."""

    requires = frozenset({"image", "instruction"})
    stochastic = True  # the initial latent is drawn from the sample's generator
    pipeline_name: ClassVar[str] = ""
    aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def backbone_unavailable(cls, backbone: str) -> Optional[str]:
        runs_on = f"{', '.join(cls.aliases)}, toy, a hub id or a local {cls.pipeline_name} folder"
        if backbone in SHAPES:
            return f"{cls.name} has no ShapesEdit model (it runs on {runs_on})"
        if backbone in OTHER_FAMILIES:
            return f"{cls.name} runs its own pipeline ({runs_on}), not the {backbone!r} backbone"
        return None

    @classmethod
    def build_toy(cls) -> Path:
        """The toy model folder (built once per config under the cache)."""
        raise NotImplementedError

    def call_settings(self, batch: int) -> dict:
        """The pipeline call's settings (the model card's) for a batch of ``batch`` rows."""
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
        path, _ = self.resolve(backbone)
        self.pipe = load_pipeline(getattr(diffusers, self.pipeline_name), path, backbone, self.device, dtype)
        self.backbone = self.pipe

    @torch.no_grad()
    def edit_batch(self, samples: list[Sample], generators: list[torch.Generator]) -> list[EditOutput]:
        if len(samples) != len(generators):
            raise ValueError(f"{self.name}: one generator per sample")
        settings = self.call_settings(len(samples))
        last = settings["num_inference_steps"] - 1
        final: dict = {}

        def keep_final_latent(pipe, i, t, tensors):
            if i == last:
                final["latents"] = tensors["latents"].detach().float().cpu()
            return {}

        images = self.pipe(image=[self.prepare_image(Image.fromarray(s.image)) for s in samples],
                           prompt=[s.instruction for s in samples], generator=list(generators), output_type="pil",
                           callback_on_step_end=keep_final_latent, **settings).images
        evals = settings["num_inference_steps"] * self.passes_per_step()
        outs = []
        for i, im in enumerate(images):
            working = f"{im.width}x{im.height}"
            if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
            outs.append(EditOutput(image=np.asarray(im.convert("RGB")), extras={
                "transformer_evals": evals, "batch_size": len(samples), "working_resolution": working,
                "final_latent": final["latents"][i:i + 1].numpy()}))
        return outs
