"""The editor contract, checked on every registered editor (built-ins and any installed plugin) on the toy
backbone: output shape and dtype, same generator -> same output, ``edit_batch`` equals ``edit`` one by one,
``load`` leaves the config hash unchanged, declared requirements honoured, one attribute for the backbone."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from benchmarks.editor_bench import captured_decode
from editors.base import EditOutput, Editor, as_edit_output
from editors.registry import EDITORS

# the fewest steps each editor's algorithm allows, so the whole contract runs in seconds per editor
FAST = {"ddim_p2p": {"num_ddim_steps": 3, "share_inversion": False},
        "npi_p2p": {"num_ddim_steps": 3, "share_inversion": False},
        "nti_p2p": {"num_ddim_steps": 3, "inner_steps": 2, "share_inversion": False},
        "ip2p": {"num_inference_steps": 3}, "pix2pix_zero": {"num_inference_steps": 3},
        "qwen_image_edit": {"num_inference_steps": 2}, "flux_kontext": {"num_inference_steps": 2}}
NAMES = [n for n, e in EDITORS.entries().items() if e.available]


@pytest.fixture(scope="module")
def samples(smoke):
    # two samples with everything any built-in editor reads (instruction, blended words)
    picked = [s for s in smoke.samples if s.instruction and s.blended_words][:2]
    assert len(picked) == 2
    # and a ground-truth target (the mirrored source) for editors that read one (the oracle bound)
    return [dataclasses.replace(s, _target=np.ascontiguousarray(s.image[:, ::-1])) for s in picked]


@pytest.fixture(scope="module", params=NAMES)
def editor(request):
    cls = EDITORS.get(request.param)
    ed = cls(**FAST.get(request.param, {}))
    ed.bind_backbone("toy")
    before = ed.config_hash()
    ed.load("toy")
    assert ed.config_hash() == before, f"{ed.name}.load() changed its config hash"
    return ed


def _image(out) -> np.ndarray:
    return as_edit_output(out, "s", "e").image


def test_output_shape_dtype_and_determinism(editor, samples):
    s = samples[0]
    a = _image(editor.edit(s, torch.Generator().manual_seed(7)))
    b = _image(editor.edit(s, torch.Generator().manual_seed(7)))
    assert a.shape == (512, 512, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b), f"{editor.name}: the same generator gave different images"


def test_edit_batch_equals_edit(editor, samples):
    """Compared where the editors' own tests compare: the decoded latents (float reassociation in a batched
    UNet call is amplified by quantisation and the 512-pixel upsampling of toy images); editors without a
    backbone or with the base class's one-by-one ``edit_batch``, exactly."""
    gens = lambda: [torch.Generator().manual_seed(11 + i) for i in range(len(samples))]  # noqa: E731
    if not editor.uses_backbone or not editor.batches():
        batched = [_image(o) for o in editor.edit_batch(samples, gens())]
        assert all(np.array_equal(b, _image(editor.edit(s, g))) for b, s, g in zip(batched, samples, gens()))
        return
    with captured_decode(editor.backbone) as seen:
        for s, g in zip(samples, gens()):
            editor.edit(s, g)
        one = torch.cat([z[-1:] for z in seen])
        outs = editor.edit_batch(samples, gens())
        batched = seen[-1][-len(samples):]
    assert len(outs) == len(samples) and batched.shape == one.shape
    assert (one - batched).abs().max().item() <= 1e-3, editor.name


def test_declared_requirements_are_honoured(editor, samples):
    for field in sorted(editor.requires - {"image", "mask"}):
        blank = {"source_prompt": "source_prompt_raw", "target_prompt": "target_prompt_raw",
                 "target_image": "_target"}.get(field, field)
        lacking = dataclasses.replace(samples[0], **{blank: "" if blank.endswith("_raw") else None})
        reason = editor.skip_reason(lacking)
        assert reason and field in reason, f"{editor.name} requires {field} but does not skip a sample without it"
    assert editor.skip_reason(samples[0]) is None


def test_one_attribute_for_the_loaded_backbone(editor):
    assert not hasattr(editor, "bb")
    if editor.uses_backbone:
        assert editor.backbone is not None and editor.backbone.is_toy


def test_edit_and_edit_batch_defaults_are_defined_once():
    class One(Editor):
        def edit(self, sample, generator):
            return EditOutput(image=np.zeros((512, 512, 3), np.uint8))

    class Many(Editor):
        def edit_batch(self, samples, generators):
            return [EditOutput(image=np.full((512, 512, 3), 3, np.uint8)) for _ in samples]

    assert len(One().edit_batch([None, None], [None, None])) == 2
    assert int(Many().edit(None, None).image[0, 0, 0]) == 3
    with pytest.raises(NotImplementedError, match="neither edit nor edit_batch"):
        Editor().edit(None, None)
