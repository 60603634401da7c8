"""Resuming a run: the directory must hold this suite's run, started on a comparable machine."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import registry
from harness.errors import RunError
from harness.measure.env import comparable, fingerprint
from harness.run.rows import now_iso
from harness.store import (
    ENV_FILE,
    MANIFEST_FILE,
    SUITE_FILE,
    RunDirError,
    RunWriter,
    check_writable,
    is_run_dir,
    note_resume,
    read_env,
    read_manifest,
    read_suite_file,
)
from harness.store.writer import write_suite_file
from harness.suite import Suite
from harness.workloads.base import Point


def common_seed(points: Sequence[Point]) -> int | None:
    """The seed every point shares (recorded in the fingerprint), or None when they differ."""
    seeds = {p.seed for p in points}
    return seeds.pop() if len(seeds) == 1 else None


def check_resumable(out: Path) -> None:
    """RunError unless ``out`` is a run directory (checked before anything is created there)."""
    if not out.is_dir():
        what = "is a file, not a directory" if out.exists() else "does not exist"
        raise RunError(f"cannot resume {out}: it {what}; --resume takes the run directory a `harness run` "
                       "wrote (start a new run with --out instead)")
    if not is_run_dir(out):
        raise RunError(
            f"cannot resume {out}: it is not a run directory ({MANIFEST_FILE} is missing); "
            "start a new run with --out instead"
        )


def open_for_resume(out: Path, suite: Suite, argv: list[str], points: Sequence[Point],
                     allow_env_mismatch: bool,
                     shard: tuple[int, int] | None = None) -> tuple[RunWriter, str, list[str]]:
    """Checks that ``out`` holds this suite's run, started on a comparable machine; records the
    resumption (with this machine's fingerprint) and repairs the logs. Raises RunError."""
    check_resumable(out)
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
    env = fingerprint(argv=argv, seed=common_seed(points), plugins=registry.plugin_record())
    diffs = comparable(stored_env, env) if stored_env else [
        f"{ENV_FILE} is missing, so the machine that started the run is unknown"]
    if diffs and not allow_env_mismatch:
        raise RunError(
            f"cannot resume {out}: this machine differs from the one that started the run "
            f"({'; '.join(diffs)}), so its timings would not be comparable with the recorded ones. Resume "
            "where the run started, or pass --allow-env-mismatch to mix them (each resumption's "
            f"fingerprint is recorded in {MANIFEST_FILE})."
        )
    check_writable(out, advice="Free space (or restore write permission) there, then resume again; "
                               "every point already recorded is kept.")
    note_resume(out, now_iso(), argv, env)
    writer, notes = RunWriter.open_existing(out)
    try:
        read_suite_file(out)
    except RunDirError as e:  # the suite given has the run's hash: its resolved form is the same
        write_suite_file(out, suite.resolved)
        notes.append(f"{SUITE_FILE} was missing or damaged ({str(e).split('; ')[0]}); written again from the "
                     "suite given (same suite hash)")
    return writer, str(manifest.get("run_id")), notes
