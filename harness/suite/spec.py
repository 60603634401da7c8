"""Stage 2: validate the overlaid document into a frozen :class:`SuiteSpec`.

Every value is checked against the dataclass field it fills (workload, method and common
parameters; ``timing``, ``metrics`` and ``regression`` settings) by the generic checker of
:mod:`harness.suite.fields`, and normalized (an int given for a float is stored as a float).
All problems go to one :class:`~harness.suite.problems.Problems`; :func:`validate` returns a
spec only when there are none. A spec is plain data: it can also be written in Python.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from harness import registry
from harness.measure.timing import TimingConfig
from harness.params import did_you_mean, param
from harness.registry import MethodSpec
from harness.store import columns as C
from harness.store.layout import name_problem
from harness.suite.document import TOP_LEVEL_KEYS
from harness.suite.fields import (
    Field,
    check_settings,
    check_value,
    checked_settings,
    fields_of,
    is_sequence_type,
    report_unknown_param,
    section,
    settings_fields,
)
from harness.suite.problems import Problems
from harness.workloads.base import CommonParams, Workload

Grid = dict[str, list[Any]]  # parameter -> the values it takes (one value: a list of one)

DEFAULT_POINT_LIMIT = 100_000
"""Most points a suite may expand to unless it sets ``point_limit`` (in the file, a preset or
``--set point_limit=N``): a sweep larger than that is refused at load, before any point is built."""


@dataclass(frozen=True)
class MetricsConfig:
    """Which optional measurements the runner takes for every point."""

    evaluate: bool = param(True, "run bench.evaluate on the output (quality q_* / fidelity fid_* columns)")
    breakdown: bool = param(False, "run bench.breakdown once per point (bd_<phase>_ms columns)")
    profile: bool = param(
        False, "profile each point once after its timed samples (profiles/<hash>.trace.json.gz, ops.parquet)"
    )


@dataclass(frozen=True)
class RegressionConfig:
    """What `harness compare` counts as a regression for runs of this suite.

    None: not set in the suite (compare then takes its own default, or its command-line value).
    ``alpha`` excludes both ends of its range (a param() range includes them): see ``_regression``.
    """

    threshold: float | None = param(
        None, "relative latency change that counts (0.05 = 5%); compare's default: 0.05", range=(0, None)
    )
    alpha: float | None = param(
        None, "significance level of the latency test, 0 and 1 excluded; compare's default: 0.01",
        range=(0, 1),
    )
    per_metric: dict[str, float] | None = param(
        None, "per result column: relative threshold of a latency column (0.05 = 5%), absolute "
        "tolerance of a q_/fid_ column", range=(0, None),
    )


REGRESSION_KEYS = tuple(f.name for f in dataclasses.fields(RegressionConfig))

LATENCY_KEYS = (C.LAT_MEDIAN, "latency", C.DEVICE_MS)
"""``regression.per_metric`` keys that set the relative latency threshold (`harness compare` reads the
first one given); every other key must be a quality (``q_``) or fidelity (``fid_``) column the
workload declares in ``metrics()``."""


@dataclass(frozen=True)
class Include:
    """Extra points of one method: its grid merged over ``fixed`` (not crossed with ``sweep``)."""

    method: str
    grid: Grid = field(default_factory=dict)


@dataclass(frozen=True)
class SuiteSpec:
    """A validated suite, before expansion: what its points are made of, and its settings.

    Values are normalized (lists of the values each parameter takes); dict order is file order,
    which is expansion order. ``exclude`` rules map a parameter (or ``method``) to the values
    that match. Build one in Python to expand without YAML (see :func:`harness.suite.expansion.expand`).
    """

    name: str
    workload: str
    methods: dict[str, Grid]
    fixed: dict[str, Any] = field(default_factory=dict)
    sweep: Grid = field(default_factory=dict)
    include: tuple[Include, ...] = ()
    exclude: tuple[Grid, ...] = ()
    reference: str | None = None
    description: str = ""
    timing: TimingConfig = field(default_factory=TimingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    preset: str | None = None
    point_limit: int = param(
        DEFAULT_POINT_LIMIT, "most points the suite may expand to (counted before `exclude`); a larger "
        "suite is refused at load", range=(1, None),
    )


def validate(data: dict[str, Any], preset: str | None, problems: Problems) -> SuiteSpec | None:
    """The spec of an overlaid suite document; None when ``problems`` holds anything (also earlier)."""
    _check_top_level_keys(data, problems)
    name = _name(data, problems)
    description = _description(data, problems)
    timing = _timing(data, problems)
    metrics = check_settings(problems, data, "metrics", MetricsConfig)
    regression = _regression(data, problems)
    point_limit = _point_limit(data, problems)
    wcls = _workload(data, problems)
    if wcls is None:
        return None
    _per_metric_keys(data, wcls, problems)
    methods_raw = _methods_section(data, wcls.name, problems)
    catalog = _catalog(wcls, methods_raw, problems)
    reference = _reference(data, methods_raw, problems)
    fixed = _fixed(data, catalog, problems)
    sweep = _sweep(data, catalog, fixed, problems)
    grids = _grids(methods_raw, catalog, problems)
    include = _includes(data, catalog, problems)
    exclude = _excludes(data, catalog, _suite_methods(methods_raw, include), problems)
    if problems:
        return None
    return SuiteSpec(
        name=name, workload=wcls.name, methods=grids, fixed=fixed, sweep=sweep, include=include,
        exclude=exclude, reference=reference, description=description, timing=timing,
        metrics=metrics, regression=regression, preset=preset, point_limit=point_limit,
    )


# ---------------------------------------------------------------- suite-wide keys


def _check_top_level_keys(data: dict[str, Any], problems: Problems) -> None:
    """Report keys that are not part of the schema (with the closest one)."""
    for k in data:
        if k not in TOP_LEVEL_KEYS:
            problems.add(
                (k,),
                f"unknown top-level key {k!r}{did_you_mean(str(k), TOP_LEVEL_KEYS)}; "
                f"allowed: {', '.join(TOP_LEVEL_KEYS)}",
            )


def _name(data: dict[str, Any], problems: Problems) -> str:
    """``name``: required, names the run directory and the rows."""
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.add(("name",) if "name" in data else (), f"`name` must be a non-empty string, got {name!r}")
        return ""
    problem = name_problem(name)
    if problem is not None:
        problems.add(("name",), problem)
        return ""
    return name


def _description(data: dict[str, Any], problems: Problems) -> str:
    """``description``: optional free text."""
    description = data.get("description") or ""
    if not isinstance(description, str):
        problems.add(("description",), f"must be a string, got {description!r}")
        return ""
    return description


def _timing(data: dict[str, Any], problems: Problems) -> TimingConfig:
    """Timing settings; when only max_samples is given below the default minimum, the minimum follows it.

    min_samples <= max_samples is checked only when neither already has a problem (a bad one holds
    its default, which the suite did not give).
    """
    timing, bad = checked_settings(problems, data, "timing", TimingConfig)
    given = data.get("timing")
    min_given = isinstance(given, dict) and "min_samples" in given and "min_samples" not in bad
    if not min_given and timing.min_samples > timing.max_samples:
        timing = dataclasses.replace(timing, min_samples=timing.max_samples)
    if not {"min_sample_ms", "budget_s"} & bad and timing.budget_s > 0 \
            and timing.min_sample_ms > timing.budget_s * 1e3:
        problems.add(
            ("timing", "min_sample_ms"),
            f"min_sample_ms ({timing.min_sample_ms:g}) is longer than the whole sampling budget (budget_s "
            f"{timing.budget_s:g} = {timing.budget_s * 1e3:g} ms): every sample would overrun it; allowed: "
            "min_sample_ms <= 1000 x budget_s (min_sample_ms batches short calls; 1 ms is plenty)",
        )
    if {"min_samples", "max_samples"} & bad:
        return timing
    if timing.min_samples > timing.max_samples:
        problems.add(
            ("timing", "min_samples"),
            f"min_samples ({timing.min_samples}) is larger than max_samples ({timing.max_samples}); "
            f"allowed: min_samples <= max_samples (lower both, e.g. --set timing.min_samples="
            f"{timing.max_samples})",
        )
    return timing


def _regression(data: dict[str, Any], problems: Problems) -> RegressionConfig:
    """Regression settings, by the generic checker; alpha must also differ from 0 and 1."""
    regression = check_settings(problems, data, "regression", RegressionConfig)
    if regression.alpha in (0, 1):
        f = settings_fields(RegressionConfig, "regression")["alpha"]
        problems.add(("regression", "alpha"), f.out_of_range(regression.alpha) + f.help_suffix())
    return regression


def _per_metric_keys(data: dict[str, Any], wcls: type[Workload], problems: Problems) -> None:
    """``regression.per_metric`` keys: a latency key, ``instructions`` or a q_/fid_ column the workload
    declares (anything else would be silently ignored by `harness compare`)."""
    given = data.get("regression")
    per_metric = given.get("per_metric") if isinstance(given, dict) else None
    if not isinstance(per_metric, dict):
        return  # absent, or not a mapping (reported by the settings check)
    columns = [c for c in wcls().metrics() if c.startswith((C.QUALITY_PREFIX, C.FIDELITY_PREFIX))]
    allowed = [*LATENCY_KEYS, C.INSTRUCTIONS, *columns]
    for k in per_metric:
        if str(k) in allowed:
            continue
        problems.add(
            ("regression", "per_metric", k),
            f"unknown per_metric column {k!r}{did_you_mean(str(k), allowed)}; allowed: a latency key "
            f"({', '.join(LATENCY_KEYS)}: relative threshold), {C.INSTRUCTIONS} (relative threshold of "
            "instruction counts) or a quality/fidelity column of workload "
            f"{wcls.name!r} (absolute tolerance): {', '.join(columns) or '(it declares none)'}",
        )


def _point_limit(data: dict[str, Any], problems: Problems) -> int:
    """``point_limit``: optional, the most points the suite may expand to."""
    if "point_limit" not in data:
        return DEFAULT_POINT_LIMIT
    f = fields_of(SuiteSpec, "suite")["point_limit"]
    value, found = f.check(data["point_limit"])
    for sub, msg in found:
        problems.add(("point_limit",) + sub, msg + f.help_suffix())
    return DEFAULT_POINT_LIMIT if found else value


def _workload(data: dict[str, Any], problems: Problems) -> type[Workload] | None:
    """The registered workload class the suite names (None: reported)."""
    wname = data.get("workload")
    found = _lookup_workload(wname)
    if isinstance(found, str):
        known = ", ".join(registry.workload_names()) or "(none registered)"
        problems.add(("workload",) if "workload" in data else (), f"{found} (registered workloads: {known})")
        return None
    return found


def _lookup_workload(name: Any) -> type[Workload] | str:
    """The workload class registered as ``name``, or why there is none."""
    if not isinstance(name, str):
        return f"`workload` must be the name of a registered workload, got {name!r}"
    try:
        return registry.get_workload(name)
    except KeyError as e:  # the registry words the message (with did-you-mean)
        return str(e.args[0])


def _lookup_method(workload: str, name: Any) -> MethodSpec | str:
    """The method ``name`` of ``workload``, or why there is none."""
    try:
        return registry.get_method(workload, str(name))
    except KeyError as e:
        return str(e.args[0])


def _reference(data: dict[str, Any], methods_raw: dict[Any, Any], problems: Problems) -> str | None:
    """``reference``: optional, the method the others are compared with; one of ``methods``."""
    reference = data.get("reference")
    if reference is None:
        return None
    if not isinstance(reference, str) or reference not in methods_raw:
        names = [str(m) for m in methods_raw]
        problems.add(
            ("reference",),
            f"reference method {reference!r} is not one of this suite's methods"
            f"{did_you_mean(str(reference), names)}; the reference must be one of this suite's "
            f"method names: {', '.join(names) or '(none)'}",
        )
        return None
    return reference


# ---------------------------------------------------------------- methods and parameters


@dataclass(frozen=True)
class _Catalog:
    """The parameter fields a suite of one workload may use.

    shared: workload and common parameters; methods: each of the suite's (existing) methods'
    own; suite_level: what ``fixed`` and ``sweep`` may set (shared, or any suite method's).
    """

    workload: str
    shared: dict[str, Field]
    methods: dict[Any, dict[str, Field]]
    suite_level: dict[str, Field]


def _catalog(wcls: type[Workload], methods_raw: dict[Any, Any], problems: Problems) -> _Catalog:
    """The fields of the workload and of the suite's methods (unknown methods reported)."""
    shared = {**fields_of(wcls.Params, "workload"), **fields_of(CommonParams, "common")}
    methods = _method_fields(methods_raw, wcls.name, problems)
    any_method: dict[str, Field] = {}
    for fs in methods.values():
        for k, f in fs.items():
            any_method.setdefault(k, f)
    return _Catalog(wcls.name, shared, methods, {**any_method, **shared})


def _methods_section(data: dict[str, Any], wname: str, problems: Problems) -> dict[Any, Any]:
    """The ``methods`` mapping (``{}`` when it is missing, empty or not a mapping: reported)."""
    methods_raw = data.get("methods")
    if not isinstance(methods_raw, dict) or not methods_raw:
        problems.add(
            ("methods",) if "methods" in data else (),
            f"`methods` must map at least one method name to its parameters; "
            f"methods of {wname!r}: {', '.join(registry.method_names(wname)) or '(none)'}",
        )
        return {}
    return methods_raw


def _method_fields(
    methods_raw: dict[Any, Any], wname: str, problems: Problems
) -> dict[Any, dict[str, Field]]:
    """Each known method's parameter fields; unknown methods and non-mapping bodies are reported."""
    out: dict[Any, dict[str, Field]] = {}
    for m, body in methods_raw.items():
        spec = _lookup_method(wname, m)
        if isinstance(spec, str):
            problems.add(("methods", m), spec)
            continue
        out[m] = fields_of(spec.params, m)
        if body is not None and not isinstance(body, dict):
            problems.add(("methods", m), f"must be a mapping of parameter: value (or {{}}), got {body!r}")
    return out


def _fixed(data: dict[str, Any], catalog: _Catalog, problems: Problems) -> dict[str, Any]:
    """``fixed``: one value per parameter (workload, common or any suite method's)."""
    known = catalog.suite_level
    fixed: dict[str, Any] = {}
    for k, v in section(problems, data, "fixed").items():
        if k not in known:
            report_unknown_param(problems, ("fixed", k), k, known, _here(catalog))
            continue
        vals = check_value(problems, ("fixed", k), known[k], v, sweep_ok=False)
        if vals is not None:
            fixed[k] = vals[0]
    return fixed


def _sweep(data: dict[str, Any], catalog: _Catalog, fixed: dict[str, Any], problems: Problems) -> Grid:
    """``sweep``: the axes every method shares (a parameter may not be both fixed and swept)."""
    known = catalog.suite_level
    sweep: Grid = {}
    for k, v in section(problems, data, "sweep").items():
        if k not in known:
            report_unknown_param(problems, ("sweep", k), k, known, _here(catalog))
            continue
        if k in fixed:
            problems.add(("sweep", k), f"{k!r} is set in both `fixed` and `sweep`; keep one of them")
            continue
        vals = check_value(problems, ("sweep", k), known[k], v, sweep_ok=True)
        if vals is not None:
            sweep[k] = vals
    return sweep


def _here(catalog: _Catalog) -> str:
    """Whose parameters ``fixed`` and ``sweep`` take, for an unknown-parameter message."""
    return f"workload {catalog.workload!r} or its methods here"


def _grids(methods_raw: dict[Any, Any], catalog: _Catalog, problems: Problems) -> dict[str, Grid]:
    """Each method's own grid (its body under ``methods``), in file order."""
    grids: dict[str, Grid] = {}
    for m, fs in catalog.methods.items():
        body = methods_raw.get(m)
        if not isinstance(body, dict):
            grids[m] = {}
            continue
        grids[m] = _grid(("methods", m), body, {**catalog.shared, **fs}, m, catalog, problems)
    return grids


def _grid(
    path: tuple[Any, ...], body: dict[Any, Any], allowed: dict[str, Field], method: Any,
    catalog: _Catalog, problems: Problems,
) -> Grid:
    """The checked values of one method's parameters (a method body or an include entry)."""
    grid: Grid = {}
    for k, v in body.items():
        if k not in allowed:
            what = f"method {method!r} of workload {catalog.workload!r}"
            report_unknown_param(problems, path + (k,), k, allowed, what)
            continue
        vals = check_value(problems, path + (k,), allowed[k], v, sweep_ok=True)
        if vals is not None:
            grid[k] = vals
    return grid


def _includes(data: dict[str, Any], catalog: _Catalog, problems: Problems) -> tuple[Include, ...]:
    """``include``: extra points, each naming its method (any method of the workload)."""
    raw = data.get("include") or []
    if not isinstance(raw, list):
        problems.add(("include",), f"must be a list of parameter mappings, got {raw!r}")
        return ()
    out = []
    for i, entry in enumerate(raw):
        path = ("include", i)
        if not isinstance(entry, dict) or "method" not in entry:
            problems.add(path, f"an include entry must be a mapping with a `method` key, got {entry!r}")
            continue
        m = entry["method"]
        spec = _lookup_method(catalog.workload, m)
        if isinstance(spec, str):
            problems.add(path + ("method",), spec)
            continue
        allowed = {**catalog.shared, **fields_of(spec.params, str(m))}
        body = {k: v for k, v in entry.items() if k != "method"}
        out.append(Include(str(m), _grid(path, body, allowed, m, catalog, problems)))
    return tuple(out)


def _suite_methods(methods_raw: dict[Any, Any], include: tuple[Include, ...]) -> list[str]:
    """The methods the suite's points may have: those under ``methods`` and in ``include``."""
    names = [str(m) for m in methods_raw]
    return names + [inc.method for inc in include if inc.method not in names]


def _excludes(
    data: dict[str, Any], catalog: _Catalog, methods: list[str], problems: Problems
) -> tuple[Grid, ...]:
    """``exclude``: rules matching points by value (a list matches any of its items).

    Each value is checked like the parameter's own values (type, choices, range), and a ``method``
    must be one of the suite's ``methods``: a rule that could match no point is refused.
    """
    raw = data.get("exclude") or []
    if not isinstance(raw, list):
        problems.add(("exclude",),
                     f"must be a list of mappings (a point matching every key is dropped), got {raw!r}")
        return ()
    known = dict(catalog.suite_level)
    for m in registry.method_names(catalog.workload):
        for k, f in fields_of(registry.get_method(catalog.workload, m).params, m).items():
            known.setdefault(k, f)
    out = []
    for i, entry in enumerate(raw):
        path = ("exclude", i)
        if not isinstance(entry, dict) or not entry:
            problems.add(path, f"an exclude entry must be a non-empty mapping, got {entry!r}")
            continue
        rule: Grid = {}
        for k, v in entry.items():
            if k != "method" and k not in known:
                what = f"workload {catalog.workload!r}"
                report_unknown_param(problems, path + (k,), k, [*known, "method"], what)
                continue
            if k == "method":
                values = _exclude_methods(path + (k,), v, methods, problems)
            else:
                values = _exclude_values(path + (k,), known[k], v, problems)
            if values is not None:
                rule[str(k)] = values
        out.append(rule)
    return tuple(out)


def _exclude_items(
    path: tuple[Any, ...], v: Any, as_list: bool, problems: Problems
) -> list[tuple[Any, Any]] | None:
    """(key path, value) of each value an exclude key lists (one, or each item of a list); None
    (reported) for an empty list, which would match nothing."""
    if not as_list:
        return [(path, v)]
    if not v:
        problems.add(path, "empty list: it matches no point; give the value (or a list of the values) "
                     "to exclude, or remove the key")
        return None
    return [(path + (j,), x) for j, x in enumerate(v)]


def _exclude_methods(
    path: tuple[Any, ...], v: Any, methods: list[str], problems: Problems
) -> list[Any] | None:
    """The methods an exclude ``method`` names, each one of the suite's (None: reported)."""
    items = _exclude_items(path, v, isinstance(v, list), problems)
    if items is None:
        return None
    out = []
    for where, m in items:
        if not isinstance(m, str) or m not in methods:
            problems.add(
                where,
                f"{m!r} is not one of this suite's methods{did_you_mean(str(m), methods)}; an exclude "
                f"`method` (or a list of them) must name one: {', '.join(methods) or '(none)'}",
            )
            continue
        out.append(m)
    return out if len(out) == len(items) else None


def _exclude_values(path: tuple[Any, ...], f: Field, v: Any, problems: Problems) -> list[Any] | None:
    """The values an exclude key matches, each checked and normalized like the parameter's own
    values (a list is any of its items; for a sequence parameter only a list of lists is);
    None when any was reported."""
    as_list = isinstance(v, list) and (
        not is_sequence_type(f.hint) or (len(v) > 0 and all(isinstance(x, list) for x in v))
    )
    items = _exclude_items(path, v, as_list, problems)
    if items is None:
        return None
    out = []
    for where, x in items:
        nv, found = f.check(x)
        for sub, msg in found:
            problems.add(where + sub, msg + f.help_suffix())
        if not found:
            out.append(nv)
    return out if len(out) == len(items) else None
