"""CLIP-I, DINO-I and iCD's DINOv2 similarity against independent implementations on the same (toy) weights:
transformers' CLIPModel + CLIPProcessor and Dinov2Model + its AutoImageProcessor (iCD's
``calc_*_images_images`` path), transformers' ViTModel + torchvision's transforms (DreamBooth's DINO-I)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from metrics.base import MetricBatch
from metrics.registry import build_metrics

from tests.test_metrics_helpers import photo
from tests.test_metrics_models import hf_clip  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def pairs():
    src = [photo("astronaut"), photo("chelsea"), photo("coffee")]
    rng = np.random.default_rng(0)
    ed = [np.clip(s.astype(int) + rng.integers(-60, 60, s.shape), 0, 255).astype(np.uint8) for s in src]
    ed[2] = src[0]
    masks = [np.zeros((512, 512), bool)] * 3
    return src, ed, MetricBatch.from_arrays(src, ed, masks, ["a"] * 3, ["b"] * 3, targets=src)


def _cos(a, b):
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    return (a * b).sum(-1)


def test_clip_i_matches_transformers_clip(pairs, hf_clip):  # noqa: F811
    model, proc = hf_clip
    src, ed, batch = pairs
    (metric,) = build_metrics(["clip_i_source"], "toy")
    ours = metric.compute(batch)
    with torch.no_grad():
        fa = model.get_image_features(pixel_values=proc(images=[Image.fromarray(s) for s in src],
                                                        return_tensors="pt")["pixel_values"])
        fb = model.get_image_features(pixel_values=proc(images=[Image.fromarray(e) for e in ed],
                                                        return_tensors="pt")["pixel_values"])
    assert torch.allclose(ours, _cos(fa, fb).float(), atol=1e-4)
    assert ours[0] < 1 and metric.is_toy


def test_dino_i_matches_transformers_vit_with_torchvision_transforms(pairs):
    import torchvision.transforms as T
    from transformers import ViTModel

    from metrics.structure import toy_dino_folder

    src, ed, batch = pairs
    (metric,) = build_metrics(["dino_i_source"], "toy")
    ours = metric.compute(batch)
    vit = ViTModel.from_pretrained(str(toy_dino_folder()), add_pooling_layer=False).eval()
    tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    with torch.no_grad():
        emb = [vit(pixel_values=torch.stack([tf(Image.fromarray(x)) for x in xs])).last_hidden_state[:, 0]
               for xs in (src, ed)]
    assert torch.allclose(ours, _cos(*emb).float(), atol=1e-4)


def test_dinov2_matches_icd_path_processor_and_pooler(pairs):
    from transformers import AutoImageProcessor, Dinov2Model

    from metrics.image_similarity import toy_dinov2_folder

    src, ed, batch = pairs
    source, target = build_metrics(["dinov2_source", "dinov2_target"], "toy")
    ours = source.compute(batch)
    folder = toy_dinov2_folder()
    proc = AutoImageProcessor.from_pretrained(str(folder), use_fast=False)  # the PIL processor iCD ran
    model = Dinov2Model.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        emb = [model(pixel_values=proc(images=[Image.fromarray(x) for x in xs], return_tensors="pt")["pixel_values"])
               .pooler_output for xs in (src, ed)]
    assert torch.allclose(ours, _cos(*emb).float(), atol=1e-4)
    # the third edit is another photo: less alike than the noisy copies; the target here is the source itself
    assert ours[2] < ours[0] and torch.allclose(target.compute(batch)[:2], ours[:2])


def test_similarity_group_expands_and_target_metrics_need_targets():
    from metrics.registry import expand_metric_names

    names, _ = expand_metric_names("protocol,similarity", with_ground_truth=False)
    assert "clip_i_source" in names and "dinov2_source" in names and "clip_i_target" not in names
    names, _ = expand_metric_names("psnr_unedit_part,similarity", with_ground_truth=True)
    assert {"clip_i_target", "dino_i_target", "dinov2_target"} <= set(names)
