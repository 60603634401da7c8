"""The break-it round over what the reliability issue's own fixes and the newer features touch:
damaged run files that parse but hold the wrong thing, rows that cannot be rows, a gate that must
not write over a run, Ctrl-C during start-up, plugins that replace or orphan methods, a method
that exits or returns the wrong shape."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_runs import FAST, SMOKE, fake_suite_file, no_traceback

from harness import cli, registry
from harness.cli import main
from harness.registry import MethodSpec, PluginError, RegistryError
from harness.store import ENV_FILE, MANIFEST_FILE, METRICS_FILE, POINTS_LOG, SUITE_FILE, load
from harness.store import columns as C

pytestmark = pytest.mark.usefixtures("one_thread", "clean_registry")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_dir(tmp_path, suite) -> Path:
    out = tmp_path / "run"
    assert main(["run", suite, "--out", str(out), "--no-report", "-q", *FAST]) == 0
    return out


# ----------------------------------------------------------- run files that parse but are wrong


@pytest.mark.parametrize("name, text", [(MANIFEST_FILE, "[]"), (MANIFEST_FILE, "{}"), (ENV_FILE, "[1]"),
                                        (METRICS_FILE, "[]"), (SUITE_FILE, "[]"), (SUITE_FILE, "")])
@pytest.mark.parametrize("command", ["report", "compare"])
def test_a_run_file_holding_the_wrong_kind_of_value_is_named_as_damaged(run_dir, capsys, name, text, command):
    (run_dir / name).write_text(text)
    args = [str(run_dir), str(run_dir)] if command == "compare" else [str(run_dir)]
    assert main([command, *args]) == cli.EXIT_USAGE
    err = no_traceback(capsys.readouterr().err)
    assert str(run_dir / name) in err and "is damaged" in err and "schema version None" not in err


def test_a_missing_suite_file_is_named_and_resume_writes_it_again(run_dir, suite, capsys):
    (run_dir / SUITE_FILE).unlink()
    assert main(["report", str(run_dir)]) == cli.EXIT_USAGE
    err = no_traceback(capsys.readouterr().err)
    assert f"{run_dir / SUITE_FILE} is missing" in err and "older harness" not in err
    assert main(["run", suite, "--resume", str(run_dir), "--no-report", "-q", *FAST]) == 0
    assert "suite.resolved.yaml was missing or damaged" in capsys.readouterr().err
    assert main(["report", str(run_dir)]) == 0


@pytest.mark.parametrize("change, reason", [
    ({C.LAT_MEDIAN: "fast"}, "latency_median_ms is 'fast', not a number"),
    ({C.STATUS: 5}, "status is 5, not one of ok, failed, oom, nan"),
    ({C.LAT_MEDIAN: None}, "an ok point without a latency"),
    ({C.HASH: None}, "point_hash is None, not a name"),
    ({C.METHOD: ""}, "method is '', not a name"),
])
def test_a_row_that_cannot_be_a_point_is_a_damaged_line_everywhere(run_dir, suite, capsys, change, reason):
    log = run_dir / POINTS_LOG
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    rows[1].update(change)
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", str(run_dir)]) == 0
    err = no_traceback(capsys.readouterr().err)
    assert "points.jsonl line 2" in err and reason in err
    assert len(load(run_dir).points) == 3
    assert main(["run", suite, "--resume", str(run_dir), "--no-report", "-q", *FAST]) == 0
    run = load(run_dir)
    assert run.damaged == [] and len(run.points) == 4 and (run.points[C.STATUS] == C.OK).all()
    assert (run_dir / (POINTS_LOG + ".damaged")).read_text().strip() == json.dumps(rows[1])  # kept aside


def test_damaged_sample_lines_are_not_promised_to_run_again(run_dir, capsys):
    (run_dir / "samples.jsonl").write_text("{bad\n")
    (run_dir / "samples.parquet").unlink()
    assert main(["report", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "samples.jsonl line 1" in err and "run it again in a new run for new samples" in err
    assert "runs those points again" not in err.split("samples.jsonl line 1")[1].split("warning")[0]


def test_a_damaged_operator_log_is_said_to_be_unreadable_not_missing(run_dir, capsys):
    (run_dir / "ops.jsonl").write_text("{broken\n")
    assert main(["report", str(run_dir), "--ops"]) == 0
    out = capsys.readouterr().out
    assert "warning: ops.jsonl line 1" in out and "no row of its operator log (ops.jsonl) can be read" in out
    assert "has no operator table" not in out and out.endswith("\n")


# --------------------------------------------------------------------------------- the gate


@pytest.mark.parametrize("name", [POINTS_LOG, MANIFEST_FILE, "new.md"])
def test_compare_never_writes_its_markdown_into_a_run_directory(run_dir, capsys, name):
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert main(["compare", str(run_dir), str(run_dir), "--markdown", str(run_dir / name)]) == cli.EXIT_USAGE
    assert "lies inside the run directory" in no_traceback(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_an_output_folder_that_does_not_exist_is_an_io_error_with_advice(run_dir, tmp_path, capsys):
    md = tmp_path / "no" / "such" / "folder" / "gate.md"
    assert main(["compare", str(run_dir), str(run_dir), "--markdown", str(md)]) == cli.EXIT_IO
    err = no_traceback(capsys.readouterr().err)
    assert str(md) in err and "a folder on that path does not exist" in err


def test_comparing_against_a_complete_run_of_another_suite_is_not_a_regression(tmp_path, suite, capsys):
    (tmp_path / "o").mkdir()
    other = fake_suite_file(tmp_path / "o", "sweep: {size: [2]}\nmethods: {plain: {}, knob: {}}\n")
    assert main(["run", suite, "--out", str(tmp_path / "base"), "--no-report", "-q", *FAST]) == 0
    assert main(["run", other, "--out", str(tmp_path / "new"), "--no-report", "-q", *FAST]) == 0
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "new"), "--threshold", "100"]) == 0
    out = capsys.readouterr().out
    assert "the runs resolved different suites" in out and "not in new's suite" in out


# --------------------------------------------------------------------------- start-up and list


def wait_until_importing_torch(proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Block until ``proc`` has mapped libtorch, i.e. is inside the command line's heavy imports
    (its signal handlers installed, seconds of imports still ahead). A fixed sleep raced on a
    loaded machine: the signal arrived before the interpreter had installed its handlers."""
    maps = Path(f"/proc/{proc.pid}/maps")
    if not maps.exists():  # no procfs: fall back to a generous wait
        time.sleep(1.0)
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if "libtorch" in maps.read_text():
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"the command line never imported torch within {timeout_s:.0f} s "
                         f"(exit code {proc.poll()})")


def test_ctrl_c_while_the_command_line_starts_exits_130_without_a_traceback():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "harness.console", "list"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_until_importing_torch(proc)  # inside the imports of torch and the reports (seconds)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_INTERRUPTED and "Traceback" not in err
    assert "interrupted" in err


def test_list_of_an_empty_workload_name_is_refused(capsys):
    assert main(["list", "--workload", ""]) == cli.EXIT_USAGE
    assert "unknown workload ''" in capsys.readouterr().err


def test_an_ambiguous_point_prefix_names_the_points_it_matches(run_dir, capsys):
    hashes = sorted(r["point_hash"] for r in map(json.loads, (run_dir / POINTS_LOG).read_text().splitlines()))
    prefix = os.path.commonprefix(hashes[:2]) or ""
    if len(prefix) == 0 or sum(h.startswith(prefix) for h in hashes) < 2:
        prefix = ""  # every hash starts with the empty prefix
    assert main(["profile", str(run_dir), "--point", prefix]) == cli.EXIT_USAGE
    err = no_traceback(capsys.readouterr().err)
    matching = [h for h in hashes if h.startswith(prefix)]
    assert f"matches {len(matching)} recorded points" in err and all(h in err for h in matching[:6])
    assert "report/points.csv" in err


# ----------------------------------------------------------------------------------- plugins


def test_a_method_without_a_default_for_a_parameter_is_refused_at_registration():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class NoDefault:
        keep: float

    with pytest.raises(RegistryError, match=r"parameters \['keep'\] have no default"):
        registry.register_method(MethodSpec("nodefault", NoDefault, lambda p: None, ("attention",)))


def test_a_method_registered_for_a_workload_nobody_registers_stops_the_command(capsys):
    registry._METHODS[("nosuchworkload", "lost")] = MethodSpec("lost", type("P", (), {}), lambda p: None,
                                                               ("nosuchworkload",))
    with pytest.raises(PluginError, match="'lost' for 'nosuchworkload'"):
        registry.load_builtins()
    assert main(["list"]) == cli.EXIT_USAGE
    assert "known workloads: attention" in capsys.readouterr().err


def test_a_plugin_that_replaces_a_built_in_method_is_on_record_and_blocks_compare(tmp_path, capsys):
    plain = tmp_path / "plain"
    assert main(["run", SMOKE, "--out", str(plain), "--no-report", "-q", "--set", "seq_len=128",
                 "--set", "heads=2", "--set", "head_dim=32", *FAST]) == 0
    spec = registry.get_method("attention", "sdpa")
    with pytest.warns(UserWarning, match="registered again"):
        registry.register_method(MethodSpec("sdpa", spec.params, spec.build, ("attention",), "a replacement"))
    swapped = tmp_path / "swapped"
    assert main(["run", SMOKE, "--out", str(swapped), "--no-report", "-q", "--set", "seq_len=128",
                 "--set", "heads=2", "--set", "head_dim=32", *FAST]) == 0
    assert load(swapped).env["plugins"]["replaced"] == ["attention/sdpa"]
    assert main(["compare", str(plain), str(swapped)]) == cli.EXIT_USAGE
    assert "plugins differ" in capsys.readouterr().err


# --------------------------------------------------------------------------- method misbehaviour


def run_with_method(tmp_path: Path, name: str, build) -> pd.DataFrame:
    """Register attention method ``name`` (built by ``build``, sdpa's knobs), run it beside sdpa on
    one small point (exit code 1: it fails) and return the rows by method."""
    registry.register_method(MethodSpec(name, registry.get_method("attention", "sdpa").params, build,
                                        ("attention",)))
    s = tmp_path / "s.yaml"
    s.write_text("name: s\nworkload: attention\nfixed: {seq_len: 32, heads: 2, head_dim: 16, threads: 1}\n"
                 f"methods: {{{name}: {{}}, sdpa: {{}}}}\n")
    assert main(["run", str(s), "--out", str(tmp_path / "run"), "--no-report", "-q", *FAST]) == cli.EXIT_FAIL
    return load(tmp_path / "run").points.set_index(C.METHOD)


def test_a_method_that_calls_sys_exit_fails_its_point_and_the_sweep_goes_on(tmp_path):
    def exiting(params):
        def attn(q, k, v, layout):
            raise SystemExit(3)  # a plugin's bug: must not end the run, nor exit 3 (the I/O code)

        return attn

    pts = run_with_method(tmp_path, "exiter", exiting)
    assert pts.at["exiter", C.STATUS] == C.FAILED and "SystemExit: 3" in pts.at["exiter", C.ERROR]
    assert pts.at["sdpa", C.STATUS] == C.OK


def test_an_attention_method_returning_the_wrong_shape_fails_naming_the_method(tmp_path):
    def halves(params):
        sdpa = registry.create_method("attention", "sdpa", registry.get_method("attention", "sdpa").params())
        return lambda q, k, v, layout: sdpa(q, k, v, layout)[..., :1]

    err = run_with_method(tmp_path, "badshape", halves).at["badshape", C.ERROR]
    assert "method 'badshape' returned (1, 2, 32, 1), but an attention function returns the shape of q" in err


def test_a_merged_single_shard_resumes_with_the_command_it_prints(tmp_path, suite, capsys):
    shard = tmp_path / "s0"
    assert main(["run", suite, "--out", str(shard), "--shard", "0/2", "--no-report", "-q", *FAST]) == 0
    merged = tmp_path / "m"
    assert main(["merge", str(shard), "--out", str(merged), "--no-report"]) == 0
    assert "--shard" not in load(merged).manifest["argv"]
    capsys.readouterr()
    assert main(["report", str(merged)]) == 0
    hint = capsys.readouterr().err.split("finish it with: ")[1].split("\n")[0]
    assert "--shard" not in hint
    assert main(shlex.split(hint)[1:]) == 0 and len(load(merged).points) == 4


def test_rows_beyond_the_suites_points_are_warned_about(run_dir, capsys):
    log = run_dir / POINTS_LOG
    row = json.loads(log.read_text().splitlines()[0])
    row.update({C.HASH: "f" * 16, "size": 999})  # a point this suite never resolved to
    log.write_text(log.read_text() + json.dumps(row) + "\n")
    assert main(["report", str(run_dir)]) == 0
    assert "holds 5 distinct points, 1 more than the 4 its suite resolved to" in capsys.readouterr().err


# ------------------------------------------------------------------ round 4 (over rounds 2 and 3)


def edit_row(run_dir: Path, log: str, index: int, **changes) -> dict:
    """Set ``changes`` on row ``index`` of a log of the run; returns the row as it was."""
    path = run_dir / log
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    before = dict(rows[index])
    rows[index].update(changes)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return before


@pytest.mark.parametrize("changes, reason", [
    ({C.STABLE: "no"}, "stable is 'no', not true, false or null"),
    ({C.CPU_OTHER_FRAC: -0.5}, "cpu_other_frac is -0.5, not a number in [0.0, 1.0]"),
    ({C.CPU_STEAL_FRAC: 1e300}, "cpu_steal_frac is 1e+300"),
    ({C.LOAD_AVG_1M: "high"}, "load_avg_1m is 'high'"),
    ({C.CALLS_PER_SAMPLE: -3}, "calls_per_sample is -3"),
    ({C.STOP_REASON: "bored"}, "stop_reason is 'bored'"),
])
def test_bookkeeping_columns_out_of_their_range_make_the_row_damaged_not_a_figure(run_dir, capsys, changes,
                                                                                   reason):
    edit_row(run_dir, POINTS_LOG, 0, **changes)
    assert main(["report", str(run_dir)]) == 0
    err = no_traceback(capsys.readouterr().err)
    assert "points.jsonl line 1" in err and reason in err and "stole up to" not in err


def test_a_repeated_sample_line_is_damaged_and_moved_aside_not_counted_twice(run_dir, suite, capsys):
    log = run_dir / "samples.jsonl"
    first = log.read_text().splitlines()[0]
    log.write_text(log.read_text() + first + "\n")
    n = len(load(run_dir).samples)
    assert "samples.jsonl line" in str([d.describe() for d in load(run_dir).damaged])
    assert n == len(log.read_text().splitlines()) - 1
    assert main(["run", suite, "--resume", str(run_dir), "--no-report", "-q", *FAST]) == 0
    assert (run_dir / "samples.jsonl.damaged").read_text() == first + "\n"
    assert len(load(run_dir).samples) == n and load(run_dir).damaged == []


def test_a_lost_samples_log_is_read_from_its_export_and_written_again_on_resume(run_dir, suite, capsys):
    n = len(load(run_dir).samples)
    (run_dir / "samples.jsonl").unlink()
    assert len(load(run_dir).samples) == n  # from samples.parquet
    assert main(["report", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "samples.jsonl is missing: the raw samples are read from samples.parquet" in err
    assert main(["run", suite, "--resume", str(run_dir), "--no-report", "-q", *FAST]) == 0
    assert "samples.jsonl was missing; written again from samples.parquet" in capsys.readouterr().err
    assert len((run_dir / "samples.jsonl").read_text().splitlines()) == n == len(load(run_dir).samples)


def test_an_operator_row_with_a_string_or_negative_time_is_damaged_not_a_crash(tmp_path, fake_workload,
                                                                                capsys):
    s = fake_suite_file(tmp_path, "methods: {plain: {}}\nmetrics: {profile: true}\n")
    out = tmp_path / "run"
    assert main(["run", s, "--out", str(out), "--no-report", "-q", *FAST]) == 0
    rows = [json.loads(line) for line in (out / "ops.jsonl").read_text().splitlines()]
    time_col = next(k for k in rows[0] if k.endswith("_us"))
    edit_row(out, "ops.jsonl", 0, calls="many")
    edit_row(out, "ops.jsonl", 1, **{time_col: -1e9})
    assert main(["report", str(out), "--ops"]) == 0
    text = no_traceback(capsys.readouterr().out)
    assert "calls is 'many', not a number >= 0" in text and f"{time_col} is -1000000000.0" in text
    assert main(["run", s, "--resume", str(out), "--no-report", "-q", *FAST]) == 0
    assert "ops.jsonl: moved 2 damaged line(s)" in no_traceback(capsys.readouterr().err)


@pytest.mark.parametrize("text, problem", [('{"schema_version": "2"}', "schema_version is '2', not a number"),
                                            (None, "run_id is 5, not str")])
def test_a_manifest_field_of_the_wrong_type_is_damage_not_an_old_schema(run_dir, capsys, text, problem):
    manifest = run_dir / MANIFEST_FILE
    if text is None:
        m = json.loads(manifest.read_text())
        m["run_id"] = 5
        text = json.dumps(m)
    manifest.write_text(text)
    assert main(["report", str(run_dir)]) == cli.EXIT_USAGE
    err = no_traceback(capsys.readouterr().err)
    assert problem in err and "reads version" not in err


def test_an_env_file_without_a_fingerprint_is_refused_by_the_gate_like_a_missing_one(run_dir, capsys):
    (run_dir / ENV_FILE).write_text('{"foo": 1}')
    assert main(["compare", str(run_dir), str(run_dir)]) == cli.EXIT_USAGE
    assert "or one without a fingerprint (device kind, torch version)" in capsys.readouterr().err


def test_an_empty_points_log_is_named_not_blamed_on_the_suites(run_dir, tmp_path, capsys):
    new = tmp_path / "new"
    shutil.copytree(run_dir, new)
    (new / POINTS_LOG).write_text("")
    (new / "points.parquet").unlink()
    assert main(["compare", str(run_dir), str(new)]) == cli.EXIT_USAGE
    err = no_traceback(capsys.readouterr().err)
    assert f"{new} has no recorded point" in err and "identical configuration" not in err


def test_a_bad_tolerance_in_metrics_json_names_the_file_and_the_column(run_dir, capsys):
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    metrics["q_sum"]["tolerance"] = "big"
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics))
    assert main(["compare", str(run_dir), str(run_dir)]) == cli.EXIT_USAGE
    assert "metrics.json: the tolerance of q_sum is 'big', not a number" in capsys.readouterr().err


def test_an_empty_markdown_path_is_refused(run_dir, capsys):
    assert main(["compare", str(run_dir), str(run_dir), "--markdown", ""]) == cli.EXIT_USAGE
    assert "--markdown '' names no file" in capsys.readouterr().err


def test_a_sample_longer_than_the_budget_is_refused_and_exponents_read_as_numbers(tmp_path, suite, capsys):
    args = ["run", suite, "--dry-run", "--set", "timing.min_sample_ms=1e6", "--set", "timing.budget_s=0.05"]
    assert main(args) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "min_sample_ms (1e+06) is longer than the whole sampling budget" in err
    assert "is not a float" not in err
    assert main(["run", suite, "--dry-run", "--set", "timing.min_sample_ms=2e-1"]) == 0


def test_a_plugin_printing_on_import_does_not_corrupt_a_commands_output(tmp_path, monkeypatch, capsys):
    (tmp_path / "chatty_plugin.py").write_text("print('HELLO FROM PLUGIN IMPORT')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HARNESS_PLUGINS", "chatty_plugin")
    assert main(["env"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["plugins"]["modules"] == ["chatty_plugin"] and "HELLO FROM PLUGIN IMPORT" in err


def test_sigterm_while_the_command_line_starts_exits_143_without_a_traceback():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "harness.console", "list"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    wait_until_importing_torch(proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_TERMINATED and "Traceback" not in err
    assert "terminated" in err or "interrupted" in err  # while starting, or (a fast machine) in the command
