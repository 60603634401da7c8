"""The generic field checker: a value against a :func:`~harness.params.param` field's type and range.

One checker serves every dataclass a suite fills: workload, method and common parameters,
and the ``timing`` / ``metrics`` / ``regression`` settings. It reads the type hint and the
:class:`~harness.params.ParamInfo` (range, choices, help) and reports each bad value at its key
path, saying what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.measure.devices import device_problem
from harness.params import ParamInfo, describe, did_you_mean
from harness.suite.problems import KeyPath, Problems

Found = list[tuple[KeyPath, str]]  # (path below the field, message) for each problem


def _article(type_name: str) -> str:
    return "an" if type_name[:1] in "aeiou" else "a"


def is_sequence_type(tp: Any) -> bool:
    """Whether a hint is (or may be) a tuple/list: then a flat list is one value, not a sweep."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(is_sequence_type(a) for a in typing.get_args(tp))
    return origin in (tuple, list) or tp in (tuple, list)


def _mapping_value_hint(tp: Any) -> Any:
    """``V`` of a ``dict[K, V]`` hint (also inside ``X | None``); None for any other hint."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        found = [_mapping_value_hint(a) for a in typing.get_args(tp)]
        return next((v for v in found if v is not None), None)
    args = typing.get_args(tp)
    return args[1] if origin is dict and len(args) == 2 else None


def _without_none(tp: Any) -> Any:
    """``X`` for an ``X | None`` hint; any other hint unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _hint_name(tp: Any) -> str:
    """Short name of a hint for messages: ``float``, ``dict``."""
    return getattr(tp, "__name__", str(tp))


#: numbers PyYAML (YAML 1.1) reads as strings for want of a dot: ``1e-9``, ``2E6``, ``-3e+2``
YAML11_EXPONENT = re.compile(r"[+-]?[0-9]+[eE][+-]?[0-9]+")


def coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check ``value`` against a type hint; returns (ok, normalized value)."""
    if tp is Any or tp is None:
        return True, value
    if tp is type(None):
        return value is None, value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = coerce(value, arg)
            if ok:
                return True, v
        return False, value
    if origin is typing.Literal:
        return value in typing.get_args(tp), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str) and YAML11_EXPONENT.fullmatch(value.strip()):
            return True, float(value)  # 1e-9: a float in YAML 1.2, a string to PyYAML's YAML 1.1
        return False, value
    if tp is str or tp is Path:
        return isinstance(value, str), value
    if origin in (tuple, list) or tp in (tuple, list):
        return _coerce_sequence(value, tp)
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


def _coerce_sequence(value: Any, tp: Any) -> tuple[bool, Any]:
    """:func:`coerce` for ``tuple[...]`` / ``list[...]`` hints, item by item."""
    if not isinstance(value, (list, tuple)):
        return False, value
    args = typing.get_args(tp)
    if not args:
        hints: Iterable[Any] = [Any] * len(value)
    elif len(args) == 2 and args[1] is Ellipsis:
        hints = [args[0]] * len(value)
    elif len(args) != len(value):
        return False, value
    else:
        hints = args
    items = []
    for x, hint in zip(value, hints):
        ok, v = coerce(x, hint)
        if not ok:
            return False, value
        items.append(v)
    as_tuple = typing.get_origin(tp) is tuple or tp is tuple
    return True, tuple(items) if as_tuple else items


@dataclass(frozen=True)
class Field:
    """One parameter or setting a suite may give: where it comes from and how to check it.

    owner: "common", "workload", a method's name, or a settings section ("timing", ...).
    A ``dict[K, V]`` field is a mapping of names to values, each checked as a ``V`` with the
    field's range and choices.
    """

    info: ParamInfo
    hint: Any
    owner: str

    def allowed(self) -> str:
        """What the field accepts, in words."""
        entry = self._entry()
        return f"a mapping of names to {entry.allowed()}" if entry else self.info.allowed()

    def help_suffix(self) -> str:
        """`` (name: help)`` for the end of a problem, or ''."""
        return f" ({self.info.name}: {self.info.help})" if self.info.help else ""

    def check(self, value: Any) -> tuple[Any, Found]:
        """(normalized value, problems); a mapping field reports each bad entry at its key."""
        entry = self._entry()
        if entry is not None and isinstance(value, dict):
            return _check_entries(entry, value)
        ok, v = coerce(value, self.hint)
        if not ok:
            tn = self.info.type_name
            return value, [((), f"{value!r} is not {_article(tn)} {tn}; allowed: {self.allowed()}")]
        problem = self._value_problem(v)
        return v, [((), problem)] if problem else []

    def out_of_range(self, value: Any) -> str:
        """The problem of a value outside the field's range."""
        return f"{value!r} is out of range; allowed: {self.allowed()}"

    def _value_problem(self, v: Any) -> str | None:
        """Choices, range and (common ``device``) device name of a value of the right type."""
        info = self.info
        if info.choices is not None and v not in info.choices:
            return f"{v!r} is not allowed; allowed: {info.allowed()}"
        if isinstance(v, float) and not math.isfinite(v):  # YAML's .nan/.inf, or --set x=.inf
            return f"{v!r} is not a finite number; allowed: {self.allowed()}"
        if info.range is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
            lo, hi = info.range
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                return self.out_of_range(v)
        if info.name == "device" and self.owner == "common" and isinstance(v, str):
            return device_problem(v)
        return None

    def _entry(self) -> Field | None:
        """The field of one value of a mapping field (None: not a mapping field)."""
        vt = _mapping_value_hint(self.hint)
        if vt is None:
            return None
        return Field(dataclasses.replace(self.info, type_name=_hint_name(vt)), vt, self.owner)

    def as_setting(self) -> Field:
        """This field for a value a settings section gives: null is not one there (an unset
        setting is left out), so an ``X | None`` setting checks values as an ``X``."""
        hint = _without_none(self.hint)
        if hint is self.hint:
            return self
        return Field(dataclasses.replace(self.info, type_name=_hint_name(hint)), hint, self.owner)


def _check_entries(entry: Field, value: dict[Any, Any]) -> tuple[dict[str, Any], Found]:
    """Check each value of a mapping field; keys are names (a YAML number becomes its string)."""
    out: dict[str, Any] = {}
    found: Found = []
    for k, x in value.items():
        v, problems = entry.check(x)
        out[str(k)] = v
        found += [((k,) + sub, msg) for sub, msg in problems]
    return out, found


def fields_of(cls: type, owner: str) -> dict[str, Field]:
    """The fields of a parameter/settings dataclass by name, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {i.name: Field(i, hints.get(i.name, Any), owner) for i in describe(cls)}


def settings_fields(cls: type, key: str) -> dict[str, Field]:
    """The fields of the settings dataclass under top-level ``key``, as :meth:`Field.as_setting`."""
    return {k: f.as_setting() for k, f in fields_of(cls, key).items()}


# ---------------------------------------------------------------- checking suite entries


def section(problems: Problems, data: dict[str, Any], key: str) -> dict[Any, Any]:
    """The mapping under a top-level key (``{}`` when absent; reported when not a mapping)."""
    v = data.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        problems.add((key,), f"must be a mapping (key: value lines), got {v!r}")
        return {}
    return v


def report_unknown_param(
    problems: Problems, path: KeyPath, name: Any, known: Iterable[str], what: str
) -> None:
    """A parameter name that ``what`` does not have, with the closest known name."""
    names = sorted(known)
    problems.add(
        path,
        f"unknown parameter {name!r} for {what}{did_you_mean(str(name), names)}; "
        f"known parameters: {', '.join(names) or '(none)'} "
        "(`harness list` shows them with types and ranges)",
    )


def check_value(problems: Problems, path: KeyPath, f: Field, v: Any, *, sweep_ok: bool) -> list[Any] | None:
    """Validate a value (or a list of values to sweep); returns the normalized candidates.

    A list is a sweep unless the field itself takes a sequence (then only a list of lists is).
    None when anything was reported.
    """
    is_sweep = isinstance(v, list) and (
        not is_sequence_type(f.hint) or (len(v) > 0 and all(isinstance(x, list) for x in v))
    )
    if is_sweep and not sweep_ok:
        problems.add(
            path,
            f"{v!r} is a list, but values here are not swept; move {f.info.name} to `sweep` "
            f"(or a method's grid) to sweep it, or give one value ({f.info.allowed()})",
        )
        return None
    if is_sweep and not v:
        problems.add(path, f"empty list: nothing to sweep; give at least one value ({f.info.allowed()})")
        return None
    items = v if is_sweep else [v]
    out = []
    bad = False
    for i, x in enumerate(items):
        nv, found = f.check(x)
        for sub, msg in found:
            problems.add((path + (i,) if is_sweep else path) + sub, msg + f.help_suffix())
        bad = bad or bool(found)
        out.append(nv)
    for i, x in enumerate(out if is_sweep and not bad else []):
        first = next(j for j, y in enumerate(out) if y == x)
        if first < i:  # 128 and 128.0 for a float are the same value, and the same point
            problems.add(path + (i,), f"{x!r} is listed twice (items {first} and {i}); each value is one "
                         "point, so the repeat would run once: remove it")
            bad = True
    return None if bad else out


def check_settings(problems: Problems, data: dict[str, Any], key: str, cls: type) -> Any:
    """The settings dataclass ``cls`` filled from the mapping under ``key`` (defaults for the rest).

    Unknown or bad settings are reported and left at their defaults.
    """
    return checked_settings(problems, data, key, cls)[0]


def checked_settings(
    problems: Problems, data: dict[str, Any], key: str, cls: type
) -> tuple[Any, frozenset[str]]:
    """:func:`check_settings`, and the names of the given settings that had a problem.

    A cross-field check must skip those: they hold their defaults, not what the suite gave. So
    the dataclass's own cross-field rule (its ``__post_init__``) is reported only when every
    given setting was good.
    """
    fields = settings_fields(cls, key)
    kwargs = {}
    bad: set[str] = set()
    for k, v in section(problems, data, key).items():
        if k not in fields:
            problems.add(
                (key, k),
                f"unknown {key} setting {k!r}{did_you_mean(str(k), list(fields))}; "
                f"allowed: {', '.join(fields)}",
            )
            continue
        nv, found = fields[k].check(v)
        for sub, msg in found:
            problems.add((key, k) + sub, msg + fields[k].help_suffix())
        if found:
            bad.add(k)
        else:
            kwargs[k] = nv
    try:
        return cls(**kwargs), frozenset(bad)
    except (TypeError, ValueError) as e:  # a cross-field rule in the dataclass's __post_init__
        if not bad:
            problems.add((key,), str(e))
        return cls(), frozenset(bad)
