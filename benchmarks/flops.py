"""FLOPs for ``benchmarks/latency.py``: the unit costs U, E, D (one UNet forward, VAE encode, VAE decode)
counted with ``torch.utils.flop_counter.FlopCounterMode`` on a backbone, each editor's minimal pass count
(``../shared/reference/editors.md`` §7), and the FLOPs one whole edit actually executes."""
from __future__ import annotations

import torch

from benchmarks.timing import one_line

# the config field holding each editor's sampling steps (the pass counts scale with it)
STEP_KEY = {"ddim_p2p": "num_ddim_steps", "nti_p2p": "num_ddim_steps", "npi_p2p": "num_ddim_steps",
            "ip2p": "num_inference_steps", "pix2pix_zero": "num_inference_steps",  # iCD: its 4+4 schedule
            "direct_inversion_p2p": "num_ddim_steps", "masactrl": "num_ddim_steps",
            "direct_inversion_masactrl": "num_ddim_steps", "pnp": "num_ddim_steps",
            "direct_inversion_pnp": "num_ddim_steps", "ledits_pp": "num_inversion_steps",
            "rf_inversion": "num_inversion_steps",  # FlowEdit: its family's T and n_max, whatever --steps
            "rf_solver_edit": "num_steps", "fireflow": "num_steps",
            "flux_kontext": "num_inference_steps", "qwen_image_edit": "num_inference_steps"}


def unit_costs(bb) -> dict:
    """FLOPs of one UNet forward (batch 1, full text length), one VAE encode and one decode at this
    backbone's resolution, counted with FlopCounterMode (explicit attention, so attention is counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.reference.common import explicit_attention

    if hasattr(bb, "decode_pixels"):  # an instruction editor's pipeline
        return pipeline_unit_costs(bb)
    if not hasattr(bb, "unet"):
        return flow_unit_costs(bb)
    r, f = bb.resolution, bb.vae_scale_factor
    dev, dt = bb.device, bb.dtype
    x = torch.zeros(1, bb.unet.config.in_channels, r // f, r // f, device=dev, dtype=dt)
    ctx = torch.zeros(1, bb.max_length, bb.unet.config.cross_attention_dim, device=dev, dtype=dt)
    kw = {}
    if bb.unet.config.time_cond_proj_dim:
        kw["timestep_cond"] = torch.zeros(1, bb.unet.config.time_cond_proj_dim, device=dev, dtype=dt)
    out = {}
    with torch.no_grad():
        with explicit_attention(bb.unet), FlopCounterMode(display=False) as fc:
            bb.unet(x, 500, encoder_hidden_states=ctx, **kw)
        out["U"] = fc.get_total_flops()
        img = torch.zeros(1, 3, r, r, device=dev, dtype=dt)
        with FlopCounterMode(display=False) as fc:
            bb.vae.encode(img)
        out["E"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            bb.vae.decode(torch.zeros(1, bb.vae.config.latent_channels, r // f, r // f, device=dev, dtype=dt))
        out["D"] = fc.get_total_flops()
    return out


def flow_unit_costs(bb) -> dict:
    """A flow backbone's unit costs: U is one transformer forward (``velocity``, batch 1, the backbone's text
    length; attention as its processors run it, so a fused CPU SDPA kernel may go uncounted)."""
    from torch.utils.flop_counter import FlopCounterMode

    r, dev, dt = bb.resolution, bb.device, bb.dtype
    f = 2 ** (len(bb.vae.config.block_out_channels) - 1)
    z = torch.zeros(1, bb.vae.config.latent_channels, r // f, r // f, device=dev, dtype=dt)
    cond = bb.encode_prompt([""])
    out = {}
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            bb.velocity(z, 500.0, cond)
        out["U"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            bb.vae.encode(torch.zeros(1, 3, r, r, device=dev, dtype=dt))
        out["E"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            bb.vae.decode(z)
        out["D"] = fc.get_total_flops()
    return out


def pipeline_unit_costs(bb) -> dict:
    """An instruction pipeline's unit costs, counted inside one 1-step call on a grey 512-px source at the
    pipeline's own working size: U the first transformer forward, E the first VAE encode, D the first decode
    (methods wrapped for the call, so the pipeline's own inputs are counted, packing and conditioning included)."""
    from PIL import Image
    from torch.utils.flop_counter import FlopCounterMode

    pipe, out = bb.pipe, {}
    targets = {"U": (pipe.transformer, "forward"), "E": (pipe.vae, "encode"), "D": (pipe.vae, "decode")}
    saved = {k: getattr(m, name) for k, (m, name) in targets.items()}

    def counting(key, fn):
        def wrapped(*args, **kwargs):
            if key in out:
                return fn(*args, **kwargs)
            with FlopCounterMode(display=False) as fc:
                res = fn(*args, **kwargs)
            out[key] = fc.get_total_flops()
            return res
        return wrapped

    for key, (m, name) in targets.items():
        setattr(m, name, counting(key, saved[key]))
    try:
        with torch.no_grad():
            pipe(image=Image.new("RGB", (512, 512), (128, 128, 128)), prompt="make it red", num_inference_steps=2)
    finally:
        for key, (m, name) in targets.items():
            delattr(m, name)  # the instance attribute shadowed the class's method
    return out


def floor_units(name: str, cfg, extras: dict) -> tuple[float, str]:
    """Minimal UNet forward-equivalents per image (editors.md §7; fwd+bwd without weight gradients =
    2.08 U for NTI, 2.15 U for Pix2Pix-Zero's guidance step)."""
    n = getattr(cfg, STEP_KEY.get(name, ""), 0)
    if name == "ddim_p2p":
        return 5 * n, f"{n} inversion + 4x{n} edit"
    if name == "npi_p2p":
        return 4 * n, f"{n} inversion + 3x{n} edit (∅src = c_src)"
    if name == "nti_p2p":
        k = int(extras.get("nti_iterations", n * getattr(cfg, "inner_steps", 10)))
        return 7 * n + 2.08 * k, f"{n} inversion + 2x{n} eps_c/advance + {k} Adam its x2.08 + 4x{n} edit"
    if name == "ip2p":
        return 3 * n, f"3x{n}"
    if name == "pix2pix_zero":
        return 8.3 * n, f"{n} inversion + {n} reference + {n}x(2x2.15 guided fwd+bwd + 2)"
    if name in ("direct_inversion_p2p", "masactrl", "direct_inversion_masactrl", "direct_inversion_pnp"):
        return 4 * n, f"{n} inversion + 3x{n} edit (one source row)"
    if name == "pnp":
        return 5 * n, f"{n} inversion + {n} reconstruction + 3x{n} edit"
    if name == "ledits_pp":
        k = len([c for key in ("ledits_add", "ledits_remove") for c in str(extras.get(key, "")).split("; ") if c])
        return n * (2 + k), f"{n} inversion + {n}x(1 + {k} concepts) edit"
    if name in ("flowedit", "rf_inversion", "rf_solver_edit", "fireflow", "flux_kontext", "qwen_image_edit"):
        # transformer passes (1, or 2 with classifier-free guidance)
        k = int(extras["transformer_evals"])
        return k, f"{k} transformer passes ({extras.get('settings', '')})"
    if name == "icd":
        k = len(cfg.forward_timesteps)
        m = len(cfg.reverse_timesteps)
        return k + 2 * m, f"{k} forward + 2x{m} reverse"
    raise KeyError(name)


def counted_flops(fn):
    """FLOPs of ``fn`` (forward and backward), or a one-line reason when FlopCounterMode cannot follow it
    (its module hooks clash with ``torch.autograd.grad`` on leaf inputs, as Pix2Pix-Zero's guidance uses)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as fc:
            fn()
    except RuntimeError as exc:
        return f"not counted: {one_line(exc)[:120]}"
    return fc.get_total_flops()
