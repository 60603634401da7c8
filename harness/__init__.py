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
"""

from harness.errors import HarnessError
from harness.models.seam import AttentionFn, AttentionLayout
from harness.params import param
from harness.registry import MethodSpec, create_method, load_builtins, register_method, register_workload
from harness.run.options import RayOptions, RunOptions
from harness.run.runner import profile_run, run_suite
from harness.run.summary import RunSummary
from harness.store import RunData, load
from harness.suite import Suite, load_suite, parse_suite
from harness.version import __version__
from harness.workloads.base import Bench, CommonParams, MetricInfo, Point, RunContext, Workload

__all__ = [
    "AttentionFn", "AttentionLayout", "Bench", "CommonParams", "HarnessError", "MethodSpec", "MetricInfo",
    "Point", "RayOptions", "RunContext", "RunData", "RunOptions", "RunSummary", "Suite", "Workload",
    "__version__", "create_method", "load", "load_builtins", "load_suite", "param", "parse_suite",
    "profile_run", "register_method", "register_workload", "run_suite",
]
