"""The loader: suite file -> :class:`Suite`, stage by stage.

read (YAML + line map) -> overlay (preset, ``--set``) -> validate (:class:`SuiteSpec`) ->
expand (points) -> :class:`Suite`. Problems from every stage go to one
:class:`~harness.suite.problems.Problems`; the first stage after which the suite cannot go on
(or the end, when anything was found) raises them as one :class:`SuiteError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import registry
from harness.measure.timing import TimingConfig
from harness.suite.catalog import find_suite_file
from harness.suite.document import MAX_SUITE_BYTES, decode_suite, overlay, read_yaml
from harness.suite.expansion import HASH_HEX_CHARS, canonical, expand
from harness.suite.problems import Problems
from harness.suite.spec import MetricsConfig, SuiteSpec, validate
from harness.workloads.base import CommonParams, Point


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
            values = {canonical(p.params.get(k)) for p in self._points}
            if len(values) > 1:
                varying.append(k)
        return varying


def load_suite(
    path: str | Path, *, preset: str | None = None, overrides: Sequence[str] = ()
) -> Suite:
    """Read, validate and expand a suite file. Raises SuiteError listing every problem.

    The file is read as bytes, at most :data:`~harness.suite.document.MAX_SUITE_BYTES` (one more
    tells that it is larger), and must be UTF-8.
    """
    file = find_suite_file(path)
    problems = Problems(str(file))
    with open(file, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(MAX_SUITE_BYTES + 1)
    text = decode_suite(raw, problems, size=max(size, len(raw)))
    if text is None:
        raise problems.error()
    return parse_suite(text, source=str(file), preset=preset, overrides=overrides)


def parse_suite(
    text: str, *, source: str = "<suite>", preset: str | None = None, overrides: Sequence[str] = ()
) -> Suite:
    """Validate and expand suite YAML text. ``source`` names the file in error messages."""
    problems = Problems(source)
    data = read_yaml(text, problems)
    if data is None:
        raise problems.error()
    doc = overlay(data, problems, preset, overrides)
    spec = validate(doc.data, doc.preset, problems)
    if spec is None:
        raise problems.error()
    expansion = expand(spec)
    for issue in expansion.issues:
        problems.report(issue)
    if problems:
        raise problems.error()
    return _suite(spec, doc.data, expansion.points, source)


def parse_recorded_suite(resolved: dict[str, Any], preset: str | None, source: str) -> Suite:
    """The suite a run directory recorded (its ``suite.resolved.yaml`` document and the preset it
    ran with), expanded again: the same points and hash as the run (the caller checks the hash)."""
    import yaml

    data = {k: v for k, v in resolved.items() if k != "parameters"}  # a record, not a suite key
    if preset:
        data["presets"] = {preset: {}}  # already applied; named so the points carry its name
    return parse_suite(yaml.safe_dump(data, sort_keys=False), source=source, preset=preset)


def _suite(spec: SuiteSpec, data: dict[str, Any], points: list[Point], source: str) -> Suite:
    """The loaded suite: the spec's settings, its points, and what the run directory records."""
    regression = _given_regression(data, spec)
    return Suite(
        name=spec.name,
        description=spec.description,
        workload=spec.workload,
        reference=spec.reference,
        methods=tuple(spec.methods),
        timing=spec.timing,
        metrics=spec.metrics,
        regression=regression,
        preset=spec.preset,
        source=source,
        resolved=_resolved(data, spec, regression),
        hash=suite_hash(spec, points),
        _points=points,
    )


def _given_regression(data: dict[str, Any], spec: SuiteSpec) -> dict[str, Any]:
    """The regression settings the suite gives, normalized, in its order (what compare reads)."""
    return {k: getattr(spec.regression, k) for k in data.get("regression") or {}}


def _resolved(data: dict[str, Any], spec: SuiteSpec, regression: dict[str, Any]) -> dict[str, Any]:
    """What the run directory records: the overlaid document without presets, with timing and
    metrics settings in full and the given regression settings, as JSON values."""
    resolved = {k: v for k, v in data.items() if k not in ("presets", "default_preset")}
    resolved["timing"] = dataclasses.asdict(spec.timing)
    resolved["metrics"] = dataclasses.asdict(spec.metrics)
    resolved["regression"] = regression
    resolved["parameters"] = parameter_owners(spec)
    return json.loads(json.dumps(resolved, default=str))


def parameter_owners(spec: SuiteSpec) -> dict[str, Any]:
    """Which config columns belong to the workload, to every point (common) and to each method:
    recorded so that reports never have to infer it (e.g. which columns pair a point with its
    reference)."""
    return {
        "workload": registry.param_names(registry.get_workload(spec.workload).Params),
        "common": registry.param_names(CommonParams),
        "methods": {m: registry.param_names(registry.get_method(spec.workload, m).params)
                    for m in spec.methods},
    }


def suite_hash(spec: SuiteSpec, points: Sequence[Point]) -> str:
    """What a run of the suite measures (workload, reference, timing, metrics, point hashes), for resume."""
    blob = canonical(
        {
            "workload": spec.workload,
            "reference": spec.reference,
            "timing": dataclasses.asdict(spec.timing),
            "metrics": dataclasses.asdict(spec.metrics),
            "points": sorted(p.hash for p in points),
        }
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_HEX_CHARS]
