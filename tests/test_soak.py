"""The soak at a small size (slow: skipped unless --runslow or PIE_BENCH_SLOW=1; the full size is
benchmarks/soak.py, figures in results/bench/soak.json): a run killed 3 times with SIGKILL and once stopped
with SIGTERM, alternating 1 and 2 processes, ends with exactly the records and leaderboard of an
uninterrupted run."""
from __future__ import annotations

import pytest

from benchmarks import soak


@pytest.mark.slow
def test_small_soak_equals_an_uninterrupted_run(tmp_path):
    f = soak.main(["--samples", "120", "--kills", "3", "--seed", "5", "--work", str(tmp_path)])
    assert (f["kills_sigkill"], f["stops_sigterm"]) == (3, 1)
    assert f["processes_alternated"] == [1, 2, 1, 2, 1]
    assert f["records_compared"] == f["records_expected"] == 120 * 5
    assert f["records_lost"] == f["records_duplicated"] == f["records_unexpected"] == f["records_differing"] == 0
    assert f["leaderboard_equal"] and not f["partial_at_end"] and f["failures_soaked"] == f["failures_reference"] > 0
    sigterm = next(e for e in f["per_launch"] if e["signal"] == "SIGTERM")
    assert sigterm["partial"] and sigterm["lock_free"] and not sigterm["holder_left"]
