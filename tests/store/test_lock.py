"""The lock of a run directory (harness/store/lock.py): one writing process at a time, the holder
named in the lock file and in every refusal, the lock gone with its release, and nobody named when
nobody holds it."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket

import pytest

from harness.store import LOCK_FILE, RunDirError, RunLock, in_use_message, lock_holder


def exactly(message: str) -> str:
    """A ``match=`` pattern that accepts ``message`` and nothing else."""
    return "^" + re.escape(message) + "$"


def test_the_lock_creates_the_run_directory_and_names_its_holder_in_the_lock_file(tmp_path):
    run = tmp_path / "a" / "run"
    lock = RunLock(str(run))
    assert lock.acquire() is lock
    text = (run / LOCK_FILE).read_text()
    assert re.fullmatch(rf"pid {os.getpid()} on host {re.escape(socket.gethostname())} "
                        r"\(since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\)\n", text)
    assert lock_holder(run) == text.strip()
    lock.release()
    assert (run / LOCK_FILE).read_text() == "" and lock_holder(run) is None
    lock.release()  # a second release does nothing


def test_a_held_lock_is_refused_to_another_naming_the_holder_and_leaves_its_line(tmp_path):
    with RunLock(tmp_path) as held:
        assert isinstance(held, RunLock)
        holder = (tmp_path / LOCK_FILE).read_text().strip()
        message = (f"{tmp_path} is in use by {holder}: wait for that run to finish (or stop it), then resume "
                   "it with --resume; two processes writing one run directory would double its points")
        with pytest.raises(RunDirError, match=exactly(message)):
            RunLock(tmp_path).acquire()
        assert (tmp_path / LOCK_FILE).read_text().strip() == holder
    with RunLock(tmp_path):  # released on leaving the block: free again
        pass


def test_a_lock_held_by_a_process_that_wrote_no_line_is_named_another_process(tmp_path):
    with open(tmp_path / LOCK_FILE, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lock_holder(tmp_path) == "another process"
        with pytest.raises(RunDirError, match=exactly(in_use_message(tmp_path, "another process"))):
            RunLock(tmp_path).acquire()


def test_in_use_message_names_the_directory_and_the_holder():
    assert in_use_message("runs/x", "pid 7 on host h") == (
        "runs/x is in use by pid 7 on host h: wait for that run to finish (or stop it), then resume it with "
        "--resume; two processes writing one run directory would double its points")


def test_lock_holder_is_none_without_a_lock_file_and_creates_none(tmp_path):
    assert lock_holder(tmp_path) is None and not (tmp_path / LOCK_FILE).exists()
    (tmp_path / LOCK_FILE).write_text("pid 1 on host gone (since 2020-01-01T00:00:00+00:00)\n")
    assert lock_holder(str(tmp_path)) is None  # a line left by a process that ended: nobody holds it


def test_lock_holder_says_nothing_on_a_file_system_without_flock(tmp_path, monkeypatch):
    (tmp_path / LOCK_FILE).write_text("pid 1 on host h\n")

    def flock(_f, _op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)
    assert lock_holder(tmp_path) is None


def test_a_lock_whose_holder_line_cannot_be_written_is_let_go_and_names_the_lock_file(tmp_path, monkeypatch):
    def hostname():
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(socket, "gethostname", hostname)
    with pytest.raises(OSError) as e:
        RunLock(tmp_path).acquire()
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / LOCK_FILE))
    monkeypatch.undo()
    assert lock_holder(tmp_path) is None  # not held: the failed acquire let go of it
    with RunLock(tmp_path):
        assert lock_holder(tmp_path) is not None


def test_taking_the_lock_replaces_the_line_a_finished_holder_left(tmp_path):
    (tmp_path / LOCK_FILE).write_text("pid 1 on host gone (since 2020-01-01T00:00:00+00:00) and more text\n")
    with RunLock(tmp_path):
        text = (tmp_path / LOCK_FILE).read_text()
        assert text.startswith(f"pid {os.getpid()} on host ") and text.count("\n") == 1 and "gone" not in text


def test_releasing_a_lock_never_taken_does_nothing(tmp_path):
    RunLock(tmp_path / "run").release()
    assert not (tmp_path / "run").exists()


class FullDiskFile:
    """A file on a full disk: writes are buffered, the flush fails, and so does the close (which
    flushes the refused write again)."""

    def __init__(self, f):
        self._f = f

    def __getattr__(self, name):
        return getattr(self._f, name)

    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        self._f.close()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_naming_the_holder_reports_the_write_and_lets_the_lock_go(tmp_path, monkeypatch):
    monkeypatch.setattr("harness.store.lock.open", lambda *a: FullDiskFile(open(*a)), raising=False)
    with pytest.raises(OSError) as e:
        RunLock(tmp_path).acquire()
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / LOCK_FILE))
    monkeypatch.undo()
    with RunLock(tmp_path):  # the failed acquire closed its handle: the lock is free
        pass
