"""Writing a run directory (harness/store/writer.py): the files a new run starts with, the exact
lines an append writes, what reopening a run repairs and the notes it says so with (word for word),
the parquet exports built from the logs, and the logs read and written whole (merge)."""

from __future__ import annotations

import errno
import json
import math
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pytest

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
    RunLogs,
    RunWriter,
    read_logs,
    write_logs,
)
from harness.store import columns as C
from harness.store.files import DamagedLine
from harness.store.writer import write_suite_file


def pt(h, status=C.OK, **more):
    return {C.HASH: h, C.METHOD: "m", C.STATUS: status, C.LAT_MEDIAN: 1.0, **more}


def smp(h, i, ms=1.0):
    return {C.RUN_ID: "r", C.HASH: h, C.SAMPLE: i, C.DEVICE_MS: ms, C.HOST_MS: ms}


def lines(*rows):
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def files(path):
    return sorted(p.name for p in path.iterdir())


def test_create_writes_the_manifest_suite_environment_and_metrics(tmp_path):
    run = tmp_path / "a" / "run"
    writer = RunWriter.create(run, {"run_id": "r", "suite": "s"}, {"name": "s", "b": 1, "a": {"x": [1, 2]}},
                              {"cpu_model": "c"}, {"q_x": {"higher": True}})
    assert isinstance(writer, RunWriter) and writer.run_dir == run
    assert files(run) == [ENV_FILE, METRICS_FILE, MANIFEST_FILE, SUITE_FILE]
    manifest = (run / MANIFEST_FILE).read_text()
    assert manifest == '{\n  "run_id": "r",\n  "schema_version": 2,\n  "suite": "s"\n}'
    assert (run / SUITE_FILE).read_text() == "name: s\nb: 1\na:\n  x:\n  - 1\n  - 2\n"  # in the suite's order
    assert (run / ENV_FILE).read_text() == '{\n  "cpu_model": "c"\n}'
    assert (run / METRICS_FILE).read_text() == '{\n  "q_x": {\n    "higher": true\n  }\n}'


def test_write_suite_file_keeps_the_order_of_the_suite(tmp_path):
    write_suite_file(str(tmp_path), {"z": 1, "a": None})
    assert (tmp_path / SUITE_FILE).read_text() == "z: 1\na: null\n"


def test_append_writes_the_samples_then_the_row_as_json_lines(tmp_path):
    writer = RunWriter(tmp_path)
    writer.append({C.HASH: "a", "lat": math.nan, "where": PurePosixPath("x/y"), "n": np.int64(3)},
                  [{C.HASH: "a", C.SAMPLE: 0, C.DEVICE_MS: np.float32(1.5)},
                   {C.HASH: "a", C.SAMPLE: 1, C.DEVICE_MS: math.inf}])
    assert (tmp_path / POINTS_LOG).read_text() == '{"point_hash": "a", "lat": null, "where": "x/y", "n": 3}\n'
    assert (tmp_path / SAMPLES_LOG).read_text() == (
        '{"point_hash": "a", "sample": 0, "device_ms": 1.5}\n'
        '{"point_hash": "a", "sample": 1, "device_ms": "inf"}\n')
    writer.append({C.HASH: "b"})
    assert (tmp_path / POINTS_LOG).read_text().splitlines()[1] == '{"point_hash": "b"}'
    assert (tmp_path / SAMPLES_LOG).read_text().count("\n") == 2  # no samples: nothing appended


def test_a_first_point_without_samples_still_starts_the_samples_log(tmp_path):
    RunWriter(tmp_path).append(pt("a"))
    assert (tmp_path / SAMPLES_LOG).read_text() == ""
    assert (tmp_path / POINTS_LOG).read_text() == lines(pt("a"))


def test_an_append_that_fails_names_the_log(tmp_path):
    (tmp_path / SAMPLES_LOG).mkdir()  # cannot be opened for appending
    with pytest.raises(IsADirectoryError) as e:
        RunWriter(tmp_path).append(pt("a"), [smp("a", 0)])
    assert e.value.filename == str(tmp_path / SAMPLES_LOG)
    assert not (tmp_path / POINTS_LOG).exists()  # the row never commits a point whose samples failed


def test_operator_rows_are_appended_as_json_lines(tmp_path):
    writer = RunWriter(tmp_path)
    writer.append_ops([{C.HASH: "a", "name": "mm", "cpu_us": np.float64(2.0)},
                       {C.HASH: "a", "cpu_us": math.nan}])
    writer.append_ops([])
    assert (tmp_path / OPS_LOG).read_text() == lines({C.HASH: "a", "name": "mm", "cpu_us": 2.0},
                                                      {C.HASH: "a", "cpu_us": None})


def test_finished_hashes_are_the_recorded_points_of_any_status(tmp_path):
    writer = RunWriter(tmp_path)
    assert writer.finished_hashes() == set()
    (tmp_path / POINTS_LOG).write_text(lines(pt("a"), pt("b", C.FAILED), "damaged", pt("c", C.OOM)))
    assert writer.finished_hashes() == {"a", "b", "c"}


def test_trace_path_is_the_points_trace_in_the_profiles_folder(tmp_path):
    assert RunWriter(tmp_path).trace_path("0123abcd") == tmp_path / "profiles" / "0123abcd.trace.json.gz"


def test_update_metrics_merges_into_the_metrics_file(tmp_path):
    writer = RunWriter(tmp_path)
    writer.update_metrics({"q_b": 1, "q_c": 5})
    assert json.loads((tmp_path / METRICS_FILE).read_text()) == {"q_b": 1, "q_c": 5}
    writer.update_metrics({"q_a": 2, "q_b": 3})
    assert (tmp_path / METRICS_FILE).read_text() == '{\n  "q_a": 2,\n  "q_b": 3,\n  "q_c": 5\n}'


def test_flush_tables_exports_the_committed_rows_of_the_logs(tmp_path):
    (tmp_path / POINTS_LOG).write_text(lines(pt("a"), pt("b", C.FAILED)))
    (tmp_path / SAMPLES_LOG).write_text(lines(smp("a", 0), smp("a", 1, 2.0), smp("x", 0)))
    RunWriter(tmp_path).flush_tables()
    assert files(tmp_path) == [POINTS_LOG, POINTS_FILE, SAMPLES_LOG, SAMPLES_FILE]  # no ops: no ops table
    points = pd.read_parquet(tmp_path / POINTS_FILE)
    assert points[C.HASH].tolist() == ["a", "b"] and points[C.STATUS].tolist() == [C.OK, C.FAILED]
    assert pd.read_parquet(tmp_path / SAMPLES_FILE).to_dict("records") == [smp("a", 0), smp("a", 1, 2.0)]


def test_flush_tables_exports_the_latest_operator_rows_when_there_is_an_ops_log(tmp_path):
    (tmp_path / POINTS_LOG).write_text(lines(pt("a")))
    (tmp_path / OPS_LOG).write_text(lines({C.HASH: "a", "name": "mm", "profiled_at": "1"},
                                          {C.HASH: "a", "name": "mm", "profiled_at": "2"},
                                          {C.HASH: "z", "name": "mm", "profiled_at": "3"}))
    RunWriter(tmp_path).flush_tables()
    assert pd.read_parquet(tmp_path / "ops.parquet").to_dict("records") == [
        {C.HASH: "a", "name": "mm", "profiled_at": "2"}]
    assert not any(name.endswith(".tmp") for name in files(tmp_path))


def test_a_failed_export_names_the_table_and_leaves_the_old_tables_and_no_tmp_files(tmp_path, monkeypatch):
    (tmp_path / POINTS_LOG).write_text(lines(pt("a")))
    (tmp_path / SAMPLES_LOG).write_text(lines(smp("a", 0)))
    (tmp_path / POINTS_FILE).write_bytes(b"old points")
    real = pd.DataFrame.to_parquet

    def to_parquet(df, path, **kw):
        if str(path).endswith(SAMPLES_FILE + ".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(df, path, **kw)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", to_parquet)
    with pytest.raises(OSError) as e:
        RunWriter(tmp_path).flush_tables()
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / SAMPLES_FILE))
    assert files(tmp_path) == [POINTS_LOG, POINTS_FILE, SAMPLES_LOG]
    assert (tmp_path / POINTS_FILE).read_bytes() == b"old points"  # both tables or neither


def test_reopening_a_whole_run_repairs_nothing_and_says_nothing(tmp_path):
    (tmp_path / POINTS_LOG).write_text(lines(pt("a")))
    (tmp_path / SAMPLES_LOG).write_text(lines(smp("a", 0)))
    writer, notes = RunWriter.open_existing(str(tmp_path))
    assert notes == [] and writer.run_dir == tmp_path
    assert files(tmp_path) == [POINTS_LOG, SAMPLES_LOG]


def test_reopening_keeps_a_samples_log_over_its_export_and_makes_none_without_either(tmp_path):
    (tmp_path / POINTS_LOG).write_text(lines(pt("a")))
    assert RunWriter.open_existing(tmp_path)[1] == [] and files(tmp_path) == [POINTS_LOG]
    (tmp_path / SAMPLES_LOG).write_text(lines(smp("a", 0)))
    pd.DataFrame([smp("a", 0), smp("a", 1)]).to_parquet(tmp_path / SAMPLES_FILE)  # an export from before
    assert RunWriter.open_existing(tmp_path)[1] == []
    assert (tmp_path / SAMPLES_LOG).read_text() == lines(smp("a", 0))  # the log is the truth


def test_reopening_rebuilds_a_lost_samples_log_from_its_export(tmp_path):
    (tmp_path / POINTS_LOG).write_text(lines(pt("a")))
    pd.DataFrame([smp("a", 0), {**smp("a", 1), C.DEVICE_MS: math.nan}]).to_parquet(tmp_path / SAMPLES_FILE)
    _, notes = RunWriter.open_existing(tmp_path)
    assert notes == ["samples.jsonl was missing; written again from samples.parquet (2 samples)"]
    assert (tmp_path / SAMPLES_LOG).read_text() == lines(smp("a", 0), {**smp("a", 1), C.DEVICE_MS: None})


def test_reopening_cuts_torn_tails_of_every_log_and_says_how_many_bytes(tmp_path):
    (tmp_path / POINTS_LOG).write_text(lines(pt("a")) + '{"point_hash": "b"')
    (tmp_path / SAMPLES_LOG).write_text(lines(smp("a", 0)) + "{")
    (tmp_path / OPS_LOG).write_text(lines({C.HASH: "a", "calls": 1}) + '{"x"')
    _, notes = RunWriter.open_existing(tmp_path)
    assert notes == ["points.jsonl: cut a torn last line (18 bytes of an unfinished write)",
                     "samples.jsonl: cut a torn last line (1 bytes of an unfinished write)",
                     "ops.jsonl: cut a torn last line (4 bytes of an unfinished write)"]
    assert (tmp_path / POINTS_LOG).read_text() == lines(pt("a"))
    assert (tmp_path / SAMPLES_LOG).read_text() == lines(smp("a", 0))
    assert (tmp_path / OPS_LOG).read_text() == lines({C.HASH: "a", "calls": 1})


def test_reopening_moves_damaged_lines_aside_naming_at_most_three(tmp_path):
    (tmp_path / POINTS_LOG).write_text(lines(pt("a"), "bad", pt("b"), pt("c"), pt("d")))
    (tmp_path / SAMPLES_LOG).write_text(lines(smp("a", 0), "s1", "s2", "s3", "s4", smp("b", 0)))
    (tmp_path / OPS_LOG).write_text(lines({C.HASH: "a", "calls": -1}, "o2", "o3"))
    _, notes = RunWriter.open_existing(tmp_path)
    assert notes == [
        "points.jsonl: moved 1 damaged line(s) to points.jsonl.damaged (points.jsonl line 2 is damaged "
        "(not a JSON row)); their points run again",
        "samples.jsonl: moved 4 damaged line(s) to samples.jsonl.damaged (samples.jsonl line 2 is damaged "
        "(not a JSON row); samples.jsonl line 3 is damaged (not a JSON row); samples.jsonl line 4 is damaged "
        "(not a JSON row); ...); the tables leave them out",
        "ops.jsonl: moved 3 damaged line(s) to ops.jsonl.damaged (ops.jsonl line 1 is damaged (calls is -1, "
        "not a number >= 0); ops.jsonl line 2 is damaged (not a JSON row); ops.jsonl line 3 is damaged (not "
        "a JSON row)); the tables leave them out",
    ]
    assert (tmp_path / "samples.jsonl.damaged").read_text() == "s1\ns2\ns3\ns4\n"
    assert (tmp_path / SAMPLES_LOG).read_text() == lines(smp("a", 0), smp("b", 0))


def test_reopening_drops_the_samples_of_points_that_never_finished(tmp_path):
    (tmp_path / POINTS_LOG).write_text(lines(pt("a")))
    (tmp_path / SAMPLES_LOG).write_text(lines(smp("a", 0), smp("b", 0), smp("b", 1), smp("a", 1)))
    writer, notes = RunWriter.open_existing(tmp_path)
    assert notes == ["samples.jsonl: dropped 2 samples of points that never finished (they run again)"]
    assert (tmp_path / SAMPLES_LOG).read_text() == lines(smp("a", 0), smp("a", 1))
    assert writer.finished_hashes() == {"a"}


def test_read_logs_keeps_committed_points_with_their_samples_and_operator_rows(tmp_path):
    (tmp_path / POINTS_LOG).write_text(lines(pt("a"), "bad point"))
    (tmp_path / SAMPLES_LOG).write_text(lines(smp("a", 0), smp("x", 0), "bad sample"))
    (tmp_path / OPS_LOG).write_text(lines({C.HASH: "x", "calls": 1}, {C.HASH: "a", "calls": 2}, "bad op"))
    logs = read_logs(str(tmp_path))
    assert logs.points == [pt("a")] and logs.samples == [smp("a", 0)]
    assert logs.ops == [{C.HASH: "a", "calls": 2}]
    assert logs.damaged == [DamagedLine(tmp_path / POINTS_LOG, 2, False, "bad point"),
                            DamagedLine(tmp_path / SAMPLES_LOG, 3, False, "bad sample"),
                            DamagedLine(tmp_path / OPS_LOG, 3, False, "bad op")]


def test_write_logs_writes_each_log_whole_and_no_ops_log_without_operator_rows(tmp_path):
    write_logs(str(tmp_path), RunLogs(points=[pt("a")], samples=[smp("a", 0)], ops=[]))
    assert files(tmp_path) == [POINTS_LOG, SAMPLES_LOG]
    assert (tmp_path / POINTS_LOG).read_text() == lines(pt("a"))
    assert (tmp_path / SAMPLES_LOG).read_text() == lines(smp("a", 0))
    write_logs(tmp_path, RunLogs(points=[], samples=[], ops=[{C.HASH: "a", "calls": 1}]))
    assert (tmp_path / OPS_LOG).read_text() == lines({C.HASH: "a", "calls": 1})
    assert (tmp_path / POINTS_LOG).read_text() == "" and (tmp_path / SAMPLES_LOG).read_text() == ""
    assert RunLogs([], [], []).damaged == []
