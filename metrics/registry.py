"""Lazy metric registry, same pattern as the editor registry."""
from __future__ import annotations

import difflib
import importlib

from pie_bench.core.errors import ConfigError

METRICS: dict[str, str] = {
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
PROTOCOL_METRICS = list(METRICS)

# Against the exact ground-truth edit of generated datasets (ShapesEdit); not protocol metrics.
GROUND_TRUTH_METRICS = ["gt_psnr", "gt_psnr_edit_part", "gt_ssim", "gt_attribute_accuracy"]
METRICS.update({
    "gt_psnr": "metrics.ground_truth:GroundTruthPSNR",
    "gt_psnr_edit_part": "metrics.ground_truth:GroundTruthEditPSNR",
    "gt_ssim": "metrics.ground_truth:GroundTruthSSIM",
    "gt_attribute_accuracy": "metrics.ground_truth:AttributeAccuracy",
})


def parse_metric_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``name`` or ``name:key=value;key=value`` (e.g. ``lpips_unedit_part:net=alex``,
    ``ssim_unedit_part:border=reflect``, ``structure_distance:antialias=true``)."""
    name, _, opts = spec.strip().partition(":")
    kwargs = {}
    for item in filter(None, (o.strip() for o in opts.split(";"))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"metric option {item!r} in {spec!r} is not key=value (e.g. lpips_unedit_part:net=alex)")
        kwargs[key.strip()] = value.strip()
    return name, kwargs


def _coerce(value: str):
    low = value.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "full"):
        return None
    try:
        return int(value)
    except ValueError:
        return value


def get_metric_class(name: str) -> type:
    name = parse_metric_spec(name)[0]
    if name not in METRICS:
        close = difflib.get_close_matches(name, METRICS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown metric {name!r}; {hint}available: {', '.join(METRICS)}")
    module, _, attr = METRICS[name].partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"metric {name!r} is unavailable ({exc}); install its dependencies or drop it from --metrics") from None


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
        name, kwargs = parse_metric_spec(spec)
        cls = get_metric_class(name)
        try:
            m = cls(**{k: _coerce(v) for k, v in kwargs.items()})
        except TypeError as exc:
            raise ConfigError(f"metric {spec!r}: bad option ({exc}); see {cls.__module__}.{cls.__name__}") from None
        if kwargs:
            m.name = name + ":" + ";".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
        m.load(backbone, device)
        out.append(m)
    return out
