"""``harness merge RUN... --out DIR``: join the run directories of one suite's shards into one run."""

from __future__ import annotations

import argparse
from typing import Any

from harness.cli.common import EXIT_OK, report_after_run, require_run_dir
from harness.run.merge_shards import merge_runs

NAME = "merge"


def setup(sub: Any) -> None:
    """Add the ``merge`` command."""
    mg = sub.add_parser(NAME, help="join the run directories of one suite's shards (--shard i/n) into "
                                   "one run")
    mg.add_argument("runs", nargs="+", metavar="RUN", help="shard run directories")
    mg.add_argument("--out", required=True, help="the merged run directory (new or empty)")
    mg.add_argument("--allow-env-mismatch", action="store_true",
                    help="merge runs measured on machines whose fingerprints differ (rows keep host and GPU)")
    mg.add_argument("--no-report", action="store_true", help="skip the tables and plots after merging")
    mg.set_defaults(func=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Merge the shards, then report on the merged run."""
    summary = merge_runs([require_run_dir(r) for r in args.runs], args.out,
                         allow_env_mismatch=args.allow_env_mismatch)
    print(summary.line())
    if not args.no_report:
        report_after_run(summary.out)
    return EXIT_OK
