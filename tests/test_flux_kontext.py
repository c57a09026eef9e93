"""FLUX.1 Kontext on the toy: parity with FluxKontextPipeline called directly as a user calls it (the same
PIE-Bench image, instruction, seed and settings), batch = one-by-one, the instruction (not the prompts) drives
the edit, the toy shares the toy FLUX's weights, skip without an instruction, left out of ShapesEdit."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from editors.flux_kontext import FluxKontextEditor
from pie_bench.core.sample import Sample

STEPS = 2
SEED = 7


def _sample(instruction="make the cat red", src="a cat on a table", tar="a [red] cat on a table", seed=0):
    img = np.random.default_rng(seed).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    return Sample(id="s", edit_type=0, source_prompt_raw=src, target_prompt_raw=tar, instruction=instruction,
                  mask=np.zeros((512, 512), bool), _image=img)


@pytest.fixture(scope="module")
def editor():
    e = FluxKontextEditor(num_inference_steps=STEPS)
    e.load("toy")
    return e


@pytest.fixture(scope="module")
def single(editor):
    """Two samples on the same image, same seed, different instructions, each edited alone."""
    a, b = _sample(), _sample(instruction="remove the cat")
    return a, b, editor.edit(a, torch.Generator().manual_seed(SEED)), editor.edit(b, torch.Generator().manual_seed(SEED))


def test_defaults_are_the_model_cards():
    c = FluxKontextEditor.Config()
    assert (c.num_inference_steps, c.guidance_scale, c.max_sequence_length) == (28, 2.5, 512)


def test_equals_the_pipeline_called_directly(editor, single):
    """The model card's call (PIL source at PIE-Bench's 512 px, guidance 2.5, a seeded CPU generator); the final
    latent read with the pipeline's step-end callback, the image as the PIL it returns, brought to 512 px."""
    a, _, out, _ = single
    seen = {}

    def keep(pipe, i, t, tensors):
        seen[i] = tensors["latents"].clone()
        return {}

    ref = editor.pipe(image=Image.fromarray(a.image), prompt=a.instruction, guidance_scale=2.5,
                      num_inference_steps=STEPS, generator=torch.Generator().manual_seed(SEED),
                      callback_on_step_end=keep).images[0]
    assert ref.size == (1024, 1024) and out.extras["working_resolution"] == "1024x1024"  # Kontext's resolution
    d_lat = np.abs(out.extras["final_latent"] - seen[STEPS - 1].numpy()).max()
    ref512 = np.asarray(ref.resize((512, 512), Image.BICUBIC))
    d_img = np.abs(out.image.astype(int) - ref512.astype(int)).max()
    assert d_lat <= 1e-3 and d_img <= 1, (d_lat, d_img)
    assert out.image.shape == (512, 512, 3) and out.image.dtype == np.uint8
    assert out.extras["transformer_evals"] == STEPS  # guidance-distilled: one pass per step


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


def test_toy_shares_the_toy_flux_weights(editor):
    """Everything but the VAE is the toy FLUX of editors.flux_backbone (same configs, same seeds)."""
    from diffusers import FluxTransformer2DModel

    from editors.flux_backbone import build_toy_flux_folder

    flux = FluxTransformer2DModel.from_pretrained(build_toy_flux_folder(), subfolder="transformer")
    ours = editor.pipe.transformer.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in flux.state_dict().items())
    assert editor.pipe.vae_scale_factor == 32


def test_skips_a_sample_without_instruction_and_shapes(smoke):
    from editors.registry import resolve_editor_names

    e = FluxKontextEditor()
    reason = e.skip_reason(dataclasses.replace(_sample(), instruction=None))
    assert reason and "instruction" in reason
    assert e.skip_reason(smoke.samples[0]) is None
    names, left_out = resolve_editor_names("all", "shapes")
    assert "flux_kontext" not in names and "no ShapesEdit model" in left_out["flux_kontext"]
    assert "flux-dev" in FluxKontextEditor.backbone_unavailable("flux-dev")  # FLUX.1 [dev] is not Kontext
    assert FluxKontextEditor.backbone_unavailable("toy") is None
    assert FluxKontextEditor.backbone_unavailable("flux-kontext") is None
