"""MasaCtrl and Direct Inversion + MasaCtrl on the toy backbone (the authors' code itself is checked in
tests/test_golden_official.py)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

STEPS = 6


@pytest.fixture(scope="module")
def editors():
    from editors.registry import get_editor_class

    out = {}
    for name in ("masactrl", "direct_inversion_masactrl"):
        ed = get_editor_class(name)(num_ddim_steps=STEPS, start_step=1)
        ed.load("toy")
        out[name] = ed
    return out


def test_mutual_attention_reads_the_source_keys_and_values():
    """In a controlled layer the target's output is attention of its queries over the source's keys and
    values: what diffusers' own processor gives with the source's hidden states as the context."""
    from diffusers.models.attention_processor import Attention, AttnProcessor

    from editors.masactrl import MutualSelfAttention, MutualSelfAttnProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    x = torch.randn(2, 10, 16)  # rows: source, target
    control = MutualSelfAttention(set(), start_step=0, total_steps=50, kv_source=[0, 0])
    attn.set_processor(MutualSelfAttnProcessor(control))
    ours = attn(x)
    attn.set_processor(AttnProcessor())
    want_tgt = attn(x[1:], encoder_hidden_states=x[:1])
    want_src = attn(x[:1])
    torch.testing.assert_close(ours[1:], want_tgt, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[:1], want_src, atol=1e-5, rtol=1e-5)
    control.step = 50  # outside range(start_step, total_steps): plain self-attention
    attn.set_processor(AttnProcessor())
    torch.testing.assert_close(MutualSelfAttnProcessor(control)(attn, x), attn(x), atol=1e-5, rtol=1e-5)


def test_controlled_layers_are_the_authors_fraction(editors):
    """10 of SD1.x's 16 transformer blocks -> on the toy's 7 blocks (down 0-1, mid 2, up 3-6) blocks 5 and
    6, the finer decoder level; the same as start_layer 5 of 7."""
    from editors.masactrl import transformer_self_layers
    from editors.registry import get_editor_class

    ed = editors["masactrl"]
    layers = transformer_self_layers(ed.backbone.unet)
    assert len(layers) == 7 and layers[2].startswith("mid_block")
    assert ed.controlled == set(layers[5:]) and all(n.startswith("up_blocks.1.") for n in ed.controlled)
    same = get_editor_class("masactrl")(start_layer=5, total_layers=7)
    same.load("toy")
    assert same.controlled == ed.controlled


def test_same_prompt_is_plain_sampling(editors, smoke):
    """Target prompt = the (empty) source prompt: every controlled layer attends to keys and values equal
    to its own, so the edit is plain DDIM sampling of the inversion with that prompt."""
    from editors.inversion import DDIMSchedule, ddim_invert, ddim_sample

    ed = editors["masactrl"]
    bb = ed.backbone
    sample = dataclasses.replace(smoke.samples[0], target_prompt_raw="")
    out = ed.edit(sample, torch.Generator())
    sched = DDIMSchedule(bb.scheduler, STEPS)
    empty = bb.encode_prompt([""])
    traj = ddim_invert(bb.unet, bb.encode_image(sample.image).float(), empty, sched)
    want = ddim_sample(bb.unet, traj[-1], empty, empty, sched, 7.5)
    assert abs(out.extras["final_latent"] - want.numpy()).max() < 1e-4
    # and the control is load-bearing for a real edit
    edited = ed.edit(smoke.samples[0], torch.Generator()).extras["final_latent"]
    plain = dataclasses.replace(ed.config, start_step=STEPS)
    ed_plain = type(ed)(plain)
    ed_plain.load("toy")
    assert abs(ed_plain.edit(smoke.samples[0], torch.Generator()).extras["final_latent"] - edited).max() > 1e-2


@pytest.mark.parametrize("name", ["masactrl", "direct_inversion_masactrl"])
def test_batch_equals_one_by_one(editors, smoke, name):
    ed = editors[name]
    samples = smoke.samples[:3]
    batch = ed.edit_batch(samples, [torch.Generator()] * 3)
    for s, b in zip(samples, batch):
        one = ed.edit(s, torch.Generator())
        assert abs(one.extras["final_latent"] - b.extras["final_latent"]).max() < 1e-3  # float reassociation


def test_direct_inversion_shares_the_inversion(editors, smoke):
    """Both variants invert with the empty prompt: the second one reuses the first one's trajectory."""
    from editors.inversion import INVERSION_CACHE

    INVERSION_CACHE.clear()
    s = smoke.samples[4]
    editors["masactrl"].edit(s, torch.Generator())
    out = editors["direct_inversion_masactrl"].edit(s, torch.Generator())
    assert out.extras["inversion_cached"] is True
    assert out.extras["unet_evals"] == 3 * STEPS
