"""`python cli.py bench` with no --data runs the embedded default: ShapesEdit on the ShapesEdit models
with the 10-step preset (batching editors 10 per call), ground-truth metrics added, iCD left out with its reason under --editors all."""
from __future__ import annotations

import json

from click.testing import CliRunner

import cli as cli_module
from pie_bench.run import presets


def _bench(tmp_path, *args):
    return CliRunner().invoke(cli_module.cli, ["bench", "--no-progress", "--no-report", *args,
                                               "--out", str(tmp_path / "run")])


def test_embedded_default_is_shapes_on_the_shapes_models(tmp_path):
    res = _bench(tmp_path, "--editors", "identity,npi_p2p", "--limit", "2", "--metrics", "protocol",
                 "--editor-arg", "npi_p2p.num_ddim_steps=4")
    assert res.exit_code == 0, res.output
    assert "embedded default: ShapesEdit" in res.output
    board = json.loads((tmp_path / "run" / "leaderboard.json").read_text())
    assert board["dataset"]["name"] == "shapes" and board["metrics_backbone"] == "shapes"
    npi = board["editors"]["npi_p2p"]
    assert npi["backbone"] == "shapes" and npi["toy"] is False
    # the user's --editor-arg wins over the preset's step count; the preset fills nothing else here
    assert npi["config"]["num_ddim_steps"] == 4
    # protocol + ground truth (ShapesEdit carries targets); structure/LPIPS have no ShapesEdit weights: toy
    assert {"gt_attribute_accuracy", "gt_psnr", "ssim_unedit_part"} <= set(board["metric_info"])
    assert board["metric_info"]["lpips_unedit_part"]["toy"] is True
    assert board["metric_info"]["psnr_unedit_part"]["toy"] is False
    assert "lpips_unedit_part" in board["toy_note"] and "npi_p2p" not in board["toy_note"]


def test_preset_steps_apply_only_without_data(tmp_path):
    args = presets.embedded_editor_args(["ddim_p2p", "identity"], {"ddim_p2p": {"guidance_scale": "5"}})
    assert args == {"ddim_p2p": {"num_ddim_steps": "10", "guidance_scale": "5"}}
    res = _bench(tmp_path, "--editors", "identity", "--data", "smoke", "--limit", "1", "--metrics", "mse_unedit_part")
    assert res.exit_code == 0, res.output
    assert "embedded default" not in res.output
    board = json.loads((tmp_path / "run" / "leaderboard.json").read_text())
    assert board["dataset"]["name"] == "smoke"


def test_all_leaves_out_editors_that_cannot_run_on_the_backbone(tmp_path, monkeypatch):
    """A ShapesEdit models folder trained without the iCD stages: ``--editors all`` skips iCD with the reason."""
    from editors.registry import get_editor_class
    from pie_bench.core.paths import SHAPES_MODELS

    assert get_editor_class("icd").backbone_unavailable("shapes") is None  # the bundled models have it
    models = tmp_path / "models"
    models.mkdir()
    for part in ("sd", "ip2p", "clip", "manifest.json"):
        (models / part).symlink_to(SHAPES_MODELS / part)
    monkeypatch.setenv("PIE_BENCH_SHAPES_MODELS", str(models))
    assert "icd weights are missing" in get_editor_class("icd").backbone_unavailable("shapes")
    assert get_editor_class("icd").backbone_unavailable("toy") is None
    res = _bench(tmp_path, "--editors", "all", "--limit", "1", "--metrics", "none",
                 *[a for n in ("ddim_p2p", "npi_p2p") for a in ("--editor-arg", f"{n}.num_ddim_steps=2")],
                 "--editor-arg", "nti_p2p.num_ddim_steps=2", "--editor-arg", "nti_p2p.inner_steps=1",
                 "--editor-arg", "ip2p.num_inference_steps=2", "--editor-arg", "pix2pix_zero.num_inference_steps=2")
    assert res.exit_code == 0, res.output
    assert "editor icd unavailable, skipped" in res.output
    board = json.loads((tmp_path / "run" / "leaderboard.json").read_text())
    assert "icd" not in board["editors"] and board["n_failed"] == 0


def test_embedded_run_batches_the_batching_editors_unless_told_otherwise(tmp_path):
    from pie_bench.run.run_folder import RunFolder

    common = ["--editors", "ip2p", "--limit", "3", "--metrics", "none", "--editor-arg", "ip2p.num_inference_steps=2"]
    assert _bench(tmp_path, *common).exit_code == 0
    # the warm-up sample alone (a batch holding it would be all warm-up), the rest in one batch
    assert [r.extras.get("batch_size") for r in RunFolder(tmp_path / "run").records()] == [1, 2, 2]
    assert presets.EMBEDDED_BATCH_SIZE >= 3
    res = CliRunner().invoke(cli_module.cli, ["bench", "--no-progress", "--no-report", *common, "--batch-size", "1",
                                              "--out", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output
    assert [r.extras.get("batch_size") for r in RunFolder(tmp_path / "one").records()] == [1, 1, 1]
