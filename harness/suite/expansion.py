"""Stages 3 and 4: expand a :class:`~harness.suite.spec.SuiteSpec` into points, and resolve one point.

No YAML and no line map here: a spec goes in, points (and the problems found building them,
as unlocated :class:`~harness.suite.problems.Issue`) come out, so expansion can be tested on
a spec written in Python. Order: for each combination of the ``sweep`` axes, for each method,
for each combination of its grid; then the ``include`` points; minus ``exclude`` matches;
repeats (same hash) kept once.

Before any point is built, the number of candidates (:func:`count_points`: the sweep product
times the methods' grids, plus the include grids) is checked against the spec's ``point_limit``,
from the lengths of the value lists alone. Each point is then checked by its workload: local
paths by ``check_paths`` (once per workload configuration) and, when the workload has one,
``check_point(workload_params, method, method_params) -> list[str]`` for the constraints that
need the method's parameters or the model (e.g. a layer index against the preset's depth). Their
problems, and the dataclasses' refusals (``__post_init__``), are located at the line that sets a
parameter they name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness import registry
from harness.measure.devices import resolve_device
from harness.suite.problems import Issue, KeyPath
from harness.suite.spec import Grid, SuiteSpec
from harness.workloads.base import CommonParams, Point, Workload

HASH_HEX_CHARS = 16


def canonical(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): what hashes are taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def point_hash(workload: str, method: str, params: dict[str, Any]) -> str:
    """Stable id of a configuration: sha256 (first 16 hex) of canonical JSON."""
    blob = canonical({"workload": workload, "method": method, "params": params})
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_HEX_CHARS]


@dataclass(frozen=True)
class Rejected:
    """Parameters that the dataclasses refuse together (their ``__post_init__`` says why).

    owner: whose dataclass refused: "method", "workload" or "common"; names: its field names
    (which the reason may name).
    """

    reason: str
    owner: str = field(default="method", compare=False)
    names: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Candidate:
    """Parameters given for one point of ``method``, and the suite entry they come from."""

    method: str
    given: dict[str, Any]
    origin: KeyPath  # ("methods", m) or ("include", i)


@dataclass
class Expansion:
    """The points of a spec, in order, and the problems found building them."""

    points: list[Point]
    issues: list[Issue]


def expand(spec: SuiteSpec) -> Expansion:
    """Every point of ``spec``; refused parameter combinations and the workload's checks
    (``check_paths`` once per workload configuration, ``check_point`` per point) become issues.
    A refused point is still checked by the workload (with the values it was given), so that all
    of its problems are reported at once. A spec of more than ``spec.point_limit`` candidates
    gives one issue and no points."""
    too_many = _too_many(spec)
    if too_many is not None:
        return Expansion([], [too_many])
    checks = _Checks(spec, registry.get_workload(spec.workload)())
    points: list[Point] = []
    seen: set[str] = set()
    for cand in candidates(spec):
        parts = _parts(spec, cand.method, cand.given)
        if parts.rejected:
            checks.report(_rejected_issue(spec, cand, r) for r in parts.rejected)
            checks.point(cand, parts.workload, parts.method)
            continue
        point = _point(spec, cand.method, parts)
        if point.hash in seen or any(matches(rule, point) for rule in spec.exclude):
            continue
        seen.add(point.hash)
        points.append(point)
        checks.point(cand, point.workload_params, point.method_params)
    issues = checks.issues
    if not points and not issues:
        issues.append(Issue("the suite expands to no points (every point matched an `exclude` entry); "
                            "loosen `exclude` or add methods/sweep values"))
    return Expansion(points, issues)


class _Checks:
    """The workload's checks of the points of one spec, and the issues found (each message once,
    at the first entry giving it)."""

    def __init__(self, spec: SuiteSpec, workload: Workload) -> None:
        self.spec = spec
        self.workload = workload
        self.check_point = workload.check_point
        self.issues: list[Issue] = []
        self._messages: set[str] = set()
        self._checked: set[str] = set()

    def report(self, issues: Iterable[Issue]) -> None:
        for issue in issues:
            if issue.message not in self._messages:
                self._messages.add(issue.message)
                self.issues.append(issue)

    def point(self, cand: Candidate, wparams: Any, mparams: Any) -> None:
        """``check_paths`` (once per workload configuration) and ``check_point`` of one point;
        None parameters (not even their given values could be had): nothing to check."""
        if wparams is None:
            return
        wnames = _field_names(wparams)
        key = canonical(dataclasses.asdict(wparams))
        if key not in self._checked:
            self._checked.add(key)
            self.report(Issue(msg, near=_near(self.spec, cand.origin, msg, wnames))
                        for msg in self.workload.check_paths(wparams))
        if mparams is not None:
            names = wnames + _field_names(mparams)
            self.report(Issue(msg, cand.origin, _near(self.spec, cand.origin, msg, names))
                        for msg in self.check_point(wparams, cand.method, mparams))


def count_points(spec: SuiteSpec) -> int:
    """How many points ``spec`` gives before ``exclude`` and repeats, from the list lengths alone."""
    per_combo = sum(_grid_size(grid) for grid in spec.methods.values())
    return _grid_size(spec.sweep) * per_combo + sum(_grid_size(inc.grid) for inc in spec.include)


def _grid_size(grid: Grid) -> int:
    return math.prod(len(v) for v in grid.values())


def _too_many(spec: SuiteSpec) -> Issue | None:
    """The issue of a spec with more candidate points than ``point_limit`` (None: within it)."""
    total = count_points(spec)
    if total <= spec.point_limit:
        return None
    sweep = " x ".join(f"{k} {len(v)}" for k, v in spec.sweep.items())
    sweep = f"sweep {sweep} = {_grid_size(spec.sweep):,} combinations" if spec.sweep else "no sweep"
    methods = " + ".join(f"{m} {_grid_size(g):,}" for m, g in spec.methods.items())
    include = sum(_grid_size(inc.grid) for inc in spec.include)
    include_part = f", plus {include:,} from `include`" if spec.include else ""
    return Issue(
        f"the suite expands to {total:,} points before `exclude` ({sweep}, times the method grids "
        f"{methods}{include_part}), more than its point_limit of {spec.point_limit:,} (allowed: at most "
        f"point_limit points). Narrow the sweep, or, to run them all, raise the limit: `point_limit: "
        f"{total}` in the suite or `--set point_limit={total}` (`harness run --max-points` does not: it "
        "only runs a slice of the points).",
        near=(("point_limit",), ("sweep",), ("methods",)),
    )


def _rejected_issue(spec: SuiteSpec, cand: Candidate, rejected: Rejected) -> Issue:
    """A refused combination: a method's at its entry (where its parameters are given), the
    workload's or common parameters' at the line of a parameter the reason names."""
    if rejected.owner == "method":
        return Issue(f"invalid combination for method {cand.method!r}: {rejected.reason}", cand.origin)
    return Issue(f"invalid {rejected.owner} parameters: {rejected.reason}", cand.origin,
                 _near(spec, cand.origin, rejected.reason, rejected.names))


def candidates(spec: SuiteSpec) -> Iterator[Candidate]:
    """The given parameters of every point before resolving, in expansion order."""
    for combo in _product(spec.sweep):
        for m, grid in spec.methods.items():
            for mcombo in _product(grid):
                yield Candidate(m, {**spec.fixed, **combo, **mcombo}, ("methods", m))
    for i, inc in enumerate(spec.include):
        for combo in _product(inc.grid):
            yield Candidate(inc.method, {**spec.fixed, **combo}, ("include", i))


def resolve(spec: SuiteSpec, method: str, given: Mapping[str, Any]) -> Point | Rejected:
    """One point of ``method``: ``given`` split among the workload, method and common dataclasses.

    Defaults fill what is not given (parameters of other methods are ignored); ``device: auto``
    becomes ``cuda`` or ``cpu`` here. ``params`` holds every parameter, which the hash covers.
    """
    parts = _parts(spec, method, given)
    return parts.rejected[0] if parts.rejected else _point(spec, method, parts)


@dataclass(frozen=True)
class _Parts:
    """The common, workload and method parameters of one point, and what their dataclasses refused.

    A refused dataclass holds the values it was given (and its defaults) without the check that
    refused them, so that the workload's other checks can still look at them; None when even that
    cannot be had.
    """

    common: Any
    workload: Any
    method: Any
    rejected: tuple[Rejected, ...] = ()


def _parts(spec: SuiteSpec, method: str, given: Mapping[str, Any]) -> _Parts:
    wcls = registry.get_workload(spec.workload)
    mcls = registry.get_method(spec.workload, method).params
    common_names = _names(CommonParams)
    workload_names = _names(wcls.Params) - common_names
    method_names = _names(mcls) - workload_names - common_names
    ckw = {k: v for k, v in given.items() if k in common_names}
    if "device" in ckw:
        ckw["device"] = resolve_device(ckw["device"])
    built: list[Any] = []
    rejected: list[Rejected] = []
    for owner, cls, kwargs in (
        ("common", CommonParams, ckw),
        ("workload", wcls.Params, {k: v for k, v in given.items() if k in workload_names}),
        ("method", mcls, {k: v for k, v in given.items() if k in method_names}),
    ):
        try:
            built.append(cls(**kwargs))
        except (TypeError, ValueError) as e:  # a cross-field rule in a dataclass's __post_init__
            rejected.append(Rejected(f"{e} (parameters: {kwargs})", owner, tuple(_field_names(cls))))
            built.append(_unchecked(cls, kwargs))
    common, wparams, mparams = built
    return _Parts(common, wparams, mparams, tuple(rejected))


def _unchecked(cls: type, kwargs: Mapping[str, Any]) -> Any:
    """An instance of the dataclass ``cls`` with ``kwargs`` over its defaults, ``__post_init__``
    not run; None when a field has no value or is unknown."""
    names = _field_names(cls)
    if any(k not in names for k in kwargs):
        return None
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        if f.name in kwargs:
            value = kwargs[f.name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            return None
        object.__setattr__(obj, f.name, value)
    return obj


def _point(spec: SuiteSpec, method: str, parts: _Parts) -> Point:
    common, wparams, mparams = parts.common, parts.workload, parts.method
    params = {**dataclasses.asdict(wparams), **dataclasses.asdict(mparams), **dataclasses.asdict(common)}
    return Point(
        suite=spec.name,
        workload=spec.workload,
        method=method,
        params=params,
        workload_params=wparams,
        method_params=mparams,
        common=common,
        preset=spec.preset,
        hash=point_hash(spec.workload, method, params),
    )


def matches(rule: Grid, point: Point) -> bool:
    """Whether ``point`` matches an exclude rule: every key's value is one of the rule's values.

    ``device: auto`` in a rule means the device it resolves to, as in the points.
    """
    for k, values in rule.items():
        if k == "method":
            actual = point.method
        elif k in point.params:
            actual = point.params[k]
        else:
            return False
        if k == "device":
            values = [resolve_device(v) if isinstance(v, str) else v for v in values]
        if _norm(actual) not in [_norm(v) for v in values]:
            return False
    return True


_QUOTED = re.compile(r"(?<!\w)'[^'\n]*'(?!\w)|(?<!\w)\"[^\"\n]*\"(?!\w)")  # repr()s, not "can't"


def named(message: str, names: Iterable[str]) -> list[str]:
    """The parameter names that ``message`` names, in the order it names them: whole words outside
    quoted values (a path like '/data/model.pt' names neither ``data`` nor ``model``)."""
    bare = _QUOTED.sub("''", message)
    at = {}
    for n in names:
        m = re.search(rf"(?<![\w.-]){re.escape(n)}(?![\w-])", bare)
        if m is not None:
            at.setdefault(n, m.start())
    return sorted(at, key=at.__getitem__)


def _near(spec: SuiteSpec, origin: KeyPath, message: str, names: Iterable[str]) -> tuple[KeyPath, ...]:
    """Key paths that may set the parameters ``message`` names, for locating it: for each name (in
    message order), the point's own entry when it sets the name, then ``fixed``, then ``sweep``."""
    out: list[KeyPath] = []
    for n in named(message, names):
        if n in _entry_grid(spec, origin):
            out.append(origin + (n,))
        out += [("fixed", n), ("sweep", n)]
    return tuple(out)


def _entry_grid(spec: SuiteSpec, origin: KeyPath) -> Grid:
    """The grid of the entry ``origin`` names: a method body or an include entry."""
    if origin[:1] == ("methods",) and len(origin) > 1:
        return spec.methods.get(origin[1], {})
    if origin[:1] == ("include",) and len(origin) > 1 and origin[1] < len(spec.include):
        return spec.include[origin[1]].grid
    return {}


def _field_names(obj: Any) -> list[str]:
    """Field names of a dataclass (instance or class), in declaration order."""
    return [f.name for f in dataclasses.fields(obj)]


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _product(grid: Grid) -> Iterator[dict[str, Any]]:
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values))


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v
