"""ShapesEdit: a procedurally generated PIE-format editing benchmark with exact ground truth, and the
tiny trained models that edit it (``--data shapes --backbone shapes --metrics-backbone shapes``).

``--data shapes`` is registered in ``pie_bench.datasets.registry`` (lazily, by name).
"""
from __future__ import annotations

from pie_bench.core.paths import SHAPES_MODELS, shapes_models_dir

from pie_bench.datasets.shapes.dataset import cached_set, generate, load_shapes, write_pie  # noqa: F401

MODELS = SHAPES_MODELS
models_dir = shapes_models_dir

