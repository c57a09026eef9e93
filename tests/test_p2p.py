"""Prompt-to-Prompt on the toy backbone: token alignment on PIE-style prompt pairs, processor
installation, identical prompts give the reconstruction, LocalBlend keeps the outside equal to the
reconstruction, inversion sharing, determinism, and the three editors end to end through the CLI."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from editors.inversion import INVERSION_CACHE, DDIMSchedule, ddim_invert, ddim_sample
from editors.p2p import P2PController, align, attention_layers, blend_layers
from editors.p2p.editor import p2p_sample
from pie_bench.core.errors import ConfigError

T = 77


@pytest.fixture(scope="module")
def bb():
    from editors.backbone import load_backbone

    return load_backbone("toy")


@pytest.fixture(scope="module")
def tok(bb):
    return bb.tokenizer


def _lcs(a, b) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


# ---------------------------------------------------------------------------------------------
# alignment


@pytest.mark.parametrize("src,tgt,expected", [
    # word swap: the new token keeps its own attention (alpha 0)
    ("a cat sitting on a mat", "a dog sitting on a mat", [0, 1, -1, 3, 4, 5, 6, 7]),
    # insertion (PIE 000000000000): "rusty" is new, everything after it shifts by one
    ("a slanted mountain bicycle on the road in front of a building",
     "a slanted rusty mountain bicycle on the road in front of a building",
     [0, 1, 2, 3, -1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]),
    # deletion (smoke 322000000900): "on a tripod" removed, "in a field" maps past it
    ("a man with a camera on a tripod in a field", "a man with a camera in a field", [0, 1, 2, 3, 4, 5, 9, 10, 11, 12]),
    # two swaps in one pair (smoke 000000000900)
    ("a red motorcycle parked in a garage", "a red bicycle parked in a barn", [0, 1, 2, -1, 4, 5, 6, -1, 8]),
])
def test_refine_mapper_on_pie_prompt_pairs(tok, src, tgt, expected):
    mapper, alphas = align.refinement_mapper(tok, src, tgt, T)
    n = len(expected)
    got = [int(m) if a else -1 for m, a in zip(mapper[:n], alphas[:n])]
    assert got == expected
    # past the prompt: identity, alpha 1 (the reference's padding rule)
    assert mapper[n:].tolist() == list(range(n, T)) and bool(alphas[n:].all())
    # independent check: aligned tokens are equal, in order, and as many as the longest common subsequence
    x, y = tok(src).input_ids, tok(tgt).input_ids
    pairs = [(int(mapper[j]), j) for j in range(len(y)) if alphas[j]]
    assert all(x[i] == y[j] for i, j in pairs)
    assert [i for i, _ in pairs] == sorted({i for i, _ in pairs})
    assert len(pairs) == _lcs(x, y)


def test_replace_mapper_word_swap(tok):
    m = align.replacement_mapper(tok, "a cat sitting on a mat", "a dog sitting on a mat", T)
    torch.testing.assert_close(m, torch.eye(T))  # one token each: cat's attention becomes dog's
    # a 2-token word ("slanted") swapped for a 1-token word ("red"): both source tokens feed it,
    # the rest shifts by one, and attention mass is conserved row by row
    src, tgt = "a slanted mountain bicycle", "a red mountain bicycle"
    assert len(tok(src).input_ids) == len(tok(tgt).input_ids) + 1
    m = align.replacement_mapper(tok, src, tgt, T)
    assert m[2, 2] == 1 and m[3, 2] == 1 and m[4, 3] == 1 and m[5, 4] == 1 and m[6, 5] == 1
    assert torch.allclose(m[:T - 1].sum(1), torch.ones(T - 1))
    # and the other way round: one source token spread evenly over two target tokens
    m = align.replacement_mapper(tok, tgt, src, T)
    assert m[2, 2] == 0.5 and m[2, 3] == 0.5 and m[3, 4] == 1
    with pytest.raises(ConfigError, match="same number of words"):
        align.replacement_mapper(tok, "a cat", "a small cat", T)
    assert align.choose_mode("a cat", "a dog") == "replace" and align.choose_mode("a cat", "a big dog") == "refine"


def test_words_equalizer_and_schedules(tok):
    text = "a cup of coffee, with a spoon"
    assert align.word_token_indices(tok, text, "coffee", T) == [4]  # "coffee," matched, its comma token left out
    assert align.word_token_indices(tok, text, "a", T) == [1, 7]
    assert align.word_token_indices(tok, text, "tea", T) == []
    # PIE-Bench's rule (get_word_inds): exact whitespace-split words only, so "coffee," is not "coffee"
    assert align.word_token_indices(tok, text, "coffee", T, match="exact") == []
    assert align.word_token_indices(tok, text, "spoon", T, match="exact") == [8]
    assert align.equalizer(tok, text, {"coffee": 2.0}, T, match="exact").sum() == T
    with pytest.raises(ConfigError, match="word match"):
        align.word_token_indices(tok, text, "coffee", T, match="fuzzy")
    eq = align.equalizer(tok, text, {"spoon": 2.0}, T)
    assert eq[8] == 2.0 and eq.sum() == T + 1
    alphas = align.time_word_alphas(tok, text, 50, 0.4, T)
    assert alphas.shape == (51, T) and bool(alphas[:20].all()) and not alphas[20:].any()  # int(0.4 * 51) = 20
    alphas = align.time_word_alphas(tok, text, 50, {"default_": 0.4, "spoon": (0.0, 1.0)}, T)
    assert bool(alphas[:, 8].all()) and not alphas[30, 7]
    assert align.step_range(0.6, 50) == (0, 30)


# ---------------------------------------------------------------------------------------------
# controller on the UNet


def test_processors_only_on_modified_layers(bb):
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = bb.unet
    layers = attention_layers(unet)
    # toy: 16x16 latent, blocks at 16^2 and 8^2; SD1.x's rules fall out of the block structure
    assert {l.downscale for l in layers} == {1, 2} and sum(l.is_cross for l in layers) == len(layers) // 2
    blend = blend_layers(layers)
    assert blend and all(l.is_cross and l.place in ("down", "up") and l.downscale == 2 for l in blend)
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    ctrl = P2PController.from_prompts(bb.tokenizer, "a cat", "a dog", num_steps=4, blend_words=(("cat",), ("dog",)))
    with ctrl.attach(unet):
        procs = unet.attn_processors
        installed = {l.name for l in ctrl.installed}
        full_res_self = {l.name for l in layers if not l.is_cross and l.downscale == 1}
        assert installed == {l.name for l in layers if l.is_cross or l.downscale >= 2}
        assert all(isinstance(procs[n], AttnProcessor2_0) for n in full_res_self)  # fused SDPA kept
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
    # nothing to do: nothing installed
    idle = P2PController.from_prompts(bb.tokenizer, "a cat", "a dog", num_steps=4, cross_replace_steps=0.0,
                                      self_replace_steps=0.0)
    with idle.attach(unet):
        assert idle.installed == []


@pytest.fixture(scope="module")
def inverted(bb, smoke):
    s = smoke.samples[0]  # a red motorcycle parked in a garage -> a red bicycle parked in a barn
    sched = DDIMSchedule(bb.scheduler, 6)
    cond = bb.encode_prompt([s.source_prompt, s.target_prompt])
    uncond = bb.encode_prompt([""])
    traj = ddim_invert(bb.unet, bb.encode_image(s.image).float(), cond[:1], sched)
    recon = ddim_sample(bb.unet, traj[-1], cond[:1], uncond, sched, 7.5)
    return s, sched, cond, uncond, traj, recon


def test_identical_prompts_return_the_reconstruction(bb, inverted):
    s, sched, cond, uncond, traj, recon = inverted
    ctrl = P2PController.from_prompts(bb.tokenizer, s.source_prompt, s.source_prompt, num_steps=6,
                                      blend_words=(("motorcycle",), ("motorcycle",)))
    same = torch.cat([cond[:1], cond[:1]])
    out = p2p_sample(bb.unet, ctrl, traj[-1], same, uncond, sched, 7.5)
    torch.testing.assert_close(out[0], recon[0], rtol=1e-3, atol=1e-3)  # batch 4 vs 2, explicit softmax vs SDPA
    torch.testing.assert_close(out[1], recon[0], rtol=1e-3, atol=1e-3)  # batch 4 vs 2, explicit softmax vs SDPA
    # sanity: a different target prompt does change the target branch, not the source one
    ctrl = P2PController.from_prompts(bb.tokenizer, s.source_prompt, s.target_prompt, num_steps=6)
    out = p2p_sample(bb.unet, ctrl, traj[-1], cond, uncond, sched, 7.5)
    torch.testing.assert_close(out[0], recon[0], rtol=1e-3, atol=1e-3)  # batch 4 vs 2, explicit softmax vs SDPA
    assert (out[1] - recon[0]).abs().max() > 1e-2


def test_local_blend_keeps_the_outside_equal_to_the_reconstruction(bb, inverted):
    s, sched, cond, uncond, traj, recon = inverted
    # the toy's cross-attention is nearly uniform, so a high threshold is needed for a partial mask
    ctrl = P2PController.from_prompts(bb.tokenizer, s.source_prompt, s.target_prompt, num_steps=6,
                                      blend_words=(("motorcycle",), ("bicycle",)), blend_threshold=0.9,
                                      equalizer={"bicycle": 2.0})
    out = p2p_sample(bb.unet, ctrl, traj[-1], cond, uncond, sched, 7.5)
    mask = ctrl.last_mask
    assert mask is not None and mask.shape == (1, *recon.shape[-2:])
    assert 0.0 < mask.float().mean() < 1.0, "want a mask with an inside and an outside"
    assert ctrl.blend_applied == 6 - int(0.2 * 6)
    outside = ~mask.expand_as(out[1])
    torch.testing.assert_close(out[0], recon[0], rtol=1e-3, atol=1e-3)  # batch 4 vs 2, explicit softmax vs SDPA
    assert torch.equal(out[1][outside], out[0][outside])  # exactly the source branch outside
    assert (out[1][~outside] - out[0][~outside]).abs().max() > 1e-3  # and edited inside


# ---------------------------------------------------------------------------------------------
# editors


def _editor(name, **kw):
    from editors.registry import get_editor_class

    ed = get_editor_class(name)(**kw)
    ed.load("toy")
    return ed


def test_defaults_are_pie_bench():
    from editors.registry import get_editor_class

    for name in ("ddim_p2p", "nti_p2p", "npi_p2p"):
        c = get_editor_class(name).Config()
        assert (c.num_ddim_steps, c.guidance_scale, c.cross_replace_steps, c.self_replace_steps, c.controller,
                c.blend_start, c.blend_threshold, c.eq_value, c.seed, c.word_match) == (
            50, 7.5, 0.4, 0.6, "refine", 0.2, 0.3, 2.0, 1234, "exact")
    c = get_editor_class("nti_p2p").Config()
    assert (c.inner_steps, c.early_stop_epsilon, c.early_stop_slope, c.learning_rate, c.lr_decay) == (10, 1e-5, 2e-5, 1e-2, 1e-2)


def test_editor_identical_prompts_image_is_the_reconstruction(bb, smoke):
    s = dataclasses.replace(smoke.samples[0], target_prompt_raw=smoke.samples[0].source_prompt_raw, blended_words=None)
    ed = _editor("ddim_p2p", num_ddim_steps=4, share_inversion=False)
    out = ed.edit(s, torch.Generator().manual_seed(0))
    sched = DDIMSchedule(bb.scheduler, 4)
    cond = bb.encode_prompt([s.source_prompt])
    traj = ddim_invert(bb.unet, bb.encode_image(s.image).float(), cond, sched)
    recon = bb.decode(ddim_sample(bb.unet, traj[-1], cond, bb.encode_prompt([""]), sched, 7.5))[0]
    assert np.abs(out.image.astype(int) - recon.astype(int)).max() <= 1
    # the reference's 0-iteration null-text loop and reconstruction pass are gone: 4 + 4*4 evaluations
    assert out.extras["unet_evals"] == 20 and out.extras["unet_backward"] == 0


def test_shared_inversion_seed_determinism_and_counts(smoke):
    s = smoke.samples[1]
    INVERSION_CACHE.clear()
    ddim = _editor("ddim_p2p", num_ddim_steps=4)
    nti = _editor("nti_p2p", num_ddim_steps=4, inner_steps=2)
    npi = _editor("npi_p2p", num_ddim_steps=4)
    a = ddim.edit(s, torch.Generator().manual_seed(0))
    b = nti.edit(s, torch.Generator().manual_seed(0))
    c = npi.edit(s, torch.Generator().manual_seed(0))
    assert not a.extras["inversion_cached"] and b.extras["inversion_cached"] and c.extras["inversion_cached"]
    assert a.extras["unet_evals"] == 4 + 16
    assert b.extras["unet_evals"] == 4 * (1 + 1) + b.extras["nti_iterations"] + 16  # + eps_c, advance; no inversion
    assert c.extras["unet_evals"] == 3 * 4  # the ∅src row equals c_src and is dropped
    # sharing changes nothing; same seed, same output
    alone = _editor("nti_p2p", num_ddim_steps=4, inner_steps=2, share_inversion=False)
    again = alone.edit(s, torch.Generator().manual_seed(0))
    assert not again.extras["inversion_cached"] and np.array_equal(again.image, b.image)
    assert np.array_equal(npi.edit(s, torch.Generator().manual_seed(0)).image, c.image)
    # npi's 3-row batch equals the plain 4-row computation
    four = _editor("npi_p2p", num_ddim_steps=4, npi_interp=1e-9)
    diff = np.abs(four.edit(s, torch.Generator().manual_seed(0)).image.astype(int) - c.image.astype(int))
    assert diff.max() <= 3 and diff.mean() < 0.01  # measured: max 2, mean 7e-4 (float rounding only)


def test_bad_config_fails_with_one_line(smoke):
    from editors.registry import get_editor_class

    with pytest.raises(ConfigError, match="controller"):
        _editor("ddim_p2p", controller="swap")
    with pytest.raises(ConfigError, match="inner_steps"):
        get_editor_class("nti_p2p")(inner_step=3)
    # Replace forced on prompts with different word counts: a one-line error naming the fix
    ed = _editor("ddim_p2p", controller="replace", num_ddim_steps=2)
    with pytest.raises(ConfigError, match="refine"):
        ed.edit(smoke.samples[2], torch.Generator().manual_seed(0))


def test_local_backbone_folder_loads_through_the_real_path(smoke):
    """``--backbone <local diffusers folder>``: the toy saved with save_pretrained, loaded offline."""
    from editors.backbone import build_toy_folder

    ed = _editor("npi_p2p", num_ddim_steps=3, share_inversion=False)
    local = type(ed)(num_ddim_steps=3, share_inversion=False)
    local.load(str(build_toy_folder("sd")))
    assert not local.backbone.is_toy and local.backbone.unet is not ed.backbone.unet
    s = smoke.samples[0]
    assert np.array_equal(local.edit(s, torch.Generator()).image, ed.edit(s, torch.Generator()).image)


def test_cli_runs_the_three_editors_on_the_smoke_set(tmp_path):
    from click.testing import CliRunner

    import cli

    out = tmp_path / "run"
    args = ["bench", "--data", "smoke", "--editors", "ddim_p2p,nti_p2p,npi_p2p", "--limit", "2", "--metrics", "none", "--no-progress",
            "--out", str(out), "--editor-arg", "nti_p2p.inner_steps=5"]
    for name in ("ddim_p2p", "nti_p2p", "npi_p2p"):
        args += ["--editor-arg", f"{name}.num_ddim_steps=3"]
    res = CliRunner().invoke(cli.cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted((r["editor"], r["status"]) for r in recs) == sorted(
        (e, "ok") for e in ("ddim_p2p", "nti_p2p", "npi_p2p") for _ in range(2))
    run = json.loads((out / "run.json").read_text())
    assert run["editors"]["nti_p2p"]["config"]["inner_steps"] == 5
    assert all(run["editors"][e]["config"]["num_ddim_steps"] == 3 for e in ("ddim_p2p", "nti_p2p", "npi_p2p"))
    nti = [r for r in recs if r["editor"] == "nti_p2p"]
    assert all(1 <= r["extras"]["nti_iterations"] <= 15 for r in nti)
    for r in recs:
        assert (out / r["image"]).exists()


# ---------------------------------------------------------------------------------------------
# the processor against a plain explicit-probability attention, and SD1.x's layer structure


def _naive_attention(attn, x, ctx, edit_probs):
    """Reference-style attention: explicit probabilities, ``edit_probs(probs)`` on the (B, heads, N, K) map."""
    b = x.shape[0]
    q, k, v = attn.to_q(x), attn.to_k(ctx), attn.to_v(ctx)
    split = lambda t: t.view(b, -1, attn.heads, t.shape[-1] // attn.heads).transpose(1, 2)
    q, k, v = split(q), split(k), split(v)
    probs = edit_probs((q @ k.transpose(-1, -2) * attn.scale).softmax(-1))
    out = (probs @ v).transpose(1, 2).reshape(b, -1, attn.heads * q.shape[-1])
    return attn.to_out[1](attn.to_out[0](out))


def test_processor_matches_explicit_probability_attention(bb):
    from diffusers.models.attention_processor import Attention

    from editors.p2p.controller import P2PAttnProcessor, P2PBatch
    from editors.p2p.layers import AttnLayer

    tok = bb.tokenizer
    src, tgt = "a red motorcycle parked in a garage", "a red bicycle parked in a shiny barn"
    ctrl = P2PController.from_prompts(tok, src, tgt, num_steps=10, cross_replace_steps=0.4, self_replace_steps=0.6,
                                      equalizer={"bicycle": 2.0})
    mapper, alphas = align.refinement_mapper(tok, src, tgt, T)
    eq = align.equalizer(tok, tgt, {"bicycle": 2.0}, T)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, 32, generator=g)
    ctx = torch.randn(4, T, 32, generator=g)
    torch.manual_seed(0)
    cross, self_ = Attention(32, cross_attention_dim=32, heads=4, dim_head=8), Attention(32, heads=4, dim_head=8)

    def cross_edit(p):
        p = p.clone()
        refined = p[2][..., mapper] * alphas + p[3] * (1 - alphas)
        p[3] = refined * eq
        return p

    def self_edit(p):
        p = p.clone()
        p[3] = p[2]
        return p

    with torch.no_grad():
        for step, want_cross, want_self in ((0, cross_edit, self_edit), (5, lambda p: p, self_edit),
                                            (7, lambda p: p, lambda p: p)):
            ctrl.begin_step(step)  # steps 0-3 cross-replace (int(0.4 * 11) = 4), 0-5 self-replace
            got = P2PAttnProcessor(P2PBatch([ctrl]), AttnLayer("c", "up", True, 2))(cross, x, ctx)
            torch.testing.assert_close(got, _naive_attention(cross, x, ctx, want_cross), rtol=1e-4, atol=1e-5)
            got = P2PAttnProcessor(P2PBatch([ctrl]), AttnLayer("s", "up", False, 2))(self_, x)
            torch.testing.assert_close(got, _naive_attention(self_, x, x, want_self), rtol=1e-4, atol=1e-5)


def test_sd1x_structure_layers_and_blend_maps():
    """SD1.x's block layout (tiny channels): 16 self + 16 cross layers, LocalBlend on the five 16x16
    cross-attention layers of a 64x64 latent, self-attention injected at 32x32 and coarser only."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, block_out_channels=(8, 8, 16, 16), layers_per_block=2, cross_attention_dim=16,
        attention_head_dim=4, norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3).eval()
    layers = attention_layers(unet)
    assert len(layers) == 32 and sum(l.is_cross for l in layers) == 16
    blend = blend_layers(layers)
    assert sorted(l.name.split(".attentions")[0] for l in blend) == ["down_blocks.2"] * 2 + ["up_blocks.1"] * 3
    assert all(l.side((64, 64)) == (16, 16) for l in blend)

    class Tok:  # 16 "tokens": words are single tokens
        model_max_length = 16

        def __call__(self, text, add_special_tokens=True, truncation=False, max_length=None):
            ids = [len(w) for w in text.split()]
            return type("E", (), {"input_ids": [0] + ids + [1] if add_special_tokens else ids})()

        def decode(self, ids):
            return "w"

    ctrl = P2PController.from_prompts(Tok(), "a cat", "a dog", num_steps=2, blend_words=(("cat",), ("cat",)),
                                      self_replace_steps=1.0)
    ctx = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(0))
    x = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(1)).expand(2, -1, -1, -1)
    with torch.no_grad(), ctrl.attach(unet):
        selfs = [l for l in ctrl.installed if not l.is_cross]
        assert {l.side((64, 64)) for l in selfs} == {(32, 32), (16, 16), (8, 8)}
        ctrl.begin_step(0)
        unet(x, 500, encoder_hidden_states=ctx)  # [source, target] without CFG
        ctrl.after_step(x)
    assert ctrl.blend_count == 5 * 4  # five layers x 4 heads (SD1.x configs name the head count attention_head_dim)
    assert ctrl.blend_map((64, 64)).shape == (2, 1, 64, 64)
