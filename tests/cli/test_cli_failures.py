"""Failures a user can cause end in one paragraph with the right exit code, never a traceback:
write failures, damaged run directories, SIGTERM and Ctrl-C, and a regression gate that cannot be
switched off by accident (non-finite thresholds, missing points)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runs import FAST, SMOKE, fake_suite_file, no_traceback

from harness import cli
from harness.cli import main
from harness.store import ENV_FILE, MANIFEST_FILE, POINTS_FILE, POINTS_LOG, load

pytestmark = pytest.mark.usefixtures("one_thread", "clean_registry")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def two_runs(tmp_path, fake_workload):
    suite = fake_suite_file(tmp_path, "sweep: {size: [2, 3]}\nmethods: {plain: {}, knob: {}}\n")
    dirs = {}
    for name in ("base", "new"):
        dirs[name] = tmp_path / name
        assert main(["run", suite, "--out", str(dirs[name]), "--no-report", "-q", *FAST]) == 0
    return dirs


def a_file(tmp_path: Path) -> Path:
    f = tmp_path / "plain-file"
    f.write_text("x")
    return f


# ------------------------------------------------------------------------------ write failures


@pytest.mark.parametrize("command", ["report", "plot"])
def test_an_unwritable_out_is_one_paragraph_with_its_own_exit_code(two_runs, tmp_path, capsys, command):
    target = a_file(tmp_path) / "sub"  # below a plain file: no user, root included, can write there
    assert main([command, str(two_runs["base"]), "--out", str(target)]) == cli.EXIT_IO
    err = no_traceback(capsys.readouterr().err)
    assert f"harness {command}: error:" in err and "plain-file" in err and "Nothing already recorded" in err


def test_compare_that_cannot_write_its_markdown_does_not_exit_1(two_runs, tmp_path, capsys):
    md = a_file(tmp_path) / "compare.md"
    code = main(["compare", str(two_runs["base"]), str(two_runs["new"]), "--threshold", "100",
                 "--markdown", str(md)])
    assert code == cli.EXIT_IO and code != cli.EXIT_FAIL  # CI must not read it as a regression
    assert "compare.md" in no_traceback(capsys.readouterr().err)


# --------------------------------------------------------------------------- damaged run dirs


def test_a_truncated_points_table_falls_back_to_the_intact_log(two_runs, capsys):
    (two_runs["base"] / POINTS_FILE).write_bytes(b"PAR1 truncated")
    assert main(["report", str(two_runs["base"])]) == 0
    no_traceback(capsys.readouterr().err)
    assert len(load(two_runs["base"]).points) == 4


@pytest.mark.parametrize(("name", "command"), [(MANIFEST_FILE, "report"), (MANIFEST_FILE, "compare"),
                                               (ENV_FILE, "report"), (ENV_FILE, "plot")])
def test_a_damaged_file_is_named_with_what_to_do(two_runs, capsys, name, command):
    path = two_runs["new"] / name
    path.write_text(path.read_text()[:20])  # truncated mid-object
    args = [str(two_runs["base"]), str(two_runs["new"])] if command == "compare" else [str(two_runs["new"])]
    assert main([command, *args]) == cli.EXIT_USAGE
    err = no_traceback(capsys.readouterr().err)
    assert str(path) in err and ("restore it" in err or "not a run this harness wrote" in err)


# ------------------------------------------------------------------------ SIGTERM and Ctrl-C


def test_sigterm_keeps_finished_points_and_prints_the_resume_hint(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", SMOKE, "--out", str(out), "--no-report", "-q", *FAST],
        cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    log = out / POINTS_LOG
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and log.read_text().count("\n") >= 1):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_TERMINATED, err
    assert "terminated (SIGTERM); finished points are saved" in err and f"--resume {out}" in err
    assert "Traceback" not in err
    done = log.read_text().count("\n")
    assert 1 <= done < 24
    assert main(["run", SMOKE, "--resume", str(out), "--no-report", "-q", *FAST]) == 0
    assert log.read_text().count("\n") == 24  # every point exactly once


def test_ctrl_c_during_the_final_report_says_the_run_is_complete(tmp_path, fake_workload, capsys,
                                                                  monkeypatch):
    def interrupted(out):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.run, "report_after_run", interrupted)
    suite = fake_suite_file(tmp_path, "methods: {plain: {}}\n")
    assert main(["run", suite, "--out", str(tmp_path / "run"), "-q", *FAST]) == cli.EXIT_INTERRUPTED
    err = no_traceback(capsys.readouterr().err)
    assert "report interrupted; the run itself is complete" in err and "harness report" in err


# ------------------------------------------------------------------------- the regression gate


@pytest.mark.parametrize("value", ["nan", "inf", "-0.5"])
def test_a_threshold_that_would_switch_the_gate_off_is_refused(two_runs, capsys, value):
    assert main(["compare", str(two_runs["base"]), str(two_runs["new"]), "--threshold", value]) == 2
    err = no_traceback(capsys.readouterr().err)
    assert "(--threshold, else the suite's regression.threshold) must be a finite number" in err


def test_points_missing_from_the_new_run_fail_the_gate_unless_allowed(two_runs, tmp_path, capsys):
    log = two_runs["new"] / POINTS_LOG
    rows = log.read_text().splitlines()
    log.write_text("\n".join(rows[:-1]) + "\n")  # the process died before recording the last point
    (two_runs["new"] / POINTS_FILE).unlink()
    missing = json.loads(rows[-1])["point_hash"]
    args = ["compare", str(two_runs["base"]), str(two_runs["new"]), "--threshold", "100"]
    assert main(args) == cli.EXIT_FAIL
    text = capsys.readouterr().out
    assert "missing from new" in text and missing[:8] in text
    assert main([*args, "--allow-missing"]) == 0
    assert "missing from new" in capsys.readouterr().out
