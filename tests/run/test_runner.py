"""Runner: rows per point, failure statuses, resume, model reuse, ordering, refusals."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from fake_suites import fake_suite

from harness.errors import RunError, StorageError
from harness.run.options import RunOptions
from harness.run.points import order_points
from harness.run.runner import run_suite
from harness.store import RunDirError, load
from harness.store import columns as C
from harness.suite import parse_suite

pytestmark = pytest.mark.usefixtures("one_thread")

def rows(run_dir):
    return load(run_dir).points


def test_every_point_gets_one_ok_row_with_timing_metrics_and_samples(tmp_path, fake_workload):
    suite = fake_suite("sweep: {size: [2, 3]}\nmethods: {plain: {}, knob: {}}\n")
    summary = run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    run = load(tmp_path / "run")
    pts = run.points
    assert (summary.total, summary.ok, summary.exit_code) == (4, 4, 0)
    assert sorted(pts[C.HASH]) == sorted(p.hash for p in suite.points())
    assert set(pts[C.STATUS]) == {C.OK}
    assert (pts[C.N_SAMPLES] == 2).all() and (pts[C.LAT_MEDIAN] > 0).all()
    assert list(pts["work_elems"]) == [2.0, 2.0, 3.0, 3.0]
    assert pts[C.ERROR].isna().all() and (pts[C.SUITE] == "f").all()
    assert len(run.samples) == 4 * 2
    assert set(run.samples[C.HASH]) == set(pts[C.HASH])


def test_run_directory_records_manifest_env_suite_and_metrics(tmp_path, fake_workload):
    suite = fake_suite("methods: {plain: {}}\n")
    run_suite(suite, tmp_path / "run", RunOptions(progress=False, argv=["harness", "run", "f.yaml"]))
    run = load(tmp_path / "run")
    assert run.manifest["suite"] == "f" and run.manifest["suite_hash"] == suite.hash
    assert run.manifest["argv"] == ["harness", "run", "f.yaml"]
    assert run.manifest["run_id"] == run.points[C.RUN_ID].iloc[0]
    assert {"harness_version", "created_at"} <= set(run.manifest)
    assert run.suite["workload"] == "fake" and run.suite["timing"]["max_samples"] == 2
    assert run.env["seed"] == 0
    assert run.metrics["q_sum"]["kind"] == "quality"


def test_seed_is_recorded_and_makes_outputs_reproducible(tmp_path, fake_workload):
    suite = fake_suite("sweep: {seed: [0, 1]}\nmethods: {plain: {}}\n")
    run_suite(suite, tmp_path / "a", RunOptions(progress=False))
    run_suite(suite, tmp_path / "b", RunOptions(progress=False))
    a, b = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert list(a["seed"]) == [0, 1]
    assert list(a["q_sum"]) == list(b["q_sum"])
    assert a["q_sum"][0] != a["q_sum"][1]


def test_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path, fake_workload):
    suite = fake_suite("sweep: {mode: [ok, raise], size: [2, 3]}\nmethods: {plain: {}}\n")
    summary = run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    pts = rows(tmp_path / "run")
    failed = pts[pts[C.STATUS] == C.FAILED]
    assert summary.counts == {C.OK: 2, C.FAILED: 2}
    assert summary.exit_code == 1
    assert len(failed) == 2 and (pts[pts[C.STATUS] == C.OK]["mode"] == "ok").all()
    err = failed[C.ERROR].iloc[0]
    assert err.startswith("ValueError: boom at size 2 (at ") and "conftest.py" in err and "in bench)" in err


def test_allow_failures_makes_the_exit_code_zero(tmp_path, fake_workload):
    suite = fake_suite("sweep: {mode: [ok, raise]}\nmethods: {plain: {}}\n")
    summary = run_suite(suite, tmp_path / "run", RunOptions(progress=False, allow_failures=True))
    assert summary.not_ok == 1 and summary.exit_code == 0


def test_nan_output_gives_status_nan(tmp_path, fake_workload):
    suite = fake_suite("sweep: {mode: [ok, nan]}\nmethods: {plain: {}}\n")
    run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    pts = rows(tmp_path / "run").set_index("mode")
    assert pts.loc["nan", C.STATUS] == C.NAN and pts.loc["ok", C.STATUS] == C.OK
    assert pts.loc["nan", C.ERROR].startswith("output holds NaN/Inf")
    assert pts.loc["nan", C.N_SAMPLES] == 2  # the measurement is kept


def test_nan_metric_gives_status_nan(tmp_path, fake_workload):
    suite = fake_suite("fixed: {mode: nan_metric}\nmethods: {plain: {}}\n")
    run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    pts = rows(tmp_path / "run")
    assert pts[C.STATUS].iloc[0] == C.NAN and pts[C.ERROR].iloc[0] == "non-finite q_sum"
    assert pd.isna(pts["q_sum"].iloc[0])


def test_out_of_memory_gives_status_oom(tmp_path, fake_workload):
    suite = fake_suite("sweep: {mode: [oom, ok]}\nmethods: {plain: {}}\n")
    summary = run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    pts = rows(tmp_path / "run").set_index("mode")
    assert pts.loc["oom", C.STATUS] == C.OOM and "out of memory" in pts.loc["oom", C.ERROR]
    assert summary.counts == {C.OOM: 1, C.OK: 1}


def test_model_is_built_once_per_model_key(tmp_path, fake_workload):
    suite = fake_suite(
        "sweep: {size: [2, 3], scale: [1, 2]}\nmethods: {plain: {}, knob: {level: [0, 1, 2]}}\n"
    )
    run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    assert [b.size for b in fake_workload.builds] == [2, 3]  # scale is not part of the model key
    assert len(rows(tmp_path / "run")) == 2 * 2 * 4


def test_failed_model_build_fails_its_points_without_rebuilding(tmp_path, fake_workload, monkeypatch):
    def broken(self, point):
        fake_workload.builds.append(point.workload_params)
        raise OSError("weights unreadable")

    monkeypatch.setattr(fake_workload, "build_model", broken)
    suite = fake_suite("methods: {plain: {}, knob: {}}\n")
    run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    pts = rows(tmp_path / "run")
    assert len(fake_workload.builds) == 1
    assert (pts[C.STATUS] == C.FAILED).all()
    assert pts[C.ERROR].str.startswith("model build failed: OSError: weights unreadable").all()


def test_resume_after_interrupt_runs_every_point_exactly_once(tmp_path, fake_workload):
    suite = fake_suite("sweep: {size: [2, 3, 4]}\nmethods: {plain: {}, knob: {}}\n")
    fake_workload.interrupt_after = 4
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    assert len(rows(tmp_path / "run")) == 4  # rows were written as points finished
    summary = run_suite(suite, tmp_path / "run", RunOptions(resume=True, progress=False))
    pts = rows(tmp_path / "run")
    assert (summary.skipped, summary.ran) == (4, 2)
    assert sorted(pts[C.HASH]) == sorted(p.hash for p in suite.points())
    assert pts[C.HASH].is_unique and pts[C.RUN_ID].nunique() == 1
    assert len(load(tmp_path / "run").manifest["resumed"]) == 1


def test_resume_keeps_failed_points_as_recorded_and_does_not_run_them_again(tmp_path, fake_workload):
    suite = fake_suite("sweep: {mode: [ok, raise, oom]}\nmethods: {plain: {}}\n")
    first = run_suite(suite, tmp_path / "run", RunOptions(progress=False, allow_failures=True))
    assert first.counts == {C.OK: 1, C.FAILED: 1, C.OOM: 1}
    benches = fake_workload.benches
    again = run_suite(suite, tmp_path / "run", RunOptions(resume=True, progress=False, allow_failures=True))
    assert (again.skipped, again.ran) == (3, 0) and fake_workload.benches == benches  # nothing re-run
    pts = rows(tmp_path / "run").set_index("mode")
    assert pts.at["raise", C.STATUS] == C.FAILED and pts.at["oom", C.STATUS] == C.OOM and len(pts) == 3


def test_resume_refuses_another_suites_run_dir(tmp_path, fake_workload):
    run_suite(fake_suite("methods: {plain: {}}\n"), tmp_path / "run", RunOptions(progress=False))
    other = fake_suite("sweep: {size: [7]}\nmethods: {plain: {}}\n", name="other")
    with pytest.raises(RunError, match="cannot resume .*suite 'f' with suite hash .* differ"):
        run_suite(other, tmp_path / "run", RunOptions(resume=True, progress=False))


def test_resume_refuses_a_directory_without_a_run(tmp_path, fake_workload):
    with pytest.raises(RunError, match="not a run directory"):
        run_suite(fake_suite("methods: {plain: {}}\n"), tmp_path, RunOptions(resume=True, progress=False))


def test_existing_run_dir_is_not_overwritten_without_resume(tmp_path, fake_workload):
    suite = fake_suite("methods: {plain: {}}\n")
    run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    with pytest.raises(RunDirError, match="already holds a run.*--resume"):
        run_suite(suite, tmp_path / "run", RunOptions(progress=False))


def test_unwritable_output_dir_is_refused_before_running(tmp_path, fake_workload):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match=r"cannot write the run directory .*file/run.*--out") as e:
        run_suite(fake_suite("methods: {plain: {}}\n"), blocker / "run", RunOptions(progress=False))
    assert e.value.exit_code == 3
    assert fake_workload.builds == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_read_only_output_dir_is_refused(tmp_path, fake_workload):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(StorageError, match="cannot write the run directory"):
            run_suite(fake_suite("methods: {plain: {}}\n"), ro / "run", RunOptions(progress=False))
    finally:
        ro.chmod(0o700)


def test_cuda_points_are_refused_without_a_gpu(tmp_path, fake_workload, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    suite = fake_suite("fixed: {device: cuda}\nmethods: {plain: {}}\n")
    with pytest.raises(RunError, match="asks for device 'cuda' but torch sees no CUDA GPU"):
        run_suite(suite, tmp_path / "run", RunOptions(progress=False))


def test_breakdown_phases_become_bd_columns(tmp_path, fake_workload):
    suite = fake_suite("methods: {plain: {}}\n", extra="metrics: {breakdown: true}\n")
    run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    run = load(tmp_path / "run")
    assert run.points["bd_scale_ms"].iloc[0] == 0.5 and run.points["bd_add_ms"].iloc[0] == 0.25
    assert run.metrics["bd_scale_ms"]["unit"] == "ms"


def test_evaluate_can_be_switched_off(tmp_path, fake_workload):
    suite = fake_suite("methods: {plain: {}}\n", extra="metrics: {evaluate: false}\n")
    run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    assert "q_sum" not in rows(tmp_path / "run").columns


def test_interleave_alternates_methods_within_a_group_of_equal_inputs(fake_workload):
    suite = fake_suite("sweep: {size: [2, 3]}\nmethods: {plain: {}, knob: {level: [0, 1, 2]}}\n")
    wl = fake_workload()
    grid = order_points(suite.points(), wl.model_key, "grid", suite.hash)
    inter = order_points(suite.points(), wl.model_key, "interleave", suite.hash)
    assert [p.method for p in grid[:4]] == ["plain", "knob", "knob", "knob"]
    assert [(p.params["size"], p.method) for p in inter] == [
        (2, "plain"), (2, "knob"), (2, "knob"), (2, "knob"),
        (3, "plain"), (3, "knob"), (3, "knob"), (3, "knob"),
    ]


def test_grid_order_groups_points_by_model_key(fake_workload):
    text = "sweep: {size: [2, 3]}\nmethods: {plain: {}}\ninclude:\n  - {method: knob, size: 2}\n"
    suite = fake_suite(text)
    wl = fake_workload()
    grid = order_points(suite.points(), wl.model_key, "grid", suite.hash)
    assert [(p.method, p.params["size"]) for p in grid] == [("plain", 2), ("knob", 2), ("plain", 3)]


def test_grid_order_keeps_points_with_the_same_inputs_together_within_a_model():

    suite = parse_suite(
        "name: t\nworkload: attention\nsweep: {seq_len: [64, 128]}\nmethods: {sdpa: {}, math: {}}\n"
        "include:\n  - {method: math, seq_len: [64, 128], heads: 4}\n  - {method: sdpa, seq_len: 64}\n"
    )
    grid = order_points(suite.points(), lambda p: "one model", "grid", suite.hash)
    inputs = [(p.params["seq_len"], p.params["heads"]) for p in grid]
    # every distinct input appears as one contiguous run, in order of first appearance
    runs = [k for i, k in enumerate(inputs) if i == 0 or inputs[i - 1] != k]
    assert runs == [(64, 4), (128, 4)]


def test_shuffle_is_a_seeded_permutation(fake_workload):
    suite = fake_suite("sweep: {size: [1, 2, 3, 4, 5, 6]}\nmethods: {plain: {}, knob: {}}\n")
    wl = fake_workload()
    a = order_points(suite.points(), wl.model_key, "shuffle", suite.hash)
    b = order_points(suite.points(), wl.model_key, "shuffle", suite.hash)
    assert [p.hash for p in a] == [p.hash for p in b]
    assert sorted(p.hash for p in a) == sorted(p.hash for p in suite.points())
    assert [p.hash for p in a] != [p.hash for p in suite.points()]


def test_rows_are_appended_as_json_lines_while_running(tmp_path, fake_workload):
    suite = fake_suite("sweep: {size: [2, 3]}\nmethods: {plain: {}}\n")
    fake_workload.interrupt_after = 1
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    lines = (tmp_path / "run" / "points.jsonl").read_text().splitlines()
    assert [json.loads(x)["size"] for x in lines] == [2]


def test_a_run_of_another_results_schema_is_refused_with_what_to_do(tmp_path, fake_workload, capsys):
    from harness.cli import main
    from harness.store import MANIFEST_FILE, SCHEMA_VERSION, RunDirError

    run_suite(fake_suite("methods: {plain: {}}\n"), tmp_path / "run", RunOptions(progress=False))
    manifest_path = tmp_path / "run" / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match=rf"results schema version {SCHEMA_VERSION + 1} .* reads version "
                                          rf"{SCHEMA_VERSION}\. Re-run its suite"):
        load(tmp_path / "run")
    assert main(["report", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "schema version" in err and "Traceback" not in err
    with pytest.raises(RunError, match="cannot resume: .* schema version"):
        run_suite(fake_suite("methods: {plain: {}}\n"), tmp_path / "run",
                  RunOptions(resume=True, progress=False))
