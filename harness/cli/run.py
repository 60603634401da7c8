"""``harness run SUITE``: run a suite into a run directory (or resume one), then report."""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness import registry
from harness.cli import under_callgrind
from harness.cli.common import (
    EXIT_IO,
    EXIT_OK,
    Terminated,
    UsageError,
    interrupted_exit_code,
    non_negative_float,
    non_negative_int,
    positive_int,
    report_after_run,
    shard_arg,
)
from harness.measure.instructions import under_callgrind as counting_here
from harness.measure.timing import MODE_INSTRUCTIONS
from harness.params import format_value
from harness.run.options import EXECUTORS, RayOptions, RunOptions
from harness.run.points import ORDERS, shard_points
from harness.run.runner import run_suite
from harness.store import is_run_dir, resume_command_line, run_dir_in
from harness.suite import Suite, load_suite

NAME = "run"
RUNS_DIR = "runs"


def setup(sub: Any) -> None:
    """Add the ``run`` command and its options to the CLI's sub-parsers."""
    r = sub.add_parser(NAME, help="run a suite into a run directory")
    r.add_argument("suite", help="suite YAML file, or the name of a suite shipped with the harness "
                                 "(`harness suites` lists them)")
    r.add_argument("--preset", help="apply this preset of the suite (default: its default_preset)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a suite value, e.g. timing.max_samples=3, seq_len=[128,256] (repeatable)")
    r.add_argument("--out", help=f"run directory (default: {RUNS_DIR}/<suite>-<timestamp>)")
    r.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run (skips recorded points)")
    r.add_argument("--dry-run", action="store_true", help="print the resolved points and exit")
    r.add_argument("--order", choices=ORDERS, default="grid",
                   help="grid: suite order grouped by model; interleave: methods alternate; shuffle: seeded "
                        "random order")
    r.add_argument("--allow-failures", action="store_true", help="exit 0 even when points failed")
    r.add_argument("--profile", action="store_true",
                   help="profile each point once after its timed samples (= --set metrics.profile=true): "
                        "profiles/<hash>.trace.json.gz (open in https://ui.perfetto.dev) and ops.parquet")
    _ray_arguments(r)
    r.add_argument("--shard", type=shard_arg, metavar="I/N",
                   help="run only shard I of N (0-based; deterministic, the same on every machine): one job "
                        "of a SLURM array or Kubernetes Indexed Job; join the run directories with "
                        "harness merge")
    _measurement_arguments(r)
    r.add_argument("--max-points", type=positive_int, metavar="K",
                   help="run at most K of the missing points, then stop (continue with --resume); "
                        "lets a base and a head run alternate in slices on one machine")
    r.add_argument("--allow-env-mismatch", action="store_true",
                   help="--resume on a machine or torch version other than the run's (recorded in run.json)")
    r.add_argument("--no-report", action="store_true", help="skip the tables and plots after the run")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=run)


def _ray_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: run the points in this process (default); ray: as Ray tasks over the GPUs "
                        "(or CPUs) of a Ray cluster, written here as they finish")
    r.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster: omit to start a local Ray, 'auto' for the cluster `ray start` runs "
                        "here, or ray://HOST:10001")
    r.add_argument("--gpus-per-point", type=non_negative_float, metavar="G",
                   help="GPUs each Ray task holds (default: 1 when the points run on CUDA, else 0)")
    r.add_argument("--cpus-per-point", type=non_negative_float, metavar="C",
                   help="CPUs each Ray task holds (default 1; also its OMP threads)")
    r.add_argument("--max-in-flight", type=positive_int, metavar="K",
                   help="at most K Ray tasks submitted at once (default: all; Ray queues them)")
    r.add_argument("--retries", type=non_negative_int, metavar="N",
                   help="with Ray: retry a point whose task died N more times before recording it failed")


def _measurement_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("--nvtx", action="store_true",
                   help="NVTX ranges (point, timed, sample i, phases, model parts) and, on CUDA, "
                        "cudaProfilerStart/Stop around each point's timed samples: nsys profile "
                        "--capture-range=cudaProfilerApi --capture-range-end=repeat harness run ... --nvtx")
    r.add_argument("--memory-snapshot", choices=("oom", "all"),
                   help="CUDA only: record allocations and write profiles/<hash>.memory.pickle for points "
                        "that run out of memory (oom) or for every point (all); view at "
                        "https://pytorch.org/memory_viz")
    r.add_argument("--cpu-allocator", choices=("system", "retain"), default="system",
                   help="CPU runs: 'retain' keeps freed memory in the process for reuse (glibc mallopt; the "
                        "heap is trimmed before each point), so calls that allocate large temporaries stop "
                        "page-faulting them on every call; recorded in env.json (default: system)")


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Load the suite, run it (or print its points with --dry-run), then report."""
    registry.load_builtins()
    overrides = (args.set or []) + (["metrics.profile=true"] if args.profile else [])
    suite = load_suite(args.suite, preset=args.preset, overrides=overrides)
    if args.dry_run:
        print(points_table(suite, args.shard))
        return EXIT_OK
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise UsageError(f"--out {shlex.quote(args.out)} and --resume {shlex.quote(args.resume)} "
                         "name "
                         "different directories; give one")
    if args.resume:
        out = Path(args.resume)
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else run_dir_in(RUNS_DIR, f"{suite.name}-{stamp}")
    if suite.timing.mode == MODE_INSTRUCTIONS and not counting_here():
        return under_callgrind.rerun(suite, args, argv, out)
    try:
        summary = run_suite(suite, out, run_options(args, argv))
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        again = resume_command_line(["harness", *argv], out, args.suite)
        print(f"\n{how}; finished points are saved. Continue with: {again}", file=sys.stderr)
        return interrupted_exit_code(e)
    except OSError as e:
        if not is_run_dir(out):
            raise  # nothing recorded yet: the CLI's own paragraph for a refused write
        again = resume_command_line(["harness", *argv], out, args.suite)
        print(f"harness run: error: {e.filename or out}: {e.strerror or e} ({type(e).__name__}). The "
              f"operating system refused a write; every point recorded before it is kept in "
              f"{shlex.quote(str(out))}. Free space (or restore write permission), then continue with: "
              f"{again}", file=sys.stderr)
        return EXIT_IO
    for note in summary.notes:
        print(f"resume repaired {out}: {note}", file=sys.stderr)
    print(summary.line())
    if not args.no_report:
        try:
            report_after_run(out)
        except KeyboardInterrupt as e:
            print(f"\nreport interrupted; the run itself is complete. Make the tables and plots again with: "
                  f"harness report {shlex.quote(str(out))} && harness plot {shlex.quote(str(out))}",
                  file=sys.stderr)
            return interrupted_exit_code(e)
    if summary.exit_code and summary.not_ok:
        print(f"{summary.not_ok} point(s) did not finish ok (see the status/error columns); "
              "pass --allow-failures to exit 0 anyway", file=sys.stderr)
    return summary.exit_code


def run_options(args: argparse.Namespace, argv: list[str]) -> RunOptions:
    """The :class:`RunOptions` of the parsed command line."""
    return RunOptions(
        resume=bool(args.resume), order=args.order, allow_failures=args.allow_failures,
        progress=not args.quiet, argv=["harness", *argv], allow_env_mismatch=args.allow_env_mismatch,
        max_points=args.max_points, nvtx=args.nvtx, memory_snapshot=args.memory_snapshot, shard=args.shard,
        executor=args.executor, ray=_ray_options(args), cpu_allocator=args.cpu_allocator,
    )


def _ray_options(args: argparse.Namespace) -> RayOptions:
    ray_only = {"--ray-address": args.ray_address, "--gpus-per-point": args.gpus_per_point,
                "--cpus-per-point": args.cpus_per_point, "--max-in-flight": args.max_in_flight,
                "--retries": args.retries}
    given = [k for k, v in ray_only.items() if v is not None]
    if args.executor != "ray":
        if given:
            raise UsageError(f"{', '.join(given)} only apply to --executor ray")
        return RayOptions()
    return RayOptions(address=args.ray_address, gpus_per_point=args.gpus_per_point,
                      cpus_per_point=1.0 if args.cpus_per_point is None else args.cpus_per_point,
                      max_in_flight=args.max_in_flight, retries=args.retries or 0)


def points_table(suite: Suite, shard: tuple[int, int] | None = None) -> str:
    """What ``--dry-run`` prints: the suite's settings, then one row per point (hash, method, swept
    values); with ``shard`` (i, n), only the points of that shard (those ``--shard i/n`` runs)."""
    points = suite.points()
    n_suite = len(points)
    if shard:
        points = shard_points(points, registry.get_workload(suite.workload)().model_key, suite.hash, *shard)
    swept = suite.swept_params()
    rows = [[p.hash, p.method, *[format_value(p.params.get(k, "")) for k in swept]] for p in points]
    fixed = {k: v for k, v in (points[0].params.items() if points else []) if k not in swept}
    count = f"{n_suite} points"
    if shard:
        count = f"shard {shard[0]}/{shard[1]}: {len(points)} of {count}"
    head = (
        f"suite {suite.name} ({suite.source}), preset {suite.preset or '(none)'}: {count}, "
        f"suite hash {suite.hash}, reference {suite.reference or '(none)'}"
    )
    same = "same for every point: " + (", ".join(f"{k}={format_value(v)}" for k, v in fixed.items())
                                       or "(nothing)")
    return "\n".join([head, same, tabulate(rows, headers=["hash", "method", *swept])])
