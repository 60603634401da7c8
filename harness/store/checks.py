"""Whether a directory may receive a new run (before anything is written there)."""

from __future__ import annotations

import os
from pathlib import Path

from harness.store.layout import LOCK_FILE, MANIFEST_FILE, POINTS_LOG, RunDirError, is_run_dir
from harness.store.lock import in_use_message, lock_holder


def check_new_run_dir(out: Path) -> None:
    """A new run goes into a new or empty directory: never into a run (in use or not), nor next
    to files it would mix with or overwrite."""
    if is_run_dir(out):
        holder = lock_holder(out)
        if holder is not None:
            raise RunDirError(in_use_message(out, holder))
        raise RunDirError(
            f"{out} already holds a run ({MANIFEST_FILE} exists). Pass --resume {out} to finish it, "
            "or choose a new --out directory."
        )
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


def check_writable(out_dir: Path) -> None:
    """Create ``out_dir`` if needed and prove a file can be written there; RunDirError naming it if not."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunDirError(
            f"cannot write the run directory {out_dir}: {e.strerror or e} ({type(e).__name__}). "
            "Choose a writable location with --out DIR."
        ) from None
