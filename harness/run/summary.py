"""What a run or a profiling pass did, as the CLI prints it and as exit codes."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from harness.store import OPS_FILE, PROFILES_DIR
from harness.store import columns as C


@dataclass
class RunSummary:
    """What a run did. ``counts`` maps status -> number of points run now (skipped excluded)."""

    run_dir: Path
    run_id: str
    total: int
    skipped: int
    counts: dict[str, int] = field(default_factory=dict)
    allow_failures: bool = False
    #: what resuming repaired in the run directory (torn log tails, orphan samples)
    notes: list[str] = field(default_factory=list)
    #: points left for a later resume (``max_points``)
    left: int = 0
    #: ok points whose samples were judged unstable (:mod:`harness.measure.stability`)
    unstable: int = 0

    def record(self, row: dict) -> str:
        """Count one finished point's row; returns its status."""
        status = row[C.STATUS]
        self.counts[status] = self.counts.get(status, 0) + 1
        self.unstable += status == C.OK and row.get(C.STABLE) is False
        return status

    @property
    def ran(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> int:
        return self.counts.get(C.OK, 0)

    @property
    def not_ok(self) -> int:
        """Points recorded as failed, oom or nan in this invocation."""
        return self.ran - self.ok

    @property
    def exit_code(self) -> int:
        """0 when every point was ok (or failures are allowed), else 1."""
        return 0 if self.allow_failures or self.not_ok == 0 else 1

    def line(self) -> str:
        parts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "nothing to run"
        skip = f" ({self.skipped} already recorded, skipped)" if self.skipped else ""
        where = shlex.quote(str(self.run_dir))
        left = f"; {self.left} left for --resume {where}" if self.left else ""
        shaky = (f" ({self.unstable} measured unstably: their timings may not repeat; the report names them)"
                 if self.unstable else "")
        return f"{self.ran}/{self.total} points run: {parts}{shaky}{skip}{left}. Results: {where}"


@dataclass
class ProfileSummary:
    """What ``harness profile`` did: the points profiled, and ``failed`` ({hash: error})."""

    run_dir: Path
    profiled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def line(self) -> str:
        where = (f"traces in {self.run_dir / PROFILES_DIR}/, operator table {self.run_dir / OPS_FILE}; "
                 f"read it with: harness report {shlex.quote(str(self.run_dir))} --ops")
        failed = f"; {len(self.failed)} failed" if self.failed else ""
        return f"profiled {len(self.profiled)} point(s){failed}: {where}"
