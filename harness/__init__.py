"""Benchmarking and profiling harness for vision-transformer acceleration.

Two method families are measured against their baselines on the same device: HTTM (head-wise
temporal token merging) on VGGT, and MixA-Q (mixed-precision activation quantization) on Swin.

The public API (everything else is an implementation detail and may move)::

    import harness
    suite = harness.load_suite("vggt-layer", preset="cpu")      # a packaged suite, or a path
    summary = harness.run_suite(suite, "runs/mine", harness.RunOptions(progress=False))
    run = harness.load(summary.run_dir)                           # points / samples DataFrames

    @harness.register_method("mine", params=MyParams, workloads=("vggt",), doc="...")
    def make_mine(p: MyParams) -> harness.AttentionFn: ...

Every error a user can cause derives from :class:`HarnessError`.

The names below are resolved on first use (PEP 562), so that importing one sub-package (say
``harness.store`` from a report) does not import the models, methods and runner behind the
others. ``from harness import run_suite`` and ``harness.run_suite`` work as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from harness.version import __version__

#: public name -> the module that defines it
_PUBLIC: dict[str, str] = {
    "HarnessError": "harness.errors",
    "AttentionFn": "harness.models.seam",
    "AttentionLayout": "harness.models.seam",
    "GradCalibration": "harness.models.seam",
    "GradProbe": "harness.models.seam",
    "VGGTMethod": "harness.models.seam",
    "param": "harness.params",
    "MethodSpec": "harness.registry",
    "create_method": "harness.registry",
    "load_builtins": "harness.registry",
    "register_method": "harness.registry",
    "register_workload": "harness.registry",
    "RayOptions": "harness.run.options",
    "RunOptions": "harness.run.options",
    "profile_run": "harness.run.runner",
    "run_suite": "harness.run.runner",
    "RunSummary": "harness.run.summary",
    "RunData": "harness.store",
    "load": "harness.store",
    "Suite": "harness.suite",
    "load_suite": "harness.suite",
    "parse_suite": "harness.suite",
    "Bench": "harness.workloads.base",
    "CommonParams": "harness.workloads.base",
    "MetricInfo": "harness.workloads.base",
    "Point": "harness.workloads.base",
    "RunContext": "harness.workloads.base",
    "Workload": "harness.workloads.base",
}

__all__ = [
    "AttentionFn", "AttentionLayout", "Bench", "CommonParams", "GradCalibration", "GradProbe",
    "HarnessError", "MethodSpec", "MetricInfo", "Point", "RayOptions", "RunContext", "RunData",
    "RunOptions", "RunSummary", "Suite", "VGGTMethod", "Workload", "__version__", "create_method", "load",
    "load_builtins", "load_suite", "param", "parse_suite", "profile_run", "register_method",
    "register_workload", "run_suite",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:  # what type checkers and the API reference see
    from harness.errors import HarnessError
    from harness.models.seam import AttentionFn, AttentionLayout, GradCalibration, GradProbe, VGGTMethod
    from harness.params import param
    from harness.registry import MethodSpec, create_method, load_builtins, register_method, register_workload
    from harness.run.options import RayOptions, RunOptions
    from harness.run.runner import profile_run, run_suite
    from harness.run.summary import RunSummary
    from harness.store import RunData, load
    from harness.suite import Suite, load_suite, parse_suite
    from harness.workloads.base import Bench, CommonParams, MetricInfo, Point, RunContext, Workload
