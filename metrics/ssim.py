"""SSIM of the unedited background (PIE-Bench column "SSIM x10^2").

Official: torchmetrics ``StructuralSimilarityIndexMeasure(data_range=1.0)`` with its defaults (Gaussian
window 11, sigma 1.5, K1 0.01, K2 0.03) on both images multiplied by (1 - mask), full frame, averaged
over channels and pixels.

Why not scikit-image's ``structural_similarity``: torchmetrics changed how it treats the border.
Up to torchmetrics 1.4 (what the PIE-Bench paper's evaluator ran with in 2023) the SSIM map was
computed on a reflect-padded image and then the 5-pixel border was cropped before averaging; since
torchmetrics 1.5 (Lightning-AI/torchmetrics#2721) the border pixels, computed from reflect-padded
windows, are averaged in. The first is exactly scikit-image's result (its windows are never padded
after the crop either); the second no scikit-image option reproduces, because scipy's ``reflect``
repeats the edge pixel while ``torch.nn.functional.pad(mode='reflect')`` does not, and skimage always
crops. So SSIM is computed here in torch (float32 as torchmetrics, 11x11 Gaussian), with ``border``:

- ``"crop"`` (default): torchmetrics < 1.5 = scikit-image = the paper's numbers;
- ``"reflect"``: torchmetrics >= 1.5, for comparison with a current-install run of the evaluator.

Tests check "crop" against scikit-image and against torchmetrics' own full SSIM map cropped, and
"reflect" against torchmetrics' returned value, all to <= 1e-4.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pie_bench.core.errors import ConfigError

from metrics.base import Metric, MetricBatch, empty_background

BORDERS = ("crop", "reflect")


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5, dtype=torch.float64) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)  # 5 for sigma 1.5: an 11-tap window, as both reference libraries
    x = torch.arange(-radius, radius + 1, dtype=dtype)
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03, border: str = "crop", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Mean SSIM per image of (B, C, H, W) tensors. float32 as torchmetrics (float64 is 5x slower on CPU
    and moves the result by < 1e-6)."""
    if border not in BORDERS:
        raise ConfigError(f"ssim border={border!r}: use one of {', '.join(BORDERS)}")
    a, b = a.to(dtype), b.to(dtype)
    g = gaussian_window(sigma, dtype=dtype).to(a.device)
    r = g.numel() // 2
    c = a.shape[1]
    if border == "reflect":
        a = F.pad(a, (r, r, r, r), mode="reflect")
        b = F.pad(b, (r, r, r, r), mode="reflect")
    stack = torch.cat([a, b, a * a, b * b, a * b], dim=1)  # (B, 5C, H, W)
    # one grouped 11x11 conv beats two separable grouped passes on CPU; "valid": every window is inside
    kernel = (g[:, None] * g[None, :]).expand(5 * c, 1, -1, -1).contiguous()
    filt = F.conv2d(stack, kernel, groups=5 * c)
    mu_a, mu_b, e_aa, e_bb, e_ab = filt.split(c, dim=1)
    var_a = (e_aa - mu_a ** 2).clamp(min=0)
    var_b = (e_bb - mu_b ** 2).clamp(min=0)
    cov = e_ab - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).double().mean(1)


class BackgroundSSIM(Metric):
    uses_weights = False
    name = "ssim_unedit_part"
    higher_is_better = True
    region = "background"
    scale = 1e2
    label = "SSIM x10^2"

    def __init__(self, border: str = "crop", chunk: int = 8) -> None:
        super().__init__()
        if border not in BORDERS:
            raise ConfigError(f"ssim_unedit_part: border={border!r} is not one of {', '.join(BORDERS)}")
        self.border = border
        self.chunk = chunk

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        keep = batch.background
        out = [ssim(batch.source[i:i + self.chunk] * keep[i:i + self.chunk],
                    batch.edited[i:i + self.chunk] * keep[i:i + self.chunk], border=self.border)
               for i in range(0, keep.shape[0], self.chunk)]
        return torch.cat(out).float().masked_fill(empty_background(batch.mask), float("nan"))

    def describe(self) -> dict:
        return {**super().describe(), "border": self.border,
                "matches": "torchmetrics<1.5 / scikit-image" if self.border == "crop" else "torchmetrics>=1.5"}
