"""Qwen-Image-Edit on the toy: parity with QwenImageEditPipeline called directly as a user calls it (the same
PIE-Bench image, instruction, seed and settings), batch = one-by-one, the instruction (not the prompts) drives
the edit, skip without an instruction, left out of ShapesEdit with the reason."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from editors.qwen_image_edit import QwenImageEditEditor
from pie_bench.core.sample import Sample

STEPS = 2
SEED = 7


def _sample(instruction="make the cat red", src="a cat on a table", tar="a [red] cat on a table", seed=0):
    img = np.random.default_rng(seed).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    return Sample(id="s", edit_type=0, source_prompt_raw=src, target_prompt_raw=tar, instruction=instruction,
                  mask=np.zeros((512, 512), bool), _image=img)


@pytest.fixture(scope="module")
def editor():
    e = QwenImageEditEditor(num_inference_steps=STEPS)
    e.load("toy")
    return e


@pytest.fixture(scope="module")
def single(editor):
    """Two samples on the same image, same seed, different instructions, each edited alone."""
    a, b = _sample(), _sample(instruction="remove the cat")
    return a, b, editor.edit(a, torch.Generator().manual_seed(SEED)), editor.edit(b, torch.Generator().manual_seed(SEED))


def test_defaults_are_the_model_cards():
    c = QwenImageEditEditor.Config()
    assert (c.num_inference_steps, c.true_cfg_scale, c.negative_prompt) == (50, 4.0, " ")


def test_equals_the_pipeline_called_directly(editor, single):
    """The user's call (PIL source at PIE-Bench's 512 px, the card's settings, a seeded CPU generator); the final
    latent read with the pipeline's step-end callback, the image as the PIL it returns, brought to 512 px."""
    a, _, out, _ = single
    seen = {}

    def keep(pipe, i, t, tensors):
        seen[i] = tensors["latents"].clone()
        return {}

    ref = editor.pipe(image=Image.fromarray(a.image), prompt=a.instruction, negative_prompt=" ", true_cfg_scale=4.0,
                      num_inference_steps=STEPS, generator=torch.Generator().manual_seed(SEED),
                      callback_on_step_end=keep).images[0]
    assert ref.size == (1024, 1024) and out.extras["working_resolution"] == "1024x1024"  # the pipeline's area
    d_lat = np.abs(out.extras["final_latent"] - seen[STEPS - 1].numpy()).max()
    ref512 = np.asarray(ref.resize((512, 512), Image.BICUBIC))
    d_img = np.abs(out.image.astype(int) - ref512.astype(int)).max()
    assert d_lat <= 1e-3 and d_img <= 1, (d_lat, d_img)
    assert out.image.shape == (512, 512, 3) and out.image.dtype == np.uint8
    assert out.extras["transformer_evals"] == 2 * STEPS  # true CFG: conditional and negative pass per step


def test_batch_equals_one_by_one(editor, single):
    a, b, out_a, out_b = single
    outs = editor.edit_batch([a, b], [torch.Generator().manual_seed(SEED), torch.Generator().manual_seed(SEED)])
    for got, want in zip(outs, (out_a, out_b)):
        assert np.abs(got.extras["final_latent"] - want.extras["final_latent"]).max() <= 1e-4
        assert np.abs(got.image.astype(int) - want.image.astype(int)).max() <= 1
        assert got.extras["batch_size"] == 2


def test_the_instruction_drives_the_edit_not_the_prompts(editor, single):
    a, _, out_a, out_b = single
    # another instruction moves the latent far beyond float noise (1e-6); the toy's random text encoder makes the
    # move small (the instruction is a few of the prompt's tokens)
    assert np.abs(out_a.extras["final_latent"] - out_b.extras["final_latent"]).max() > 1e-3
    other_prompts = dataclasses.replace(a, source_prompt_raw="a bowl of soup", target_prompt_raw="a bowl of rice")
    again = editor.edit(other_prompts, torch.Generator().manual_seed(SEED))
    assert np.array_equal(again.extras["final_latent"], out_a.extras["final_latent"])  # and seeded
    assert np.array_equal(again.image, out_a.image)


def test_skips_a_sample_without_instruction_and_shapes(smoke):
    from editors.registry import resolve_editor_names

    e = QwenImageEditEditor()
    reason = e.skip_reason(dataclasses.replace(_sample(), instruction=None))
    assert reason and "instruction" in reason
    assert e.skip_reason(smoke.samples[0]) is None
    names, left_out = resolve_editor_names("all", "shapes")
    assert "qwen_image_edit" not in names and "no ShapesEdit model" in left_out["qwen_image_edit"]
    assert "sd15" in QwenImageEditEditor.backbone_unavailable("sd15")
    assert QwenImageEditEditor.backbone_unavailable("toy") is None
    assert QwenImageEditEditor.backbone_unavailable("qwen-image-edit") is None
    with pytest.raises(Exception, match="at least 2"):  # one step: NaN sigmas under shift_terminal
        QwenImageEditEditor(num_inference_steps=1).load("toy")


def test_list_editors_shows_backbones_and_needs():
    from click.testing import CliRunner

    from cli import cli as main

    res = CliRunner().invoke(main, ["list-editors"])
    assert res.exit_code == 0
    lines = res.output.splitlines()
    for name, spec in (("qwen_image_edit", "qwen-image-edit"), ("flux_kontext", "flux-kontext")):
        start = next(i for i, line in enumerate(lines) if line.startswith(f"│ {name} "))
        end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("│  "))  # the next row
        row = " ".join(lines[start:end])
        assert "instruction" in row and spec in row and "GB bf16" in row and "toy" in row, row
