"""Stages 3 and 4: expand a :class:`~harness.suite.spec.SuiteSpec` into points, and resolve one point.

No YAML and no line map here: a spec goes in, points (and the problems found building them,
as unlocated :class:`~harness.suite.problems.Issue`) come out, so expansion can be tested on
a spec written in Python. Order: for each combination of the ``sweep`` axes, for each method,
for each combination of its grid; then the ``include`` points; minus ``exclude`` matches;
repeats (same hash) kept once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from harness import registry
from harness.devices import resolve_device
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
    """Parameters that the dataclasses refuse together (their ``__post_init__`` says why)."""

    reason: str


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
    """Every point of ``spec``; refused parameter combinations and the workload's path checks
    (``check_paths``, once per workload configuration) become issues."""
    workload = registry.get_workload(spec.workload)()
    points: list[Point] = []
    issues: list[Issue] = []
    seen: set[str] = set()
    rejected: set[str] = set()
    checked: set[str] = set()
    for cand in candidates(spec):
        point = resolve(spec, cand.method, cand.given)
        if isinstance(point, Rejected):
            if point.reason not in rejected:
                rejected.add(point.reason)
                issues.append(Issue(f"invalid combination for method {cand.method!r}: {point.reason}",
                                    cand.origin))
            continue
        if point.hash in seen or any(matches(rule, point) for rule in spec.exclude):
            continue
        seen.add(point.hash)
        points.append(point)
        key = canonical(dataclasses.asdict(point.workload_params))
        if key not in checked:
            checked.add(key)
            issues += _path_issues(workload, point)
    if not points and not issues:
        issues.append(Issue("the suite expands to no points (every point matched an `exclude` entry); "
                            "loosen `exclude` or add methods/sweep values"))
    return Expansion(points, issues)


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
    wcls = registry.get_workload(spec.workload)
    mcls = registry.get_method(spec.workload, method).params
    common_names = _names(CommonParams)
    workload_names = _names(wcls.Params) - common_names
    method_names = _names(mcls) - workload_names - common_names
    ckw = {k: v for k, v in given.items() if k in common_names}
    if "device" in ckw:
        ckw["device"] = resolve_device(ckw["device"])
    try:
        common = CommonParams(**ckw)
        wparams = wcls.Params(**{k: v for k, v in given.items() if k in workload_names})
        mparams = mcls(**{k: v for k, v in given.items() if k in method_names})
    except (TypeError, ValueError) as e:  # a cross-field rule in a dataclass's __post_init__
        return Rejected(f"{e} (parameters: {given})")
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
    """Whether ``point`` matches an exclude rule: every key's value is one of the rule's values."""
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


def _path_issues(workload: Workload, point: Point) -> list[Issue]:
    """The workload's complaints about local paths of a point, each near the line setting a
    parameter it names (in ``fixed`` or ``sweep``)."""
    names = [f.name for f in dataclasses.fields(point.workload_params)]
    return [
        Issue(msg, near=tuple((section, n) for n in names if n in msg for section in ("fixed", "sweep")))
        for msg in workload.check_paths(point.workload_params)
    ]


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
