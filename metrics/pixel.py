"""Pixel metrics of the unedited background, exactly as the official evaluator computes them:
both images multiplied by (1 - mask), full 512x512 frame, data range 1 (torchmetrics semantics)."""
from __future__ import annotations

import torch

from metrics.base import Metric, MetricBatch, empty_background


def _masked_pair(batch: MetricBatch) -> tuple[torch.Tensor, torch.Tensor]:
    keep = batch.background
    return batch.source * keep, batch.edited * keep


def background_mse(batch: MetricBatch) -> torch.Tensor:
    """Per-sample MSE of the (1 - mask)-multiplied images, accumulated in float64 (torchmetrics sums
    float32 squared errors; both agree far below 1e-4)."""
    a, b = _masked_pair(batch)
    diff = (a - b).flatten(1)
    return torch.linalg.vector_norm(diff, dim=1, dtype=torch.float64).pow(2) / diff.shape[1]


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR at data range 1; inf for identical images, as torchmetrics."""
    return 10.0 * torch.log10(1.0 / mse)


class BackgroundMSE(Metric):
    uses_weights = False
    name = "mse_unedit_part"
    higher_is_better = False
    region = "background"
    scale = 1e4
    label = "MSE x10^4"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        mse = background_mse(batch)
        return mse.float().masked_fill(empty_background(batch.mask), float("nan"))


class BackgroundPSNR(Metric):
    uses_weights = False
    name = "psnr_unedit_part"
    higher_is_better = True
    region = "background"
    scale = 1.0
    label = "PSNR"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        mse = background_mse(batch)
        return psnr_from_mse(mse).float().masked_fill(empty_background(batch.mask), float("nan"))
