"""FlowEdit on the toy SD3 and toy FLUX backbones: its invariant (identical conditionings return the source
latent), its step accounting and per-family settings (SD3_exp.yaml / FLUX_exp.yaml), parity of its sampling
branch with diffusers' StableDiffusion3Pipeline / FluxPipeline, backbone checks. Parity with the authors'
FlowEditFLUX: tests/test_golden_official.py."""
import numpy as np
import pytest
import torch

from editors.flowedit import FlowEditEditor
from pie_bench.core.sample import Sample
from tests.batch_support import batch_matches_single


def _sample(src="a cat on a table", tar="a [dog] on a table", seed=0):
    img = np.random.default_rng(seed).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    return Sample(id="s", edit_type=0, source_prompt_raw=src, target_prompt_raw=tar,
                  mask=np.zeros((512, 512), bool), _image=img)


@pytest.fixture(scope="module")
def editor():
    e = FlowEditEditor()
    e.load("toy")
    return e


def test_identical_conditionings_return_the_source(editor):
    e = FlowEditEditor(tar_guidance_scale=3.5)  # same prompt and same guidance on both branches
    e.load("toy")
    s = _sample(tar="a cat on a table")
    out = e.edit(s, torch.Generator().manual_seed(0))
    x_src = e.backbone.encode_image(s.image)
    assert torch.allclose(torch.from_numpy(out.extras["final_latent"]), x_src, atol=1e-5)
    # the source up to the VAE (a latent within 1e-5 can flip a rounding now and then)
    diff = np.abs(out.image.astype(int) - e.backbone.decode(x_src, quantize="round")[0].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_edit_moves_the_latent_and_counts_steps(editor):
    s = _sample()
    out = editor.edit(s, torch.Generator().manual_seed(0))
    assert out.image.shape == (512, 512, 3) and out.image.dtype == np.uint8
    x_src = editor.backbone.encode_image(s.image)
    assert float((torch.from_numpy(out.extras["final_latent"]) - x_src).abs().max()) > 1e-2
    # n_max 33 of T 50 steps, one noise draw, source and target branch each with CFG: 4 transformer passes
    assert out.extras["transformer_evals"] == 4 * 33
    again = editor.edit(s, torch.Generator().manual_seed(0))
    assert np.array_equal(out.image, again.image)  # seeded by the sample's generator


def test_sampling_branch_matches_the_sd3_pipeline():
    """n_max = n_min = T: FlowEdit is plain target-prompt sampling from the noise its first step draws, which
    is StableDiffusion3Pipeline with those latents (an independent implementation of the same ODE)."""
    e = FlowEditEditor(T_steps=6, n_max=6, n_min=6, tar_guidance_scale=4.0)
    e.load("toy")
    s = _sample()
    out = e.edit(s, torch.Generator().manual_seed(3))
    x_src = e.backbone.encode_image(s.image)
    noise = torch.randn(x_src.shape, generator=torch.Generator().manual_seed(3))
    ref = e.backbone.pipe(prompt=s.target_prompt, negative_prompt="", latents=noise.clone(), num_inference_steps=6,
                          guidance_scale=4.0, height=e.backbone.resolution, width=e.backbone.resolution,
                          max_sequence_length=e.backbone.max_sequence_length, output_type="latent").images
    assert torch.allclose(torch.from_numpy(out.extras["final_latent"]), ref, atol=1e-4)


def test_backbone_checks(tmp_path, monkeypatch):
    from editors.rf_inversion import RFInversionEditor

    assert "rectified-flow" in FlowEditEditor.backbone_unavailable("sd14")
    # the shared check names the editor that asked
    assert RFInversionEditor.backbone_unavailable("sd15").startswith("rf_inversion needs")
    monkeypatch.setenv("PIE_BENCH_SHAPES_MODELS", str(tmp_path))
    assert "not trained yet" in FlowEditEditor.backbone_unavailable("shapes")
    assert FlowEditEditor.backbone_unavailable("toy") is None
    with pytest.raises(Exception, match="n_min <= n_max"):
        FlowEditEditor(n_max=60).load("toy")


def test_list_editors_shows_the_flow_backbones():
    from click.testing import CliRunner

    from cli import cli as main

    res = CliRunner().invoke(main, ["list-editors"])
    assert res.exit_code == 0
    for name in ("flowedit", "rf_inversion"):
        start = next(i for i, line in enumerate(res.output.splitlines()) if line.startswith(f"│ {name} "))
        row = " ".join(res.output.splitlines()[start:start + 6])
        assert "yes" in row and "sd3" in row


# ---- FLUX (toy-flux): FLUX_exp.yaml's settings, guidance in the embedding, one pass per branch


@pytest.fixture(scope="module")
def flux_editor():
    e = FlowEditEditor()
    e.load("toy-flux")
    return e


def test_flux_runs_the_authors_flux_settings(flux_editor):
    assert flux_editor.is_toy and flux_editor.backbone.family == "flux"
    assert flux_editor.settings == dict(T_steps=28, n_avg=1, src_guidance_scale=1.5, tar_guidance_scale=5.5,
                                        n_min=0, n_max=24)
    s = _sample()
    out = flux_editor.edit(s, torch.Generator().manual_seed(0))
    assert out.extras["settings"] == "FLUX_exp.yaml"
    assert out.extras["transformer_evals"] == 2 * 24  # no CFG: one pass per branch per step
    x_src = flux_editor.backbone.encode_image(s.image)
    assert out.extras["final_latent"].shape == (1, 16, 16, 16)
    assert float((torch.from_numpy(out.extras["final_latent"]) - x_src).abs().max()) > 1e-2
    # the SD3 toy keeps SD3_exp.yaml's
    e = FlowEditEditor(T_steps=4, n_max=4)
    e.load("toy")
    assert e.settings["tar_guidance_scale"] == 13.5
    assert e.edit(s, torch.Generator().manual_seed(0)).extras["settings"] == "SD3_exp.yaml with overrides"


def test_flux_identical_prompts_and_guidance_return_the_source():
    e = FlowEditEditor(src_guidance_scale=5.5)  # target 5.5 from FLUX_exp.yaml
    e.load("toy-flux")
    s = _sample(tar="a cat on a table")
    out = e.edit(s, torch.Generator().manual_seed(0))
    x_src = e.backbone.encode_image(s.image)
    assert torch.allclose(torch.from_numpy(out.extras["final_latent"]), x_src, atol=1e-5)
    # a different guidance alone moves it: the scale reaches the guidance embedding
    e2 = FlowEditEditor(src_guidance_scale=1.5)
    e2.load("toy-flux")
    moved = torch.from_numpy(e2.edit(s, torch.Generator().manual_seed(0)).extras["final_latent"])
    assert float((moved - x_src).abs().max()) > 1e-3


def test_flux_sampling_branch_matches_the_flux_pipeline():
    e = FlowEditEditor(T_steps=6, n_max=6, n_min=6)
    e.load("toy-flux")
    bb, s = e.backbone, _sample()
    out = e.edit(s, torch.Generator().manual_seed(3))
    noise = bb.randn_like(bb.encode_image(s.image), torch.Generator().manual_seed(3))
    ref = bb.pipe(prompt=s.target_prompt, latents=bb.pack(noise), num_inference_steps=6, guidance_scale=5.5,
                  height=bb.resolution, width=bb.resolution, max_sequence_length=bb.max_sequence_length,
                  output_type="latent").images
    assert torch.allclose(torch.from_numpy(out.extras["final_latent"]), bb.unpack(ref), atol=1e-4)


@pytest.mark.parametrize("backbone", ["toy", "toy-flux"])
def test_batch_equals_one_by_one(backbone):
    """edit_batch: three samples in one transformer batch give each sample's single edit (its own noise draws)."""
    e = FlowEditEditor(T_steps=6, n_max=4, n_min=1)  # n_min 1: the plain-sampling tail is batched too
    e.load(backbone)
    samples = [_sample(seed=k, tar=t) for k, t in enumerate(("a [dog] on a table", "a cat on a [chair]",
                                                            "a [red] cat on a table"))]
    batch, _ = batch_matches_single(e, samples, [10, 11, 12], latent_tol=1e-4, image_tol=1)
    assert np.abs(batch[0].extras["final_latent"] - batch[1].extras["final_latent"]).max() > 1e-2
