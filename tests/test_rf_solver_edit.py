"""RF-Solver-Edit: the solver's order on an exactly solvable field, inversion-reconstruction against Euler,
value sharing (it changes the edit, the processors come back), determinism, transformer-call counts,
batching, the block mapping, and parity with the authors' sampling loop (tests/golden, README section
"rf_solver_edit, fireflow") within 1e-4 along the whole trajectory, on the toy SD3 and the toy FLUX."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from editors.rf_solver_edit import RFSolverEditEditor, shared_layers
from pie_bench.core.sample import Sample
from tests.batch_support import batch_matches_single

GOLDEN = Path(__file__).with_name("golden")


class LinearFieldBackbone:
    """The flow-backbone interface over dz/ds = -2 z + 3 s (s = sigma = t / 1000), whose solution is
    z(s) = C exp(-2 s) + 3 s / 2 - 3 / 4; uniform sigmas. Counts its evaluations."""

    family = "flux"  # velocity(z, t, cond, None, guidance=...): one evaluation per call
    transformer = SimpleNamespace(attn_processors={}, set_attn_processor=lambda procs: None)

    def __init__(self):
        self.calls = 0

    def schedule(self, steps):
        return None, torch.linspace(1, 0, steps + 1, dtype=torch.float64)

    def velocity(self, z, t, cond, uncond=None, guidance=1.0):
        self.calls += 1
        return -2 * z + 3 * (t / 1000)

    @staticmethod
    def exact(z, s_from, s_to):
        c = (z - 1.5 * s_from + 0.75) * math.exp(2 * s_from)
        return c * math.exp(-2 * s_to) + 1.5 * s_to - 0.75


def on_linear_field(cls, steps, strategy):
    ed = cls(num_steps=steps, inject=0, sampling_strategy=strategy)
    ed.backbone, ed.layers = LinearFieldBackbone(), []
    return ed


def solver_errors(cls, strategy, steps=(32, 64, 128)):
    """(inversion error at s = 1, sampling error at s = 0, field evaluations) per step count."""
    out = []
    for n in steps:
        ed = on_linear_field(cls, n, strategy)
        z0 = torch.tensor([0.3, -1.2], dtype=torch.float64)
        inverted, edited = ed.run(z0, None, None, None)
        out.append((float((inverted - LinearFieldBackbone.exact(z0, 0, 1)).abs().max()),
                    float((edited - LinearFieldBackbone.exact(inverted, 1, 0)).abs().max()), ed.backbone.calls))
    return out


@pytest.mark.parametrize("strategy, order, calls", [("reflow", 1, lambda n: 2 * n), ("rf_solver", 2, lambda n: 4 * n)])
def test_solver_order_on_a_linear_field(strategy, order, calls):
    errs = solver_errors(RFSolverEditEditor, strategy)
    for (inv_a, edit_a, _), (inv_b, edit_b, _) in zip(errs, errs[1:]):
        for a, b in ((inv_a, inv_b), (edit_a, edit_b)):  # halving h divides the error by 2^order
            assert 0.85 * 2 ** order < a / b < 1.15 * 2 ** order, (strategy, a, b)
    assert [c for *_, c in errs] == [calls(n) for n in (32, 64, 128)]


def sample(src="a cat on a table", tar="a [dog] on a table", seed=1):
    img = np.random.default_rng(seed).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    return Sample(id=f"s{seed}", edit_type=0, source_prompt_raw=src, target_prompt_raw=tar,
                  mask=np.zeros((512, 512), bool), _image=img)


def loaded(cls, backbone, **cfg):
    ed = cls(**cfg)
    ed.load(backbone)
    return ed


def reconstruction_error(cls, backbone, strategy, steps):
    """Same prompt both ways, no injection, target guidance 1 (the inversion's): max |z_rec - z_0|."""
    ed = loaded(cls, backbone, num_steps=steps, inject=0, guidance=1.0, cfg_scale=1.0, sampling_strategy=strategy)
    s = sample(tar="a cat on a table")
    out = ed.edit(s, torch.Generator().manual_seed(0))
    return float((torch.from_numpy(out.extras["final_latent"]) - ed.backbone.encode_image(s.image)).abs().max())


@pytest.mark.parametrize("backbone", ["toy", "toy-flux"])
def test_reconstruction_far_better_than_euler(backbone):
    # measured: toy 0.0035 vs 0.078, toy-flux 0.030 vs 0.24 (15 steps)
    assert reconstruction_error(RFSolverEditEditor, backbone, "rf_solver", 15) < \
        0.25 * reconstruction_error(RFSolverEditEditor, backbone, "reflow", 15)


@pytest.mark.parametrize("backbone", ["toy", "toy-flux"])
def test_value_sharing_changes_the_edit_and_is_removed_afterwards(backbone):
    on = loaded(RFSolverEditEditor, backbone, num_steps=4, inject=4)
    off = loaded(RFSolverEditEditor, backbone, num_steps=4, inject=0)
    before = {k: type(p) for k, p in on.backbone.transformer.attn_processors.items()}
    s = sample()
    a = on.edit(s, torch.Generator().manual_seed(0)).extras["final_latent"]
    b = off.edit(s, torch.Generator().manual_seed(0)).extras["final_latent"]
    assert float(np.abs(a - b).max()) > 5e-3  # measured 0.036 (toy), 0.019 (toy-flux) on the golden samples
    assert {k: type(p) for k, p in on.backbone.transformer.attn_processors.items()} == before


def test_deterministic_whatever_the_seed():
    ed = loaded(RFSolverEditEditor, "toy", num_steps=4)
    s = sample()
    a, b = ed.edit(s, torch.Generator().manual_seed(0)), ed.edit(s, torch.Generator().manual_seed(7))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.extras["final_latent"], b.extras["final_latent"])


@pytest.mark.parametrize("backbone, calls, evals", [("toy", 4 * 6, 2 * 6 + 2 * 2 * 6), ("toy-flux", 4 * 6, 4 * 6)])
def test_transformer_calls_per_edit(backbone, calls, evals):
    """2 calls per step each way; SD3-layout CFG doubles the sampling rows, FLUX's guidance embedding does not."""
    out = loaded(RFSolverEditEditor, backbone, num_steps=6).edit(sample(), torch.Generator())
    assert (out.extras["transformer_calls"], out.extras["transformer_evals"]) == (calls, evals)


@pytest.mark.parametrize("backbone", ["toy", "toy-flux"])
def test_edit_batch_equals_one_by_one(backbone):
    ed = loaded(RFSolverEditEditor, backbone, num_steps=4, inject=2)
    samples = [sample(seed=1), sample("a red car", "a blue car", seed=2)]
    batched, singles = batch_matches_single(ed, samples, [None, None], latent_tol=1e-5)
    for b, one in zip(batched, singles):
        assert b.extras["batch_size"] == 2 and b.extras["transformer_calls"] == one.extras["transformer_calls"]


def stub(double: int, single: int | None):
    blocks = [None] * double
    return SimpleNamespace(transformer_blocks=blocks) if single is None else \
        SimpleNamespace(transformer_blocks=blocks, single_transformer_blocks=[None] * single)


@pytest.mark.parametrize("model, start, end, blocks", [
    (stub(19, 38), 20, 37, [f"single_transformer_blocks.{i}" for i in range(20, 38)]),  # FLUX.1-dev, the authors'
    (stub(19, 38), 0, 37, [f"single_transformer_blocks.{i}" for i in range(38)]),  # FireFlow's example scripts
    (stub(1, 1), 20, 37, ["single_transformer_blocks.0"]),  # toy-flux
    (stub(24, None), 20, 37, [f"transformer_blocks.{i}" for i in range(16, 24)]),  # SD3-medium: last 8 of 24
    (stub(6, None), 20, 37, ["transformer_blocks.4", "transformer_blocks.5"]),  # the ShapesEdit flow model
    (stub(2, None), 20, 37, ["transformer_blocks.1"]),  # toy SD3
])
def test_shared_blocks_follow_the_authors_share_of_the_depth(model, start, end, blocks):
    assert shared_layers(model, start, end) == [f"{b}.attn.processor" for b in blocks]


def golden_cases(editor: str):
    files = sorted(GOLDEN.glob(f"{editor}-*.npz"))
    assert files, f"no golden cases for {editor} in {GOLDEN}"
    return files


def check_against_authors_loop(path: Path, cls):
    """The authors' loop (adapted copy, driven by the same toy) against ours: the whole trajectory (SD3 toy
    cases), the inverted and the edited latent, the time grid, the model calls; measured <= 1.9e-6."""
    from pie_bench.datasets.pie import load_dataset

    with np.load(path, allow_pickle=False) as z:
        g = {k: z[k] for k in z.files}
    ed = loaded(cls, str(g["backbone"]), **json.loads(str(g["config"])))
    bb = ed.backbone
    (s,) = load_dataset(str(g["dataset"]), ids=[str(g["sample_id"])]).samples
    src, tar = bb.encode_prompt([s.source_prompt]), bb.encode_prompt([s.target_prompt])
    neg = None if ed.is_flux else bb.encode_prompt([ed.config.negative_prompt])
    trace = {}
    with torch.no_grad():
        inverted, edited = ed.run(bb.encode_image(s.image), src, tar, neg, trace=trace)
    assert np.abs(inverted.numpy() - g["inverted"]).max() <= 1e-4
    assert np.abs(edited.numpy() - g["latent"]).max() <= 1e-4
    if "trajectory" in g:
        ours = torch.stack([t[0] for t in trace["inversion"] + trace["edit"]]).numpy()
        assert ours.shape == g["trajectory"].shape and np.abs(ours - g["trajectory"]).max() <= 1e-4
    # on toy-flux the grid is the authors' own get_schedule, unchanged
    assert np.abs(bb.schedule(ed.config.num_steps)[1].numpy() - g["sigmas"]).max() <= 1e-7
    out = ed.edit(s, torch.Generator())
    assert out.extras["transformer_calls"] == int(g["model_calls"])


@pytest.mark.parametrize("path", golden_cases("rf_solver_edit"), ids=lambda p: p.stem)
def test_matches_the_authors_sampling_loop(path):
    check_against_authors_loop(path, RFSolverEditEditor)


def test_bad_settings_and_unet_backbones_are_refused():
    from pie_bench.core.errors import ConfigError

    assert RFSolverEditEditor.backbone_unavailable("sd15").startswith("rf_solver_edit needs a rectified-flow")
    for bad in ({"inject": 16}, {"sampling_strategy": "fireflow"}, {"start_layer_index": 30, "end_layer_index": 20}):
        with pytest.raises(ConfigError, match="rf_solver_edit"):
            RFSolverEditEditor(**bad).load("toy")


@pytest.mark.parametrize("backbone", ["toy", "toy-flux"])
@pytest.mark.parametrize("name", ["rf_solver_edit", "fireflow"])
def test_fast_path_equals_the_reference_style_loop(name, backbone, smoke):
    """benchmarks/reference/rf_solver_edit.py (their loops and info-dict bookkeeping, one image, V through the
    CPU) against the editor: measured <= 2.4e-6; the same transformer rows."""
    from benchmarks.editor_bench import captured_decode, run_reference
    from editors.registry import get_editor_class

    ed = loaded(get_editor_class(name), backbone, num_steps=4, inject=4)
    with captured_decode(ed.backbone) as seen:
        out = ed.edit(smoke.samples[1], torch.Generator())
    ref = run_reference(name, ed, smoke.samples[1], 0)
    assert float((seen[-1] - ref.latents).abs().max()) <= 1e-4
    assert out.extras["transformer_evals"] == ref.extras["unet_evals"]


def test_latency_script_runs_both_editors(tmp_path):
    from benchmarks.latency import main

    out = tmp_path / "bench.json"
    assert main(["--device", "cpu", "--backbone", "toy-flux", "--editors", "rf_solver_edit,fireflow", "--steps", "4",
                 "--repeats", "1", "--warmup", "0", "--no-count-flops", "--no-overhead", "--out", str(out)]) == 0
    report = json.loads(out.read_text())["editors"]
    assert report["rf_solver_edit"]["unet_evals_per_image"] == {"ours": 16, "reference": 16}  # 2 per step each way
    assert report["fireflow"]["unet_evals_per_image"] == {"ours": 10, "reference": 10}  # N + 1 each way
    assert report["rf_solver_edit"]["check"]["passed"] and report["fireflow"]["check"]["passed"]
