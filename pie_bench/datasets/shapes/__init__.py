"""ShapesEdit: a procedurally generated PIE-format editing benchmark with exact ground truth, and the
tiny trained models that edit it (``--data shapes --backbone shapes --metrics-backbone shapes``).

Importing the package registers the ``shapes`` dataset with the core loader.
"""
from __future__ import annotations

from pie_bench.datasets.pie import register_data_source
from pie_bench.core.paths import SHAPES_MODELS, shapes_models_dir

from pie_bench.datasets.shapes.dataset import cached_set, generate, load_shapes, write_pie  # noqa: F401

MODELS = SHAPES_MODELS
models_dir = shapes_models_dir


register_data_source("shapes", load_shapes)
