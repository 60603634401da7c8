"""Reading the run directory's logs with their rows checked: a line that parses as JSON but cannot
be a row of its log (a point without a hash or a method, a status that is not one, an ok point
without a numeric latency, a sample without a numeric time) is damaged like a line that does
not parse: named where the run is read, moved aside on resume (:func:`quarantine_log`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.store import columns as C
from harness.store.files import DamagedLine, RowCheck, RowKey, quarantine_damaged, read_jsonl
from harness.store.layout import OPS_LOG, POINTS_LOG, SAMPLES_LOG

#: numeric columns of a point row: a value there is a number (or null)
POINT_NUMBERS = (C.LAT_MEDIAN, C.LAT_MEAN, C.LAT_IQR, C.LAT_P10, C.LAT_P90, C.LAT_MIN, C.LAT_MAX,
                 C.N_SAMPLES, C.ELAPSED_S, *C.INSTRUCTION_COUNTS)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _text(row: dict[str, Any], key: str) -> str | None:
    """Why ``row[key]`` is not a non-empty string (None: it is)."""
    v = row.get(key)
    return None if isinstance(v, str) and v else f"{key} is {v!r}, not a name"


def point_row_problem(row: dict[str, Any]) -> str | None:
    """What makes ``row`` unusable as a point row, or None."""
    problem = _text(row, C.HASH) or _text(row, C.METHOD)
    if problem:
        return problem
    if row.get(C.STATUS) not in C.STATUSES:
        return f"status is {row.get(C.STATUS)!r}, not one of {', '.join(C.STATUSES)}"
    for col in POINT_NUMBERS:
        v = row.get(col)
        if v is not None and not _is_number(v):
            return f"{col} is {v!r}, not a number"
    lat = row.get(C.LAT_MEDIAN)
    if row[C.STATUS] == C.OK and not (_is_number(lat) and math.isfinite(lat)):
        return f"an ok point without a latency ({C.LAT_MEDIAN} is {lat!r})"
    return _bookkeeping_problem(row)


#: columns whose value must lie in a range when present: (low, high), inclusive
POINT_RANGES = {C.CPU_OTHER_FRAC: (0.0, 1.0), C.CPU_STEAL_FRAC: (0.0, 1.0), C.LOAD_AVG_1M: (0.0, math.inf),
                C.CALLS_PER_SAMPLE: (1, math.inf), C.GPU_OTHER_PROCS: (0, math.inf)}


def _bookkeeping_problem(row: dict[str, Any]) -> str | None:
    """The verdict, load and batching columns hold what the harness writes there (or nothing)."""
    v = row.get(C.STABLE)
    if v is not None and not isinstance(v, bool):
        return f"{C.STABLE} is {v!r}, not true, false or null"
    for col, (lo, hi) in POINT_RANGES.items():
        v = row.get(col)
        if v is not None and not (_is_number(v) and lo <= v <= hi):
            return f"{col} is {v!r}, not a number in [{lo}, {hi}]"
    v = row.get(C.STOP_REASON)
    if v not in (None, "", *C.STOP_REASONS):
        return f"{C.STOP_REASON} is {v!r}, not {', '.join(C.STOP_REASONS)}"
    return None


def sample_row_problem(row: dict[str, Any]) -> str | None:
    """What makes ``row`` unusable as a sample row, or None."""
    problem = _text(row, C.HASH)
    if problem:
        return problem
    for col in (C.DEVICE_MS, C.INSTRUCTIONS):
        v = row.get(col)
        if v is not None and not _is_number(v):
            return f"{col} is {v!r}, not a number"
    return None


def op_row_problem(row: dict[str, Any]) -> str | None:
    """What makes ``row`` unusable as an operator row (its times and calls are numbers >= 0), or None."""
    problem = _text(row, C.HASH)
    if problem:
        return problem
    for k, v in row.items():
        if (k.endswith("_us") or k == "calls") and v is not None and not (_is_number(v) and v >= 0):
            return f"{k} is {v!r}, not a number >= 0"
    return None


#: the row check of each log, by file name
ROW_CHECKS: dict[str, RowCheck] = {POINTS_LOG: point_row_problem, SAMPLES_LOG: sample_row_problem,
                                   OPS_LOG: op_row_problem}
#: what a row of the log is unique by: a sample is one (point, index); repeats are damaged lines
ROW_KEYS: dict[str, RowKey] = {SAMPLES_LOG: lambda r: (r.get(C.HASH), r.get(C.SAMPLE))}


def read_log(path: Path, damaged: list[DamagedLine] | None = None) -> list[dict[str, Any]]:
    """The rows of a log that pass its row check (and are not repeats); the other lines go to
    ``damaged``."""
    return read_jsonl(path, damaged, ROW_CHECKS.get(path.name), ROW_KEYS.get(path.name))


def quarantine_log(path: Path) -> list[DamagedLine]:
    """:func:`~harness.store.files.quarantine_damaged` with the log's row check and key."""
    return quarantine_damaged(path, ROW_CHECKS.get(path.name), ROW_KEYS.get(path.name))
