"""Where things live on disk: the cache root, the bundled ShapesEdit models, offline mode, and file names
that are safe to write for any sample id.

The ShapesEdit models are resolved here, as data, so that editors and metrics reach them through the
backbone name ``shapes`` without importing the dataset package."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from pie_bench.core.errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
SHAPES_MODELS = PACKAGE_ROOT / "models" / "shapes"
SHAPES_VARIANTS = ("sd", "ip2p", "clip", "icd", "flow")


def cache_root() -> Path:
    """``PIE_BENCH_CACHE`` or ``~/.cache/pie_bench``: toy weights, generated datasets, thumbnails."""
    return Path(os.environ.get("PIE_BENCH_CACHE", Path.home() / ".cache" / "pie_bench"))


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "PIE_BENCH_OFFLINE", "TRANSFORMERS_OFFLINE"))


def shapes_models_dir(variant: str = "sd") -> Path:
    """Folder of a trained ShapesEdit model (the bundled ones unless ``PIE_BENCH_SHAPES_MODELS`` names a folder
    trained with ``python -m pie_bench.training.shapes_train --out DIR``): ``sd`` and ``ip2p`` in the Stable
    Diffusion layout (``icd``: iCD's guidance-distilled teacher, its two LoRA adapters in ``icd/lora/``),
    ``clip`` in open_clip's hub layout."""
    if variant not in SHAPES_VARIANTS:
        raise ConfigError(f"the shapes backbone has no {variant!r} model; it has {', '.join(SHAPES_VARIANTS)}")
    folder = Path(os.environ.get("PIE_BENCH_SHAPES_MODELS") or SHAPES_MODELS) / variant
    marker = "open_clip_config.json" if variant == "clip" else "model_index.json"
    if not (folder / marker).exists():
        raise ConfigError(f"{folder}: ShapesEdit {variant} weights are missing; train them with "
                          "`python -m pie_bench.training.shapes_train` (about two hours on 2 CPU cores)")
    return folder


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, max_len: int = 80) -> str:
    """A file name for any string: unsafe characters become ``_`` and, when anything was changed (or the
    name is too long or reserved), a short hash of the original is appended, so distinct ids never share a
    file (``a/b`` and ``a_b`` differ)."""
    clean = _UNSAFE.sub("_", text).strip("._")[:max_len]
    if clean == text and clean not in ("", ".", ".."):
        return clean
    return f"{clean or 'x'}-{hashlib.sha1(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
