"""``harness history add | check | plot | show``: a history of runs across commits, and its steps.

``add`` appends a finished run's per-point summaries to the store (one Parquet file); ``check``
finds the change points of every point's series and exits 1 when the newest step of a series is
a new regression; ``plot`` draws the series with their steps; ``show`` prints the store.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from harness.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    UsageError,
    non_negative_float,
    positive_int,
    require_run_dir,
)
from harness.history import plot as P
from harness.history.changepoints import DEFAULT_ALPHA, EDivisiveConfig
from harness.history.entries import Provenance, run_entries
from harness.history.page import SHA_SHOWN, steps_frame, write_page
from harness.history.steps import (
    DEFAULT_MIN_STEP,
    DEFAULT_RECENT,
    DEFAULT_WINDOW,
    CheckConfig,
    CheckResult,
    check,
)
from harness.history.store import (
    BRANCH,
    COMMIT,
    DEFAULT_STORE,
    INSTRUCTIONS,
    LABEL,
    METRICS,
    SEQ,
    append,
    read_store,
)
from harness.store import columns as C

NAME = "history"
SHOW_LAST = 10  # runs `show` prints by default


def _store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=DEFAULT_STORE, metavar="FILE",
                   help=f"the history store, one Parquet file (default: ./{DEFAULT_STORE})")


def _check_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", choices=METRICS, default=C.LAT_MEDIAN, help="the column checked (default: "
                   f"{C.LAT_MEDIAN}; {INSTRUCTIONS} where the runs recorded it)")
    p.add_argument("--branch", help="only entries added with this --branch (default: all)")
    p.add_argument("--min-step", type=non_negative_float, default=DEFAULT_MIN_STEP, metavar="F",
                   help=f"smallest relative change that counts (default {DEFAULT_MIN_STEP}: 2%%)")
    p.add_argument("--recent", type=positive_int, default=DEFAULT_RECENT, metavar="N",
                   help=f"a step whose first commit is among a series' newest N entries is new (default "
                        f"{DEFAULT_RECENT}); older steps are history")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help=f"significance level of the change-point test (default {DEFAULT_ALPHA})")
    p.add_argument("--window", type=positive_int, default=DEFAULT_WINDOW, metavar="N",
                   help=f"examine only the newest N entries of each series (default {DEFAULT_WINDOW})")


def setup(sub: Any) -> None:
    """Add the ``history`` command and its sub-commands."""
    hp = sub.add_parser(NAME, help="keep a history of runs across commits; find the steps in it (exit 1 on "
                                   "a new regression step)")
    hsub = hp.add_subparsers(dest="history_command", required=True, metavar="ACTION")
    add = hsub.add_parser("add", help="append a finished run's per-point summaries to the store")
    add.add_argument("run", help="run directory (finished: not being written)")
    add.add_argument("--commit", help="the commit the run measured (default: env.json's git_commit)")
    add.add_argument("--branch", help="the branch it belongs to (e.g. main)")
    _store_option(add)
    add.set_defaults(func=run_add)
    ch = hsub.add_parser("check", help="find change points per point; exit 1 when the newest step of a "
                                       "point is a new regression")
    _store_option(ch)
    _check_options(ch)
    ch.set_defaults(func=run_check)
    pl = hsub.add_parser("plot", help="draw every point's series with its steps (one PNG)")
    _store_option(pl)
    _check_options(pl)
    pl.add_argument("--out", default=".", metavar="DIR|FILE.png",
                    help="a .png file, or a folder for history-<metric>.png (default: the current folder)")
    pl.set_defaults(func=run_plot)
    sh = hsub.add_parser("show", help="print the store's newest entries")
    _store_option(sh)
    sh.add_argument("--last", type=positive_int, default=SHOW_LAST, metavar="N",
                    help=f"the newest N runs (default {SHOW_LAST})")
    sh.set_defaults(func=run_show)


def run_add(args: argparse.Namespace, argv: list[str]) -> int:
    """Append the run's entries; refuses a run in use, without ok points, or already there."""
    for option, value in (("--commit", args.commit), ("--branch", args.branch), ("--store", args.store)):
        if value is not None and not value.strip():
            raise UsageError(f"{option} '' names nothing; give a value, or leave the option out")
    run_dir = require_run_dir(args.run)
    entries, notes = run_entries(run_dir, Provenance(commit=args.commit, branch=args.branch))
    seq = append(args.store, entries)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    commit = str(entries[COMMIT].iloc[0])[:SHA_SHOWN]
    print(f"added {len(entries)} point(s) of {run_dir} (run {entries[C.RUN_ID].iloc[0]}, commit {commit}) "
          f"to {args.store} as entry {seq}")
    return EXIT_OK


def _config(args: argparse.Namespace) -> CheckConfig:
    try:
        return CheckConfig(metric=args.metric, branch=args.branch, min_step=args.min_step, recent=args.recent,
                           window=args.window, detector=replace(EDivisiveConfig(), alpha=args.alpha))
    except ValueError as e:
        raise UsageError(str(e)) from None


def _checked(args: argparse.Namespace) -> CheckResult:
    """The check of the store under the options; a UsageError when no entry has the metric."""
    cfg = _config(args)
    result = check(read_store(args.store), cfg)
    if not result.series:
        where = f" on branch {cfg.branch}" if cfg.branch else ""
        raise UsageError(f"no entry of {args.store}{where} has a value of {cfg.metric}: nothing to check "
                         f"(the metrics: {', '.join(METRICS)}; --branch picks the entries added with that "
                         "--branch)")
    return result


def steps_table(steps: pd.DataFrame) -> str:
    """The steps as a text table: point, metric, step commit, medians, change, p, verdict."""
    return tabulate(steps_frame(steps), headers="keys", tablefmt="simple", showindex=False)


def run_check(args: argparse.Namespace, argv: list[str]) -> int:
    """Print the steps; exit 1 on a new regression step."""
    result = _checked(args)
    cfg, steps = result.config, result.steps
    if len(steps):
        print(steps_table(steps))
    n_entries = sum(len(s.values) for s in result.series)
    print(f"{len(result.series)} series ({n_entries} entries) of {cfg.metric} checked: {len(steps)} step(s); "
          f"a step is new when its first commit is among a series' newest {cfg.recent} entries")
    short = result.too_short
    if short:
        print(f"{len(short)} series have fewer than {2 * cfg.detector.min_size} entries, too few to find a "
              f"step in (a step needs {cfg.detector.min_size} entries on each side)")
    gating = steps[steps["gating"]] if len(steps) else steps
    if len(gating):
        shown = "; ".join(f"{r[LABEL]} ({r[C.HASH][:8]}): {r['rel_change']:+.1%} from commit "
                          f"{str(r[COMMIT])[:SHA_SHOWN]}" for _, r in gating.iterrows())
        print(f"harness history: regression: {len(gating)} point(s) got slower in a new step ({shown}). "
              f"Each step is significant (p <= {cfg.detector.alpha}) and larger than {cfg.min_step:.1%}; its "
              "first commit is where to look.", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def run_plot(args: argparse.Namespace, argv: list[str]) -> int:
    """Draw the figure into --out."""
    result = _checked(args)
    path = P.save(P.history_figure(result), P.output_path(args.out, result.config.metric))
    page = write_page(result, path)
    print(f"wrote {path} and {page} ({len(result.series)} series, {len(result.steps)} step(s))")
    return EXIT_OK


def run_show(args: argparse.Namespace, argv: list[str]) -> int:
    """Print the newest entries of the store."""
    history = read_store(args.store)
    seqs = np.unique(history[SEQ].to_numpy())[-args.last:]
    shown = history[history[SEQ].isin(seqs)]
    cols = [SEQ, COMMIT, BRANCH, C.RUN_ID, LABEL, C.LAT_MEDIAN, INSTRUCTIONS, C.N_SAMPLES, C.STABLE]
    table = shown[cols].assign(**{COMMIT: shown[COMMIT].str[:SHA_SHOWN]})
    print(tabulate(table.astype(object).where(table.notna(), ""), headers=cols, tablefmt="simple",
                   showindex=False))
    runs = history[SEQ].nunique()
    print(f"{args.store}: {runs} run(s), {len(history)} entries; shown: the newest {len(seqs)} run(s)")
    return EXIT_OK
