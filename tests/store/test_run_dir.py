"""The run directory never loses or doubles a point: torn logs, orphan samples, locking,
changed machines on resume, leftovers in --out, and parquet tables built from the logs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fake_suites import fake_suite

from harness.errors import RunError
from harness.run.options import RunOptions
from harness.run.runner import run_suite
from harness.store import (
    ENV_FILE,
    POINTS_FILE,
    POINTS_LOG,
    SAMPLES_FILE,
    SAMPLES_LOG,
    RunDirError,
    RunLock,
    RunWriter,
    load,
    repair_torn_tail,
)
from harness.store import columns as C

pytestmark = pytest.mark.usefixtures("one_thread")

SWEEP = "sweep: {size: [2, 3, 4]}\nmethods: {plain: {}, knob: {}}\n"
N_SAMPLES = 2  # the FAST timing of fake_suite


def interrupted_run(tmp_path, fake_workload, after: int = 3):
    suite = fake_suite(SWEEP)
    fake_workload.interrupt_after = after
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    fake_workload.interrupt_after = None
    return suite, tmp_path / "run"


def assert_complete(run_dir, suite):
    run = load(run_dir)
    assert sorted(run.points[C.HASH]) == sorted(p.hash for p in suite.points())  # each point once
    assert run.points[C.HASH].is_unique
    counts = run.samples.groupby(C.HASH).size()
    assert sorted(counts.index) == sorted(run.points[C.HASH]) and (counts == N_SAMPLES).all()


@pytest.mark.parametrize("log", [POINTS_LOG, SAMPLES_LOG])
def test_a_torn_last_line_is_cut_before_resuming_and_said(tmp_path, fake_workload, log):
    suite, run_dir = interrupted_run(tmp_path, fake_workload)
    with open(run_dir / log, "a") as f:
        f.write('{"point_hash": "0123456789abcdef", "status": "o')  # a kill mid-write
    summary = run_suite(suite, run_dir, RunOptions(resume=True, progress=False))
    assert any(log in n and "torn last line" in n for n in summary.notes)
    assert_complete(run_dir, suite)
    for line in (run_dir / log).read_text().splitlines():
        json.loads(line)  # every line whole again: nothing was glued to the fragment


def test_repair_keeps_whole_logs_untouched(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n')
    assert repair_torn_tail(path) == 0 and path.read_text() == '{"a": 1}\n{"a": 2}\n'
    path.write_text('{"a": 1}\n{"a"')
    assert repair_torn_tail(path) == 4 and path.read_text() == '{"a": 1}\n'
    path.write_text('{"a"')
    assert repair_torn_tail(path) == 4 and path.read_text() == ""


def test_samples_of_a_point_that_never_committed_are_dropped(tmp_path, fake_workload):
    suite, run_dir = interrupted_run(tmp_path, fake_workload)
    orphan = suite.points()[-1].hash  # not finished: its samples made it, its row did not
    with open(run_dir / SAMPLES_LOG, "a") as f:
        for i in range(N_SAMPLES):
            f.write(json.dumps({C.RUN_ID: "x", C.HASH: orphan, C.SAMPLE: i, C.DEVICE_MS: 1.0,
                                C.HOST_MS: 1.0}) + "\n")
    assert orphan not in set(load(run_dir).samples[C.HASH])  # ignored on load already
    summary = run_suite(suite, run_dir, RunOptions(resume=True, progress=False))
    assert any("dropped 2 samples" in n for n in summary.notes)
    assert_complete(run_dir, suite)  # the point ran again: its samples appear once, not twice


def test_a_deleted_points_log_does_not_double_the_samples(tmp_path, fake_workload):
    suite, run_dir = interrupted_run(tmp_path, fake_workload)
    (run_dir / POINTS_LOG).unlink()
    run_suite(suite, run_dir, RunOptions(resume=True, progress=False))
    assert_complete(run_dir, suite)


def test_a_run_directory_in_use_is_refused_naming_the_holder(tmp_path, fake_workload):
    suite, run_dir = interrupted_run(tmp_path, fake_workload)
    with RunLock(run_dir):  # another process writing the run (flock is per open file)
        with pytest.raises(RunDirError, match=r"is in use by pid \d+ on host .*wait for that run"):
            run_suite(suite, run_dir, RunOptions(resume=True, progress=False))
        with pytest.raises(RunDirError, match="is in use by pid") as e:
            run_suite(suite, run_dir, RunOptions(progress=False))
        assert "Pass --resume" not in str(e.value)  # never recommends resuming a live run
    run_suite(suite, run_dir, RunOptions(resume=True, progress=False))  # released: resumes
    assert_complete(run_dir, suite)


def test_resume_on_another_machine_is_refused_unless_allowed(tmp_path, fake_workload):
    suite, run_dir = interrupted_run(tmp_path, fake_workload)
    env = json.loads((run_dir / ENV_FILE).read_text())
    env["cpu_model"] = "Some Other CPU 9000"
    (run_dir / ENV_FILE).write_text(json.dumps(env))
    with pytest.raises(RunError, match="CPU model differs: Some Other CPU 9000 vs .*--allow-env-mismatch"):
        run_suite(suite, run_dir, RunOptions(resume=True, progress=False))
    run_suite(suite, run_dir, RunOptions(resume=True, progress=False, allow_env_mismatch=True))
    resumed = load(run_dir).manifest["resumed"]
    assert len(resumed) == 1 and resumed[0]["env"]["cpu_model"] != "Some Other CPU 9000"
    assert_complete(run_dir, suite)


def test_out_with_a_leftover_points_log_but_no_manifest_is_refused(tmp_path, fake_workload):
    out = tmp_path / "out"
    out.mkdir()
    (out / POINTS_LOG).write_text('{"point_hash": "0123456789abcdef", "status": "ok"}\n')
    with pytest.raises(RunDirError, match="holds points.jsonl but no run.json.*move them away"):
        run_suite(fake_suite(SWEEP), out, RunOptions(progress=False))
    assert (out / POINTS_LOG).read_text().count("\n") == 1  # untouched


def test_out_that_is_a_non_empty_directory_is_refused(tmp_path, fake_workload):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("do not touch")
    with pytest.raises(RunDirError, match=r"is not empty and is not a run directory \(it holds thesis.tex\)"):
        run_suite(fake_suite(SWEEP), out, RunOptions(progress=False))
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_appending_does_not_rewrite_the_tables_and_load_reads_the_logs(tmp_path):
    writer = RunWriter.create(tmp_path / "run", {"run_id": "r", "suite": "s"}, {"name": "s"}, {}, {})
    for i in range(3):
        writer.append({C.HASH: f"{i:016x}", C.METHOD: "m", C.STATUS: C.OK, C.LAT_MEDIAN: 1.0},
                      [{C.RUN_ID: "r", C.HASH: f"{i:016x}", C.SAMPLE: 0, C.DEVICE_MS: 1.0, C.HOST_MS: 1.0}])
    assert not (tmp_path / "run" / POINTS_FILE).exists()  # no per-append rewrite
    writer.flush_tables()
    assert len(pd.read_parquet(tmp_path / "run" / POINTS_FILE)) == 3
    assert len(pd.read_parquet(tmp_path / "run" / SAMPLES_FILE)) == 3
    writer.append({C.HASH: f"{3:016x}", C.METHOD: "m", C.STATUS: C.OK, C.LAT_MEDIAN: 1.0})
    (tmp_path / "run" / SAMPLES_FILE).write_bytes(b"truncated parquet")  # a kill between the two
    run = load(tmp_path / "run")
    assert len(run.points) == 4 and len(run.samples) == 3  # the logs, not the stale tables


def test_a_finished_run_has_both_tables(tmp_path, fake_workload):
    suite = fake_suite(SWEEP)
    run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    assert len(pd.read_parquet(tmp_path / "run" / POINTS_FILE)) == len(suite.points())
    assert len(pd.read_parquet(tmp_path / "run" / SAMPLES_FILE)) == len(suite.points()) * N_SAMPLES
