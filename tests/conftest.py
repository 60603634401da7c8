"""Shared fixtures: a scripted fake workload for the engine tests, registry isolation, one thread."""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

if not torch.cuda.is_available():
    # Triton's kernels run in its CPU interpreter here (tests/methods/test_triton_kernels.py). Triton picks
    # the interpreter when triton.language is imported, so this precedes any import of Triton.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from harness import registry
from harness.cli.app import main
from harness.params import param
from harness.registry import MethodSpec
from harness.workloads.base import Bench, MetricInfo, Point, RunContext, Workload


@dataclass(frozen=True)
class FakeParams:
    size: int = param(4, "number of elements", range=(1, 1000))
    scale: float = param(1.0, "output multiplier", range=(0.0, 10.0))
    mode: str = param(
        "ok", "what bench() does", choices=("ok", "raise", "nan", "nan_metric", "oom", "interrupt")
    )
    ckpt: str | None = param(None, "checkpoint file that must exist")


@dataclass(frozen=True)
class PlainParams:
    """No knobs."""


@dataclass(frozen=True)
class KnobParams:
    level: int = param(1, "a discrete knob", range=(0, 5))
    ratio: float = param(0.5, "a fraction", range=(0.0, 1.0))


class FakeWorkload(Workload):
    """Elementwise scaling of a seeded random vector; ``mode`` scripts failures.

    ``builds`` records every build_model call; ``interrupt_after`` raises KeyboardInterrupt
    in bench() once that many benches have run (then resets itself).
    """

    name = "fake"
    Params = FakeParams
    builds: ClassVar[list[Any]] = []
    benches: ClassVar[int] = 0
    interrupt_after: ClassVar[int | None] = None

    def model_key(self, point: Point) -> tuple[Any, ...]:
        return ("fake", point.workload_params.size, point.seed, point.device)

    def build_model(self, point: Point) -> torch.Tensor:
        FakeWorkload.builds.append(point.workload_params)
        return torch.rand(point.workload_params.size)

    def bench(self, model: torch.Tensor, point: Point, ctx: RunContext) -> Bench:
        p: FakeParams = point.workload_params
        if FakeWorkload.interrupt_after is not None and FakeWorkload.benches >= FakeWorkload.interrupt_after:
            FakeWorkload.interrupt_after = None
            raise KeyboardInterrupt
        FakeWorkload.benches += 1
        if p.mode == "raise":
            raise ValueError(f"boom at size {p.size}")
        if p.mode == "oom":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        level = getattr(point.method_params, "level", 0)

        def fn() -> torch.Tensor:
            out = model * p.scale + level
            return out * math.nan if p.mode == "nan" else out

        def evaluate(out: torch.Tensor) -> dict[str, float]:
            return {"q_sum": math.nan if p.mode == "nan_metric" else float(out.sum())}

        return Bench(fn=fn, evaluate=evaluate, counters={"work_elems": float(p.size)},
                     breakdown=lambda: {"scale": 0.5, "add": 0.25})

    def metrics(self) -> dict[str, MetricInfo]:
        return {"q_sum": MetricInfo("quality", "sum of the output", higher_is_better=None),
                "work_elems": MetricInfo("work", "elements", unit="")}

    def check_paths(self, params: FakeParams) -> list[str]:
        if params.ckpt is not None and not Path(params.ckpt).exists():
            return [f"ckpt: checkpoint file {params.ckpt!r} does not exist"]
        return []


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """Registrations made inside a test are undone afterwards."""
    registry.load_builtins()
    workloads, methods, replaced = dict(registry._WORKLOADS), dict(registry._METHODS), set(registry._REPLACED)
    yield
    registry._WORKLOADS.clear()
    registry._WORKLOADS.update(workloads)
    registry._METHODS.clear()
    registry._METHODS.update(methods)
    registry._REPLACED.clear()
    registry._REPLACED.update(replaced)


@pytest.fixture
def fake_workload(clean_registry: None) -> type[FakeWorkload]:
    """Registers the ``fake`` workload with methods ``plain`` and ``knob``."""
    FakeWorkload.builds = []
    FakeWorkload.benches = 0
    FakeWorkload.interrupt_after = None
    registry.register_workload(FakeWorkload)
    registry.register_method(MethodSpec("plain", PlainParams, lambda p: None, ("fake",)))
    registry.register_method(MethodSpec("knob", KnobParams, lambda p: None, ("fake",)))
    return FakeWorkload


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread: the shared CI/dev CPUs make multi-threaded tiny ops crawl."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


FAST_TIMING = "timing: {warmup_n: 0, min_samples: 2, max_samples: 3, budget_s: 0.01}\n"


HAVE_VALGRIND = shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None
COUNTED_SUITE = """name: counted
workload: attention
fixed: {batch: 1, head_dim: 64, seq_len: 128, device: cpu, threads: 1}
sweep: {heads: [20, 21]}
methods: {sdpa: {}}
timing: {mode: instructions, warmup_n: 1, min_samples: 6, max_samples: 6}
"""


@dataclass
class CountedRun:
    """What :func:`real_counted_run` left: the run folder, the temporary folder the dumps went to,
    and ``harness run``'s exit code and error output."""

    out: Path
    dumps_dir: Path
    exit_code: int
    stderr: str


@pytest.fixture(scope="session")
def real_counted_run(tmp_path_factory: pytest.TempPathFactory) -> CountedRun:
    """One ``harness run`` in instructions mode, really under valgrind (importing torch there takes a
    minute or two, so the tests of counted runs share it; skipped without valgrind): SDPA with 20 and
    21 heads (5 % more work), 6 counted calls each."""
    if not HAVE_VALGRIND:
        pytest.skip("valgrind (with callgrind_control) is not installed")
    root = tmp_path_factory.mktemp("counted")
    dumps = root / "tmp"
    dumps.mkdir()
    suite = root / "counted.yaml"
    suite.write_text(COUNTED_SUITE)
    before, tempfile.tempdir = tempfile.tempdir, str(dumps)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = main(["run", str(suite), "--out", str(root / "run"), "-q"])
    finally:
        tempfile.tempdir = before
    return CountedRun(root / "run", dumps, code, err.getvalue())
