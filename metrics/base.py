"""The metric contract: one batched call on (source, edited, mask, prompts).

Every metric returns one float per sample, NaN where it is undefined (e.g. background metrics on
a full-frame mask). Means exclude NaN and report n per metric.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Sequence

import numpy as np
import torch

REGIONS = ("background", "whole", "edited")


@dataclass
class MetricBatch:
    """A batch of B samples at 512x512.

    source, edited, target: float32 (B, 3, H, W) in [0, 1]; target is the ground-truth edit when
    the dataset carries one (ShapesEdit), else None. mask: bool (B, 1, H, W), True = region to edit.
    """

    source: torch.Tensor
    edited: torch.Tensor
    mask: torch.Tensor
    source_prompts: Sequence[str]
    target_prompts: Sequence[str]
    target: Optional[torch.Tensor] = None
    sample_ids: Sequence[str] = ()
    attributes: Sequence[Optional[dict]] = ()
    # per sample, the dataset's reader of attribute changes (``Sample.attribute_scorer``), or None
    attribute_scorers: Sequence[Optional[Callable[[np.ndarray, dict], float]]] = ()

    @property
    def background(self) -> torch.Tensor:
        """(1 - mask) as float, broadcast over channels: the protocol multiplies both images by it."""
        return (~self.mask).to(self.source.dtype)

    @classmethod
    def from_arrays(cls, sources: Sequence[np.ndarray], editeds: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                    source_prompts: Sequence[str], target_prompts: Sequence[str],
                    targets: Optional[Sequence[Optional[np.ndarray]]] = None, sample_ids: Sequence[str] = (),
                    attributes: Sequence[Optional[dict]] = (),
                    attribute_scorers: Sequence[Optional[Callable]] = ()) -> "MetricBatch":
        def stack(images):
            return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)

        target = None
        if targets is not None and all(t is not None for t in targets):
            target = stack(targets)
        return cls(source=stack(sources), edited=stack(editeds),
                   mask=torch.from_numpy(np.stack(masks)).bool().unsqueeze(1),
                   source_prompts=list(source_prompts), target_prompts=list(target_prompts), target=target,
                   sample_ids=list(sample_ids), attributes=list(attributes),
                   attribute_scorers=list(attribute_scorers))


class Metric:
    """Base class. ``scale`` is the paper's display multiplier (LPIPS x10^3 -> 1e3)."""

    name: ClassVar[str] = "metric"
    higher_is_better: ClassVar[bool] = True
    region: ClassVar[str] = "whole"
    scale: ClassVar[float] = 1.0
    label: ClassVar[str] = ""
    requires_target: ClassVar[bool] = False  # ground-truth metrics (ShapesEdit only)
    uses_weights: ClassVar[bool] = True  # False for pure pixel formulas: never labelled toy

    def __init__(self) -> None:
        self.backbone = "none"
        self.is_toy = False
        self.device = torch.device("cpu")

    def load(self, backbone: str = "toy", device: str | torch.device = "cpu") -> None:
        """Load model weights once per run. ``backbone``: ``real`` (official weights), ``toy``, or a
        dataset-specific backbone such as ``shapes``."""
        self.backbone = backbone
        self.is_toy = backbone == "toy" and self.uses_weights
        self.device = torch.device(device)

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"higher_is_better": self.higher_is_better, "region": self.region, "scale": self.scale,
                "label": self.label or self.name, "backbone": self.backbone, "toy": self.is_toy}


def empty_background(mask: torch.Tensor) -> torch.Tensor:
    """(B,) bool: True where the protocol writes NaN for background metrics (no background, or empty mask)."""
    flat = mask.flatten(1)
    return (~flat).sum(1).eq(0) | flat.sum(1).eq(0)


def empty_edit(mask: torch.Tensor) -> torch.Tensor:
    return mask.flatten(1).sum(1).eq(0)
