"""The bounds that frame every table: ``oracle`` (the ground truth) and ``blank`` (a flat mean-colour
image), beside ``identity``; run through the real runner on ShapesEdit and on the smoke set."""
from __future__ import annotations

import math

import numpy as np
import torch

from metrics.registry import build_metrics
from pie_bench.datasets.pie import load_dataset
from pie_bench.run.leaderboard import as_leaderboard
from pie_bench.run.runner import BenchOptions, run_bench

BOUNDS = ["identity", "oracle", "blank"]


def test_blank_is_the_flat_mean_colour(smoke):
    from editors.blank import BlankEditor

    s = smoke.samples[0]
    out = BlankEditor().edit(s, torch.Generator()).image
    mean = s.image.reshape(-1, 3).mean(axis=0)
    assert out.shape == s.image.shape and out.dtype == np.uint8
    assert (out == out[0, 0]).all() and np.abs(out[0, 0] - mean).max() <= 0.5


def test_bounds_on_shapes_ceiling_and_floor(tmp_path):
    ds = load_dataset("shapes", limit=10)  # one per edit type
    metrics = build_metrics(["gt_attribute_accuracy", "gt_psnr", "psnr_unedit_part"], "toy")
    board = as_leaderboard(run_bench(ds, BenchOptions(editors=BOUNDS, backbone="toy"), metrics, tmp_path / "run"))
    eds = board.editors
    assert all(eds[n].bound for n in BOUNDS) and all(not eds[n].toy for n in BOUNDS)
    acc = {n: eds[n].metrics["gt_attribute_accuracy"].value for n in BOUNDS}
    # the ground truth shows every requested change; doing nothing shows none; a flat image only the
    # changes it gets right by accident (absent objects)
    assert acc["oracle"] == 1.0 and acc["identity"] == 0.0 and 0.0 < acc["blank"] < 0.6
    assert math.isinf(eds["oracle"].metrics["gt_psnr"].value)
    assert eds["blank"].metrics["gt_psnr"].value < 40


def test_oracle_is_skipped_with_the_reason_without_targets(tmp_path, smoke):
    ds = load_dataset("smoke", limit=2)
    board = as_leaderboard(run_bench(ds, BenchOptions(editors=["oracle", "identity"], backbone="toy"),
                                     build_metrics(["mse_unedit_part"], "toy"), tmp_path / "run"))
    oracle = board.editors["oracle"]
    assert oracle.n_skipped == 2 and oracle.n_ok == 0 and oracle.n_failed == 0
    assert "target_image" in oracle.skipped[0]["reason"]
    assert board.editors["identity"].n_ok == 2
