"""Writing a run directory: one durable row per finished point, its samples, its operator rows.

A point is committed by its row in ``points.jsonl``; the parquet tables are exports of the logs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from harness.store import columns as C
from harness.store.files import (
    DAMAGED_SUFFIX,
    DamagedLine,
    atomic_write_bytes,
    jsonable,
    repair_torn_tail,
    write_json,
    write_jsonl_atomic,
    writing,
)
from harness.store.layout import (
    ENV_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    OPS_FILE,
    OPS_LOG,
    POINTS_FILE,
    POINTS_LOG,
    PROFILES_DIR,
    SAMPLES_FILE,
    SAMPLES_LOG,
    SCHEMA_VERSION,
    SUITE_FILE,
)
from harness.store.load import read_ops, read_tables
from harness.store.logs import quarantine_log, read_log


@dataclass
class RunLogs:
    """The committed rows of a run directory's logs: points, their samples, their operator rows."""

    points: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    ops: list[dict[str, Any]]
    damaged: list[DamagedLine] = field(default_factory=list)  # lines of the logs that are not rows


def read_logs(run_dir: str | os.PathLike) -> RunLogs:
    """Every committed point of a run with its samples and operator rows (orphans left out), and
    the lines of its logs that could not be read."""
    run_dir = Path(run_dir)
    damaged: list[DamagedLine] = []
    points = read_log(run_dir / POINTS_LOG, damaged)
    done = {r.get(C.HASH) for r in points}
    return RunLogs(points=points,
                   samples=[r for r in read_log(run_dir / SAMPLES_LOG, damaged) if r.get(C.HASH) in done],
                   ops=[r for r in read_log(run_dir / OPS_LOG, damaged) if r.get(C.HASH) in done],
                   damaged=damaged)


def write_logs(run_dir: str | os.PathLike, logs: RunLogs) -> None:
    """Write the three logs of a new run directory (each atomically; ops only when there are any)."""
    run_dir = Path(run_dir)
    write_jsonl_atomic(run_dir / SAMPLES_LOG, logs.samples)
    if logs.ops:
        write_jsonl_atomic(run_dir / OPS_LOG, logs.ops)
    write_jsonl_atomic(run_dir / POINTS_LOG, logs.points)  # last: the rows commit the points


def write_suite_file(run_dir: Path, suite_resolved: dict[str, Any]) -> None:
    """``suite.resolved.yaml``: the suite after preset and --set overrides (written atomically)."""
    atomic_write_bytes(Path(run_dir) / SUITE_FILE, yaml.safe_dump(suite_resolved, sort_keys=False).encode())


def _append_lines(path: Path, lines: list[str]) -> None:
    """Append ``lines`` to a log and fsync it; an OSError names the log."""
    if not lines and path.exists():
        return
    with writing(path), open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


class RunWriter:
    """Appends rows to a run directory. Create with :meth:`create` or :meth:`open_existing`.

    A point is committed by its row in ``points.jsonl``; its samples are written just before it
    and count only once the row exists (samples without a row are orphans: dropped on resume
    and ignored on load). The parquet tables are exports built from the logs by
    :meth:`flush_tables` (at the end of a run, on resume, on demand), never on every append.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    @classmethod
    def create(
        cls,
        run_dir: Path,
        manifest: dict[str, Any],
        suite_resolved: dict[str, Any],
        env: dict[str, Any],
        metrics: dict[str, Any],
    ) -> RunWriter:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / MANIFEST_FILE, {"schema_version": SCHEMA_VERSION, **manifest})
        write_suite_file(run_dir, suite_resolved)
        write_json(run_dir / ENV_FILE, env)
        write_json(run_dir / METRICS_FILE, metrics)
        return cls(run_dir)

    @classmethod
    def open_existing(cls, run_dir: Path) -> tuple[RunWriter, list[str]]:
        """Reopen a run for appending after repairing its logs; returns notes on what was repaired."""
        writer = cls(Path(run_dir))
        notes = []
        log, table = writer.run_dir / SAMPLES_LOG, writer.run_dir / SAMPLES_FILE
        if not log.exists() and table.exists():  # rebuilt from its export before anything is appended
            rows = pd.read_parquet(table).to_dict("records")
            write_jsonl_atomic(log, [{k: jsonable(v) for k, v in r.items()} for r in rows])
            notes.append(f"{SAMPLES_LOG} was missing; written again from {SAMPLES_FILE} "
                         f"({len(rows)} samples)")
        for name in (POINTS_LOG, SAMPLES_LOG, OPS_LOG):
            dropped = repair_torn_tail(writer.run_dir / name)
            if dropped:
                notes.append(f"{name}: cut a torn last line ({dropped} bytes of an unfinished write)")
            moved = quarantine_log(writer.run_dir / name)
            if moved:
                shown = "; ".join(d.describe() for d in moved[:3]) + ("; ..." if len(moved) > 3 else "")
                then = "their points run again" if name == POINTS_LOG else "the tables leave them out"
                notes.append(f"{name}: moved {len(moved)} damaged line(s) to {name}{DAMAGED_SUFFIX} "
                             f"({shown}); {then}")
        done = writer.finished_hashes()
        samples = read_log(writer.run_dir / SAMPLES_LOG)
        kept = [r for r in samples if r.get(C.HASH) in done]
        if len(kept) != len(samples):
            write_jsonl_atomic(writer.run_dir / SAMPLES_LOG, kept)
            notes.append(f"{SAMPLES_LOG}: dropped {len(samples) - len(kept)} samples of points that never "
                         "finished (they run again)")
        return writer, notes

    def finished_hashes(self) -> set[str]:
        """Hashes of points already recorded (any status): a resumed run skips these."""
        return {r[C.HASH] for r in read_log(self.run_dir / POINTS_LOG)}

    def append(self, row: dict[str, Any], samples: Iterable[dict[str, Any]] = ()) -> None:
        """Durably record one finished point: its samples, then its row (the commit)."""
        _append_lines(self.run_dir / SAMPLES_LOG,
                      [json.dumps({k: jsonable(v) for k, v in s.items()}) for s in samples])
        _append_lines(self.run_dir / POINTS_LOG,
                      [json.dumps({k: jsonable(v) for k, v in row.items()}, default=str)])

    def trace_path(self, point_hash: str) -> Path:
        """Where the profiled pass of a point writes its Chrome/Perfetto trace."""
        return self.run_dir / PROFILES_DIR / f"{point_hash}.trace.json.gz"

    def append_ops(self, rows: Iterable[dict[str, Any]]) -> None:
        """Operator rows of a point's profiled pass (written before its row commits the point)."""
        lines = [json.dumps({k: jsonable(v) for k, v in r.items()}) for r in rows]
        _append_lines(self.run_dir / OPS_LOG, lines)

    def update_metrics(self, metrics: dict[str, Any]) -> None:
        path = self.run_dir / METRICS_FILE
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(metrics)
        write_json(path, current)

    def flush_tables(self) -> None:
        """Build points.parquet and samples.parquet from the logs (both written, then both renamed)."""
        points, samples = read_tables(self.run_dir)
        staged = []
        try:
            for df, name in ((points, POINTS_FILE), (samples, SAMPLES_FILE)):
                tmp = self.run_dir / (name + ".tmp")
                staged.append((tmp, self.run_dir / name))
                with writing(self.run_dir / name, tmp):
                    df.to_parquet(tmp, index=False)
        except OSError:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        for tmp, final in staged:
            os.replace(tmp, final)
        if (self.run_dir / OPS_LOG).exists():
            ops = read_ops(self.run_dir)
            tmp = self.run_dir / (OPS_FILE + ".tmp")
            with writing(self.run_dir / OPS_FILE, tmp):
                ops.to_parquet(tmp, index=False)
                os.replace(tmp, self.run_dir / OPS_FILE)
