"""DDIM / null-text / negative-prompt inversion on the toy backbone: schedule maths against diffusers'
DDIMScheduler, reconstruction invariants, fp32 null-text optimisation with frozen weights, and the
inversion cache shared by the P2P editors.

The toy UNet is random and rough (a 0.1 latent perturbation changes eps by ~0.27 std), so absolute
reconstruction errors are large; the invariants are relative: inversion vs no inversion, fewer vs more
steps, null-text vs plain DDIM inversion at guidance 7.5."""
from __future__ import annotations

import pytest
import torch

from editors.inversion import (DDIMSchedule, InversionCache, UNetCounter, ddim_invert, ddim_sample,
                               negative_prompt_embeddings, null_text_inversion, unet_eps)


def _mse(a, b):
    return float(((a - b) ** 2).mean())


@pytest.fixture(scope="module")
def bb():
    from editors.backbone import load_backbone

    return load_backbone("toy")


@pytest.fixture(scope="module")
def setup(bb, smoke):
    s = smoke.samples[0]
    z0 = bb.encode_image(s.image).float()
    cond, uncond = bb.encode_prompt([s.source_prompt]), bb.encode_prompt([""])
    return z0, cond, uncond


def test_schedule_matches_diffusers_ddim_and_pie_bench_timesteps(bb):
    from diffusers import DDIMScheduler

    sched = DDIMSchedule(bb.scheduler, 50)
    # PIE-Bench's timesteps: its DDIMScheduler has no steps_offset, but StableDiffusionPipeline's constructor
    # rewrites it to 1 (checked against the official code: tests/test_golden_official.py)
    assert sched.timesteps.tolist() == list(range(981, 0, -20))
    assert DDIMSchedule(bb.scheduler, 10).timesteps.tolist() == list(range(901, 0, -100))
    # so the last step is a real one, alpha_1 -> alpha_0 (with timesteps ending at 0 it went alpha_0 -> alpha_0)
    assert sched.alpha(sched.timesteps[-1]) < sched.alpha(int(sched.timesteps[-1]) - sched.stride)
    ref = DDIMScheduler.from_config(bb.scheduler.config)
    ref.set_timesteps(50)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    for t in (981, 501, 21, 1):  # t=1 steps to final_alpha_cumprod (alphas_cumprod[0]: set_alpha_to_one=False)
        want = ref.step(eps, t, x, eta=0.0).prev_sample
        torch.testing.assert_close(sched.step(x, eps, t), want, rtol=1e-5, atol=1e-5)
        # the inverse step with the same eps undoes the step exactly (the only error of DDIM inversion is
        # evaluating eps at the lower-noise latent)
        torch.testing.assert_close(sched.inverse_step(sched.step(x, eps, t), eps, t), x, rtol=1e-4, atol=1e-4)


def test_inversion_uses_p2p_timestep_order(bb, setup):
    """Inversion step i evaluates eps at z_i with t = timesteps[-1 - i] (P2P's ddim_loop)."""
    z0, cond, _ = setup
    sched = DDIMSchedule(bb.scheduler, 4)
    traj = ddim_invert(bb.unet, z0, cond, sched)
    assert len(traj) == 5 and torch.equal(traj[0], z0)
    for i, t in enumerate(reversed(sched.timesteps.tolist())):
        eps = unet_eps(bb.unet, traj[i], t, cond)
        a_from = sched.alpha(t - 250)
        x0 = (traj[i] - (1 - a_from) ** 0.5 * eps) / a_from ** 0.5
        torch.testing.assert_close(traj[i + 1], sched.alpha(t) ** 0.5 * x0 + (1 - sched.alpha(t)) ** 0.5 * eps)


def test_ddim_inversion_reconstructs_and_skipping_it_does_not(bb, setup):
    z0, cond, _ = setup
    errors = {}
    for n in (4, 16):
        sched = DDIMSchedule(bb.scheduler, n)
        traj = ddim_invert(bb.unet, z0, cond, sched)
        errors[n] = _mse(ddim_sample(bb.unet, traj[-1], cond, None, sched, 1.0), z0)
    sched = DDIMSchedule(bb.scheduler, 16)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
    skipped = _mse(ddim_sample(bb.unet, noise, cond, None, sched, 1.0), z0)
    # measured MSE: 0.80 (4 steps), 0.53 (16 steps; 0.28 at 50) vs 117 when sampling from noise
    assert errors[16] < 0.01 * skipped
    # a discretisation error: it shrinks as the step count grows
    assert errors[16] < errors[4]


def test_null_text_beats_ddim_inversion_at_guidance_7_5(bb, setup):
    z0, cond, uncond = setup
    sched = DDIMSchedule(bb.scheduler, 10)
    traj = ddim_invert(bb.unet, z0, cond, sched)
    ddim_err = _mse(ddim_sample(bb.unet, traj[-1], cond, uncond, sched, 7.5), z0)
    counter = UNetCounter()
    res = null_text_inversion(bb.unet, traj, cond, uncond, sched, guidance=7.5, inner_steps=10, counter=counter)
    nti_err = _mse(ddim_sample(bb.unet, traj[-1], cond, res.embeddings, sched, 7.5), z0)
    # measured on this sample: ddim 8.79, nti 1.75, factor 5.0 (10 steps); at PIE-Bench's 50 steps the
    # factor is 7.6-18.7 over the first five smoke samples (18.7 on this one)
    assert ddim_err > 3 * nti_err, (ddim_err, nti_err)
    assert len(res.embeddings) == 10 and all(e.dtype == torch.float32 for e in res.embeddings)
    assert all(1 <= k <= 10 for k in res.iterations)
    # frozen UNet: no weight gradients were accumulated
    assert all(p.grad is None for p in bb.unet.parameters())
    # per step: 1 conditional + k (forward+backward) + 1 unconditional to advance the latent
    assert counter.evals == sum(res.iterations) + 2 * 10 and counter.backward == sum(res.iterations)


def test_null_text_early_stop_and_zero_inner_steps(bb, setup):
    z0, cond, uncond = setup
    sched = DDIMSchedule(bb.scheduler, 3)
    traj = ddim_invert(bb.unet, z0, cond, sched)
    # a huge threshold stops after the first update (the check follows the update, as the reference)
    res = null_text_inversion(bb.unet, traj, cond, uncond, sched, inner_steps=10, early_stop_epsilon=1e9)
    assert res.iterations == [1, 1, 1]
    assert not torch.equal(res.embeddings[0], uncond.float())
    # 0 inner steps: the empty-prompt embedding every step, i.e. plain DDIM+P2P (PIE-Bench's ddim path)
    res0 = null_text_inversion(bb.unet, traj, cond, uncond, sched, inner_steps=0)
    assert all(torch.equal(e, uncond.float()) for e in res0.embeddings) and res0.iterations == [0, 0, 0]


def test_batched_null_text_equals_one_sample_at_a_time(bb, smoke):
    """A batch optimises each sample's embedding as a call of its own would, including samples that meet
    their early-stop threshold while others go on (they leave the batch; Adam's momentum must not move
    them afterwards). The threshold is picked where the samples stop after different iteration counts."""
    sched = DDIMSchedule(bb.scheduler, 3)
    samples = smoke.samples[:3]
    z0 = torch.cat([bb.encode_image(s.image).float() for s in samples])
    cond, uncond = bb.encode_prompt([s.source_prompt for s in samples]), bb.encode_prompt([""])
    traj = ddim_invert(bb.unet, z0, cond, sched)
    free = [null_text_inversion(bb.unet, [z[j:j + 1] for z in traj], cond[j:j + 1], uncond, sched, inner_steps=6,
                                early_stop_epsilon=0.0, early_stop_slope=0.0) for j in range(3)]
    # a threshold between the samples' first-step losses: some stop early, some run all 6 iterations
    first = sorted(r.final_losses[0] for r in free)
    eps = (first[0] + first[1]) / 2
    singles = [null_text_inversion(bb.unet, [z[j:j + 1] for z in traj], cond[j:j + 1], uncond, sched,
                                   inner_steps=6, early_stop_epsilon=eps, early_stop_slope=0.0) for j in range(3)]
    counts = [[r.iterations[i] for r in singles] for i in range(3)]
    assert any(len(set(c)) > 1 for c in counts), counts  # the case under test happens
    counter = UNetCounter()
    batched = null_text_inversion(bb.unet, traj, cond, uncond, sched, inner_steps=6, early_stop_epsilon=eps,
                                  early_stop_slope=0.0, counter=counter)
    assert batched.sample_iterations == counts
    for i in range(3):
        # Adam divides by the gradient's running RMS, so on elements whose gradient is ~0 (padding tokens)
        # a batched matmul's reassociation moves the update by up to ~lr; elsewhere they agree to 1e-6.
        # The last step (t=1 -> alpha_0) is a tiny move whose gradient is ~0 almost everywhere, so more
        # elements are affected there: measured 0.03 %, 0.7 %, 2.6 % of elements over 1e-5 for the three
        # steps (with the old timesteps ..., 0 the last step went alpha_0 -> alpha_0, a no-op with an
        # exactly zero gradient that left every element equal)
        want = torch.cat([r.embeddings[i] for r in singles])
        torch.testing.assert_close(batched.embeddings[i], want, rtol=0, atol=2e-3)
        assert (batched.embeddings[i] - want).abs().gt(1e-5).float().mean() < (0.01 if i < 2 else 0.05)
    assert counter.backward == sum(map(sum, counts))  # stopped samples left the UNet batch


def test_null_text_is_fp32_with_a_bf16_model(smoke):
    from editors.backbone import load_backbone

    bb16 = load_backbone("toy", dtype=torch.bfloat16)
    s = smoke.samples[0]
    z0 = bb16.encode_image(s.image).float()
    cond, uncond = bb16.encode_prompt([s.source_prompt]), bb16.encode_prompt([""])
    assert cond.dtype == torch.bfloat16
    sched = DDIMSchedule(bb16.scheduler, 2)
    traj = ddim_invert(bb16.unet, z0, cond, sched)
    res = null_text_inversion(bb16.unet, traj, cond, uncond, sched, inner_steps=3)
    assert all(e.dtype == torch.float32 for e in res.embeddings)
    assert all(torch.isfinite(torch.tensor(v)) for v in res.final_losses)
    assert not torch.equal(res.embeddings[-1], uncond.float())  # the optimiser moved it despite bf16 weights


def test_negative_prompt_inversion_equals_unguided_reconstruction(bb, setup):
    z0, cond, uncond = setup
    sched = DDIMSchedule(bb.scheduler, 4)
    traj = ddim_invert(bb.unet, z0, cond, sched)
    embs = negative_prompt_embeddings(cond, uncond, 4)
    guided = ddim_sample(bb.unet, traj[-1], cond, embs, sched, 7.5)
    torch.testing.assert_close(guided, ddim_sample(bb.unet, traj[-1], cond, None, sched, 1.0), rtol=1e-4, atol=1e-4)
    # interp 1 is the empty prompt
    torch.testing.assert_close(negative_prompt_embeddings(cond, uncond, 1, interp=1.0)[0], uncond, rtol=1e-4, atol=1e-4)


def test_inversion_cache_lru_and_budget():
    z = [torch.ones(1, 4, 2, 2)] * 3  # 192 bytes per trajectory
    cache = InversionCache(budget_bytes=400)
    k = lambda i: ("m", "float32", "cpu", 2, f"s{i}", "p", "h")
    cache.put(k(1), z)
    cache.put(k(2), z)
    assert cache.get(k(1), "cpu") is not None  # k1 now most recent
    cache.put(k(3), z)  # over budget: evicts k2
    assert cache.get(k(2), "cpu") is None and cache.get(k(3), "cpu") is not None
    assert InversionCache(budget_bytes=0).get(k(1), "cpu") is None
    import numpy as np

    img = np.zeros((4, 4, 3), np.uint8)
    assert InversionCache.key("m", torch.float32, "cpu", 50, "a", "p", img) != \
        InversionCache.key("m", torch.float32, "cpu", 50, "a", "p", img + 1)
