"""Background pixel metrics (PSNR, MSE, SSIM) against torchmetrics, which the official evaluator calls,
on the same masked inputs: real photos and random images with PIE-format masks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metrics.base import empty_background
from metrics.pixel import BackgroundMSE, BackgroundPSNR
from metrics.ssim import BackgroundSSIM, ssim

from tests.test_metrics_helpers import edited_versions, make_batch, official_masked, photo, pie_masks, random_image

tm_image = pytest.importorskip("torchmetrics.functional.image")
tm_regression = pytest.importorskip("torchmetrics.functional.regression")

TOL = 1e-4


@pytest.fixture(scope="module")
def cases():
    """(batch, description): photos x edits x masks, and random images with PIE masks."""
    masks = pie_masks()
    sources, editeds, ms = [], [], []
    for k, name in enumerate(("astronaut", "coffee", "chelsea")):
        img = photo(name)
        mask = masks[k % len(masks)]
        for ed in edited_versions(img, mask, seed=k):
            sources.append(img), editeds.append(ed), ms.append(mask)
    for k in range(3):
        sources.append(random_image(10 + k)), editeds.append(random_image(20 + k)), ms.append(masks[(k + 1) % len(masks)])
    return make_batch(sources, editeds, ms)


def test_psnr_and_mse_match_torchmetrics(cases):
    psnr = BackgroundPSNR().compute(cases)
    mse = BackgroundMSE().compute(cases)
    for i in range(len(psnr)):
        pred, target = official_masked(cases, i)
        ref_psnr = tm_image.peak_signal_noise_ratio(pred, target, data_range=1.0)
        ref_mse = tm_regression.mean_squared_error(pred[0].contiguous(), target[0].contiguous())
        if math.isinf(float(ref_psnr)):  # background untouched by this edit: both give +inf
            assert float(psnr[i]) == float(ref_psnr) == math.inf, i
        else:
            assert abs(float(psnr[i]) - float(ref_psnr)) <= TOL, i
        assert abs(float(mse[i]) - float(ref_mse)) <= TOL * 1e-2, i  # MSE is ~1e-2: compare at its scale
        assert math.isclose(float(mse[i]), float(ref_mse), rel_tol=1e-5, abs_tol=1e-12)
    assert sum(math.isinf(float(v)) for v in psnr) < len(psnr) - 5  # most cases do change the background


def test_ssim_reflect_border_matches_current_torchmetrics(cases):
    ours = BackgroundSSIM(border="reflect").compute(cases)
    for i in range(len(ours)):
        pred, target = official_masked(cases, i)
        ref = tm_image.structural_similarity_index_measure(pred, target, data_range=1.0)
        assert abs(float(ours[i]) - float(ref)) <= TOL, (i, float(ours[i]), float(ref))


def test_ssim_crop_border_matches_torchmetrics_map_cropped_and_skimage(cases):
    """The paper-era torchmetrics (< 1.5) averaged the SSIM map without its 5-pixel border; scikit-image
    does the same. Both references must agree with the default metric."""
    from skimage.metrics import structural_similarity

    ours = BackgroundSSIM().compute(cases)
    for i in range(0, len(ours), 2):
        pred, target = official_masked(cases, i)
        _, full = tm_image.structural_similarity_index_measure(pred, target, data_range=1.0, return_full_image=True)
        legacy = full[..., 5:-5, 5:-5].mean()
        sk = structural_similarity(target[0].permute(1, 2, 0).double().numpy(), pred[0].permute(1, 2, 0).double().numpy(),
                                   data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False)
        assert abs(float(ours[i]) - float(legacy)) <= TOL, i
        assert abs(float(ours[i]) - sk) <= TOL, i


def test_ssim_borders_really_differ_and_symmetry():
    """The two border conventions are distinguishable on real data (else the option would be moot), and
    SSIM is symmetric and 1 for identical images."""
    img = photo("astronaut")
    mask = pie_masks()[0]
    ed = edited_versions(img, mask, 0)[1]
    b = make_batch([img], [ed], [mask])
    crop, refl = BackgroundSSIM("crop").compute(b), BackgroundSSIM("reflect").compute(b)
    assert abs(float(crop[0]) - float(refl[0])) > 1e-4
    a = torch.rand(2, 3, 64, 64)
    c = torch.rand(2, 3, 64, 64)
    assert torch.allclose(ssim(a, c), ssim(c, a), atol=1e-6)
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64), atol=1e-6)


def test_background_metrics_are_nan_for_full_and_empty_masks():
    img, ed = random_image(1), random_image(2)
    full = np.ones((512, 512), bool)
    empty = np.zeros((512, 512), bool)
    normal = pie_masks()[0]
    b = make_batch([img, img, img], [ed, ed, ed], [full, empty, normal])
    assert empty_background(b.mask).tolist() == [True, True, False]
    for metric in (BackgroundPSNR(), BackgroundMSE(), BackgroundSSIM()):
        v = metric.compute(b)
        assert math.isnan(v[0]) and math.isnan(v[1]) and not math.isnan(v[2]), metric.name


def test_masked_pixels_do_not_count_and_background_changes_do():
    img = photo("coffee")
    mask = pie_masks()[0]
    inside_only = img.copy()
    inside_only[mask] = 0
    b = make_batch([img], [inside_only], [mask])
    assert float(BackgroundMSE().compute(b)[0]) == 0.0
    assert math.isinf(float(BackgroundPSNR().compute(b)[0]))
    assert abs(float(BackgroundSSIM().compute(b)[0]) - 1.0) < 1e-6
    outside = img.copy()
    outside[~mask] = 255 - outside[~mask]
    b2 = make_batch([img], [outside], [mask])
    assert float(BackgroundMSE().compute(b2)[0]) > 0.01
    assert float(BackgroundSSIM().compute(b2)[0]) < 0.9


def test_describe_carries_paper_scales():
    assert BackgroundMSE().describe()["scale"] == 1e4
    assert BackgroundSSIM().describe()["scale"] == 1e2
    assert BackgroundPSNR().describe()["scale"] == 1.0
    assert BackgroundSSIM().describe()["region"] == "background"
