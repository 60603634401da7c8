"""Executes the points of a suite into a run directory; resumable; failures never stop the sweep.

For each point (grouped so that points sharing ``workload.model_key`` reuse one model, and at
most one model is alive at a time)::

    seeds <- point.seed (torch, random, numpy)
    model = workload.build_model(point)            # only when the model key changes
    bench = workload.bench(model, point, ctx)      # one RunContext for the whole run
    with TelemetrySampler(device): m = Timer(suite.timing).measure(bench.fn, device)
    row = identity + params + timing + telemetry + bench.counters
          + bench.evaluate(m.output)               # when metrics.evaluate
          + bd_<phase>_ms from bench.breakdown()   # when metrics.breakdown

A point that raises is recorded as ``failed`` (error: ``Type: message (file:line in func)``),
an out-of-memory error as ``oom`` (caches freed), a NaN/Inf in the output or any measured
metric as ``nan``. Every row is appended to the run directory the moment its point finishes,
so a killed run can be resumed: ``resume=True`` skips points already recorded.

Orders: ``grid`` (suite order, grouped by model key), ``interleave`` (within each model
group, methods take turns), ``shuffle`` (a permutation seeded by the suite hash, so a resumed
run keeps its order).
"""

from __future__ import annotations

import datetime as _dt
import gc
import hashlib
import math
import os
import random
import sys
import time
import traceback
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import __version__, registry
from harness.measure import cpu_alloc, markers
from harness.measure.efficiency import (
    PEAKS_KEY,
    efficiency_columns,
    efficiency_metric_info,
    peak_for,
    run_peaks,
)
from harness.measure.env import comparable, fingerprint, placement
from harness.measure.memory import MemorySnapshots
from harness.measure.profiling import profile_callable
from harness.measure.telemetry import TelemetrySampler
from harness.measure.timing import Timer, summarize
from harness.store import columns as C
from harness.store.results import (
    ENV_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    OPS_FILE,
    POINTS_LOG,
    PROFILES_DIR,
    SUITE_FILE,
    RunDirError,
    RunLock,
    RunWriter,
    in_use_message,
    is_run_dir,
    lock_holder,
    note_resume,
    read_env,
    read_manifest,
    write_json,
)
from harness.suite import Suite, SuiteError
from harness.workloads.base import Bench, Point, RunContext, Workload

ORDERS = ("grid", "shuffle", "interleave")
EXECUTORS = ("local", "ray")
_MEASURED_TIMING = (C.LAT_MEDIAN, C.LAT_MEAN, C.LAT_IQR, C.LAT_P10, C.LAT_P90, C.LAT_MIN, C.LAT_MAX,
                    C.HOST_MEDIAN)


class RunError(ValueError):
    """A run that cannot start (unwritable output, resume into another suite's run, ...)."""


@dataclass
class RunSummary:
    """What a run did. ``counts`` maps status -> number of points run now (skipped excluded)."""

    run_dir: Path
    run_id: str
    total: int
    skipped: int
    counts: dict[str, int] = field(default_factory=dict)
    allow_failures: bool = False
    #: what resuming repaired in the run directory (torn log tails, orphan samples)
    notes: list[str] = field(default_factory=list)
    #: points left for a later resume (``max_points``)
    left: int = 0

    @property
    def ran(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> int:
        return self.counts.get(C.OK, 0)

    @property
    def not_ok(self) -> int:
        """Points recorded as failed, oom or nan in this invocation."""
        return self.ran - self.ok

    @property
    def exit_code(self) -> int:
        """0 when every point was ok (or failures are allowed), else 1."""
        return 0 if self.allow_failures or self.not_ok == 0 else 1

    def line(self) -> str:
        parts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "nothing to run"
        skip = f" ({self.skipped} already recorded, skipped)" if self.skipped else ""
        left = f"; {self.left} left for --resume {self.run_dir}" if self.left else ""
        return f"{self.ran}/{self.total} points run: {parts}{skip}{left}. Results: {self.run_dir}"


# ---------------------------------------------------------------- seams to the sibling modules
# (module-level so tests can substitute them; each imports lazily)


# ---------------------------------------------------------------- helpers


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def seed_everything(seed: int) -> None:
    """Seed torch, random and numpy (what makes a point's inputs and weights reproducible)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _free_caches(device: str) -> None:
    """Return memory after dropping a model or an OOM. On CPU, reference counting already freed
    the tensors (a full gc.collect costs ~0.5 s with torch and pandas loaded, so it is skipped)."""
    if not device.startswith("cuda"):
        return
    gc.collect()
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing caches is best effort
        pass


def _is_oom(e: BaseException) -> bool:
    """Whether ``e`` is running out of memory, on the accelerator or on the CPU: a torch
    ``OutOfMemoryError``, a ``MemoryError``, or a ``RuntimeError`` worded as an allocation failure
    (e.g. "[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory")."""
    oom_messages = (
        "out of memory",  # CUDA (and other accelerators)
        "can't allocate memory",  # torch's DefaultCPUAllocator
        "cannot allocate memory",  # ENOMEM (errno 12) in an allocator's or the OS's words
        "not enough memory",  # torch's CPU allocator on Windows, oneDNN / MKL
        "failed to allocate memory",
    )
    if isinstance(e, MemoryError):
        return True
    try:
        import torch

        oom_type = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
        if isinstance(e, oom_type):
            return True
    except ImportError:
        pass
    return isinstance(e, RuntimeError) and any(m in str(e).lower() for m in oom_messages)


def error_text(e: BaseException) -> str:
    """``Type: message (file:line in function)`` with the innermost traceback frame."""
    msg = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ").rstrip()
    if len(msg) > 1:
        text += " ..."
    tb = traceback.extract_tb(e.__traceback__)
    if tb:
        last = tb[-1]
        text += f" (at {last.filename}:{last.lineno} in {last.name})"
    return text


def _nonfinite_tensors(out: Any, path: str = "output") -> str | None:
    """Name of the first output tensor holding NaN/Inf, or None."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    if isinstance(out, torch.Tensor):
        if out.is_floating_point() or out.is_complex():
            if not bool(torch.isfinite(out).all()):
                return path
        return None
    if isinstance(out, dict):
        for k, v in out.items():
            bad = _nonfinite_tensors(v, f"{path}[{k!r}]")
            if bad:
                return bad
    elif isinstance(out, (list, tuple)):
        for i, v in enumerate(out):
            bad = _nonfinite_tensors(v, f"{path}[{i}]")
            if bad:
                return bad
    return None


def _nonfinite_metrics(row: dict[str, Any]) -> list[str]:
    bad = []
    for k, v in row.items():
        if k in _MEASURED_TIMING or k.startswith(C.METRIC_PREFIXES):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
                bad.append(k)
    return bad


def order_points(points: Sequence[Point], model_key: Any, order: str, seed_text: str) -> list[Point]:
    """Points in run order. ``model_key(point)`` groups points that share a model; inside a model
    group, points with equal workload parameters (same inputs) are adjacent."""
    if order not in ORDERS:
        raise RunError(f"unknown order {order!r}; allowed: {', '.join(ORDERS)}")
    if order == "shuffle":
        out = list(points)
        random.Random(int(hashlib.sha256(seed_text.encode()).hexdigest()[:16], 16)).shuffle(out)
        return out
    # two levels: points sharing a model run together (each model is built once), and inside
    # that, points sharing the workload-level config (the same inputs and reference output)
    by_model: OrderedDict[Hashable, OrderedDict[Hashable, list[Point]]] = OrderedDict()
    for p in points:
        inputs = _hashable((p.workload_params, p.common))
        by_model.setdefault(_hashable(model_key(p)), OrderedDict()).setdefault(inputs, []).append(p)
    groups = [g for inner in by_model.values() for g in inner.values()]
    out = []
    for group in groups:
        if order == "grid":
            out.extend(group)
            continue
        by_method: OrderedDict[str, list[Point]] = OrderedDict()
        for p in group:
            by_method.setdefault(p.method, []).append(p)
        queues = list(by_method.values())
        i = 0
        while any(queues):
            q = queues[i % len(queues)]
            if q:
                out.append(q.pop(0))
            i += 1
    return out


def shard_points(points: Sequence[Point], model_key: Any, seed_text: str, index: int,
                 count: int) -> list[Point]:
    """Shard ``index`` of ``count``: a contiguous slice of the points grouped by model (points sharing
    a model stay together; at most the points at a cut build their model twice), starting from the
    points sorted by hash, so the split depends on the set of points only: the same suite gives the
    same shards on every machine, whatever ``--order`` each shard runs in. The shards are disjoint,
    differ in size by at most one point, and together hold every point. Raises RunError for an
    invalid pair."""
    if not (count >= 1 and 0 <= index < count):
        raise RunError(f"--shard {index}/{count}: need 0 <= i < n (shards are numbered 0 .. n-1)")
    grid = order_points(sorted(points, key=lambda p: p.hash), model_key, "grid", seed_text)
    return grid[index * len(grid) // count:(index + 1) * len(grid) // count]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n); raises ValueError saying the expected form."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError("expected I/N, e.g. 0/4 (shard I of N, numbered from 0)") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError("need 0 <= I < N (shards are numbered 0 .. N-1)")
    return i, n


def _hashable(key: Any) -> Hashable:
    try:
        hash(key)
        return key
    except TypeError:
        return repr(key)


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunError(
            f"cannot write the run directory {out_dir}: {e.strerror or e} ({type(e).__name__}). "
            "Choose a writable location with --out DIR."
        ) from None


def add_peaks(run_dir: Path, new: dict[str, Any]) -> None:
    """Record peaks measured during the run (by Ray workers) in env.json; known keys stay."""
    env = read_env(run_dir)
    peaks = env.setdefault(PEAKS_KEY, {})
    for k, v in new.items():
        peaks.setdefault(k, v)
    write_json(run_dir / ENV_FILE, env)


def _peak_settings(points: Sequence[Point]) -> list[tuple[str, str, int]]:
    """The distinct (device, dtype, threads) the points run with: what the peaks are measured for."""
    return list(dict.fromkeys((p.device, p.dtype, p.common.threads) for p in points))


def _common_seed(points: Sequence[Point]) -> int | None:
    seeds = {p.seed for p in points}
    return seeds.pop() if len(seeds) == 1 else None


# ---------------------------------------------------------------- the runner


def run_suite(
    suite: Suite,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    order: str = "grid",
    allow_failures: bool = False,
    progress: bool = True,
    argv: list[str] | None = None,
    allow_env_mismatch: bool = False,
    max_points: int | None = None,
    nvtx: bool = False,
    memory_snapshot: str | None = None,
    shard: tuple[int, int] | None = None,
    executor: str = "local",
    ray_options: Any = None,
    cpu_allocator: str = "system",
) -> RunSummary:
    """Run every point of ``suite`` into ``out_dir`` (a new run directory, or one to resume).

    Raises RunError before running anything when the directory is unwritable, in use by another
    process, already holds a run or other files (without ``resume``), holds another suite's run
    or was started on a different machine (with ``resume``, unless ``allow_env_mismatch``), or a
    point needs a device this machine lacks. The directory is locked while the run writes.
    ``max_points``: run at most this many of the missing points, leaving the rest to a later
    ``resume`` (two revisions' runs can so alternate in short slices on one machine).
    ``nvtx``: NVTX ranges and the CUDA profiler capture window (:mod:`harness.measure.markers`);
    ``memory_snapshot``: "oom" or "all", CUDA allocator snapshots (:mod:`harness.measure.memory`).
    ``cpu_allocator``: "system" or "retain" (:mod:`harness.measure.cpu_alloc`; local executor only).
    ``shard``: (i, n) runs only shard i of n (:func:`shard_points`); merge the shards' run
    directories with ``harness merge``. ``executor``: "local" (this process) or "ray" (Ray tasks,
    :mod:`harness.run.ray_executor`, placed by ``ray_options``).
    """
    out = Path(out_dir)
    argv = list(sys.argv if argv is None else argv)
    wl: Workload = registry.get_workload(suite.workload)()
    all_points = suite.points()
    points = shard_points(all_points, wl.model_key, suite.hash, *shard) if shard else all_points
    ordered = order_points(points, wl.model_key, order, suite.hash)
    if executor not in EXECUTORS:
        raise RunError(f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if executor == "ray":
        from harness.run.ray_executor import require_ray

        require_ray()  # before anything is written
    else:
        _check_devices(points)  # Ray workers have the GPUs; the driver need not
    _check_kernels(points)
    _check_memory_snapshot(points, memory_snapshot)
    _apply_cpu_allocator(cpu_allocator, executor)

    if not resume:
        _check_new_run_dir(out)
        _check_writable(out)
    lock = _lock(out)
    try:
        notes: list[str] = []
        if resume:
            writer, run_id, notes = _open_for_resume(out, suite, argv, points, allow_env_mismatch, shard)
            done = writer.finished_hashes()
        else:
            run_id = f"{suite.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
            manifest = {
                "run_id": run_id,
                "suite": suite.name,
                "suite_hash": suite.hash,
                "suite_source": suite.source,
                "preset": suite.preset,
                "argv": argv,
                "created_at": _now(),
                "harness_version": __version__,
                "order": order,
                "allow_failures": allow_failures,
                "n_points": len(points),
                "suite_points": len(all_points),
                "shard": f"{shard[0]}/{shard[1]}" if shard else None,
            }
            env = fingerprint(argv=argv, seed=_common_seed(points))
            # Ray workers measure the peaks of their own machines and send them with their rows
            env[PEAKS_KEY] = run_peaks(_peak_settings(points)) if executor == "local" else {}
            metrics = {k: asdict(v) for k, v in wl.metrics().items()}
            writer = RunWriter.create(out, manifest, suite.resolved, env, metrics)
            done = set()

        # a resumed run keeps the peaks it started with (a run from before peaks were recorded: measured now)
        peaks = read_env(out).get(PEAKS_KEY) if resume else env[PEAKS_KEY]
        if executor == "local":
            peaks = peaks or run_peaks(_peak_settings(points))
        todo = [p for p in ordered if p.hash not in done]
        left = max(0, len(todo) - max_points) if max_points is not None else 0
        summary = RunSummary(
            run_dir=out, run_id=run_id, total=len(points), skipped=len(points) - len(todo),
            allow_failures=allow_failures, notes=notes, left=left,
        )
        todo = todo[: len(todo) - left]
        try:
            if executor == "ray":
                from harness.run.ray_executor import RayDriver, RayOptions

                RayDriver(suite, writer, run_id, summary, ray_options or RayOptions(), nvtx=nvtx,
                          memory_snapshot=memory_snapshot,
                          record_peaks=lambda new: add_peaks(out, new)).run(todo, wl.model_key, progress)
            else:
                with markers.enable(nvtx):
                    _Loop(suite, wl, writer, run_id, summary, peaks, memory_snapshot).run(todo, progress)
        finally:
            writer.flush_tables()
    finally:
        lock.release()
    return summary


@dataclass
class ProfileSummary:
    """What ``harness profile`` did: the points profiled, and ``failed`` ({hash: error})."""

    run_dir: Path
    profiled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def line(self) -> str:
        where = (f"traces in {self.run_dir / PROFILES_DIR}/, operator table {self.run_dir / OPS_FILE}; "
                 f"read it with: harness report {self.run_dir} --ops")
        failed = f"; {len(self.failed)} failed" if self.failed else ""
        return f"profiled {len(self.profiled)} point(s){failed}: {where}"


def select_points(points: Sequence[Point], recorded: set[str], hashes: Sequence[str] = (),
                  methods: Sequence[str] = ()) -> list[Point]:
    """The recorded points chosen by hash (a unique prefix is enough) and/or method; all recorded
    points when neither is given. Raises RunError naming what is unknown and what exists."""
    pool = [p for p in points if p.hash in recorded]
    known_methods = list(dict.fromkeys(p.method for p in pool))
    bad = [m for m in methods if m not in known_methods]
    if bad:
        raise RunError(f"--method {bad[0]!r} has no recorded point in this run; "
                       f"methods: {', '.join(known_methods)}")
    chosen = [p for p in pool if not methods or p.method in methods]
    if hashes:
        picked = []
        for h in hashes:
            hits = [p for p in pool if p.hash.startswith(h)]
            if len(hits) != 1:
                shown = ", ".join(f"{p.hash} ({p.method})" for p in pool[:6])
                shown += ", ..." if len(pool) > 6 else ""
                what = "no recorded point" if not hits else f"{len(hits)} recorded points"
                raise RunError(f"--point {h!r} matches {what} of this run; points: {shown} "
                               "(`harness report RUN` lists them all)")
            picked.append(hits[0])
        chosen = [p for p in chosen if p in picked]
    return chosen


def profile_run(run_dir: str | os.PathLike, *, hashes: Sequence[str] = (), methods: Sequence[str] = (),
                progress: bool = True) -> ProfileSummary:
    """Profile points of a finished (or partial) run again, from the suite it recorded: for each
    chosen point, build its model and bench as the run did and run the profiled pass only (no
    timed samples; points.parquet is untouched). Its trace is replaced and its operator rows
    supersede older ones. Raises RunError when the run cannot be read, is in use, or its recorded
    suite no longer expands to the run's points."""
    from harness.suite.loader import parse_recorded_suite

    out = Path(run_dir)
    try:
        manifest = read_manifest(out)
    except RunDirError as e:
        raise RunError(str(e)) from None
    try:
        resolved = yaml.safe_load((out / SUITE_FILE).read_text())
        suite = parse_recorded_suite(resolved, manifest.get("preset"), str(out / SUITE_FILE))
    except (OSError, yaml.YAMLError, SuiteError) as e:
        raise RunError(f"cannot read the suite {out / SUITE_FILE} recorded by the run: {e}") from None
    if suite.hash != manifest.get("suite_hash"):
        raise RunError(
            f"the suite recorded in {out / SUITE_FILE} now expands to other points than the run's (suite "
            f"hash {suite.hash} vs {manifest.get('suite_hash')}): this harness version resolves it "
            "differently. "
            "Profile with the version that ran it, or re-run the suite with --profile.")
    lock = _lock(out)
    try:
        writer = RunWriter(out)
        chosen = select_points(suite.points(), writer.finished_hashes(), hashes, methods)
        wl: Workload = registry.get_workload(suite.workload)()
        chosen = order_points(chosen, wl.model_key, "grid", suite.hash)
        summary = ProfileSummary(run_dir=out)
        loop = _Loop(suite, wl, writer, str(manifest.get("run_id")), RunSummary(out, "", len(chosen), 0))
        import torch

        try:
            for point in chosen:
                try:
                    with torch.no_grad():
                        loop.profile(point, loop.prepare(point))
                    summary.profiled.append(point.hash)
                except Exception as e:  # noqa: BLE001 - one point's failure never stops the others
                    summary.failed[point.hash] = str(e) if isinstance(e, _BuildFailed) else error_text(e)
                    _free_caches(point.device)
                if progress:
                    state = summary.failed.get(point.hash, "ok")
                    print(f"profile {point.method} {point.hash}: {state}", file=sys.stderr)
        finally:
            loop.drop_model()
            writer.flush_tables()
    finally:
        lock.release()
    return summary


def _lock(out: Path) -> RunLock:
    try:
        return RunLock(out).acquire()
    except RunDirError as e:
        raise RunError(str(e)) from None


def _check_new_run_dir(out: Path) -> None:
    """A new run goes into a new or empty directory: never into a run (in use or not), nor next
    to files it would mix with or overwrite."""
    if is_run_dir(out):
        holder = lock_holder(out)
        if holder is not None:
            raise RunError(in_use_message(out, holder))
        raise RunError(
            f"{out} already holds a run ({MANIFEST_FILE} exists). Pass --resume {out} to finish it, "
            "or choose a new --out directory."
        )
    if not out.is_dir():
        if out.exists():
            raise RunError(f"--out {out} is a file, not a directory; choose a new --out directory")
        return
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
    if POINTS_LOG in entries:
        raise RunError(
            f"{out} holds {POINTS_LOG} but no {MANIFEST_FILE}: the remains of a run whose manifest was "
            "lost. A new run there would mix its rows with these; move them away or choose a new --out."
        )
    if entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise RunError(f"{out} is not empty and is not a run directory (it holds {shown}); "
                       "choose a new or empty --out directory")


def _check_devices(points: Iterable[Point]) -> None:
    devices = {p.device for p in points}
    if any(d.startswith("cuda") for d in devices):
        import torch

        if not torch.cuda.is_available():
            raise RunError(
                f"the suite asks for device {sorted(d for d in devices if d.startswith('cuda'))[0]!r} "
                "but torch sees no CUDA GPU here; use a CPU preset (e.g. --preset cpu) or --set device=cpu"
            )


def _apply_cpu_allocator(mode: str, executor: str) -> None:
    """Set the C allocator policy for this process before anything is measured or recorded."""
    if mode != "system" and executor != "local":
        raise RunError(f"--cpu-allocator {mode} applies to this process only and does not reach Ray workers; "
                       "drop it or use the local executor")
    try:
        cpu_alloc.apply(mode)
    except cpu_alloc.AllocatorError as e:
        raise RunError(str(e)) from None


def _check_kernels(points: Iterable[Point]) -> None:
    """HARNESS_MERGE_KERNELS must name a choice that runs on every device of the suite."""
    from harness.methods import kernels

    try:
        for device_type in sorted({p.device.split(":")[0] for p in points}):
            kernels.resolved(device_type)
    except kernels.KernelError as e:
        raise RunError(str(e)) from None


def _check_memory_snapshot(points: Sequence[Point], mode: str | None) -> None:
    from harness.measure.memory import SNAPSHOT_MODES

    if mode is None:
        return
    if mode not in SNAPSHOT_MODES:
        raise RunError(f"--memory-snapshot {mode!r}; allowed: {', '.join(SNAPSHOT_MODES)}")
    if not any(p.device.startswith("cuda") for p in points):
        raise RunError(
            "--memory-snapshot records torch's CUDA allocator, but every point of this suite runs on the "
            "CPU. CPU points report the peak RSS of their timed window (rss_peak_mb); drop "
            "--memory-snapshot, or run a CUDA preset (e.g. --preset gpu)."
        )


def _open_for_resume(out: Path, suite: Suite, argv: list[str], points: Sequence[Point],
                     allow_env_mismatch: bool,
                     shard: tuple[int, int] | None = None) -> tuple[RunWriter, str, list[str]]:
    """Checks that ``out`` holds this suite's run, started on a comparable machine; records the
    resumption (with this machine's fingerprint) and repairs the logs. Raises RunError."""
    if not is_run_dir(out):
        raise RunError(
            f"cannot resume {out}: it is not a run directory ({MANIFEST_FILE} is missing); "
            "start a new run with --out instead"
        )
    try:
        manifest = read_manifest(out)
        stored_env = read_env(out)
    except RunDirError as e:
        raise RunError(f"cannot resume: {e}") from None
    if manifest.get("suite_hash") != suite.hash:
        raise RunError(
            f"cannot resume {out}: it holds a run of suite {manifest.get('suite')!r} with suite hash "
            f"{manifest.get('suite_hash')!r}, but the suite given resolves to {suite.name!r} with hash "
            f"{suite.hash!r} (points, timing or metrics settings differ). Resume with the same suite file, "
            "--preset and --set options, or start a new run with --out."
        )
    given = f"{shard[0]}/{shard[1]}" if shard else None
    if manifest.get("shard") != given:
        def says(s: Any) -> str:
            return f"--shard {s}" if s else "no --shard"

        raise RunError(f"cannot resume {out}: it holds a run made with {says(manifest.get('shard'))}, but "
                       f"this command gives {says(given)}; resume each shard with its own --shard option")
    env = fingerprint(argv=argv, seed=_common_seed(points))
    diffs = comparable(stored_env, env)
    if diffs and not allow_env_mismatch:
        raise RunError(
            f"cannot resume {out}: this machine differs from the one that started the run "
            f"({'; '.join(diffs)}), so its timings would not be comparable with the recorded ones. Resume "
            "where the run started, or pass --allow-env-mismatch to mix them (each resumption's "
            f"fingerprint is recorded in {MANIFEST_FILE})."
        )
    _check_writable(out)
    note_resume(out, _now(), argv, env)
    writer, notes = RunWriter.open_existing(out)
    return writer, str(manifest.get("run_id")), notes


def base_row(run_id: str, suite_name: str, point: Point, status: str = C.OK,
             error: str | None = None) -> dict[str, Any]:
    """The identity and config columns of a point's row (the rest is measured)."""
    row: dict[str, Any] = {
        C.RUN_ID: run_id,
        C.SUITE: suite_name,
        C.HASH: point.hash,
        C.WORKLOAD: point.workload,
        C.METHOD: point.method,
        C.PRESET: point.preset,
        C.STATUS: status,
        C.ERROR: error,
        C.STARTED_AT: _now(),
    }
    row.update(point.params)
    return row


class _Loop:
    """Runs points one by one; owns the current model and the run context."""

    def __init__(self, suite: Suite, wl: Workload, writer: RunWriter, run_id: str, summary: RunSummary,
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
        from tqdm import tqdm

        bar = tqdm(total=len(todo), file=sys.stderr, disable=not progress, unit="pt", dynamic_ncols=True)
        try:
            for point in todo:
                bar.set_postfix_str(f"{point.method} {point.hash}", refresh=False)
                if cpu_alloc.current() == "retain":
                    cpu_alloc.trim()  # each point starts without the previous point's retained memory
                row, samples = self.run_point(point)
                self.writer.append(row, samples)
                status = row[C.STATUS]
                self.summary.counts[status] = self.summary.counts.get(status, 0) + 1
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
            _free_caches(self.model_device)

    def ensure_model(self, point: Point) -> Any:
        key = _hashable(self.wl.model_key(point))
        if self.model_key == key:
            if self.build_error is not None:
                raise _BuildFailed(self.build_error)
            return self.model
        self.drop_model()
        self.build_error = None
        self.model_key = key
        self.model_device = point.device
        seed_everything(point.seed)
        try:
            self.model = self.wl.build_model(point)
        except Exception as e:
            if _is_oom(e):
                raise
            self.build_error = "model build failed: " + error_text(e)
            raise _BuildFailed(self.build_error) from e
        self.has_model = True
        return self.model

    def run_point(self, point: Point) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        row = base_row(self.run_id, self.suite.name, point)
        row.update(placement(point.device))
        samples: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        self.snapshots.start(point.device)
        try:
            with markers.mark(f"point {point.method} {point.hash}"):
                samples = self.measure(point, row)
        except _BuildFailed as e:
            row[C.STATUS], row[C.ERROR] = C.FAILED, str(e)
        except Exception as e:  # noqa: BLE001 - every failure becomes a row
            if _is_oom(e):
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
            _free_caches(point.device)
        self._snapshot(point, row, oom=False)
        row[C.ELAPSED_S] = time.perf_counter() - t0
        return row, samples

    def _snapshot(self, point: Point, row: dict[str, Any], oom: bool) -> None:
        """Stop the point's allocator history; record where its snapshot went, if one was written."""
        path = self.snapshots.finish(point.hash, oom)
        if path is not None:
            row[C.MEMORY_SNAPSHOT] = str(path.relative_to(self.writer.run_dir))

    def prepare(self, point: Point) -> Bench:
        """The point's threads, model (built or reused) and seeded bench."""
        import torch

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
        import torch

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
            bad_output = _nonfinite_tensors(output)
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
            eff = efficiency_columns(row, peak, phase_work or None)
            self._note_metrics({k: efficiency_metric_info(k) for k in eff})
            row.update(eff)
            if self.suite.metrics.profile:  # after the timed samples, never between them
                with markers.mark("profile"):
                    self.profile(point, bench)
        del output, bench
        bad_metrics = _nonfinite_metrics(row)
        if bad_output or bad_metrics:
            row[C.STATUS] = C.NAN
            what = ([f"{bad_output} holds NaN/Inf"] if bad_output else []) + (
                [f"non-finite {', '.join(bad_metrics)}"] if bad_metrics else []
            )
            row[C.ERROR] = "; ".join(what)
        return [
            {C.RUN_ID: self.run_id, C.HASH: point.hash, C.SAMPLE: i, C.DEVICE_MS: d, C.HOST_MS: h}
            for i, (d, h) in enumerate(zip(m.device_ms, m.host_ms))
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


class _BuildFailed(Exception):
    """The point's model could not be built (recorded as failed; not retried for its group)."""
