"""Pix2Pix-Zero: the authors' schedules and roll draws, parity with diffusers' (deprecated) pipeline given
those, the reconstruction invariant, the inversion regulariser, sentence-bank directions, shared-UNet
hygiene. (Agreement with PIE-Bench's own code: tests/test_golden_official.py.)"""
from __future__ import annotations

import dataclasses
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from editors.pix2pix_zero import (Pix2PixZeroEditor, auto_corr_loss, draw_rolls, kl_loss, probed_cross_attention,
                                  regularize_noise, roll_rng)
from pie_bench.core.errors import ConfigError

STEPS = 3


@pytest.fixture(scope="module")
def editor():
    ed = Pix2PixZeroEditor(num_inference_steps=STEPS)
    ed.load("toy")
    return ed


@pytest.fixture(scope="module")
def inverted(editor, smoke):
    bb, s = editor.backbone, smoke.samples[0]
    g = torch.Generator().manual_seed(5)
    latents = bb.encode_image(s.image, sample=True, generator=g)
    cond = bb.encode_prompt([s.source_prompt])
    return s, cond, editor.invert(latents, cond, roll_rng(g))


def test_defaults_are_pie_bench():
    c = Pix2PixZeroEditor.Config()
    assert (c.num_inference_steps, c.guidance_scale, c.xa_guidance, c.lambda_ac, c.lambda_kl, c.num_reg_steps,
            c.num_ac_rolls, c.caption) == (50, 7.5, 0.1, 20.0, 20.0, 5, 5, "source_prompt")


def test_authors_schedules():
    """PIE-Bench's code: edit at 1000 − Δ + 1, …, 1 (SD v1.4's steps_offset 1); inversion at the same
    timesteps ascending, each step ᾱ[t − 1] → ᾱ[t + Δ − 1], the last one to ᾱ_999."""
    ed = Pix2PixZeroEditor(num_inference_steps=10)
    ed.load("toy")
    sched = ed.new_scheduler()
    assert sched.timesteps.tolist() == list(range(901, 0, -100))
    alphas = sched.alphas_cumprod
    steps = ed.inversion_schedule()
    assert [t for t, _, _ in steps] == list(range(1, 1000, 100))
    assert all(torch.equal(a, alphas[t - 1]) for t, a, _ in steps)
    assert [int((alphas - b).abs().argmin()) for _, _, b in steps] == list(range(100, 1000, 100)) + [999]


def test_rolls_are_the_authors_python_draws():
    """One ``randrange(size // 2)`` per channel and pyramid level, channel-major, from Python's RNG seeded
    with the sample's seed (the authors' driver calls ``random.seed(1234)`` before every sample)."""
    rolls = draw_rolls((1, 4, 32, 32), roll_rng(torch.Generator().manual_seed(1234)))
    r = random.Random(1234)
    expected = [[r.randrange(16), r.randrange(8), r.randrange(4)] for _ in range(4)]
    assert [lvl.tolist() for lvl in rolls] == [list(col) for col in zip(*expected)]


def _deprecated_pipeline(bb, seed):
    try:
        from benchmarks.reference.pix2pix_zero import build_pipeline

        return build_pipeline(bb, seed)
    except ImportError:
        pytest.skip("diffusers no longer ships StableDiffusionPix2PixZeroPipeline; the editor does not use it, "
                    "only this parity check did")


def test_parity_with_diffusers_pipeline(editor, inverted):
    """Inversion (VAE sample from the same generator, rolls from the same seed) and edit (CFG with the
    caption as negative prompt, cross-attention guidance) equal diffusers' independent implementation,
    run with the authors' inverse schedule, timesteps and roll draws (benchmarks/reference/pix2pix_zero.py)."""
    bb = editor.backbone
    s, cond, ours_inv = inverted
    pipe = _deprecated_pipeline(bb, 5)
    saved = dict(bb.unet.attn_processors)
    try:
        img = Image.fromarray(s.image).resize((bb.resolution,) * 2, Image.LANCZOS)
        theirs_inv = pipe.invert(prompt_embeds=cond, image=img, num_inference_steps=STEPS, guidance_scale=1,
                                 generator=torch.Generator().manual_seed(5), output_type="latent").latents
        assert torch.allclose(ours_inv, theirs_inv, atol=1e-4), (ours_inv - theirs_inv).abs().max()
        emb = bb.encode_prompt([s.target_prompt, s.source_prompt])
        for xa in (0.1, 3.0):  # the second makes the guidance's own effect large against the tolerance
            editor.config = dataclasses.replace(editor.config, xa_guidance=xa)
            ours, _ = editor.generate(ours_inv, cond, editor.direction(s))
            theirs = pipe(prompt_embeds=cond, negative_prompt_embeds=cond, source_embeds=emb[1:], target_embeds=emb[:1],
                          latents=ours_inv.clone(), num_inference_steps=STEPS, guidance_scale=7.5,
                          cross_attention_guidance_amount=xa, output_type="latent").images
            assert torch.allclose(ours, theirs, atol=5e-4), (xa, (ours - theirs).abs().max())
        editor.config = dataclasses.replace(editor.config, xa_guidance=0.0)
        unguided, _ = editor.generate(ours_inv, cond, editor.direction(s))
        assert (unguided - theirs).abs().max() > 20 * 5e-4, "cross-attention guidance had no visible effect"
    finally:
        bb.unet.set_attn_processor(saved)
        editor.config = dataclasses.replace(editor.config, xa_guidance=0.1)


def test_zero_direction_reproduces_reconstruction(editor, inverted):
    s, cond, x_t = inverted
    zero = torch.zeros_like(editor.direction(s))
    for xa in (0.0, 0.1, 3.0):  # with Δ = 0 the edited maps equal the reference: the guidance gradient vanishes
        editor.config = dataclasses.replace(editor.config, xa_guidance=xa)
        edited, recon = editor.generate(x_t, cond, zero)
        assert torch.allclose(edited, recon, atol=1e-4), (xa, (edited - recon).abs().max())
    editor.config = dataclasses.replace(editor.config, xa_guidance=0.1)
    edited, recon = editor.generate(x_t, cond, editor.direction(s))
    assert (edited - recon).abs().max() > 1e-2, "a real edit direction must change the output"


def test_regularizer_losses_match_reference():
    """Vectorised auto-correlation loss with per-map rolls == the pipeline's per-channel loop, same rolls."""
    try:
        from benchmarks.reference.pix2pix_zero import pipeline_class

        P = pipeline_class()
    except ImportError:
        pytest.skip("diffusers no longer ships StableDiffusionPix2PixZeroPipeline")
    torch.manual_seed(0)
    x = torch.randn(1, 4, 32, 32)
    ours = auto_corr_loss(x, draw_rolls(x.shape, random.Random(3)))
    ref = P.auto_corr_loss(SimpleNamespace(roll_rng=random.Random(3)), x)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert kl_loss(x).item() == pytest.approx(P.kl_divergence(None, x).item(), rel=1e-6)


def test_regularizer_whitens_noise():
    # spatially correlated, off-scale noise: the regulariser lowers both losses
    smooth = torch.nn.functional.avg_pool2d(torch.randn(1, 4, 36, 36), 5, stride=1) * 3 + 0.5
    fixed = regularize_noise(smooth, random.Random(0))
    rolls = draw_rolls(smooth.shape, random.Random(1))
    assert auto_corr_loss(fixed, rolls) < 0.5 * auto_corr_loss(smooth, rolls)
    assert kl_loss(fixed) < kl_loss(smooth)  # each KL step is small on a 4x32x32 map (grad ~ 1/N)
    assert torch.equal(fixed, regularize_noise(smooth, random.Random(0))), "seeded"


def test_processors_restored_even_on_error(editor):
    unet = editor.backbone.unet
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    with pytest.raises(RuntimeError):
        with probed_cross_attention(unet):
            assert any(type(p).__name__ == "ProbedCrossAttnProcessor" for p in unet.attn_processors.values())
            raise RuntimeError("boom")
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before


def test_sentence_bank_direction(smoke, tmp_path):
    s = smoke.samples[0]
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text(f"{s.source_prompt}\n\na photo of a cat\n")
    tgt.write_text(f"{s.target_prompt}\n")
    ed = Pix2PixZeroEditor(source_sentences=str(src), target_sentences=str(tgt))
    ed.load("toy")
    emb = ed.backbone.encode_prompt([s.source_prompt, "a photo of a cat", s.target_prompt])
    expected = emb[2:] - emb[:2].mean(0, keepdim=True)
    other = dataclasses.replace(s, target_prompt_raw="something else entirely")
    assert torch.allclose(ed.direction(other), expected, atol=1e-5)  # the bank replaces the per-sample direction

    with pytest.raises(ConfigError, match="both"):
        Pix2PixZeroEditor(source_sentences=str(src)).load("toy")
    with pytest.raises(ConfigError, match="not a file"):
        Pix2PixZeroEditor(source_sentences=str(tmp_path / "nope.txt"), target_sentences=str(tgt)).load("toy")
    with pytest.raises(ConfigError, match="caption"):
        Pix2PixZeroEditor(caption="llava").load("toy")


def test_edit_end_to_end(editor, smoke):
    out = editor.edit(smoke.samples[2], torch.Generator().manual_seed(0))
    assert out.image.shape == (512, 512, 3) and out.image.dtype == np.uint8
    assert out.extras["caption"] == smoke.samples[2].source_prompt
    assert out.extras["unet_evals"] == 6 * STEPS


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    """A tiny random BLIP captioner saved in the transformers layout (what a hub download holds)."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    d = tmp_path_factory.mktemp("blip")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "picture", "of", "cat", "dog", "red",
             "bicycle", "on", "the", "grass", "sitting"]
    (d / "vocab.txt").write_text("\n".join(words) + "\n")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=BertTokenizer(str(d / "vocab.txt"), bos_token="[DEC]"))
    text = dict(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                encoder_hidden_size=16, bos_token_id=5, pad_token_id=0, sep_token_id=3, eos_token_id=3,
                max_position_embeddings=64)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(d / "m")
    processor.save_pretrained(d / "m")
    return d / "m"


def test_blip_caption_option(tiny_blip, smoke):
    from editors.pix2pix_zero import BlipCaptioner

    s = smoke.samples[0]
    caption = BlipCaptioner(str(tiny_blip), "cpu", torch.float32)(s.image)
    assert caption and not caption.startswith("a picture of")  # LAVIS strips its prompt
    ed = Pix2PixZeroEditor(caption="blip", captioner=str(tiny_blip), num_inference_steps=1)
    ed.load("toy")
    assert ed.edit(s, torch.Generator().manual_seed(0)).extras["caption"] == caption
    with pytest.raises(ConfigError, match="captioner"):
        Pix2PixZeroEditor(caption="blip", captioner=str(tiny_blip.parent / "missing")).load("toy")
