"""Reference for LEDITS++: diffusers' ``LEditsPPPipelineStableDiffusion`` as shipped, built from the
editor's backbone modules and called with the concepts and settings the editor records. The editor runs
the same pipeline, so this measures what its mapping and decoding cost (nothing, within noise) and
checks they change nothing."""
from __future__ import annotations

import torch

from benchmarks.reference.common import RefResult, count_unet_rows


def ledits_pp_reference(editor, sample, generator) -> RefResult:
    from editors.ledits_pp import ledits_pipeline

    pipe = ledits_pipeline(editor.backbone)
    with torch.no_grad(), count_unet_rows(editor.backbone.unet) as rows:
        latents, _, _ = editor.run_pipeline(pipe, sample, generator)
        image = editor.backbone.decode(latents, quantize="round")[0]
    return RefResult(latents=latents[:1].float(), image=image, extras={"unet_evals": rows[0]})
