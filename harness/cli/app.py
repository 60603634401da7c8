"""The ``harness`` entry point: the parser built from the command modules, and the one place that
turns errors into exit codes."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from harness.cli import compare, env, history, listing, merge, plot, profile, report, run, suites, train
from harness.cli.common import EXIT_IO, EXIT_OK, EXIT_USAGE, Terminated, interrupted_exit_code
from harness.errors import HarnessError

#: the command modules, in the order ``harness --help`` lists them
COMMANDS = (run, suites, listing, report, plot, compare, history, profile, merge, env, train)


def build_parser() -> argparse.ArgumentParser:
    """The ``harness`` parser: one sub-command per module of :data:`COMMANDS`."""
    ap = argparse.ArgumentParser(prog="harness", description="Benchmark ViT acceleration methods: "
                                 "run suites, report, plot and compare runs.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.setup(sub)
    return ap


#: options whose value may start with "-" (``--shard -1/2``, to be refused for its value, not as
#: "expected one argument"); argparse reads such a value as an option unless it is attached
DASH_VALUE_OPTIONS = ("--shard",)


def _attach_dash_values(argv: list[str]) -> list[str]:
    """``--shard -1/2`` -> ``--shard=-1/2`` (for the options of :data:`DASH_VALUE_OPTIONS`)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in DASH_VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-") \
                and argv[i + 1] != "--":
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _os_error(command: str, e: OSError) -> int:
    """The one paragraph of a read or write the system refused; exit code 3."""
    where = f"{e.filename}: " if e.filename else ""
    print(f"harness {command}: error: {where}{e.strerror or e} ({type(e).__name__}). The operating system "
          f"refused a read or write; {os_advice(e)}. Nothing already recorded in a run directory is lost.",
          file=sys.stderr)
    return EXIT_IO


def os_advice(e: OSError) -> str:
    """What to do about a refused read or write, by its cause."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free space (or raise the quota or file-size limit), then run the command again"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose a location you may write to, or restore the permission"
    if e.errno in (errno.EEXIST, errno.ENOTDIR):
        return "a file stands where a folder is needed on that path: give a folder (new or existing)"
    if e.errno == errno.EISDIR:
        return "that path is a folder; give a file name"
    if e.errno == errno.ENOENT:
        return ("a folder on that path does not exist (or its file system takes no new files, like /proc): "
                "create it, or give another path")
    return "check the path and the disk, then run the command again"


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``harness`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(_attach_dash_values(args_list))
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
    except FileNotFoundError as e:
        if e.filename is not None:  # the system's: a folder on an output path does not exist
            return _os_error(args.command, e)
        msg = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)  # ours: a missing suite or run
        print(f"harness {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a full disk, a missing permission, an unwritable --out/--markdown
        return _os_error(args.command, e)
    except KeyboardInterrupt as e:
        print(f"\nharness {args.command}: interrupted", file=sys.stderr)
        return interrupted_exit_code(e)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
