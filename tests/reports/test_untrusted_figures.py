"""Figures that say when not to trust them: an efficiency above the recorded peak says the peak is
wrong (hides the fractions of its device, dtype and threads, keeps the achieved rates) instead of
printing 172 %; points measured unstably are marked and named with their reason."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from toy_runs import make_run

from harness.store import POINTS_LOG, load
from harness.store import columns as C
from reports import tables as T
from reports.parts import gather, hide_impossible_efficiency
from reports.plots import overview, plot_data, uncertain_order
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


def with_verdicts(run_dir, unstable: dict[str, str]):
    """Mark the toy run's ok rows stable, except those whose hash is in ``unstable`` (hash -> why)."""
    log = run_dir / POINTS_LOG
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    for r in rows:
        if r[C.STATUS] == C.OK:
            r[C.STABLE] = r[C.HASH] not in unstable
            r[C.UNSTABLE_WHY] = unstable.get(r[C.HASH], "")
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def test_unstable_points_are_marked_in_every_table_and_named_with_their_reason(tmp_path, capsys):
    run = with_verdicts(make_run(tmp_path / "run"), {"httm-256-0.5": "spread: IQR 35% of the median"})
    report(run)
    out, err = capsys.readouterr()
    marked = [line for line in out.splitlines() if " !" in line and line.startswith("|")]
    assert len(marked) == 1 and "256" in marked[0] and "httm" in marked[0]
    assert "warning: 1 of 6 points were measured unstably (httm#2 seq_len=256: spread: IQR 35% of the " \
           "median)" in err and "timing.budget_s" in err
    md = (run / "report" / "report.md").read_text()
    assert md.count(" !") >= 1 and "measured unstably" in md
    assert "measured unstably" in (run / "report" / "report.html").read_text()


def test_stable_points_and_points_too_few_to_judge_are_not_marked(tmp_path, capsys):
    run = with_verdicts(make_run(tmp_path / "run"), {})
    rows = [json.loads(line) for line in (run / POINTS_LOG).read_text().splitlines()]
    rows[0][C.STABLE] = None  # too few samples: no verdict
    (run / POINTS_LOG).write_text("".join(json.dumps(r) + "\n" for r in rows))
    report(run)
    out, err = capsys.readouterr()
    assert " !" not in out and "unstably" not in err


@pytest.mark.parametrize("with_accuracy", [True, False])  # the scatter, or the bars without a metric
def test_the_overview_figure_rings_or_hatches_the_unstable_points(tmp_path, with_accuracy):
    run = load(with_verdicts(make_run(tmp_path / "run"), {"httm-256-0.5": "spread: IQR 35% of the median"}))
    if not with_accuracy:
        run.metrics = {}
    pts = T.add_speedup(run.points, run.suite)
    pts[T.VARIANT] = T.variants(pts, run.suite)[0]
    fig = overview(run, pts[pts[C.STATUS] == C.OK])
    if with_accuracy:
        rings = [c for ax in fig.axes for c in ax.collections if c.get_label() == "unstable (!)"]
        assert len(rings) == 1 and len(rings[0].get_offsets()) == 1
    else:
        ticks = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
        hatched = [p for ax in fig.axes for p in ax.patches if p.get_hatch()]
        assert [t for t in ticks if t.endswith(" !")] == ["httm#2 !"] and len(hatched) == 1
    plt.close(fig)


def test_every_speedup_carries_its_bootstrap_interval_in_the_tables(tmp_path, capsys):
    run = load(make_run(tmp_path / "run"))
    s = gather(run).summary
    other = s[s[C.METHOD] != "sdpa"]
    assert (other[T.SPEEDUP_LOW] <= other[C.SPEEDUP]).all()
    assert (other[C.SPEEDUP] <= other[T.SPEEDUP_HIGH]).all()
    assert (other[T.SPEEDUP_HIGH] > other[T.SPEEDUP_LOW]).all()  # lognormal jitter: a real width
    assert (s.loc[s[C.METHOD] == "sdpa", [T.SPEEDUP_LOW, T.SPEEDUP_HIGH]] == 1.0).all().all()
    report(run.path)
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| httm") and "256" in line)
    assert "[" in row and "]" in row


def test_the_interval_is_of_the_reference_over_the_point_not_the_other_way_round(tmp_path):
    run_dir = make_run(tmp_path / "run", with_failure=False)
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    pts = load(run_dir).points.set_index(C.HASH)
    for s in samples:  # the reference takes 4 ms a call, everything else 2 ms: a speedup of exactly 2
        s[C.DEVICE_MS] = 4.0 if pts.at[s[C.HASH], C.METHOD] == "sdpa" else 2.0
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    out = T.add_speedup(load(run_dir).points, load(run_dir).suite, load(run_dir).samples)
    httm = out[out[C.METHOD] == "httm"]
    assert (httm[T.SPEEDUP_LOW] == 2.0).all() and (httm[T.SPEEDUP_HIGH] == 2.0).all()


def test_the_overview_draws_the_speedup_intervals_as_error_bars(tmp_path):
    run = load(make_run(tmp_path / "run"))
    pts = T.add_speedup(run.points, run.suite, run.samples)
    pts[T.VARIANT] = T.variants(pts, run.suite)[0]
    fig = overview(run, pts[pts[C.STATUS] == C.OK])
    bars = [c for ax in fig.axes for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert bars and all(c.has_xerr for c in bars)
    plt.close(fig)


def test_front_points_whose_speedup_intervals_overlap_a_neighbours_are_marked_uncertain():
    front = pd.DataFrame({C.SPEEDUP: [1.0, 1.5, 3.0, 3.1],
                          T.SPEEDUP_LOW: [1.0, 1.4, 2.9, 3.0], T.SPEEDUP_HIGH: [1.0, 1.6, 3.05, 3.2]},
                         index=[10, 11, 12, 13])
    assert uncertain_order(front, C.SPEEDUP) == {10: False, 11: False, 12: True, 13: True}
    assert not any(uncertain_order(front.drop(columns=[T.SPEEDUP_LOW, T.SPEEDUP_HIGH]), C.SPEEDUP).values())


def test_the_speedup_curves_carry_the_intervals_as_error_bars(tmp_path):
    run = load(make_run(tmp_path / "run"))
    paths = plot_data(run, tmp_path / "plots", formats=("svg",))
    assert any(p.name == "speedup_vs_seq_len.svg" for p in paths)
    svg = (tmp_path / "plots" / "speedup_vs_seq_len.svg").read_text()
    assert svg.count('id="LineCollection_') >= 1  # matplotlib draws error bars as a line collection
