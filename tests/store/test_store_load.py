"""Loading a run directory (harness/store/load.py): the tables come from the logs (committed points
only, the latest profile of each), from the parquet exports where a log was lost, with the identity
columns always there and mixed-type columns made parquet-safe; a missing or damaged resolved suite is
refused naming the file and what to do."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
import yaml

from harness.store import (
    ENV_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    OPS_LOG,
    POINTS_FILE,
    POINTS_LOG,
    SAMPLES_FILE,
    SAMPLES_LOG,
    SUITE_FILE,
    RunDirError,
    load,
    read_ops,
    read_suite_file,
    read_tables,
)
from harness.store import columns as C
from harness.store.files import DamagedLine
from harness.store.load import _points_frame

SAMPLE_COLUMNS = ["run_id", "point_hash", "sample", "device_ms", "host_ms"]
IDENTITY = ["run_id", "suite", "point_hash", "workload", "method", "preset", "status", "error", "started_at",
            "elapsed_s"]
FIX = ("restore it from a copy of the run, or resume the run (`harness run SUITE --resume RUN` writes it "
       "again from the suite)")


def exactly(message: str) -> str:
    """A ``match=`` pattern that accepts ``message`` and nothing else."""
    return "^" + re.escape(message) + "$"


def values(df):
    """The rows of a table as lists, None for a missing value (NaN or None)."""
    return [[None if pd.isna(v) else v for v in row] for row in df.values.tolist()]


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def pt(h, status=C.OK, **more):
    return {C.HASH: h, C.METHOD: "m", C.STATUS: status, C.LAT_MEDIAN: 1.0, **more}


def smp(h, i, ms=1.0, **more):
    return {C.RUN_ID: "r", C.HASH: h, C.SAMPLE: i, C.DEVICE_MS: ms, C.HOST_MS: ms, **more}


def test_read_tables_reads_the_logs_keeping_samples_of_committed_points_only(tmp_path):
    write(tmp_path / POINTS_LOG, [pt("a"), pt("b", C.FAILED), "not a row"])
    write(tmp_path / SAMPLES_LOG, [smp("a", 0), smp("c", 0), smp("b", 0, 2.0), smp("a", 0, 3.0)])
    pd.DataFrame([pt("zzz")]).to_parquet(tmp_path / POINTS_FILE)  # a stale export: not read
    found = []
    points, samples = read_tables(tmp_path, found)
    assert list(points[C.HASH]) == ["a", "b"]
    assert list(points.columns) == [C.HASH, C.METHOD, C.STATUS, C.LAT_MEDIAN, "run_id", "suite", "workload",
                                    "preset", "error", "started_at", "elapsed_s"]
    assert points[C.RUN_ID].tolist() == [None, None]
    assert samples.to_dict("records") == [smp("a", 0), smp("b", 0, 2.0)]
    assert list(samples.columns) == SAMPLE_COLUMNS
    assert [(d.path.name, d.line, d.reason) for d in found] == [
        (POINTS_LOG, 3, "not a JSON row"), (SAMPLES_LOG, 4, "a repeat of line 1")]
    assert read_tables(str(tmp_path))[1].to_dict("records") == [smp("a", 0), smp("b", 0, 2.0)]


def test_read_tables_adds_the_instructions_column_when_a_sample_counted_them(tmp_path):
    write(tmp_path / POINTS_LOG, [pt("a")])
    write(tmp_path / SAMPLES_LOG, [smp("a", 0), smp("a", 1, instructions=100)])
    _, samples = read_tables(tmp_path)
    assert list(samples.columns) == ["run_id", "point_hash", "sample", "device_ms", "host_ms", "instructions"]
    assert samples["instructions"].isna().tolist() == [True, False] and samples["instructions"][1] == 100
    write(tmp_path / SAMPLES_LOG, [smp("b", 0, instructions=100), smp("a", 0)])  # counted by an orphan only
    assert list(read_tables(tmp_path)[1].columns) == SAMPLE_COLUMNS


def test_without_logs_the_parquet_exports_are_read(tmp_path):
    pd.DataFrame([pt("a"), pt("b")]).to_parquet(tmp_path / POINTS_FILE)
    points, samples = read_tables(tmp_path)
    assert list(points[C.HASH]) == ["a", "b"]
    assert list(points.columns) == [C.HASH, C.METHOD, C.STATUS, C.LAT_MEDIAN]
    assert samples.empty and list(samples.columns) == SAMPLE_COLUMNS
    pd.DataFrame([smp("a", 0), smp("x", 0)]).to_parquet(tmp_path / SAMPLES_FILE)
    assert read_tables(tmp_path)[1].to_dict("records") == [smp("a", 0), smp("x", 0)]  # the export as it is


def test_a_lost_samples_log_is_read_from_its_export_for_the_committed_points(tmp_path):
    write(tmp_path / POINTS_LOG, [pt("b")])
    pd.DataFrame([smp("a", 0), smp("b", 0), smp("b", 1)]).to_parquet(tmp_path / SAMPLES_FILE)
    points, samples = read_tables(tmp_path)
    assert list(points[C.HASH]) == ["b"]
    assert samples.to_dict("records") == [smp("b", 0), smp("b", 1)] and list(samples.index) == [0, 1]


def test_no_logs_and_no_exports_give_empty_tables_with_their_columns(tmp_path):
    points, samples = read_tables(tmp_path)
    assert points.empty and list(points.columns) == IDENTITY
    assert samples.empty and list(samples.columns) == SAMPLE_COLUMNS


def test_a_column_of_mixed_types_is_stored_as_text_and_numbers_stay_numbers(tmp_path):
    write(tmp_path / POINTS_LOG, [pt("a", k=1, f=1, b=True, s="x", n=None),
                                  pt("b", k="wide", f=2.5, b=1, s=None, n=None),
                                  pt("c", k=None, f=None, b=None, s="y", n=None)])
    points, _ = read_tables(tmp_path)
    assert values(points[["k", "b", "f", "s", "n"]]) == [["1", "True", 1, "x", None],
                                                         ["wide", "1", 2.5, None, None],
                                                         [None, None, None, "y", None]]
    assert points["f"].dtype == float


def test_a_column_of_whole_and_fractional_numbers_stays_numbers_even_as_objects(tmp_path):
    write(tmp_path / POINTS_LOG, [pt("a", big=2**64), pt("b", big=0.5), pt("c", big=None)])
    points, _ = read_tables(tmp_path)
    assert points["big"].dtype == object  # too large for int64: pandas keeps the Python numbers
    assert values(points[["big"]]) == [[2**64], [0.5], [None]]


def test_nan_does_not_count_as_a_type_of_its_own():
    out = _points_frame([pt("a", shape=[1, 2], i=1), pt("b", shape=math.nan, i=2)])
    assert out["shape"][0] == [1, 2] and math.isnan(out["shape"][1])  # lists besides NaN: unchanged
    assert out["i"].tolist() == [1, 2]


def test_read_ops_keeps_the_latest_profile_of_each_committed_point(tmp_path):
    write(tmp_path / POINTS_LOG, [pt("a"), pt("b")])
    write(tmp_path / OPS_LOG, [
        {C.HASH: "a", "name": "mm", "profiled_at": "2026-01-01"},
        {C.HASH: "a", "name": "add", "profiled_at": "2026-01-01"},
        {C.HASH: "b", "name": "mm"},
        {C.HASH: "a", "name": "mm", "profiled_at": "2026-02-01"},
        {C.HASH: "c", "name": "mm", "profiled_at": "2027-01-01"},  # not committed
        {C.HASH: "b", "name": "conv", "profiled_at": None},
        {C.HASH: "a", "calls": -1},
    ])
    found = []
    ops = read_ops(tmp_path, found)
    assert list(ops.columns) == [C.HASH, "name", "profiled_at"]
    assert values(ops) == [["b", "mm", None], ["a", "mm", "2026-02-01"], ["b", "conv", None]]
    assert [(d.path.name, d.line) for d in found] == [(OPS_LOG, 7)]
    assert read_ops(str(tmp_path)).shape == ops.shape


def test_read_ops_of_a_run_without_profiles_is_empty(tmp_path):
    write(tmp_path / POINTS_LOG, [pt("a")])
    assert read_ops(tmp_path).empty


def test_read_suite_file_returns_the_mapping(tmp_path):
    (tmp_path / SUITE_FILE).write_text("name: s\nmethods: {plain: {}}\n")
    assert read_suite_file(str(tmp_path)) == {"name": "s", "methods": {"plain": {}}}


def test_a_missing_suite_file_is_refused_saying_how_to_write_it_again(tmp_path):
    path = tmp_path / SUITE_FILE
    with pytest.raises(RunDirError, match=exactly(f"{path} is missing (the run's resolved suite, which the "
                                                  f"reports read); {FIX}")):
        read_suite_file(tmp_path)


@pytest.mark.parametrize(("content", "what"), [
    (b"a: [1\n", "ParserError: while parsing a flow sequence"),
    (b"\xff: 1\n",
     "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    (b"- 1\n- 2\n", "it holds list, not a mapping"),
    (b"", "it holds NoneType, not a mapping"),
])
def test_a_damaged_suite_file_is_refused_naming_the_error(tmp_path, content, what):
    path = tmp_path / SUITE_FILE
    path.write_bytes(content)
    with pytest.raises(RunDirError, match=exactly(f"{path} is damaged ({what}); {FIX}")):
        read_suite_file(tmp_path)


def test_a_suite_file_that_cannot_be_read_is_refused_naming_the_os_error(tmp_path):
    path = tmp_path / SUITE_FILE
    path.mkdir()
    message = f"{path} is damaged (IsADirectoryError: [Errno 21] Is a directory: '{path}'); {FIX}"
    with pytest.raises(RunDirError, match=exactly(message)):
        read_suite_file(tmp_path)


def test_a_yaml_error_without_text_is_named_by_its_type(tmp_path, monkeypatch):
    (tmp_path / SUITE_FILE).write_text("a: 1\n")

    def safe_load(_text):
        raise yaml.YAMLError()

    monkeypatch.setattr(yaml, "safe_load", safe_load)
    message = f"{tmp_path / SUITE_FILE} is damaged (YAMLError: ); {FIX}"
    with pytest.raises(RunDirError, match=exactly(message)):
        read_suite_file(tmp_path)


def a_run(path):
    path.mkdir()
    (path / MANIFEST_FILE).write_text(json.dumps({"schema_version": 2, "run_id": "r"}))
    (path / SUITE_FILE).write_text("name: s\n")
    write(path / POINTS_LOG, [pt("a"), pt("b", C.FAILED), '{"point_hash": "0123456789abcdef", "x'])
    write(path / SAMPLES_LOG, [smp("a", 0), smp("b", 0)])
    return path


def test_load_gathers_the_manifest_tables_suite_env_metrics_and_damaged_lines(tmp_path):
    run = a_run(tmp_path / "run")
    (run / ENV_FILE).write_text('{"cpu_model": "c"}')
    (run / METRICS_FILE).write_text('{"q_x": {"direction": "higher"}}')
    data = load(str(run))
    assert data.path == run and data.manifest == {"schema_version": 2, "run_id": "r"}
    assert data.suite == {"name": "s"} and data.env == {"cpu_model": "c"}
    assert data.metrics == {"q_x": {"direction": "higher"}}
    assert list(data.points[C.HASH]) == ["a", "b"] and list(data.ok[C.HASH]) == ["a"]
    assert data.samples.to_dict("records") == [smp("a", 0), smp("b", 0)]
    assert data.damaged == [DamagedLine(run / POINTS_LOG, 3, False, '{"point_hash": "0123456789abcdef", "x')]


def test_load_without_env_or_metrics_gives_empty_mappings_and_refuses_damaged_ones(tmp_path):
    run = a_run(tmp_path / "run")
    data = load(run)
    assert data.env == {} and data.metrics == {}
    restore = "restore it from a copy of the run, or start a new run"
    (run / METRICS_FILE).write_text("[]")
    with pytest.raises(RunDirError, match=exactly(f"{run / METRICS_FILE} is damaged (a JSON list, not an "
                                                  f"object); {restore}")):
        load(run)
    (run / METRICS_FILE).unlink()
    (run / ENV_FILE).write_text("1")
    with pytest.raises(RunDirError, match=exactly(f"{run / ENV_FILE} is damaged (a JSON int, not an object); "
                                                  f"{restore}")):
        load(run)


def test_a_column_of_one_kind_of_object_keeps_its_values(tmp_path):
    write(tmp_path / POINTS_LOG, [pt("a", shape=[2, 3]), pt("b", shape=[4]), pt("c", shape=None)])
    points, _ = read_tables(tmp_path)
    assert points["shape"].tolist() == [[2, 3], [4], None]  # lists only: nothing to make parquet-safe


def test_the_latest_profile_is_the_latest_stamp_wherever_it_lies_in_the_log(tmp_path):
    write(tmp_path / POINTS_LOG, [pt("a")])
    write(tmp_path / OPS_LOG, [{C.HASH: "a", "name": "new", "profiled_at": "2026-02-01T00:00:00"},
                               {C.HASH: "a", "name": "old", "profiled_at": "2026-01-01T00:00:00"}])
    assert values(read_ops(tmp_path)) == [["a", "new", "2026-02-01T00:00:00"]]
