"""Parameter metadata for method, workload and preset dataclasses.

Every sweepable knob is a dataclass field declared with :func:`param`, which records
a help text and the allowed values (a numeric range or a list of choices). The suite
loader validates against this metadata before anything runs, and ``harness list``
prints it. Validation lives here, at the edge, not in the algorithms.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def param(
    default: Any,
    help: str,
    *,
    range: tuple[float | None, float | None] | None = None,
    choices: Sequence[Any] | None = None,
) -> Any:
    """Declare a dataclass field that a suite may set or sweep.

    ``range=(lo, hi)`` is inclusive; either end may be None. ``choices`` lists the
    allowed values. Use ``default_factory``-free immutable defaults only (tuples, not lists).
    """
    meta = {"help": help, "range": range, "choices": tuple(choices) if choices is not None else None}
    return dataclasses.field(default=default, metadata=meta)


def format_value(value: Any) -> str:
    """A parameter value as `harness list`, `--dry-run` and the reference pages print it: floats with
    %g, sequences bracketed without spaces (``[128,256]``)."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(x) for x in value) + "]"
    return str(value)


@dataclass(frozen=True)
class ParamInfo:
    """What ``harness list`` shows for one parameter."""

    name: str
    type_name: str
    default: Any
    help: str
    range: tuple[float | None, float | None] | None
    choices: tuple[Any, ...] | None

    def allowed(self) -> str:
        """Human-readable description of the allowed values."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.range is not None:
            lo, hi = self.range
            lo_s = "(-inf" if lo is None else f"[{lo!r}"
            hi_s = "inf)" if hi is None else f"{hi!r}]"
            return f"{self.type_name} in {lo_s}, {hi_s}"
        return f"any {self.type_name}"


def _type_name(tp: Any) -> str:
    if isinstance(tp, str):
        return tp
    if tp is Ellipsis:
        return "..."
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))


def describe(cls: type) -> list[ParamInfo]:
    """List the parameters of a parameter dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        out.append(
            ParamInfo(
                name=f.name,
                type_name=_type_name(hints.get(f.name, f.type)),
                default=f.default,
                help=f.metadata.get("help", ""),
                range=f.metadata.get("range"),
                choices=f.metadata.get("choices"),
            )
        )
    return out


def did_you_mean(name: str, candidates: Sequence[str]) -> str:
    """A ' (did you mean 'x'?)' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
