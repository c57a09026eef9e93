"""The datasets' registry: ``--data NAME`` names, built-in plus the ``pie_bench.datasets`` entry-point
group, on the one lazy registry (``pie_bench.core.registry``). An entry is a loader: a callable that takes
no arguments and returns a ``pie_bench.datasets.pie.Dataset``. A third-party package adds a dataset with no
core change::

    [project.entry-points."pie_bench.datasets"]
    my_set = "my_pkg.data:load_my_set"
"""
from __future__ import annotations

from typing import Optional

from pie_bench.core.registry import Registry

ENTRY_POINT_GROUP = "pie_bench.datasets"

BUILTIN_DATASETS: dict[str, str] = {
    "shapes": "pie_bench.datasets.shapes.dataset:load_shapes",
    "smoke": "pie_bench.datasets.pie:load_smoke",
}


def _is_loader(obj) -> Optional[str]:
    return None if callable(obj) else f"{obj!r} is not a callable returning a Dataset"


DATASETS = Registry("dataset", ENTRY_POINT_GROUP, BUILTIN_DATASETS, _is_loader)
