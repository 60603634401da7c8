"""CLI: the attention smoke suite end to end, dry runs, exit codes, user errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runs import FAST, SMOKE, fake_suite_file

from harness.cli import main
from harness.models.seam import attention_flops
from harness.store import columns as C
from harness.store import load

pytestmark = pytest.mark.usefixtures("one_thread", "clean_registry")

REPO = Path(__file__).resolve().parents[2]
def test_attention_smoke_suite_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", SMOKE, "--out", str(out), "--no-report", "-q", *FAST]) == 0
    run = load(out)
    pts = run.points
    assert len(pts) == 24 and set(pts[C.STATUS]) == {C.OK}
    assert pts[C.HASH].is_unique
    assert set(pts[C.METHOD]) == {"sdpa", "math"}
    assert (pts[C.N_SAMPLES] == 2).all()
    assert (pts["fid_cos"] > 0.9999).all() and (pts["fid_max_abs_err"] < 1e-4).all()
    assert (pts.loc[pts[C.METHOD] == "sdpa", "fid_max_abs_err"] == 0).all()  # the reference itself
    row = pts.iloc[-1]
    assert row["work_attn_flops"] == attention_flops(1, row["heads"], row["seq_len"], row["seq_len"],
                                                     row["head_dim"])
    assert run.manifest["preset"] == "cpu" and run.suite["reference"] == "sdpa"
    assert "24/24 points run: 24 ok" in capsys.readouterr().out


def test_dry_run_prints_points_and_writes_nothing(tmp_path, capsys):
    assert main(["run", SMOKE, "--dry-run", "--out", str(tmp_path / "run")]) == 0
    text = capsys.readouterr().out
    assert "24 points" in text and "preset cpu" in text
    header = next(line for line in text.splitlines() if line.startswith("hash"))
    assert header.split() == ["hash", "method", "seq_len", "heads", "head_dim"]
    assert "same for every point: batch=1, device=cpu, dtype=float32, seed=0" in text
    assert not (tmp_path / "run").exists()


def test_suite_error_exits_2_with_one_paragraph_and_no_traceback(tmp_path, capsys):
    assert main(["run", SMOKE, "--set", "heads=[2, ten]", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--set heads=[2, ten]: fixed.heads: [2, 'ten'] is a list" in err
    assert "Traceback" not in err


def test_missing_suite_file_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert "suite file" in err and "not found" in err and "Traceback" not in err


def test_failed_points_make_run_exit_1_unless_allowed(tmp_path, fake_workload, capsys):
    suite = fake_suite_file(tmp_path, "sweep: {mode: [ok, raise]}\nmethods: {plain: {}}\n")
    assert main(["run", suite, "--out", str(tmp_path / "a"), "--no-report", "-q", *FAST]) == 1
    assert "1 point(s) did not finish ok" in capsys.readouterr().err
    allowed = ["run", suite, "--out", str(tmp_path / "b"), "--no-report", "-q", "--allow-failures", *FAST]
    assert main(allowed) == 0
    assert sorted(load(tmp_path / "b").points[C.STATUS]) == [C.FAILED, C.OK]


def test_an_unwritable_out_is_an_io_error_exit_3(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["run", SMOKE, "--out", str(tmp_path / "file" / "run"), "-q", *FAST]) == 3
    err = capsys.readouterr().err
    assert "cannot write the run directory" in err and "Not a directory" in err


def test_interrupt_exits_130_and_resume_finishes(tmp_path, fake_workload, capsys):
    suite = fake_suite_file(tmp_path, "sweep: {size: [2, 3, 4]}\nmethods: {plain: {}}\n")
    out = str(tmp_path / "run")
    fake_workload.interrupt_after = 1
    assert main(["run", suite, "--out", out, "--no-report", "-q", *FAST]) == 130
    assert f"--resume {out}" in capsys.readouterr().err
    assert main(["run", suite, "--resume", out, "--no-report", "-q", *FAST]) == 0
    assert "2/3 points run: 2 ok (1 already recorded, skipped)" in capsys.readouterr().out
    assert load(out).points[C.HASH].is_unique and len(load(out).points) == 3


def test_resume_with_other_settings_exits_2(tmp_path, fake_workload, capsys):
    suite = fake_suite_file(tmp_path, "methods: {plain: {}}\n")
    out = str(tmp_path / "run")
    assert main(["run", suite, "--out", out, "--no-report", "-q", *FAST]) == 0
    assert main(["run", suite, "--resume", out, "--no-report", "-q", "--set", "seed=3", *FAST]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_failing_report_does_not_lose_the_run(tmp_path, fake_workload, capsys, monkeypatch):
    from harness.cli import common

    def broken(run_dir, out_dir=None):
        raise RuntimeError("no tables today")

    monkeypatch.setattr(common, "report", broken)
    suite = fake_suite_file(tmp_path, "methods: {plain: {}}\n")
    assert main(["run", suite, "--out", str(tmp_path / "run"), "-q", *FAST]) == 0
    err = capsys.readouterr().err
    assert "warning: the report failed (RuntimeError: no tables today)" in err
    assert f"harness report {tmp_path / 'run'}" in err
    assert len(load(tmp_path / "run").points) == 1


def test_list_shows_workloads_methods_parameters_and_suites(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "workload attention" in text and "method sdpa" in text and "method math" in text
    seq = next(line for line in text.splitlines() if line.strip().startswith("seq_len"))
    assert seq.split()[:4] == ["seq_len", "int", "256", "int"] and "tokens N" in seq
    assert "one of 'float32', 'bfloat16', 'float16'" in text
    assert "attention-smoke" in text and "presets: cpu, gpu (default cpu)" in text


def test_list_unknown_workload_exits_2(capsys):
    assert main(["list", "--workload", "attenton"]) == 2
    assert "did you mean 'attention'?" in capsys.readouterr().err


def test_env_prints_a_json_fingerprint(capsys):
    assert main(["env"]) == 0
    fp = json.loads(capsys.readouterr().out)
    assert fp["argv"] == ["harness", "env"] and "torch" in fp


def test_report_of_a_missing_run_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run directory" in capsys.readouterr().err


def test_report_and_compare_read_a_finished_run(tmp_path, fake_workload, capsys):
    suite = fake_suite_file(tmp_path, "sweep: {size: [2, 3]}\nmethods: {plain: {}}\n")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for out in (a, b):
        assert main(["run", suite, "--out", out, "--no-report", "-q", *FAST]) == 0
    capsys.readouterr()
    assert main(["report", a, "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep").is_dir() and capsys.readouterr().out.strip()
    md = tmp_path / "cmp.md"
    assert main(["compare", a, b, "--markdown", str(md), "--threshold", "1000"]) == 0
    assert "f" in md.read_text() and md.read_text().strip()


def test_compare_with_no_common_points_exits_2(tmp_path, fake_workload, capsys):
    a = fake_suite_file(tmp_path, "fixed: {size: 2}\nmethods: {plain: {}}\n")
    assert main(["run", a, "--out", str(tmp_path / "a"), "--no-report", "-q", *FAST]) == 0
    assert main(["run", a, "--out", str(tmp_path / "b"), "--no-report", "-q", "--set", "size=3", *FAST]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness compare: error:") and "Traceback" not in err


def test_compare_with_bad_alpha_exits_2(tmp_path, fake_workload, capsys):
    suite = fake_suite_file(tmp_path, "methods: {plain: {}}\n")
    assert main(["run", suite, "--out", str(tmp_path / "a"), "--no-report", "-q", *FAST]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--alpha", "2"]) == 2
    assert "significance level (--alpha, else the suite's regression.alpha) must be in (0, 1)" in \
        capsys.readouterr().err
