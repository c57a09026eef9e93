"""The ceiling: ``oracle`` returns the dataset's ground-truth edit, where the dataset has one.

ShapesEdit renders every target exactly, so the oracle's numbers are what a perfect editor scores under
each metric (attribute accuracy 100 %, GT PSNR +inf, the background metrics of the true edit). PIE-Bench
has no ground-truth images: there every sample is skipped with that reason, never scored.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pie_bench.core.sample import Sample

from editors.base import EditOutput, Editor, EditorConfig


@dataclass
class OracleConfig(EditorConfig):
    pass


class OracleEditor(Editor):
    name = "oracle"
    Config = OracleConfig
    requires = frozenset({"image", "target_image"})
    paper = "bound: the ground-truth target image (datasets that have one, e.g. ShapesEdit)"
    uses_backbone = False
    bound = "ceiling: the ground-truth edit"

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        return EditOutput(image=sample.target_image.copy())
