"""Reference for the instruction editors (``flux_kontext``, ``qwen_image_edit``): the official diffusers pipeline
called the way its model card calls it, a PIL source, the instruction and the card's settings, PIL out. The
editors are thin wrappers over this same call (they pre-size the source where the pipeline needs it for batching,
ask for latents and decode them with the pipeline's own steps), so the ratio says what the wrapper adds."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from benchmarks.reference.common import RefResult, count_unet_rows


def pipeline_reference(ed, sample, generator: torch.Generator) -> RefResult:
    seen = {}

    def keep(pipe, i, t, tensors):
        seen["latents"] = tensors["latents"]
        return {}

    settings = {k: (v[0] if isinstance(v, list) else v) for k, v in ed.call_settings(1).items()}
    with count_unet_rows(ed.pipe.transformer) as rows:
        image = ed.pipe(image=Image.fromarray(sample.image), prompt=sample.instruction, generator=generator,
                        callback_on_step_end=keep, **settings).images[0]
    image = image if image.size == (512, 512) else image.resize((512, 512), Image.BICUBIC)
    return RefResult(latents=seen["latents"].float(), image=np.asarray(image), extras={"unet_evals": rows[0]})
