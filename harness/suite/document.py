"""Stage 1: the suite document, read from YAML, with the preset and ``--set`` overrides laid over it.

:func:`read_yaml` gives the values (``yaml.safe_load``) and records the line of every mapping
key and list item in :class:`~harness.suite.problems.Problems`; :func:`overlay` deep-merges
the chosen preset, then applies each ``--set``, moving the locations of what they replace so
that later problems point at the preset line or the option. Nothing here knows parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from harness.params import did_you_mean
from harness.suite.problems import KeyPath, Problems, dotted

TOP_LEVEL_KEYS = (
    "name", "description", "workload", "reference", "fixed", "sweep", "methods", "include",
    "exclude", "timing", "metrics", "regression", "presets", "default_preset",
)
PRESET_KEYS = tuple(k for k in TOP_LEVEL_KEYS if k not in ("presets", "default_preset"))


@dataclass(frozen=True)
class Overlaid:
    """The document after preset and ``--set`` (``data``), and the preset applied (None: none)."""

    data: dict[str, Any]
    preset: str | None


# ---------------------------------------------------------------- YAML + locations


def read_yaml(text: str, problems: Problems) -> dict[str, Any] | None:
    """The suite mapping of ``text``, recording key lines in ``problems``.

    None when the text is not YAML or not a mapping (reported; nothing further can be checked).
    Duplicate keys are reported, and loading goes on (YAML keeps the last one).
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problems.add_at(*_malformed(e, problems.source))
        return None
    if root is not None:
        _record_lines(root, (), problems)
    if not isinstance(data, dict):
        problems.add_at(
            problems.source,
            "a suite must be a YAML mapping with at least name, workload and methods; "
            f"got {type(data).__name__}",
        )
        return None
    return data


def _malformed(e: yaml.YAMLError, source: str) -> tuple[str, str]:
    """(location, message) of a YAML syntax error."""
    mark = getattr(e, "problem_mark", None)
    where = source if mark is None else f"{source}, line {mark.line + 1}, column {mark.column + 1}"
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    detail = f"{problem} ({context})" if context else problem
    return where, (
        f"malformed YAML: {detail}. Fix the syntax there (indentation, a missing "
        "':' or an unclosed bracket/quote are the usual causes)."
    )


def _record_lines(node: yaml.Node, path: KeyPath, problems: Problems) -> None:
    """Walk the node tree: the line of every key and list item, and duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            loc = f"{problems.source}, line {key_node.start_mark.line + 1}"
            if key in seen:
                problems.add_at(
                    loc,
                    f"{dotted(path + (key,))}: duplicate key {key!r}; YAML would silently keep "
                    "the last one. Give each key once.",
                )
            seen.add(key)
            problems.record(path + (key,), loc)
            _record_lines(value_node, path + (key,), problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems.record(path + (i,), f"{problems.source}, line {item.start_mark.line + 1}")
            _record_lines(item, path + (i,), problems)


# ---------------------------------------------------------------- preset and --set


def overlay(
    data: dict[str, Any], problems: Problems, preset: str | None, overrides: Sequence[str]
) -> Overlaid:
    """The document with the preset (``preset``, else ``default_preset``), then each ``--set``."""
    presets = _check_presets(data, problems)
    name = _preset_name(data, presets, preset, problems)
    merged = copy.deepcopy(data)
    if name is not None and isinstance(presets[name], dict):
        merged = _apply_preset(merged, name, presets[name], problems)
    for arg in overrides:
        _apply_override(merged, arg, problems)
    return Overlaid(merged, name)


def _check_presets(data: dict[str, Any], problems: Problems) -> dict[Any, Any]:
    """The ``presets`` mapping (``{}`` when absent or not a mapping), each checked for its keys."""
    presets = data.get("presets", {})
    if presets is None:
        return {}
    if not isinstance(presets, dict):
        problems.add(("presets",), f"must be a mapping of preset name -> overrides, got {presets!r}")
        return {}
    for pname, body in presets.items():
        if body is None:
            continue
        if not isinstance(body, dict):
            problems.add(("presets", pname), f"a preset must be a mapping of top-level keys, got {body!r}")
            continue
        for k in body:
            if k not in PRESET_KEYS:
                problems.add(
                    ("presets", pname, k),
                    f"unknown key {k!r} in preset {pname!r}{did_you_mean(str(k), PRESET_KEYS)}; "
                    f"allowed: {', '.join(PRESET_KEYS)}",
                )
    return presets


def _preset_name(
    data: dict[str, Any], presets: dict[Any, Any], asked: str | None, problems: Problems
) -> str | None:
    """The preset to apply: ``--preset``, else a valid ``default_preset``; None when none (or unknown)."""
    default = data.get("default_preset")
    if default is not None and default not in presets:
        problems.add(
            ("default_preset",),
            f"{default!r} is not a preset of this suite{did_you_mean(str(default), list(presets))}; "
            f"presets: {', '.join(map(str, presets)) or '(none)'}",
        )
        default = None
    name = asked if asked is not None else default
    if name is not None and name not in presets:
        problems.add_at(
            f"--preset {name}",
            f"{name!r} is not a preset of {problems.source}{did_you_mean(str(name), list(presets))}; "
            f"presets: {', '.join(map(str, presets)) or '(none)'}",
        )
        return None
    return name


def _apply_preset(
    data: dict[str, Any], name: str, body: dict[str, Any], problems: Problems
) -> dict[str, Any]:
    """Deep-merge a preset's known keys; what it sets is now located at its preset line."""
    body = {k: v for k, v in body.items() if k in PRESET_KEYS}
    for path, replaces in _leaf_paths(body, ()):
        if not path:
            continue
        line = problems.located(("presets", name) + path) or f"{problems.source}, preset {name!r}"
        if replaces or problems.located(path) is None:
            problems.relocate(path, f"{line} (preset {name!r})")
    return _deep_merge(data, body)


def _apply_override(data: dict[str, Any], arg: str, problems: Problems) -> None:
    """Apply one ``--set KEY=VALUE`` to ``data`` in place (or report why it cannot be)."""
    loc = f"--set {arg}"
    if "=" not in arg:
        problems.add_at(loc, "expected KEY=VALUE (e.g. timing.max_samples=3 or seq_len=[128,256])")
        return
    key, raw = arg.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        problems.add_at(loc, f"the value {raw!r} is not a YAML scalar or list ({e})")
        return
    parts: list[Any] = key.split(".")
    if not key or any(p == "" for p in parts):
        problems.add_at(loc, f"{key!r} is not a key path (e.g. fixed.heads or timing.max_samples)")
        return
    if len(parts) == 1 and parts[0] not in TOP_LEVEL_KEYS:
        _unsweep(data, parts[0])
        parts = ["fixed", parts[0]]
    if parts[0] not in PRESET_KEYS:
        problems.add_at(
            loc,
            f"unknown key {parts[0]!r}{did_you_mean(parts[0], PRESET_KEYS)}; a --set key is "
            "a parameter name (meaning fixed.NAME) or a path starting with one of: "
            f"{', '.join(PRESET_KEYS)}",
        )
        return
    node = data
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            problems.add_at(loc, f"{p!r} in {key!r} holds {nxt!r}, not a mapping")
            return
        node = nxt
    node[parts[-1]] = value
    problems.relocate(tuple(parts), loc)


def _unsweep(data: dict[str, Any], name: str) -> None:
    """A bare ``--set name=value`` fixes ``name``: drop it from ``sweep`` and the method grids."""
    sweep = data.get("sweep")
    if isinstance(sweep, dict) and name in sweep:
        data["sweep"] = {k: v for k, v in sweep.items() if k != name}
    methods = data.get("methods")
    if isinstance(methods, dict):
        for m, body in methods.items():
            if isinstance(body, dict) and name in body:
                methods[m] = {k: v for k, v in body.items() if k != name}


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: mappings key by key, anything else replaced."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _leaf_paths(obj: Any, path: KeyPath) -> Iterator[tuple[KeyPath, bool]]:
    """Every path inside ``obj`` (with whether it replaces, i.e. is not a mapping)."""
    if isinstance(obj, dict):
        yield path, False
        for k, v in obj.items():
            yield from _leaf_paths(v, path + (k,))
    else:
        yield path, True
        if isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from _leaf_paths(v, path + (i,))
