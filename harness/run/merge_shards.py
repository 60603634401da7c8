"""``harness merge RUN... --out DIR``: join the run directories of one suite's shards into one run.

Shards come from ``harness run SUITE --shard i/n`` (a job array: SLURM ``--array``, a Kubernetes
Indexed Job) or from any runs of the same resolved suite that cover disjoint points. The merged
directory has the same files and schema as a run made in one piece; every row keeps its own
``run_id``, ``host``, ``gpu_name`` and ``gpu_uuid``, and ``run.json`` lists the merged runs
(``merged_from``: directory, run id, shard, machine). Refused, before anything is written: inputs
that are not run directories or are still being written, runs of different suites (suite hash),
runs made on machines whose fingerprints differ in what matters for timing (unless
``allow_env_mismatch``), and a point recorded by two inputs.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.measure.env import CPU_MODEL, GPU_NAME, comparable
from harness.store import (
    METRICS_FILE,
    PROFILES_DIR,
    RESUMED_KEY,
    RunDirError,
    RunLogs,
    RunWriter,
    check_new_run_dir,
    check_writable,
    in_use_message,
    lock_holder,
    read_env,
    read_json_object,
    read_logs,
    read_manifest,
    read_suite_file,
    resume_command_line,
    write_logs,
)
from harness.store import columns as C


class MergeError(HarnessError, ValueError):
    """Run directories that cannot be merged (the message says which and why)."""


@dataclass
class MergeSummary:
    """What ``harness merge`` did: the merged directory, how many runs and points went into it."""

    out: Path
    runs: int
    points: int
    suite_points: int | None

    def line(self) -> str:
        """The one line the CLI prints."""
        of = f" of the suite's {self.suite_points}" if self.suite_points else ""
        return f"merged {self.runs} run(s): {self.points}{of} points in {self.out}"


def merge_runs(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
               allow_env_mismatch: bool = False) -> MergeSummary:
    """Merge ``run_dirs`` into the new run directory ``out_dir``; raises MergeError."""
    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 1:
        raise MergeError("harness merge needs at least one run directory")
    if len({d.resolve() for d in dirs}) != len(dirs):
        raise MergeError("a run directory is named twice; give each shard once")
    manifests, envs = [], []
    for d in dirs:
        holder = lock_holder(d)
        if holder is not None:
            raise MergeError(in_use_message(d, holder))
        try:
            manifests.append(read_manifest(d))
            envs.append(read_env(d))
            read_suite_file(d)  # damaged or missing: said before anything is written
        except RunDirError as e:
            raise MergeError(str(e)) from None
    first = manifests[0]
    for d, m in zip(dirs[1:], manifests[1:]):
        if m.get("suite_hash") != first.get("suite_hash"):
            raise MergeError(
                f"{d} holds a run of suite {m.get('suite')!r} (hash {m.get('suite_hash')}), {dirs[0]} one of "
                f"{first.get('suite')!r} (hash {first.get('suite_hash')}): only shards of one resolved suite "
                "(same file, --preset and --set) can be merged")
    for d, env in zip(dirs[1:], envs[1:]):
        diffs = comparable(envs[0], env)
        if diffs and not allow_env_mismatch:
            raise MergeError(
                f"{d} was measured on a machine that differs from {dirs[0]}'s ({'; '.join(diffs)}); their "
                "latencies are not comparable. Merge runs of one machine type, or pass --allow-env-mismatch "
                "(every row keeps its host and GPU).")
    logs = [read_logs(d) for d in dirs]
    for d, m, lg in zip(dirs, manifests, logs):
        bad = [x for x in lg.damaged if not x.torn_tail]
        if bad:
            shown = "; ".join(x.describe() for x in bad[:3]) + ("; ..." if len(bad) > 3 else "")
            again = resume_command_line(m.get("argv") or [], d, str(m.get("suite_source") or "SUITE"))
            raise MergeError(f"{d}: {shown}. A merge would drop what such a line holds; resume that shard "
                             f"first (it moves damaged lines aside and runs their points again): {again}")
    seen: dict[str, Path] = {}
    for d, lg in zip(dirs, logs):
        for r in lg.points:
            h = r.get(C.HASH)
            if h in seen and seen[h] != d:
                raise MergeError(f"point {h} is recorded in both {seen[h]} and {d}: shards must be disjoint "
                                 "(merge the runs of one --shard i/n split, or drop one of them)")
            seen[h] = d
    out = Path(out_dir)
    try:
        check_new_run_dir(out, resumable=False)
        check_writable(out)
    except RunDirError as e:
        raise MergeError(str(e)) from None
    _write(out, dirs, manifests, envs, logs)
    total = first.get("suite_points")
    return MergeSummary(out=out, runs=len(dirs), points=len(seen),
                        suite_points=int(total) if isinstance(total, int) else None)


def _without_shard(argv: list[str]) -> list[str]:
    """A shard's command line without its ``--shard I/N`` (``--shard=I/N``)."""
    out: list[str] = []
    skip = False
    for a in map(str, argv):
        if skip:
            skip = False
        elif a == "--shard":
            skip = True
        elif not a.startswith("--shard="):
            out.append(a)
    return out


def _write(out: Path, dirs: list[Path], manifests: list[dict[str, Any]], envs: list[dict[str, Any]],
           logs: list[RunLogs]) -> None:
    first = manifests[0]
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    merged_from = [{"run_dir": str(d), "run_id": m.get("run_id"), "shard": m.get("shard"),
                    "n_points": len(lg.points), "hostname": env.get("hostname"),
                    "gpu_name": env.get(GPU_NAME), "cpu_model": env.get(CPU_MODEL),
                    RESUMED_KEY: m.get(RESUMED_KEY, [])}
                   for d, m, env, lg in zip(dirs, manifests, envs, logs)]
    total = first.get("suite_points")
    manifest = {k: v for k, v in first.items() if k not in ("schema_version", RESUMED_KEY)}
    manifest.update({
        "run_id": f"{first.get('suite')}-merged-{stamp}-{os.urandom(3).hex()}",
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "shard": None,
        "argv": _without_shard(first.get("argv") or []),  # the merged run resumes without --shard
        "n_points": total if isinstance(total, int) else sum(len(lg.points) for lg in logs),
        "merged_from": merged_from,
    })
    suite = read_suite_file(dirs[0])
    metrics: dict[str, Any] = {}
    for d in dirs:
        path = d / METRICS_FILE
        if path.exists():
            metrics.update(read_json_object(path))
    env = dict(envs[0])
    peaks: dict[str, Any] = {}
    for e in envs:  # each shard calibrated its own peaks; the first shard's win where keys collide
        for k, v in (e.get("peaks") or {}).items():
            peaks.setdefault(k, v)
    env["peaks"] = peaks
    writer = RunWriter.create(out, manifest, suite, env, metrics)
    write_logs(out, RunLogs(points=[r for lg in logs for r in lg.points],
                            samples=[r for lg in logs for r in lg.samples],
                            ops=[r for lg in logs for r in lg.ops]))
    for d in dirs:
        src = d / PROFILES_DIR
        if src.is_dir():
            shutil.copytree(src, out / PROFILES_DIR, dirs_exist_ok=True)
    writer.flush_tables()
