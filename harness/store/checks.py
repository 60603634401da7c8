"""Whether a directory may receive a new run (before anything is written there)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from harness.errors import StorageError
from harness.store.layout import LOCK_FILE, MANIFEST_FILE, POINTS_LOG, RunDirError, enclosing_run, is_run_dir
from harness.store.lock import in_use_message, lock_holder


def check_new_run_dir(out: Path, *, resumable: bool = True) -> None:
    """A new run goes into a new or empty directory: never into a run (in use or not), nor inside
    one, nor next to files it would mix with or overwrite. ``resumable``: the command can finish an
    existing run with ``--resume`` (``harness run``; not ``harness merge``), so the error suggests it."""
    if is_run_dir(out):
        holder = lock_holder(out)
        if holder is not None:
            raise RunDirError(in_use_message(out, holder))
        finish = f"Pass --resume {shlex.quote(str(out))} to finish it, or choose" if resumable else "Choose"
        raise RunDirError(f"{out} already holds a run ({MANIFEST_FILE} exists). {finish} a new --out "
                          "directory.")
    outer = enclosing_run(out)
    if outer is not None:
        raise RunDirError(f"--out {out} is inside the run directory {outer}: a run there would be mixed "
                          "into that run's files (and its profiles folder); choose a directory outside it")
    if not out.is_dir():
        if out.exists():
            raise RunDirError(f"--out {out} is a file, not a directory; choose a new --out directory")
        return
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
    if POINTS_LOG in entries:
        raise RunDirError(
            f"{out} holds {POINTS_LOG} but no {MANIFEST_FILE}: the remains of a run whose manifest was "
            "lost. A new run there would mix its rows with these; move them away or choose a new --out."
        )
    if entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise RunDirError(f"{out} is not empty and is not a run directory (it holds {shown}); "
                       "choose a new or empty --out directory")


def check_writable(out_dir: Path, *, advice: str = "Choose a writable location with --out DIR.") -> None:
    """Create ``out_dir`` if needed and prove a file can be written there (the probe file is
    removed whatever happens); StorageError (exit code 3) naming it and ``advice`` if not."""
    probe = out_dir / f".write-probe-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise StorageError(
            f"cannot write the run directory {out_dir}: {e.strerror or e} ({type(e).__name__}). {advice}"
        ) from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself cannot be written: nothing was created there
