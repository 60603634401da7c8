"""No impossible figure is printed: an efficiency above the recorded peak says the peak is wrong
(hides the fractions of its device, dtype and threads, keeps the achieved rates) instead of
printing 172 %."""

from __future__ import annotations

import json

import pytest
from toy_runs import make_run

from harness.store import POINTS_LOG, load
from harness.store import columns as C
from reports.parts import gather, hide_impossible_efficiency
from reports.summary import report


def with_efficiency(run_dir, frac_by_method: dict[str, float], threads_by_method=None):
    """Give the toy run's ok rows ``eff_flop_frac`` (per method) and ``eff_tflop_s`` columns."""
    log = run_dir / POINTS_LOG
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    for r in rows:
        if r[C.STATUS] == C.OK:
            r["eff_flop_frac"] = frac_by_method[r[C.METHOD]]
            r["eff_tflop_s"] = 0.123 if r[C.METHOD] == "httm" else 0.0456
            r[C.THREADS] = (threads_by_method or {}).get(r[C.METHOD], 2)
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def test_a_fraction_above_one_hides_the_fractions_and_says_the_peak_is_too_low(tmp_path, capsys):
    run = with_efficiency(make_run(tmp_path / "run"), {"sdpa": 0.61, "httm": 1.72})
    report(run)
    out, err = capsys.readouterr()
    assert "efficiency above the recorded peak: eff_flop_frac reached 1.72 (172%) at device cpu, dtype " \
           "float32, threads 2" in err
    assert "1.72" not in out.split("Efficiency")[1] and "0.61" not in out.split("Efficiency")[1]
    assert "0.123" in out and "0.0456" in out  # the achieved rates stay
    md = (run / "report" / "report.md").read_text()
    assert "**warning**: efficiency above the recorded peak" in md and "172%" not in md.split("warning")[0]
    assert "efficiency above the recorded peak" in (run / "report" / "report.html").read_text()


def test_only_the_group_whose_peak_is_wrong_loses_its_fractions(tmp_path):
    run_dir = with_efficiency(make_run(tmp_path / "run"), {"sdpa": 0.61, "httm": 1.5},
                              threads_by_method={"sdpa": 1, "httm": 2})
    parts = gather(load(run_dir))
    s = parts.summary
    assert s.loc[s[C.METHOD] == "sdpa", "eff_flop_frac"].tolist() == [0.61, 0.61]
    assert s.loc[s[C.METHOD] == "httm", "eff_flop_frac"].isna().all()
    assert len(parts.notes) == 1 and "threads 2" in parts.notes[0] and "threads 1" not in parts.notes[0]


@pytest.mark.parametrize("frac", [1.0, 0.99, float("nan")])
def test_fractions_up_to_one_are_shown_as_measured(tmp_path, frac):
    run = load(with_efficiency(make_run(tmp_path / "run"), {"sdpa": frac, "httm": 0.5}))
    parts = gather(run)
    assert parts.notes == [] and (parts.summary["eff_flop_frac"] <= 1).sum() >= 4 - (frac != frac) * 2
    assert hide_impossible_efficiency(parts.summary, run)[1] == []
