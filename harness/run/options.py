"""How a run goes: the options of :func:`harness.run.runner.run_suite` (``harness run``'s flags)."""

from __future__ import annotations

from dataclasses import dataclass, field

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class RayOptions:
    """How points are placed on a Ray cluster.

    address: None starts a local Ray on this machine; "auto" joins the cluster ``ray start``
    started here; "ray://HOST:10001" connects a Ray client. gpus_per_point: GPUs each task holds
    (None: 1 when the points run on CUDA, else 0). cpus_per_point: CPUs each task holds (Ray sets
    the task's OMP_NUM_THREADS to it). max_in_flight: most tasks submitted at once (None: all;
    Ray queues them by resources). retries: extra attempts for a point whose task died.
    """

    address: str | None = None
    gpus_per_point: float | None = None
    cpus_per_point: float = 1.0
    max_in_flight: int | None = None
    retries: int = 0


@dataclass(frozen=True)
class RunOptions:
    """Everything :func:`~harness.run.runner.run_suite` takes besides the suite and the directory.

    resume: finish the run already in the directory (recorded points are skipped).
    order: ``grid``, ``interleave`` or ``shuffle`` (:mod:`harness.run.points`).
    allow_failures: the run's exit code is 0 even when points failed.
    progress: a progress bar on stderr. argv: the command line recorded in ``run.json`` (None: sys.argv).
    allow_env_mismatch: resume on a machine that differs from the one that started the run.
    max_points: run at most this many of the missing points, leaving the rest to a later resume
    (two revisions' runs can so alternate in short slices on one machine).
    nvtx: NVTX ranges and the CUDA profiler capture window (:mod:`harness.measure.markers`).
    memory_snapshot: "oom" or "all", CUDA allocator snapshots (:mod:`harness.measure.memory`).
    shard: (i, n) runs only shard i of n (:func:`harness.run.points.shard_points`); merge the shards'
    run directories with ``harness merge``.
    executor: "local" (this process) or "ray" (Ray tasks placed by ``ray``).
    cpu_allocator: "system" or "retain" (:mod:`harness.measure.cpu_alloc`; local executor only).
    """

    resume: bool = False
    order: str = "grid"
    allow_failures: bool = False
    progress: bool = True
    argv: list[str] | None = None
    allow_env_mismatch: bool = False
    max_points: int | None = None
    nvtx: bool = False
    memory_snapshot: str | None = None
    shard: tuple[int, int] | None = None
    executor: str = "local"
    ray: RayOptions = field(default_factory=RayOptions)
    cpu_allocator: str = "system"
