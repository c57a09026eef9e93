"""iCD editor: schedules, adapter switching (observed through hooks on the LoRA modules), guidance embedding
parity with diffusers, LoRA file round trips in both key layouts (parity with diffusers' own kohya loader),
determinism, and an end-to-end CLI run on the toy backbone."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from editors import icd
from editors.icd import ICDEditor
from pie_bench.core.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def editor():
    """Adapters switched on the one shared UNet (peft), so the LoRA modules themselves can be watched."""
    ed = ICDEditor(fuse_lora=False)
    ed.load("toy")
    return ed


@pytest.fixture(scope="module")
def fused_editor():
    """The default: each adapter merged into its own UNet copy, as the reference does."""
    ed = ICDEditor()
    ed.load("toy")
    return ed


@pytest.fixture(scope="module")
def base_unet():
    """A fresh toy guidance-embedding UNet without adapters (the editor's shared one carries two)."""
    from diffusers import UNet2DConditionModel

    from editors.backbone import build_toy_folder

    unet = UNet2DConditionModel.from_pretrained(build_toy_folder("icd") / "unet")
    unet.requires_grad_(False).eval()
    return unet


def unet_inputs(unet, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = unet.config
    x = torch.randn(batch, c.in_channels, c.sample_size, c.sample_size, generator=g)
    ctx = torch.randn(batch, 77, c.cross_attention_dim, generator=g)
    w = icd.guidance_embedding(torch.tensor([0.0, 19.0][:batch]), c.time_cond_proj_dim)
    return dict(sample=x, timestep=519, encoder_hidden_states=ctx, timestep_cond=w, return_dict=False)


# ---------------------------------------------------------------------------------------------
# schedules and maths


def test_defaults_are_the_pie_bench_script():
    cfg = ICDEditor.Config()
    assert list(cfg.reverse_timesteps) == [259, 519, 779, 999] and list(cfg.forward_timesteps) == [19, 259, 519, 779]
    assert (cfg.start_timestep, cfg.guidance_scale, cfg.tau1, cfg.tau2) == (19, 19.0, 0.8, 0.8)
    assert (cfg.cross_replace_steps, cfg.self_replace_steps, cfg.amplify_factor) == (0.3, 0.6, 4.0)
    assert cfg.teacher_unet == "dbaranchuk/sd15-cfg-distill-unet" and cfg.lora_source == "dbaranchuk/icd-lora-sd15"


def test_boundaries_match_the_reference_endpoints():
    assert icd.boundaries([259, 519, 779, 999], "reverse") == [(999, 779), (779, 519), (519, 259), (259, 0)]
    assert icd.boundaries([19, 259, 519, 779], "forward") == [(19, 259), (259, 519), (519, 779), (779, 999)]


def test_consistency_step_with_the_true_noise_lands_on_the_boundary(editor):
    ac = editor.alphas_cumprod
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    for t, s in [(19, 259), (779, 999), (999, 779), (259, 0)]:
        x_t = ac[t].sqrt() * x0 + (1 - ac[t]).sqrt() * eps
        expected = x0 if s == 0 else ac[s].sqrt() * x0 + (1 - ac[s]).sqrt() * eps  # boundary 0: α=1, σ=0
        torch.testing.assert_close(icd.consistency_step(eps, x_t, t, s, ac), expected, atol=1e-5, rtol=1e-5)


class ExactDenoiser(torch.nn.Module):
    """The exact ε-prediction for data concentrated at one latent ``x0``: ε(x_t) = (x_t − α_t x0)/σ_t."""

    def __init__(self, x0, alphas_cumprod):
        super().__init__()
        self.x0, self.ac = x0, alphas_cumprod

    @property
    def dtype(self):
        return torch.float32

    def forward(self, x, t, encoder_hidden_states=None, timestep_cond=None, return_dict=False):
        a = self.ac[int(t)]
        return ((x - a.sqrt() * self.x0) / (1 - a).sqrt(),)


def test_invert_then_generate_is_exact_with_an_exact_denoiser(fused_editor):
    """Loop wiring (start noise, (t, s) pairs, both directions): with the exact denoiser the forward jumps
    stay on the noise drawn at t = 19 and the reverse jumps land back on the image latent."""
    ed = copy.copy(fused_editor)
    z0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    ed.models = {"forward": ExactDenoiser(z0, ed.alphas_cumprod), "reverse": ExactDenoiser(z0, ed.alphas_cumprod)}
    cond = torch.zeros(2, 77, 32)
    x_T = ed.invert(z0, cond[:1], torch.Generator().manual_seed(9))
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(9))
    a = ed.alphas_cumprod[999]
    torch.testing.assert_close(x_T, a.sqrt() * z0 + (1 - a).sqrt() * noise, atol=1e-4, rtol=1e-4)
    out = ed.generate(x_T, cond)
    torch.testing.assert_close(out, z0.expand(2, -1, -1, -1), atol=1e-3, rtol=1e-3)


def test_dynamic_guidance_schedule():
    w = 19.0
    # PIE-Bench setting τ1 = τ2 = 0.8: only the first reverse step (t = 999) runs unguided
    assert [icd.dynamic_guidance(t, w, 0.8, 0.8) for t in (999, 779, 519, 259)] == [0.0, 19.0, 19.0, 19.0]
    assert icd.dynamic_guidance(800, w, 0.8, 0.8) == 19.0  # t/1000 <= τ1 wins at the boundary
    # linear in between for τ1 < τ2; no dynamic guidance at τ = 1
    assert icd.dynamic_guidance(600, w, 0.4, 0.8) == pytest.approx(0.5 * w)
    assert icd.dynamic_guidance(700, w, 0.4, 0.8) == pytest.approx(0.25 * w)
    assert icd.dynamic_guidance(400, w, 0.4, 0.8) == w and icd.dynamic_guidance(800, w, 0.4, 0.8) == 0.0
    assert all(icd.dynamic_guidance(t, w, 1.0, 1.0) == w for t in (259, 999))


def test_guidance_embedding_matches_diffusers_lcm():
    from diffusers import LatentConsistencyModelPipeline

    w = torch.tensor([0.0, 7.0, 19.0])
    for dim in (32, 33, 512):
        ref = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)
        torch.testing.assert_close(icd.guidance_embedding(w, dim), ref)


def test_amplified_words_are_added_non_stop_words():
    assert icd.added_words("a cat sitting on a mat", "a black cat sitting on the mat") == ["black"]
    assert icd.added_words("a photo of a bird", "a photo of a lego bird") == ["lego"]
    assert icd.added_words("a dog", "a dog") == []


# ---------------------------------------------------------------------------------------------
# the editor's model calls, observed from outside


def test_adapters_switch_per_phase_and_guidance_rows(editor, smoke):
    """Hooks on the LoRA A-matrices of one layer tell which adapter actually ran in each UNet call; a
    pre-hook on the UNet records timestep, batch, w-embedding and whether P2P processors are installed."""
    from peft.tuners.lora import LoraLayer

    from editors.p2p import P2PAttnProcessor

    unet = editor.backbone.unet
    layer = next(m for n, m in unet.named_modules() if isinstance(m, LoraLayer) and n.endswith("attn2.to_q"))
    assert set(layer.lora_A) >= set(editor.adapters.values()) and len(set(editor.adapters.values())) == 2
    calls, handles = [], []

    def pre(module, args, kwargs):
        calls.append({"t": int(args[1]), "batch": args[0].shape[0], "w": kwargs["timestep_cond"].clone(),
                      "p2p": any(isinstance(p, P2PAttnProcessor) for p in module.attn_processors.values()),
                      "ran": []})

    for name in editor.adapters.values():
        handles.append(layer.lora_A[name].register_forward_hook(
            lambda m, a, o, name=name: calls[-1]["ran"].append(name)))
    handles.append(unet.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        out = editor.edit(smoke.samples[0], torch.Generator().manual_seed(0))
    finally:
        for h in handles:
            h.remove()

    fwd, rev = editor.adapters["forward"], editor.adapters["reverse"]
    assert [c["t"] for c in calls] == [19, 259, 519, 779, 999, 779, 519, 259]
    inversion, generation = calls[:4], calls[4:]
    for c in inversion:  # forward consistency model, source only, w = 0, no attention control
        assert c["ran"] == [fwd] and c["batch"] == 1 and not c["p2p"]
        torch.testing.assert_close(c["w"], icd.guidance_embedding(torch.tensor([0.0]), editor.w_dim))
    for c, w_t in zip(generation, [0.0, 19.0, 19.0, 19.0]):  # reverse model on [source, target] under P2P
        assert c["ran"] == [rev] and c["batch"] == 2 and c["p2p"]
        torch.testing.assert_close(c["w"], icd.guidance_embedding(torch.tensor([0.0, w_t]), editor.w_dim))
    assert (out.extras["unet_calls"], out.extras["unet_evals"]) == (8, 12)
    assert out.extras["p2p_blend_steps"] == 4  # LocalBlend from step 0 (iCD's start_blend 0)
    # the UNet's processors are restored after the edit
    assert not any(isinstance(p, P2PAttnProcessor) for p in unet.attn_processors.values())


def test_fused_copies_run_per_phase_and_match_the_adapters(editor, fused_editor, smoke):
    from peft.tuners.lora import LoraLayer

    fwd, rev = fused_editor.models["forward"], fused_editor.models["reverse"]
    assert fwd is not rev and editor.backbone.unet is fused_editor.backbone.unet not in (fwd, rev)
    assert not any(isinstance(m, LoraLayer) for m in [*fwd.modules(), *rev.modules()])
    seen = []
    handles = [m.register_forward_pre_hook(lambda mod, a, kind=kind: seen.append((kind, int(a[1]))))
               for kind, m in (("forward", fwd), ("reverse", rev), ("shared", editor.backbone.unet))]
    s = smoke.samples[2]
    bb = editor.backbone
    cond, z0 = bb.encode_prompt([s.source_prompt, s.target_prompt]), bb.encode_image(s.image)
    try:
        x_fused = fused_editor.invert(z0, cond[:1], torch.Generator().manual_seed(1))
        out_fused = fused_editor.generate(x_fused, cond, fused_editor.controller_for(s))
    finally:
        for h in handles:
            h.remove()
    assert seen == [("forward", t) for t in (19, 259, 519, 779)] + [("reverse", t) for t in (999, 779, 519, 259)]
    x_peft = editor.invert(z0, cond[:1], torch.Generator().manual_seed(1))
    out_peft = editor.generate(x_peft, cond, editor.controller_for(s))
    torch.testing.assert_close(x_fused, x_peft, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_fused, out_peft, atol=1e-3, rtol=1e-4)


def test_same_seed_same_output_and_seed_matters(fused_editor, smoke):
    s = smoke.samples[1]
    a = fused_editor.edit(s, torch.Generator().manual_seed(5))
    b = fused_editor.edit(s, torch.Generator().manual_seed(5))
    c = fused_editor.edit(s, torch.Generator().manual_seed(6))  # the DDPM noise to t=19 comes from the generator
    assert a.image.shape == (512, 512, 3) and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image) and np.array_equal(a.extras["final_latent"], b.extras["final_latent"])
    assert {k: v for k, v in a.extras.items() if k != "final_latent"} == \
        {k: v for k, v in b.extras.items() if k != "final_latent"}
    assert not np.array_equal(a.image, c.image)


def test_editor_adapters_hold_the_files_weights(editor):
    """The toy adapters went through save_file + the real loading code: the UNet holds exactly the file, rounded
    to fp16 (the default lora_dtype, as the authors' loader)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    folder = icd.build_toy_lora_folder(editor.backbone.unet, editor.config)
    for kind, filename in (("forward", editor.config.forward_lora), ("reverse", editor.config.reverse_lora)):
        saved, _ = icd.normalise_lora_state_dict(load_file(str(folder / filename)), editor.backbone.unet, 8.0)
        held = get_peft_model_state_dict(editor.backbone.unet, adapter_name=editor.adapters[kind])
        assert set(held) == set(saved)
        assert all(torch.equal(held[k], saved[k].half().float()) for k in saved)


# ---------------------------------------------------------------------------------------------
# LoRA files


def reference_kohya(peft_state: dict) -> dict:
    """PEFT -> kohya as iCD's ``utils/loading.py`` converts its files (alpha 8)."""
    out = {}
    for key, value in peft_state.items():
        k = key.replace("unet.base_model.model", "lora_unet").replace("lora_A", "lora_down").replace("lora_B", "lora_up")
        k = k.replace(".", "_", k.count(".") - 2)
        out[k] = value
        if "lora_down" in k:
            out[k.split(".")[0] + ".alpha"] = torch.tensor(8.0)
    return out


def test_lora_round_trip_both_layouts_match_diffusers_loader(base_unet, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from editors.backbone import load_backbone

    peft_state = icd.toy_lora_state_dict(base_unet, rank=4, seed=3)
    save_file(peft_state, str(tmp_path / "peft.safetensors"))
    save_file(reference_kohya(peft_state), str(tmp_path / "kohya.safetensors"))
    inputs = unet_inputs(base_unet)
    with torch.no_grad():
        base_out = base_unet(**inputs)[0]

    outs = {}
    for layout in ("peft", "kohya"):
        unet = copy.deepcopy(base_unet)
        icd.add_lora_adapter(unet, tmp_path / f"{layout}.safetensors", "a")
        held = get_peft_model_state_dict(unet, adapter_name="a")
        expected = {k.replace("unet.base_model.model.", ""): v for k, v in peft_state.items()}
        assert set(held) == set(expected) and all(torch.equal(held[k], expected[k]) for k in expected), layout
        with torch.no_grad():
            outs[layout] = unet(**inputs)[0]

    # independent loader: diffusers' pipeline.load_lora_weights on the kohya dict, as iCD itself loads
    bb = load_backbone("toy", variant="icd")
    pipe = StableDiffusionPipeline(vae=bb.vae, text_encoder=bb.text_encoder, tokenizer=bb.tokenizer,
                                   unet=copy.deepcopy(base_unet), scheduler=bb.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.load_lora_weights(reference_kohya(peft_state), adapter_name="ref")
    with torch.no_grad():
        ref_out = pipe.unet(**inputs)[0]

    assert (outs["peft"] - base_out).abs().max() > 1e-3, "the adapter must change the model"
    torch.testing.assert_close(outs["peft"], outs["kohya"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["peft"], ref_out, atol=1e-5, rtol=1e-5)


def test_lora_alpha_scales_like_a_merged_weight(base_unet, tmp_path):
    """W_eff = W + alpha/r · B A for one linear layer (kohya per-module alpha)."""
    from safetensors.torch import save_file

    peft_state = icd.toy_lora_state_dict(base_unet, rank=4, seed=4)
    kohya = reference_kohya(peft_state)
    for k in [k for k in kohya if k.endswith(".alpha")]:
        kohya[k] = torch.tensor(2.0)
    save_file(kohya, str(tmp_path / "k.safetensors"))
    unet = copy.deepcopy(base_unet)
    icd.add_lora_adapter(unet, tmp_path / "k.safetensors", "a")
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q"
    lin_base = dict(base_unet.named_modules())[name]
    a = peft_state[f"unet.base_model.model.{name}.lora_A.weight"]
    b = peft_state[f"unet.base_model.model.{name}.lora_B.weight"]
    x = torch.randn(3, lin_base.in_features)
    with torch.no_grad():
        got = dict(unet.named_modules())[name](x)
        want = x @ (lin_base.weight + 2.0 / 4 * b @ a).T
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_lora_rounded_to_fp16_as_the_authors_loader(base_unet, tmp_path):
    """iCD's loader casts the LoRA tensors to fp16 before fusing (get_module_kohya_state_dict(..., torch.float16));
    round_to does the same, the tensors then live in the UNet's dtype; the default config asks for it."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    assert ICDEditor.Config().lora_dtype == "float16"
    peft_state = icd.toy_lora_state_dict(base_unet, rank=4, seed=5)
    save_file(peft_state, str(tmp_path / "p.safetensors"))
    unet = copy.deepcopy(base_unet)
    icd.add_lora_adapter(unet, tmp_path / "p.safetensors", "a", round_to=torch.float16)
    held = get_peft_model_state_dict(unet, adapter_name="a")
    for k, v in peft_state.items():
        got = held[k.replace("unet.base_model.model.", "")]
        assert got.dtype == torch.float32 and torch.equal(got, v.half().float()), k
    assert any(not torch.equal(v, v.half().float()) for v in peft_state.values())  # the rounding is not a no-op
    assert icd.lora_round_dtype("") is None and icd.lora_round_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ConfigError, match="lora_dtype"):
        icd.lora_round_dtype("int8")
    path = tmp_path / "p.safetensors"
    assert icd.adapter_name("forward", path, "float16") != icd.adapter_name("forward", path, "")


def test_lora_file_errors_are_one_line(base_unet, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(ConfigError, match="not found") as exc:
        icd.resolve_lora_file(str(tmp_path), "forward-19-259-519-779.safetensors")
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE|cannot get"):
        icd.resolve_lora_file("nobody/no-such-icd-repo", "x.safetensors")
    # the authors' tarball spelling is found too
    (tmp_path / "iCD-SD15-reverse_259_519_779_999.safetensors").write_bytes(b"")
    assert icd.resolve_lora_file(str(tmp_path), "reverse-259-519-779-999.safetensors").name.startswith("iCD-SD15")
    save_file({"lora_unet_no_such_module.lora_down.weight": torch.zeros(2, 2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ConfigError, match="names no module"):
        icd.add_lora_adapter(copy.deepcopy(base_unet), tmp_path / "bad.safetensors", "x")
    with pytest.raises(ConfigError, match="controller"):
        ICDEditor(controller="swap").load("toy")


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_help_and_listing():
    from click.testing import CliRunner

    from cli import cli as main

    res = CliRunner().invoke(main, ["bench", "--help"])
    assert res.exit_code == 0 and "--editor-arg" in res.output
    res = CliRunner().invoke(main, ["list-editors"])
    assert res.exit_code == 0
    row = next(line for line in res.output.splitlines() if line.startswith("│ icd "))
    assert "yes" in row


def test_cli_bench_end_to_end_on_smoke(tmp_path):
    env = dict(os.environ, PIE_BENCH_CACHE=os.environ.get("PIE_BENCH_CACHE", str(REPO / ".cache" / "pie_bench")))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "cli.py", "bench", "--data", "smoke", "--editors", "icd", "--limit", "2", "--no-progress",
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["editor"] == "icd" and r["status"] == "ok" for r in records)
    for r in records:
        assert r["extras"]["unet_evals"] == 12 and r["extras"]["p2p_layers"] > 0
        from PIL import Image

        assert Image.open(out / r["image"]).size == (512, 512)
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["editors"]["icd"]["n_ok"] == 2


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_teacher_unet_from_a_bare_state_dict_file(base_unet, tmp_path, suffix):
    """The authors ship the guidance-distilled teacher as a state dict (sd15_cfg_distill.pt): it loads on the
    base model's UNet config with time_cond_proj_dim read off the weights (the plain SD toy has none)."""
    from safetensors.torch import save_file

    from editors.backbone import load_backbone

    file = tmp_path / f"teacher{suffix}"
    state = {k: v.contiguous() for k, v in base_unet.state_dict().items()}
    torch.save(state, file) if suffix == ".pt" else save_file(state, str(file))
    assert load_backbone("toy", variant="sd").unet.config.time_cond_proj_dim is None
    unet = load_backbone("toy", variant="sd", unet_id=str(file)).unet
    assert unet.config.time_cond_proj_dim == base_unet.config.time_cond_proj_dim
    assert all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())
    if suffix == ".pt":  # through the editor: --editor-arg icd.teacher_unet=FILE replaces the toy's own UNet
        ed = ICDEditor(teacher_unet=str(file), fuse_lora=False)
        ed.load("toy")
        assert ed.backbone.unet is load_backbone("toy", variant="icd", unet_id=str(file)).unet
        assert ed.backbone.unet is not load_backbone("toy", variant="icd").unet
    bad = tmp_path / f"bad{suffix}"
    torch.save({"nope": torch.zeros(1)}, bad) if suffix == ".pt" else save_file({"nope": torch.zeros(1)}, str(bad))
    with pytest.raises(ConfigError, match="do not fit"):
        load_backbone("toy", variant="sd", unet_id=str(bad))
