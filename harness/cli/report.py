"""``harness report RUN``: the key tables of a run; report.md, points.csv and report.html."""

from __future__ import annotations

import argparse
from typing import Any

from harness.cli.common import EXIT_OK, require_run_dir
from reports.ops import ops_report
from reports.summary import report

NAME = "report"


def setup(sub: Any) -> None:
    """Add the ``report`` command."""
    rp = sub.add_parser(NAME, help="print the key tables of a run (100 columns wide); write report.md, "
                                   "points.csv and a self-contained report.html")
    rp.add_argument("run", help="run directory")
    rp.add_argument("--out", help="where to write the report files (default: <run>/report)")
    rp.add_argument("--ops", action="store_true",
                    help="where each method spends its time, by phase and top operators (a --profile run)")
    rp.set_defaults(func=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Print the run's tables (or its operator breakdown with --ops) and write the report files."""
    if args.ops:
        print(ops_report(require_run_dir(args.run)), end="")
        return EXIT_OK
    report(require_run_dir(args.run), args.out)  # prints the tables itself
    return EXIT_OK
