"""``harness profile RUN``: profile points of a run again (traces and ops.parquet; no timing)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness import registry
from harness.cli.common import require_run_dir
from harness.run.runner import profile_run

NAME = "profile"


def setup(sub: Any) -> None:
    """Add the ``profile`` command."""
    pf = sub.add_parser(NAME, help="profile points of a run again (no timing; traces and ops.parquet in the "
                                   "run directory), from the suite the run recorded")
    pf.add_argument("run", help="run directory")
    pf.add_argument("--point", action="append", metavar="HASH",
                    help="only this point (its point_hash, or a unique prefix; repeatable)")
    pf.add_argument("--method", action="append", metavar="M",
                    help="only the points of this method (repeatable)")
    pf.add_argument("-q", "--quiet", action="store_true", help="no per-point lines")
    pf.set_defaults(func=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Profile the chosen points; exit 1 when one failed."""
    registry.load_builtins()
    summary = profile_run(require_run_dir(args.run), hashes=args.point or (), methods=args.method or (),
                          progress=not args.quiet)
    for h, error in summary.failed.items():
        print(f"profile of point {h} failed: {error}", file=sys.stderr)
    print(summary.line())
    return summary.exit_code
