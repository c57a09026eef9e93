"""The typed leaderboard: every committed results/*.json reads (previous schema version included), a board
round-trips through its JSON exactly, and bad versions or shapes are one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pie_bench.core.errors import ResultsError
from pie_bench.report.compare import compare_leaderboards
from pie_bench.run.leaderboard import LEADERBOARD_VERSION, EditorSummary, Leaderboard, MetricStats, load_leaderboard

REPO = Path(__file__).resolve().parent.parent
COMMITTED = sorted((REPO / "results").rglob("*.json"))
BOARDS = [p for p in COMMITTED if json.loads(p.read_text()).get("kind") == "pie_bench.leaderboard"]


@pytest.mark.parametrize("path", BOARDS, ids=[str(p.relative_to(REPO)) for p in BOARDS])
def test_every_committed_leaderboard_reads_and_compares_with_itself(path):
    board = load_leaderboard(path)
    raw = json.loads(path.read_text())
    assert isinstance(board, Leaderboard) and board.schema_version == LEADERBOARD_VERSION
    assert set(board.editors) == set(raw["editors"])
    for name, ed in board.editors.items():
        assert isinstance(ed, EditorSummary) and ed.n_ok == raw["editors"][name]["n_ok"]
        for metric, stats in ed.metrics.items():
            assert isinstance(stats, MetricStats) and stats.n == raw["editors"][name]["metrics"][metric]["n"]
    if raw["schema_version"] == 1:
        assert board.selection == {"recorded": False}
    assert compare_leaderboards(board, board)["n_flagged"] == 0


def test_round_trip_is_exact():
    raw = json.loads(BOARDS[0].read_text())
    board = Leaderboard.from_dict(raw)
    again = Leaderboard.from_dict(board.to_dict())
    assert again == board and again.to_dict() == board.to_dict()
    assert json.loads(json.dumps(board.to_dict())) == board.to_dict()


def test_bad_boards_are_one_line_errors(tmp_path):
    raw = json.loads(BOARDS[0].read_text())
    for bad, match in [({**raw, "schema_version": 99}, "schema version 99"),
                       ({**raw, "kind": "other"}, "not a pie_bench leaderboard"),
                       ({**raw, "editors": {"x": [1, 2]}}, "malformed leaderboard")]:
        path = tmp_path / "b.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(ResultsError, match=match) as info:
            load_leaderboard(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
