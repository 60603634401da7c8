"""Running out of memory on the CPU is status ``oom`` like on CUDA, not ``failed``: torch's CPU allocator
raises a RuntimeError ("DefaultCPUAllocator: can't allocate memory"), Python a MemoryError."""

from __future__ import annotations

import pytest

from harness.run.options import RunOptions
from harness.run.runner import run_suite
from harness.store import columns as C
from harness.store import load
from harness.suite import parse_suite

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = "timing: {warmup_n: 0, min_samples: 2, max_samples: 2, budget_s: 0.01}\n"
CPU_ALLOC = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
             "tried to allocate 4611686018427387904 bytes. Error code 12 (Cannot allocate memory)")
# size -> what the fake workload raises
ERRORS = {
    2: RuntimeError(CPU_ALLOC),
    3: MemoryError(),
    5: RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1099511627776 bytes."),
    6: RuntimeError("shapes do not match"),
}


def test_cpu_allocation_failures_are_oom_and_other_errors_failed(tmp_path, fake_workload, monkeypatch):
    real_bench = fake_workload.bench

    def bench(self, model, point, ctx):
        size = point.workload_params.size
        if size in ERRORS:
            raise ERRORS[size]
        return real_bench(self, model, point, ctx)

    monkeypatch.setattr(fake_workload, "bench", bench)
    text = "name: f\nworkload: fake\nsweep: {size: [2, 3, 4, 5, 6]}\nmethods: {plain: {}}\n" + FAST
    suite = parse_suite(text, source="f.yaml")
    summary = run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    pts = load(tmp_path / "run").points.set_index("size")
    assert pts[C.STATUS].to_dict() == {2: C.OOM, 3: C.OOM, 4: C.OK, 5: C.OOM, 6: C.FAILED}
    assert "DefaultCPUAllocator: can't allocate memory" in pts.loc[2, C.ERROR]
    assert pts.loc[3, C.ERROR].startswith("MemoryError")
    assert summary.counts == {C.OOM: 3, C.OK: 1, C.FAILED: 1}


def test_a_cpu_allocation_failure_while_building_the_model_is_oom(tmp_path, fake_workload, monkeypatch):
    def build_model(self, point):
        raise RuntimeError(CPU_ALLOC)

    monkeypatch.setattr(fake_workload, "build_model", build_model)
    suite = parse_suite(f"name: f\nworkload: fake\nmethods: {{plain: {{}}}}\n{FAST}", source="f.yaml")
    run_suite(suite, tmp_path / "run", RunOptions(progress=False))
    (status,) = load(tmp_path / "run").points[C.STATUS]
    assert status == C.OOM
