"""The instruction editors on their toys (FLUX.1 Kontext, Qwen-Image-Edit): parity with the official pipeline
called directly as a user calls it (the same PIE-Bench image, instruction, seed and the model card's settings),
batch = one-by-one, the instruction (not the prompts) drives the edit, skip without an instruction, left out of
ShapesEdit and of the other families with the reason; per editor: Kontext's toy shares the toy FLUX's weights,
Qwen refuses one step."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from editors.flux_kontext import FluxKontextEditor
from editors.qwen_image_edit import QwenImageEditEditor
from pie_bench.core.sample import Sample

STEPS = 2
SEED = 7
# per editor: its class, the model card's defaults, the user's pipeline call, transformer passes per step,
# its own backbone spec and a family it must refuse
EDITORS = {
    "flux_kontext": dict(cls=FluxKontextEditor, defaults={"num_inference_steps": 28, "guidance_scale": 2.5,
                                                          "max_sequence_length": 512},
                         call={"guidance_scale": 2.5}, passes=1, spec="flux-kontext", refuses="flux-dev"),
    "qwen_image_edit": dict(cls=QwenImageEditEditor, defaults={"num_inference_steps": 50, "true_cfg_scale": 4.0,
                                                                "negative_prompt": " "},
                            call={"negative_prompt": " ", "true_cfg_scale": 4.0}, passes=2, spec="qwen-image-edit",
                            refuses="sd15"),
}


def _sample(instruction="make the cat red", src="a cat on a table", tar="a [red] cat on a table", seed=0):
    img = np.random.default_rng(seed).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    return Sample(id="s", edit_type=0, source_prompt_raw=src, target_prompt_raw=tar, instruction=instruction,
                  mask=np.zeros((512, 512), bool), _image=img)


@pytest.fixture(scope="module", params=list(EDITORS))
def case(request):
    """The editor on its toy, and two samples on the same image (same seed, different instructions) edited alone."""
    spec = EDITORS[request.param]
    e = spec["cls"](num_inference_steps=STEPS)
    e.load("toy")
    a, b = _sample(), _sample(instruction="remove the cat")
    outs = [e.edit(s, torch.Generator().manual_seed(SEED)) for s in (a, b)]
    return request.param, spec, e, (a, b), outs


def test_defaults_are_the_model_cards(case):
    _, spec, *_ = case
    c = spec["cls"].Config()
    assert {k: getattr(c, k) for k in spec["defaults"]} == spec["defaults"]


def test_equals_the_pipeline_called_directly(case):
    """The user's call (PIL source at PIE-Bench's 512 px, the card's settings, a seeded CPU generator); the final
    latent read with the pipeline's step-end callback, the image as the PIL it returns, brought to 512 px."""
    _, spec, editor, (a, _), (out, _) = case
    seen = {}

    def keep(pipe, i, t, tensors):
        seen[i] = tensors["latents"].clone()
        return {}

    ref = editor.pipe(image=Image.fromarray(a.image), prompt=a.instruction, num_inference_steps=STEPS,
                      generator=torch.Generator().manual_seed(SEED), callback_on_step_end=keep, **spec["call"]).images[0]
    assert ref.size == (1024, 1024) and out.extras["working_resolution"] == "1024x1024"  # the pipeline's own size
    d_lat = np.abs(out.extras["final_latent"] - seen[STEPS - 1].numpy()).max()
    ref512 = np.asarray(ref.resize((512, 512), Image.BICUBIC))
    d_img = np.abs(out.image.astype(int) - ref512.astype(int)).max()
    assert d_lat <= 1e-3 and d_img <= 1, (d_lat, d_img)
    assert out.image.shape == (512, 512, 3) and out.image.dtype == np.uint8
    assert out.extras["transformer_evals"] == spec["passes"] * STEPS  # Kontext distilled: 1; Qwen true CFG: 2


def test_batch_equals_one_by_one(case):
    _, _, editor, (a, b), (out_a, out_b) = case
    outs = editor.edit_batch([a, b], [torch.Generator().manual_seed(SEED), torch.Generator().manual_seed(SEED)])
    for got, want in zip(outs, (out_a, out_b)):
        assert np.abs(got.extras["final_latent"] - want.extras["final_latent"]).max() <= 1e-4
        assert np.abs(got.image.astype(int) - want.image.astype(int)).max() <= 1
        assert got.extras["batch_size"] == 2


def test_the_instruction_drives_the_edit_not_the_prompts(case):
    _, _, editor, (a, _), (out_a, out_b) = case
    # another instruction moves the latent far beyond float noise (1e-6); the toy's random text encoder makes the
    # move small (the instruction is a few of the prompt's tokens)
    assert np.abs(out_a.extras["final_latent"] - out_b.extras["final_latent"]).max() > 1e-3
    other_prompts = dataclasses.replace(a, source_prompt_raw="a bowl of soup", target_prompt_raw="a bowl of rice")
    again = editor.edit(other_prompts, torch.Generator().manual_seed(SEED))
    assert np.array_equal(again.extras["final_latent"], out_a.extras["final_latent"])  # and seeded
    assert np.array_equal(again.image, out_a.image)


@pytest.mark.parametrize("name", list(EDITORS))
def test_skips_a_sample_without_instruction_and_other_backbones(name, smoke):
    from editors.registry import resolve_editor_names

    spec = EDITORS[name]
    cls = spec["cls"]
    reason = cls().skip_reason(dataclasses.replace(_sample(), instruction=None))
    assert reason and "instruction" in reason
    assert cls().skip_reason(smoke.samples[0]) is None
    names, left_out = resolve_editor_names("all", "shapes")
    assert name not in names and "no ShapesEdit model" in left_out[name]
    assert spec["refuses"] in cls.backbone_unavailable(spec["refuses"])  # FLUX.1 [dev] is not Kontext
    assert cls.backbone_unavailable("toy") is None and cls.backbone_unavailable(spec["spec"]) is None


def test_kontext_toy_shares_the_toy_flux_weights():
    """Everything but the VAE is the toy FLUX of editors.flux_backbone (same configs, same seeds)."""
    from diffusers import FluxTransformer2DModel

    from editors.flux_backbone import build_toy_flux_folder

    e = FluxKontextEditor(num_inference_steps=STEPS)
    e.load("toy")
    flux = FluxTransformer2DModel.from_pretrained(build_toy_flux_folder(), subfolder="transformer")
    ours = e.pipe.transformer.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in flux.state_dict().items())
    assert e.pipe.vae_scale_factor == 32


def test_qwen_refuses_one_step():
    with pytest.raises(Exception, match="at least 2"):  # one step: NaN sigmas under shift_terminal
        QwenImageEditEditor(num_inference_steps=1).load("toy")


def test_list_editors_shows_backbones_and_needs():
    from click.testing import CliRunner

    from cli import cli as main

    res = CliRunner().invoke(main, ["list-editors"])
    assert res.exit_code == 0
    lines = res.output.splitlines()
    for name, spec in EDITORS.items():
        start = next(i for i, line in enumerate(lines) if line.startswith(f"│ {name} "))
        end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("│  "))  # the next row
        row = " ".join(lines[start:end])
        assert "instruction" in row and spec["spec"] in row and "GB bf16" in row and "toy" in row, row


def test_latency_script_times_the_editor_against_the_pipeline_call(tmp_path):
    """benchmarks/latency.py on Kontext's toy: the reference is the model card's pipeline call (equal latents),
    both sides' transformer passes are counted by the same hook, the floor is E + D + passes x U."""
    import json

    from benchmarks.latency import main

    out = tmp_path / "bench.json"
    rc = main(["--device", "cpu", "--backbone", "toy", "--editors", "flux_kontext", "--steps", str(STEPS),
               "--repeats", "1", "--warmup", "0", "--no-count-flops", "--no-overhead", "--out", str(out)])
    r = json.loads(out.read_text())["editors"]["flux_kontext"]
    assert rc == 0 and r["status"] == "ok" and r["check"]["passed"], r
    assert r["unet_evals_per_image"] == {"ours": STEPS, "reference": STEPS}
    f = r["flops"]
    assert min(f["U"], f["E"], f["D"]) > 0 and f["floor"] == pytest.approx(f["E"] + f["D"] + STEPS * f["U"])
