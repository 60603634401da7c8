"""``harness run`` with ``timing.mode: instructions``: what it refuses before anything is written, the
command line it runs under valgrind, and (where valgrind is installed) a whole counted run."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from cli_runs import no_traceback

from harness.cli.app import main
from harness.cli.under_callgrind import child_argv
from harness.store import columns as C

COUNTED = ["--set", "timing.mode=instructions"]
HAVE_VALGRIND = shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def test_without_valgrind_one_paragraph_names_the_package_and_nothing_is_written(
        suite, tmp_path, monkeypatch, capsys) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = tmp_path / "run"
    assert main(["run", suite, "--out", str(out), *COUNTED]) == 2
    err = no_traceback(capsys.readouterr().err)
    assert "valgrind" in err and "apt-get install valgrind" in err and "Nothing was written" in err
    assert err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(("extra", "said"), [
    (["--set", "device=cuda"], "points of .* run on cuda: set fixed.device=cpu"),
    (["--executor", "ray"], "--executor ray is not supported"),
])
def test_points_on_a_gpu_or_on_ray_are_refused_before_anything_is_written(
        suite, tmp_path, capsys, extra, said) -> None:
    out = tmp_path / "run"
    assert main(["run", suite, "--out", str(out), *COUNTED, *extra]) == 2
    err = no_traceback(capsys.readouterr().err)
    assert re.search(said, err), err
    assert not out.exists()


def test_an_unknown_timing_mode_names_the_allowed_ones(suite, tmp_path, capsys) -> None:
    assert main(["run", suite, "--out", str(tmp_path / "r"), "--set", "timing.mode=cycles"]) == 2
    err = no_traceback(capsys.readouterr().err)
    assert "timing.mode" in err and "'time'" in err and "'instructions'" in err


def test_the_child_writes_where_the_parent_said_and_leaves_the_report_to_it() -> None:
    out = Path("runs/x-1")
    assert child_argv(["run", "s.yaml"], out, resume=False) == \
        ["run", "s.yaml", "--out", "runs/x-1", "--no-report"]
    assert child_argv(["run", "s.yaml", "--out=o", "--no-report"], out, resume=False) == \
        ["run", "s.yaml", "--out=o", "--no-report"]
    assert child_argv(["run", "s.yaml", "--resume", "o"], out, resume=True) == \
        ["run", "s.yaml", "--resume", "o", "--no-report"]


@pytest.mark.slow
def test_a_counted_run_records_instructions_reports_outside_valgrind_and_leaves_no_dump(
        real_counted_run) -> None:
    """On the shared counted run (tests/conftest.py), made by ``main(["run", ...])`` under valgrind."""
    assert real_counted_run.exit_code == 0, real_counted_run.stderr
    out = real_counted_run.out
    rows = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r[C.STATUS] == C.OK for r in rows), rows
    for row in rows:
        assert row[C.TIMER] == "callgrind" and row[C.STOP_REASON] == C.STOP_COUNTED and row[C.N_SAMPLES] == 6
        assert row[C.INSTRUCTIONS_MIN] <= row[C.INSTRUCTIONS] <= row[C.INSTRUCTIONS_MAX]
        # calls of tens of millions of instructions: their counts repeat within a few hundredths of a percent
        assert row[C.INSTRUCTIONS] > 1_000_000 and row[C.INSTRUCTIONS_SPREAD] < 0.002
        assert not any(k.startswith(C.EFFICIENCY_PREFIX) for k in row)  # no efficiency from valgrind's times
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    first = [s[C.INSTRUCTIONS] for s in samples if s[C.HASH] == rows[0][C.HASH]]
    assert len(first) == 6
    assert (min(first), max(first)) == (rows[0][C.INSTRUCTIONS_MIN], rows[0][C.INSTRUCTIONS_MAX])
    assert (out / "report" / "report.md").exists()  # made by the parent, after the child
    assert [p.name for p in real_counted_run.dumps_dir.iterdir() if p.name.startswith("harness-")] == []


class FakeChild:
    """Stands in for the valgrind child: ``waits`` are what successive wait() calls do (an exit code,
    or an exception to raise)."""

    def __init__(self, waits):
        self.waits, self.signals = list(waits), []

    def __call__(self, cmd, env):
        self.cmd, self.env = cmd, env
        return self

    def wait(self):
        w = self.waits.pop(0)
        if isinstance(w, BaseException):
            raise w
        return w

    def send_signal(self, sig):
        self.signals.append(sig)


@pytest.fixture
def fake_valgrind(monkeypatch, tmp_path):
    from harness.cli import under_callgrind

    monkeypatch.setattr(under_callgrind, "valgrind_problem", lambda: None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def install(waits):
        child = FakeChild(waits)
        monkeypatch.setattr(under_callgrind.subprocess, "Popen", child)
        return child

    return install


def test_the_child_is_valgrind_running_this_command_and_threads_other_than_one_are_warned_about(
        suite, tmp_path, fake_valgrind, capsys) -> None:
    child = fake_valgrind([0])
    out = tmp_path / "run"
    assert main(["run", suite, "--out", str(out), "--no-report", *COUNTED]) == 0
    assert child.cmd[0] == "valgrind" and {"--tool=callgrind", "--instr-atstart=no"} <= set(child.cmd)
    assert child.cmd[-9:] == ["-m", "harness.cli", "run", suite, "--out", str(out), "--no-report", *COUNTED]
    assert child.env["PYTHONHASHSEED"] == "0" and child.env["HARNESS_CALLGRIND_OUT"].endswith("callgrind.out")
    err = no_traceback(capsys.readouterr().err)
    assert "threads=the default" in err and "set fixed.threads=1" in err
    assert list((tmp_path / "tmp").iterdir()) == []  # the dumps' folder is removed after the child


def test_ctrl_c_waits_for_the_child_and_a_crash_of_valgrind_keeps_its_log(suite, tmp_path, fake_valgrind,
                                                                          capsys) -> None:
    fake_valgrind([KeyboardInterrupt(), 130])
    argv = ["run", suite, "--out", str(tmp_path / "r1"), "--set", "threads=1", *COUNTED]
    assert main(argv) == 130  # the child saved its points and printed how to resume
    fake_valgrind([-11])
    assert main(["run", suite, "--out", str(tmp_path / "r2"), "--set", "threads=1", *COUNTED]) == -11
    err = no_traceback(capsys.readouterr().err)
    assert "valgrind exited with -11; its log is kept in" in err and "warning: points" not in err
    kept = list((tmp_path / "tmp").iterdir())
    assert len(kept) == 1 and str(kept[0]) in err
