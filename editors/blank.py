"""The chance floor: ``blank`` returns a flat image of the source's mean colour.

It edits nothing and keeps no structure, so any metric's value here is what it gives for free: on
ShapesEdit ``gt_attribute_accuracy`` scores about 32 % (add/delete edits are two-way choices the scorer
can get right by accident), the background metrics score a flat grey's distance to the source. An
editor at or below these numbers has learnt nothing the metric can see.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pie_bench.core.sample import Sample

from editors.base import EditOutput, Editor, EditorConfig


@dataclass
class BlankConfig(EditorConfig):
    pass


class BlankEditor(Editor):
    name = "blank"
    Config = BlankConfig
    requires = frozenset({"image"})
    paper = "bound: a flat mean-colour image (the chance floor of every metric)"
    uses_backbone = False
    bound = "chance floor: a flat mean-colour image"

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        image = sample.image
        mean = image.reshape(-1, image.shape[-1]).mean(axis=0).round().astype(np.uint8)
        return EditOutput(image=np.broadcast_to(mean, image.shape).copy())
