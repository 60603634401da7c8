"""Reading the run directory's logs with their rows checked: a line that parses as JSON but cannot
be a row of its log (a point without a hash or a method, a status that is not one, an ok point
without a numeric latency, a sample without a numeric time) is damaged like a line that does
not parse: named where the run is read, moved aside on resume (:func:`quarantine_log`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.store import columns as C
from harness.store.files import DamagedLine, RowCheck, quarantine_damaged, read_jsonl
from harness.store.layout import POINTS_LOG, SAMPLES_LOG

#: numeric columns of a point row: a value there is a number (or null)
POINT_NUMBERS = (C.LAT_MEDIAN, C.LAT_MEAN, C.LAT_IQR, C.LAT_P10, C.LAT_P90, C.LAT_MIN, C.LAT_MAX,
                 C.N_SAMPLES, C.ELAPSED_S)


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
    return None


def sample_row_problem(row: dict[str, Any]) -> str | None:
    """What makes ``row`` unusable as a sample row, or None."""
    problem = _text(row, C.HASH)
    if problem:
        return problem
    v = row.get(C.DEVICE_MS)
    return None if v is None or _is_number(v) else f"{C.DEVICE_MS} is {v!r}, not a number"


#: the row check of each log, by file name (ops rows are free-form)
ROW_CHECKS: dict[str, RowCheck] = {POINTS_LOG: point_row_problem, SAMPLES_LOG: sample_row_problem}


def read_log(path: Path, damaged: list[DamagedLine] | None = None) -> list[dict[str, Any]]:
    """The rows of a log that pass its row check; the other lines go to ``damaged``."""
    return read_jsonl(path, damaged, ROW_CHECKS.get(path.name))


def quarantine_log(path: Path) -> list[DamagedLine]:
    """:func:`~harness.store.files.quarantine_damaged` with the log's row check."""
    return quarantine_damaged(path, ROW_CHECKS.get(path.name))
