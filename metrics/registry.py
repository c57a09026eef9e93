"""The metrics' registry: built-in metrics plus the ``pie_bench.metrics`` entry-point group, on the one
lazy registry (``pie_bench.core.registry``). Options use the one option syntax and typed coercion
(``pie_bench.core.options``): ``lpips_unedit_part:net=alex;chunk=4``. A third-party package adds a
metric with no core change::

    [project.entry-points."pie_bench.metrics"]
    my_metric = "my_pkg.metric:MyMetric"
"""
from __future__ import annotations

from pie_bench.core.errors import ConfigError
from pie_bench.core.options import coerce_kwargs, parse_option_spec
from pie_bench.core.registry import Registry, subclass_check

ENTRY_POINT_GROUP = "pie_bench.metrics"

BUILTIN_METRICS: dict[str, str] = {
    "structure_distance": "metrics.structure:StructureDistance",
    "psnr_unedit_part": "metrics.pixel:BackgroundPSNR",
    "lpips_unedit_part": "metrics.lpips_metric:BackgroundLPIPS",
    "mse_unedit_part": "metrics.pixel:BackgroundMSE",
    "ssim_unedit_part": "metrics.ssim:BackgroundSSIM",
    "clip_similarity_target_image": "metrics.clip_score:ClipWhole",
    "clip_similarity_target_image_edit_part": "metrics.clip_score:ClipEdited",
    "clip_similarity_source_image": "metrics.clip_score:ClipSource",
}

# The PIE-Bench table's seven columns, in the paper's order, plus the source CLIP score.
PROTOCOL_METRICS = list(BUILTIN_METRICS)

# Against the exact ground-truth edit of generated datasets (ShapesEdit); not protocol metrics.
GROUND_TRUTH_METRICS = ["gt_psnr", "gt_psnr_edit_part", "gt_ssim", "gt_attribute_accuracy"]
BUILTIN_METRICS.update({
    "gt_psnr": "metrics.ground_truth:GroundTruthPSNR",
    "gt_psnr_edit_part": "metrics.ground_truth:GroundTruthEditPSNR",
    "gt_ssim": "metrics.ground_truth:GroundTruthSSIM",
    "gt_attribute_accuracy": "metrics.ground_truth:AttributeAccuracy",
})

METRICS = Registry("metric", ENTRY_POINT_GROUP, BUILTIN_METRICS, subclass_check("metrics.base:Metric"))

# ``name:key=value;key=value``, the syntax of every plugin option (``lpips_unedit_part:net=alex``,
# ``ssim_unedit_part:border=reflect``, ``structure_distance:antialias=true``)
parse_metric_spec = parse_option_spec


def get_metric_class(name: str) -> type:
    return METRICS.get(parse_option_spec(name)[0])


def available_metrics(names) -> tuple[list[str], dict[str, str]]:
    ok, bad = [], {}
    for n in names:
        try:
            get_metric_class(n)
            ok.append(n)
        except ConfigError as exc:
            bad[n] = str(exc)
    return ok, bad


def build_metrics(names, backbone: str = "toy", device: str = "cpu") -> list:
    """Instantiate and load each metric once; models are shared between metrics that use the same one.
    A spec with options gets them in its name, so its results never mix with the default's."""
    out = []
    for spec in names:
        name, kwargs = parse_option_spec(spec)
        cls = get_metric_class(name)
        m = cls(**coerce_kwargs(cls, kwargs, f"--metrics {name}"))
        if kwargs:
            m.name = name + ":" + ";".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
        m.load(backbone, device)
        out.append(m)
    return out
