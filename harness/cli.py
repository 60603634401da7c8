"""``harness``: run | list | report | plot | compare | env | train.

Exit codes: 0 success; 1 a run had non-ok points (without --allow-failures) or compare found
a regression; 2 a user error (bad suite, missing file, refused comparison, unusable output
directory) printed as one paragraph on stderr, without a traceback; 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness import registry
from harness.params import describe
from harness.suite import SUITES_DIR, SuiteError, load_suite
from harness.workloads.base import CommonParams

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_IO, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (finished points are kept, the resume hint is printed)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


class _UserError(Exception):
    """A problem the user can fix; printed without a traceback (exit 2)."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from harness.run.merge_shards import MergeError
    from harness.run.runner import RunError
    from harness.store.results import RunDirError
    from harness.train.loop import TrainError

    errors: list[type[BaseException]] = [SuiteError, RunError, RunDirError, FileNotFoundError, _UserError,
                                         TrainError, MergeError]
    try:
        from reports.compare import CompareError

        errors.append(CompareError)
    except ImportError:
        pass
    return tuple(errors)


# ---------------------------------------------------------------- run


def _cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.run.runner import run_suite

    registry.load_builtins()
    overrides = (args.set or []) + (["metrics.profile=true"] if args.profile else [])
    suite = load_suite(args.suite, preset=args.preset, overrides=overrides)
    if args.dry_run:
        print(_points_table(suite))
        return EXIT_OK
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise _UserError(f"--out {args.out} and --resume {args.resume} name different directories; give one")
    if args.resume:
        out, resume = Path(args.resume), True
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out, resume = Path(args.out or Path("runs") / f"{suite.name}-{stamp}"), False
    try:
        summary = run_suite(
            suite, out, resume=resume, order=args.order, allow_failures=args.allow_failures,
            progress=not args.quiet, argv=["harness", *argv], allow_env_mismatch=args.allow_env_mismatch,
            max_points=args.max_points, nvtx=args.nvtx, memory_snapshot=args.memory_snapshot,
            shard=args.shard, executor=args.executor, ray_options=_ray_options(args),
            cpu_allocator=args.cpu_allocator,
        )
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted"
        print(f"\n{how}; finished points are saved. Continue with: harness run {args.suite} "
              f"--resume {out} (and the same --preset/--set options)", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(e, _Terminated) else EXIT_INTERRUPTED
    for note in summary.notes:
        print(f"resume repaired {out}: {note}", file=sys.stderr)
    print(summary.line())
    if not args.no_report:
        try:
            _report_after_run(out)
        except KeyboardInterrupt as e:
            print(f"\nreport interrupted; the run itself is complete. Make the tables and plots again with: "
                  f"harness report {out} && harness plot {out}", file=sys.stderr)
            return EXIT_TERMINATED if isinstance(e, _Terminated) else EXIT_INTERRUPTED
    if summary.exit_code and summary.not_ok:
        print(f"{summary.not_ok} point(s) did not finish ok (see the status/error columns); "
              "pass --allow-failures to exit 0 anyway", file=sys.stderr)
    return summary.exit_code


def _ray_options(args: argparse.Namespace) -> Any:
    ray_only = {"--ray-address": args.ray_address, "--gpus-per-point": args.gpus_per_point,
                "--cpus-per-point": args.cpus_per_point, "--max-in-flight": args.max_in_flight,
                "--retries": args.retries}
    given = [k for k, v in ray_only.items() if v is not None]
    if args.executor != "ray":
        if given:
            raise _UserError(f"{', '.join(given)} only apply to --executor ray")
        return None
    from harness.run.ray_executor import RayOptions

    return RayOptions(address=args.ray_address, gpus_per_point=args.gpus_per_point,
                      cpus_per_point=1.0 if args.cpus_per_point is None else args.cpus_per_point,
                      max_in_flight=args.max_in_flight, retries=args.retries or 0)


def _report_after_run(run_dir: Path) -> None:
    """Plots, then the tables and report.html (which embeds the plots); a failure here never loses
    the run (it is already on disk)."""
    line = None
    try:
        from reports.plots import plot_and_summarise

        _, line = plot_and_summarise(run_dir, warn=False)  # the report warns about the run
    except Exception as e:  # noqa: BLE001 - reporting is optional after a run
        print(f"warning: plotting failed ({type(e).__name__}: {e}); the run is saved in {run_dir}; "
              f"retry with: harness plot {run_dir}", file=sys.stderr)
    try:
        from reports.summary import report

        report(run_dir)  # prints the tables itself
    except Exception as e:  # noqa: BLE001 - reporting is optional after a run
        print(f"warning: the report failed ({type(e).__name__}: {e}); the run is saved in {run_dir}; "
              f"retry with: harness report {run_dir}", file=sys.stderr)
    if line:
        print(line)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v)


def _points_table(suite: Any) -> str:
    from tabulate import tabulate

    points = suite.points()
    swept = suite.swept_params()
    rows = [[p.hash, p.method, *[_fmt(p.params.get(k, "")) for k in swept]] for p in points]
    fixed = {k: v for k, v in (points[0].params.items() if points else []) if k not in swept}
    head = (
        f"suite {suite.name} ({suite.source}), preset {suite.preset or '(none)'}: "
        f"{len(points)} points, suite hash {suite.hash}, reference {suite.reference or '(none)'}"
    )
    same = "same for every point: " + (", ".join(f"{k}={_fmt(v)}" for k, v in fixed.items()) or "(nothing)")
    return "\n".join([head, same, tabulate(rows, headers=["hash", "method", *swept])])


# ---------------------------------------------------------------- list


def _params_table(cls: type, indent: str) -> str:
    from tabulate import tabulate

    infos = describe(cls)
    if not infos:
        return indent + "(no parameters)"
    rows = [[i.name, i.type_name, _fmt(i.default), i.allowed(), i.help] for i in infos]
    table = tabulate(rows, headers=["parameter", "type", "default", "allowed", "help"])
    return "\n".join(indent + line for line in table.splitlines())


def _suites_listing() -> str:
    folder = Path(SUITES_DIR)
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []
    if not files:
        return f"suites: none found in ./{SUITES_DIR}"
    import yaml

    lines = [f"suites in ./{SUITES_DIR}:"]
    for f in files:
        try:
            data = yaml.safe_load(f.read_text()) or {}
            if not isinstance(data, dict):
                raise ValueError("not a mapping")
        except (yaml.YAMLError, ValueError) as e:
            lines.append(f"  {f.name}: unreadable ({type(e).__name__}); `harness run {f} --dry-run` explains")
            continue
        presets = data.get("presets") or {}
        names = ", ".join(map(str, presets)) if isinstance(presets, dict) and presets else "(none)"
        default = data.get("default_preset")
        lines.append(f"  {data.get('name', f.stem)}  ({f})  workload {data.get('workload', '?')}")
        if data.get("description"):
            lines.append(f"      {str(data['description']).strip()}")
        lines.append(f"      presets: {names}" + (f" (default {default})" if default else ""))
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace, argv: list[str]) -> int:
    registry.load_builtins()
    names = registry.workload_names()
    if args.workload:
        if args.workload not in names:
            try:
                registry.get_workload(args.workload)
            except KeyError as e:
                raise _UserError(e.args[0]) from None
        names = [args.workload]
    out = ["common parameters (every workload):", _params_table(CommonParams, "  "), ""]
    for w in names:
        cls = registry.get_workload(w)
        out.append(f"workload {w}" + (f": {cls.doc}" if cls.doc else ""))
        out.append(_params_table(cls.Params, "  "))
        presets = cls.model_presets()
        if presets:
            out.append("  model presets:")
            out.append(textwrap.indent(tabulate([{"preset": k, **v} for k, v in presets.items()],
                                                 headers="keys"), "    "))
        for m in registry.method_names(w):
            spec = registry.get_method(w, m)
            out.append(f"  method {m}" + (f": {spec.doc}" if spec.doc else ""))
            out.append(_params_table(spec.params, "    "))
        out.append("")
    if not args.workload:
        out.append(_suites_listing())
    print("\n".join(out).rstrip())
    return EXIT_OK


# ---------------------------------------------------------------- report / plot / compare / env


def _require_run_dir(path: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"run directory {path!r} not found (a run directory is what `harness run` "
                                "writes; its path is printed at the end of the run)")
    return p


def _cmd_report(args: argparse.Namespace, argv: list[str]) -> int:
    if args.ops:
        from reports.ops import ops_report

        print(ops_report(_require_run_dir(args.run)), end="")
        return EXIT_OK
    from reports.summary import report

    report(_require_run_dir(args.run), args.out)  # prints the tables itself
    return EXIT_OK


def _cmd_plot(args: argparse.Namespace, argv: list[str]) -> int:
    from reports.plots import plot_and_summarise

    # warns on stderr about an incomplete, running or duplicated run; says why when nothing is drawn
    paths, line = plot_and_summarise(_require_run_dir(args.run), args.out)
    print(line, file=sys.stdout if paths else sys.stderr)
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace, argv: list[str]) -> int:
    from reports.compare import compare_runs

    base, new = _require_run_dir(args.base), _require_run_dir(args.new)
    try:
        result = compare_runs(base, new, threshold=args.threshold, alpha=args.alpha,
                              allow_env_mismatch=args.allow_env_mismatch, allow_missing=args.allow_missing)
    except ValueError as e:  # CompareError, or a threshold/alpha out of range
        raise _UserError(str(e)) from None
    print(result.markdown)
    if args.markdown:
        Path(args.markdown).write_text(result.markdown)
    return EXIT_FAIL if result.regressed else EXIT_OK


def _cmd_profile(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.run.runner import profile_run

    registry.load_builtins()
    summary = profile_run(_require_run_dir(args.run), hashes=args.point or (), methods=args.method or (),
                          progress=not args.quiet)
    for h, error in summary.failed.items():
        print(f"profile of point {h} failed: {error}", file=sys.stderr)
    print(summary.line())
    return summary.exit_code


def _cmd_merge(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.run.merge_shards import merge_runs

    summary = merge_runs([_require_run_dir(r) for r in args.runs], args.out,
                         allow_env_mismatch=args.allow_env_mismatch)
    print(summary.line())
    if not args.no_report:
        _report_after_run(summary.out)
    return EXIT_OK


def _cmd_env(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.measure.env import fingerprint

    print(json.dumps(fingerprint(argv=["harness", *argv]), indent=2, sort_keys=True, default=str))
    return EXIT_OK


# ---------------------------------------------------------------- train


def _cmd_train(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.train import PROXIES, get_proxy
    from harness.train.card import read_card
    from harness.train.loop import train, with_overrides

    if args.list or not args.proxy:
        for name in PROXIES:
            proxy = get_proxy(name)
            print(f"{name}: {proxy.description}")
        return EXIT_OK
    try:
        proxy = get_proxy(args.proxy)
    except KeyError as e:
        raise _UserError(e.args[0]) from None
    cfg = with_overrides(proxy.default_config(), steps=args.steps, seed=args.seed, threads=args.threads)
    out = Path(args.out or Path("runs") / "train" / proxy.name)
    try:
        card = train(proxy, out, config=cfg, resume=args.resume, device=args.device, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted; the last checkpoint is in {out}. Continue with: harness train {proxy.name} "
              f"--out {out} --resume (and the same --steps/--seed/--threads)", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"{proxy.name}: held-out " + ", ".join(f"{k} {v:.4g}" for k, v in card["heldout"].items()))
    print(f"weights, model card and curves in {out}/ ({card['training_time_s'] / 60:.1f} min of training)")
    committed = Path(__file__).parent / "proxies" / proxy.name
    shipped = read_card(committed)
    if shipped and committed.resolve() != out.resolve():
        diffs = ", ".join(f"{k} {shipped['heldout'][k]:.4g} -> {v:.4g}" for k, v in card["heldout"].items()
                          if k in shipped["heldout"])
        same = "identical" if shipped["weights"]["sha256"] == card["weights"]["sha256"] else "different"
        print(f"against the committed {proxy.name} ({committed}): weights {same}; {diffs}")
    return EXIT_OK


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from harness.run.runner import ORDERS

    ap = argparse.ArgumentParser(prog="harness", description="Benchmark ViT acceleration methods: "
                                 "run suites, report, plot and compare runs.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a suite into a run directory")
    r.add_argument("suite", help="suite YAML file, or the name of a suite in ./suites")
    r.add_argument("--preset", help="apply this preset of the suite (default: its default_preset)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a suite value, e.g. timing.max_samples=3, seq_len=[128,256] (repeatable)")
    r.add_argument("--out", help="run directory (default: runs/<suite>-<timestamp>)")
    r.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run (skips recorded points)")
    r.add_argument("--dry-run", action="store_true", help="print the resolved points and exit")
    r.add_argument("--order", choices=ORDERS, default="grid",
                   help="grid: suite order grouped by model; interleave: methods alternate; shuffle: seeded "
                        "random order")
    r.add_argument("--allow-failures", action="store_true", help="exit 0 even when points failed")
    r.add_argument("--profile", action="store_true",
                   help="profile each point once after its timed samples (= --set metrics.profile=true): "
                        "profiles/<hash>.trace.json.gz (open in https://ui.perfetto.dev) and ops.parquet")
    r.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: run the points in this process (default); ray: as Ray tasks over the GPUs "
                        "(or CPUs) of a Ray cluster, written here as they finish")
    r.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster: omit to start a local Ray, 'auto' for the cluster `ray start` runs "
                        "here, or ray://HOST:10001")
    r.add_argument("--gpus-per-point", type=_non_negative_float, metavar="G",
                   help="GPUs each Ray task holds (default: 1 when the points run on CUDA, else 0)")
    r.add_argument("--cpus-per-point", type=_non_negative_float, metavar="C",
                   help="CPUs each Ray task holds (default 1; also its OMP threads)")
    r.add_argument("--max-in-flight", type=_positive_int, metavar="K",
                   help="at most K Ray tasks submitted at once (default: all; Ray queues them)")
    r.add_argument("--retries", type=_non_negative_int, metavar="N",
                   help="with Ray: retry a point whose task died N more times before recording it failed")
    r.add_argument("--shard", type=_shard, metavar="I/N",
                   help="run only shard I of N (0-based; deterministic, the same on every machine): one job "
                        "of a SLURM array or Kubernetes Indexed Job; join the run directories with "
                        "harness merge")
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
    r.add_argument("--max-points", type=_positive_int, metavar="K",
                   help="run at most K of the missing points, then stop (continue with --resume); "
                        "lets a base and a head run alternate in slices on one machine")
    r.add_argument("--allow-env-mismatch", action="store_true",
                   help="--resume on a machine or torch version other than the run's (recorded in run.json)")
    r.add_argument("--no-report", action="store_true", help="skip the tables and plots after the run")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_cmd_run)

    ls = sub.add_parser("list", help="workloads, methods, their parameters, and the suites in ./suites")
    ls.add_argument("--workload", help="only this workload")
    ls.set_defaults(func=_cmd_list)

    rp = sub.add_parser("report", help="print the key tables of a run (100 columns wide); write report.md, "
                                       "points.csv and a self-contained report.html")
    rp.add_argument("run", help="run directory")
    rp.add_argument("--out", help="where to write the report files (default: <run>/report)")
    rp.add_argument("--ops", action="store_true",
                    help="where each method spends its time, by phase and top operators (a --profile run)")
    rp.set_defaults(func=_cmd_report)

    pl = sub.add_parser("plot", help="write the figures of a run (overview.png first), or say why there "
                                     "are none")
    pl.add_argument("run", help="run directory")
    pl.add_argument("--out", help="where to write the figures (default: inside the run directory)")
    pl.set_defaults(func=_cmd_plot)

    cp = sub.add_parser("compare", help="regression gate: exit 1 when NEW is worse than BASE, 2 when "
                                        "the runs cannot be compared")
    cp.add_argument("base", help="baseline run directory")
    cp.add_argument("new", help="candidate run directory")
    cp.add_argument("--threshold", type=float,
                    help="minimum relative change that counts (default: the suite's)")
    cp.add_argument("--alpha", type=float,
                    help="significance level (default: the suite's regression.alpha, else 0.01)")
    cp.add_argument("--allow-env-mismatch", action="store_true",
                    help="compare even when the environment fingerprints differ")
    cp.add_argument("--allow-missing", action="store_true",
                    help="points ok in BASE but missing from NEW do not fail the gate")
    cp.add_argument("--markdown", metavar="FILE", help="also write the markdown summary here")
    cp.set_defaults(func=_cmd_compare)

    pf = sub.add_parser("profile", help="profile points of a run again (no timing; traces and ops.parquet "
                                        "in the run directory), from the suite the run recorded")
    pf.add_argument("run", help="run directory")
    pf.add_argument("--point", action="append", metavar="HASH",
                    help="only this point (its point_hash, or a unique prefix; repeatable)")
    pf.add_argument("--method", action="append", metavar="M",
                    help="only the points of this method (repeatable)")
    pf.add_argument("-q", "--quiet", action="store_true", help="no per-point lines")
    pf.set_defaults(func=_cmd_profile)

    mg = sub.add_parser("merge", help="join the run directories of one suite's shards (--shard i/n) into one "
                                      "run")
    mg.add_argument("runs", nargs="+", metavar="RUN", help="shard run directories")
    mg.add_argument("--out", required=True, help="the merged run directory (new or empty)")
    mg.add_argument("--allow-env-mismatch", action="store_true",
                    help="merge runs measured on machines whose fingerprints differ (rows keep host and GPU)")
    mg.add_argument("--no-report", action="store_true", help="skip the tables and plots after merging")
    mg.set_defaults(func=_cmd_merge)

    en = sub.add_parser("env", help="print this machine's environment fingerprint (JSON)")
    en.set_defaults(func=_cmd_env)

    tr = sub.add_parser("train", help="train a proxy model (small networks trained on procedural data)")
    tr.add_argument("proxy", nargs="?", help="proxy name (omit, or --list, to list them)")
    tr.add_argument("--out", help="output folder (default: runs/train/<proxy>); the committed weights "
                                  "live in harness/proxies/<proxy>/")
    tr.add_argument("--steps", type=int, help="optimiser steps (default: the proxy's recipe)")
    tr.add_argument("--seed", type=int, help="seed of the initialisation and the batches (default: recipe)")
    tr.add_argument("--threads", type=int, help="CPU threads (default: recipe; results depend on it)")
    tr.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    tr.add_argument("--resume", action="store_true", help="continue the training state in --out")
    tr.add_argument("--list", action="store_true", help="list the proxies")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_train)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``harness`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if _main_thread() else None
    try:
        return args.func(args, args_list)
    except BrokenPipeError:  # e.g. `harness run ... --dry-run | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except _user_errors() as e:
        plain = isinstance(e, FileNotFoundError) and e.args and isinstance(e.args[0], str)
        msg = e.args[0] if plain else str(e)
        print(f"harness {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a full disk, a missing permission, an unwritable --out/--markdown
        where = f"{e.filename}: " if e.filename else ""
        print(f"harness {args.command}: error: {where}{e.strerror or e} ({type(e).__name__}). The operating "
              "system refused a read or write; free space or choose a writable location. Nothing already "
              "recorded in a run directory is lost.", file=sys.stderr)
        return EXIT_IO
    except KeyboardInterrupt as e:
        print(f"\nharness {args.command}: interrupted", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(e, _Terminated) else EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _shard(text: str) -> tuple[int, int]:
    from harness.run.runner import parse_shard

    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
