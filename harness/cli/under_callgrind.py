"""``harness run`` with ``timing.mode: instructions``: the same command again, under Callgrind.

The parent checks what it can before anything is written (valgrind present, CPU points, the local
executor), fixes the run directory, and runs ``valgrind --tool=callgrind ... python -m harness.cli
run ... --out DIR --no-report``; the child counts each point's instructions
(:mod:`harness.measure.instructions`) and writes the run as usual. The report is made afterwards
by the parent, outside valgrind. Ctrl-C reaches both (one process group): the child saves its
points and prints how to resume; SIGTERM to the parent is passed on to the child.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.cli.common import EXIT_OK, Terminated, UsageError, report_after_run
from harness.measure.instructions import callgrind_command, valgrind_problem
from harness.suite import Suite

#: exit codes of the child that mean it ran (points recorded or refused with its own paragraph)
CHILD_SPOKE = (0, 1, 2, 3, 130, 143)


def check_countable(suite: Suite, args: argparse.Namespace) -> None:
    """UsageError (nothing written) when this command or this machine cannot count instructions."""
    gpu = sorted({p.device for p in suite.points() if not p.device.startswith("cpu")})
    if gpu:
        raise UsageError(f"timing.mode 'instructions' counts CPU instructions, and points of {suite.source} "
                         f"run on {', '.join(gpu)}: set fixed.device=cpu (the suite's instructions preset "
                         "does) or time them (timing.mode 'time')")
    if args.executor != "local":
        raise UsageError("timing.mode 'instructions' runs the points in this process under valgrind; "
                         f"--executor {args.executor} is not supported with it (drop the option)")
    problem = valgrind_problem()
    if problem:
        raise UsageError(problem)
    threaded = sorted({p.common.threads for p in suite.points() if p.common.threads != 1})
    if threaded:
        shown = ", ".join("the default" if t == 0 else str(t) for t in threaded)
        print(f"warning: points of {suite.source} run with threads={shown}: other threads' spinning makes "
              "instruction counts vary from call to call (the gate then cannot judge small changes); "
              "set fixed.threads=1 (the regression-smoke instructions preset does)", file=sys.stderr)


def child_argv(argv: list[str], out: Path, resume: bool) -> list[str]:
    """The child's command line: ``argv`` with the run directory fixed and the report left to the parent."""
    given = resume or any(a == "--out" or a.startswith("--out=") for a in argv)
    extra = [] if given else ["--out", str(out)]
    return [*argv, *extra, *([] if "--no-report" in argv else ["--no-report"])]


def rerun(suite: Suite, args: argparse.Namespace, argv: list[str], out: Path) -> int:
    """Run ``harness run`` again under Callgrind into ``out``; then report (unless --no-report)."""
    check_countable(suite, args)
    work = Path(tempfile.mkdtemp(prefix="harness-callgrind-"))
    cmd, env = callgrind_command(child_argv(argv, out, bool(args.resume)), work)
    print(f"harness run: counting instructions under valgrind (start-up takes about a minute; each call runs "
          f"tens of times slower than natively) into {out}", file=sys.stderr)
    proc = subprocess.Popen(cmd, env=env)
    try:
        rc = proc.wait()
    except Terminated:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait()
    except KeyboardInterrupt:  # the child got the same Ctrl-C: it saves its points and says how to resume
        rc = proc.wait()
    if rc not in CHILD_SPOKE:
        print(f"harness run: valgrind exited with {rc}; its log is kept in {work / 'valgrind.log'}",
              file=sys.stderr)
        return rc
    shutil.rmtree(work, ignore_errors=True)
    if rc in (0, 1) and not args.no_report:
        report_after_run(out)
    return rc if rc else EXIT_OK
