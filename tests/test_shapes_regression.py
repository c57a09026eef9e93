"""The CI regression check of issue 9: a ShapesEdit slice (one sample per edit type) is benched with the
committed ShapesEdit models and compared against the committed baseline ``results/shapes-ci.json``
with ``compare --fail-on-regression``: a change that breaks an editor shows up as a flagged regression.

Regenerate the baseline (after retraining the models or changing an editor on purpose) with the
command in ``results/README.md``; it is ``CI_ARGS`` below with ``--out`` pointing at a fresh folder.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "results" / "shapes-ci.json"
CI_IDS = ",".join(f"{t}13000000000" for t in range(10))  # the first sample of each edit type
CI_ARGS = ["bench", "--editors", "identity,ddim_p2p,nti_p2p,npi_p2p,ip2p,pix2pix_zero", "--data", "shapes",
           "--ids", CI_IDS, "--metrics", "psnr_unedit_part,mse_unedit_part,gt_psnr,gt_psnr_edit_part,"
           "gt_attribute_accuracy",
           "--editor-arg", "ddim_p2p.num_ddim_steps=10", "--editor-arg", "nti_p2p.num_ddim_steps=10",
           "--editor-arg", "nti_p2p.inner_steps=2", "--editor-arg", "npi_p2p.num_ddim_steps=10",
           "--editor-arg", "ip2p.num_inference_steps=10", "--editor-arg", "pix2pix_zero.num_inference_steps=10",
           "--no-report", "--no-progress"]


def _cli(*args, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, check=check, timeout=600)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes_ci") / "run"
    proc = _cli(*CI_ARGS, "--out", str(out), check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out / "leaderboard.json"


def test_shapes_slice_has_no_regression_against_the_committed_baseline(fresh):
    base, new = json.loads(BASELINE.read_text()), json.loads(fresh.read_text())
    assert base["dataset"]["annotations_sha256"] == new["dataset"]["annotations_sha256"], \
        "ShapesEdit generation changed: regenerate results/shapes-ci.json (results/README.md)"
    assert set(new["editors"]) == set(base["editors"]) and all(e["n_ok"] == 10 for e in new["editors"].values())
    proc = _cli("compare", str(BASELINE), str(fresh), "--fail-on-regression", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 regression(s)" in proc.stdout


def test_a_broken_editor_is_flagged(fresh, tmp_path):
    """The same check fails when an editor gets worse: the background PSNR and the attribute accuracy of
    ddim_p2p dropped well beyond their standard errors, as a broken inversion would do."""
    broken = copy.deepcopy(json.loads(fresh.read_text()))
    m = broken["editors"]["ddim_p2p"]["metrics"]
    m["psnr_unedit_part"]["mean"] -= 10 * max(m["psnr_unedit_part"]["stderr"], 0.1)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    proc = _cli("compare", str(BASELINE), str(path), "--fail-on-regression", check=False)
    assert proc.returncode == 1
    assert "1 regression(s)" in proc.stdout
