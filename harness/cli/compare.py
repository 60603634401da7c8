"""``harness compare BASE NEW``: the regression gate (exit 1 on a regression, 2 when it cannot judge)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.cli.common import UsageError, require_run_dir
from harness.store import columns as C
from harness.store import enclosing_run
from reports.compare import CompareError, compare_runs

NAME = "compare"


def setup(sub: Any) -> None:
    """Add the ``compare`` command."""
    cp = sub.add_parser(NAME, help="regression gate: exit 1 when NEW is worse than BASE, 2 when the runs "
                                   "cannot be compared")
    cp.add_argument("base", help="baseline run directory")
    cp.add_argument("new", help="candidate run directory")
    cp.add_argument("--threshold", type=float,
                    help="minimum relative change that counts (default: the suite's)")
    cp.add_argument("--alpha", type=float,
                    help="significance level (default: the suite's regression.alpha, else 0.01)")
    cp.add_argument("--allow-env-mismatch", action="store_true",
                    help="compare even when the environment fingerprints differ")
    cp.add_argument("--allow-missing", action="store_true",
                    help="points ok in BASE but missing from NEW, without raw samples, or with too few "
                         "samples to test, do not fail the gate (reported as not gated)")
    cp.add_argument("--markdown", metavar="FILE", help="also write the markdown summary here")
    cp.set_defaults(func=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Compare the two runs point by point; print (and optionally write) the markdown summary."""
    base, new = require_run_dir(args.base), require_run_dir(args.new)
    if args.markdown is not None and not args.markdown.strip():
        raise UsageError("--markdown '' names no file; give a file name, or leave the option out")
    outer = enclosing_run(args.markdown) if args.markdown else None
    if outer is not None:  # checked first: a gate that ran must not then overwrite a run's files
        raise UsageError(f"--markdown {args.markdown} lies inside the run directory {outer}, whose files it "
                         "could replace; write the summary outside run directories")
    try:
        result = compare_runs(base, new, threshold=args.threshold, alpha=args.alpha,
                              allow_env_mismatch=args.allow_env_mismatch, allow_missing=args.allow_missing)
    except CompareError:
        raise
    except ValueError as e:  # a threshold or alpha out of range
        raise UsageError(str(e)) from None
    print(result.markdown)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.markdown is not None:
        Path(args.markdown).write_text(result.markdown)
    unjudged = result.unjudged
    if len(unjudged) and not result.regressed:
        shown = "; ".join(f"{h[:8]}: {note}" for h, note in zip(unjudged[C.HASH][:3], unjudged["note"][:3]))
        more = "; ..." if len(unjudged) > 3 else ""
        print(f"harness compare: error: {len(unjudged)} point(s) could not be judged ({shown}{more}). The "
              "gate does not pass what it cannot check: restore missing files from a copy of the run, or "
              "re-run it (with more samples where too few were taken); --allow-missing accepts them ungated.",
              file=sys.stderr)
    return result.exit_code
