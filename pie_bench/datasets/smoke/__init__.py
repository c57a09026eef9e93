"""The bundled smoke set: real photographs from scikit-image's bundled data, annotated by this
project in the PIE-Bench format (``mapping_file.json`` beside this file).

Images are built at load time from scikit-image (no binaries in git): each entry of
``SMOKE_IMAGES`` names the scikit-image loader and the square crop (top, left, side) taken
from it before resizing to 512 with Lanczos, as PIE-Bench's ``load_512`` does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

MAPPING_FILE = Path(__file__).with_name("mapping_file.json")

# file name in mapping_file.json -> (skimage.data function, (top, left, side) crop or None = centre)
SMOKE_IMAGES: dict[str, tuple[str, tuple[int, int, int] | None]] = {
    "astronaut.png": ("astronaut", None),
    "chelsea.png": ("chelsea", (0, 80, 300)),
    "coffee.png": ("coffee", (0, 120, 400)),
    "rocket.png": ("rocket", (0, 100, 427)),
    "motorcycle.png": ("stereo_motorcycle", (0, 120, 500)),
    "camera.png": ("camera", None),
    "hubble.png": ("hubble_deep_field", (0, 0, 872)),
    "colorwheel.png": ("colorwheel", None),
    "coins.png": ("coins", (0, 40, 303)),
    "ihc.png": ("immunohistochemistry", None),
}


def build_smoke_image(name: str) -> np.ndarray:
    """Build one smoke image as uint8 RGB 512x512."""
    import skimage.data

    func, crop = SMOKE_IMAGES[name]
    img = getattr(skimage.data, func)()
    if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    h, w = img.shape[:2]
    if crop is None:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
    else:
        top, left, side = crop
    img = img[top:top + side, left:left + side]
    return np.asarray(Image.fromarray(img).resize((512, 512), Image.LANCZOS))
