"""ShapesEdit: generator, exact masks, PIE round trip, ground-truth metrics, CLI."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from pie_bench.datasets.shapes.attributes import attribute_accuracy
from pie_bench.datasets.shapes.dataset import bracket_prompts, entry_for, generate, type_counts, upsample, write_pie
from pie_bench.datasets.shapes.edits import make_edit
from pie_bench.datasets.shapes.scenes import Obj, Scene, object_region, parse_caption, random_scene, render


def _edits(per_type=6, seed=11):
    return [make_edit(np.random.default_rng([seed, t, j]), t) for t in range(10) for j in range(per_type)]


def test_generator_is_deterministic_and_extends():
    a, b = generate(20, seed=3), generate(20, seed=3)
    assert [s.id for s in a] == [s.id for s in b]
    for x, y in zip(a, b):
        assert x.edit.source == y.edit.source and x.edit.target == y.edit.target
        assert np.array_equal(render(x.edit.source), render(y.edit.source))
    assert [s.edit.source for s in generate(20, seed=4)] != [s.edit.source for s in a]
    # sample j of type t depends on (seed, t, j) only: the 700 set contains the 20 set
    big = {s.id: s.edit for s in generate(700, seed=3)}
    assert all(big[s.id].target == s.edit.target for s in a)


def test_every_edit_type_present_in_pie_proportions():
    assert {s.edit.edit_type for s in generate(10)} == set(range(10))
    assert type_counts(700) == {0: 140, 1: 80, 2: 80, 3: 80, 4: 40, 5: 40, 6: 40, 7: 40, 8: 80, 9: 80}
    for n in (10, 30, 57):
        counts = type_counts(n)
        assert sum(counts.values()) == n and min(counts.values()) >= 1


def test_balanced_sets_hold_the_same_count_per_type_and_extend_the_proportional_ones():
    from pie_bench.core.errors import DataError
    from pie_bench.datasets.shapes.dataset import DEFAULT_BALANCED, DEFAULT_N

    assert type_counts(100, balanced=True) == {t: 10 for t in range(10)}
    assert DEFAULT_BALANCED and type_counts(DEFAULT_N, DEFAULT_BALANCED) == {t: 10 for t in range(10)}
    with pytest.raises(DataError, match="multiple of 10"):
        type_counts(25, balanced=True)
    # sample j of type t is the same edit whichever way the set is counted
    bal = {s.id: s.edit for s in generate(100, seed=2, balanced=True)}
    prop = generate(100, seed=2)
    shared = [s for s in prop if s.id in bal]
    assert len(shared) >= 60 and all(bal[s.id].target == s.edit.target for s in shared)


def test_mask_is_exact_union_of_edited_regions():
    for e in _edits():
        size = 64
        src, tgt = render(e.source, size), render(e.target, size)
        changed = (src != tgt).any(-1)
        mask = e.mask(size)
        assert changed.any(), e.instruction
        assert not (changed & ~mask).any(), f"changed pixels outside the mask: {e.instruction}"
        if e.edit_type in (8, 9):
            assert mask.all()
            continue
        if e.full_frame:  # random edits that include a background change
            assert mask.all()
            continue
        union = np.zeros_like(mask)
        for k in e.source_objects:
            union |= object_region(e.source.objects[k], size)
        for k in e.target_objects:
            union |= object_region(e.target.objects[k], size)
        assert np.array_equal(mask, union)
        if e.edit_type in (1, 2, 3, 4, 5, 6):  # these change every pixel of the regions they touch...
            # ...except where an unchanged shape overlaps its own old region with the same colour
            if e.edit_type == 6:
                assert np.array_equal(changed, mask)


def test_renders_at_any_size_consistently():
    scene = Scene((Obj("circle", "red", "striped", "large", "left"), Obj("square", "blue", "checked", "small", "right")),
                  "sand", "photo")
    small, big = render(scene, 64), render(scene, 128)
    # every 2x2 block of the 128 render contains the 64 render's pixel at its top-left sample offset
    assert (big[::2, ::2] != 0).any()
    assert np.mean(np.all(big[1::2, 1::2] == small, axis=-1)) > 0.9
    assert parse_caption(scene.caption()) == scene
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = random_scene(rng)
        assert parse_caption(s.caption()) == s


def test_bracketed_prompts():
    a, b = bracket_prompts("a photo of a large red solid circle at left on white",
                           "a photo of a large blue solid circle at left on white")
    assert a == "a photo of a large [red] solid circle at left on white"
    assert b == "a photo of a large [blue] solid circle at left on white"
    a, b = bracket_prompts("a photo of a small red solid circle at left on white",
                           "a photo of a small red solid circle at left and a large blue solid square at right on white")
    assert a == "a photo of a small red solid circle at left on white"
    assert b.endswith("at left [and a large blue solid square at right] on white")


def test_pie_round_trip_through_loader(tmp_path):
    from pie_bench.datasets.pie import load_dataset
    from pie_bench.core.masks import decode_mask, encode_mask

    write_pie(tmp_path / "set", n=12, seed=5, size=64)
    raw = json.loads((tmp_path / "set" / "mapping_file.json").read_text())
    ds = load_dataset(str(tmp_path / "set"))
    assert ds.has_targets and len(ds) == 12
    truth = {s.id: s.edit for s in generate(12, seed=5)}
    for sample in ds.samples:
        e = truth[sample.id]
        assert sample.edit_type == e.edit_type
        assert sample.source_prompt == e.source.caption() and sample.target_prompt == e.target.caption()
        assert sample.instruction == e.instruction
        assert sample.blended_words == e.blended
        assert np.array_equal(sample.image, upsample(render(e.source, 64)))
        assert np.array_equal(sample.target_image, upsample(render(e.target, 64)))
        expected = upsample(e.mask(64)[..., None])[..., 0].copy()
        expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = True  # the PIE decoder's border
        assert np.array_equal(sample.mask, expected)
        assert sample.extras["attributes"]["target"] == e.target.to_dict()
        assert decode_mask(encode_mask(sample.mask)).sum() == sample.mask.sum()
        assert raw[sample.id]["editing_type_id"] == str(e.edit_type)
    assert entry_for(generate(12, seed=5)[0], 64)["mask"] == raw[generate(12, seed=5)[0].id]["mask"]


def test_shapes_is_a_named_data_source():
    import pie_bench.datasets.shapes  # noqa: F401
    from pie_bench.datasets.pie import load_dataset
    from pie_bench.datasets.registry import DATASETS

    assert "shapes" in DATASETS.names()
    ds = load_dataset("shapes", categories=[6])
    assert ds.name == "shapes" and ds.has_targets and len(ds) >= 1
    assert all(s.edit_type == 6 for s in ds.samples)


# ---------------------------------------------------------------------------------------------
# ground-truth metrics


def _batch(samples, editeds):
    from metrics.base import MetricBatch

    return MetricBatch.from_arrays([upsample(render(e.source, 64)) for e in samples], editeds,
                                   [upsample(e.mask(64)[..., None])[..., 0] for e in samples],
                                   [e.source.caption() for e in samples], [e.target.caption() for e in samples],
                                   targets=[upsample(render(e.target, 64)) for e in samples],
                                   attributes=[e.attributes() for e in samples],
                                   attribute_scorers=[attribute_accuracy] * len(samples))


def test_attribute_accuracy_reference_values():
    from metrics.ground_truth import AttributeAccuracy
    from pie_bench.training.shapes_data import to_model_pixels
    from PIL import Image

    edits = _edits(per_type=4) + [make_edit(np.random.default_rng([0, 0, j]), 0) for j in range(30)]
    metric = AttributeAccuracy()
    perfect = metric.compute(_batch(edits, [upsample(render(e.target, 64)) for e in edits]))
    assert torch.all(perfect == 1.0)
    identity = metric.compute(_batch(edits, [upsample(render(e.source, 64)) for e in edits]))
    assert torch.all(identity == 0.0), [(e.instruction, float(v)) for e, v in zip(edits, identity) if v]
    # a perfect edit seen through a 32-pixel model (downsampled, then bicubic back to 512) still reads right
    blurred = [np.asarray(Image.fromarray(to_model_pixels(render(e.target, 64))).resize((512, 512), Image.BICUBIC))
               for e in edits]
    assert float(metric.compute(_batch(edits, blurred)).mean()) >= 0.95


def test_ground_truth_pixel_metrics_reference_values():
    from metrics.ground_truth import GroundTruthEditPSNR, GroundTruthPSNR, GroundTruthSSIM
    from metrics.registry import GROUND_TRUTH_METRICS, get_metric_class

    assert all(get_metric_class(n).requires_target for n in GROUND_TRUTH_METRICS)
    edits = [make_edit(np.random.default_rng([2, 6, j]), 6) for j in range(3)]  # colour edits
    targets = [upsample(render(e.target, 64)) for e in edits]
    sources = [upsample(render(e.source, 64)) for e in edits]
    b_id, b_gt = _batch(edits, sources), _batch(edits, targets)
    psnr = GroundTruthPSNR().compute(b_id)
    for p, s, t in zip(psnr, sources, targets):
        mse = np.mean((s / 255.0 - t / 255.0) ** 2)
        assert float(p) == pytest.approx(10 * np.log10(1 / mse), rel=1e-5)
    assert torch.isinf(GroundTruthPSNR().compute(b_gt)).all()
    edit_psnr = GroundTruthEditPSNR().compute(b_id)
    for p, s, t, e in zip(edit_psnr, sources, targets, edits):
        m = upsample(e.mask(64)[..., None])[..., 0]
        mse = np.mean((s[m] / 255.0 - t[m] / 255.0) ** 2)
        assert float(p) == pytest.approx(10 * np.log10(1 / mse), rel=1e-5)
    assert (edit_psnr < psnr).all()  # all of the error sits inside the mask
    ssim = GroundTruthSSIM().compute(b_gt)
    # float32 like the official evaluator: identical images lose up to ~6e-4 to cancellation in
    # E[x^2] - mu^2 (clamped at 0 while the covariance is not)
    assert torch.allclose(ssim, torch.ones_like(ssim), atol=1e-3)
    ssim_id = GroundTruthSSIM().compute(b_id)
    assert (ssim_id < 1).all()
    from skimage.metrics import structural_similarity

    for v, s, t in zip(ssim_id, sources, targets):  # the protocol's window, border cropped as scikit-image
        ref = structural_similarity(s / 255.0, t / 255.0, data_range=1.0, channel_axis=2, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False)
        assert float(v) == pytest.approx(ref, abs=1e-3)


def test_make_shapes_cli(tmp_path):
    from click.testing import CliRunner

    from cli import cli

    res = CliRunner().invoke(cli, ["make-shapes", "--n", "10", "--seed", "1", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "s" / "mapping_file.json").read_text())) == 10
    res = CliRunner().invoke(cli, ["make-shapes", "--n", "10", "--size", "100", "--out", str(tmp_path / "t")])
    assert res.exit_code != 0 and "--size 100" in res.output
