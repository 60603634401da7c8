"""The Ray executor (``harness run SUITE --executor ray``): the points of a suite run as Ray tasks
across the GPUs (or CPUs) of a Ray cluster; the driver stays the only writer of the run directory.

- The points left to run are grouped by model (``workload.model_key``) and a task runs a slice of
  one group in order, so a model is built once per task, as in the local runner. A group larger
  than its share is cut into slices so that every slot of the cluster has work (a sweep of one
  model over 8 GPUs builds it 8 times, once per GPU, and runs 8 slices at once). Each task asks Ray
  for ``gpus_per_point`` GPUs and ``cpus_per_point`` CPUs, so Ray never gives two running tasks the
  same GPU: one timed point per GPU at a time. Ray sets ``CUDA_VISIBLE_DEVICES`` for the task, so
  a point's ``device: cuda`` is its own GPU.
- A task is a generator: each finished point (its row, samples, operator rows, trace and snapshot
  files) streams back to the driver, which writes it the moment it arrives, with the same files
  and schema as the local runner. Resume by hash works the same way.
- A point that raises is a failed row, as locally. A task that dies (a worker crash, a lost node,
  Ray's OOM killer) fails the point it was running: that point is tried ``retries`` more times in
  a new task, then recorded as failed (``oom`` for an out-of-memory kill) with Ray's error, and
  the group's remaining points go on in a new task. Ctrl-C cancels the outstanding tasks; every
  row already written stays.
- Peaks for the efficiency columns are measured (or looked up) by the workers, on the machines
  that run the points, and recorded in ``env.json`` as they arrive. ``env.json``'s fingerprint
  describes the driver; every row records its own ``host``, ``gpu_name`` and ``gpu_uuid``.

Workers import the harness (and the modules of ``$HARNESS_PLUGINS``) themselves: on a cluster,
install the same harness on every node.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from harness import registry
from harness.errors import RunError
from harness.measure import markers
from harness.measure.efficiency import run_peaks
from harness.registry import PLUGINS_ENV
from harness.run.options import RayOptions
from harness.run.point_loop import PointLoop
from harness.run.points import hashable_key
from harness.run.rows import base_row
from harness.run.summary import RunSummary
from harness.store import PROFILES_DIR, atomic_write_bytes
from harness.store import columns as C
from harness.suite.loader import parse_recorded_suite

RAY_MISSING = (
    "--executor ray needs Ray, which is not installed here. Install the extra with "
    "pip install 'vit-accel-harness[ray]' (or pip install ray) on the driver and on every node of the "
    "cluster, or run without --executor ray (the local executor is the default)."
)


def require_ray() -> Any:
    """The ``ray`` module, or RunError in one paragraph when it is not installed (Ray is an optional
    dependency: the ``ray`` extra; importing it here, not at the top, keeps the harness usable without it)."""
    try:
        import ray
    except ImportError:
        raise RunError(RAY_MISSING) from None
    return ray


def group_points(points: Sequence[Any], model_key: Any, slots: int = 1) -> list[list[Any]]:
    """Task slices: points grouped by model (first appearance order, each group in the given order),
    groups longer than ceil(len(points) / slots) cut into consecutive slices of that length, so
    ``slots`` parallel workers all get work while each slice builds its model once."""
    groups: dict[Any, list[Any]] = {}
    for p in points:
        groups.setdefault(hashable_key(model_key(p)), []).append(p)
    size = max(1, -(-len(points) // max(1, slots)))
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]


def parallel_slots(resources: dict[str, float], gpus: float, cpus: float) -> int:
    """How many tasks the cluster runs at once: its GPUs / gpus_per_point (CPUs / cpus_per_point
    when the points hold no GPU)."""
    if gpus > 0:
        return max(1, int(resources.get("GPU", 0) // gpus))
    return max(1, int(resources.get("CPU", 1) // cpus)) if cpus > 0 else 1


# ------------------------------------------------------------------------------------ worker side


class MemoryWriter:
    """What a worker's runner loop would write, kept for the driver (which alone writes the run)."""

    def __init__(self, tmp: str) -> None:
        self.run_dir = Path(tmp)
        self.ops: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {}

    def trace_path(self, point_hash: str) -> Path:
        return self.run_dir / PROFILES_DIR / f"{point_hash}.trace.json.gz"

    def append_ops(self, rows: Any) -> None:
        self.ops.extend(rows)

    def update_metrics(self, metrics: dict[str, Any]) -> None:
        self.metrics.update(metrics)

    def take(self) -> dict[str, Any]:
        """Operator rows, new metrics.json entries and files (path relative to the run -> bytes)
        produced since the last call."""
        files = {}
        for path in sorted(p for p in self.run_dir.rglob("*") if p.is_file()):
            files[str(path.relative_to(self.run_dir))] = path.read_bytes()
            path.unlink()
        out = {"ops": self.ops, "metrics": self.metrics, "files": files}
        self.ops, self.metrics = [], {}
        return out


def run_group(resolved: dict[str, Any], preset: str | None, suite_hash: str, hashes: list[str], run_id: str,
              nvtx: bool, memory_snapshot: str | None) -> Iterator[dict[str, Any]]:
    """A Ray task: run the points ``hashes`` of the recorded suite in order, yielding one result per
    point (row, samples, operator rows, files, new metric entries, this worker's peaks)."""
    registry.load_builtins()
    suite = parse_recorded_suite(resolved, preset, "suite.resolved.yaml")
    if suite.hash != suite_hash:
        raise RuntimeError(f"this worker expands the suite to hash {suite.hash}, the driver to {suite_hash}: "
                           "install the same harness version on every node")
    by_hash = {p.hash: p for p in suite.points()}
    points = [by_hash[h] for h in hashes]
    peaks = run_peaks(dict.fromkeys((p.device, p.dtype, p.common.threads) for p in points))
    wl = registry.get_workload(suite.workload)()
    with tempfile.TemporaryDirectory(prefix="harness-ray-") as tmp, markers.enable(nvtx):
        writer = MemoryWriter(tmp)
        loop = PointLoop(suite, wl, writer, run_id, RunSummary(Path(tmp), run_id, len(points), 0),
                     peaks, memory_snapshot)
        try:
            for point in points:
                row, samples = loop.run_point(point)
                yield {"row": row, "samples": samples, "peaks": peaks, **writer.take()}
        finally:
            loop.drop_model()


# ------------------------------------------------------------------------------------ driver side


@dataclass
class _Job:
    """Points of one model group still to be received, in run order; attempts per point hash."""

    points: list[Any]
    attempts: dict[str, int] = field(default_factory=dict)


def _task_error(e: BaseException) -> tuple[str, str]:
    """(status, error text) of a task that died."""
    name = type(e).__name__
    lines = [s for s in str(e).strip().splitlines() if s.strip()]
    text = f"{name}: {lines[0] if lines else ''}".strip().rstrip(":")
    status = C.OOM if "OutOfMemory" in name or "out of memory" in str(e).lower() else C.FAILED
    return status, f"Ray task died: {text}"


def _runtime_env(local: bool) -> dict[str, Any]:
    env = {PLUGINS_ENV: os.environ.get(PLUGINS_ENV, "")}
    if local:  # workers on this machine see the driver's import path (an editable or source checkout)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return {"env_vars": env}


class RayDriver:
    """Submits the groups, streams results into the run directory, handles dead tasks and Ctrl-C."""

    def __init__(self, suite: Any, writer: Any, run_id: str, summary: Any, options: RayOptions, *,
                 nvtx: bool = False, memory_snapshot: str | None = None,
                 record_peaks: Any = None) -> None:
        self.suite = suite
        self.writer = writer
        self.run_id = run_id
        self.summary = summary
        self.options = options
        self.nvtx = nvtx
        self.memory_snapshot = memory_snapshot
        self.record_peaks = record_peaks
        self.peak_keys: set[str] = set()

    def run(self, todo: Sequence[Any], model_key: Any, progress: bool) -> None:
        """Run ``todo`` as Ray tasks (grouped by ``model_key``), recording each point as it arrives."""
        ray = require_ray()
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.options.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env=_runtime_env(self.options.address is None))
        gpus = self.options.gpus_per_point
        if gpus is None:
            gpus = 1.0 if any(str(p.device).startswith("cuda") for p in todo) else 0.0
        task = ray.remote(run_group).options(num_cpus=self.options.cpus_per_point, num_gpus=gpus,
                                             max_retries=0)
        slots = parallel_slots(ray.cluster_resources(), gpus, self.options.cpus_per_point)
        queue = deque(_Job(list(g)) for g in group_points(todo, model_key, slots))
        inflight: dict[Any, _Job] = {}
        bar = tqdm(total=len(todo), file=sys.stderr, disable=not progress, unit="pt", dynamic_ncols=True)
        try:
            while queue or inflight:
                limit = self.options.max_in_flight
                while queue and (limit is None or len(inflight) < limit):
                    job = queue.popleft()
                    hashes = [p.hash for p in job.points]
                    gen = task.remote(self.suite.resolved, self.suite.preset, self.suite.hash, hashes,
                                      self.run_id, self.nvtx, self.memory_snapshot)
                    inflight[gen] = job
                (gen,), _ = ray.wait(list(inflight), num_returns=1)
                job = inflight[gen]
                try:
                    ref = next(gen)
                except StopIteration:
                    del inflight[gen]
                    continue
                try:
                    result = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the task died: the point it ran fails, the rest go on
                    del inflight[gen]
                    self._task_died(job, e, queue, bar)
                    continue
                job.points.pop(0)
                self._record(result, bar)
        except KeyboardInterrupt:
            for gen in inflight:
                try:
                    ray.cancel(gen, force=True)
                except Exception:  # noqa: BLE001 - cancelling is best effort
                    pass
            raise
        finally:
            bar.close()
            if started:
                ray.shutdown()

    def _task_died(self, job: _Job, e: BaseException, queue: deque, bar: Any) -> None:
        culprit = job.points[0]
        job.attempts[culprit.hash] = job.attempts.get(culprit.hash, 0) + 1
        if job.attempts[culprit.hash] > self.options.retries:
            status, error = _task_error(e)
            row = base_row(self.run_id, self.suite.name, culprit, status, error)
            row.update({C.HOST: None, C.GPU_NAME: None, C.GPU_UUID: None})
            self._record({"row": row, "samples": [], "ops": [], "metrics": {}, "files": {}}, bar)
            job.points.pop(0)
        if job.points:
            queue.appendleft(_Job(job.points, job.attempts))

    def _record(self, result: dict[str, Any], bar: Any) -> None:
        """Write one point: its files, operator rows and metric entries, then its row (the commit)."""
        for rel, data in result.get("files", {}).items():
            path = self.writer.run_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        if result.get("metrics"):
            self.writer.update_metrics(result["metrics"])
        if result.get("ops"):
            self.writer.append_ops(result["ops"])
        new_peaks = {k: v for k, v in (result.get("peaks") or {}).items() if k not in self.peak_keys}
        if new_peaks and self.record_peaks is not None:
            self.peak_keys.update(new_peaks)
            self.record_peaks(new_peaks)
        row = result["row"]
        self.writer.append(row, result.get("samples", []))
        status = self.summary.record(row)
        if status != C.OK:
            bar.write(f"[{status}] {row.get(C.METHOD)} {row.get(C.HASH)}: {row.get(C.ERROR)}",
                      file=sys.stderr)
        bar.update(1)
