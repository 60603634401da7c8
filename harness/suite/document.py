"""Stage 1: the suite document, read from YAML, with the preset and ``--set`` overrides laid over it.

:func:`decode_suite` turns the file's bytes into text (UTF-8, at most :data:`MAX_SUITE_BYTES`);
:func:`read_yaml` gives the values (the safe loader: nothing is executed) and records the line of
every mapping key and list item in :class:`~harness.suite.problems.Problems`, after refusing a
document that aliases would blow up (more than :data:`MAX_DOCUMENT_VALUES` values once every
``*alias`` is counted as a copy of its ``&anchor``, or an alias inside its own anchor);
:func:`overlay` deep-merges the chosen preset, then applies each ``--set``, moving the locations
of what they replace so that later problems point at the preset line or the option. Nothing here
knows parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from harness.params import did_you_mean
from harness.suite.problems import KeyPath, Problems, dotted

TOP_LEVEL_KEYS = (
    "name", "description", "workload", "reference", "fixed", "sweep", "methods", "include",
    "exclude", "timing", "metrics", "regression", "point_limit", "presets", "default_preset",
)
PRESET_KEYS = tuple(k for k in TOP_LEVEL_KEYS if k not in ("presets", "default_preset"))


@dataclass(frozen=True)
class Overlaid:
    """The document after preset and ``--set`` (``data``), and the preset applied (None: none)."""

    data: dict[str, Any]
    preset: str | None


#: Largest suite file read (suites are a few kilobytes; anything this big is not a suite).
MAX_SUITE_BYTES = 1 << 20
#: Most values (mapping keys, mapping values, list items) a suite document may hold, counting
#: every ``*alias`` as a full copy of its ``&anchor``: a "billion laughs" of nested aliases is
#: refused from its node graph, before anything expands it.
MAX_DOCUMENT_VALUES = 100_000


# ---------------------------------------------------------------- bytes, YAML + locations


def decode_suite(raw: bytes, problems: Problems, *, size: int | None = None) -> str | None:
    """The text of a suite file's bytes; None (reported) when it is too large or not UTF-8.

    size: the file's size when ``raw`` holds only its start (default ``len(raw)``).
    """
    if _too_large(len(raw) if size is None else size, problems):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        bad = raw[e.start:e.end]
        problems.add_at(
            f"{problems.source}, line {line}",
            f"the suite file is not UTF-8 text: byte {', '.join(f'0x{b:02x}' for b in bad)} at byte offset "
            f"{e.start} (line {line}, byte {column} of the line) is not valid UTF-8 ({e.reason}; in "
            f"Latin-1 it would be {bad.decode('latin-1')!r}). Save the file as UTF-8 (e.g. `iconv -f "
            f"latin1 -t utf-8 OLD > NEW`, or your editor's encoding setting).",
        )
        return None


def _too_large(size: int, problems: Problems) -> bool:
    """Whether a suite of ``size`` bytes is over :data:`MAX_SUITE_BYTES` (reported)."""
    if size <= MAX_SUITE_BYTES:
        return False
    problems.add_at(
        problems.source,
        f"the suite file has {size:,} bytes; a suite file may have at most {MAX_SUITE_BYTES:,} bytes "
        f"({MAX_SUITE_BYTES >> 20} MiB). Is it the right file? A suite lists parameters and their "
        "values; many points come from `sweep` and method grids, not from writing them out.",
    )
    return True


def read_yaml(text: str, problems: Problems) -> dict[str, Any] | None:
    """The suite mapping of ``text``, recording key lines in ``problems``.

    None when the text is too large, not YAML, expands too far through its aliases, or is not a
    mapping (reported; nothing further can be checked). Duplicate keys are reported, and loading
    goes on (YAML keeps the last one).
    """
    if _too_large(len(text.encode("utf-8", "surrogatepass")), problems):
        return None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None and not _bounded(root, problems):
            return None
        if root is not None:  # before constructing, which folds `<<` merge keys into the mappings
            _report_duplicates(root, (), problems, set())
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as e:
        problems.add_at(*_malformed(e, problems.source))
        return None
    except RecursionError:
        problems.add_at(problems.source, "the YAML is nested too deeply to read (hundreds of levels of "
                        "lists or mappings); a suite needs a handful of levels")
        return None
    finally:
        loader.dispose()
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


class _Recursive(Exception):
    """An alias inside the node its anchor names (a value that contains itself)."""

    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _bounded(root: yaml.Node, problems: Problems) -> bool:
    """Whether the document, aliases expanded, holds at most :data:`MAX_DOCUMENT_VALUES` values and
    no value contains itself (reported otherwise). Counts over the node graph, where an alias is a
    second reference to its anchor's node, so the cost is the size of the file, not of the expansion."""
    sizes: dict[int, int] = {}
    shared: list[yaml.Node] = []  # nodes reached again: the anchors of aliases
    try:
        total = _expanded_size(root, sizes, set(), shared)
    except _Recursive as e:
        problems.add_at(
            f"{problems.source}, line {e.node.start_mark.line + 1}",
            "this value contains an alias to its own anchor (`&name` ... `*name` inside it), so it "
            "would contain itself without end; a suite value cannot be recursive. Remove the alias.",
        )
        return False
    if total <= MAX_DOCUMENT_VALUES:
        return True
    if shared:
        first = min(shared, key=lambda n: n.start_mark.index)
        problems.add_at(
            f"{problems.source}, line {first.start_mark.line + 1}",
            f"the YAML expands to more than {MAX_DOCUMENT_VALUES:,} values once its aliases are expanded "
            "(each `*name` is a full copy of the value anchored `&name`; the first anchor used is on this "
            f"line); a suite document may hold at most {MAX_DOCUMENT_VALUES:,}. Write the values out, or "
            "use fewer (nested) aliases.",
        )
    else:
        problems.add_at(
            problems.source,
            f"the YAML holds more than {MAX_DOCUMENT_VALUES:,} values (keys, values and list items); a "
            f"suite document may hold at most {MAX_DOCUMENT_VALUES:,}. Many points come from `sweep` and "
            "method grids, not from writing them out.",
        )
    return False


def _expanded_size(node: yaml.Node, sizes: dict[int, int], active: set[int], shared: list[yaml.Node]) -> int:
    """Values under ``node`` with aliases expanded, capped just above the limit (memoized per node)."""
    key = id(node)
    if key in active:
        raise _Recursive(node)
    if key in sizes:
        shared.append(node)
        return sizes[key]
    if isinstance(node, yaml.MappingNode):
        children: list[yaml.Node] = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    else:
        children = []
    active.add(key)
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, active, shared)
        if total > MAX_DOCUMENT_VALUES:
            break
    active.discard(key)
    sizes[key] = total = min(total, MAX_DOCUMENT_VALUES + 1)
    return total


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _report_duplicates(node: yaml.Node, path: KeyPath, problems: Problems, done: set[int]) -> None:
    """Report keys given twice in one mapping, on the node tree as composed (before construction
    folds ``<<`` merge keys in): a key the mapping gives itself wins over a merged one (YAML's
    rule), so only keys the mapping itself gives twice are duplicates. A node reached again
    through an alias is not walked again (its duplicates are reported once, where it is anchored)."""
    if id(node) in done:
        return
    done.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                _report_duplicates(value_node, path, problems, done)
                continue
            if not isinstance(key_node, yaml.ScalarNode):  # the constructor refuses it
                continue
            key = key_node.value
            if key in seen:
                problems.add_at(
                    f"{problems.source}, line {key_node.start_mark.line + 1}",
                    f"{dotted(path + (key,))}: duplicate key {key!r}; YAML would silently keep "
                    "the last one. Give each key once.",
                )
            seen.add(key)
            _report_duplicates(value_node, path + (key,), problems, done)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _report_duplicates(item, path + (i,), problems, done)


def _record_lines(node: yaml.Node, path: KeyPath, problems: Problems) -> None:
    """Walk the node tree (as constructed, ``<<`` merges folded in): the line of every key and
    list item. Of the pairs a mapping holds for one key, the last is the one YAML keeps."""
    if isinstance(node, yaml.MappingNode):
        kept = {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}
        for key, (key_node, value_node) in kept.items():
            problems.record(path + (key,), f"{problems.source}, line {key_node.start_mark.line + 1}")
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
    if default is not None and not (isinstance(default, Hashable) and default in presets):  # [a]: not a name
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
