"""Reading a sample's image from untrusted data: the protocol's 512x512 RGB conversion, a size check from
the header before anything is decoded, and paths from data files kept inside the data root. Every failure
is a one-line DataError naming the sample, so it fails that sample alone."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from pie_bench.core.errors import DataError, shown
from pie_bench.core.sample import IMAGE_SIZE

# PIE-Bench images are 512x512; the protocol resizes anything else to that. An image past this many pixels
# is refused from its header, before decoding: a decompression bomb (a small file that decodes to
# gigapixels) would otherwise take the run's memory, and no real sample needs it.
MAX_IMAGE_PIXELS = 8192 * 8192


class ImageWarning(UserWarning):
    pass


def to_protocol_image(img: Image.Image, where: str) -> np.ndarray:
    """RGB uint8 512x512 as PIE-Bench's ``load_512``: centre-crop to a square, resize to 512.

    Grayscale/RGBA and non-512 inputs are converted with a warning, not rejected."""
    if img.mode != "RGB":
        warnings.warn(f"{where}: image mode {img.mode} converted to RGB", ImageWarning, stacklevel=2)
        img = img.convert("RGB")
    w, h = img.size
    if (w, h) != (IMAGE_SIZE, IMAGE_SIZE):
        warnings.warn(f"{where}: image is {w}x{h}; centre-cropped and resized to {IMAGE_SIZE} per protocol",
                      ImageWarning, stacklevel=2)
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8).copy()


def decode_image(open_image: Callable[[], Image.Image], where: str, what: str) -> np.ndarray:
    """Open (header only), check the size, then decode - any failure is the sample's one-line DataError."""
    try:
        with open_image() as img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise DataError(f"{where}: {what} is {w}x{h} ({w * h / 1e6:.0f} megapixels), more than the "
                                f"{MAX_IMAGE_PIXELS / 1e6:.0f} the harness decodes (a decompression bomb or the wrong "
                                "file); replace it with the PIE-Bench image")
            img.load()
            return to_protocol_image(img, where)
    except DataError:
        raise
    except Image.DecompressionBombError:  # PIL's own check, at twice its MAX_IMAGE_PIXELS, came first
        raise DataError(f"{where}: {what} decodes to more pixels than PIL opens ({2 * Image.MAX_IMAGE_PIXELS} pixels, "
                        "PIL's own limit): a decompression bomb or the wrong file; replace it with the PIE-Bench "
                        "image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{where}: {what} is not a readable image ({shown(' '.join(str(exc).split()))}); "
                        "replace the file") from None


def read_image_file(path: Path, where: str) -> np.ndarray:
    try:
        present = path.is_file()
    except OSError as exc:  # e.g. a name too long for the filesystem
        raise DataError(f"{where}: image file {shown(path)} cannot be looked up ({exc.strerror}); fix the "
                        "annotation's image path") from None
    if not present:
        raise DataError(f"{where}: image file {shown(path)} is missing; put the PIE-Bench image there "
                        f"(or pass --ids to skip this sample)")
    return decode_image(lambda: Image.open(path), where, shown(path))


def safe_join(root: Path, rel: str, where: str) -> Path:
    """Join a path taken from a data file onto the data root, refusing anything outside it."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or "\\" in rel or "\x00" in rel:
        raise DataError(f"{where}: image_path {rel!r} must be a relative path inside the data folder; "
                        "fix the annotation")
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise DataError(f"{where}: image_path {rel!r} points outside the data folder {root}; fix the annotation")
    return path
