"""Durable file writes of the run directory: atomic replace, JSON, append-only JSON-lines logs.

A JSON-lines log is the source of truth of a run; a write torn by a kill or a full disk leaves at
most an unterminated last line, which :func:`repair_torn_tail` cuts and :func:`read_jsonl` skips.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DAMAGED_SUFFIX = ".damaged"  # points.jsonl.damaged: the damaged lines resume moved out of the log


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


@contextmanager
def writing(path: Path, tmp: Path | None = None) -> Iterator[None]:
    """Writes to ``path`` (staged in ``tmp``): an OSError inside names ``path`` (a write to an open
    file names none), and ``tmp`` is removed, so a full disk leaves no half-written sibling."""
    try:
        yield
    except OSError as e:
        if tmp is not None:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a ``.tmp`` sibling and a rename: readers see old or new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, tmp):
        tmp.write_bytes(data)
        os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented, key-sorted JSON, written atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


@dataclass(frozen=True)
class DamagedLine:
    """A line of a JSON-lines log that is not a JSON object: the unterminated last line of a write
    cut short (``torn_tail``), or a line damaged in the middle of the log (an edit, a bad disk)."""

    path: Path
    line: int  # 1-based
    torn_tail: bool
    text: str  # its first characters, as read
    reason: str = "not a JSON row"  # what is wrong with it

    @property
    def point_hash(self) -> str | None:
        """The ``point_hash`` its text still names, if any (which point the damage hides)."""
        m = re.search(r'"point_hash":\s*"([0-9a-f]{8,})"', self.text)
        return m.group(1) if m else None

    def describe(self) -> str:
        """``points.jsonl line 7 (point_hash 1a2b3c4d)``, and what it is."""
        h = self.point_hash
        which = f" (point_hash {h[:8]} by its text)" if h else ""
        what = "ends in an unfinished write (torn by a kill or a full disk)" if self.torn_tail else \
            f"is damaged ({self.reason})"
        return f"{self.path.name} line {self.line}{which} {what}"


RowCheck = Callable[[dict[str, Any]], "str | None"]  # what is wrong with a row (None: nothing)


RowKey = Callable[[dict[str, Any]], Any]  # what makes a row unique in its log (None: anything goes)


def read_jsonl(path: Path, damaged: list[DamagedLine] | None = None, check: RowCheck | None = None,
               key: RowKey | None = None) -> list[dict[str, Any]]:
    """The JSON-object lines of a log that pass ``check`` (and, with ``key``, are not a repeat of an
    earlier row's key). Lines that do not (a torn tail, a damaged line, a row ``check`` refuses, a
    duplicate) are left out, and appended to ``damaged`` when given."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.decode(errors="replace").split("\n")
    rows = []
    seen: dict[Any, int] = {}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        problem = None if not isinstance(row, dict) or check is None else check(row)
        if problem is None and isinstance(row, dict) and key is not None:
            k = key(row)
            if k in seen:
                problem = f"a repeat of line {seen[k]}"
            else:
                seen[k] = i + 1
        if isinstance(row, dict) and problem is None:
            rows.append(row)
        elif damaged is not None:
            torn = i == len(lines) - 1 and row is None  # an unterminated last line that does not parse
            damaged.append(DamagedLine(path, i + 1, torn, line.strip()[:200], problem or "not a JSON row"))
    return rows


def quarantine_damaged(path: Path, check: RowCheck | None = None,
                       key: RowKey | None = None) -> list[DamagedLine]:
    """Move the damaged lines of a log (not its torn tail: :func:`repair_torn_tail` cuts that) to
    ``<log>.damaged``, appended there first, then the log rewritten atomically without them:
    nothing is lost, and the points they hid run again on resume. Returns the lines moved."""
    found: list[DamagedLine] = []
    read_jsonl(path, found, check, key)
    bad = [d for d in found if not d.torn_tail]
    if not bad:
        return []
    lines = path.read_bytes().split(b"\n")
    drop = {d.line - 1 for d in bad}
    with open(path.with_name(path.name + DAMAGED_SUFFIX), "ab") as f:
        f.write(b"".join(lines[i] + b"\n" for i in sorted(drop)))
        f.flush()
        os.fsync(f.fileno())
    atomic_write_bytes(path, b"\n".join(x for i, x in enumerate(lines) if i not in drop))
    return bad


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
