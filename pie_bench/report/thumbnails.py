"""Gallery thumbnails: JPEGs of sources, masks, targets and outputs, and the cache that makes a rerun
redo only what changed."""
from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from pie_bench.report.files import write_file

THUMB = 256  # gallery thumbnails: sharp at the 160 px display size on high-dpi screens
JPEG_QUALITY = 90
MASK_RGB = np.array([255, 40, 40], dtype=np.float32)
MASK_ALPHA = 0.45


def mask_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the region to edit tinted red."""
    out = image.astype(np.float32)
    out[mask] = out[mask] * (1 - MASK_ALPHA) + MASK_RGB * MASK_ALPHA
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def write_thumb(image, dest: Path, size: int = THUMB) -> None:
    """JPEG thumbnail (lossy is fine here: the metrics were computed on the lossless PNGs)."""
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    img = img.convert("RGB")
    f = max(img.size) // size
    if f >= 2 and max(img.size) == f * size and img.size[0] % f == 0 and img.size[1] % f == 0:
        img = img.reduce(f)  # an exact integer factor (PIE-Bench's 512 -> 256): the box mean, ~10x cheaper than Lanczos
    else:
        img.thumbnail((size, size), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    write_file(dest, buf.getvalue())


class ThumbCache:
    """Which input each thumbnail was made from, so a rerun (the report at the end of every resumed
    bench) only redoes new outputs, and a folder reused for another run never shows stale images."""

    NAME = ".thumbs.json"

    def __init__(self, out_dir: Path):
        self.path = out_dir / "images" / self.NAME
        try:
            self.table = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.table = {}

    def fresh(self, dest: Path, key: str) -> bool:
        return dest.exists() and self.table.get(str(dest.relative_to(self.path.parent))) == key

    def made(self, dest: Path, key: str) -> None:
        self.table[str(dest.relative_to(self.path.parent))] = key

    def save(self) -> None:
        write_file(self.path, json.dumps(self.table, sort_keys=True).encode())

    def file(self, src: Path, dest: Path) -> None:
        """Thumbnail of an image file, keyed by its path, mtime and size."""
        st = src.stat()
        key = f"{src.resolve()}|{st.st_mtime_ns}|{st.st_size}"
        if not self.fresh(dest, key):
            with Image.open(src) as img:
                img.load()
                write_thumb(img, dest)
            self.made(dest, key)

    def warm(self, pairs, workers: int = 2) -> None:
        """Make the thumbnails of image files ``[(src, dest)]`` that are not fresh, ``workers`` at a time (PNG
        decoding, resizing and JPEG encoding release the GIL): a run's gallery holds one per edit. A failure is
        left for ``file`` to raise again where the gallery reports it per cell."""
        def one(pair) -> None:
            try:
                self.file(*pair)
            except Exception:
                pass

        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(one, [(s, d) for s, d in pairs if s.is_file()]))

    def array(self, make, dest: Path, key: str) -> None:
        """Thumbnail of ``make()`` (called only when ``key`` changed)."""
        if not self.fresh(dest, key):
            write_thumb(make(), dest)
            self.made(dest, key)
