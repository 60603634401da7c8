"""The second break-it round: nothing written where it should not be, no regression passed for
want of a file, the right exit code and one paragraph for every fault a user can cause (README:
0 ok, 1 failed point or regression, 2 bad input, 3 I/O, 130/143 interrupted)."""

from __future__ import annotations

import errno
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_runs import FAST, SMOKE, no_traceback

from harness import cli
from harness.cli import main
from harness.store import ENV_FILE, MANIFEST_FILE, POINTS_LOG, SAMPLES_FILE, SAMPLES_LOG, RunLock, load

pytestmark = pytest.mark.usefixtures("one_thread", "clean_registry")

REPO = Path(__file__).resolve().parents[2]
@pytest.fixture
def two_runs(tmp_path, suite) -> dict[str, Path]:
    dirs = {}
    for name in ("base", "new"):
        dirs[name] = tmp_path / name
        assert main(["run", suite, "--out", str(dirs[name]), "--no-report", "-q", *FAST]) == 0
    return dirs


# ------------------------------------------------------------ 1. the run directory and its name


def test_the_default_run_directory_is_created_under_runs_and_nowhere_else(tmp_path, suite, monkeypatch,
                                                                          capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    Path(suite).write_text(Path(suite).read_text().replace("name: f", "name: ../../escaped"))
    assert main(["run", suite, "--no-report", "-q", *FAST]) == cli.EXIT_USAGE
    assert "is not a file-name component" in no_traceback(capsys.readouterr().err)
    assert not list(tmp_path.glob("escaped*")) and not (work / "runs").exists()
    Path(suite).write_text(Path(suite).read_text().replace("name: ../../escaped", "name: fine"))
    assert main(["run", suite, "--no-report", "-q", *FAST]) == 0
    [made] = list((work / "runs").iterdir())
    assert made.name.startswith("fine-") and sorted(p.name for p in work.iterdir()) == ["runs"]


def test_printed_paths_are_quoted_for_a_shell(tmp_path, suite, fake_workload, capsys):
    out = tmp_path / "my runs; $(touch pwned)"
    fake_workload.interrupt_after = 1
    assert main(["run", suite, "--out", str(out), "--no-report", "-q", *FAST]) == cli.EXIT_INTERRUPTED
    err = no_traceback(capsys.readouterr().err)
    hint = err.split("Continue with: ")[1].strip()
    argv = shlex.split(hint)  # what a user gets by pasting it
    assert argv[:2] == ["harness", "run"] and argv[argv.index("--resume") + 1] == str(out)
    assert main(argv[1:]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.endswith(f"Results: {shlex.quote(str(out))}") and "'" in line
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


# --------------------------------------------------------------------- 2. the gate cannot pass blind


def test_the_gate_cannot_pass_a_slowdown_whose_samples_files_are_missing(two_runs, capsys):
    new = two_runs["new"]
    (new / SAMPLES_LOG).unlink()
    (new / SAMPLES_FILE).unlink()
    assert main(["compare", str(two_runs["base"]), str(new)]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert "## Benchmark comparison: CANNOT JUDGE" in out
    assert "samples.jsonl and samples.parquet are missing" in out
    assert "4 point(s) could not be judged" in no_traceback(err) and "--allow-missing" in err
    assert main(["compare", str(two_runs["base"]), str(new), "--allow-missing"]) == cli.EXIT_OK


def test_a_regression_still_exits_1_when_other_points_cannot_be_judged(two_runs, capsys):
    new = two_runs["new"]
    rows = [json.loads(line) for line in (new / POINTS_LOG).read_text().splitlines()]
    rows[0]["status"] = "failed"  # a real regression (ok -> failed) beside a point without samples
    (new / POINTS_LOG).write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = [json.loads(line) for line in (new / SAMPLES_LOG).read_text().splitlines()]
    (new / SAMPLES_LOG).write_text("".join(json.dumps(s) + "\n" for s in samples
                                           if s["point_hash"] != rows[1]["point_hash"]))
    assert main(["compare", str(two_runs["base"]), str(new)]) == cli.EXIT_FAIL
    assert "REGRESSED" in capsys.readouterr().out


@pytest.mark.parametrize("side", ["base", "new"])
def test_compare_refuses_a_run_without_its_environment_fingerprint_unless_allowed(two_runs, capsys, side):
    (two_runs[side] / ENV_FILE).unlink()
    args = ["compare", str(two_runs["base"]), str(two_runs["new"])]
    assert main(args) == cli.EXIT_USAGE
    err = no_traceback(capsys.readouterr().err)
    assert f"{two_runs[side]} has no env.json" in err and "--allow-env-mismatch" in err
    assert main([*args, "--allow-env-mismatch", "--threshold", "100"]) == cli.EXIT_OK  # 2 samples: no test
    assert f"env.json missing from {two_runs[side]}" in capsys.readouterr().out


def test_resume_refuses_a_run_without_its_environment_fingerprint_unless_allowed(two_runs, suite, capsys):
    run = two_runs["new"]
    (run / ENV_FILE).unlink()
    args = ["run", suite, "--resume", str(run), "--no-report", "-q", *FAST]
    assert main(args) == cli.EXIT_USAGE
    assert "env.json is missing, so the machine that started the run is unknown" in capsys.readouterr().err
    assert main([*args, "--allow-env-mismatch"]) == cli.EXIT_OK
    assert len(load(run).manifest["resumed"]) == 1


def test_report_says_the_fingerprint_is_missing_instead_of_describing_this_machine(two_runs, capsys):
    (two_runs["new"] / ENV_FILE).unlink()
    assert main(["report", str(two_runs["new"])]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "environment: unknown (env.json is missing" in out and "device cpu" not in out


def test_compare_refuses_a_run_that_is_still_being_written(two_runs, capsys):
    with RunLock(two_runs["new"]):
        assert main(["compare", str(two_runs["base"]), str(two_runs["new"])]) == cli.EXIT_USAGE
    err = no_traceback(capsys.readouterr().err)
    assert f"{two_runs['new']} is still being written by pid {os.getpid()}" in err
    assert "REGRESS" not in err


# ------------------------------------------------------------------ 4. a merge keeps every history


def test_merge_keeps_the_resume_history_of_every_shard(tmp_path, suite, capsys):
    shards = [tmp_path / f"s{i}" for i in (0, 1)]
    for i, d in enumerate(shards):
        args = ["run", suite, "--out", str(d), "--shard", f"{i}/2", "--no-report", "-q", *FAST]
        assert main(args) == 0
        for _ in range(i + 1):  # shard 0 resumed once, shard 1 twice
            assert main(["run", suite, "--resume", str(d), "--shard", f"{i}/2", "--no-report", "-q",
                         *FAST]) == 0
    assert main(["merge", *map(str, shards), "--out", str(tmp_path / "m"), "--no-report"]) == 0
    manifest = load(tmp_path / "m").manifest
    assert "resumed" not in manifest  # the merged run itself was never resumed
    histories = [m["resumed"] for m in manifest["merged_from"]]
    assert [len(h) for h in histories] == [1, 2]
    assert histories == [load(d).manifest["resumed"] for d in shards]


# ------------------------------------------------------------------------- 6. --dry-run --shard


def test_dry_run_lists_the_points_of_the_shard_it_is_given_and_only_those(tmp_path, suite, capsys):
    listed = []
    for i in (0, 1):
        assert main(["run", suite, "--dry-run", "--shard", f"{i}/2"]) == 0
        out = capsys.readouterr().out
        assert f"shard {i}/2: 2 of 4 points" in out
        listed.append({w[0] for w in map(str.split, out.splitlines()[2:])
                       if w and len(w[0]) == 16 and set(w[0]) <= set("0123456789abcdef")})
        assert main(["run", suite, "--out", str(tmp_path / f"s{i}"), "--shard", f"{i}/2", "--no-report", "-q",
                     *FAST]) == 0
        assert listed[i] == set(load(tmp_path / f"s{i}").points["point_hash"])
    assert listed[0].isdisjoint(listed[1]) and len(listed[0] | listed[1]) == 4


# ----------------------------------------------------------------------------- 7. write failures


def test_a_full_disk_while_writing_the_tables_names_the_file_keeps_the_points_and_leaves_no_tmp(
        tmp_path, suite, monkeypatch, capsys):
    real = pd.DataFrame.to_parquet

    def full_disk(self, path, *a, **kw):
        Path(path).write_bytes(b"PAR1 half")  # what a write cut short leaves behind
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write to an open file: no file name

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full_disk)
    out = tmp_path / "run"
    assert main(["run", suite, "--out", str(out), "--no-report", "-q", *FAST]) == cli.EXIT_IO
    err = no_traceback(capsys.readouterr().err)
    assert f"{out / 'points.parquet'}: No space left on device" in err and "every point recorded" in err
    assert "--resume" in err and "--out DIR" not in err
    assert not list(out.glob("*.tmp"))
    assert len((out / POINTS_LOG).read_text().splitlines()) == 4
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    again = shlex.split(err.split("continue with: ")[1].strip())
    assert main(again[1:]) == cli.EXIT_OK and len(load(out).points) == 4


def test_resume_on_a_full_disk_exits_3_with_advice_it_can_follow_and_leaves_nothing_behind(two_runs, suite):
    run = two_runs["new"]
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}
    code = ("import resource, signal, sys\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "import conftest\n"  # the fake workload of the suite
            "from harness import registry\n"
            "from harness.cli import main\n"
            "registry.load_builtins(); registry.register_workload(conftest.FakeWorkload)\n"
            "from harness.registry import MethodSpec\n"
            "for m, p in (('plain', conftest.PlainParams), ('knob', conftest.KnobParams)):\n"
            "    registry.register_method(MethodSpec(m, p, lambda p: None, ('fake',)))\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # a full disk, for this process\n"
            "sys.exit(main(sys.argv[2:]))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests" / "helpers")]))
    args = ["run", suite, "--resume", str(run), "--no-report", "-q", *FAST]
    proc = subprocess.run([sys.executable, "-c", code, str(REPO / "tests"), *args], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == cli.EXIT_IO, proc.stderr
    err = no_traceback(proc.stderr)
    assert "File too large" in err and str(run) in err and "--out" not in err
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}
    assert after == before  # no probe file, nothing changed


def test_an_out_the_system_refuses_to_create_exits_3(tmp_path, suite, capsys):
    target = Path("/sys/harness-test-run")  # sysfs: refused even to root
    if os.access("/sys", os.W_OK) and not target.parent.is_mount():
        pytest.skip("/sys is writable here")
    assert main(["run", suite, "--out", str(target), "--no-report", "-q", *FAST]) == cli.EXIT_IO
    err = no_traceback(capsys.readouterr().err)
    assert f"cannot write the run directory {target}" in err and not target.exists()


# ------------------------------------------------------------------------------- 8. plugins


@pytest.mark.parametrize("name, body, expected", [
    ("{dir}/plug_a.py", None, "a file path, where a module name is needed: put its folder on PYTHONPATH and "
                              "name the module (PYTHONPATH={dir} HARNESS_PLUGINS=plug_a)"),
    (".plug_a", None, "which is not a module name"),
    ("plug_raises", "raise RuntimeError('no GPU here')",
     "module 'plug_raises' failed while it was imported: RuntimeError: no GPU here "
     "(at {dir}/plug_raises.py:1)"),
    ("plug_exits", "import sys\nsys.exit(1)",
     "module 'plug_exits' failed while it was imported: SystemExit: 1"),
    ("plug_needs", "import not_installed_anywhere_zz",
     "module 'plug_needs' imports 'not_installed_anywhere_zz', which is not installed"),
    ("no_such_plugin_zz", None, "names module 'no_such_plugin_zz', which cannot be imported"),
])
def test_a_plugin_problem_is_one_paragraph_with_exit_2_never_a_traceback_or_exit_1(
        tmp_path, monkeypatch, capsys, name, body, expected):
    (tmp_path / "plug_a.py").write_text("")
    if body is not None:
        (tmp_path / f"{name}.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HARNESS_PLUGINS", name.format(dir=tmp_path))
    for command in (["list"], ["run", SMOKE, "--dry-run"]):
        assert main(command) == cli.EXIT_USAGE
        err = no_traceback(capsys.readouterr().err)
        assert expected.format(dir=tmp_path) in err and len(err.strip().splitlines()) == 1


# -------------------------------------------------------------------------- 9. misleading messages


@pytest.mark.parametrize("kind, expected", [
    ("dir", "is a directory, not a file"), ("loop", "cannot be reached: Too many levels of symbolic links"),
    ("fifo", "is a named pipe (FIFO), not a regular file"), ("dangling", "is a symbolic link to"),
])
def test_a_suite_path_that_is_not_a_regular_file_says_what_it_is(tmp_path, capsys, kind, expected):
    p = tmp_path / "given"
    if kind == "dir":
        p.mkdir()
        (p / "inside.yaml").write_text("")
    elif kind == "loop":
        p.symlink_to(tmp_path / "other")
        (tmp_path / "other").symlink_to(p)
    elif kind == "fifo":
        os.mkfifo(p)  # opening it would block: the harness must not
    else:
        p.symlink_to(tmp_path / "nowhere")
    assert main(["run", str(p), "--dry-run"]) == cli.EXIT_USAGE
    err = no_traceback(capsys.readouterr().err)
    assert f"suite file {str(p)!r} {expected}" in err and "not found" not in err
    if kind == "dir":
        assert "suite files in it: inside.yaml" in err


@pytest.mark.parametrize("command", [["report"], ["plot"], ["profile"], ["merge"], ["compare", "{run}"]])
def test_a_file_given_as_a_run_directory_is_called_a_file(two_runs, tmp_path, capsys, command):
    f = tmp_path / "results.txt"
    f.write_text("x")
    args = [*(a.format(run=two_runs["base"]) for a in command), str(f)]
    assert main(args + (["--out", str(tmp_path / "m")] if command == ["merge"] else [])) == cli.EXIT_USAGE
    err = no_traceback(capsys.readouterr().err)
    assert f"run directory {str(f)!r} is a file, not a directory" in err and "not found" not in err


def test_resume_of_a_file_or_of_nothing_says_so_and_creates_nothing(tmp_path, suite, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["run", suite, "--resume", str(f), "-q"]) == cli.EXIT_USAGE
    assert "it is a file, not a directory" in no_traceback(capsys.readouterr().err)
    assert main(["run", suite, "--resume", str(tmp_path / "nothing"), "-q"]) == cli.EXIT_USAGE
    assert "it does not exist" in no_traceback(capsys.readouterr().err)
    assert not (tmp_path / "nothing").exists()


def test_merge_onto_an_existing_run_does_not_advise_an_option_merge_lacks(two_runs, tmp_path, capsys):
    assert main(["merge", str(two_runs["base"]), "--out", str(two_runs["new"])]) == cli.EXIT_USAGE
    err = no_traceback(capsys.readouterr().err)
    assert "already holds a run" in err and "--resume" not in err and "Choose a new --out" in err


@pytest.mark.parametrize("command", ["report", "plot"])
def test_an_out_that_is_a_file_is_called_one_not_a_full_disk(two_runs, tmp_path, capsys, command):
    f = tmp_path / "taken"
    f.write_text("x")
    assert main([command, str(two_runs["base"]), "--out", str(f)]) == cli.EXIT_IO
    err = no_traceback(capsys.readouterr().err)
    assert "a file stands where a folder is needed" in err and "free space" not in err


@pytest.mark.parametrize("value", ["-1/2", "-3/4"])
def test_a_negative_shard_is_refused_for_its_value(suite, capsys, value):
    with pytest.raises(SystemExit) as e:
        main(["run", suite, "--dry-run", "--shard", value])
    assert e.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "argument --shard:" in err and "expected one argument" not in err


# ---------------------------------------------------------------------- 10. silent small things


def test_compare_warns_about_duplicate_rows_as_report_does(two_runs, capsys):
    log = two_runs["new"] / POINTS_LOG
    log.write_text(log.read_text() + log.read_text().splitlines(keepends=True)[0])
    # 2 samples a side test nothing: a threshold no noise reaches keeps this about the warning
    assert main(["compare", str(two_runs["base"]), str(two_runs["new"]), "--threshold", "100"]) == cli.EXIT_OK
    out, err = capsys.readouterr()
    assert f"warning: new run {two_runs['new']}: 1 duplicate row(s) in the points log" in err
    assert "Warning: new run" in out and "duplicate row(s)" in out


@pytest.mark.parametrize("command", ["merge", "run"])
def test_a_new_run_inside_another_run_directory_is_refused(two_runs, suite, capsys, command):
    inside = two_runs["base"] / "profiles" / "merged"
    args = (["merge", str(two_runs["new"]), "--out", str(inside)] if command == "merge"
            else ["run", suite, "--out", str(inside), "-q"])
    assert main(args) == cli.EXIT_USAGE
    err = no_traceback(capsys.readouterr().err)
    assert f"is inside the run directory {two_runs['base']}" in err and not inside.exists()
    assert sorted(p.name for p in two_runs["base"].iterdir()) == sorted(
        p.name for p in two_runs["new"].iterdir())  # nothing added to the outer run
    assert (two_runs["base"] / MANIFEST_FILE).exists()
