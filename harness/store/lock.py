"""The lock of a run directory: one writing process at a time, named to the others."""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import socket
from contextlib import suppress
from pathlib import Path
from typing import Any

from harness.store.files import writing
from harness.store.layout import LOCK_FILE, RunDirError


class RunLock:
    """Exclusive lock of a run directory by one process (``flock`` on ``.lock``, released when the
    process ends, even by kill -9); the file names the holder for the error message of others."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self._file: Any = None

    def acquire(self) -> RunLock:
        """Take the lock or raise RunDirError naming the process that holds it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.run_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunDirError(in_use_message(self.run_dir, holder)) from None
        try:
            with writing(self.run_dir / LOCK_FILE):
                f.seek(0)
                f.truncate()
                f.write(f"pid {os.getpid()} on host {socket.gethostname()} (since "
                        f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')})\n")
                f.flush()
        except OSError:
            with suppress(OSError):  # closing flushes the refused write again
                f.close()  # releases the lock
            raise
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def in_use_message(run_dir: Path, holder: str) -> str:
    """The one paragraph for a run directory another process is writing."""
    return (f"{run_dir} is in use by {holder}: wait for that run to finish (or stop it), then resume it "
            "with --resume; two processes writing one run directory would double its points")


def lock_holder(run_dir: str | os.PathLike) -> str | None:
    """Who holds the run directory's lock (``pid N on host H (since ...)``), or None when nobody
    does. Read only: a shared, non-blocking ``flock`` on a read-only handle, released at once."""
    try:
        f = open(Path(run_dir) / LOCK_FILE)  # noqa: SIM115 - closed below; read only, never created
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "another process"
        except OSError:  # a file system without flock: say nothing rather than guess
            return None
        fcntl.flock(f, fcntl.LOCK_UN)
    return None
