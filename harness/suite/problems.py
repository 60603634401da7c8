"""Where a suite problem is and how it reads: the line map and the one-paragraph errors.

Every stage of the loader reports what it finds to one :class:`Problems` by *key path*
(``("sweep", "heads", 1)``); the collector owns the line map (which file line, preset line
or ``--set`` option set each path) and writes each problem as one paragraph that starts with
its location and field path. The loader raises them together as one :class:`SuiteError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError

KeyPath = tuple[Any, ...]


class SuiteError(HarnessError, ValueError):
    """A suite that cannot run. ``problems`` holds one paragraph per problem."""

    def __init__(self, problems: Sequence[str], source: str = "suite") -> None:
        self.problems = list(problems)
        self.source = source
        n = len(self.problems)
        head = f"{source}: {n} problem{'s' if n != 1 else ''} found before running anything:"
        super().__init__(head + "\n\n" + "\n\n".join(self.problems))


def dotted(path: KeyPath) -> str:
    """("sweep", "seq_len", 2) -> "sweep.seq_len[2]"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass(frozen=True)
class Issue:
    """A problem found without the line map (while expanding points), to be located later.

    path: the suite entry it comes from (``("methods", m)``, ``("include", i)`` or ``()``);
    near: key paths whose own line best locates the message (the first that has one wins; the
    message then carries no field path); when none has one, ``path`` locates it.
    """

    message: str
    path: KeyPath = ()
    near: tuple[KeyPath, ...] = ()


class Problems:
    """The problems of one suite, each a paragraph ``LOCATION: FIELD: MESSAGE``.

    ``locs`` maps a key path to where it was set: ``"FILE, line N"``, a preset's line with
    ``(preset 'NAME')``, or ``--set KEY=VALUE``. A path without an entry of its own takes its
    nearest ancestor's, and the file's when none has one.
    """

    def __init__(self, source: str, locs: dict[KeyPath, str] | None = None) -> None:
        self.source = source
        self.locs: dict[KeyPath, str] = dict(locs or {})
        self.messages: list[str] = []
        self._said: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.messages)

    def where(self, path: KeyPath) -> str:
        """Location of ``path``: its own, its nearest located ancestor's, or the file."""
        for i in range(len(path), -1, -1):
            loc = self.locs.get(path[:i])
            if loc is not None:
                return loc
        return self.source

    def add(self, path: KeyPath, message: str) -> None:
        """A problem with the value at ``path`` (``()``: the suite as a whole)."""
        field = f"{dotted(path)}: " if path else ""
        self.add_at(self.where(path), f"{field}{message}")

    def add_at(self, where: str, message: str) -> None:
        """A problem located by the caller (a command-line option, the file itself). A paragraph
        already reported (the same problem found again, e.g. for another point) is kept once."""
        text = f"{where}: {message}"
        if text not in self._said:
            self._said.add(text)
            self.messages.append(text)

    def report(self, issue: Issue) -> None:
        """Locate an :class:`Issue` and add it: at the first of ``near`` set in the suite (or by
        ``--set``/``--preset``); when none is, at ``path`` (with its field path) if it has one,
        else where the first of ``near`` would be (its nearest located ancestor, or the file)."""
        located = next((self.locs[p] for p in issue.near if p in self.locs), None)
        if located is not None:
            self.add_at(located, issue.message)
        elif issue.path or not issue.near:
            self.add(issue.path, issue.message)
        else:
            self.add_at(self.where(issue.near[0]), issue.message)

    def record(self, path: KeyPath, loc: str) -> None:
        """``path`` was set at ``loc`` (a line of the file)."""
        self.locs[path] = loc

    def located(self, path: KeyPath) -> str | None:
        """Where ``path`` itself was set; None when it has no location of its own."""
        return self.locs.get(path)

    def relocate(self, path: KeyPath, loc: str) -> None:
        """``path`` (and everything below it) is now set at ``loc``: a preset or ``--set``."""
        for p in [p for p in self.locs if p[: len(path)] == path]:
            del self.locs[p]
        self.locs[path] = loc

    def error(self) -> SuiteError:
        """Everything reported so far, as one exception for the caller."""
        return SuiteError(self.messages, self.source)
