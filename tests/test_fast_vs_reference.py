"""Fast paths vs reference-style implementations (``benchmarks/reference``) on the toy backbone, fp32:
the edited latent (what is decoded into the returned image) and the decoded image agree to 1e-3.

The references run the algorithms the way the original code does (explicit attention in every layer,
maps stored per step on the CPU, the null-text loop with weight gradients on, the reconstruction pass,
the ∅ rows iCD throws away, the shipped diffusers pipelines), so these tests are what allows the fast
paths to drop work. Editors whose module does not import are skipped with the reason."""
from __future__ import annotations


import pytest
import torch

TOL = 1e-3
P2P_STEPS = 3

CASES = {  # editor -> (overrides, reference kind)
    "ddim_p2p": ({"num_ddim_steps": P2P_STEPS, "share_inversion": False}, "p2p"),
    "npi_p2p": ({"num_ddim_steps": P2P_STEPS, "share_inversion": False}, "p2p"),
    "nti_p2p": ({"num_ddim_steps": P2P_STEPS, "inner_steps": 2, "share_inversion": False}, "p2p"),
    "ip2p": ({"num_inference_steps": 4}, "ip2p"),
    "pix2pix_zero": ({"num_inference_steps": 3}, "pix2pix_zero"),
    "icd": ({}, "icd"),
    "direct_inversion_p2p": ({"num_ddim_steps": P2P_STEPS, "share_inversion": False}, "direct_inversion"),
    "masactrl": ({"num_ddim_steps": 6, "start_step": 1, "share_inversion": False}, "masactrl"),
    "direct_inversion_masactrl": ({"num_ddim_steps": 6, "start_step": 1, "share_inversion": False}, "masactrl"),
    "pnp": ({"num_ddim_steps": 4, "share_inversion": False}, "pnp"),
    "direct_inversion_pnp": ({"num_ddim_steps": 4, "share_inversion": False}, "pnp"),
    "ledits_pp": ({"num_inversion_steps": 4}, "ledits_pp"),
}


def load_editor(name: str, **overrides):
    from editors.registry import get_editor_class

    try:
        cls = get_editor_class(name)
    except Exception as exc:  # module missing or mid-edit: reported, not a failure of the fast path
        pytest.skip(f"{name} is not importable: {str(exc).splitlines()[0][:160]}")
    ed = cls(**overrides)
    ed.load("toy")
    return ed


from benchmarks.editor_bench import captured_decode  # noqa: E402  (the benchmark's own check, shared)
from benchmarks.editor_bench import run_reference as bench_reference  # noqa: E402


def run_reference(kind: str, name: str, ed, sample, seed: int):
    try:
        return bench_reference(name, ed, sample, seed)
    except ImportError as exc:
        pytest.skip(f"reference for {name} unavailable: {exc}")


def float_image(bb, latents):
    with torch.no_grad():
        return (bb.vae.decode(latents.to(bb.dtype) / bb.scaling_factor).sample.float() / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("name", list(CASES))
def test_fast_path_equals_reference(name, smoke):
    overrides, kind = CASES[name]
    ed = load_editor(name, **overrides)
    bb = ed.backbone
    sample = smoke.samples[0]
    with captured_decode(bb) as seen:
        out = ed.edit(sample, torch.Generator().manual_seed(3))
    ours = seen[-1][-1:]
    ref = run_reference(kind, name, ed, sample, 3)
    assert ours.shape == ref.latents.shape
    diff = (ours - ref.latents).abs().max().item()
    assert diff <= TOL, f"{name}: edited latents differ from the reference by {diff:.2e}"
    img_diff = (float_image(bb, ours) - float_image(bb, ref.latents)).abs().max().item()
    assert img_diff <= TOL, f"{name}: decoded images differ by {img_diff:.2e}"
    # the fast path does no more UNet work than the reference
    assert out.extras["unet_evals"] <= ref.extras["unet_evals"]


def test_reference_controller_is_load_bearing(smoke):
    """The comparison can fail: the reference with its P2P edits switched off lands far from the fast
    path, so a controller bug would not hide inside the tolerance."""
    from benchmarks.reference import p2p as ref

    overrides, _ = CASES["ddim_p2p"]
    ed = load_editor("ddim_p2p", **overrides)
    sample = smoke.samples[0]
    with captured_decode(ed.backbone) as seen:
        ed.edit(sample, torch.Generator().manual_seed(3))
    ours = seen[-1][-1:]
    real = ed.controller_for

    class Unedited:  # same schedules, every edit disabled
        def __init__(self, c):
            self.__dict__.update(c.__dict__)
            self.cross_alphas = torch.zeros_like(c.cross_alphas)
            self.self_steps = (0, 0)
            self.blend_weights = None

    ed.controller_for = lambda s: Unedited(real(s))
    try:
        unedited = ref.p2p_reference(ed, sample, "ddim").latents
    finally:
        del ed.controller_for
    assert (ours - unedited).abs().max().item() > 50 * TOL


@pytest.mark.parametrize("name,overrides", [("ip2p", {"num_inference_steps": 3}),
                                            ("pix2pix_zero", {"num_inference_steps": 2}),
                                            ("ddim_p2p", CASES["ddim_p2p"][0]), ("npi_p2p", CASES["npi_p2p"][0]),
                                            ("nti_p2p", CASES["nti_p2p"][0])])
def test_batch_equals_one_by_one(name, overrides, smoke):
    """``edit_batch`` (``--batch-size``): each sample's edited latent equals its own ``edit`` (for the P2P
    editors: per-sample controllers, LocalBlend masks and null-text optimisation in one UNet batch)."""
    ed = load_editor(name, **overrides)
    bb = ed.backbone
    samples = smoke.samples[:3]
    with captured_decode(bb) as seen:
        for i, s in enumerate(samples):
            ed.edit(s, torch.Generator().manual_seed(i))
        one = torch.cat(seen)
        outs = ed.edit_batch(samples, [torch.Generator().manual_seed(i) for i in range(len(samples))])
        batched = seen[-1]
    assert len(outs) == len(samples) and batched.shape == one.shape
    assert (one - batched).abs().max().item() <= TOL
    assert (batched[0] - batched[1]).abs().max().item() > 50 * TOL  # samples stay distinct
    if name == "nti_p2p":  # each sample stopped its optimisation where it did alone
        singles = [ed.edit(s, torch.Generator().manual_seed(i)).extras["nti_iterations"]
                   for i, s in enumerate(samples)]
        assert [o.extras["nti_iterations"] for o in outs] == singles


def test_latency_script_checks_times_and_reports(tmp_path):
    """benchmarks/latency.py end to end in one call: the check passes, both sides are timed, UNet work is
    counted by the hook, the FLOP floor is E + D + 3·steps·U, unknown editors are reported unavailable."""
    import json

    from benchmarks.latency import main

    out = tmp_path / "bench.json"
    rc = main(["--device", "cpu", "--backbone", "toy", "--editors", "ip2p,no_such_editor", "--steps", "2",
               "--repeats", "1", "--warmup", "0", "--no-count-flops", "--no-overhead", "--out", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0
    r = report["editors"]["ip2p"]
    assert r["status"] == "ok" and r["check"]["passed"] and r["check"]["max_abs_latent_diff"] <= TOL
    assert r["unet_evals_per_image"] == {"ours": 6, "reference": 6}
    assert r["ours_s_per_image"] > 0 and r["reference_s_per_image"] > 0
    assert r["ratio"] == pytest.approx(r["reference_s_per_image"] / r["ours_s_per_image"])
    f = r["flops"]
    assert f["U"] > 0 and f["floor"] == pytest.approx(f["E"] + f["D"] + 6 * f["U"])
    assert report["editors"]["no_such_editor"]["status"] == "unavailable"
