"""The point loop: runs points one by one in this process; owns the current model and the run context.

For each point (the model is rebuilt only when ``workload.model_key`` changes)::

    seeds <- point.seed (torch, random, numpy)
    model = workload.build_model(point)
    bench = workload.bench(model, point, ctx)      # one RunContext for the whole run
    with TelemetrySampler(device): m = Timer(suite.timing).measure(bench.fn, device)
    row = identity + params + timing + telemetry + bench.counters
          + bench.evaluate(m.output)               # when metrics.evaluate
          + bd_<phase>_ms from bench.breakdown()   # when metrics.breakdown

A point that raises is recorded as ``failed``, an out-of-memory error as ``oom`` (caches freed),
a NaN/Inf in the output or a measured metric as ``nan``; the loop goes on with the next point.
The local runner and each Ray task use the same loop.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections.abc import Hashable
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from harness.measure import cpu_alloc, markers
from harness.measure.efficiency import efficiency_columns, efficiency_metric_info, peak_for
from harness.measure.env import placement
from harness.measure.load import LoadWindow
from harness.measure.memory import MemorySnapshots
from harness.measure.profiling import profile_callable
from harness.measure.telemetry import TelemetrySampler
from harness.measure.timing import Timer, summarize
from harness.run.points import hashable_key
from harness.run.rows import base_row, error_text, is_oom, nonfinite_metrics, nonfinite_tensors
from harness.run.summary import RunSummary
from harness.store import PROFILES_DIR
from harness.store import columns as C
from harness.suite import Suite
from harness.workloads.base import Bench, Point, RunContext, Workload


class PointWriter(Protocol):
    """Where the loop puts what it measures: a run directory's :class:`~harness.store.RunWriter`, or
    a Ray worker's in-memory stand-in that the driver writes."""

    run_dir: Any

    def append(self, row: dict[str, Any], samples: Any = ()) -> None: ...
    def trace_path(self, point_hash: str) -> Any: ...
    def append_ops(self, rows: Any) -> None: ...
    def update_metrics(self, metrics: dict[str, Any]) -> None: ...


def seed_everything(seed: int) -> None:
    """Seed torch, random and numpy (what makes a point's inputs and weights reproducible)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def free_caches(device: str) -> None:
    """Return memory after dropping a model or an OOM. On CPU, reference counting already freed
    the tensors (a full gc.collect costs ~0.5 s with torch and pandas loaded, so it is skipped)."""
    if not device.startswith("cuda"):
        return
    gc.collect()
    try:
        torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing caches is best effort
        pass


class PointLoop:
    """Runs points one by one; owns the current model and the run context."""

    def __init__(self, suite: Suite, wl: Workload, writer: PointWriter, run_id: str, summary: RunSummary,
                 peaks: dict[str, Any] | None = None, memory_snapshot: str | None = None):
        self.suite = suite
        self.wl = wl
        self.writer = writer
        self.run_id = run_id
        self.summary = summary
        self.ctx = RunContext(breakdown=suite.metrics.breakdown)
        self._set_reference()
        self.model: Any = None
        self.model_key: Hashable | None = None
        self.build_error: str | None = None
        self.has_model = False
        self.model_device = "cpu"
        self.known_metrics = set(wl.metrics())
        self.peaks = peaks
        self.snapshots = MemorySnapshots(memory_snapshot, writer.run_dir / PROFILES_DIR)

    def _set_reference(self) -> None:
        ref = self.suite.reference
        if ref is None:
            return
        self.ctx.reference_method = ref
        first = next((p for p in self.suite.points() if p.method == ref), None)
        if first is not None:
            self.ctx.reference_params = first.method_params

    def run(self, todo: list[Point], progress: bool) -> None:
        bar = tqdm(total=len(todo), file=sys.stderr, disable=not progress, unit="pt", dynamic_ncols=True)
        try:
            for point in todo:
                bar.set_postfix_str(f"{point.method} {point.hash}", refresh=False)
                if cpu_alloc.current() == "retain":
                    cpu_alloc.trim()  # each point starts without the previous point's retained memory
                row, samples = self.run_point(point)
                self.writer.append(row, samples)
                status = self.summary.record(row)
                if status != C.OK and progress:
                    bar.write(f"[{status}] {point.method} {point.hash}: {row.get(C.ERROR)}", file=sys.stderr)
                bar.update(1)
        finally:
            bar.close()
            self.drop_model()

    def drop_model(self) -> None:
        if self.has_model:
            self.model = None
            self.has_model = False
            self.model_key = None
            free_caches(self.model_device)

    def ensure_model(self, point: Point) -> Any:
        key = hashable_key(self.wl.model_key(point))
        if self.model_key == key:
            if self.build_error is not None:
                raise BuildFailed(self.build_error)
            return self.model
        self.drop_model()
        self.build_error = None
        self.model_key = key
        self.model_device = point.device
        seed_everything(point.seed)
        try:
            self.model = self.wl.build_model(point)
        except (Exception, SystemExit) as e:
            if is_oom(e):
                raise
            self.build_error = "model build failed: " + error_text(e)
            raise BuildFailed(self.build_error) from e
        self.has_model = True
        return self.model

    def run_point(self, point: Point) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        row = base_row(self.run_id, self.suite.name, point)
        row.update(placement(point.device))
        samples: list[dict[str, Any]] = []
        t0, cpu0 = time.perf_counter(), time.process_time()
        load = LoadWindow()
        load.start()
        self.snapshots.start(point.device)
        try:
            with markers.mark(f"point {point.method} {point.hash}"):
                samples = self.measure(point, row)
        except BuildFailed as e:
            row[C.STATUS], row[C.ERROR] = C.FAILED, str(e)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - every failure (a method's sys.exit too) is a row
            if is_oom(e):
                row[C.STATUS] = C.OOM
                if self.model_key is not None and self.build_error is None and not self.has_model:
                    self.model_key = None  # an OOM during build: retry the build for the next point
            else:
                row[C.STATUS] = C.FAILED
            row[C.ERROR] = error_text(e)
            e.__traceback__ = None
            del e
            if row[C.STATUS] == C.OOM:
                self._snapshot(point, row, oom=True)  # before the caches are freed
                gc.collect()
            free_caches(point.device)
        self._snapshot(point, row, oom=False)
        row[C.ELAPSED_S] = time.perf_counter() - t0
        row.update(load.columns(time.process_time() - cpu0))  # the machine's load over the whole point
        return row, samples

    def _snapshot(self, point: Point, row: dict[str, Any], oom: bool) -> None:
        """Stop the point's allocator history; record where its snapshot went, if one was written."""
        path = self.snapshots.finish(point.hash, oom)
        if path is not None:
            row[C.MEMORY_SNAPSHOT] = str(path.relative_to(self.writer.run_dir))

    def prepare(self, point: Point) -> Bench:
        """The point's threads, model (built or reused) and seeded bench."""
        if point.common.threads > 0:
            torch.set_num_threads(point.common.threads)
        model = self.ensure_model(point)
        seed_everything(point.seed)
        return self.wl.bench(model, point, self.ctx)

    def profile(self, point: Point, bench: Bench) -> None:
        """The profiled pass: a trace in profiles/ and the point's rows of the operator table."""
        self.writer.append_ops(
            profile_callable(bench.fn, point.device, self.writer.trace_path(point.hash), point.hash))

    def measure(self, point: Point, row: dict[str, Any]) -> list[dict[str, Any]]:
        bench = self.prepare(point)
        timer = Timer(self.suite.timing)
        with torch.no_grad():
            sampler = TelemetrySampler(point.device)
            with sampler, markers.mark("timed"):
                m = timer.measure(bench.fn, device=point.device)
            row.update(summarize(m))
            row.update(sampler.summary())
            row.update(bench.counters)
            row.update(bench.info)
            output = m.output
            bad_output = nonfinite_tensors(output)
            if self.suite.metrics.evaluate and bench.evaluate is not None:
                with markers.mark("evaluate"):
                    row.update(bench.evaluate(output))
            phase_work = None
            if self.suite.metrics.breakdown and bench.breakdown is not None:
                with markers.mark("breakdown"):
                    phases = bench.breakdown()
                row.update(self._breakdown_columns(phases))
                phase_work = {f"{C.WORK_PREFIX}{k}": v for k, v in getattr(phases, "counters", {}).items()}
            peak = peak_for(self.peaks, point.device, point.dtype, point.common.threads)
            # counted points have no efficiency: their times are wall times under valgrind
            eff = {} if m.instructions else efficiency_columns(row, peak, phase_work or None)
            self._note_metrics({k: efficiency_metric_info(k) for k in eff})
            row.update(eff)
            if self.suite.metrics.profile:  # after the timed samples, never between them
                with markers.mark("profile"):
                    self.profile(point, bench)
        del output, bench
        bad_metrics = nonfinite_metrics(row)
        if bad_output or bad_metrics:
            row[C.STATUS] = C.NAN
            what = ([f"{bad_output} holds NaN/Inf"] if bad_output else []) + (
                [f"non-finite {', '.join(bad_metrics)}"] if bad_metrics else []
            )
            row[C.ERROR] = "; ".join(what)
        counted = [{C.INSTRUCTIONS: n} for n in m.instructions] or [{}] * len(m.device_ms)
        return [
            {C.RUN_ID: self.run_id, C.HASH: point.hash, C.SAMPLE: i, C.DEVICE_MS: d, C.HOST_MS: h, **n}
            for i, (d, h, n) in enumerate(zip(m.device_ms, m.host_ms, counted))
        ]

    def _breakdown_columns(self, phases: dict[str, float]) -> dict[str, float]:
        """``bd_<phase>_ms`` (and on CUDA ``bd_<phase>_peak_mb``) of a breakdown pass; new columns
        get their metrics.json entries."""
        def info(help: str, unit: str) -> dict[str, Any]:
            return {"kind": "breakdown", "help": help, "higher_is_better": False, "unit": unit,
                    "tolerance": None}

        cols: dict[str, float] = {}
        infos: dict[str, dict[str, Any] | None] = {}
        for k, v in phases.items():
            cols[f"{C.BREAKDOWN_PREFIX}{k}_ms"] = float(v)
            infos[f"{C.BREAKDOWN_PREFIX}{k}_ms"] = info(f"time of phase {k!r} in one breakdown run", "ms")
        for k, v in getattr(phases, "peak_mb", {}).items():
            cols[f"{C.BREAKDOWN_PREFIX}{k}_peak_mb"] = float(v)
            infos[f"{C.BREAKDOWN_PREFIX}{k}_peak_mb"] = info(
                f"CUDA allocator peak inside phase {k!r} (breakdown run)", "MiB")
        self._note_metrics(infos)
        return cols

    def _note_metrics(self, infos: dict[str, dict[str, Any] | None]) -> None:
        """Add the metrics.json entries of columns first produced by this point."""
        new = {k: v for k, v in infos.items() if v is not None and k not in self.known_metrics}
        if new:
            self.known_metrics.update(new)
            self.writer.update_metrics(new)


class BuildFailed(Exception):
    """The point's model could not be built (recorded as failed; not retried for its group)."""
