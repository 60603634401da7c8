"""MkDocs hook: reference tables generated from the code, so they cannot drift from it.

A page opts in with a marker line; the marker is replaced by Markdown built at build time:

- ``<!-- harness:methods -->``: every registered workload (name order) with its description,
  model presets and parameters, then each of its methods with its doc line and parameters
  (what ``harness list`` prints), plus the parameters common to every point;
- ``<!-- harness:columns -->``: the columns of ``points.parquet`` and ``samples.parquet`` from the
  columns module, and the metric columns (``q_``/``fid_``/``work_``) each workload declares.

A generator that raises fails the build (PluginError): a marker is never left in a page.
Registered in ``mkdocs.yml`` under ``hooks:``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from mkdocs.exceptions import PluginError

# harness is imported by the generators, when a page has a marker (it pulls in torch), after
# on_config has put the checkout first on sys.path.

REPO_ROOT = Path(__file__).resolve().parents[2]  # docs/hooks/ -> the repository root


def on_config(config: Any) -> Any:
    """Document the checkout's code, not some other installed copy of the harness."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return config


# ---------------------------------------------------------------- Markdown helpers


def _cell(value: Any) -> str:
    """One table cell: no newlines, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _text(value: Any) -> str:
    """A prose cell: also no raw HTML (a help text may say ``<phase>``)."""
    return _cell(value).replace("<", "&lt;")


def _code(value: Any) -> str:
    return f"`{_cell(value)}`" if str(value) != "" else ""


def _fmt(value: Any) -> str:
    """A value as `harness list` prints it (harness.params.format_value)."""
    from harness.params import format_value

    return format_value(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- <!-- harness:methods -->


def _params_table(cls: type) -> str:
    """The parameters of a parameter dataclass: name, type, default, allowed values, help."""
    from harness.params import describe

    infos = describe(cls)
    if not infos:
        return "*(no parameters)*"
    return _table(("parameter", "type", "default", "allowed", "help"),
                  ((_code(i.name), _code(i.type_name), _code(_fmt(i.default)), _text(i.allowed()),
                    _text(i.help)) for i in infos))


def _presets_table(presets: dict[str, dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for shape in presets.values() for k in shape))
    rows = ((_code(name), *(_text(_fmt(shape.get(k, ""))) for k in keys)) for name, shape in presets.items())
    return _table(("preset", *keys), rows)


def methods_markdown() -> str:
    """Workloads, methods and their parameters, from the registry."""
    from harness import registry
    from harness.workloads.base import CommonParams

    registry.load_builtins()
    out = ["## Common parameters", "", "Every point of every workload has these.", "",
           _params_table(CommonParams), ""]
    for w in registry.workload_names():
        cls = registry.get_workload(w)
        methods = registry.method_names(w)
        out += [f"## Workload `{w}`", "", _text(cls.doc), "",
                "Methods: " + ", ".join(f"[`{m}`](#{w}-{m})" for m in methods) + ".", "",
                f"### Parameters of `{w}`", "", _params_table(cls.Params), ""]
        presets = cls.model_presets()
        if presets:
            out += [f"### Model presets of `{w}`", "", _presets_table(presets), ""]
        for m in methods:
            spec = registry.get_method(w, m)
            out += [f"### Method `{m}` {{#{w}-{m}}}", "", _text(spec.doc), "", _params_table(spec.params), ""]
    return "\n".join(out)


# ---------------------------------------------------------------- <!-- harness:columns -->

#: The groups of fixed columns, by their tuple in the columns module (a renamed tuple fails the build).
COLUMN_GROUPS = (
    ("IDENTITY", "identity"),
    ("PROVENANCE", "provenance"),
    ("PLACEMENT", "placement"),
    ("TIMING", "timing"),
    ("INSTRUCTION_COUNTS", "instruction counts"),
    ("TELEMETRY", "telemetry"),
    ("HOST_LOAD", "host load"),
    ("ARTIFACTS", "files"),
)

#: What each fixed column means. A column the module defines without an entry here, or an entry
#: for a column the module no longer defines, fails the build: document it here.
COLUMN_MEANINGS = {
    "run_id": "the run the row belongs to (a merged run keeps each shard's)",
    "suite": "the suite's name",
    "point_hash": "sha256 of workload + method + every resolved parameter; equal configs pair across runs",
    "workload": "the registered workload",
    "method": "the registered method",
    "preset": "the suite preset the run used",
    "status": "`ok`, `failed`, `oom` or `nan`",
    "error": "type, message and innermost frame of a point that did not finish ok",
    "started_at": "when the point started",
    "elapsed_s": "wall time of the whole point: build, timing, evaluation",
    "weights": "`random`, `proxy:NAME`, `hf:ORG/NAME/FILE` or a file name",
    "weights_sha256": "first 16 hex of the weight file's sha256 (empty for random weights)",
    "host": "the machine the point ran on (any executor)",
    "gpu_name": "its GPU model (empty on CPU)",
    "gpu_uuid": "its GPU's UUID (empty on CPU)",
    "latency_median_ms": "median of the timed samples",
    "latency_mean_ms": "mean of the timed samples",
    "latency_iqr_ms": "p75 - p25 of the timed samples",
    "latency_p10_ms": "10th percentile of the timed samples",
    "latency_p90_ms": "90th percentile of the timed samples",
    "latency_min_ms": "fastest sample",
    "latency_max_ms": "slowest sample",
    "latency_cv": "std / mean of the samples",
    "n_samples": "timed samples taken",
    "n_warmup": "warm-up calls made (on CPU including the batches that chose `calls_per_sample`)",
    "calls_per_sample": "calls timed together in one sample (CPU: short calls are batched up to "
                        "`timing.min_sample_ms`; each sample is the batch's time / calls); 1 on CUDA",
    "host_median_ms": "host wall time per call (launch overhead on GPU)",
    "timer": "`cuda_event`, `cuda_graph`, `perf_counter` or `callgrind` (instructions counted; the "
             "latency columns are then wall times under valgrind, not comparable to timed runs)",
    "instructions": "instructions per call (Callgrind's `Ir`, the call's Python overhead included): the "
                    "median over the counted samples",
    "instructions_min": "fewest instructions per call among the counted samples",
    "instructions_max": "most instructions per call among the counted samples",
    "instructions_spread": "(max - min) / median of the counted samples: 0 when the count repeats exactly",
    "threads": "torch CPU threads the point ran with",
    "load_avg_1m": "the 1-minute load average when the point started",
    "cpu_other_frac": "share of the machine's CPU other processes used while the point ran (`/proc/stat` "
                      "busy time minus this process's CPU time); above 0.2 it was measured under load",
    "gpu_other_procs": "most compute processes besides this one NVML listed on the device while the point "
                       "was timed (inside a container one entry is taken to be this process)",
    "cpu_steal_frac": "share of the CPU time the hypervisor gave to other guests while the point ran",
    "stop_reason": "why sampling stopped: `max_samples`, `converged` (spread under `target_rel_iqr`), "
                   "`budget`, or `counted` (instructions mode: `min_samples` counted calls)",
    "stable": "the samples' stability verdict: true, false (see `unstable_why`) or empty with fewer than 3 "
              "samples",
    "unstable_why": "why a point is unstable: spread, outliers, a trend across the sampling window (with "
                    "their figures)",
    "energy_j": "energy over the timed window",
    "energy_source": "`counter` (NVML total-energy delta) or `integrated_power` (trapezoid over power "
                     "samples)",
    "power_mean_w": "mean board power",
    "power_max_w": "largest sampled board power",
    "temp_max_c": "hottest sampled GPU temperature",
    "sm_clock_min_mhz": "lowest sampled SM clock",
    "sm_clock_mean_mhz": "mean SM clock",
    "throttle_reasons": "OR of the NVML clock-event bits seen",
    "throttled": "a SW power cap, HW slowdown, thermal or power-brake bit was seen",
    "gpu_util_mean_pct": "mean GPU utilization",
    "gpu_mem_peak_mb": "peak device memory used (NVML, device-wide)",
    "torch_peak_alloc_mb": "the CUDA allocator's peak over the timed window",
    "rss_peak_mb": "the kernel's peak RSS over the timed window",
    "cpu_time_s": "process CPU time over the timed window",
    "memory_snapshot": "the CUDA memory snapshot the point wrote (`--memory-snapshot`)",
}


def _columns_module() -> ModuleType:
    """The columns module of the results store."""
    from harness.store import columns

    return columns


def _fixed_columns(cols: ModuleType) -> str:
    named = [(title, col) for attr, title in COLUMN_GROUPS for col in getattr(cols, attr)]
    missing = [col for _, col in named if col not in COLUMN_MEANINGS]
    stale = sorted(set(COLUMN_MEANINGS) - {col for _, col in named})
    if missing or stale:
        raise ValueError(f"COLUMN_MEANINGS in {Path(__file__).name} is out of date with {cols.__name__}: "
                         f"undocumented {missing}, no longer defined {stale}")
    return _table(("group", "column", "meaning"),
                  ((title, _code(col), COLUMN_MEANINGS[col]) for title, col in named))


BETTER = {True: "higher", False: "lower", None: ""}  # MetricInfo.higher_is_better, in words


def _workload_metrics() -> str:
    """The q_/fid_/work_ columns each registered workload declares (its metrics())."""
    from harness import registry

    registry.load_builtins()
    out = []
    for w in registry.workload_names():
        metrics = registry.get_workload(w)().metrics()
        rows = ((_code(col), m.kind, _text(m.unit), BETTER[m.higher_is_better],
                 "" if m.tolerance is None else _fmt(m.tolerance), _text(m.help))
                for col, m in metrics.items())
        out += [f"### Metrics of `{w}`", "",
                _table(("column", "kind", "unit", "better", "gate tolerance", "meaning"), rows)
                if metrics else "*(none declared)*", ""]
    return "\n".join(out)


def columns_markdown() -> str:
    """Column names from the columns module and the workloads' metric declarations."""
    cols = _columns_module()
    prefixes = ", ".join(_code(p + "*") for p in cols.METRIC_PREFIXES)
    return "\n".join([
        "### Fixed columns", "",
        f"Every row has these (`{cols.__name__}`); besides them a row has one column per resolved "
        f"parameter and the metric columns ({prefixes}).", "",
        _fixed_columns(cols), "",
        f"`{cols.STATUS}` is one of " + ", ".join(_code(s) for s in cols.STATUSES) + ". "
        f"`{cols.SPEEDUP}` is derived by the reports, never stored.", "",
        "### `samples.parquet`", "",
        "One row per timed sample: " + ", ".join(_code(c) for c in cols.SAMPLE_COLUMNS) + ".", "",
        _workload_metrics(),
    ])


# ---------------------------------------------------------------- the hook

GENERATORS: dict[str, Callable[[], str]] = {
    "<!-- harness:methods -->": methods_markdown,
    "<!-- harness:columns -->": columns_markdown,
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each marker line with its generated Markdown; a failing generator fails the build."""
    lines = markdown.split("\n")
    for i, line in enumerate(lines):
        generate = GENERATORS.get(line.strip())
        if generate is None:
            continue
        try:
            lines[i] = generate()
        except Exception as e:  # noqa: BLE001 - any failure must stop the build, with its cause
            raise PluginError(f"{page.file.src_path}: could not generate {line.strip()}: "
                              f"{type(e).__name__}: {e}") from e
    return "\n".join(lines)
