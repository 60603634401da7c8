"""Instruction counts: the Callgrind dump bookkeeping, the timer's counted mode, the gate's rule for
counts, and (where valgrind is installed) real counts: identical code counts the same within 0.1 %,
and 5 % more work fails the gate at its 1 % threshold."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest

from harness.errors import RunError
from harness.measure import instructions as I
from harness.measure.timing import (
    MODE_INSTRUCTIONS,
    TIMER_CALLGRIND,
    Timer,
    TimingConfig,
    instruction_columns,
)
from harness.store import RunWriter
from harness.store import columns as C
from reports import stats as S
from reports.compare import compare_runs


def dump_text(n: int) -> bytes:
    return f"version: 1\ncreator: callgrind-3.19.0\npid: 1\ncmd:  python x.py\npart: 1\n\nevents: Ir\n" \
           f"summary: {n}\n\nfn=(1) f\n0 {n}\n\ntotals: {n}\n".encode()


class FakeCallgrind:
    """Writes numbered dumps as Callgrind does: dump i of the process goes to <out>.<i>, holding
    the instructions "executed" while collection was on (here: a number per call of fn)."""

    def __init__(self, out: Path, start: int = 0):
        self.out, self.n, self.collecting, self.counted = out, start, False, 0

    def toggle(self) -> None:
        self.collecting = not self.collecting

    def dump(self) -> None:
        self.toggle()
        self.n += 1
        Path(f"{self.out}.{self.n}").write_bytes(dump_text(self.counted))
        self.counted = 0


def test_the_total_is_read_from_the_summary_line_and_a_dump_without_one_is_refused() -> None:
    assert I.parse_total(dump_text(1234567)) == 1234567
    assert I.parse_total(b"events: Ir\ntotals: 42\n") == 42
    with pytest.raises(ValueError, match="summary"):
        I.parse_total(b"events: Ir\nfn=(1) f\n0 5\n")


def test_each_count_reads_its_own_dump_and_deletes_it(tmp_path: Path) -> None:
    out = tmp_path / "callgrind.out"
    fake = FakeCallgrind(out, start=7)  # dumps numbered after earlier points' (already deleted)
    counter = I.Counter(out, toggle=fake.toggle, dump=fake.dump, control=None)
    costs = iter([1000, 1010, 990])

    def fn() -> str:
        assert fake.collecting  # collection is on only around the calls
        fake.counted += next(costs)
        return "out"

    assert counter.count(fn) == (1000, "out")
    assert counter.count(fn) == (1010, "out")
    assert not fake.collecting
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    assert counter.count(fn, calls=1)[0] == 990


def test_a_wrapped_around_count_is_refused_and_no_dump_at_all_is_named(tmp_path: Path) -> None:
    out = tmp_path / "callgrind.out"
    fake = FakeCallgrind(out)
    counter = I.Counter(out, toggle=fake.toggle, dump=fake.dump, control=None)

    def wrapped() -> None:
        fake.counted = 2**64 - 500

    with pytest.raises(RunError, match="negative count"):
        counter.count(wrapped)
    silent = I.Counter(out, toggle=lambda: None, dump=lambda: None, control=None)
    with pytest.raises(RunError, match="no Callgrind dump appeared"):
        silent.count(lambda: None)


def test_a_counter_outside_callgrind_says_how_counts_are_made(monkeypatch) -> None:
    monkeypatch.delenv(I.OUT_ENV, raising=False)
    with pytest.raises(RunError, match="re-executes itself under valgrind"):
        I.Counter()


def test_instrumentation_is_switched_by_callgrind_control_and_its_failure_is_named(tmp_path: Path) -> None:
    said = tmp_path / "said"
    ok = tmp_path / "ok-control"
    ok.write_text(f"#!/bin/sh\necho \"$@\" >> {said}\necho '  OK.'\n")
    bad = tmp_path / "bad-control"
    bad.write_text("#!/bin/sh\necho 'Error: Callgrind task with PID not found'\nexit 1\n")
    for f in (ok, bad):
        f.chmod(0o755)
    fake = FakeCallgrind(tmp_path / "cg.out")
    counter = I.Counter(tmp_path / "cg.out", toggle=fake.toggle, dump=fake.dump, control=str(ok))
    with counter.instrumented():
        pass
    pid = str(os.getpid())
    assert said.read_text().split("\n")[:2] == [f"-i on {pid}", f"-i off {pid}"]
    counter.control = str(bad)
    with pytest.raises(RunError, match="could not switch Callgrind's instrumentation.*PID not found"):
        counter.instrument(True)


# ---------------------------------------------------------------------------- the timer


class ScriptedCounter:
    """A counter whose counts are given; it records what the timer asked of it."""

    def __init__(self, counts: list[int]):
        self.counts, self.calls, self.instrumented_calls = list(counts), 0, []
        self.on = False

    def instrumented(self):
        import contextlib

        @contextlib.contextmanager
        def cm():
            self.on = True
            yield
            self.on = False
        return cm()

    def count(self, fn, calls: int = 1):
        self.instrumented_calls.append(self.on)
        out = fn()
        return self.counts.pop(0), out


def test_the_timer_counts_min_samples_calls_after_the_warm_up_inside_instrumentation() -> None:
    calls = []
    counter = ScriptedCounter([1000, 1004, 998, 1000])
    cfg = TimingConfig(mode=MODE_INSTRUCTIONS, warmup_n=3, min_samples=4, max_samples=9)
    m = Timer(cfg, counter=counter).measure(lambda: calls.append(1) or len(calls), "cpu")
    assert m.instructions == [1000.0, 1004.0, 998.0, 1000.0]
    assert m.n_warmup == 3 and len(calls) == 7 and m.output == 7
    assert counter.instrumented_calls == [True] * 4
    assert m.timer == TIMER_CALLGRIND and m.stop_reason == C.STOP_COUNTED and len(m.device_ms) == 4
    row = m.summary()
    assert row[C.INSTRUCTIONS] == 1000.0
    assert row[C.INSTRUCTIONS_MIN] == 998.0 and row[C.INSTRUCTIONS_MAX] == 1004.0
    assert row[C.INSTRUCTIONS_SPREAD] == pytest.approx(6 / 1000)
    assert row[C.STABLE] is True  # judged on the counts, not on the (valgrind) times


def test_instruction_columns_are_absent_when_timed_and_their_spread_is_relative_to_the_median() -> None:
    assert instruction_columns([]) == {}
    cols = instruction_columns([10.0, 30.0, 20.0, 20.0])
    assert cols == {C.INSTRUCTIONS: 20.0, C.INSTRUCTIONS_MIN: 10.0, C.INSTRUCTIONS_MAX: 30.0,
                    C.INSTRUCTIONS_SPREAD: 1.0}
    m = Timer(TimingConfig(warmup_n=0, min_samples=3, max_samples=3, min_sample_ms=0)).measure(lambda: 1)
    assert not set(C.INSTRUCTION_COUNTS) & set(m.summary())


def test_counting_on_a_gpu_is_refused() -> None:
    cfg = TimingConfig(mode=MODE_INSTRUCTIONS)
    with pytest.raises(ValueError, match="counts CPU instructions; the point runs on cuda"):
        Timer(cfg, counter=ScriptedCounter([1])).measure(lambda: 1, "cuda")


# ---------------------------------------------------------------------------- the gate's rule


@pytest.mark.parametrize(("ratio", "noise", "verdict"), [
    (1.0, 0.0, S.NO_CHANGE),
    (1.0099, 0.0, S.NO_CHANGE),
    (1.011, 0.0, S.REGRESSION),
    (0.989, 0.0, S.IMPROVEMENT),
    (1.05, 0.001, S.REGRESSION),
    (1.005, 0.004, S.NO_CHANGE),  # 0.5 % + 0.4 % <= 1 %
    (1.008, 0.004, S.CANNOT_JUDGE),  # 0.8 % might be 1.2 %: the noise straddles the threshold
    (1.013, 0.004, S.CANNOT_JUDGE),  # 1.3 % might be 0.9 %
    (1.02, 0.004, S.REGRESSION),  # beyond the threshold at the noise's worst
    (0.98, 0.004, S.IMPROVEMENT),
    (math.nan, 0.0, S.CANNOT_JUDGE),
])
def test_a_count_changed_beyond_threshold_plus_noise_is_a_regression(ratio: float, noise: float,
                                                                     verdict: str) -> None:
    assert S.classify_counts(ratio, noise, 0.01) == verdict


ENV = {"device_kind": "cpu", "torch": "2.14.1", "cpu_model": "Xeon"}


def counted_run(run_dir: Path, counts: dict[str, list[float]], regression: dict[str, Any] | None = None,
                timed: tuple[str, ...] = ()) -> Path:
    """A run whose points counted instructions (``counts``: point hash -> per-call counts); the
    points in ``timed`` were timed instead."""
    doc = {"name": "toy", "workload": "attention", "fixed": {}, "sweep": {"seq_len": [64]},
           "methods": {"sdpa": {}}, "regression": regression or {},
           "parameters": {"workload": ["seq_len"], "common": ["device"], "methods": {"sdpa": []}}}
    w = RunWriter.create(run_dir, {"run_id": run_dir.name, "suite": "toy"}, doc, ENV, {})
    for i, (h, xs) in enumerate(counts.items()):
        row = {C.RUN_ID: run_dir.name, C.SUITE: "toy", C.HASH: h, C.WORKLOAD: "attention", C.METHOD: "sdpa",
               C.STATUS: C.OK, "seq_len": 64 * (i + 1), "device": "cpu", C.LAT_MEDIAN: 1800.0 + i,
               C.N_SAMPLES: len(xs)}
        samples = [{C.RUN_ID: run_dir.name, C.HASH: h, C.SAMPLE: j, C.DEVICE_MS: 1800.0 + j,
                    C.HOST_MS: 1800.0} for j in range(len(xs))]
        if h not in timed:
            lo, hi, mid = min(xs), max(xs), sorted(xs)[len(xs) // 2]
            row.update({C.INSTRUCTIONS: mid, C.INSTRUCTIONS_MIN: lo, C.INSTRUCTIONS_MAX: hi,
                        C.INSTRUCTIONS_SPREAD: (hi - lo) / mid, C.TIMER: TIMER_CALLGRIND})
        w.append(row, samples)
    w.flush_tables()
    return run_dir


def verdicts(result) -> dict[str, str]:
    rows = result.rows[result.rows["kind"] == "instructions"]
    return dict(zip(rows[C.HASH], rows["verdict"]))


def test_counted_runs_are_gated_on_counts_not_on_their_valgrind_times(tmp_path: Path) -> None:
    base = counted_run(tmp_path / "base", {"a": [1_000_000, 1_000_050, 999_980], "b": [5e6, 5e6, 5e6]})
    new = counted_run(tmp_path / "new", {"a": [1_050_000, 1_050_040, 1_049_990], "b": [4.9e6, 4.9e6, 4.9e6]})
    result = compare_runs(base, new)
    assert verdicts(result) == {"a": S.REGRESSION, "b": S.IMPROVEMENT}
    assert set(result.rows["kind"]) == {"instructions"}  # no latency verdict from valgrind's times
    assert result.exit_code == 1
    assert "### Instructions" in result.markdown and "+5.000%" in result.markdown
    same = compare_runs(base, counted_run(tmp_path / "again", {"a": [1_000_020] * 3, "b": [5e6] * 3}))
    assert verdicts(same) == {"a": S.NO_CHANGE, "b": S.NO_CHANGE} and same.exit_code == 0


def test_the_count_threshold_is_one_percent_unless_the_suite_or_the_command_line_says_otherwise(
        tmp_path: Path) -> None:
    base = counted_run(tmp_path / "base", {"a": [1e6] * 3})
    plus2 = {"a": [1.02e6] * 3}
    assert verdicts(compare_runs(base, counted_run(tmp_path / "n1", plus2))) == {"a": S.REGRESSION}
    loose = counted_run(tmp_path / "n2", plus2,
                        regression={"threshold": 0.05, "per_metric": {"instructions": 0.03}})
    assert verdicts(compare_runs(base, loose)) == {"a": S.NO_CHANGE}
    # the latency threshold alone does not loosen the count gate
    lat_only = counted_run(tmp_path / "n3", plus2, regression={"threshold": 0.05})
    assert verdicts(compare_runs(base, lat_only)) == {"a": S.REGRESSION}
    cli = compare_runs(base, counted_run(tmp_path / "n4", plus2), threshold=0.03)
    assert verdicts(cli) == {"a": S.NO_CHANGE}


def test_noisy_counts_near_the_threshold_and_a_timed_side_cannot_be_judged(tmp_path: Path) -> None:
    base = counted_run(tmp_path / "base", {"a": [1e6, 1.004e6, 1.002e6], "b": [1e6] * 3})
    new = counted_run(tmp_path / "new", {"a": [1.011e6, 1.012e6, 1.013e6], "b": [1e6] * 3}, timed=("b",))
    result = compare_runs(base, new)
    assert verdicts(result) == {"a": S.CANNOT_JUDGE, "b": S.CANNOT_JUDGE}
    notes = dict(zip(result.rows[C.HASH], result.rows["note"]))
    assert "vary by" in notes["a"] and "threads: 1" in notes["a"]
    assert "new timed this point" in notes["b"]
    assert result.exit_code == 2


# ---------------------------------------------------------------------------- real counts


@pytest.mark.slow
def test_real_counts_repeat_within_a_tenth_of_a_percent_and_five_percent_more_work_fails_the_gate(
        real_counted_run, tmp_path: Path) -> None:
    """On the shared counted run (tests/conftest.py): SDPA with 20 heads counted 6 times, and 21."""
    from harness.store import load

    assert real_counted_run.exit_code == 0, real_counted_run.stderr
    data = load(real_counted_run.out)
    heads = dict(zip(data.points[C.HASH], data.points["heads"]))
    counts: dict[int, list[float]] = {}
    for _, s in data.samples.sort_values(C.SAMPLE).iterrows():
        counts.setdefault(int(heads[s[C.HASH]]), []).append(float(s[C.INSTRUCTIONS]))
    first, again, slower = counts[20][:3], counts[20][3:], counts[21][:3]
    med = {"base": sorted(first)[1], "again": sorted(again)[1], "slower": sorted(slower)[1]}
    assert abs(med["again"] / med["base"] - 1) < 0.001
    assert 1.03 < med["slower"] / med["base"] < 1.07  # 21 heads instead of 20, plus the fixed overhead
    base = counted_run(tmp_path / "base", {"p": first})
    same = compare_runs(base, counted_run(tmp_path / "aa", {"p": again}))
    assert verdicts(same) == {"p": S.NO_CHANGE}
    more = compare_runs(base, counted_run(tmp_path / "slow", {"p": slower}))
    assert verdicts(more) == {"p": S.REGRESSION} and more.exit_code == 1


def test_a_counted_run_reports_its_counts_first_and_no_speedup_from_valgrind_times(tmp_path: Path,
                                                                                    capsys) -> None:
    from harness.store import load
    from reports.summary import report
    from reports.tables import add_speedup

    run = counted_run(tmp_path / "r", {"a": [1e7] * 3, "b": [2e7] * 3})
    data = load(run)
    doc = {**data.suite, "reference": "sdpa"}
    assert add_speedup(data.points, doc)[C.SPEEDUP].isna().all()  # the times are valgrind's
    timed = data.points.drop(columns=list(C.INSTRUCTION_COUNTS))
    assert add_speedup(timed, doc)[C.SPEEDUP].notna().all()  # the same rows, timed, get one
    report(run)
    out = capsys.readouterr().out
    assert "| instructions" in out and "10,000,000" in out and "20,000,000" in out
    assert "wall times under valgrind (not a native time)" in out


def test_a_counted_run_draws_no_latency_figure_and_says_why(tmp_path: Path) -> None:
    from harness.store import load
    from reports.plots import nothing_to_plot, plot_run

    run = counted_run(tmp_path / "r", {"a": [1e7] * 3, "b": [2e7] * 3})
    assert plot_run(run) == []
    assert "wall times under valgrind" in nothing_to_plot(load(run))
