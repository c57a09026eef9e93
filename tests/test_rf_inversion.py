"""RF-Inversion on the toy SD3 and toy FLUX backbones: its controllers' limits (gamma 1 inverts onto y_1
exactly; eta 0 is plain sampling, checked against StableDiffusion3Pipeline / FluxPipeline from the inverted
latent) and determinism. Parity with the community pipeline itself: tests/test_golden_official.py."""
import numpy as np
import pytest
import torch

from editors.rf_inversion import RFInversionEditor
from pie_bench.core.sample import Sample
from tests.batch_support import batch_matches_single


def _sample():
    img = np.random.default_rng(1).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    return Sample(id="s", edit_type=0, source_prompt_raw="a cat", target_prompt_raw="a [dog]",
                  mask=np.zeros((512, 512), bool), _image=img)


@pytest.mark.parametrize("backbone", ["toy", "toy-flux"])
def test_gamma_one_inverts_onto_the_reference_noise(backbone):
    e = RFInversionEditor(gamma=1.0, num_inversion_steps=8)
    e.load(backbone)
    y0 = e.backbone.encode_image(_sample().image)
    inverted = e.invert(y0, torch.Generator().manual_seed(5))
    y1 = e.backbone.randn_like(y0, torch.Generator().manual_seed(5))
    # gamma 1 follows (y_1 - Y) / (1 - t_i) alone, a linear recursion Y <- Y + a_i (y_1 - Y) with
    # a_i = (sigma_i - sigma_{i+1}) / (1 - i / N): Y_N = y_1 + (y_0 - y_1) prod(1 - a_i), whatever the model
    _, sigmas = e.backbone.schedule(8)
    n = len(sigmas)
    keep = float(np.prod([1 - float(sigmas[i] - sigmas[i + 1]) / (1 - i / n) for i in range(n - 1)]))
    assert torch.allclose(inverted, y1 + (y0 - y1) * keep, atol=1e-5)
    assert abs(keep) < 0.5  # most of the way to y_1


def test_eta_zero_is_plain_sampling_from_the_inverted_latent():
    e = RFInversionEditor(eta=0.0, num_inversion_steps=6, guidance_scale=4.0)
    e.load("toy")
    s = _sample()
    out = e.edit(s, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    inverted = e.invert(e.encode(s, g), g)
    bb = e.backbone
    ref = bb.pipe(prompt=s.target_prompt, negative_prompt="", latents=inverted, num_inference_steps=6,
                  guidance_scale=4.0, height=bb.resolution, width=bb.resolution,
                  max_sequence_length=bb.max_sequence_length, output_type="latent").images
    assert torch.allclose(torch.from_numpy(out.extras["final_latent"]), ref, atol=1e-4)
    assert out.extras["transformer_evals"] == 6 + 2 * 6 and out.extras["settings"].startswith("SD3 port")


def test_flux_eta_zero_is_flux_pipeline_sampling_from_the_inverted_latent():
    """On FLUX: guidance 3.5 in the embedding, one pass per step; y_0 is a posterior sample drawn first."""
    e = RFInversionEditor(eta=0.0, num_inversion_steps=6)
    e.load("toy-flux")
    bb, s = e.backbone, _sample()
    out = e.edit(s, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    y0 = e.encode(s, g)
    assert not torch.allclose(y0, bb.encode_image(s.image))  # a sample, not the mean
    inverted = e.invert(y0, g)
    ref = bb.pipe(prompt=s.target_prompt, latents=bb.pack(inverted), num_inference_steps=6, guidance_scale=3.5,
                  height=bb.resolution, width=bb.resolution, max_sequence_length=bb.max_sequence_length,
                  output_type="latent").images
    assert torch.allclose(torch.from_numpy(out.extras["final_latent"]), bb.unpack(ref), atol=1e-4)
    assert out.extras["transformer_evals"] == 6 + 6 and out.extras["settings"] == "community pipeline (FLUX)"


@pytest.mark.parametrize("backbone", ["toy", "toy-flux"])
def test_eta_pulls_towards_the_source(backbone):
    s = _sample()
    dist = []
    for eta in (0.0, 0.9):
        e = RFInversionEditor(eta=eta, stop_timestep=0.5, num_inversion_steps=8)
        e.load(backbone)
        out = e.edit(s, torch.Generator().manual_seed(0))
        y0 = e.encode(s, torch.Generator().manual_seed(0))
        dist.append(float((torch.from_numpy(out.extras["final_latent"]) - y0).pow(2).mean()))
        assert np.array_equal(out.image, e.edit(s, torch.Generator().manual_seed(0)).image)
    assert dist[1] < dist[0]


@pytest.mark.parametrize("backbone", ["toy", "toy-flux"])
def test_batch_equals_one_by_one(backbone):
    """edit_batch: each row draws y_0 and y_1 from its own generator as a single edit does."""
    e = RFInversionEditor(num_inversion_steps=6, stop_timestep=0.5)
    e.load(backbone)
    rng = np.random.default_rng(3)
    samples = [Sample(id=f"s{k}", edit_type=0, source_prompt_raw="a cat", target_prompt_raw=t,
                      mask=np.zeros((512, 512), bool), _image=rng.integers(0, 255, (512, 512, 3), dtype=np.uint8))
               for k, t in enumerate(("a [dog]", "a [red] cat", "a cat [on grass]"))]
    batch, _ = batch_matches_single(e, samples, [20, 21, 22], latent_tol=1e-4, image_tol=1)
    assert np.abs(batch[0].extras["final_latent"] - batch[1].extras["final_latent"]).max() > 1e-2
