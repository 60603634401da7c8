"""Instruction counts under Callgrind: the calibration-free CPU cost of a call.

``timing.mode: instructions`` runs the whole ``harness run`` process under valgrind's Callgrind
(:func:`callgrind_command` builds the command; the CLI re-executes itself with it), with
instrumentation and collection off, so start-up and model builds run several times faster than
instrumented. For each point the timer switches instrumentation on (``callgrind_control -i on``,
which the process answers while it spins; about a second) before the warm-up and off after the
last count. Around each counted sample it switches collection on, calls ``fn`` and dumps the
counters (``torch._C._valgrind_toggle`` / ``_valgrind_toggle_and_dump_stats``, the
client requests ``torch.utils.benchmark``'s ``collect_callgrind`` uses); :class:`Counter` reads
the instructions executed (callgrind's ``Ir`` event, ``summary:`` line) from that dump and
deletes it. The count is the call's own, its Python overhead included; it does not depend on
what else the machine runs, unlike a time.

What makes counts repeat exactly: one thread (OpenMP workers spin a varying number of
instructions while they wait; the suite's ``threads: 1``), ``PYTHONHASHSEED`` fixed (dict and
set layouts; :func:`callgrind_command` sets 0), and warm-up calls first (lazy initialisation,
allocator growth). What they cannot see: memory stalls and cache misses (a memory-bound kernel
that got slower by touching more memory may execute the same instructions), vectorisation
width (an AVX-512 path and an SSE path differ in count and in speed by different factors),
frequency, and anything on a GPU.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.errors import RunError

#: set in the re-executed process: the ``--callgrind-out-file`` its dumps are numbered after
OUT_ENV = "HARNESS_CALLGRIND_OUT"
#: the valgrind options of a counted run: collection starts off, the timer switches it on
VALGRIND_OPTIONS = ("--tool=callgrind", "--collect-atstart=no", "--instr-atstart=no")
#: seconds ``callgrind_control`` may take to switch instrumentation before the count is refused
CONTROL_TIMEOUT_S = 120.0
INSTALL_HINT = ("install valgrind (Debian/Ubuntu: apt-get install valgrind; Fedora/RHEL: dnf install "
                "valgrind; conda: conda install -c conda-forge valgrind); it runs on Linux only")

#: a count at or above this is a negative one wrapped around (no call executes 2**63 instructions)
WRAPPED = 2**63
_SUMMARY = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def valgrind_problem() -> str | None:
    """Why instructions cannot be counted on this machine (one paragraph), or None."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return ("timing.mode 'instructions' counts instructions under valgrind's Callgrind, and valgrind "
                f"(with its callgrind_control) is not on PATH: {INSTALL_HINT}. Nothing was written. Or time "
                "the points instead (timing.mode 'time', the default).")
    import torch

    if not torch._C._valgrind_supported_platform():
        return ("timing.mode 'instructions' needs torch's Callgrind client requests, which this build of "
                "torch lacks on this platform (torch._C._valgrind_supported_platform() is False); time "
                "the points instead (timing.mode 'time'). Nothing was written.")
    return None


def under_callgrind() -> bool:
    """Whether this process is the re-executed one (running under Callgrind)."""
    return bool(os.environ.get(OUT_ENV))


def callgrind_command(argv: Sequence[str], out_dir: Path) -> tuple[list[str], dict[str, str]]:
    """(command, environment) that re-runs ``python -m harness.cli *argv`` under Callgrind, its
    dumps and valgrind's own log in ``out_dir``."""
    out = out_dir / "callgrind.out"
    cmd = ["valgrind", *VALGRIND_OPTIONS, f"--callgrind-out-file={out}",
           f"--log-file={out_dir / 'valgrind.log'}", sys.executable, "-m", "harness.cli", *argv]
    env = {**os.environ, OUT_ENV: str(out), "PYTHONHASHSEED": "0"}
    return cmd, env


def parse_total(text: bytes) -> int:
    """The instructions of one Callgrind dump: its ``summary:`` (or ``totals:``) line, the first
    event (``Ir``). ValueError when the dump has neither."""
    m = _SUMMARY.search(text)
    if m is None:
        raise ValueError("no 'summary:' or 'totals:' line in the Callgrind dump")
    return int(m.group(1))


class Counter:
    """Counts the instructions of calls in a process running under Callgrind (see the module doc).

    out: the ``--callgrind-out-file`` path; Callgrind writes dump ``i`` of the process to ``<out>.<i>``.
    toggle / dump: the client requests (injectable so the bookkeeping can be tested natively,
    where they do nothing). control: the ``callgrind_control`` program (None: instrumentation is
    not switched, as with ``--instr-atstart=yes``).
    """

    def __init__(self, out: str | os.PathLike | None = None, *, toggle: Callable[[], None] | None = None,
                 dump: Callable[[], None] | None = None, control: str | None = "callgrind_control") -> None:
        import torch

        path = out if out is not None else os.environ.get(OUT_ENV)
        if not path:
            raise RunError(f"counting instructions needs the process under Callgrind ({OUT_ENV} is not set); "
                           "`harness run` re-executes itself under valgrind when timing.mode is "
                           "'instructions'")
        self.out = Path(path)
        self.toggle = toggle if toggle is not None else torch._C._valgrind_toggle
        self.dump = dump if dump is not None else torch._C._valgrind_toggle_and_dump_stats
        self.control = control

    @contextlib.contextmanager
    def instrumented(self) -> Iterator[None]:
        """Callgrind instruments the code run inside (switched on and off around it). The first dump
        after instrumentation comes back on can hold a wrapped-around (negative) count, so one empty
        count is made and dropped first."""
        self.instrument(True)
        try:
            if self.control is not None:
                self.count(lambda: None, check=False)
            yield
        finally:
            self.instrument(False)

    def instrument(self, on: bool) -> None:
        """Switch Callgrind's instrumentation of this process (``callgrind_control -i on|off PID``;
        this process spins meanwhile, so that valgrind polls for the command)."""
        if self.control is None:
            return
        cmd = [self.control, "-i", "on" if on else "off", str(os.getpid())]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        while proc.poll() is None:  # busy: a blocked process would not see the command
            if time.monotonic() > deadline:
                proc.kill()
                break
        said = proc.communicate()[0].decode(errors="replace").strip()
        if proc.returncode != 0 or "OK" not in said:
            raise RunError(f"`{' '.join(cmd)}` could not switch Callgrind's instrumentation (exit "
                           f"{proc.returncode}): {said[-300:] or 'no output'}")

    def _dumps(self) -> list[Path]:
        """The dumps lying next to ``out`` (``<out>.<number>``), in the order Callgrind wrote them."""
        found = [(int(p.name.rsplit(".", 1)[1]), p) for p in self.out.parent.glob(self.out.name + ".*")
                 if p.name.rsplit(".", 1)[1].isdigit()]
        return [p for _, p in sorted(found)]

    def count(self, fn: Callable[[], Any], calls: int = 1, check: bool = True) -> tuple[int, Any]:
        """(instructions executed by ``calls`` calls of ``fn`` and the loop around them, last output);
        RunError for a count that cannot be one (a negative count wrapped around 2**64), unless not
        ``check``."""
        out = None
        collecting = gc.isenabled()
        gc.disable()  # as timeit does: a collection would land in whichever count reaches its threshold
        try:
            self.toggle()  # collection on
            for _ in range(calls):
                out = fn()
            self.dump()  # collection off, counters written to the next dump (<out>.<n>) and zeroed
        finally:
            if collecting:
                gc.enable()
        dumps = self._dumps()  # each is deleted once read: the newest is this one
        if not dumps:
            raise RunError(f"no Callgrind dump appeared next to {self.out}: is this process really running "
                           f"under valgrind --tool=callgrind (with {OUT_ENV} naming its "
                           "--callgrind-out-file)?")
        text = dumps[-1].read_bytes()
        for path in dumps:
            path.unlink()
        n = parse_total(text)
        if check and n >= WRAPPED:
            raise RunError(f"Callgrind reported {n} instructions, a negative count wrapped around 2**64: its "
                           "counters were reset while collecting; run the point again (harness run --resume)")
        return n, out
