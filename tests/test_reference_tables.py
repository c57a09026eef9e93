"""Published PIE-Bench tables as reference leaderboards (pie_bench/report/reference_tables): transcription
checked against the source text, the format checks, the refusal of runs that are not PIE-Bench on real
weights, and the side-by-side output of ``show --reference`` / ``compare RUN paper:ID``."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
PROTOCOL = REPO.parent / "shared" / "reference" / "piebench-protocol.md"
WAVE2 = REPO.parent / "shared" / "reference" / "wave2.md"
COLUMNS = ["structure_distance", "psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part",
           "clip_similarity_target_image", "clip_similarity_target_image_edit_part"]


def _cli(*args):
    import cli as cli_module

    return CliRunner().invoke(cli_module.cli, list(args))


def test_every_table_loads():
    from pie_bench.report.reference import available, load_table

    assert {"pnp-inversion-paper", "editing-poster"} <= set(available())
    for name in available():
        t = load_table(name)
        assert t.id == name and t.rows and t.source.get("transcribed")
        for row in t.rows:
            assert set(row.values) <= set(t.scales)


def test_transcription_matches_the_source_text():
    """Every number of the main table against ../shared/reference/piebench-protocol.md §3.1, and the rows
    wave2.md §2 repeats (Direct Inversion + P2P, MasaCtrl, PnP) against that text too."""
    if not PROTOCOL.is_file():
        pytest.skip(f"{PROTOCOL} not found (CI places ../shared beside the clone)")
    from pie_bench.report.reference import load_table

    t = load_table("pnp-inversion-paper")
    text = PROTOCOL.read_text(encoding="utf-8")
    section = text[text.index("### 3.1"):text.index("### 3.2")]
    source_rows = {}
    for line in section.splitlines():
        cells = [re.sub(r"^\*\*(.*)\*\*$", r"\1", c.strip()) for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and re.fullmatch(r"[\d.]+", cells[1]):
            source_rows[cells[0]] = [float(c) for c in cells[1:]]
    assert len(source_rows) == len(t.rows) == 11
    for row in t.rows:
        assert [row.values[c] for c in COLUMNS] == source_rows[row.method], row.method
    if WAVE2.is_file():
        wave = WAVE2.read_text(encoding="utf-8")
        for method, pattern in [("PnP Inversion + P2P", r"Paper: ([\d. /]+)\."),
                                ("DDIM + MasaCtrl", r"DDIM\+MasaCtrl ([\d. /]+);"),
                                ("PnP Inv + MasaCtrl", r"DI\+MasaCtrl ([\d. /]+)\."),
                                ("DDIM + PnP*", r"DDIM\+PnP ([\d. /]+);"), ("PnP Inv + PnP*", r"DI\+PnP ([\d. /]+)\.")]:
            numbers = [float(x) for x in re.search(pattern, wave).group(1).split("/")]
            row = next(r for r in t.rows if r.method == method)
            assert [row.values[c] for c in COLUMNS] == numbers, method


def test_bad_table_is_one_line_naming_the_file(tmp_path):
    from pie_bench.core.errors import ConfigError
    from pie_bench.report.reference import load_table

    data = json.loads((REPO / "pie_bench/report/reference_tables/pnp-inversion-paper.json").read_text())
    data["rows"][0]["values"]["psnr_unedit_part"] = "27.2"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"bad\.json: rows\[0\]\.values\.psnr_unedit_part: expected a finite number"):
        load_table(str(bad))
    del data["scales"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="missing field 'scales'"):
        load_table(str(bad))


@pytest.mark.parametrize("board, why", [("results/smoke-toy.json", "the smoke set"),
                                        ("results/shapes.json", "ShapesEdit")])
def test_toy_and_shapes_runs_are_refused(board, why):
    for args in (["show", board, "--reference", "pnp-inversion-paper"],
                 ["compare", board, "paper:pnp-inversion-paper"]):
        res = _cli(*args)
        assert res.exit_code == 2
        assert "not comparable with pnp-inversion-paper" in res.output and why in res.output
        assert len(res.output.strip().splitlines()) == 1 or "error:" in res.output


def pie_board(tmp_path, toy: bool = False, n: int = 700) -> Path:
    """A leaderboard as a full PIE-Bench run on real weights would write it, with ddim_p2p at the paper's
    values except PSNR 1.0 dB low and CLIP-whole 0.5 high (inside the 1.17 spread)."""
    from pie_bench.report.reference import load_table

    data = json.loads((REPO / "results/smoke-toy.json").read_text())
    data = copy.deepcopy(data)
    data["dataset"].update(name="PIE-Bench", n=n, source="/data/PIE-Bench")
    data["toy"], data["toy_note"] = toy, ""
    paper = load_table("pnp-inversion-paper")
    for name, ed in data["editors"].items():
        ed["toy"] = toy
        ed["config"]["num_ddim_steps"] = 50
        row = paper.row_for(name)
        for metric, stats in ed["metrics"].items():
            if row is not None and metric in row.values:
                stats["mean"] = row.values[metric] / paper.scales[metric]
                stats["stderr"] = 0.0
    ddim = data["editors"]["ddim_p2p"]["metrics"]
    ddim["psnr_unedit_part"]["mean"] -= 1.0
    ddim["clip_similarity_target_image"]["mean"] += 0.5
    for info in data["metric_info"].values():
        info["toy"] = toy
    path = tmp_path / "pie" / "leaderboard.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    return path


def test_side_by_side_output(tmp_path):
    board = pie_board(tmp_path)
    res = _cli("show", str(board), "--reference", "pnp-inversion-paper")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "beside pnp-inversion-paper" in out and "transcribed 2026-12-02" in out
    psnr = next(l for l in out.splitlines() if " PSNR " in f" {l} " and "16.87" in l)
    assert "17.87" in psnr and "-1" in psnr and "off" in psnr  # ours, theirs, Δ, beyond the 0.11 spread
    clip = next(l for l in out.splitlines() if "CLIP Whole" in l and "25.51" in l)
    assert "25.01" in clip and "off" not in clip  # 0.5 is inside CLIP-whole's 1.17 spread
    res = _cli("compare", str(board.parent), "paper:pnp-inversion-paper", "--fail-on-regression")
    assert res.exit_code == 1 and "1 metric(s) off the paper beyond the published spread, 1 of them worse" in res.output


def test_toy_pie_board_is_refused(tmp_path):
    res = _cli("compare", str(pie_board(tmp_path, toy=True)), "paper:pnp-inversion-paper")
    assert res.exit_code == 2 and "a toy run" in res.output


def test_subset_widens_the_tolerance_by_the_standard_error(tmp_path):
    from pie_bench.report.reference import load_table
    from pie_bench.report.reference_view import side_by_side
    from pie_bench.run.leaderboard import load_leaderboard

    path = pie_board(tmp_path, n=100)
    data = json.loads(path.read_text())
    data["editors"]["ddim_p2p"]["metrics"]["psnr_unedit_part"]["stderr"] = 0.6
    path.write_text(json.dumps(data))
    rows = side_by_side(load_leaderboard(path), load_table("pnp-inversion-paper"))
    psnr = next(r for r in rows if r["editor"] == "ddim_p2p" and r["metric"] == "psnr_unedit_part")
    assert psnr["tolerance"] == pytest.approx(0.11 + 1.2) and not psnr["flagged"]


FIREFLOW_COLUMNS = ["structure_distance", "psnr_unedit_part", "ssim_unedit_part", "clip_similarity_target_image",
                    "clip_similarity_target_image_edit_part"]


def test_fireflow_table4_matches_its_secondary_source():
    """Every number of fireflow-table4 against ../shared/reference/wave2.md §2, the notes it was transcribed
    from (the paper's text was not available); two FireFlow rows told apart by the run's step count."""
    from pie_bench.report.reference import load_table

    t = load_table("fireflow-table4")
    assert t.row_for("fireflow").steps == 8 and t.row_for("fireflow", 15).steps == 15
    assert t.row_for("fireflow", 20).steps == 8  # no row at that count: the first, and notes() says so
    if not WAVE2.is_file():
        pytest.skip(f"{WAVE2} not found (CI places ../shared beside the clone)")
    wave = WAVE2.read_text(encoding="utf-8")
    n = r"(\d+(?:\.\d+)?)"  # a number, not the sentence's full stop
    five = rf"{n}×10⁻³ / {n} / {n} / {n} / {n}"
    patterns = {("rf_inversion", 28): rf"\*\*RF-Inversion\*\*.*?Structure {n}×10⁻³, PSNR {n}, SSIM {n}, "
                                      rf"CLIP {n} / {n}",
                ("rf_solver_edit", 15): r"\*\*RF-Solver-Edit\*\*.*?\(secondary\): " + five,
                ("fireflow", 8): r"\*\*FireFlow\*\*.*?8 steps " + five,
                ("fireflow", 15): r"\*\*FireFlow\*\*.*?15 steps " + five}
    for (editor, steps), pattern in patterns.items():
        numbers = [float(x) for x in re.search(pattern, wave).groups()]
        row = t.row_for(editor, steps)
        assert (row.steps, row.base_model) == (steps, "FLUX.1-dev")
        assert [row.values[c] for c in FIREFLOW_COLUMNS] == numbers, row.method
    assert len(t.rows) == len(patterns)
