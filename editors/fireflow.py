"""FireFlow (``fireflow``): RF-Solver-Edit's inversion and value sharing with a solver that costs one
transformer call per step.

Deng, He, Mei, Wang, Tang, "FireFlow: Fast Inversion of Rectified Flow for Image Semantic Editing", 2024
(arXiv:2412.07517, ICML 2025). The midpoint rule Z' = Z + h v(Z + h/2 v(Z, t), t + h/2) needs two
evaluations per step; FireFlow takes the first-stage velocity from the previous step's midpoint evaluation
instead (a well-trained rectified flow's velocity barely changes along a path), so after the first step
each step makes one call, Z' = Z + h v_mid, and stays second-order accurate. Inversion and sampling each
start afresh (their first step evaluates at its start point), so N steps cost N + 1 calls each way.

Reference: the authors' code, HolmesShuan/FireFlow-Fast-Inversion-of-Rectified-Flow-for-Image-Semantic-
Editing@98588a6 (``src/flux/sampling.py: denoise_fireflow``, ``src/edit.py``, ``flux/modules/layers.py``),
read, not copied. PIE-Bench settings (FireFlow issue #8, the same for every image): FLUX.1-dev, 8 steps,
inject 1 (also 15 steps, inject 2), guidance 2, ``edit.py``'s default single blocks 20-37 (its example
scripts pass 0-37), ``reuse_v`` 1 (replace V). As in their code the stored V is keyed by step and
evaluation, and only the midpoint evaluations are stored after the first inversion step, so the target's
first evaluation of sampling step 0 finds nothing stored and runs unchanged; only midpoints are injected.

Everything else (backbones, SD3-layout CFG and block mapping, time grid) is RF-Solver-Edit's editor
(``editors.rf_solver_edit``), deviations included. ``sampling_strategy`` keeps their other choices:
``rf_solver`` (RF-Solver-Edit), ``rf_midpoint`` (two-call midpoint), ``reflow`` (Euler).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from editors.rf_solver_edit import SOLVERS, Field, RFSolverEditConfig, RFSolverEditEditor


def fireflow_solve(f: Field, z: torch.Tensor, sigmas: list[float], trace: Optional[list] = None) -> torch.Tensor:
    v = None
    for i in range(len(sigmas) - 1):
        s, h = sigmas[i], sigmas[i + 1] - sigmas[i]
        if v is None:
            v = f(z, s, i, False)
        v = f(z + h / 2 * v, s + h / 2, i, True)  # this step's midpoint, the next step's first stage
        z = z + h * v
        if trace is not None:
            trace.append(z)
    return z


def midpoint_solve(f: Field, z: torch.Tensor, sigmas: list[float], trace: Optional[list] = None) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        s, h = sigmas[i], sigmas[i + 1] - sigmas[i]
        z = z + h * f(z + h / 2 * f(z, s, i, False), s + h / 2, i, True)
        if trace is not None:
            trace.append(z)
    return z


@dataclass
class FireFlowConfig(RFSolverEditConfig):
    num_steps: int = 8
    inject: int = 1
    sampling_strategy: str = "fireflow"


class FireFlowEditor(RFSolverEditEditor):
    name = "fireflow"
    Config = FireFlowConfig
    paper = "Deng et al., FireFlow: Fast Inversion of Rectified Flow for Image Semantic Editing, 2024"
    solvers = {**SOLVERS, "fireflow": fireflow_solve, "rf_midpoint": midpoint_solve}
