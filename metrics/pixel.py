"""Pixel metrics of the unedited background, exactly as the official evaluator computes them:
both images multiplied by (1 - mask), full 512x512 frame, data range 1 (torchmetrics semantics)."""
from __future__ import annotations

import torch

from .base import Metric, MetricBatch, empty_background


def _masked_pair(batch: MetricBatch) -> tuple[torch.Tensor, torch.Tensor]:
    keep = batch.background
    return batch.source * keep, batch.edited * keep


class BackgroundMSE(Metric):
    name = "mse_unedit_part"
    higher_is_better = False
    region = "background"
    scale = 1e4
    label = "MSE x10^4"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        a, b = _masked_pair(batch)
        mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
        return mse.float().masked_fill(empty_background(batch.mask), float("nan"))


class BackgroundPSNR(Metric):
    name = "psnr_unedit_part"
    higher_is_better = True
    region = "background"
    scale = 1.0
    label = "PSNR"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        a, b = _masked_pair(batch)
        mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
        psnr = 10.0 * torch.log10(1.0 / mse)  # inf for identical images, as torchmetrics
        return psnr.float().masked_fill(empty_background(batch.mask), float("nan"))
