"""Trivial baselines. ``identity`` returns the source: background metrics must be perfect
(PSNR inf is reported as the protocol computes it, SSIM 1, LPIPS 0), CLIP-edited is the source's."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pie_bench.core.sample import Sample

from editors.base import EditOutput, Editor, EditorConfig


@dataclass
class IdentityConfig(EditorConfig):
    pass


class IdentityEditor(Editor):
    name = "identity"
    Config = IdentityConfig
    requires = frozenset({"image"})
    paper = "baseline: returns the source image unchanged"
    uses_backbone = False
    bound = "preservation ceiling: the source unchanged"

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        return EditOutput(image=sample.image.copy())
