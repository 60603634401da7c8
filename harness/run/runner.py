"""Runs the points of a suite into a run directory; resumable; failures never stop the sweep.

:func:`run_suite` decides *what* runs (the points, their order, the shard, what a resume skips)
and owns the run directory (lock, manifest, fingerprint, one row per finished point); the
executor decides *where*: :class:`~harness.run.point_loop.PointLoop` in this process, or Ray tasks
(:mod:`harness.run.ray_executor`) whose results the driver writes. Every row is appended the moment
its point finishes, so a killed run can be resumed (``RunOptions(resume=True)``).

:func:`profile_run` profiles points of a finished run again, from the suite it recorded.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from harness import registry
from harness.errors import RunError
from harness.measure import markers
from harness.measure.efficiency import PEAKS_KEY, run_peaks
from harness.measure.env import fingerprint
from harness.measure.timing import MODE_INSTRUCTIONS
from harness.run.options import EXECUTORS, RunOptions
from harness.run.point_loop import BuildFailed, PointLoop, free_caches
from harness.run.points import order_points, select_points, shard_points
from harness.run.preflight import apply_cpu_allocator, check_devices, check_kernels, check_memory_snapshot
from harness.run.ray_executor import RayDriver, require_ray
from harness.run.resume import check_resumable, common_seed, open_for_resume
from harness.run.rows import error_text, now_iso
from harness.run.summary import ProfileSummary, RunSummary
from harness.store import (
    ENV_FILE,
    SUITE_FILE,
    RunDirError,
    RunLock,
    RunWriter,
    check_new_run_dir,
    check_writable,
    read_env,
    read_manifest,
    read_suite_file,
    write_json,
)
from harness.suite import Suite, SuiteError
from harness.suite.loader import parse_recorded_suite
from harness.version import __version__
from harness.workloads.base import Point, Workload


@dataclass
class _Plan:
    """The points of one invocation: all of the suite's, this shard's, and in run order."""

    workload: Workload
    all_points: list[Point]
    points: list[Point]
    ordered: list[Point]


def run_suite(suite: Suite, out_dir: str | os.PathLike, options: RunOptions | None = None) -> RunSummary:
    """Run every point of ``suite`` into ``out_dir`` (a new run directory, or one to resume).

    Raises RunError or RunDirError (both :class:`~harness.errors.HarnessError`) before running
    anything when the directory is unwritable, in use by another process, already holds a run or
    other files (without ``resume``), holds another suite's run or was started on a different
    machine (with ``resume``, unless ``allow_env_mismatch``), or a point needs a device this
    machine lacks. The directory is locked while the run writes. See :class:`RunOptions`.
    """
    opts = options or RunOptions()
    out = Path(out_dir)
    argv = list(sys.argv if opts.argv is None else opts.argv)
    plan = _plan(suite, opts)
    if opts.resume:
        check_resumable(out)  # before the lock creates anything
    else:
        check_new_run_dir(out)
        check_writable(out)
    lock = RunLock(out).acquire()
    try:
        if opts.resume:
            writer, run_id, notes = open_for_resume(out, suite, argv, plan.points, opts.allow_env_mismatch,
                                                    opts.shard)
            done = writer.finished_hashes()
            peaks = read_env(out).get(PEAKS_KEY)  # a resumed run keeps the peaks it started with
        else:
            writer, run_id, peaks = _create(out, suite, plan, opts, argv)
            notes, done = [], set()
        if _measures_peaks(suite, opts):
            peaks = peaks or run_peaks(_peak_settings(plan.points))  # a run from before peaks were recorded
        todo = [p for p in plan.ordered if p.hash not in done]
        left = max(0, len(todo) - opts.max_points) if opts.max_points is not None else 0
        summary = RunSummary(run_dir=out, run_id=run_id, total=len(plan.points),
                             skipped=len(plan.points) - len(todo), allow_failures=opts.allow_failures,
                             notes=notes, left=left)
        try:
            _execute(suite, plan.workload, writer, summary, todo[: len(todo) - left], peaks, opts)
        finally:
            writer.flush_tables()
    finally:
        lock.release()
    return summary


def _plan(suite: Suite, opts: RunOptions) -> _Plan:
    """The points to run, in order; raises RunError for options that cannot run here."""
    wl: Workload = registry.get_workload(suite.workload)()
    all_points = suite.points()
    points = shard_points(all_points, wl.model_key, suite.hash, *opts.shard) if opts.shard else all_points
    ordered = order_points(points, wl.model_key, opts.order, suite.hash)
    if opts.executor not in EXECUTORS:
        raise RunError(f"unknown executor {opts.executor!r}; allowed: {', '.join(EXECUTORS)}")
    if opts.executor == "ray":
        require_ray()  # before anything is written
    else:
        check_devices(points)  # Ray workers have the GPUs; the driver need not
    check_kernels(points)
    check_memory_snapshot(points, opts.memory_snapshot)
    apply_cpu_allocator(opts.cpu_allocator, opts.executor)
    return _Plan(wl, all_points, points, ordered)


def _create(out: Path, suite: Suite, plan: _Plan, opts: RunOptions,
            argv: list[str]) -> tuple[RunWriter, str, dict[str, Any]]:
    """A new run directory: manifest, resolved suite, fingerprint (with peaks), metric meanings."""
    run_id = f"{suite.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
    shard = opts.shard
    manifest = {
        "run_id": run_id, "suite": suite.name, "suite_hash": suite.hash, "suite_source": suite.source,
        "preset": suite.preset, "argv": argv, "created_at": now_iso(), "harness_version": __version__,
        "order": opts.order, "allow_failures": opts.allow_failures, "n_points": len(plan.points),
        "suite_points": len(plan.all_points), "shard": f"{shard[0]}/{shard[1]}" if shard else None,
    }
    env = fingerprint(argv=argv, seed=common_seed(plan.points), plugins=registry.plugin_record())
    env[PEAKS_KEY] = run_peaks(_peak_settings(plan.points)) if _measures_peaks(suite, opts) else {}
    metrics = {k: asdict(v) for k, v in plan.workload.metrics().items()}
    return RunWriter.create(out, manifest, suite.resolved, env, metrics), run_id, env[PEAKS_KEY]


def _execute(suite: Suite, wl: Workload, writer: RunWriter, summary: RunSummary, todo: list[Point],
             peaks: dict[str, Any] | None, opts: RunOptions) -> None:
    """Run ``todo`` with the chosen executor; every finished point is written as it arrives."""
    if opts.executor == "ray":
        driver = RayDriver(suite, writer, summary.run_id, summary, opts.ray, nvtx=opts.nvtx,
                           memory_snapshot=opts.memory_snapshot,
                           record_peaks=lambda new: add_peaks(writer.run_dir, new))
        driver.run(todo, wl.model_key, opts.progress)
        return
    with markers.enable(opts.nvtx):
        loop = PointLoop(suite, wl, writer, summary.run_id, summary, peaks, opts.memory_snapshot)
        loop.run(todo, opts.progress)


def add_peaks(run_dir: Path, new: dict[str, Any]) -> None:
    """Record peaks measured during the run (by Ray workers) in env.json; known keys stay."""
    env = read_env(run_dir)
    peaks = env.setdefault(PEAKS_KEY, {})
    for k, v in new.items():
        peaks.setdefault(k, v)
    write_json(run_dir / ENV_FILE, env)


def _measures_peaks(suite: Suite, opts: RunOptions) -> bool:
    """Whether this process measures the device peaks (the efficiency columns' denominators): not for
    Ray (its workers measure their own machines and send them with their rows), and not when
    instructions are counted (no efficiency without times; under valgrind the peaks would be wrong)."""
    return opts.executor == "local" and suite.timing.mode != MODE_INSTRUCTIONS


def _peak_settings(points: Sequence[Point]) -> list[tuple[str, str, int]]:
    """The distinct (device, dtype, threads) the points run with: what the peaks are measured for."""
    return list(dict.fromkeys((p.device, p.dtype, p.common.threads) for p in points))


def profile_run(run_dir: str | os.PathLike, *, hashes: Sequence[str] = (), methods: Sequence[str] = (),
                progress: bool = True) -> ProfileSummary:
    """Profile points of a finished (or partial) run again, from the suite it recorded: for each
    chosen point, build its model and bench as the run did and run the profiled pass only (no
    timed samples; points.parquet is untouched). Its trace is replaced and its operator rows
    supersede older ones. Raises RunError when the run cannot be read or its recorded suite no
    longer expands to the run's points, RunDirError when it is in use."""
    out = Path(run_dir)
    suite, run_id = _recorded_suite(out)
    lock = RunLock(out).acquire()
    try:
        writer = RunWriter(out)
        chosen = select_points(suite.points(), writer.finished_hashes(), hashes, methods)
        wl: Workload = registry.get_workload(suite.workload)()
        chosen = order_points(chosen, wl.model_key, "grid", suite.hash)
        summary = ProfileSummary(run_dir=out)
        loop = PointLoop(suite, wl, writer, run_id, RunSummary(out, "", len(chosen), 0))
        try:
            for point in chosen:
                try:
                    with torch.no_grad():
                        loop.profile(point, loop.prepare(point))
                    summary.profiled.append(point.hash)
                except Exception as e:  # noqa: BLE001 - one point's failure never stops the others
                    summary.failed[point.hash] = str(e) if isinstance(e, BuildFailed) else error_text(e)
                    free_caches(point.device)
                if progress:
                    state = summary.failed.get(point.hash, "ok")
                    print(f"profile {point.method} {point.hash}: {state}", file=sys.stderr)
        finally:
            loop.drop_model()
            writer.flush_tables()
    finally:
        lock.release()
    return summary


def _recorded_suite(out: Path) -> tuple[Suite, str]:
    """The suite a run recorded (and its run id), checked to expand to the run's points."""
    try:
        manifest = read_manifest(out)
    except RunDirError as e:
        raise RunError(str(e)) from None
    try:
        resolved = read_suite_file(out)
        suite = parse_recorded_suite(resolved, manifest.get("preset"), str(out / SUITE_FILE))
    except (RunDirError, SuiteError) as e:
        raise RunError(f"cannot read the suite {out / SUITE_FILE} recorded by the run: {e}") from None
    if suite.hash != manifest.get("suite_hash"):
        raise RunError(
            f"the suite recorded in {out / SUITE_FILE} now expands to other points than the run's (suite "
            f"hash {suite.hash} vs {manifest.get('suite_hash')}): this harness version resolves it "
            "differently. "
            "Profile with the version that ran it, or re-run the suite with --profile.")
    return suite, str(manifest.get("run_id"))
