"""The machine's load on record: /proc/stat and /proc/loadavg read into the host-load columns, a
point timed under load named at the top of its report and in compare's warnings."""

from __future__ import annotations

import json
import os
import time

import pytest
from fake_suites import fake_suite
from toy_runs import make_run

from harness.measure.load import LoadWindow, read_cpu_times, read_load_avg, under_load
from harness.run.options import RunOptions
from harness.run.runner import run_suite
from harness.store import POINTS_LOG, load
from harness.store import columns as C
from reports.compare import compare_runs
from reports.summary import report

HZ = os.sysconf("SC_CLK_TCK")


def write_stat(path, user, system, idle, steal=0, iowait=0):
    """A /proc/stat whose aggregate cpu line holds these tick counts (and a per-CPU line after it)."""
    path.write_text(f"cpu  {user} 0 {system} {idle} {iowait} 0 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")


def test_cpu_times_are_read_in_seconds_from_the_aggregate_line(tmp_path):
    stat = tmp_path / "stat"
    write_stat(stat, user=300, system=100, idle=500, steal=50, iowait=50)
    t = read_cpu_times(stat)
    assert (t.busy_s, t.steal_s, t.total_s) == pytest.approx((400 / HZ, 50 / HZ, 1000 / HZ))
    assert read_cpu_times(tmp_path / "missing") is None


def test_other_processes_share_is_busy_time_minus_this_processes_own_over_the_total(tmp_path):
    stat, loadavg = tmp_path / "stat", tmp_path / "loadavg"
    loadavg.write_text("2.50 1.00 0.50 3/200 12345\n")
    write_stat(stat, user=1000, system=0, idle=1000)
    w = LoadWindow(stat, loadavg)
    w.start()
    # 2 s of all CPUs' time passed (200 ticks at 100 Hz): 1.5 s busy, of which 0.5 s ours, 0.1 s stolen
    write_stat(stat, user=1000 + 1.5 * HZ, system=0, idle=1000 + 0.4 * HZ, steal=0.1 * HZ)
    cols = w.columns(own_cpu_s=0.5)
    assert cols[C.LOAD_AVG_1M] == 2.5
    assert cols[C.CPU_OTHER_FRAC] == pytest.approx(1.0 / 2.0)
    assert cols[C.CPU_STEAL_FRAC] == pytest.approx(0.1 / 2.0)
    assert under_load(cols)


def test_a_quiet_window_is_not_under_load_and_a_too_short_one_has_no_shares(tmp_path):
    stat, loadavg = tmp_path / "stat", tmp_path / "loadavg"
    loadavg.write_text("0.10 0.10 0.10 1/100 1\n")
    write_stat(stat, user=0, system=0, idle=0)
    w = LoadWindow(stat, loadavg)
    w.start()
    write_stat(stat, user=0.95 * HZ, system=0, idle=1.05 * HZ)
    quiet = w.columns(own_cpu_s=0.9)  # all the busy time but 0.05 s was ours
    assert quiet[C.CPU_OTHER_FRAC] == pytest.approx(0.025) and not under_load(quiet)
    w.start()
    write_stat(stat, user=0.95 * HZ + 1, system=0, idle=1.05 * HZ + 1)  # 20 ms: under the minimum
    assert w.columns(own_cpu_s=0.0)[C.CPU_OTHER_FRAC] is None


def test_the_real_proc_files_give_plausible_readings():
    if read_cpu_times() is None:
        pytest.skip("no /proc/stat here")
    assert read_load_avg() >= 0
    w = LoadWindow()
    w.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < 0.4:  # this thread busy for 0.4 s
        pass
    row = w.columns(time.process_time() - cpu0)
    assert set(row) == set(C.HOST_LOAD) and row[C.LOAD_AVG_1M] >= 0
    assert 0.0 <= row[C.CPU_OTHER_FRAC] <= 1.0 and 0.0 <= row[C.CPU_STEAL_FRAC] <= 1.0


def test_every_point_records_the_load_over_its_whole_run(tmp_path, fake_workload):
    run_suite(fake_suite("methods: {plain: {}}\n"), tmp_path / "run", RunOptions(progress=False))
    row = load(tmp_path / "run").points.iloc[0]
    assert row[C.LOAD_AVG_1M] >= 0 and C.CPU_OTHER_FRAC in row.index


def loaded(run_dir, other_by_method: dict[str, float]):
    log = run_dir / POINTS_LOG
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    for r in rows:
        if r[C.STATUS] == C.OK:
            r.update({C.CPU_OTHER_FRAC: other_by_method[r[C.METHOD]], C.CPU_STEAL_FRAC: 0.0,
                      C.LOAD_AVG_1M: 3.2})
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def test_a_run_measured_under_load_says_so_first_in_its_report(tmp_path, capsys):
    run = loaded(make_run(tmp_path / "run"), {"sdpa": 0.05, "httm": 0.63})
    report(run)
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith("warning: measured under load: 4 of 7 points were timed while other work ran")
    assert "other processes used up to 63% of the CPU" in first and "load average up to 3.2" in first
    assert "measured under load" in (run / "report" / "report.md").read_text()


def test_compare_warns_when_either_side_was_under_load(tmp_path):
    base = make_run(tmp_path / "base")
    new = loaded(make_run(tmp_path / "new"), {"sdpa": 0.5, "httm": 0.5})
    result = compare_runs(base, new)
    assert any(w.startswith(f"new run {new}: measured under load") for w in result.warnings)
    assert not any(w.startswith(f"base run {base}: measured under load") for w in result.warnings)
    assert "measured under load" in result.markdown


def test_a_quiet_run_does_not_cry_wolf(tmp_path, capsys):
    run = loaded(make_run(tmp_path / "run"), {"sdpa": 0.02, "httm": 0.19})
    report(run)
    assert "under load" not in capsys.readouterr().err


def test_another_process_on_the_gpu_puts_a_run_under_load(tmp_path, capsys):
    log = make_run(tmp_path / "run") / POINTS_LOG
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    rows[0][C.GPU_OTHER_PROCS] = 1
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report(tmp_path / "run")
    assert "measured under load: 1 of 7 points" in capsys.readouterr().err
    assert "up to 1 other process(es) on the GPU" in (tmp_path / "run" / "report" / "report.md").read_text()


def test_a_point_whose_instructions_were_counted_is_never_under_load():
    loaded = {C.CPU_OTHER_FRAC: 0.6, C.CPU_STEAL_FRAC: 0.0}
    assert under_load(loaded)
    assert not under_load({**loaded, C.INSTRUCTIONS: 1.2e7})  # a count does not depend on the neighbours
    assert under_load({**loaded, C.INSTRUCTIONS: float("nan")})  # a timed point in a mixed frame
