"""The run directory's names and manifest (harness/store/layout.py): which names may name a run
directory, where a run lies, what a damaged or foreign run.json is refused with (word for word), how
a resumption is recorded, and the command line that finishes a run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.store import (
    MANIFEST_FILE,
    RunDirError,
    enclosing_run,
    is_run_dir,
    name_problem,
    note_resume,
    read_env,
    read_json_object,
    read_manifest,
    resume_command_line,
    run_dir_in,
)
from harness.store.layout import manifest_problem

RULE = ("letters, digits, '.', '_', '+' and '-', starting with a letter or digit, at most 100 characters "
        "(it names the run directory, runs/<name>-<timestamp>)")


def exactly(message: str) -> str:
    """A ``match=`` pattern that accepts ``message`` and nothing else."""
    return "^" + re.escape(message) + "$"


def a_run(path: Path, **manifest) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / MANIFEST_FILE).write_text(json.dumps({"schema_version": 2, **manifest}))
    return path


@pytest.mark.parametrize("name", ["a", "A9", "vit-b_16.fp16+q", "9" * 100])
def test_a_file_name_component_of_at_most_100_characters_can_name_a_run(name):
    assert name_problem(name) is None


@pytest.mark.parametrize(("name", "safe"), [
    ("my suite/v2", "my-suite-v2"),
    (".hidden", "hidden"),
    ("-x-", "x"),
    ("X y.", "X-y"),  # only '-' and '.' are stripped from the ends
    ("x" * 101, "x" * 100),
    ("é" + "y" * 120, "y" * 100),
    ("", "suite"),
    ("//", "suite"),
])
def test_another_name_is_refused_with_the_rule_and_a_safe_name(name, safe):
    assert name_problem(name) == \
        f"{name!r} is not a file-name component; allowed: {RULE}; for example {safe!r}"


def test_run_dir_in_joins_a_valid_name_and_refuses_another_naming_the_folder():
    assert run_dir_in("runs", "vit-2026") == Path("runs/vit-2026")
    assert run_dir_in(Path("/data/runs"), "x") == Path("/data/runs/x")
    problem = name_problem("../escape")
    with pytest.raises(RunDirError, match=exactly(f"cannot name a run directory in runs: {problem}")):
        run_dir_in("runs", "../escape")


def test_a_run_directory_is_one_with_a_manifest_and_lies_in_the_nearest_one_above(tmp_path, monkeypatch):
    outer = a_run(tmp_path / "outer")
    inner = a_run(outer / "profiles" / "inner")
    assert is_run_dir(str(outer)) and is_run_dir(inner) and not is_run_dir(outer / "profiles")
    assert enclosing_run(outer) is None  # a run does not lie in itself
    assert enclosing_run(outer / "profiles") == outer
    assert enclosing_run(inner / "a" / "b") == inner
    monkeypatch.chdir(outer)
    assert enclosing_run("new") == outer  # relative paths are made absolute first
    assert enclosing_run(tmp_path / "elsewhere") is None


def test_read_manifest_returns_the_manifest_of_this_schema(tmp_path):
    run = a_run(tmp_path / "run", run_id="r1", shard=None, n_points=3)
    assert read_manifest(str(run)) == {"schema_version": 2, "run_id": "r1", "shard": None, "n_points": 3}


def test_a_missing_manifest_says_what_a_run_directory_is(tmp_path):
    message = (f"{tmp_path} is not a run directory: run.json is missing (a run directory is what `harness "
               "run` writes under --out)")
    with pytest.raises(RunDirError, match=exactly(message)):
        read_manifest(tmp_path)


def test_a_manifest_that_is_not_json_is_refused_with_the_parser_error(tmp_path):
    (tmp_path / MANIFEST_FILE).write_text("{")
    message = (f"{tmp_path / MANIFEST_FILE} cannot be read as JSON (Expecting property name enclosed in "
               "double quotes: line 1 column 2 (char 1)); it is not a run this harness wrote")
    with pytest.raises(RunDirError, match=exactly(message)):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).unlink()
    (tmp_path / MANIFEST_FILE).mkdir()
    message = (f"{tmp_path / MANIFEST_FILE} cannot be read as JSON ([Errno 21] Is a directory: "
               f"'{tmp_path / MANIFEST_FILE}'); it is not a run this harness wrote")
    with pytest.raises(RunDirError, match=exactly(message)):
        read_manifest(tmp_path)


def test_a_damaged_manifest_is_refused_naming_the_field_and_the_suite_to_rerun(tmp_path):
    run = a_run(tmp_path / "run", run_id=7)
    message = (f"{run / MANIFEST_FILE} is damaged (run_id is 7, not str); restore it from a copy of the run, "
               f"or re-run its suite (the suite is in {run / 'suite.resolved.yaml'})")
    with pytest.raises(RunDirError, match=exactly(message)):
        read_manifest(run)


@pytest.mark.parametrize(("manifest", "problem"), [
    ([1], "a JSON list, not an object"),
    ("x", "a JSON str, not an object"),
    ({}, "schema_version is None, not a number"),
    ({"schema_version": True}, "schema_version is True, not a number"),
    ({"schema_version": "2"}, "schema_version is '2', not a number"),
    ({"schema_version": 2.0}, "schema_version is 2.0, not a number"),
    ({"schema_version": 2, "n_points": True}, "n_points is True, not int"),
    ({"schema_version": 2, "shard": 1}, "shard is 1, not str or NoneType"),
    ({"schema_version": 2, "argv": "harness run"}, "argv is 'harness run', not list"),
    ({"schema_version": 2, "resumed": {}}, "resumed is {}, not list"),
    ({"schema_version": 2, "suite": "s", "merged_from": None}, "merged_from is None, not list"),
])
def test_manifest_problem_names_what_makes_a_manifest_unusable(manifest, problem):
    assert manifest_problem(manifest) == problem


def test_manifest_problem_accepts_any_version_and_absent_or_well_typed_fields():
    assert manifest_problem({"schema_version": 1}) is None
    fine = {"schema_version": 2, "shard": None, "suite_points": 4, "argv": [], "x": True}
    assert manifest_problem(fine) is None


def test_a_manifest_of_another_schema_version_is_refused_naming_both_versions_and_what_to_do(tmp_path):
    run = a_run(tmp_path / "old")
    (run / MANIFEST_FILE).write_text(json.dumps({"schema_version": 1, "harness_version": "0.3.1"}))
    suite = run / "suite.resolved.yaml"
    message = (f"{run} was written with results schema version 1 (harness 0.3.1); this harness reads version "
               f"2. Re-run its suite with this harness (the suite is in {suite}), or read it with the "
               "harness version that wrote it.")
    with pytest.raises(RunDirError, match=exactly(message)):
        read_manifest(run)
    (run / MANIFEST_FILE).write_text(json.dumps({"schema_version": 3}))
    message = (f"{run} was written with results schema version 3 (harness an unknown version); this harness "
               f"reads version 2. Re-run its suite with this harness (the suite is in {suite}), or read it "
               "with the harness version that wrote it.")
    with pytest.raises(RunDirError, match=exactly(message)):
        read_manifest(run)


def test_read_env_is_empty_without_the_file_and_the_object_with_it(tmp_path):
    assert read_env(tmp_path) == {}
    (tmp_path / "env.json").write_text('{"cpu_model": "x"}')
    assert read_env(str(tmp_path)) == {"cpu_model": "x"}
    (tmp_path / "env.json").write_text("[]")
    message = (f"{tmp_path / 'env.json'} is damaged (a JSON list, not an object); restore it from a copy of "
               "the run, or start a new run")
    with pytest.raises(RunDirError, match=exactly(message)):
        read_env(tmp_path)


@pytest.mark.parametrize(("content", "error"), [
    (b"", "JSONDecodeError: Expecting value: line 1 column 1 (char 0)"),
    (b"\xff{}", "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
])
def test_a_json_file_that_cannot_be_read_is_refused_naming_the_error(tmp_path, content, error):
    path = tmp_path / "metrics.json"
    path.write_bytes(content)
    message = (f"{path} cannot be read as JSON ({error}); restore it from a copy of the run, or start a new "
               "run")
    with pytest.raises(RunDirError, match=exactly(message)):
        read_json_object(path)


def test_a_json_file_that_is_a_directory_is_refused_naming_the_os_error(tmp_path):
    path = tmp_path / "metrics.json"
    path.mkdir()
    message = (f"{path} cannot be read as JSON (IsADirectoryError: [Errno 21] Is a directory: '{path}'); "
               "restore it from a copy of the run, or start a new run")
    with pytest.raises(RunDirError, match=exactly(message)):
        read_json_object(path)


def test_a_json_error_of_several_lines_is_named_by_its_first(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    path.write_text("{}")

    def loads(_text):
        raise json.JSONDecodeError("first line\nsecond line", "x", 0)

    monkeypatch.setattr("harness.store.layout.json.loads", loads)
    message = (f"{path} cannot be read as JSON (JSONDecodeError: first line); restore it from a copy of the "
               "run, or start a new run")
    with pytest.raises(RunDirError, match=exactly(message)):
        read_json_object(path)


def test_each_resumption_is_appended_to_the_manifest(tmp_path):
    run = a_run(tmp_path / "run", run_id="r")
    first = note_resume(run, "2026-01-01T00:00:00", ["harness", "run", "s.yaml"], {"cpu": "a"})
    assert first == {"schema_version": 2, "run_id": "r",
                     "resumed": [{"at": "2026-01-01T00:00:00", "argv": ["harness", "run", "s.yaml"],
                                  "env": {"cpu": "a"}}]}
    second = note_resume(str(run), "2026-01-02T00:00:00", [], {})
    assert second["resumed"] == [*first["resumed"], {"at": "2026-01-02T00:00:00", "argv": [], "env": {}}]
    assert read_manifest(run) == second
    assert (run / MANIFEST_FILE).read_text() == json.dumps(second, indent=2, sort_keys=True)


def test_resume_command_line_replaces_out_and_resume_and_keeps_every_other_argument(tmp_path):
    argv = ["harness", "run", "suite.yaml", "--out", "old", "--preset", "fast", "--resume=x", "--out=y",
            "--resume", "z", "--set", "a=1 b", Path("p")]
    assert resume_command_line(argv, tmp_path / "my run") == (
        f"harness run suite.yaml --preset fast --set 'a=1 b' p --resume '{tmp_path / 'my run'}'")
    assert resume_command_line(["harness", "run", "s.yaml"], "r") == "harness run s.yaml --resume r"
    assert resume_command_line(["h", "run", "--out", "o"], "r") == "harness run --resume r"


@pytest.mark.parametrize("argv", [[], ["harness", "run"], ["harness", "merge", "a", "b"],
                                  ["harness", "runs", "s"]])
def test_without_a_recorded_run_command_the_resume_line_names_the_suite_and_the_options_to_add(argv):
    assert resume_command_line(argv, "runs/my run") == \
        "harness run SUITE --resume 'runs/my run' (with the run's --preset/--set options)"
    assert resume_command_line(argv, "r", suite="s.yaml") == \
        "harness run s.yaml --resume r (with the run's --preset/--set options)"
