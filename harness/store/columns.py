"""Column names of the results store: one place, used by the runner, reports and compare.

``points.parquet`` is tidy: one row per point.

Identity: run_id, suite, point_hash, workload, method, preset, status, error, started_at,
    elapsed_s (wall time of the whole point, build + timing + evaluation).
Config: every resolved parameter by its own name (workload, method and common params:
    device, dtype, seed). Parameters a method does not have are missing (NaN/None).
Provenance (``PROVENANCE``): ``weights`` (label) and ``weights_sha256`` of the model's weights.
Placement (``PLACEMENT``): ``host``, ``gpu_name``, ``gpu_uuid`` the point ran on.
Timing (``TIMING``): summary of the per-sample device time in milliseconds.
Instruction counts (``INSTRUCTION_COUNTS``): instructions per call under Callgrind
    (``timing.mode: instructions``); absent from timed runs.
Telemetry (``TELEMETRY``): NVML on GPU; RSS / CPU time on CPU. Empty when unavailable.
Metrics: ``q_*`` quality vs ground truth, ``fid_*`` fidelity vs the reference method,
    ``work_*`` counters, ``bd_*_ms`` breakdown phases, ``eff_*`` efficiency (achieved FLOP/s and
    bandwidth, their fraction of the device's peak: :mod:`harness.measure.efficiency`). Their meaning
    and direction are in the run directory's ``metrics.json``.

``samples.parquet``: run_id, point_hash, sample (index), device_ms, host_ms (and ``instructions`` per
call where they were counted).
The run directory's files and ``run.json`` belong to :mod:`harness.store`.
"""

from __future__ import annotations

# identity / bookkeeping
RUN_ID = "run_id"
SUITE = "suite"
HASH = "point_hash"
WORKLOAD = "workload"
METHOD = "method"
PRESET = "preset"
STATUS = "status"
ERROR = "error"
STARTED_AT = "started_at"
ELAPSED_S = "elapsed_s"

IDENTITY = (RUN_ID, SUITE, HASH, WORKLOAD, METHOD, PRESET, STATUS, ERROR, STARTED_AT, ELAPSED_S)

# status values
OK = "ok"
FAILED = "failed"
OOM = "oom"
NAN = "nan"
STATUSES = (OK, FAILED, OOM, NAN)

# timing (device time per sample; host time per sample when a device timer was used)
LAT_MEDIAN = "latency_median_ms"
LAT_MEAN = "latency_mean_ms"
LAT_IQR = "latency_iqr_ms"
LAT_P10 = "latency_p10_ms"
LAT_P90 = "latency_p90_ms"
LAT_MIN = "latency_min_ms"
LAT_MAX = "latency_max_ms"
LAT_CV = "latency_cv"
N_SAMPLES = "n_samples"
N_WARMUP = "n_warmup"
CALLS_PER_SAMPLE = "calls_per_sample"  # calls timed together in one sample (CPU batching of short calls)
HOST_MEDIAN = "host_median_ms"
TIMER = "timer"  # "cuda_event" | "perf_counter" | "cuda_graph" | "callgrind"
THREADS = "threads"
STOP_REASON = "stop_reason"  # why sampling stopped: one of STOP_REASONS
STOP_MAX, STOP_CONVERGED, STOP_BUDGET = "max_samples", "converged", "budget"
STOP_COUNTED = "counted"  # instructions mode: min_samples counted calls, never more
STOP_REASONS = (STOP_MAX, STOP_CONVERGED, STOP_BUDGET, STOP_COUNTED)
STABLE = "stable"  # the samples' verdict (harness.measure.stability): True, False, None (too few)
UNSTABLE_WHY = "unstable_why"  # its reasons ("spread: IQR 35% of the median; ...")

TIMING = (
    LAT_MEDIAN, LAT_MEAN, LAT_IQR, LAT_P10, LAT_P90, LAT_MIN, LAT_MAX, LAT_CV,
    N_SAMPLES, N_WARMUP, CALLS_PER_SAMPLE, HOST_MEDIAN, TIMER, THREADS, STOP_REASON, STABLE, UNSTABLE_WHY,
)

# instruction counts (timing.mode: instructions; harness.measure.instructions), absent when timed
INSTRUCTIONS = "instructions"  # median over the samples of the instructions per call (Callgrind's Ir)
INSTRUCTIONS_MIN = "instructions_min"
INSTRUCTIONS_MAX = "instructions_max"
INSTRUCTIONS_SPREAD = "instructions_spread"  # (max - min) / median of the samples: 0 when they repeat exactly
INSTRUCTION_COUNTS = (INSTRUCTIONS, INSTRUCTIONS_MIN, INSTRUCTIONS_MAX, INSTRUCTIONS_SPREAD)

# telemetry
ENERGY_J = "energy_j"
ENERGY_SOURCE = "energy_source"  # "counter" | "integrated_power" | None
POWER_MEAN_W = "power_mean_w"
POWER_MAX_W = "power_max_w"
TEMP_MAX_C = "temp_max_c"
SM_CLOCK_MIN_MHZ = "sm_clock_min_mhz"
SM_CLOCK_MEAN_MHZ = "sm_clock_mean_mhz"
THROTTLE_REASONS = "throttle_reasons"  # OR of NVML clock-event reason bits seen (int)
THROTTLED = "throttled"  # any power/thermal slowdown bit seen (bool)
GPU_UTIL_MEAN_PCT = "gpu_util_mean_pct"
GPU_MEM_PEAK_MB = "gpu_mem_peak_mb"  # NVML device memory used, peak
TORCH_PEAK_ALLOC_MB = "torch_peak_alloc_mb"  # torch.cuda.max_memory_allocated
GPU_OTHER_PROCS = "gpu_other_procs"  # most compute processes besides this one seen on the device
RSS_PEAK_MB = "rss_peak_mb"
CPU_TIME_S = "cpu_time_s"

TELEMETRY = (
    ENERGY_J, ENERGY_SOURCE, POWER_MEAN_W, POWER_MAX_W, TEMP_MAX_C, SM_CLOCK_MIN_MHZ,
    SM_CLOCK_MEAN_MHZ, THROTTLE_REASONS, THROTTLED, GPU_UTIL_MEAN_PCT, GPU_MEM_PEAK_MB, GPU_OTHER_PROCS,
    TORCH_PEAK_ALLOC_MB, RSS_PEAK_MB, CPU_TIME_S,
)

# host load over the timed window (harness.measure.load): was anything else running?
LOAD_AVG_1M = "load_avg_1m"
CPU_OTHER_FRAC = "cpu_other_frac"  # share of the machine's CPU other processes used
CPU_STEAL_FRAC = "cpu_steal_frac"  # share the hypervisor gave to other guests
HOST_LOAD = (LOAD_AVG_1M, CPU_OTHER_FRAC, CPU_STEAL_FRAC)

# provenance: which weights a point ran with (label such as "proxy:vggt-proxy", "hf:ORG/NAME/FILE",
# a file name or "random"; sha256 prefix of the weight file, "" for random weights)
WEIGHTS = "weights"
WEIGHTS_SHA256 = "weights_sha256"
PROVENANCE = (WEIGHTS, WEIGHTS_SHA256)

# placement: where a point ran (any executor: the local runner, a Ray worker, a shard of a job array)
HOST = "host"
GPU_NAME = "gpu_name"  # None on CPU; a run spanning several GPU models is reported per model
GPU_UUID = "gpu_uuid"
PLACEMENT = (HOST, GPU_NAME, GPU_UUID)

# files a point wrote besides its rows (paths relative to the run directory)
MEMORY_SNAPSHOT = "memory_snapshot"  # profiles/<hash>.memory.pickle (harness run --memory-snapshot)
ARTIFACTS = (MEMORY_SNAPSHOT,)

# derived in reports (never stored by the runner)
SPEEDUP = "speedup"

# metric column prefixes
QUALITY_PREFIX = "q_"
FIDELITY_PREFIX = "fid_"
WORK_PREFIX = "work_"
BREAKDOWN_PREFIX = "bd_"
EFFICIENCY_PREFIX = "eff_"
#: every metric column starts with one of these (a parameter may not: it would read as a metric)
METRIC_PREFIXES = (QUALITY_PREFIX, FIDELITY_PREFIX, WORK_PREFIX, BREAKDOWN_PREFIX, EFFICIENCY_PREFIX)

# samples.parquet
SAMPLE = "sample"
DEVICE_MS = "device_ms"
HOST_MS = "host_ms"
SAMPLE_COLUMNS = (RUN_ID, HASH, SAMPLE, DEVICE_MS, HOST_MS)
