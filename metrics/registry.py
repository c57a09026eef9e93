"""The metrics' registry: built-in metrics plus the ``pie_bench.metrics`` entry-point group, on the one
lazy registry (``pie_bench.core.registry``). Options use the one option syntax and typed coercion
(``pie_bench.core.options``): ``lpips_unedit_part:net=alex;chunk=4``. A third-party package adds a
metric with no core change::

    [project.entry-points."pie_bench.metrics"]
    my_metric = "my_pkg.metric:MyMetric"
"""
from __future__ import annotations

from typing import Optional

from pie_bench.core.errors import ConfigError
from pie_bench.core.options import coerce_kwargs, parse_option_spec
from pie_bench.core.registry import Registry

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

# Image-image similarity to the source / the target (opt-in: ``--metrics protocol,similarity``)
SIMILARITY_METRICS = ["clip_i_source", "clip_i_target", "dino_i_source", "dino_i_target", "dinov2_source",
                      "dinov2_target"]
BUILTIN_METRICS.update({
    "clip_i_source": "metrics.image_similarity:ClipImageSource",
    "clip_i_target": "metrics.image_similarity:ClipImageTarget",
    "dino_i_source": "metrics.image_similarity:DinoImageSource",
    "dino_i_target": "metrics.image_similarity:DinoImageTarget",
    "dinov2_source": "metrics.image_similarity:Dinov2Source",
    "dinov2_target": "metrics.image_similarity:Dinov2Target",
})

# Metrics over sets (``metrics.sets``): one number per editor over its edits (and per category), with a
# bootstrap interval; computed when the leaderboard is written, from the saved images.
SET_METRICS: dict[str, str] = {
    "pr_source": "metrics.spectrum:ResidualPowerDistance",
    "pr_target": "metrics.spectrum:ResidualPowerDistanceTarget",
    "psd_source": "metrics.spectrum:SpectralSlopeDistance",
    "psd_target": "metrics.spectrum:SpectralSlopeDistanceTarget",
    "spectral_slope": "metrics.spectrum:SpectralSlope",
    "fid_source": "metrics.fid:FIDSource",
    "fid_target": "metrics.fid:FIDTarget",
    "kid_source": "metrics.fid:KIDSource",
    "kid_target": "metrics.fid:KIDTarget",
    "inception_score": "metrics.fid:ISEdited",
    "inception_score_source": "metrics.fid:ISSource",
}
# Among one sample's outputs for K seeds (``bench --seeds K``), averaged over samples.
SEED_METRICS: dict[str, str] = {
    "diversity_resnet50": "metrics.diversity:ResNetDiversity",
    "diversity_lpips": "metrics.diversity:LpipsDiversity",
    "diversity_ms_ssim": "metrics.diversity:MsSsimDiversity",
}
BUILTIN_METRICS.update(SET_METRICS)
BUILTIN_METRICS.update(SEED_METRICS)
# ``--metrics`` group names, each expanding to its list (``*_target`` entries only where the data has targets).
# All are opt-in (``--metrics protocol,spectra``): even the weight-free spectra cost ~27 ms per image on a CPU
# core, ~45 s over the embedded run's 1600 images (14 editors x 100, sources, targets); the Inception pass
# ~0.26 s per image (benchmarks/metrics_speed.py --sets).
METRIC_GROUPS = {"sets": list(SET_METRICS), "inception": ["fid_source", "fid_target", "kid_source", "kid_target",
                                                         "inception_score", "inception_score_source"],
                 "spectra": ["pr_source", "psd_source", "pr_target", "psd_target", "spectral_slope"],
                 "diversity": list(SEED_METRICS), "similarity": SIMILARITY_METRICS}


def _metric_check(obj) -> Optional[str]:
    from metrics.base import Metric
    from metrics.sets import SetMetric

    if isinstance(obj, type) and issubclass(obj, (Metric, SetMetric)):
        return None
    return f"{obj!r} is not a subclass of metrics.base.Metric or metrics.sets.SetMetric"


METRICS = Registry("metric", ENTRY_POINT_GROUP, BUILTIN_METRICS, _metric_check)


def is_set_metric(metric) -> bool:
    """A metric over sets (FID, PR, diversity, ...) rather than one value per sample."""
    return getattr(metric, "kind", "sample") in ("set", "seeds")


def expand_metric_names(names: str, with_ground_truth: bool, seeds: int = 1) -> tuple[list[str], bool]:
    """``--metrics`` as a list of names, and whether it named only defaults (missing ones are then skipped
    with a warning rather than an error). ``protocol`` = the PIE-Bench metrics and the ground-truth ones where
    the data has targets; ``protocol,fid_source`` adds to it; group names (``sets``, ``inception``,
    ``spectra``, ``diversity``, ``similarity``) expand; ``--seeds K > 1`` adds the diversity scores."""
    tokens = [] if names == "none" else [n.strip() for n in names.split(",") if n.strip()]
    out: list[str] = []
    for t in tokens:
        if t == "protocol":
            out += PROTOCOL_METRICS + (GROUND_TRUTH_METRICS if with_ground_truth else [])
        elif t in METRIC_GROUPS:
            out += [n for n in METRIC_GROUPS[t] if with_ground_truth or not n.endswith("_target")]
        else:
            out.append(t)
    if seeds > 1 and names != "none":
        out += list(SEED_METRICS)
    return list(dict.fromkeys(out)), tokens == ["protocol"]

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
