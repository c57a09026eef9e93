"""How numbers read, in the terminal tables and in the HTML report alike.

One spelling each: an undefined value (NaN, no samples) is ``–``, infinity is ``∞`` and ``−∞`` (the
PSNR of an untouched background is +inf). Metric values are shown at the paper's display scale
(``scale`` in the leaderboard's metric_info), latencies in ms under a second and in s above.
"""
from __future__ import annotations

import math
from typing import Optional

NAN_TEXT = "–"
INF_TEXT = "∞"
NEG_INF_TEXT = "−∞"

# short column names for the paper's metrics; anything else shows under its own name
SHORT = {
    "structure_distance": "Struct",
    "psnr_unedit_part": "PSNR",
    "lpips_unedit_part": "LPIPS",
    "mse_unedit_part": "MSE",
    "ssim_unedit_part": "SSIM",
    "clip_similarity_target_image": "CLIP-W",
    "clip_similarity_target_image_edit_part": "CLIP-E",
    "clip_similarity_source_image": "CLIP-src",
}


def as_float(x) -> float:
    """A leaderboard number (float, int, the strings "inf"/"nan" of its JSON, or None) as a float; None is NaN."""
    return float("nan") if x is None else float(x)


def scaled(value, scale: float = 1.0) -> float:
    """``value`` at display scale; infinities and NaN stay what they are."""
    v = as_float(value)
    return v * scale if math.isfinite(v) else v


def fmt_num(v: float, digits: int = 2) -> str:
    """A float already at display scale."""
    if math.isnan(v):
        return NAN_TEXT
    if math.isinf(v):
        return INF_TEXT if v > 0 else NEG_INF_TEXT
    return f"{v:.{digits}f}"


def fmt_value(value, scale: float = 1.0, digits: int = 2) -> str:
    """A raw leaderboard value (see ``as_float``) at display scale."""
    return fmt_num(scaled(value, scale), digits)


def fmt_delta(v: float, digits: int = 2) -> str:
    """A difference: positive finite values carry a ``+``."""
    return ("+" if math.isfinite(v) and v > 0 else "") + fmt_num(v, digits)


def fmt_seconds(x: Optional[float]) -> str:
    if x is None:
        return NAN_TEXT
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def scale_suffix(scale: float) -> str:
    """`` x10^4`` for a power of ten, `` x2.5`` otherwise, nothing for 1."""
    if scale in (0, 1):
        return ""
    exp = round(math.log10(scale))
    return f" x10^{exp}" if 10 ** exp == scale else f" x{scale:g}"


def direction_arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def metric_label(name: str, scale: float = 1.0, higher_is_better: bool = True, label: Optional[str] = None) -> str:
    """Report column header and axis label: the metric's own label where it declares one, else the
    short name and scale, then the direction."""
    return f"{label or SHORT.get(name, name) + scale_suffix(scale)} {direction_arrow(higher_is_better)}"
