"""RF-Solver-Edit (``rf_solver_edit``): second-order inversion and sampling of a rectified flow, with the
source's self-attention values shared into the edit.

Wang, Pu, Qi, Guo, Ma, Huang, Chen, Li, Shan, "Taming Rectified Flow for Inversion and Editing", 2024
(arXiv:2411.04746, ICML 2025). RF-Solver integrates dZ/dt = v(Z, t) with a second-order Taylor step whose
time derivative of v is estimated from one more evaluation at the half step: v = v(Z, t),
Z_mid = Z + h/2 v, Z' = Z + h v + h^2/2 (v(Z_mid, t + h/2) - v) / (h/2). RF-Edit inverts the image with
the source prompt, stores the self-attention values (V) of the last transformer blocks during the
inversion steps nearest the noise, and samples with the target prompt, the target's V replaced by the
stored ones in the first ``inject`` sampling steps.

Reference: the authors' code, wangjiangshan0725/RF-Solver-Edit@3388e29 (``FLUX_Image_Edit/src/edit.py``,
``flux/sampling.py: denoise``, ``flux/modules/layers.py: SingleStreamBlock``), read, not copied. Defaults
from its scripts: FLUX.1-dev, 15 steps, target guidance 2 (the inversion runs at guidance 1), inject 2
(``run_boy.sh``, ``run_hiking.sh``; the horse uses 3, the stylisations 5 of 25), V of FLUX's single-stream
blocks 20-37 of 38 replaced whole (text and image tokens). Their features are keyed by the step interval
and the evaluation (first or midpoint): the target's first evaluation of step j (at its upper end) receives
what the inversion's first evaluation of the same interval (at its lower end) stored; kept as they do it.
``start_layer_index`` / ``end_layer_index`` are FireFlow's names for that block range (RF-Solver: ``id > 19``).

Backbones (``editors.flow_backbone`` / ``editors.flux_backbone``, unpacked latents):
- FLUX family (``flux-dev``, ``toy-flux``): the authors' setting; ``guidance`` is the distilled guidance
  embedding. The blocks are single-stream blocks start..end scaled to the model's count of them.
- SD3 layout (``sd3``, ``shapes``, ``toy``), a deviation: no guidance embedding, so the target branch runs
  classifier-free guidance ``cfg_scale`` 4.0 with ``negative_prompt`` "" (FLUX.1-dev's default 3.5 against
  SD3's 7.0: the authors' 2 at the same ratio), both CFG rows receive the source's V, and the inversion
  runs conditional only (CFG 1, the counterpart of their guidance 1). SD3 has only joint blocks, each
  attending over image and text tokens as FLUX's single blocks do; the shared ones are the same share of
  the depth: FLUX.1-dev's blocks 19+20 .. 19+37 of 19 + 38 (the last 18 of 57), i.e. SD3-medium's last 8 of
  24, the ShapesEdit flow model's last 2 of 6, the toy's last of 2.
- Time grid: the backbone's ``schedule(steps)`` (the pipeline's shifted sigmas), not the authors'
  ``get_schedule``; on the FLUX family the two are the same grid (linspace(1, 0, N+1), shifted by mu of the
  image sequence length; FluxPipeline's ``calculate_shift`` is their ``get_lin_function``; equal on
  toy-flux to the last bit).
- The V features stay on the device (the authors move them to the CPU and back; same values).
- The image latent is the VAE posterior mean, as theirs (their ``DiagonalGaussian`` returns the mean).

Checked against the authors' sampling loop driven by the toy backbones, their V bookkeeping included
(``tests/golden/README.md``): every step of both trajectories within 1.9e-6 on the toy SD3, identical on
toy-flux.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from editors.attention import swapped_processors
from editors.base import EditOutput, EditorConfig
from editors.flow_backbone import FlowEditor
from pie_bench.core.errors import ConfigError
from pie_bench.core.sample import Sample

# FLUX.1-dev's transformer: 19 double-stream then 38 single-stream blocks
FLUX_DOUBLE, FLUX_SINGLE = 19, 38

# f(z, sigma, step index along the direction of travel, is the step's midpoint evaluation) -> dz/dsigma
Field = Callable[[torch.Tensor, float, int, bool], torch.Tensor]


def reflow_solve(f: Field, z: torch.Tensor, sigmas: list[float], trace: Optional[list] = None) -> torch.Tensor:
    """Euler (the authors' ``reflow`` baseline): one evaluation per step."""
    for i in range(len(sigmas) - 1):
        z = z + (sigmas[i + 1] - sigmas[i]) * f(z, sigmas[i], i, False)
        if trace is not None:
            trace.append(z)
    return z


def rf_solver_solve(f: Field, z: torch.Tensor, sigmas: list[float], trace: Optional[list] = None) -> torch.Tensor:
    """RF-Solver-2: two evaluations per step. The Taylor form reduces to the midpoint rule z + h v_mid
    algebraically; it is kept as published so the arithmetic follows theirs."""
    for i in range(len(sigmas) - 1):
        s, h = sigmas[i], sigmas[i + 1] - sigmas[i]
        v = f(z, s, i, False)
        v_mid = f(z + h / 2 * v, s + h / 2, i, True)
        z = z + h * v + 0.5 * h ** 2 * ((v_mid - v) / (h / 2))
        if trace is not None:
            trace.append(z)
    return z


SOLVERS: dict[str, Callable] = {"reflow": reflow_solve, "rf_solver": rf_solver_solve}


def shared_layers(transformer, start: int, end: int) -> list[str]:
    """Attention processors whose V is shared: FLUX.1-dev's single blocks ``start..end`` of 38 at the same
    fraction of this model's single blocks, or, on the SD3 layout (joint blocks only), the same fraction of
    FLUX.1-dev's whole depth (19 + 38 blocks). Never empty."""
    if hasattr(transformer, "single_transformer_blocks"):
        n, prefix = len(transformer.single_transformer_blocks), "single_transformer_blocks"
        a, b = start / FLUX_SINGLE, (end + 1) / FLUX_SINGLE
    else:
        n, prefix = len(transformer.transformer_blocks), "transformer_blocks"
        a, b = (FLUX_DOUBLE + start) / (FLUX_DOUBLE + FLUX_SINGLE), (FLUX_DOUBLE + end + 1) / (FLUX_DOUBLE + FLUX_SINGLE)
    lo = min(n - 1, math.floor(a * n + 1e-9))
    hi = min(n, max(lo + 1, math.ceil(b * n - 1e-9)))
    return [f"{prefix}.{i}.attn.processor" for i in range(lo, hi)]


class ValueBank:
    """The source branch's V features, keyed as the authors key them: (sampling step, midpoint evaluation,
    layer, projection). ``mode`` is ``store`` (inversion), ``inject`` (sampling) or None (pass through)."""

    def __init__(self):
        self.features: dict[tuple, torch.Tensor] = {}
        self.mode: Optional[str] = None
        self.key: tuple = ()

    def at(self, mode: Optional[str], step: int, midpoint: bool) -> None:
        self.mode, self.key = mode, (step, midpoint)


class SharedValueProcessor:
    """Wraps the layer's own diffusers processor (SD3's ``JointAttnProcessor2_0``, FLUX's
    ``FluxAttnProcessor``) and records or replaces the output of its value projections: ``to_v`` (image
    tokens; FLUX single blocks: text and image) and ``add_v_proj`` (SD3's text tokens), so the rest of the
    attention is the library's. A key with nothing stored passes through (FireFlow stores no first
    evaluations after its first step; their code checks ``in info['feature']`` the same way)."""

    def __init__(self, inner, layer: str, bank: ValueBank):
        self.inner, self.layer, self.bank = inner, layer, bank

    def __call__(self, attn, *args, **kwargs):
        if self.bank.mode is None:
            return self.inner(attn, *args, **kwargs)
        handles = [mod.register_forward_hook(self._hook(proj)) for proj in ("to_v", "add_v_proj")
                   if (mod := getattr(attn, proj, None)) is not None]
        try:
            return self.inner(attn, *args, **kwargs)
        finally:
            for h in handles:
                h.remove()

    def _hook(self, proj: str):
        bank, key = self.bank, (*self.bank.key, self.layer, proj)

        def hook(module, inputs, out):
            if bank.mode == "store":
                bank.features[key] = out.detach()
                return None
            stored = bank.features.get(key)
            if stored is None:
                return None
            # CFG rows are [uncond of every sample; cond of every sample]: each sample's V goes to both
            return stored.repeat(out.shape[0] // stored.shape[0], *([1] * (stored.ndim - 1)))

        return hook


@contextlib.contextmanager
def counted_calls(module):
    """(forward calls, batch rows) of ``module`` while the block runs."""
    seen = [0, 0]

    def pre(mod, args, kwargs):
        x = kwargs.get("hidden_states", args[0] if args else None)
        seen[0] += 1
        seen[1] += len(x)

    handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


@dataclass
class RFSolverEditConfig(EditorConfig):
    num_steps: int = 15
    inject: int = 2
    guidance: float = 2.0  # FLUX guidance embedding of the target branch (the inversion runs at 1)
    cfg_scale: float = 4.0  # SD3-layout backbones only: CFG of the target branch (deviation, see above)
    start_layer_index: int = 20
    end_layer_index: int = 37
    sampling_strategy: str = "rf_solver"
    negative_prompt: str = ""  # SD3-layout CFG only


class RFSolverEditEditor(FlowEditor):
    name = "rf_solver_edit"
    Config = RFSolverEditConfig
    requires = frozenset({"image", "source_prompt", "target_prompt"})
    paper = "Wang et al., Taming Rectified Flow for Inversion and Editing (RF-Solver-Edit), 2024"
    solvers: dict[str, Callable] = SOLVERS

    def check_config(self) -> None:
        c = self.config
        if c.num_steps < 1 or not 0 <= c.inject <= c.num_steps:
            raise ConfigError(f"{self.name}: need num_steps >= 1 and 0 <= inject <= num_steps, got "
                              f"num_steps {c.num_steps}, inject {c.inject}")
        if not 0 <= c.start_layer_index <= c.end_layer_index:
            raise ConfigError(f"{self.name}: need 0 <= start_layer_index <= end_layer_index")
        if c.sampling_strategy not in self.solvers:
            raise ConfigError(f"{self.name}: sampling_strategy {c.sampling_strategy!r} is not one of "
                              f"{', '.join(self.solvers)}")

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        super().load(backbone, device, dtype)
        c = self.config
        self.layers = shared_layers(self.backbone.transformer, c.start_layer_index, c.end_layer_index)

    @property
    def is_flux(self) -> bool:
        return getattr(self.backbone, "family", "sd3") == "flux"

    def _velocity(self, z, sigma: float, cond, neg, target: bool) -> torch.Tensor:
        bb, c = self.backbone, self.config
        if self.is_flux:
            return bb.velocity(z, 1000 * sigma, cond, None, guidance=c.guidance if target else 1.0)
        return bb.velocity(z, 1000 * sigma, cond, neg, c.cfg_scale if target else 1.0)

    @contextlib.contextmanager
    def _sharing(self, bank: ValueBank):
        layers = set(self.layers)
        with swapped_processors(self.backbone.transformer,
                                lambda name, p: SharedValueProcessor(p, name, bank) if name in layers else None):
            yield

    @torch.no_grad()
    def run(self, z0: torch.Tensor, src: tuple, tar: tuple, neg: Optional[tuple],
            trace: Optional[dict] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Invert ``z0`` under ``src`` storing V, then sample under ``tar`` injecting it: (inverted, edited).
        ``trace`` (a dict) receives both trajectories, one latent per step."""
        c, n = self.config, self.config.num_steps
        _, sigmas = self.backbone.schedule(n)
        grid = [float(s) for s in sigmas]  # 1 -> 0, n + 1 values
        solve, bank = self.solvers[c.sampling_strategy], ValueBank()
        inv_trace, edit_trace = ([], []) if trace is not None else (None, None)

        def inversion_field(z, s, i, midpoint):
            step = n - 1 - i  # the sampling step of the same interval: their key t_prev when inverting
            bank.at("store" if step < c.inject else None, step, midpoint)
            return self._velocity(z, s, src, None, target=False)

        def edit_field(z, s, step, midpoint):
            bank.at("inject" if step < c.inject else None, step, midpoint)
            return self._velocity(z, s, tar, neg, target=True)

        with self._sharing(bank):
            inverted = solve(inversion_field, z0, grid[::-1], inv_trace)
            edited = solve(edit_field, inverted, grid, edit_trace)
        if trace is not None:
            trace.update(inversion=inv_trace, edit=edit_trace)
        return inverted, edited

    @torch.no_grad()
    def edit_batch(self, samples: list[Sample], generators: list[torch.Generator]) -> list[EditOutput]:
        """One transformer batch for all samples (rows [s_1..s_B], or [neg_1..neg_B, tar_1..tar_B] under CFG);
        the algorithm draws no noise, so outputs equal ``edit`` one by one up to float reassociation."""
        bb, c, b = self.backbone, self.config, len(samples)
        z0 = torch.cat([bb.encode_image(s.image) for s in samples])
        src = bb.encode_prompt([s.source_prompt for s in samples])
        tar = bb.encode_prompt([s.target_prompt for s in samples])
        neg = None if self.is_flux else bb.encode_prompt([c.negative_prompt] * b)
        with counted_calls(bb.transformer) as calls:
            inverted, edited = self.run(z0, src, tar, neg)
        images = bb.decode(edited)
        if self.is_flux:
            guided = f"guidance embedding {c.guidance}" + ("" if bb.guidance_embeds else " (none in this model)")
        else:
            guided = f"CFG {c.cfg_scale}"
        outs = []
        for j in range(b):
            extras = {"transformer_calls": calls[0], "transformer_evals": calls[1] / b, "target_guidance": guided,
                      "inverted_latent": inverted[j:j + 1].float().cpu().numpy(),
                      "final_latent": edited[j:j + 1].float().cpu().numpy()}
            if b == 1:
                extras["transformer_evals"] = int(calls[1])
            else:
                extras["batch_size"] = b
            outs.append(EditOutput(image=images[j], extras=extras))
        return outs
