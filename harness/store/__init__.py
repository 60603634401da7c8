"""The run directory: files, lock, manifest, per-point writes, resume repairs, loading.

This package owns the on-disk format; nothing else writes a run directory. Its public names are
importable from here (``from harness.store import load, RunWriter``):

- :mod:`~harness.store.layout`: the files of a run directory, the manifest, :class:`RunDirError`
- :mod:`~harness.store.files`: atomic writes and JSON-lines logs (torn tails repaired)
- :mod:`~harness.store.lock`: one writing process at a time
- :mod:`~harness.store.checks`: whether a directory may receive a new run
- :mod:`~harness.store.writer`: :class:`RunWriter`, one durable row per finished point
- :mod:`~harness.store.load`: :func:`load` a run into DataFrames
- :mod:`~harness.store.columns`: the name of every column of ``points.parquet``
"""

from harness.store.checks import check_new_run_dir, check_writable
from harness.store.files import DamagedLine, atomic_write_bytes, read_jsonl, repair_torn_tail, write_json
from harness.store.layout import (
    ENV_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    OPS_FILE,
    OPS_LOG,
    POINTS_FILE,
    POINTS_LOG,
    PROFILED_AT,
    PROFILES_DIR,
    RESUMED_KEY,
    SAMPLES_FILE,
    SAMPLES_LOG,
    SCHEMA_VERSION,
    SUITE_FILE,
    RunDirError,
    enclosing_run,
    is_run_dir,
    name_problem,
    note_resume,
    read_env,
    read_json_object,
    read_manifest,
    resume_command_line,
    run_dir_in,
)
from harness.store.load import RunData, load, read_ops, read_suite_file, read_tables
from harness.store.lock import RunLock, in_use_message, lock_holder
from harness.store.writer import RunLogs, RunWriter, read_logs, write_logs

__all__ = [
    "ENV_FILE", "LOCK_FILE", "MANIFEST_FILE", "METRICS_FILE", "OPS_FILE", "OPS_LOG", "POINTS_FILE",
    "POINTS_LOG", "PROFILED_AT", "PROFILES_DIR", "RESUMED_KEY", "SAMPLES_FILE", "SAMPLES_LOG",
    "SCHEMA_VERSION", "SUITE_FILE", "DamagedLine", "RunData", "RunDirError", "RunLock", "RunLogs",
    "RunWriter", "atomic_write_bytes", "check_new_run_dir", "check_writable", "enclosing_run",
    "in_use_message", "is_run_dir", "load", "lock_holder", "name_problem", "note_resume", "read_env",
    "read_json_object", "read_jsonl", "read_logs", "read_manifest", "read_ops", "read_suite_file",
    "read_tables", "repair_torn_tail", "resume_command_line", "run_dir_in", "write_json", "write_logs",
]
