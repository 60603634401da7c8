"""Suite files: schema, YAML loading, validation and grid expansion.

A suite is a YAML file read with ``yaml.safe_load`` (nothing in it is executed)::

    name: attention-smoke            # required; names the run directory and the rows
    description: ...                 # optional free text
    workload: attention              # required; a registered workload (`harness list`)
    reference: sdpa                  # optional; the method speedup and fidelity compare against;
                                     #   must be one of `methods`
    fixed: {heads: 4}                # parameters applied to every point: workload parameters,
                                     #   common ones (device, dtype, seed) or a method's (applied to
                                     #   the methods that have it). Scalars only.
    sweep: {seq_len: [128, 256]}     # Cartesian axes shared by all methods (a scalar = fixed)
    methods:                         # each method with its own grid of its own parameters
      sdpa: {}                       #   (scalar = fixed, list = swept); a workload/common
      math: {dtype: float32}         #   parameter here overrides fixed/sweep for that method
    include:                         # optional extra points: parameters merged over `fixed`
      - {method: math, seq_len: 1024}   #   (`method` required; lists are swept here too)
    exclude:                         # drop points matching every key of an entry
      - {method: math, seq_len: [256, 512]}   #   (a list value matches any of its items)
    timing: {warmup_n: 1, min_samples: 3, max_samples: 10, budget_s: 2}   # TimingConfig fields
    metrics: {evaluate: true, breakdown: false}   # run bench.evaluate / bench.breakdown
    regression: {threshold: 0.05, alpha: 0.01, per_metric: {latency_median_ms: 0.05}}  # for compare
    presets:                         # named overrides, deep-merged over the keys above
      cpu: {timing: {max_samples: 5}}
      gpu: {fixed: {device: cuda, dtype: bfloat16}, sweep: {seq_len: [4096, 16384]}}
    default_preset: cpu              # applied when no --preset is given

Order of application: the file, then the preset (``--preset`` or ``default_preset``;
mappings merge key by key, anything else is replaced), then each ``--set key=value``
(value parsed as a YAML scalar or list). ``--set`` keys are dotted paths
(``timing.max_samples=3``, ``methods.httm.q_ratio=[0.1,0.2]``, ``sweep.seq_len=[64]``) or a bare
parameter name (``frames=16``), which means ``fixed.frames`` and also removes that name from
``sweep`` and from every method's grid, so the value holds for every point (``include``
entries keep their own values).

For a parameter whose type is a tuple, a list of lists is a sweep and a flat list is one value.

Validation happens before anything runs and reports every problem at once, each naming the
file and line (or ``--set``/``--preset``), the field path, the bad value and what is allowed:
one :class:`SuiteError`.

Expansion (:meth:`Suite.points`): for each combination of the ``sweep`` axes (in file order),
for each method (in file order), for each combination of that method's grid; then the
``include`` points; minus ``exclude`` matches; duplicates (same hash) kept once. Every point
carries every parameter of its workload, method and :class:`CommonParams` (dataclass
defaults fill the gaps); ``device: auto`` becomes ``cuda`` when available, else ``cpu``. A
point's ``hash`` is the first 16 hex digits of sha256 over the canonical JSON of
``{workload, method, params}``: equal configurations pair across runs and suites, whatever
the suite name or timing settings.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import registry
from harness.devices import device_problem, resolve_device
from harness.params import ParamInfo, describe, did_you_mean, param
from harness.timing import TimingConfig
from harness.workloads.base import CommonParams, Point

KeyPath = tuple[Any, ...]

TOP_LEVEL_KEYS = (
    "name", "description", "workload", "reference", "fixed", "sweep", "methods", "include",
    "exclude", "timing", "metrics", "regression", "presets", "default_preset",
)
PRESET_KEYS = tuple(k for k in TOP_LEVEL_KEYS if k not in ("presets", "default_preset"))
REGRESSION_KEYS = ("threshold", "alpha", "per_metric")
HASH_HEX_CHARS = 16
SUITES_DIR = "suites"


class SuiteError(ValueError):
    """A suite that cannot run. ``problems`` holds one paragraph per problem."""

    def __init__(self, problems: Sequence[str], source: str = "suite") -> None:
        self.problems = list(problems)
        self.source = source
        n = len(self.problems)
        head = f"{source}: {n} problem{'s' if n != 1 else ''} found before running anything:"
        super().__init__(head + "\n\n" + "\n\n".join(self.problems))


@dataclass(frozen=True)
class MetricsConfig:
    """Which optional measurements the runner takes for every point."""

    evaluate: bool = param(True, "run bench.evaluate on the output (quality q_* / fidelity fid_* columns)")
    breakdown: bool = param(False, "run bench.breakdown once per point (bd_<phase>_ms columns)")


@dataclass
class Suite:
    """A validated suite: settings plus its expanded points.

    resolved: the suite document after preset and --set overrides, with timing/metrics
    filled in (what the run directory stores as ``suite.resolved.yaml``).
    hash: identifies what a run of this suite measures (points + timing + metrics), for resume.
    """

    name: str
    description: str
    workload: str
    reference: str | None
    methods: tuple[str, ...]
    timing: TimingConfig
    metrics: MetricsConfig
    regression: dict[str, Any]
    preset: str | None
    source: str
    resolved: dict[str, Any]
    hash: str
    _points: list[Point] = dataclasses.field(repr=False, default_factory=list)

    def points(self) -> list[Point]:
        """The expanded points, in deterministic order."""
        return list(self._points)

    def swept_params(self) -> list[str]:
        """Parameter names whose value differs between points (what a table should show)."""
        names: list[str] = []
        for p in self._points:
            for k in p.params:
                if k not in names:
                    names.append(k)
        varying = []
        for k in names:
            values = {_canonical(p.params.get(k)) for p in self._points}
            if len(values) > 1:
                varying.append(k)
        return varying


# ---------------------------------------------------------------- public entry points


def find_suite_file(path: str | Path) -> Path:
    """``path`` itself, or ``suites/<path>.yaml`` for a bare suite name. FileNotFoundError otherwise."""
    p = Path(path)
    if p.is_file():
        return p
    if p.suffix == "" and len(p.parts) == 1:
        for ext in (".yaml", ".yml"):
            cand = Path(SUITES_DIR) / (p.name + ext)
            if cand.is_file():
                return cand
    raise FileNotFoundError(
        f"suite file {str(path)!r} not found (give a path to a .yaml file, or the name of a suite in "
        f"./{SUITES_DIR}/; `harness list` shows the suites found there)"
    )


def load_suite(
    path: str | Path, *, preset: str | None = None, overrides: Sequence[str] = ()
) -> Suite:
    """Read, validate and expand a suite file. Raises SuiteError listing every problem."""
    file = find_suite_file(path)
    return parse_suite(file.read_text(), source=str(file), preset=preset, overrides=overrides)


def parse_suite(
    text: str, *, source: str = "<suite>", preset: str | None = None, overrides: Sequence[str] = ()
) -> Suite:
    """Validate and expand suite YAML text. ``source`` names the file in error messages."""
    data, locs, problems = _read_yaml(text, source)
    return _Builder(data, locs, problems, source, preset, overrides).build()


def point_hash(workload: str, method: str, params: dict[str, Any]) -> str:
    """Stable id of a configuration: sha256 (first 16 hex) of canonical JSON."""
    blob = _canonical({"workload": workload, "method": method, "params": params})
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_HEX_CHARS]


def dotted(path: KeyPath) -> str:
    """("sweep", "seq_len", 2) -> "sweep.seq_len[2]"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# ---------------------------------------------------------------- YAML + locations


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _read_yaml(text: str, source: str) -> tuple[Any, dict[KeyPath, str], list[str]]:
    """Values via safe_load; the line of every mapping key / list item via the node tree."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = source if mark is None else f"{source}, line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise SuiteError(
            [f"{where}: malformed YAML: {detail}. Fix the syntax there (indentation, a missing "
             "':' or an unclosed bracket/quote are the usual causes)."],
            source,
        ) from None
    locs: dict[KeyPath, str] = {}
    problems: list[str] = []

    def walk(node: yaml.Node, path: KeyPath) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = key_node.value
                loc = f"{source}, line {key_node.start_mark.line + 1}"
                if key in seen:
                    problems.append(
                        f"{loc}: {dotted(path + (key,))}: duplicate key {key!r}; YAML would silently keep "
                        "the last one. Give each key once."
                    )
                seen.add(key)
                locs[path + (key,)] = loc
                walk(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                locs[path + (i,)] = f"{source}, line {item.start_mark.line + 1}"
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return data, locs, problems


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
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


# ---------------------------------------------------------------- parameter types


def _article(type_name: str) -> str:
    return "an" if type_name[:1] in "aeiou" else "a"


def _is_sequence_type(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence_type(a) for a in typing.get_args(tp))
    return origin in (tuple, list) or tp in (tuple, list)


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check ``value`` against a type hint; returns (ok, normalized value)."""
    if tp is Any or tp is None:
        return True, value
    if tp is type(None):
        return value is None, value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _coerce(value, arg)
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
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if tp is Path:
        return isinstance(value, str), value
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(tp)
        if not args:
            items = list(value)
        elif len(args) == 2 and args[1] is Ellipsis:
            items = []
            for x in value:
                ok, v = _coerce(x, args[0])
                if not ok:
                    return False, value
                items.append(v)
        else:
            if len(args) != len(value):
                return False, value
            items = []
            for x, a in zip(value, args):
                ok, v = _coerce(x, a)
                if not ok:
                    return False, value
                items.append(v)
        return True, tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


@dataclass(frozen=True)
class _Field:
    """One parameter a point may carry: where it comes from and how to check it."""

    info: ParamInfo
    hint: Any
    owner: str  # "common", "workload" or the method name

    def check(self, value: Any) -> tuple[Any, str | None]:
        """(normalized value, problem or None)."""
        ok, v = _coerce(value, self.hint)
        info = self.info
        if not ok:
            tn = info.type_name
            return value, f"{value!r} is not {_article(tn)} {tn}; allowed: {info.allowed()}"
        if info.choices is not None and v not in info.choices:
            return v, f"{v!r} is not allowed; allowed: {info.allowed()}"
        if info.range is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
            lo, hi = info.range
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                return v, f"{v!r} is out of range; allowed: {info.allowed()}"
        if info.name == "device" and self.owner == "common" and isinstance(v, str):
            problem = device_problem(v)
            if problem:
                return v, problem
        return v, None


def _fields_of(cls: type, owner: str) -> dict[str, _Field]:
    hints = typing.get_type_hints(cls)
    return {i.name: _Field(i, hints.get(i.name, Any), owner) for i in describe(cls)}


def _help_suffix(f: _Field) -> str:
    return f" ({f.info.name}: {f.info.help})" if f.info.help else ""


# ---------------------------------------------------------------- the builder


class _Builder:
    """Applies preset and overrides, validates everything, expands points."""

    def __init__(
        self,
        data: Any,
        locs: dict[KeyPath, str],
        problems: list[str],
        source: str,
        preset: str | None,
        overrides: Sequence[str],
    ) -> None:
        self.data = data
        self.locs = locs
        self.problems = problems
        self.source = source
        self.preset_arg = preset
        self.overrides = overrides
        self.preset: str | None = None

    # -- reporting

    def where(self, path: KeyPath) -> str:
        for i in range(len(path), -1, -1):
            loc = self.locs.get(path[:i])
            if loc is not None:
                return loc
        return self.source

    def add(self, path: KeyPath, message: str, where: str | None = None) -> None:
        loc = where if where is not None else self.where(path)
        field = f"{dotted(path)}: " if path else ""
        self.problems.append(f"{loc}: {field}{message}")

    def fail_if_problems(self) -> None:
        if self.problems:
            raise SuiteError(self.problems, self.source)

    def _override_locs(self, path: KeyPath, loc: str) -> None:
        for p in [p for p in self.locs if p[: len(path)] == path]:
            del self.locs[p]
        self.locs[path] = loc

    # -- preset / --set

    def apply_preset(self, data: dict[str, Any]) -> dict[str, Any]:
        presets = data.get("presets", {})
        if presets is None:
            presets = {}
        if not isinstance(presets, dict):
            self.add(("presets",), f"must be a mapping of preset name -> overrides, got {presets!r}")
            presets = {}
        for pname, body in presets.items():
            if body is None:
                continue
            if not isinstance(body, dict):
                self.add(("presets", pname), f"a preset must be a mapping of top-level keys, got {body!r}")
                continue
            for k in body:
                if k not in PRESET_KEYS:
                    self.add(
                        ("presets", pname, k),
                        f"unknown key {k!r} in preset {pname!r}{did_you_mean(str(k), PRESET_KEYS)}; "
                        f"allowed: {', '.join(PRESET_KEYS)}",
                    )
        default = data.get("default_preset")
        if default is not None and default not in presets:
            self.add(
                ("default_preset",),
                f"{default!r} is not a preset of this suite{did_you_mean(str(default), list(presets))}; "
                f"presets: {', '.join(map(str, presets)) or '(none)'}",
            )
            default = None
        name = self.preset_arg if self.preset_arg is not None else default
        if name is None:
            return data
        if name not in presets:
            self.problems.append(
                f"--preset {name}: {name!r} is not a preset of {self.source}"
                f"{did_you_mean(str(name), list(presets))}; "
                f"presets: {', '.join(map(str, presets)) or '(none)'}"
            )
            return data
        self.preset = name
        body = presets[name] or {}
        if not isinstance(body, dict):
            return data
        body = {k: v for k, v in body.items() if k in PRESET_KEYS}
        for path, replaces in _leaf_paths(body, ()):
            if not path:
                continue
            line = self.locs.get(("presets", name) + path, f"{self.source}, preset {name!r}")
            loc = f"{line} (preset {name!r})"
            if replaces or path not in self.locs:
                self._override_locs(path, loc)
        return _deep_merge(data, body)

    def apply_overrides(self, data: dict[str, Any]) -> dict[str, Any]:
        for arg in self.overrides:
            loc = f"--set {arg}"
            if "=" not in arg:
                self.problems.append(
                    f"{loc}: expected KEY=VALUE (e.g. timing.max_samples=3 or seq_len=[128,256])"
                )
                continue
            key, raw = arg.split("=", 1)
            key = key.strip()
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError as e:
                self.problems.append(f"{loc}: the value {raw!r} is not a YAML scalar or list ({e})")
                continue
            parts: list[Any] = [p for p in key.split(".")]
            if not key or any(p == "" for p in parts):
                self.problems.append(
                    f"{loc}: {key!r} is not a key path (e.g. fixed.heads or timing.max_samples)"
                )
                continue
            if len(parts) == 1 and parts[0] not in TOP_LEVEL_KEYS:
                self._unsweep(data, parts[0])
                parts = ["fixed", parts[0]]
            if parts[0] not in TOP_LEVEL_KEYS or parts[0] in ("presets", "default_preset"):
                self.problems.append(
                    f"{loc}: unknown key {parts[0]!r}{did_you_mean(parts[0], PRESET_KEYS)}; a --set key is "
                    "a parameter name (meaning fixed.NAME) or a path starting with one of: "
                    f"{', '.join(PRESET_KEYS)}"
                )
                continue
            node = data
            ok = True
            for p in parts[:-1]:
                nxt = node.get(p)
                if nxt is None:
                    nxt = node[p] = {}
                if not isinstance(nxt, dict):
                    self.problems.append(f"{loc}: {p!r} in {key!r} holds {nxt!r}, not a mapping")
                    ok = False
                    break
                node = nxt
            if not ok:
                continue
            node[parts[-1]] = value
            self._override_locs(tuple(parts), loc)
        return data

    @staticmethod
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

    # -- validation helpers

    def mapping(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        v = data.get(key)
        if v is None:
            return {}
        if not isinstance(v, dict):
            self.add((key,), f"must be a mapping (key: value lines), got {v!r}")
            return {}
        return v

    def unknown_param(self, path: KeyPath, name: str, known: dict[str, _Field], what: str) -> None:
        names = sorted(known)
        self.add(
            path,
            f"unknown parameter {name!r} for {what}{did_you_mean(str(name), names)}; "
            f"known parameters: {', '.join(names) or '(none)'} "
            "(`harness list` shows them with types and ranges)",
        )

    def value(self, path: KeyPath, f: _Field, v: Any, *, sweep_ok: bool) -> list[Any] | None:
        """Validate a value (or a list of values to sweep); returns the normalized candidates."""
        is_sweep = isinstance(v, list) and (
            not _is_sequence_type(f.hint) or (len(v) > 0 and all(isinstance(x, list) for x in v))
        )
        if is_sweep and not sweep_ok:
            self.add(
                path,
                f"{v!r} is a list, but values here are not swept; move {f.info.name} to `sweep` "
                f"(or a method's grid) to sweep it, or give one value ({f.info.allowed()})",
            )
            return None
        if is_sweep and not v:
            self.add(path, f"empty list: nothing to sweep; give at least one value ({f.info.allowed()})")
            return None
        items = v if is_sweep else [v]
        out = []
        bad = False
        for i, x in enumerate(items):
            nv, err = f.check(x)
            if err:
                self.add(path + (i,) if is_sweep else path, err + _help_suffix(f))
                bad = True
            out.append(nv)
        return None if bad else out

    def settings(self, data: dict[str, Any], key: str, cls: type) -> Any:
        raw = self.mapping(data, key)
        fields = _fields_of(cls, key)
        kwargs = {}
        for k, v in raw.items():
            if k not in fields:
                self.add(
                    (key, k),
                    f"unknown {key} setting {k!r}{did_you_mean(str(k), list(fields))}; "
                    f"allowed: {', '.join(fields)}",
                )
                continue
            nv, err = fields[k].check(v)
            if err:
                self.add((key, k), err + _help_suffix(fields[k]))
                continue
            kwargs[k] = nv
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            self.add((key,), str(e))
            return cls()

    # -- main

    def build(self) -> Suite:
        data = self.data
        if not isinstance(data, dict):
            self.problems.append(
                f"{self.source}: a suite must be a YAML mapping with at least name, workload and methods; "
                f"got {type(data).__name__}"
            )
            self.fail_if_problems()
        data = self.apply_preset(copy.deepcopy(data))
        data = self.apply_overrides(data)

        for k in data:
            if k not in TOP_LEVEL_KEYS:
                self.add(
                    (k,),
                    f"unknown top-level key {k!r}{did_you_mean(str(k), TOP_LEVEL_KEYS)}; "
                    f"allowed: {', '.join(TOP_LEVEL_KEYS)}",
                )
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            self.add(("name",) if "name" in data else (), f"`name` must be a non-empty string, got {name!r}")
            name = Path(self.source).stem
        description = data.get("description") or ""
        if not isinstance(description, str):
            self.add(("description",), f"must be a string, got {description!r}")
            description = ""

        timing = self.settings(data, "timing", TimingConfig)
        if "min_samples" not in self.mapping(data, "timing") and timing.min_samples > timing.max_samples:
            # only max_samples was given (e.g. --set timing.max_samples=3): the default minimum follows it
            timing = dataclasses.replace(timing, min_samples=timing.max_samples)
        if timing.min_samples > timing.max_samples:
            self.add(
                ("timing", "min_samples"),
                f"min_samples ({timing.min_samples}) is larger than max_samples ({timing.max_samples}); "
                f"allowed: min_samples <= max_samples (lower both, e.g. --set timing.min_samples="
                f"{timing.max_samples})",
            )
        metrics = self.settings(data, "metrics", MetricsConfig)
        regression = self.check_regression(data)

        wname = data.get("workload")
        try:
            if not isinstance(wname, str):
                raise KeyError(f"`workload` must be the name of a registered workload, got {wname!r}")
            wcls = registry.get_workload(wname)
        except KeyError as e:
            known = ", ".join(registry.workload_names()) or "(none registered)"
            msg = e.args[0] if e.args else str(e)
            self.add(("workload",) if "workload" in data else (), f"{msg} (registered workloads: {known})")
            self.fail_if_problems()
            raise AssertionError("unreachable") from None

        common = _fields_of(CommonParams, "common")
        wfields = _fields_of(wcls.Params, "workload")
        shared = {**wfields, **common}

        methods_raw = data.get("methods")
        method_fields: dict[str, dict[str, _Field]] = {}
        if not isinstance(methods_raw, dict) or not methods_raw:
            self.add(
                ("methods",) if "methods" in data else (),
                f"`methods` must map at least one method name to its parameters; "
                f"methods of {wname!r}: {', '.join(registry.method_names(wname)) or '(none)'}",
            )
            methods_raw = {}
        for m, body in methods_raw.items():
            try:
                spec = registry.get_method(wname, str(m))
            except KeyError as e:
                self.add(("methods", m), e.args[0] if e.args else str(e))
                continue
            method_fields[m] = _fields_of(spec.params, m)
            if body is not None and not isinstance(body, dict):
                self.add(("methods", m), f"must be a mapping of parameter: value (or {{}}), got {body!r}")

        all_method_fields: dict[str, _Field] = {}
        for fs in method_fields.values():
            for k, f in fs.items():
                all_method_fields.setdefault(k, f)
        suite_level = {**all_method_fields, **shared}

        reference = data.get("reference")
        if reference is not None and reference not in methods_raw:
            self.add(
                ("reference",),
                f"reference method {reference!r} is not one of this suite's methods"
                f"{did_you_mean(str(reference), [str(m) for m in methods_raw])}; "
                f"methods: {', '.join(map(str, methods_raw)) or '(none)'}",
            )

        fixed: dict[str, Any] = {}
        for k, v in self.mapping(data, "fixed").items():
            if k not in suite_level:
                self.unknown_param(("fixed", k), k, suite_level, f"workload {wname!r} or its methods here")
                continue
            vals = self.value(("fixed", k), suite_level[k], v, sweep_ok=False)
            if vals is not None:
                fixed[k] = vals[0]

        sweep: dict[str, list[Any]] = {}
        for k, v in self.mapping(data, "sweep").items():
            if k not in suite_level:
                self.unknown_param(("sweep", k), k, suite_level, f"workload {wname!r} or its methods here")
                continue
            if k in fixed:
                self.add(("sweep", k), f"{k!r} is set in both `fixed` and `sweep`; keep one of them")
                continue
            vals = self.value(("sweep", k), suite_level[k], v, sweep_ok=True)
            if vals is not None:
                sweep[k] = vals

        grids: dict[str, dict[str, list[Any]]] = {}
        for m, fs in method_fields.items():
            body = methods_raw.get(m)
            grids[m] = {}
            if not isinstance(body, dict):
                continue
            allowed = {**shared, **fs}
            for k, v in body.items():
                if k not in allowed:
                    self.unknown_param(("methods", m, k), k, allowed, f"method {m!r} of workload {wname!r}")
                    continue
                vals = self.value(("methods", m, k), allowed[k], v, sweep_ok=True)
                if vals is not None:
                    grids[m][k] = vals

        includes = self.check_includes(data, wname, shared)
        excludes = self.check_excludes(data, wname, suite_level)
        self.fail_if_problems()

        points = self.expand(
            name, wname, wcls, fixed, sweep, grids, includes, excludes, shared, method_fields
        )
        self.fail_if_problems()

        resolved = {k: v for k, v in data.items() if k not in ("presets", "default_preset")}
        resolved["timing"] = dataclasses.asdict(timing)
        resolved["metrics"] = dataclasses.asdict(metrics)
        resolved["regression"] = regression
        resolved = json.loads(json.dumps(resolved, default=str))
        suite_hash = hashlib.sha256(
            _canonical(
                {
                    "workload": wname,
                    "reference": reference,
                    "timing": dataclasses.asdict(timing),
                    "metrics": dataclasses.asdict(metrics),
                    "points": sorted(p.hash for p in points),
                }
            ).encode()
        ).hexdigest()[:HASH_HEX_CHARS]
        return Suite(
            name=name,
            description=description,
            workload=wname,
            reference=reference,
            methods=tuple(methods_raw),
            timing=timing,
            metrics=metrics,
            regression=regression,
            preset=self.preset,
            source=self.source,
            resolved=resolved,
            hash=suite_hash,
            _points=points,
        )

    def check_regression(self, data: dict[str, Any]) -> dict[str, Any]:
        raw = self.mapping(data, "regression")
        out: dict[str, Any] = {}
        for k, v in raw.items():
            path = ("regression", k)
            if k not in REGRESSION_KEYS:
                self.add(path, f"unknown regression setting {k!r}{did_you_mean(str(k), REGRESSION_KEYS)}; "
                               f"allowed: {', '.join(REGRESSION_KEYS)}")
            elif k == "per_metric":
                if not isinstance(v, dict):
                    self.add(path, f"must map a column name to its relative threshold, got {v!r}")
                    continue
                for col, t in v.items():
                    if isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0:
                        self.add(path + (col,), f"{t!r} is not a threshold; allowed: float >= 0 (0.05 = 5%)")
                out[k] = {str(c): float(t) for c, t in v.items() if isinstance(t, (int, float))}
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                self.add(path, f"{v!r} is not a float")
            elif k == "alpha" and not 0 < v < 1:
                self.add(path, f"{v!r} is out of range; allowed: float in (0, 1) (significance level)")
            elif k == "threshold" and v < 0:
                self.add(path, f"{v!r} is out of range; allowed: float >= 0 (0.05 = 5%)")
            else:
                out[k] = float(v)
        return out

    def check_includes(
        self, data: dict[str, Any], wname: str, shared: dict[str, _Field]
    ) -> list[tuple[str, dict[str, list[Any]]]]:
        raw = data.get("include") or []
        if not isinstance(raw, list):
            self.add(("include",), f"must be a list of parameter mappings, got {raw!r}")
            return []
        out = []
        for i, entry in enumerate(raw):
            path = ("include", i)
            if not isinstance(entry, dict) or "method" not in entry:
                self.add(path, f"an include entry must be a mapping with a `method` key, got {entry!r}")
                continue
            m = entry["method"]
            try:
                spec = registry.get_method(wname, str(m))
            except KeyError as e:
                self.add(path + ("method",), e.args[0] if e.args else str(e))
                continue
            allowed = {**shared, **_fields_of(spec.params, str(m))}
            grid: dict[str, list[Any]] = {}
            for k, v in entry.items():
                if k == "method":
                    continue
                if k not in allowed:
                    self.unknown_param(path + (k,), k, allowed, f"method {m!r} of workload {wname!r}")
                    continue
                vals = self.value(path + (k,), allowed[k], v, sweep_ok=True)
                if vals is not None:
                    grid[k] = vals
            out.append((str(m), grid))
        return out

    def check_excludes(
        self, data: dict[str, Any], wname: str, suite_level: dict[str, _Field]
    ) -> list[dict[str, list[Any]]]:
        raw = data.get("exclude") or []
        if not isinstance(raw, list):
            self.add(("exclude",),
                     f"must be a list of mappings (a point matching every key is dropped), got {raw!r}")
            return []
        known = dict(suite_level)
        for m in registry.method_names(wname):
            for k, f in _fields_of(registry.get_method(wname, m).params, m).items():
                known.setdefault(k, f)
        out = []
        for i, entry in enumerate(raw):
            path = ("exclude", i)
            if not isinstance(entry, dict) or not entry:
                self.add(path, f"an exclude entry must be a non-empty mapping, got {entry!r}")
                continue
            rule: dict[str, list[Any]] = {}
            for k, v in entry.items():
                if k != "method" and k not in known:
                    self.unknown_param(path + (k,), k, {**known, "method": None}, f"workload {wname!r}")
                    continue
                f = known.get(k)
                as_list = isinstance(v, list) and (f is None or not _is_sequence_type(f.hint)
                                                   or all(isinstance(x, list) for x in v))
                values = list(v) if as_list else [v]
                if f is not None:
                    values = [_coerce(x, f.hint)[1] for x in values]
                rule[k] = values
            out.append(rule)
        return out

    def expand(
        self,
        suite_name: str,
        wname: str,
        wcls: type,
        fixed: dict[str, Any],
        sweep: dict[str, list[Any]],
        grids: dict[str, dict[str, list[Any]]],
        includes: list[tuple[str, dict[str, list[Any]]]],
        excludes: list[dict[str, list[Any]]],
        shared: dict[str, _Field],
        method_fields: dict[str, dict[str, _Field]],
    ) -> list[Point]:
        raw: list[tuple[str, dict[str, Any], KeyPath]] = []
        for combo in _product(sweep):
            for m, grid in grids.items():
                for mcombo in _product(grid):
                    raw.append((m, {**fixed, **combo, **mcombo}, ("methods", m)))
        for i, (m, grid) in enumerate(includes):
            for combo in _product(grid):
                raw.append((m, {**fixed, **combo}, ("include", i)))

        workload = wcls()
        points: list[Point] = []
        seen: set[str] = set()
        checked: dict[str, list[str]] = {}
        bad_construct: set[str] = set()
        for m, given, path in raw:
            if m not in method_fields:
                method_fields[m] = _fields_of(registry.get_method(wname, m).params, m)
            point = self.resolve(
                suite_name, wname, wcls, m, given, shared, method_fields[m], path, bad_construct
            )
            if point is None or point.hash in seen:
                continue
            if any(_matches(rule, point) for rule in excludes):
                continue
            seen.add(point.hash)
            points.append(point)
            key = _canonical(dataclasses.asdict(point.workload_params))
            if key not in checked:
                checked[key] = list(workload.check_paths(point.workload_params))
                for msg in checked[key]:
                    self.problems.append(f"{self.path_where(msg, wcls)}: {msg}")
        if not points and not self.problems:
            self.problems.append(
                f"{self.source}: the suite expands to no points (every point matched an `exclude` entry); "
                "loosen `exclude` or add methods/sweep values"
            )
        return points

    def path_where(self, msg: str, wcls: type) -> str:
        """Best location for a check_paths message: the line setting a parameter it names."""
        for name in (f.name for f in dataclasses.fields(wcls.Params)):
            if name in msg:
                for section in ("fixed", "sweep"):
                    if (section, name) in self.locs:
                        return self.locs[(section, name)]
        return self.source

    def resolve(
        self,
        suite_name: str,
        wname: str,
        wcls: type,
        method: str,
        given: dict[str, Any],
        shared: dict[str, _Field],
        mfields: dict[str, _Field],
        path: KeyPath,
        bad_construct: set[str],
    ) -> Point | None:
        wkw = {k: v for k, v in given.items() if k in shared and shared[k].owner == "workload"}
        ckw = {k: v for k, v in given.items() if k in shared and shared[k].owner == "common"}
        mkw = {k: v for k, v in given.items() if k in mfields and k not in shared}
        if "device" in ckw:
            ckw["device"] = resolve_device(ckw["device"])
        try:
            common = CommonParams(**ckw)
            wparams = wcls.Params(**wkw)
            mparams = registry.get_method(wname, method).params(**mkw)
        except (TypeError, ValueError) as e:
            msg = f"{e} (parameters: {given})"
            if msg not in bad_construct:
                bad_construct.add(msg)
                self.add(path, f"invalid combination for method {method!r}: {msg}")
            return None
        params: dict[str, Any] = {}
        params.update(dataclasses.asdict(wparams))
        params.update(dataclasses.asdict(mparams))
        params.update(dataclasses.asdict(common))
        return Point(
            suite=suite_name,
            workload=wname,
            method=method,
            params=params,
            workload_params=wparams,
            method_params=mparams,
            common=common,
            preset=self.preset,
            hash=point_hash(wname, method, params),
        )


def _product(grid: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values))


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def _matches(rule: dict[str, list[Any]], point: Point) -> bool:
    for k, values in rule.items():
        if k == "method":
            actual = point.method
        elif k in point.params:
            actual = point.params[k]
        else:
            return False
        if _norm(actual) not in [_norm(v) for v in values]:
            return False
    return True
