"""FireFlow: second order at one field evaluation per step after the first (exactly solvable field),
reconstruction against Euler, which evaluations get the source's values (midpoints only, as in the
authors' code), call counts, batching, and parity with the authors' ``denoise_fireflow`` (tests/golden)."""
from __future__ import annotations

import pytest
import torch

import editors.rf_solver_edit as rse
from editors.fireflow import FireFlowEditor
from tests.batch_support import batch_matches_single
from tests.test_rf_solver_edit import (check_against_authors_loop, golden_cases, loaded, reconstruction_error, sample,
                                       solver_errors)


@pytest.mark.parametrize("strategy, order, calls", [("fireflow", 2, lambda n: 2 * (n + 1)),
                                                    ("rf_midpoint", 2, lambda n: 4 * n), ("reflow", 1, lambda n: 2 * n)])
def test_second_order_at_one_evaluation_per_step(strategy, order, calls):
    errs = solver_errors(FireFlowEditor, strategy)
    for (inv_a, edit_a, _), (inv_b, edit_b, _) in zip(errs, errs[1:]):
        for a, b in ((inv_a, inv_b), (edit_a, edit_b)):
            assert 0.85 * 2 ** order < a / b < 1.15 * 2 ** order, (strategy, a, b)
    assert [c for *_, c in errs] == [calls(n) for n in (32, 64, 128)]  # FireFlow: N + 1 each way


@pytest.mark.parametrize("backbone", ["toy", "toy-flux"])
def test_reconstruction_far_better_than_euler(backbone):
    # measured (8 steps): toy 0.0064 vs 0.155, toy-flux 0.074 vs 0.42
    assert reconstruction_error(FireFlowEditor, backbone, "fireflow", 8) < \
        0.25 * reconstruction_error(FireFlowEditor, backbone, "reflow", 8)


class RecordingBank(rse.ValueBank):
    """Records which (step, midpoint) evaluations stored and which found something to inject."""

    def __init__(self):
        super().__init__()
        self.injected: set = set()
        bank = self

        class Features(dict):
            def get(self, key, default=None):
                if key in self:
                    bank.injected.add(key[:2])
                return super().get(key, default)

        self.features = Features()


@pytest.mark.parametrize("cls, injected", [
    (FireFlowEditor, {(j, True) for j in range(4)}),  # sampling step 0's first evaluation finds nothing stored
    (rse.RFSolverEditEditor, {(j, m) for j in range(4) for m in (False, True)}),
])
def test_which_evaluations_receive_the_source_values(monkeypatch, cls, injected):
    banks = []
    monkeypatch.setattr(rse, "ValueBank", lambda: banks.append(RecordingBank()) or banks[-1])
    loaded(cls, "toy", num_steps=4, inject=4, sampling_strategy="fireflow" if cls is FireFlowEditor
           else "rf_solver").edit(sample(), torch.Generator())
    (bank,) = banks
    stored = {k[:2] for k in bank.features}
    # FireFlow's inversion evaluates a first stage only at its first step (sampling step 3 of the interval)
    assert stored == (injected | {(3, False)} if cls is FireFlowEditor else injected)
    assert bank.injected == injected


@pytest.mark.parametrize("backbone, calls, evals", [("toy", 2 * 9, 9 + 2 * 9), ("toy-flux", 2 * 9, 2 * 9)])
def test_transformer_calls_per_edit(backbone, calls, evals):
    """8 steps: 9 calls each way (the first step's two, then one per step)."""
    out = loaded(FireFlowEditor, backbone).edit(sample(), torch.Generator())
    assert (out.extras["transformer_calls"], out.extras["transformer_evals"]) == (calls, evals)


def test_edit_batch_equals_one_by_one():
    ed = loaded(FireFlowEditor, "toy", num_steps=4, inject=2)
    samples = [sample(seed=1), sample("a red car", "a blue car", seed=2)]
    batch_matches_single(ed, samples, [None, None], latent_tol=1e-5)


@pytest.mark.parametrize("path", golden_cases("fireflow"), ids=lambda p: p.stem)
def test_matches_the_authors_sampling_loop(path):
    check_against_authors_loop(path, FireFlowEditor)
