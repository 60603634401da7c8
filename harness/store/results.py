"""Results store: a run directory with tidy per-point rows, raw samples and metadata.

Layout of ``RUN_DIR``::

    run.json               manifest: schema version, run id, suite name, suite hash, argv, created_at
    suite.resolved.yaml    the suite after preset and --set overrides
    env.json               environment fingerprint
    metrics.json           meaning/direction of every q_/fid_/work_ column
    points.jsonl           durable append-only log, one JSON row per finished point
    points.parquet         the same rows as a table (rewritten after every point)
    samples.jsonl / samples.parquet   raw per-sample timings

Rows are appended the moment a point finishes, so a killed run keeps every finished
point; the JSONL logs are the source of truth and the parquet tables are exports built from
them (see :class:`RunWriter`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from harness.store import columns as C

#: version of the run-directory layout and columns; :func:`load` refuses other versions
SCHEMA_VERSION = 2  # 2: suite.resolved.yaml records which parameters belong to whom

# run directory files
MANIFEST_FILE = "run.json"
SUITE_FILE = "suite.resolved.yaml"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.json"
POINTS_LOG = "points.jsonl"
POINTS_FILE = "points.parquet"
SAMPLES_LOG = "samples.jsonl"
SAMPLES_FILE = "samples.parquet"
OPS_LOG = "ops.jsonl"
OPS_FILE = "ops.parquet"
PROFILED_AT = "profiled_at"  # ops rows of one profiled pass share this stamp
PROFILES_DIR = "profiles"
LOCK_FILE = ".lock"  # held by the process writing the run; says which one


class RunDirError(ValueError):
    """A path that is not a readable run directory of this harness's schema (one paragraph)."""


class RunLock:
    """Exclusive lock of a run directory by one process (``flock`` on ``.lock``, released when the
    process ends, even by kill -9); the file names the holder for the error message of others."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self._file: Any = None

    def acquire(self) -> RunLock:
        """Take the lock or raise RunDirError naming the process that holds it."""
        import fcntl
        import socket

        self.run_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.run_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunDirError(in_use_message(self.run_dir, holder)) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on host {socket.gethostname()} (since "
                f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')})\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            import fcntl

            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def in_use_message(run_dir: Path, holder: str) -> str:
    """The one paragraph for a run directory another process is writing."""
    return (f"{run_dir} is in use by {holder}: wait for that run to finish (or stop it), then resume it "
            "with --resume; two processes writing one run directory would double its points")


def lock_holder(run_dir: str | os.PathLike) -> str | None:
    """Who holds the run directory's lock (``pid N on host H (since ...)``), or None when nobody
    does. Read only: a shared, non-blocking ``flock`` on a read-only handle, released at once."""
    import fcntl

    try:
        f = open(Path(run_dir) / LOCK_FILE)  # noqa: SIM115 - closed below; read only, never created
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "another process"
        except OSError:  # a file system without flock: say nothing rather than guess
            return None
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a run (its manifest exists)."""
    return (Path(path) / MANIFEST_FILE).exists()


def read_manifest(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``run.json`` of a run directory, its schema version checked.

    Raises RunDirError naming the path and what to do when it is missing, unreadable, or
    written by a harness with another results schema."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST_FILE
    if not path.exists():
        raise RunDirError(f"{run_dir} is not a run directory: {MANIFEST_FILE} is missing "
                          "(a run directory is what `harness run` writes under --out)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        msg = f"{path} cannot be read as JSON ({e}); it is not a run this harness wrote"
        raise RunDirError(msg) from None
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        wrote = manifest.get("harness_version", "an unknown version")
        raise RunDirError(
            f"{run_dir} was written with results schema version {version} (harness {wrote}); this harness "
            f"reads version {SCHEMA_VERSION}. Re-run its suite with this harness (the suite is in "
            f"{run_dir / SUITE_FILE}), or read it with the harness version that wrote it."
        )
    return manifest


def read_env(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``env.json`` of a run ({} when absent); RunDirError naming the file when it is damaged."""
    path = Path(run_dir) / ENV_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path} cannot be read as JSON ({e}); restore it from a copy of the run, "
                          "or start a new run") from None


def note_resume(run_dir: str | os.PathLike, at: str, argv: list[str], env: dict[str, Any]) -> dict[str, Any]:
    """Record one resumption (time, command line, machine fingerprint) in ``run.json``."""
    manifest = read_manifest(run_dir)
    manifest.setdefault("resumed", []).append({"at": at, "argv": argv, "env": env})
    write_json(Path(run_dir) / MANIFEST_FILE, manifest)
    return manifest


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
        try:
            return v.item()
        except (ValueError, RuntimeError):
            return str(v)
    return v


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines of a log; a torn (unterminated or undecodable) line is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a torn line from a killed run or a full disk
            continue
    return rows


def repair_torn_tail(path: Path) -> int:
    """Cut an unterminated last line (a write torn by a kill or a full disk) so the next append
    starts on a fresh line. Returns the number of bytes dropped (0: the log was whole)."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep, end = 0, size
        while end > 0:  # the last newline, reading backwards in blocks
            start = max(0, end - (1 << 16))
            f.seek(start)
            i = f.read(end - start).rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            end = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def _write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    _atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


@dataclass
class RunLogs:
    """The committed rows of a run directory's logs: points, their samples, their operator rows."""

    points: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    ops: list[dict[str, Any]]


def read_logs(run_dir: str | os.PathLike) -> RunLogs:
    """Every committed point of a run with its samples and operator rows (orphans left out)."""
    run_dir = Path(run_dir)
    points = _read_jsonl(run_dir / POINTS_LOG)
    done = {r.get(C.HASH) for r in points}
    return RunLogs(points=points,
                   samples=[r for r in _read_jsonl(run_dir / SAMPLES_LOG) if r.get(C.HASH) in done],
                   ops=[r for r in _read_jsonl(run_dir / OPS_LOG) if r.get(C.HASH) in done])


def write_logs(run_dir: str | os.PathLike, logs: RunLogs) -> None:
    """Write the three logs of a new run directory (each atomically; ops only when there are any)."""
    run_dir = Path(run_dir)
    _write_jsonl_atomic(run_dir / SAMPLES_LOG, logs.samples)
    if logs.ops:
        _write_jsonl_atomic(run_dir / OPS_LOG, logs.ops)
    _write_jsonl_atomic(run_dir / POINTS_LOG, logs.points)  # last: the rows commit the points


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
        _atomic_write_bytes(run_dir / SUITE_FILE, yaml.safe_dump(suite_resolved, sort_keys=False).encode())
        write_json(run_dir / ENV_FILE, env)
        write_json(run_dir / METRICS_FILE, metrics)
        return cls(run_dir)

    @classmethod
    def open_existing(cls, run_dir: Path) -> tuple[RunWriter, list[str]]:
        """Reopen a run for appending after repairing its logs; returns notes on what was repaired."""
        writer = cls(Path(run_dir))
        notes = []
        for name in (POINTS_LOG, SAMPLES_LOG):
            dropped = repair_torn_tail(writer.run_dir / name)
            if dropped:
                notes.append(f"{name}: cut a torn last line ({dropped} bytes of an unfinished write)")
        done = writer.finished_hashes()
        samples = _read_jsonl(writer.run_dir / SAMPLES_LOG)
        kept = [r for r in samples if r.get(C.HASH) in done]
        if len(kept) != len(samples):
            _write_jsonl_atomic(writer.run_dir / SAMPLES_LOG, kept)
            notes.append(f"{SAMPLES_LOG}: dropped {len(samples) - len(kept)} samples of points that never "
                         "finished (they run again)")
        return writer, notes

    def finished_hashes(self) -> set[str]:
        """Hashes of points already recorded (any status): a resumed run skips these."""
        return {r[C.HASH] for r in _read_jsonl(self.run_dir / POINTS_LOG) if C.HASH in r}

    def append(self, row: dict[str, Any], samples: Iterable[dict[str, Any]] = ()) -> None:
        """Durably record one finished point: its samples, then its row (the commit)."""
        with open(self.run_dir / SAMPLES_LOG, "a") as f:
            for s in samples:
                f.write(json.dumps({k: _jsonable(v) for k, v in s.items()}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with open(self.run_dir / POINTS_LOG, "a") as f:
            f.write(json.dumps({k: _jsonable(v) for k, v in row.items()}, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def trace_path(self, point_hash: str) -> Path:
        """Where the profiled pass of a point writes its Chrome/Perfetto trace."""
        return self.run_dir / PROFILES_DIR / f"{point_hash}.trace.json.gz"

    def append_ops(self, rows: Iterable[dict[str, Any]]) -> None:
        """Operator rows of a point's profiled pass (written before its row commits the point)."""
        with open(self.run_dir / OPS_LOG, "a") as f:
            for r in rows:
                f.write(json.dumps({k: _jsonable(v) for k, v in r.items()}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def update_metrics(self, metrics: dict[str, Any]) -> None:
        path = self.run_dir / METRICS_FILE
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(metrics)
        write_json(path, current)

    def flush_tables(self) -> None:
        """Build points.parquet and samples.parquet from the logs (both written, then both renamed)."""
        points, samples = read_tables(self.run_dir)
        staged = []
        for df, name in ((points, POINTS_FILE), (samples, SAMPLES_FILE)):
            tmp = self.run_dir / (name + ".tmp")
            df.to_parquet(tmp, index=False)
            staged.append((tmp, self.run_dir / name))
        for tmp, final in staged:
            os.replace(tmp, final)
        if (self.run_dir / OPS_LOG).exists():
            ops = read_ops(self.run_dir)
            tmp = self.run_dir / (OPS_FILE + ".tmp")
            ops.to_parquet(tmp, index=False)
            os.replace(tmp, self.run_dir / OPS_FILE)


def read_ops(run_dir: Path) -> pd.DataFrame:
    """The operator table of a profiled run (rows of committed points only, of each point's
    latest profile: ``harness profile`` appends a newer one); empty when none."""
    run_dir = Path(run_dir)
    done = {r.get(C.HASH) for r in _read_jsonl(run_dir / POINTS_LOG)}
    rows = [r for r in _read_jsonl(run_dir / OPS_LOG) if r.get(C.HASH) in done]
    latest: dict[str, str] = {}
    for r in rows:
        latest[r[C.HASH]] = max(latest.get(r[C.HASH], ""), str(r.get(PROFILED_AT) or ""))
    return pd.DataFrame([r for r in rows if str(r.get(PROFILED_AT) or "") == latest[r[C.HASH]]])


def read_tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, samples) of a run from its logs (the source of truth), samples only of committed
    points. Without logs (a run directory copied without them): the parquet tables."""
    run_dir = Path(run_dir)
    if not (run_dir / POINTS_LOG).exists() and (run_dir / POINTS_FILE).exists():
        points = pd.read_parquet(run_dir / POINTS_FILE)
        samples = (pd.read_parquet(run_dir / SAMPLES_FILE) if (run_dir / SAMPLES_FILE).exists()
                   else pd.DataFrame(columns=list(C.SAMPLE_COLUMNS)))
        return points, samples
    rows = _read_jsonl(run_dir / POINTS_LOG)
    done = {r.get(C.HASH) for r in rows}
    samples = [r for r in _read_jsonl(run_dir / SAMPLES_LOG) if r.get(C.HASH) in done]
    return _points_frame(rows), pd.DataFrame(samples, columns=list(C.SAMPLE_COLUMNS))


def _points_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in C.IDENTITY:
        if col not in df.columns:
            df[col] = None
    # mixed-type config columns (e.g. a param that is an int for one method and absent for
    # another) are fine in pandas; parquet needs one type per column, so stringify mixed objects
    for col in df.columns:
        if df[col].dtype == object:
            present = [v for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))]
            types = {type(v) for v in present}
            if len(types) > 1 and not types <= {int, float}:
                df[col] = df[col].map(lambda v: None if v is None else str(v))
    return df


@dataclass
class RunData:
    """A loaded run directory."""

    path: Path
    points: pd.DataFrame
    samples: pd.DataFrame
    manifest: dict[str, Any]
    suite: dict[str, Any]
    env: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def ok(self) -> pd.DataFrame:
        """Points whose status is ok."""
        return self.points[self.points[C.STATUS] == C.OK]


def load(path: str | os.PathLike) -> RunData:
    """Load a run directory into DataFrames (``points``, ``samples``) and its metadata.

    Raises RunDirError (see :func:`read_manifest`) when ``path`` is not a run directory of
    this schema version.
    """
    run_dir = Path(path)
    manifest = read_manifest(run_dir)
    points, samples = read_tables(run_dir)

    def damaged(path: Path, e: Exception) -> RunDirError:
        first = (str(e).splitlines() or [""])[0]
        return RunDirError(f"{path} is damaged ({type(e).__name__}: {first}); restore it from a copy of the "
                           "run, or re-run its suite")

    def _json(name: str) -> dict[str, Any]:
        p = run_dir / name
        try:
            return json.loads(p.read_text()) if p.exists() else {}
        except (ValueError, UnicodeDecodeError) as e:
            raise damaged(p, e) from None

    suite_path = run_dir / SUITE_FILE
    try:
        suite = yaml.safe_load(suite_path.read_text()) if suite_path.exists() else {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise damaged(suite_path, e) from None
    return RunData(
        path=run_dir,
        points=points,
        samples=samples,
        manifest=manifest,
        suite=suite or {},
        env=_json(ENV_FILE),
        metrics=_json(METRICS_FILE),
    )
