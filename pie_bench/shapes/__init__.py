"""ShapesEdit: a procedurally generated PIE-format editing benchmark with exact ground truth, and the
tiny trained models that edit it (``--data shapes --backbone shapes --metrics-backbone shapes``).

Importing the package registers the ``shapes`` dataset with the core loader.
"""
from __future__ import annotations

import os
from pathlib import Path

from pie_bench.data import register_data_source
from pie_bench.errors import ConfigError

from .dataset import cached_set, generate, load_shapes, write_pie  # noqa: F401

MODELS = Path(__file__).with_name("models")
VARIANTS = {"sd": "sd", "ip2p": "ip2p", "clip": "clip"}


def models_dir(variant: str = "sd") -> Path:
    """Folder of a trained ShapesEdit model (the committed ones unless PIE_BENCH_SHAPES_MODELS is set): ``sd`` and ``ip2p`` in the Stable Diffusion layout,
    ``clip`` in open_clip's hub layout (``open_clip_config.json`` + ``open_clip_model.safetensors``)."""
    if variant not in VARIANTS:
        raise ConfigError(f"the shapes backbone has no {variant!r} model; it has {', '.join(VARIANTS)} "
                          "(iCD needs a guidance-distilled UNet that ShapesEdit does not train)")
    # PIE_BENCH_SHAPES_MODELS: a folder of models trained with `python -m pie_bench.shapes.train --out DIR`
    folder = Path(os.environ.get("PIE_BENCH_SHAPES_MODELS") or MODELS) / VARIANTS[variant]
    marker = "open_clip_config.json" if variant == "clip" else "model_index.json"
    if not (folder / marker).exists():
        raise ConfigError(f"{folder}: ShapesEdit {variant} weights are missing; train them with "
                          "`python -m pie_bench.shapes.train` (about an hour on 2 CPU cores)")
    return folder


register_data_source("shapes", load_shapes)
