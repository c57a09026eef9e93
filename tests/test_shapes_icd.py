"""The ShapesEdit iCD training (``pie_bench.training.shapes_icd``): invariants of its pieces, checked without
training, and the trained models the embedded default runs."""
from __future__ import annotations

import json

import pytest
import torch

from pie_bench.training import shapes_icd as icd
from pie_bench.training.shapes_config import unet_config
from pie_bench.training.shapes_diffusion import noise_scheduler


@pytest.fixture(scope="module")
def base_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config(4)).eval()
    with torch.no_grad():  # non-trivial weights everywhere (diffusers zero-initialises some output convs)
        for p in unet.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return unet


def test_teacher_starts_as_the_conditional_base_prediction_for_every_w(base_unet):
    teacher = icd.teacher_from_base(base_unet).eval()
    x, t, ctx = torch.randn(3, 4, 16, 16), torch.tensor([10, 500, 990]), torch.randn(3, 77, 64)
    with torch.no_grad():
        ref = base_unet(x, t, encoder_hidden_states=ctx).sample
        for w in (0.0, 3.0, 8.0):
            out = teacher(x, t, encoder_hidden_states=ctx, timestep_cond=icd.w_embedding(torch.full((3,), w))).sample
            torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_jump_with_the_true_noise_lands_on_the_noised_latent():
    """x_s = α_s x0 + σ_s ε exactly when ε is the noise x_t was made with; s = 0 is the clean latent."""
    ac = noise_scheduler().alphas_cumprod.float()
    z, eps = torch.randn(4, 4, 16, 16), torch.randn(4, 4, 16, 16)
    noisy = lambda t: ac[t].sqrt().view(-1, 1, 1, 1) * z + (1 - ac[t]).sqrt().view(-1, 1, 1, 1) * eps  # noqa: E731
    t, s = torch.tensor([999, 519, 259, 39]), torch.tensor([779, 999, 0, 19])
    out = icd.jump(eps, noisy(t), t, s, ac)
    torch.testing.assert_close(out[[0, 1, 3]], noisy(s)[[0, 1, 3]], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[2], z[2], atol=1e-4, rtol=0)
    soft = icd.jump(eps, noisy(t), t, s, ac, hard_zero=False)  # the teacher's DDIM step keeps alphas_cumprod[0]
    torch.testing.assert_close(soft, noisy(s), atol=1e-4, rtol=0)
    assert (soft[2] - z[2]).abs().max() > 1e-3


def test_boundaries_are_the_authors_segments():
    t = torch.tensor([979, 779, 760, 259, 239, 0])
    assert icd.below(t, icd.REVERSE_ENDPOINTS).tolist() == [779, 779, 519, 259, 0, 0]
    t = torch.tensor([39, 259, 260, 999])
    assert icd.above(t, icd.FORWARD_ENDPOINTS).tolist() == [259, 259, 519, 999]


def test_exported_adapters_load_into_the_editor_and_reproduce_the_trained_model(base_unet, tmp_path):
    """The LoRA file written by the training is the layout ``editors.icd`` reads: loaded with its loader (fp16
    rounding included), the adapter computes what the trained peft model computes."""
    from safetensors.torch import save_file

    from editors.icd_lora import add_lora_adapter

    teacher = icd.teacher_from_base(base_unet).eval()
    trained = icd.with_lora(teacher).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_" in name:
                p.copy_((0.05 * torch.randn(p.shape, generator=gen)).half().float())  # fp16-exact
    state = icd.lora_file_state(trained)
    assert state and all(k.startswith("unet.base_model.model.") for k in state)
    save_file(state, str(tmp_path / "a.safetensors"))
    loaded = icd.teacher_from_base(base_unet).eval()
    add_lora_adapter(loaded, tmp_path / "a.safetensors", "a", icd.ICD_ALPHA, torch.float16)
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([19, 779]), torch.randn(2, 77, 64)
    emb = icd.w_embedding(torch.tensor([0.0, 6.5]))
    with torch.no_grad():
        want = trained(x, t, encoder_hidden_states=ctx, timestep_cond=emb).sample
        got = loaded(x, t, encoder_hidden_states=ctx, timestep_cond=emb).sample
        plain = teacher(x, t, encoder_hidden_states=ctx, timestep_cond=emb).sample
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (want - plain).abs().max() > 1e-2  # the adapter does change the model


def test_losses_are_finite_and_reach_every_adapter(base_unet):
    teacher = icd.teacher_from_base(base_unet).eval().requires_grad_(False)
    fwd, rev = icd.with_lora(teacher), icd.with_lora(teacher)
    ac = noise_scheduler().alphas_cumprod.float()
    parts = icd.icd_losses(teacher, fwd, rev, torch.randn(4, 4, 16, 16), torch.randn(4, 77, 64),
                           torch.Generator().manual_seed(0), ac)
    total = parts[0] + parts[1] + icd.PRESERVE_COEF * (parts[2] + parts[3])
    assert all(torch.isfinite(p) and p > 0 for p in parts)
    total.backward()
    for model in (fwd, rev):
        grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in teacher.parameters())


def test_bundled_icd_models_and_their_manifest():
    from pie_bench.core.paths import SHAPES_MODELS

    manifest = json.loads((SHAPES_MODELS / "manifest.json").read_text())
    rec = manifest["icd"]
    assert rec["command"].startswith("python -m pie_bench.training.shapes_train")
    assert rec["steps"]["icd_teacher"] > 0 and rec["steps"]["icd_lora"] > 0
    for name in ("icd/unet/diffusion_pytorch_model.safetensors", "icd/lora/forward-19-259-519-779.safetensors",
                 "icd/lora/reverse-259-519-779-999.safetensors"):
        assert name in manifest["files"]
    cfg = json.loads((SHAPES_MODELS / "icd" / "unet" / "config.json").read_text())
    assert cfg["time_cond_proj_dim"] == icd.W_DIM
