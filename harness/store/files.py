"""Durable file writes of the run directory: atomic replace, JSON, append-only JSON-lines logs.

A JSON-lines log is the source of truth of a run; a write torn by a kill or a full disk leaves at
most an unterminated last line, which :func:`repair_torn_tail` cuts and :func:`read_jsonl` skips.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def jsonable(v: Any) -> Any:
    """``v`` as JSON can hold it: NaN -> None, inf -> "inf", numpy/torch scalars -> Python numbers."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
        try:
            return v.item()
        except (ValueError, RuntimeError):
            return str(v)
    return v


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a ``.tmp`` sibling and a rename: readers see old or new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented, key-sorted JSON, written atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
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


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """A whole JSON-lines log, written atomically."""
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
