"""The FLUX backbone family on the toy FLUX: it loads through FluxPipeline from a folder written offline (T5
tokenizer included), and its editor-facing interface (unpacked latents, 1000-sigma timesteps) computes what
FluxPipeline computes: the same transformer call on packed latents, the same schedule, the same samples."""
import numpy as np
import pytest
import torch

from editors.backbone import image_to_tensor, images_to_uint8
from editors.flux_backbone import (FluxBackbone, build_toy_flux_folder, is_flux_spec, load_flux_backbone,
                                   write_t5_tokenizer_files)


@pytest.fixture(scope="module")
def bb() -> FluxBackbone:
    return load_flux_backbone("toy-flux")


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (512, 512, 3), dtype=np.uint8)


def test_toy_loads_through_flux_pipeline(bb):
    import json

    from diffusers import FluxPipeline
    from transformers import T5EncoderModel

    from editors.flow_backbone import load_flow_backbone

    folder = build_toy_flux_folder()
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "FluxPipeline"
    assert type(bb.pipe) is FluxPipeline and isinstance(bb.pipe.text_encoder_2, T5EncoderModel)
    assert bb.family == "flux" and bb.is_toy and bb.guidance_embeds and bb.resolution == 64
    assert bb.transformer.config.in_channels == 4 * bb.vae.config.latent_channels == 64
    # the flow editors' one loader dispatches FLUX specs, by alias or by the folder's pipeline class
    assert load_flow_backbone("toy-flux") is bb
    assert load_flow_backbone("toy").family == "sd3"
    assert is_flux_spec(str(folder)) and is_flux_spec("flux-dev") and is_flux_spec("black-forest-labs/FLUX.1-dev")
    assert not is_flux_spec("toy") and not is_flux_spec("sd3") and not is_flux_spec("shapes")


def test_t5_tokenizer_written_offline(tmp_path):
    from transformers import T5TokenizerFast

    tok = T5TokenizerFast.from_pretrained(write_t5_tokenizer_files(tmp_path / "tok"))
    ids = tok(["a red cat", "a red cat!"], padding="max_length", max_length=12, truncation=True).input_ids
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1 and tok.unk_token_id == 2
    assert ids[0][:ids[0].index(1)] == ids[1][:ids[0].index(1)]  # same words, same pieces
    assert ids[0][ids[0].index(1) + 1:] == [0] * (11 - ids[0].index(1))  # eos, then padding
    assert len(set(ids[0])) > 4  # characters are told apart
    assert tok.decode(ids[0], skip_special_tokens=True) == "a red cat"


def test_velocity_is_the_transformer_on_packed_latents(bb):
    """FluxPipeline's call: packed (B, hw/4, 64) latents, timestep / 1000, the guidance embedding, image ids."""
    pipe = bb.pipe
    cond = bb.encode_prompt(["a cat on a table"])
    z = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    t = bb.schedule(6)[0][2]
    x = pipe._pack_latents(z, 1, 16, 16, 16)
    _, ids = pipe.prepare_latents(1, 16, 64, 64, torch.float32, "cpu", None, latents=x)
    want = pipe.transformer(hidden_states=x, timestep=t.expand(1) / 1000, guidance=torch.full([1], 3.5),
                            pooled_projections=cond[1], encoder_hidden_states=cond[0], txt_ids=cond[2], img_ids=ids,
                            return_dict=False)[0]
    ours = bb.velocity(z, t, cond, guidance=3.5)
    assert torch.equal(pipe._unpack_latents(want, 64, 64, pipe.vae_scale_factor), ours)
    assert torch.equal(bb.pack(ours), want)
    # guidance is an input of the distilled model; a negative conditioning counts only for true CFG
    assert float((bb.velocity(z, t, cond, guidance=1.0) - ours).abs().max()) > 1e-4
    neg = bb.encode_prompt([""])
    assert torch.equal(bb.velocity(z, t, cond, neg, guidance=3.5), ours)
    vn = bb.velocity(z, t, neg, guidance=3.5)
    assert torch.allclose(bb.velocity(z, t, cond, neg, guidance=3.5, true_cfg_scale=2.0), vn + 2 * (ours - vn),
                          atol=1e-6)


def _pipeline_timesteps(bb, steps):
    seen = []

    def grab(pipe, i, t, kw):
        seen.append(float(t))
        return {}

    bb.pipe(prompt="a cat", num_inference_steps=steps, height=bb.resolution, width=bb.resolution,
            max_sequence_length=bb.max_sequence_length, output_type="latent", callback_on_step_end=grab,
            generator=torch.Generator().manual_seed(0))
    return seen


def test_schedule_is_the_pipelines(bb):
    timesteps, sigmas = bb.schedule(7)
    assert np.allclose(timesteps.numpy(), _pipeline_timesteps(bb, 7), rtol=0, atol=1e-4)
    assert torch.allclose(sigmas, bb.pipe.scheduler.sigmas)  # the pipeline's scheduler after that call
    assert len(sigmas) == 8 and float(sigmas[-1]) == 0 and float(sigmas[0]) == 1
    # dynamic shifting, written out: mu linear in the packed sequence length (8 x 8 tokens) between (256, 0.5)
    # and (4096, 1.15), sigma' = e^mu s / (1 + (e^mu - 1) s) on s = linspace(1, 1/7, 7)
    mu = 0.5 + (64 - 256) * (1.15 - 0.5) / (4096 - 256)
    s = np.linspace(1, 1 / 7, 7)
    assert np.allclose(sigmas[:-1].numpy(), np.exp(mu) * s / (1 + (np.exp(mu) - 1) * s), atol=1e-6)


def test_euler_sampling_with_velocity_equals_flux_pipeline(bb):
    noise = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(4))
    cond = bb.encode_prompt(["a red square"])
    timesteps, sigmas = bb.schedule(6)
    z = noise.clone()
    for i, t in enumerate(timesteps):
        z = z + (sigmas[i + 1] - sigmas[i]) * bb.velocity(z, t, cond, guidance=4.0)
    ref = bb.pipe(prompt="a red square", latents=bb.pack(noise), num_inference_steps=6, guidance_scale=4.0,
                  height=bb.resolution, width=bb.resolution, max_sequence_length=bb.max_sequence_length,
                  output_type="latent").images
    ref = bb.unpack(ref)
    assert float((z - ref).abs().max()) <= 1e-4
    assert float((z - noise).abs().max()) > 0.1  # the sampler moved


def test_encode_decode_and_noise_layout(bb):
    z = bb.encode_image(_image())
    assert z.shape == (1, 16, 16, 16) and z.dtype == torch.float32
    img = bb.decode(z)
    assert img.shape == (1, 512, 512, 3) and img.dtype == np.uint8
    assert bb.decode(z, size=None).shape == (1, 64, 64, 3)
    # (mean - shift) * scale, and decode inverts that scaling before the VAE
    mean = bb.vae.encode(image_to_tensor(_image(), 64)).latent_dist.mean
    assert torch.allclose(z, (mean - bb.vae.config.shift_factor) * bb.vae.config.scaling_factor)
    assert np.array_equal(img, images_to_uint8(bb.vae.decode(mean).sample))
    s = bb.encode_image(_image(), sample=True, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(s, z)
    # noise drawn packed, as the FLUX reference code draws it with torch.randn_like on packed latents
    n = bb.randn_like(z, torch.Generator().manual_seed(3))
    assert torch.equal(bb.pack(n), torch.randn(1, 64, 64, generator=torch.Generator().manual_seed(3)))


def test_unet_editors_are_left_out_on_flow_backbones():
    """``--editors all --backbone toy-flux`` (or sd3, flux-dev) runs the flow editors and leaves the SD1.x UNet
    editors out with a reason instead of recording load failures; ``toy`` and ``shapes`` name both families."""
    from editors.registry import resolve_editor_names

    for spec in ("toy-flux", "sd3", "flux-dev", "shapes-flow"):
        names, unavailable = resolve_editor_names("all", spec)
        for unet_editor in ("ddim_p2p", "icd", "ledits_pp", "masactrl", "ip2p"):
            assert unet_editor not in names and "rectified-flow" in unavailable[unet_editor], (spec, unet_editor)
        assert {"flowedit", "rf_inversion", "identity"} <= set(names), spec
    names, _ = resolve_editor_names("all", "toy")
    assert {"ddim_p2p", "flowedit", "identity"} <= set(names)
