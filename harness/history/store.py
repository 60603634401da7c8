"""The history store: one Parquet file of per-point summaries, one row per (run, point).

Columns (:data:`SCHEMA`): ``seq`` (order of addition: every row of one added run shares it,
1, 2, ...), ``run_id``, ``commit``, ``branch``, ``run_started_at`` (the run's ``created_at``),
``added_at`` (UTC, ISO 8601), ``point_hash``, ``label`` (method and the run's varying parameters),
``workload``, ``method``, ``device_kind`` (cpu / cuda), ``device`` (GPU model, else CPU model),
``timer`` (how the point was measured: cuda_event, perf_counter, callgrind, ...),
``latency_median_ms``, ``instructions`` (median instructions per call; NaN where the run has no
such column), ``n_samples``, ``stable`` (the samples' verdict; missing where none). A point's
entry has a latency or an instruction count, or both.

One file, rewritten whole on every add (write a sibling, then rename): a reader sees the old
store or the new one, never half of one, and a store that cannot be read is refused, never
replaced. Adds serialize on ``<store>.lock`` (``flock``), so two at once both land.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import io
import os
import shlex
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import HarnessError
from harness.store import atomic_write_bytes
from harness.store import columns as C

#: default store, in the current folder (a CI cache or a branch keeps this one file)
DEFAULT_STORE = "harness-history.parquet"
#: Parquet metadata key and the version of this layout; a store without it is not ours
FORMAT_KEY, FORMAT_VERSION = b"harness_history", b"1"
LOCK_SUFFIX = ".lock"
#: how pyarrow's errors about bytes in memory begin (left out of the message: the path is named)
BUFFER_PREFIX = "Could not open Parquet input source '<Buffer>':"
#: how long an add waits for another add to finish with the store
LOCK_WAIT_S = 120.0
LOCK_POLL_S = 0.05

SEQ = "seq"
COMMIT = "commit"
BRANCH = "branch"
RUN_STARTED_AT = "run_started_at"
ADDED_AT = "added_at"
LABEL = "label"
DEVICE_KIND = "device_kind"
DEVICE = "device"
#: median instructions per call, where the run recorded it (optional; NaN otherwise): the run's
#: column (``timing.mode: instructions``)
INSTRUCTIONS = C.INSTRUCTIONS
#: the metrics a history can be checked on; higher is worse for both
METRICS = (C.LAT_MEDIAN, INSTRUCTIONS)

#: column -> pandas dtype, in the store's order
SCHEMA: dict[str, str] = {
    SEQ: "Int64", C.RUN_ID: "object", COMMIT: "object", BRANCH: "object", RUN_STARTED_AT: "object",
    ADDED_AT: "object", C.HASH: "object", LABEL: "object", C.WORKLOAD: "object", C.METHOD: "object",
    DEVICE_KIND: "object", DEVICE: "object", C.TIMER: "object", C.LAT_MEDIAN: "float64",
    INSTRUCTIONS: "float64", C.N_SAMPLES: "Int64", C.STABLE: "boolean",
}
#: columns that must hold a value in every row
REQUIRED = (SEQ, C.RUN_ID, COMMIT, C.HASH)


class HistoryError(HarnessError):
    """A history command that cannot go on: a damaged store, a run that cannot be added (exit 2)."""


def empty() -> pd.DataFrame:
    """A store without entries, with every column of :data:`SCHEMA`."""
    return conform(pd.DataFrame({c: pd.Series(dtype=t) for c, t in SCHEMA.items()}))


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with exactly the columns of :data:`SCHEMA`, in order and of their dtypes (a missing
    optional column is all missing)."""
    out = pd.DataFrame(index=df.index)
    for col, dtype in SCHEMA.items():
        values = df[col] if col in df.columns else pd.Series(None, index=df.index, dtype="object")
        if dtype == "object":
            out[col] = values.astype(object).where(values.notna(), None)
        elif dtype in ("float64", "Int64"):
            out[col] = pd.to_numeric(values, errors="raise").astype(dtype)
        else:
            out[col] = values.astype(dtype)
    return out.reset_index(drop=True)


def damaged(path: Path, reason: str) -> HistoryError:
    """The one paragraph for a store that cannot be used, and what to do about it."""
    return HistoryError(
        f"{path} is not a usable history store ({reason}). Nothing was changed, and nothing is written "
        f"over it. Move it aside (mv {shlex.quote(str(path))} {shlex.quote(f'{path}.damaged')}) and start a "
        "new history with `harness history add RUN`, or put back a good copy (an older CI cache, the "
        "branch that keeps it).")


def parse(path: Path, data: bytes) -> pd.DataFrame:
    """The entries of a store's bytes, checked: a :class:`HistoryError` naming ``path`` when they
    are not a history store of this version."""
    if not data:
        raise damaged(path, "the file is empty")
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, ValueError, OSError) as e:
        why = str(e).splitlines()[0].replace(f"{BUFFER_PREFIX} ", "").rstrip(".")
        raise damaged(path, f"not a readable Parquet file: {why}") from None
    version = (table.schema.metadata or {}).get(FORMAT_KEY)
    if version is None:
        raise damaged(path, "a Parquet file without the harness history marker")
    if version != FORMAT_VERSION:
        raise HistoryError(f"{path} is a history store of format {version.decode(errors='replace')}; "
                           f"this harness reads format {FORMAT_VERSION.decode()}. Use the harness version "
                           "that wrote it, or start a new history (move the file aside).")
    df = table.to_pandas()
    missing = [c for c in SCHEMA if c not in df.columns]
    if missing:
        raise damaged(path, f"missing column(s) {', '.join(missing)}")
    try:
        df = conform(df)
    except (ValueError, TypeError) as e:
        raise damaged(path, f"a column of the wrong type: {str(e).splitlines()[0]}") from None
    empty_cells = [c for c in REQUIRED if df[c].isna().any()]
    if empty_cells:
        raise damaged(path, f"rows without a value in {', '.join(empty_cells)}")
    return df


def read_store(path: str | os.PathLike, missing_ok: bool = False) -> pd.DataFrame:
    """The entries of the store at ``path`` (:data:`SCHEMA`), in order of ``seq``.

    A missing file is an empty store when ``missing_ok``, else a :class:`HistoryError`. A file
    that is not a store is a :class:`HistoryError` (see :func:`damaged`); a refused read is the
    system's OSError (exit 3).
    """
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return empty()
        raise HistoryError(f"no history store at {path}: add runs to it first (`harness history add RUN "
                           f"--store {path}`), or name the store with --store FILE")
    df = parse(path, path.read_bytes())
    return df.sort_values(SEQ, kind="stable").reset_index(drop=True)


def to_bytes(df: pd.DataFrame) -> bytes:
    """The store's Parquet bytes of ``df`` (conformed to :data:`SCHEMA`), with the format marker."""
    table = pa.Table.from_pandas(conform(df), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), FORMAT_KEY: FORMAT_VERSION})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def write_store(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """Replace the store at ``path`` with ``df`` atomically (a sibling ``.tmp``, then a rename)."""
    atomic_write_bytes(Path(path), to_bytes(df))


@contextmanager
def store_lock(path: str | os.PathLike, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold ``<store>.lock`` (``flock``, exclusive) while the store is read and written; waits up
    to ``wait_s`` for another holder, then a :class:`HistoryError` naming it. Released when the
    block ends or the process dies."""
    lock = Path(f"{path}{LOCK_SUFFIX}")
    lock.parent.mkdir(parents=True, exist_ok=True)  # a new store's folder
    with open(lock, "a+") as f:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    raise HistoryError(f"the history store {path} is being written by {holder} (it holds "
                                       f"{lock}) and was still busy after {wait_s:g} s: try again when that "
                                       "command has finished") from None
                time.sleep(LOCK_POLL_S)
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on host {socket.gethostname()} (since {now()})\n")
            f.flush()
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def now() -> str:
    """The time in UTC, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def append(path: str | os.PathLike, entries: pd.DataFrame, wait_s: float = LOCK_WAIT_S) -> int:
    """Add one run's ``entries`` (:data:`SCHEMA` without ``seq`` and ``added_at``) to the store
    at ``path`` under its lock; returns the run's ``seq``. A :class:`HistoryError` when the run
    (its ``run_id``) is already there; the store is written only after every check passed."""
    with store_lock(path, wait_s):
        old = read_store(path, missing_ok=True)
        run_id = str(entries[C.RUN_ID].iloc[0])
        there = old[old[C.RUN_ID] == run_id]
        if len(there):
            first = there.iloc[0]
            raise HistoryError(f"run {run_id} is already in the history {path} (entry {first[SEQ]}, commit "
                               f"{str(first[COMMIT])[:12]}); nothing to do: each run is added once")
        seq = int(old[SEQ].max()) + 1 if len(old) else 1
        new = entries.assign(**{SEQ: seq, ADDED_AT: now()})
        write_store(path, pd.concat([old, conform(new)], ignore_index=True) if len(old) else new)
        return seq

