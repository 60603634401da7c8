"""The row checks of the run directory's logs (harness/store/logs.py): which JSON objects can be a
point, sample or operator row, what the first problem of one that cannot is called (word for word),
and that reading and quarantining a log use the check and key of that log."""

from __future__ import annotations

import json
import math

import pytest

from harness.store import OPS_LOG, POINTS_LOG, SAMPLES_LOG
from harness.store import columns as C
from harness.store.files import DamagedLine
from harness.store.logs import op_row_problem, point_row_problem, quarantine_log, read_log, sample_row_problem

OK_POINT = {C.HASH: "0123456789abcdef", C.METHOD: "m", C.STATUS: C.OK, C.LAT_MEDIAN: 2.5}
NUMBERS = ["latency_median_ms", "latency_mean_ms", "latency_iqr_ms", "latency_p10_ms", "latency_p90_ms",
           "latency_min_ms", "latency_max_ms", "n_samples", "elapsed_s", "instructions", "instructions_min",
           "instructions_max", "instructions_spread"]


def point(**changes):
    row = {**OK_POINT, **changes}
    return {k: v for k, v in row.items() if v != "<absent>"}


@pytest.mark.parametrize("row", [
    OK_POINT,
    point(latency_median_ms=3),  # an int is a number
    point(status=C.FAILED, latency_median_ms="<absent>"),
    point(status=C.OOM, latency_median_ms=None),
    point(status=C.NAN, latency_median_ms=math.nan),
    point(**dict.fromkeys(NUMBERS[1:], None)),
    point(**dict.fromkeys(NUMBERS[1:], 0)),
    point(stable=True), point(stable=False), point(stable=None),
    point(cpu_other_frac=0.0, cpu_steal_frac=1.0, load_avg_1m=0.0, calls_per_sample=1, gpu_other_procs=0),
    point(cpu_other_frac=1, cpu_steal_frac=0, load_avg_1m=1e9, calls_per_sample=1000, gpu_other_procs=7),
    point(stop_reason=""), point(stop_reason=None), point(stop_reason="max_samples"),
    point(stop_reason="converged"), point(stop_reason="budget"), point(stop_reason="counted"),
    point(error="boom", extra={"anything": [1]}),
])
def test_a_point_row_the_harness_writes_has_no_problem(row):
    assert point_row_problem(row) is None


@pytest.mark.parametrize(("row", "problem"), [
    (point(point_hash="<absent>"), "point_hash is None, not a name"),
    (point(point_hash=""), "point_hash is '', not a name"),
    (point(point_hash=12), "point_hash is 12, not a name"),
    (point(point_hash="<absent>", method="<absent>"), "point_hash is None, not a name"),
    (point(method="<absent>"), "method is None, not a name"),
    (point(method=""), "method is '', not a name"),
    (point(status="<absent>"), "status is None, not one of ok, failed, oom, nan"),
    (point(status="done", latency_median_ms="x"), "status is 'done', not one of ok, failed, oom, nan"),
    (point(latency_median_ms="<absent>"), "an ok point without a latency (latency_median_ms is None)"),
    (point(latency_median_ms=None), "an ok point without a latency (latency_median_ms is None)"),
    (point(latency_median_ms=math.nan), "an ok point without a latency (latency_median_ms is nan)"),
    (point(latency_median_ms=-math.inf), "an ok point without a latency (latency_median_ms is -inf)"),
    (point(latency_median_ms="2.5"), "latency_median_ms is '2.5', not a number"),
    (point(status=C.FAILED, latency_median_ms=True), "latency_median_ms is True, not a number"),
    (point(latency_median_ms=None, stable="yes"),
     "an ok point without a latency (latency_median_ms is None)"),
    (point(stable="yes"), "stable is 'yes', not true, false or null"),
    (point(stable=1), "stable is 1, not true, false or null"),
    (point(stable=0, cpu_other_frac=2.0), "stable is 0, not true, false or null"),
    (point(cpu_other_frac=1.5), "cpu_other_frac is 1.5, not a number in [0.0, 1.0]"),
    (point(cpu_other_frac=-0.1), "cpu_other_frac is -0.1, not a number in [0.0, 1.0]"),
    (point(cpu_other_frac=True), "cpu_other_frac is True, not a number in [0.0, 1.0]"),
    (point(cpu_steal_frac="0.5"), "cpu_steal_frac is '0.5', not a number in [0.0, 1.0]"),
    (point(cpu_steal_frac=1.01), "cpu_steal_frac is 1.01, not a number in [0.0, 1.0]"),
    (point(load_avg_1m=-0.5), "load_avg_1m is -0.5, not a number in [0.0, inf]"),
    (point(load_avg_1m=math.nan), "load_avg_1m is nan, not a number in [0.0, inf]"),
    (point(calls_per_sample=0), "calls_per_sample is 0, not a number in [1, inf]"),
    (point(gpu_other_procs=-1), "gpu_other_procs is -1, not a number in [0, inf]"),
    (point(gpu_other_procs=-1, stop_reason="bored"), "gpu_other_procs is -1, not a number in [0, inf]"),
    (point(stop_reason="bored"), "stop_reason is 'bored', not max_samples, converged, budget, counted"),
    (point(stop_reason=False), "stop_reason is False, not max_samples, converged, budget, counted"),
])
def test_the_first_problem_of_a_point_row_is_named(row, problem):
    assert point_row_problem(row) == problem


@pytest.mark.parametrize("col", NUMBERS)
def test_every_numeric_column_of_a_point_row_holds_a_number(col):
    assert point_row_problem(point(status=C.FAILED, **{col: "1"})) == f"{col} is '1', not a number"
    assert point_row_problem(point(status=C.FAILED, **{col: False})) == f"{col} is False, not a number"
    assert point_row_problem(point(status=C.FAILED, **{col: 1.5})) is None


@pytest.mark.parametrize(("row", "problem"), [
    ({C.HASH: "h", C.SAMPLE: 0, C.DEVICE_MS: 1.5, C.HOST_MS: "not checked", C.INSTRUCTIONS: 10}, None),
    ({C.HASH: "h", C.DEVICE_MS: None, C.INSTRUCTIONS: None}, None),
    ({C.HASH: "h"}, None),
    ({C.DEVICE_MS: 1.0}, "point_hash is None, not a name"),
    ({C.HASH: "", C.DEVICE_MS: "x"}, "point_hash is '', not a name"),
    ({C.HASH: "h", C.DEVICE_MS: "1.0"}, "device_ms is '1.0', not a number"),
    ({C.HASH: "h", C.DEVICE_MS: True, C.INSTRUCTIONS: "x"}, "device_ms is True, not a number"),
    ({C.HASH: "h", C.DEVICE_MS: 1.0, C.INSTRUCTIONS: "12"}, "instructions is '12', not a number"),
])
def test_a_sample_row_has_a_hash_and_numeric_times(row, problem):
    assert sample_row_problem(row) == problem


@pytest.mark.parametrize(("row", "problem"), [
    ({C.HASH: "h", "name": "aten::mm", "self_cpu_us": 0, "cuda_us": 2.5, "calls": 3, "other": -1}, None),
    ({C.HASH: "h", "self_cpu_us": None, "calls": None}, None),
    ({"calls": 1}, "point_hash is None, not a name"),
    ({C.HASH: "h", "self_cpu_us": -0.5}, "self_cpu_us is -0.5, not a number >= 0"),
    ({C.HASH: "h", "cuda_us": "3"}, "cuda_us is '3', not a number >= 0"),
    ({C.HASH: "h", "calls": True}, "calls is True, not a number >= 0"),
    ({C.HASH: "h", "calls": -1, "cuda_us": -1}, "calls is -1, not a number >= 0"),
    ({C.HASH: "h", "us": -1, "calls_total": -1, "us_x": -1}, None),  # neither calls nor ..._us
])
def test_an_operator_row_has_a_hash_and_times_and_calls_that_are_numbers_not_below_zero(row, problem):
    assert op_row_problem(row) == problem


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_read_log_checks_each_log_with_its_own_rows_and_keys(tmp_path):
    points, samples, ops, other = (tmp_path / POINTS_LOG, tmp_path / SAMPLES_LOG, tmp_path / OPS_LOG,
                                   tmp_path / "other.jsonl")
    bad_point = point(status="done")
    write(points, [OK_POINT, bad_point])
    found = []
    assert read_log(points, found) == [OK_POINT]
    assert found == [DamagedLine(points, 2, False, json.dumps(bad_point),
                                 "status is 'done', not one of ok, failed, oom, nan")]
    s0, s1 = {C.HASH: "h", C.SAMPLE: 0, C.DEVICE_MS: 1.0}, {C.HASH: "h", C.SAMPLE: 1, C.DEVICE_MS: 1.0}
    write(samples, [s0, s1, {**s0, C.DEVICE_MS: 2.0}, {C.HASH: "g", C.SAMPLE: 0, C.DEVICE_MS: "x"}])
    found = []
    assert read_log(samples, found) == [s0, s1]
    assert [(d.line, d.reason) for d in found] == [(3, "a repeat of line 1"),
                                                   (4, "device_ms is 'x', not a number")]
    write(ops, [{C.HASH: "h", "calls": 1}, {C.HASH: "h", "calls": 1}, {C.HASH: "h", "calls": -1}])
    found = []
    assert read_log(ops, found) == [{C.HASH: "h", "calls": 1}] * 2  # operator rows may repeat
    assert [(d.line, d.reason) for d in found] == [(3, "calls is -1, not a number >= 0")]
    write(other, [bad_point, bad_point])
    assert read_log(other) == [bad_point, bad_point]  # a log without a check: any JSON object


def test_quarantine_log_moves_the_rows_its_check_and_key_refuse(tmp_path):
    samples = tmp_path / SAMPLES_LOG
    s0 = {C.HASH: "h", C.SAMPLE: 0, C.DEVICE_MS: 1.0}
    write(samples, [s0, {**s0, C.DEVICE_MS: 2.0}, {C.DEVICE_MS: 3.0}, "{torn"])
    samples.write_text(samples.read_text().removesuffix("\n"))
    moved = quarantine_log(samples)
    assert [(d.line, d.reason) for d in moved] == [(2, "a repeat of line 1"),
                                                   (3, "point_hash is None, not a name")]
    assert samples.read_text() == json.dumps(s0) + "\n{torn"
    assert (tmp_path / (SAMPLES_LOG + ".damaged")).read_text() == \
        json.dumps({**s0, C.DEVICE_MS: 2.0}) + "\n" + json.dumps({C.DEVICE_MS: 3.0}) + "\n"
    points = tmp_path / POINTS_LOG
    write(points, [OK_POINT, point(method="")])
    assert [d.reason for d in quarantine_log(points)] == ["method is '', not a name"]
    other = tmp_path / "other.jsonl"
    write(other, [{"a": 1}, {"a": 1}])
    assert quarantine_log(other) == []
