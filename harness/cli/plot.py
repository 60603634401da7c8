"""``harness plot RUN``: the figures of a run (overview.png first), or why there are none."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.cli.common import EXIT_OK, require_run_dir
from reports.plots import plot_and_summarise

NAME = "plot"


def setup(sub: Any) -> None:
    """Add the ``plot`` command."""
    pl = sub.add_parser(NAME, help="write the figures of a run (overview.png first), or say why there "
                                   "are none")
    pl.add_argument("run", help="run directory")
    pl.add_argument("--out", help="where to write the figures (default: inside the run directory)")
    pl.set_defaults(func=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Draw the figures; warns on stderr about an incomplete, running or duplicated run."""
    paths, line = plot_and_summarise(require_run_dir(args.run), args.out)
    print(line, file=sys.stdout if paths else sys.stderr)
    return EXIT_OK
