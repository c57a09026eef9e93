"""PIE-Bench mask codec: flat (start, length) runs of foreground in a row-major 512x512 array.

Mirrors ``mask_decode`` of the official evaluator (cure-lab/PnPInversion evaluation/evaluate.py):
not COCO RLE, C-order reshape, runs clipped at the end, and the 1-pixel border forced to 1.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pie_bench.core.errors import DataError
from pie_bench.core.sample import IMAGE_SIZE


def decode_mask(encoded: Sequence[int], size: int = IMAGE_SIZE, *, where: str = "mask") -> np.ndarray:
    """Decode a PIE mask into a bool (size, size) array, True = region to edit."""
    values = list(encoded)
    if len(values) % 2:
        raise DataError(f"{where}: mask has an odd number of values ({len(values)}); "
                        "it must be (start, length) pairs - re-export the annotation")
    total = size * size
    flat = np.zeros(total, dtype=bool)
    for i in range(0, len(values), 2):
        start, length = values[i], values[i + 1]
        if not isinstance(start, (int, np.integer)) or not isinstance(length, (int, np.integer)) \
                or isinstance(start, bool) or isinstance(length, bool):
            raise DataError(f"{where}: mask values must be integers, got {start!r}, {length!r} at pair {i // 2}; "
                            "fix the annotation")
        if start < 0 or length < 0 or start >= total:
            raise DataError(f"{where}: mask run ({start}, {length}) lies outside the {size}x{size} "
                            f"frame ({total} pixels); re-export the mask for the {size}x{size} image")
        # the official decoder clips runs at the end of the frame
        flat[start:min(start + length, total)] = True
    mask = flat.reshape(size, size)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


def encode_mask(mask: np.ndarray) -> list[int]:
    """Encode a bool (H, W) mask into PIE (start, length) pairs, row-major."""
    flat = np.asarray(mask, dtype=bool).reshape(-1).astype(np.int8)
    edges = np.diff(np.concatenate([[0], flat, [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    out: list[int] = []
    for s, e in zip(starts, ends):
        out += [int(s), int(e - s)]
    return out


def parse_mask_string(text: str, *, where: str = "mask") -> list[int]:
    """PIE_Bench_pp stores the same runs as a space-separated string."""
    try:
        return [int(tok) for tok in str(text).split()]
    except ValueError as exc:
        raise DataError(f"{where}: mask string is not space-separated integers ({exc}); fix the row or "
                        "re-download the parquet file") from None
