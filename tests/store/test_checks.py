"""Whether a directory may receive a new run (harness/store/checks.py): every refusal names the
directory, what is in the way and what to do, word for word; a writable directory is created."""

from __future__ import annotations

import re

import pytest

from harness.errors import StorageError
from harness.store import (
    LOCK_FILE,
    MANIFEST_FILE,
    POINTS_LOG,
    RunDirError,
    RunLock,
    check_new_run_dir,
    check_writable,
)


def exactly(message: str) -> str:
    """A ``match=`` pattern that accepts ``message`` and nothing else."""
    return "^" + re.escape(message) + "$"


def a_run(path):
    path.mkdir(parents=True)
    (path / MANIFEST_FILE).write_text('{"schema_version": 2}')
    return path


def test_a_run_directory_is_refused_with_the_resume_that_finishes_it_quoted_for_the_shell(tmp_path):
    run = a_run(tmp_path / "my run")
    message = (f"{run} already holds a run (run.json exists). Pass --resume '{run}' to finish it, or choose "
               "a new --out directory.")
    with pytest.raises(RunDirError, match=exactly(message)):
        check_new_run_dir(run)


def test_a_run_directory_is_refused_without_a_resume_where_the_command_cannot_resume(tmp_path):
    run = a_run(tmp_path / "run")
    message = f"{run} already holds a run (run.json exists). Choose a new --out directory."
    with pytest.raises(RunDirError, match=exactly(message)):
        check_new_run_dir(run, resumable=False)


def test_a_run_directory_in_use_is_refused_naming_it_and_the_process_that_holds_it(tmp_path):
    run = a_run(tmp_path / "run")
    with RunLock(run):
        holder = (run / LOCK_FILE).read_text().strip()
        assert holder.startswith("pid ")
        message = (f"{run} is in use by {holder}: wait for that run to finish (or stop it), then resume it "
                   "with --resume; two processes writing one run directory would double its points")
        for resumable in (True, False):
            with pytest.raises(RunDirError, match=exactly(message)):
                check_new_run_dir(run, resumable=resumable)


def test_a_directory_inside_a_run_is_refused_naming_the_run(tmp_path):
    run = a_run(tmp_path / "run")
    out = run / "profiles" / "new"  # not there yet
    message = (f"--out {out} is inside the run directory {run}: a run there would be mixed into that run's "
               "files (and its profiles folder); choose a directory outside it")
    with pytest.raises(RunDirError, match=exactly(message)):
        check_new_run_dir(out)
    assert not out.exists()


def test_a_file_is_refused_as_out(tmp_path):
    out = tmp_path / "results.csv"
    out.write_text("a,b\n")
    with pytest.raises(RunDirError, match=exactly(f"--out {out} is a file, not a directory; choose a new "
                                                  "--out directory")):
        check_new_run_dir(out)


def test_the_remains_of_a_run_without_its_manifest_are_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / POINTS_LOG).write_text("")
    (out / "zzz.txt").write_text("")
    message = (f"{out} holds points.jsonl but no run.json: the remains of a run whose manifest was lost. "
               "A new run there would mix its rows with these; move them away or choose a new --out.")
    with pytest.raises(RunDirError, match=exactly(message)):
        check_new_run_dir(out)


def test_a_new_an_empty_or_a_lock_only_directory_is_accepted(tmp_path):
    assert check_new_run_dir(tmp_path / "new") is None
    assert not (tmp_path / "new").exists()  # checked, not created
    (tmp_path / "empty").mkdir()
    assert check_new_run_dir(tmp_path / "empty") is None
    (tmp_path / "empty" / LOCK_FILE).write_text("")  # what a refused run leaves behind
    assert check_new_run_dir(tmp_path / "empty") is None


@pytest.mark.parametrize(("names", "shown"), [
    (["a", "b", "c", "d", "e"], "a, b, c, d, e"),
    (["f", "e", "d", "c", "b", "a", LOCK_FILE], "a, b, c, d, e, ..."),
])
def test_a_non_empty_directory_is_refused_naming_its_first_five_entries_sorted(tmp_path, names, shown):
    out = tmp_path / "out"
    out.mkdir()
    for name in names:
        (out / name).write_text("")
    message = (f"{out} is not empty and is not a run directory (it holds {shown}); choose a new or empty "
               "--out directory")
    with pytest.raises(RunDirError, match=exactly(message)):
        check_new_run_dir(out)


def test_check_writable_creates_the_missing_parents_and_leaves_no_probe(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    assert check_writable(out) is None
    assert out.is_dir() and list(out.iterdir()) == []


def test_an_unwritable_location_is_refused_naming_it_the_os_error_and_the_advice(tmp_path):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "run"  # under a file: no directory can be made there, even as root
    message = (f"cannot write the run directory {out}: Not a directory (NotADirectoryError). Choose a "
               "writable location with --out DIR.")
    with pytest.raises(StorageError, match=exactly(message)):
        check_writable(out)
    with pytest.raises(StorageError, match=exactly(f"cannot write the run directory {out}: Not a directory "
                                                   "(NotADirectoryError). Free space, then resume.")):
        check_writable(out, advice="Free space, then resume.")
    assert (tmp_path / "file").read_text() == ""
