"""The protocol suite as the runner uses it: built once from the registry, scored per smoke sample."""
from __future__ import annotations

import math

import numpy as np
import pytest

from metrics import weights
from metrics.registry import PROTOCOL_METRICS, build_metrics, parse_metric_spec
from pie_bench.core.errors import ConfigError
from pie_bench.run.runner import score_sample

PAPER_SCALES = {"structure_distance": 1e3, "psnr_unedit_part": 1.0, "lpips_unedit_part": 1e3, "mse_unedit_part": 1e4,
                "ssim_unedit_part": 1e2, "clip_similarity_target_image": 1.0,
                "clip_similarity_target_image_edit_part": 1.0, "clip_similarity_source_image": 1.0}
LOWER_IS_BETTER = {"structure_distance", "lpips_unedit_part", "mse_unedit_part"}


@pytest.fixture(scope="module")
def toy_suite():
    return build_metrics(PROTOCOL_METRICS, "toy", "cpu")


def test_protocol_suite_describes_paper_columns(toy_suite):
    assert [m.name for m in toy_suite][:8] == list(PAPER_SCALES)
    for m in toy_suite[:8]:
        d = m.describe()
        assert d["scale"] == PAPER_SCALES[m.name], m.name
        assert d["higher_is_better"] == (m.name not in LOWER_IS_BETTER)
        # only metrics with model weights are toy on the toy backbone; pixel formulas never are
        assert d["toy"] is m.uses_weights and d["backbone"] == "toy"
        assert d["toy"] is (m.name in ("structure_distance", "lpips_unedit_part") or m.name.startswith("clip_"))
    regions = {m.name: m.region for m in toy_suite}
    assert regions["clip_similarity_target_image_edit_part"] == "edited"
    assert {regions[n] for n in ("psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part")} == \
        {"background"}


def test_score_sample_on_smoke_set(toy_suite, smoke):
    """Runner path: per-sample records; full-frame masks give None (NaN) for background metrics only."""
    saw_full = saw_partial = False
    for sample in smoke.samples[:6]:
        src = sample.image
        edited = np.clip(src.astype(np.int16) + 20, 0, 255).astype(np.uint8)
        rec = score_sample(toy_suite, sample, edited)
        assert set(PAPER_SCALES) <= set(rec)  # ground-truth metrics (ShapesEdit) are skipped here
        full = bool(sample.mask.all())
        for name in ("psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part"):
            assert (rec[name] is None) == full, (sample.id, name)
        assert rec["structure_distance"] is not None and rec["structure_distance"] >= 0
        for name in ("clip_similarity_target_image", "clip_similarity_source_image"):
            assert 0 <= rec[name] <= 100
        saw_full |= full
        saw_partial |= not full
        if not full:
            assert rec["mse_unedit_part"] > 0 and rec["ssim_unedit_part"] < 1
            same = score_sample(toy_suite, sample, src)
            assert same["mse_unedit_part"] == 0 and same["structure_distance"] == pytest.approx(0, abs=1e-9)
            assert same["psnr_unedit_part"] == "inf"
    assert saw_partial


def test_models_loaded_once_per_process():
    a = build_metrics(["clip_similarity_target_image", "clip_similarity_source_image", "structure_distance"], "toy")
    b = build_metrics(["clip_similarity_target_image_edit_part", "structure_distance"], "toy")
    assert a[0].scorer is a[1].scorer is b[0].scorer
    assert a[2].model is b[1].model


def test_metric_specs_with_options():
    assert parse_metric_spec("lpips_unedit_part:net=alex;resolution=full") == \
        ("lpips_unedit_part", {"net": "alex", "resolution": "full"})
    lp, ss = build_metrics(["lpips_unedit_part:net=alex;resolution=full", "ssim_unedit_part:border=reflect"], "toy")
    assert lp.name == "lpips_unedit_part:net=alex;resolution=full" and lp.net == "alex" and lp.resolution is None
    assert ss.describe()["border"] == "reflect"
    with pytest.raises(ConfigError, match="bad option"):
        build_metrics(["ssim_unedit_part:sigma=2"])
    with pytest.raises(ConfigError, match="not key=value"):
        build_metrics(["ssim_unedit_part:reflect"])
    with pytest.raises(ConfigError, match="did you mean 'ssim_unedit_part'"):
        build_metrics(["ssim_unedit"])


def test_toy_weights_live_on_disk_in_real_formats():
    from metrics.clip_score import toy_clip_folder
    from metrics.lpips_metric import toy_trunk_file
    from metrics.structure import toy_dino_folder

    assert {p.name for p in toy_clip_folder().iterdir()} >= {"open_clip_config.json", "open_clip_model.safetensors"}
    assert {p.name for p in toy_dino_folder().iterdir()} >= {"config.json", "model.safetensors"}
    assert toy_trunk_file("squeeze").suffix == ".pth"
    assert str(weights.toy_dir()) in str(toy_clip_folder())


def test_nan_is_not_zero_in_means():
    from pie_bench.run.results import metric_stats

    stats = metric_stats([0.5, math.nan, 0.7], higher_is_better=True)
    assert stats["n"] == 2 and stats["mean"] == pytest.approx(0.6)
