"""What every command shares: exit codes, the user's error, argument types, and the report after a run."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from harness.errors import EXIT_INTERRUPTED as EXIT_INTERRUPTED  # 130: Ctrl-C
from harness.errors import EXIT_IO as EXIT_IO  # 3: a read or write the system refused
from harness.errors import EXIT_TERMINATED as EXIT_TERMINATED  # 143: SIGTERM
from harness.errors import EXIT_USAGE as EXIT_USAGE  # 2: a HarnessError
from harness.errors import HarnessError
from harness.run.points import parse_shard
from harness.suite.catalog import not_a_regular_file
from reports.plots import plot_and_summarise
from reports.summary import report

EXIT_OK, EXIT_FAIL = 0, 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (finished points are kept, the resume hint is printed)."""


class UsageError(HarnessError):
    """A command-line problem the user can fix (conflicting options, an unknown name)."""


def interrupted_exit_code(e: KeyboardInterrupt) -> int:
    """143 for SIGTERM, 130 for Ctrl-C."""
    return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED


def require_run_dir(path: str) -> Path:
    """``path`` as a directory, or FileNotFoundError saying what a run directory is."""
    p = Path(path)
    if not p.is_dir():
        problem = not_a_regular_file(p) if os.path.lexists(p) else "not found"
        if problem is None:  # a regular file
            problem = "is a file, not a directory"
        raise FileNotFoundError(f"run directory {path!r} {problem} (a run directory is the folder `harness "
                                "run` writes; its path is printed at the end of the run)")
    return p


def report_after_run(run_dir: Path) -> None:
    """Plots, then the tables and report.html (which embeds the plots); a failure here never loses
    the run (it is already on disk)."""
    line = None
    try:
        _, line = plot_and_summarise(run_dir, warn=False)  # the report warns about the run
    except Exception as e:  # noqa: BLE001 - reporting is optional after a run
        print(f"warning: plotting failed ({type(e).__name__}: {e}); the run is saved in {run_dir}; "
              f"retry with: harness plot {shlex.quote(str(run_dir))}", file=sys.stderr)
    try:
        report(run_dir)  # prints the tables itself
    except Exception as e:  # noqa: BLE001 - reporting is optional after a run
        print(f"warning: the report failed ({type(e).__name__}: {e}); the run is saved in {run_dir}; "
              f"retry with: harness report {shlex.quote(str(run_dir))}", file=sys.stderr)
    if line:
        print(line)


# ---------------------------------------------------------------- argument types


def shard_arg(text: str) -> tuple[int, int]:
    """``--shard I/N``."""
    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
