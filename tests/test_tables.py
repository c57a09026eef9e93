"""Terminal tables fit the console, label toy numbers truthfully and keep bounds apart; ``--limit``
spreads over the edit categories.

The boards are the committed ones (``results/*.json``: ShapesEdit on trained models with two toy-weight
metrics, and the smoke set on toy backbones) plus a synthetic one with many long-named metrics.
"""
from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from rich.console import Console

from pie_bench.report.html_tables import leaderboard_table
from pie_bench.report.model import board_view
from pie_bench.report.tables import display_name, print_leaderboard
from pie_bench.run.leaderboard import load_leaderboard

REPO = Path(__file__).resolve().parent.parent
BOARDS = {name: REPO / "results" / f"{name}.json" for name in ("shapes", "smoke-toy")}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def render(board, width: int, **kw) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=False, color_system=None, highlight=False)
    print_leaderboard(board, console, **kw)
    return [ANSI.sub("", line) for line in out.getvalue().splitlines()]


def many_metrics_board() -> dict:
    """shapes.json with ten more metrics under long names: wider than any terminal."""
    board = json.loads(BOARDS["shapes"].read_text())
    for i in range(10):
        name = f"a_rather_long_metric_name_{i}"
        board["metric_info"][name] = {"scale": 1.0, "higher_is_better": bool(i % 2)}
        for ed in board["editors"].values():
            ed["metrics"][name] = {"mean": 1234.5678 * (i + 1), "stderr": 12.3, "n": ed["n_ok"],
                                   "higher_is_better": bool(i % 2)}
    return board


def data_rows(lines: list[str], editor: str) -> list[str]:
    return [ln for ln in lines if re.match(rf"^\s*{re.escape(editor)}\s", ln)]


@pytest.mark.parametrize("width", [80, 100, 120])
@pytest.mark.parametrize("source", ["shapes", "smoke-toy", "many"])
@pytest.mark.parametrize("wide", [False, True])
def test_tables_fit_the_console_one_line_per_row(source, width, wide):
    board = many_metrics_board() if source == "many" else load_leaderboard(BOARDS[source])
    view = board_view(board)
    lines = render(board, width, wide=wide)
    too_long = [ln for ln in lines if len(ln.rstrip()) > width]
    assert not too_long, "\n".join(too_long)
    n_cats = len(view.categories)
    for name, ed in view.editors.items():
        rows = data_rows(lines, name)
        # compact: one overall row and one per category; wide: one per part of each
        parts_overall = sum(1 for ln in lines if re.search(r"— all categories( \(\d+/\d+\))?\s*", ln)
                            and "per edit" not in ln)
        parts_cat = sum(1 for ln in lines if "— per edit category" in ln)
        expected = parts_overall + n_cats * parts_cat
        assert len(rows) == expected, (name, rows)
        # every row carries its numbers on the same line (nothing wrapped): its sample count follows the name
        assert all(re.match(rf"^\s*{re.escape(name)}\s+\d+", r) for r in rows), rows
    if wide:  # every metric is shown somewhere
        text = "\n".join(lines)
        assert text.count("p95") == 1
        assert all(display_name(m) in text for m in view.metrics.values())


def test_compact_columns_labels_and_se_on_shapes():
    board = load_leaderboard(BOARDS["shapes"])
    lines = render(board, 120)
    text = "\n".join(lines)
    head = next(i for i, ln in enumerate(lines) if "all categories" in ln)
    assert "TOY MODELS" not in lines[head]  # ShapesEdit's editors run on the trained models
    # the metric's label, not its id; the toy-weight columns are marked and named once below the table
    assert "Attr acc" in text and "gt_attribute_accuracy" not in text
    assert "LPIPS†" in text and "PSNR†" not in text
    footnote = next(ln for ln in lines if ln.startswith("†"))
    assert "LPIPS" in footnote and "Attr acc" not in footnote
    # n once per row, ± in the narrow form, the editor's own mean on its line
    ddim = data_rows(lines, "ddim_p2p")[0]
    assert not any("(n=" in r for name in board.editors for r in data_rows(lines, name))
    assert re.search(r"\b100\s+80\.00±\d", ddim), ddim
    assert any(ln.startswith("PSNR, LPIPS: over the samples where defined (n=78") for ln in lines)
    # at 80 columns the standard errors give way before any key column does
    narrow = render(board, 80, per_category=False)
    # (the 25-character direct_inversion_masactrl then leaves room for four of the five: the last one goes)
    assert "±" not in "\n".join(data_rows(narrow, "ddim_p2p"))
    assert all(len(ln) <= 80 for ln in narrow) and "Attr acc" in "\n".join(narrow)
    head = "\n".join(narrow[:6])
    assert "GT PSNR" in head and "CLIP Edited" not in head  # dropped from the table, named in the footnote
    assert any("CLIP Edited" in ln and "--wide" in ln for ln in narrow)


def test_toy_headline_only_when_the_editors_are_toy():
    smoke = load_leaderboard(BOARDS["smoke-toy"])
    assert all(e.toy for e in smoke.editors.values() if not e.bound)
    assert "TOY MODELS" in render(smoke, 120)[0]
    mixed = copy.deepcopy(json.loads(BOARDS["shapes"].read_text()))
    mixed["editors"]["ip2p"]["toy"] = True
    lines = render(mixed, 120, per_category=False)
    assert "TOY MODELS" not in lines[0] and "marked toy" in lines[0]
    assert "(toy)" in data_rows(lines, "ip2p")[0] and "(toy)" not in data_rows(lines, "ddim_p2p")[0]


def test_bounds_come_last_and_are_never_best():
    board = json.loads(BOARDS["shapes"].read_text())
    # a bound listed first in the file still comes last
    board["editors"] = {"blank": board["editors"].pop("blank"), **board["editors"]}
    bounds = ["identity", "oracle", "blank"]
    lines = render(board, 120, per_category=False)
    order = [name for ln in lines for name in board["editors"] if re.match(rf"^\s*{name}\s", ln)]
    assert sorted(order[-3:]) == sorted(bounds) and not set(order[:-3]) & set(bounds), order
    assert any("bounds (never ranked)" in ln and "blank = chance floor" in ln for ln in lines)
    table = leaderboard_table(board_view(board))
    best = {r.name: [c for c in r.cells if c.best] for r in table.rows}
    assert not any(best[b] for b in bounds)
    # identity's and the oracle's perfect backgrounds would otherwise be best; among the methods someone is
    psnr = [m.name for m in table.metrics].index("psnr_unedit_part")
    assert any(r.cells[psnr].best for r in table.rows if r.name not in bounds)
    assert sorted(r.name for r in table.rows[-3:]) == sorted(bounds)


# ---------------------------------------------------------------------------------------------
# --limit spreads over the categories


def pie_folder(root: Path, per_category: int = 5) -> Path:
    """A PIE-format folder in PIE-Bench's order (ids sorted by category), ``per_category`` per type."""
    from pie_bench.datasets.smoke import MAPPING_FILE, build_smoke_image

    smoke = json.loads(MAPPING_FILE.read_text())
    entry = next(iter(smoke.values()))
    (root / "annotation_images").mkdir(parents=True)
    Image.fromarray(build_smoke_image(entry["image_path"])).save(root / "annotation_images" / entry["image_path"])
    mapping = {f"{cat}{i:011d}": {**entry, "editing_type_id": str(cat)} for cat in range(10) for i in range(per_category)}
    (root / "mapping_file.json").write_text(json.dumps(mapping))
    return root


def test_cli_limit_covers_every_category(tmp_path):
    from click.testing import CliRunner

    import cli

    data = pie_folder(tmp_path / "pie")
    for mode, cats in (("spread", set(map(str, range(10)))), ("first", {"0", "1"})):
        out = tmp_path / mode
        args = ["bench", "--data", str(data), "--editors", "identity", "--metrics", "mse_unedit_part", "--limit", "10",
                "--no-progress", "--no-report", "--out", str(out)]
        if mode == "first":
            args += ["--limit-mode", "first"]
        res = CliRunner().invoke(cli.cli, args)
        assert res.exit_code == 0, res.output
        board = json.loads((out / "leaderboard.json").read_text())
        assert set(board["editors"]["identity"]["per_category"]) == cats
        assert board["editors"]["identity"]["n_ok"] == 10
        assert board["selection"]["limit"] == 10 and board["selection"]["limit_mode"] == mode


@settings(max_examples=200, deadline=None, derandomize=True)
@given(cats=st.lists(st.integers(0, 9), max_size=60), limit=st.integers(0, 70))
def test_spread_limit_is_balanced_and_keeps_order(cats, limit):
    from pie_bench.core.sample import Sample
    from pie_bench.datasets.pie import spread_limit

    samples = [Sample(id=f"{c}{i:011d}", edit_type=c, source_prompt_raw="a", target_prompt_raw="b", mask=None)
               for i, c in enumerate(cats)]
    got = spread_limit(samples, limit)
    assert len(got) == min(limit, len(samples))
    index = {s.id: i for i, s in enumerate(samples)}
    assert [index[s.id] for s in got] == sorted(index[s.id] for s in got)  # dataset order
    taken = {c: sum(1 for s in got if s.edit_type == c) for c in set(cats)}
    available = {c: cats.count(c) for c in set(cats)}
    # each category gives its first samples; one not exhausted has at least as many as any other minus one
    for c in taken:
        assert [s.id for s in got if s.edit_type == c] == [s.id for s in samples if s.edit_type == c][:taken[c]]
    open_cats = [c for c in taken if taken[c] < available[c]]
    if open_cats:
        assert max(taken.values()) - min(taken[c] for c in open_cats) <= 1
