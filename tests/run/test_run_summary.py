"""The line a run ends with counts its points by status and names how many were measured unstably."""

from __future__ import annotations

from pathlib import Path

from harness.run.summary import RunSummary
from harness.store import columns as C


def test_the_run_line_counts_unstable_points_and_says_where_they_are_named():
    s = RunSummary(run_dir=Path("runs/x"), run_id="x", total=4, skipped=0)
    for stable in (True, False, None):
        s.record({C.STATUS: C.OK, C.STABLE: stable})
    s.record({C.STATUS: C.FAILED, C.STABLE: False})  # a failed point has no timing to trust or not
    assert s.counts == {C.OK: 3, C.FAILED: 1} and s.unstable == 1
    assert s.line() == ("4/4 points run: 1 failed, 3 ok (1 measured unstably: their timings may not repeat; "
                        "the report names them). Results: runs/x")


def test_a_run_without_unstable_points_says_nothing_about_them():
    s = RunSummary(run_dir=Path("runs/x"), run_id="x", total=1, skipped=0)
    s.record({C.STATUS: C.OK, C.STABLE: True})
    assert "unstabl" not in s.line()
