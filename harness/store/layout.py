"""The run directory: its files, its manifest, and whether a path may hold a new run.

Layout of ``RUN_DIR``::

    run.json               manifest: schema version, run id, suite name, suite hash, argv, created_at
    suite.resolved.yaml    the suite after preset and --set overrides
    env.json               environment fingerprint
    metrics.json           meaning/direction of every q_/fid_/work_ column
    points.jsonl           durable append-only log, one JSON row per finished point
    points.parquet         the same rows as a table (rewritten after every point)
    samples.jsonl / samples.parquet   raw per-sample timings

Rows are appended the moment a point finishes, so a killed run keeps every finished
point; the JSONL logs are the source of truth and the parquet tables are exports built from
them (see :class:`RunWriter`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.store.files import write_json

#: version of the run-directory layout and columns; :func:`load` refuses other versions
SCHEMA_VERSION = 2  # 2: suite.resolved.yaml records which parameters belong to whom
# run directory files
MANIFEST_FILE = "run.json"
SUITE_FILE = "suite.resolved.yaml"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.json"
POINTS_LOG = "points.jsonl"
POINTS_FILE = "points.parquet"
SAMPLES_LOG = "samples.jsonl"
SAMPLES_FILE = "samples.parquet"
OPS_LOG = "ops.jsonl"
OPS_FILE = "ops.parquet"
PROFILED_AT = "profiled_at"  # ops rows of one profiled pass share this stamp
PROFILES_DIR = "profiles"
LOCK_FILE = ".lock"  # held by the process writing the run; says which one
RESUMED_KEY = "resumed"  # run.json: one entry (time, argv, env) per resumption


class RunDirError(HarnessError, ValueError):
    """A path that is not a readable run directory of this harness's schema (one paragraph)."""


#: a suite name: it becomes a file-name component of run directories (``runs/<name>-<timestamp>``)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
NAME_RULE = ("letters, digits, '.', '_', '+' and '-', starting with a letter or digit, at most 100 "
             "characters (it names the run directory, runs/<name>-<timestamp>)")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a run directory (None: it can), with a safe name to use instead."""
    if NAME_PATTERN.fullmatch(name):
        return None
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-.")[:100] or "suite"
    return f"{name!r} is not a file-name component; allowed: {NAME_RULE}; for example {safe!r}"


def run_dir_in(parent: str | os.PathLike, name: str) -> Path:
    """``parent/name``, refused (RunDirError) unless it is a direct child of ``parent``: a run
    directory is never created outside the folder it is meant for."""
    problem = name_problem(name)
    if problem is not None:
        raise RunDirError(f"cannot name a run directory in {parent}: {problem}")
    return Path(parent) / name


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a run (its manifest exists)."""
    return (Path(path) / MANIFEST_FILE).exists()


def enclosing_run(path: str | os.PathLike) -> Path | None:
    """The run directory ``path`` lies in (at any depth), or None: a file written there would mix
    with (or replace) the run's own files."""
    return next((p for p in Path(os.path.abspath(path)).parents if is_run_dir(p)), None)


def read_manifest(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``run.json`` of a run directory, its schema version checked.

    Raises RunDirError naming the path and what to do when it is missing, unreadable, or
    written by a harness with another results schema."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST_FILE
    if not path.exists():
        raise RunDirError(f"{run_dir} is not a run directory: {MANIFEST_FILE} is missing "
                          "(a run directory is what `harness run` writes under --out)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        msg = f"{path} cannot be read as JSON ({e}); it is not a run this harness wrote"
        raise RunDirError(msg) from None
    problem = manifest_problem(manifest)
    if problem is not None:
        raise RunDirError(f"{path} is damaged ({problem}); restore it from a copy of the run, or re-run its "
                          f"suite (the suite is in {run_dir / SUITE_FILE})")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        wrote = manifest.get("harness_version", "an unknown version")
        raise RunDirError(
            f"{run_dir} was written with results schema version {version} (harness {wrote}); this harness "
            f"reads version {SCHEMA_VERSION}. Re-run its suite with this harness (the suite is in "
            f"{run_dir / SUITE_FILE}), or read it with the harness version that wrote it."
        )
    return manifest


#: run.json fields and the types they hold (a field may be absent; present, it has this type)
MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "suite": (str,), "suite_hash": (str,), "argv": (list,), "n_points": (int,),
    "suite_points": (int,), "created_at": (str,), "shard": (str, type(None)), RESUMED_KEY: (list,),
    "merged_from": (list,),
}


def manifest_problem(manifest: Any) -> str | None:
    """What makes a parsed ``run.json`` unusable (None: nothing): not an object, no integer
    ``schema_version``, or a field of the wrong type."""
    if not isinstance(manifest, dict):
        return f"a JSON {type(manifest).__name__}, not an object"
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        return f"schema_version is {version!r}, not a number"
    for key, types in MANIFEST_TYPES.items():
        if key in manifest and (not isinstance(manifest[key], types) or isinstance(manifest[key], bool)):
            return f"{key} is {manifest[key]!r}, not {' or '.join(t.__name__ for t in types)}"
    return None


def read_env(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``env.json`` of a run ({} when absent); RunDirError naming the file when it is damaged."""
    path = Path(run_dir) / ENV_FILE
    if not path.exists():
        return {}
    return read_json_object(path)


def read_json_object(path: Path) -> dict[str, Any]:
    """A run file that holds one JSON object (``env.json``, ``metrics.json``); RunDirError naming
    it when it cannot be read or holds something else."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path} cannot be read as JSON ({type(e).__name__}: {str(e).splitlines()[0]}); "
                          "restore it from a copy of the run, or start a new run") from None
    if not isinstance(obj, dict):
        raise RunDirError(f"{path} is damaged (a JSON {type(obj).__name__}, not an object); restore it from "
                          "a copy of the run, or start a new run")
    return obj


def note_resume(run_dir: str | os.PathLike, at: str, argv: list[str], env: dict[str, Any]) -> dict[str, Any]:
    """Record one resumption (time, command line, machine fingerprint) in ``run.json``."""
    manifest = read_manifest(run_dir)
    manifest.setdefault(RESUMED_KEY, []).append({"at": at, "argv": argv, "env": env})
    write_json(Path(run_dir) / MANIFEST_FILE, manifest)
    return manifest


def resume_command_line(argv: list[str], run_dir: str | os.PathLike, suite: str = "SUITE") -> str:
    """The shell command (quoted) that finishes the run in ``run_dir``: ``argv`` (``harness run
    ...``, as recorded in ``run.json``) with its ``--out``/``--resume`` replaced by ``--resume
    RUN_DIR``; without such an ``argv``, ``harness run SUITE --resume RUN_DIR`` and a reminder."""
    argv = [str(a) for a in argv]
    if len(argv) < 3 or argv[1] != "run":
        return (shlex.join(["harness", "run", suite, "--resume", str(run_dir)])
                + " (with the run's --preset/--set options)")
    kept, skip = [], False
    for a in argv[2:]:
        if skip:
            skip = False
        elif a in ("--out", "--resume"):
            skip = True
        elif not a.startswith(("--out=", "--resume=")):
            kept.append(a)
    return shlex.join(["harness", "run", *kept, "--resume", str(run_dir)])
