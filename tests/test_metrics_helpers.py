"""Shared inputs for the metric tests (no tests here): real photos (scikit-image) and PIE-format masks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metrics.base import MetricBatch
from pie_bench.core.masks import decode_mask, encode_mask

SHARED_MAPPING = Path(__file__).resolve().parent.parent.parent / "shared" / "piebench-mini" / "mapping_file.json"


def photo(name: str, size: int = 512) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))


def ellipse_mask(cy: float, cx: float, ry: float, rx: float, size: int = 512) -> np.ndarray:
    """An object-like mask pushed through the PIE codec (so it carries the forced 1-pixel border)."""
    yy, xx = np.mgrid[:size, :size]
    m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return decode_mask(encode_mask(m))


def pie_masks() -> list[np.ndarray]:
    """Real PIE-Bench masks when ../shared is present, plus synthetic ones in the same format."""
    masks = [ellipse_mask(250, 260, 120, 170), ellipse_mask(120, 380, 60, 90)]
    if SHARED_MAPPING.exists():
        for entry in json.loads(SHARED_MAPPING.read_text()).values():
            masks.append(decode_mask(entry["mask"]))
    return masks


def edited_versions(img: np.ndarray, mask: np.ndarray, seed: int) -> list[np.ndarray]:
    """Plausible edits: changed inside the mask, lightly disturbed outside (noise, colour, blur)."""
    rng = np.random.default_rng(seed)
    out = []
    inside = img.copy()
    inside[mask] = rng.integers(0, 256, size=(int(mask.sum()), 3), dtype=np.uint8)
    out.append(inside)
    noisy = np.clip(img.astype(np.float64) + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    noisy[mask] = 255 - noisy[mask]
    out.append(noisy)
    tinted = np.clip(img.astype(np.float64) * [1.05, 0.97, 1.0] + 4, 0, 255).astype(np.uint8)
    out.append(tinted)
    blurred = np.asarray(Image.fromarray(img).resize((128, 128), Image.BILINEAR).resize((512, 512), Image.BILINEAR))
    out.append(blurred)
    return out


def random_image(seed: int, size: int = 512) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def make_batch(sources, editeds, masks, src_prompts=None, tgt_prompts=None) -> MetricBatch:
    n = len(sources)
    return MetricBatch.from_arrays(sources, editeds, masks, src_prompts or ["a photo"] * n,
                                   tgt_prompts or ["a painting"] * n)


def official_masked(batch: MetricBatch, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What the official calculator feeds torchmetrics: float32 [0,1] images times (1 - mask), (1,3,H,W)."""
    keep = (~batch.mask[i:i + 1]).float()
    return batch.edited[i:i + 1] * keep, batch.source[i:i + 1] * keep
