"""The ``harness`` entry point: the parser built from the command modules, and the one place that
turns errors into exit codes."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from harness.cli import compare, env, listing, merge, plot, profile, report, run, suites, train
from harness.cli.common import EXIT_IO, EXIT_OK, EXIT_USAGE, Terminated, interrupted_exit_code
from harness.errors import HarnessError

#: the command modules, in the order ``harness --help`` lists them
COMMANDS = (run, suites, listing, report, plot, compare, profile, merge, env, train)


def build_parser() -> argparse.ArgumentParser:
    """The ``harness`` parser: one sub-command per module of :data:`COMMANDS`."""
    ap = argparse.ArgumentParser(prog="harness", description="Benchmark ViT acceleration methods: "
                                 "run suites, report, plot and compare runs.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.setup(sub)
    return ap


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``harness`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        return args.func(args, args_list)
    except BrokenPipeError:  # e.g. `harness run ... --dry-run | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except HarnessError as e:
        print(f"harness {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except FileNotFoundError as e:  # a missing suite or run directory, said in one sentence
        msg = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
        print(f"harness {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a full disk, a missing permission, an unwritable --out/--markdown
        where = f"{e.filename}: " if e.filename else ""
        print(f"harness {args.command}: error: {where}{e.strerror or e} ({type(e).__name__}). The operating "
              "system refused a read or write; free space or choose a writable location. Nothing already "
              "recorded in a run directory is lost.", file=sys.stderr)
        return EXIT_IO
    except KeyboardInterrupt as e:
        print(f"\nharness {args.command}: interrupted", file=sys.stderr)
        return interrupted_exit_code(e)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
