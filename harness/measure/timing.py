"""Timer: warm-up, adaptive sampling, CUDA events or the host clock.

CONTRACT (filled in by the timing work; the names below are fixed):

    timer = Timer(TimingConfig(...))
    m = timer.measure(fn, device="cpu")     # fn: zero-arg callable; returns its output
    m.device_ms, m.host_ms, m.output, m.summary()  # summary() -> {columns.LAT_MEDIAN: ..., ...}

How one point is timed:

1. Warm-up: call ``fn`` until at least ``warmup_n`` calls were made AND ``warmup_ms`` has
   passed (on CUDA each warm-up call is synchronized so the time is real device time).
2. Sampling: CPU: ``time.perf_counter`` around the call; a call shorter than ``min_sample_ms``
   is timed in batches of k calls (k = 1, 2, 5, 10, ..., found in more warm-up calls after the
   warm-up, or without one on the first samples, which are then dropped and counted as warm-up:
   as ``timeit``'s autorange and ``torch.utils.benchmark`` do; with ``warmup_n=0`` a first call
   that already lasts ``min_sample_ms`` is a sample, cold as it is: warm up to avoid that),
   each sample being the batch's time / k, so the clock's own cost and the bookkeeping between
   samples stay out of sub-millisecond figures (k is the ``calls_per_sample`` column). CUDA: a
   ``torch.cuda.Event`` pair per sample on the current stream plus the host clock around the
   call (``host_ms`` shows launch overhead); samples are taken in batches with ONE
   synchronize per batch, never one per sample.
3. Stopping (checked after every sample on CPU, after every batch on CUDA; see
   :func:`stop_reason`): ``max_samples`` reached; or, once ``min_samples`` are in, the spread
   IQR/median is below ``target_rel_iqr`` (needs at least 3 samples) or ``budget_s`` is spent.

Options on CUDA: ``flush_l2`` zeroes a buffer twice the L2 size before each sample (outside
the event pair), ``cuda_graph`` captures ``fn`` once on a side stream after warm-up and times
graph replays. Both are ignored on CPU with one logged warning.

Reading eager CUDA numbers: when fn is shorter than its own launch cost, the GPU idles
between samples and the event pair also spans the launch gap (host_ms tells); a cold-L2 flush
or graph mode keeps the queue full and shows kernel time alone.

Instructions (``mode: instructions``): the warm-up, then ``min_samples`` single calls each counted
under Callgrind (:mod:`harness.measure.instructions`; the process must run under valgrind, as
``harness run`` arranges), their wall times kept beside the counts.

Every raw sample is kept; :func:`summarize` turns them into the ``columns.TIMING`` row.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.measure import markers
from harness.measure.devices import parse_device, resolve_device
from harness.measure.instructions import Counter
from harness.measure.stability import judge
from harness.params import did_you_mean, param
from harness.store import columns as C

log = logging.getLogger(__name__)

TIMER_CPU = "perf_counter"
TIMER_CUDA = "cuda_event"
TIMER_GRAPH = "cuda_graph"
TIMER_CALLGRIND = "callgrind"  # instructions counted; the times are wall times under valgrind

MODE_TIME = "time"
MODE_INSTRUCTIONS = "instructions"
MODES = (MODE_TIME, MODE_INSTRUCTIONS)

MIN_SAMPLES_FOR_IQR = 3
DEFAULT_L2_FLUSH_BYTES = 256 * 2**20  # when the device does not report its L2 size
L2_FLUSH_FACTOR = 2  # flush buffer = this many times the reported L2 size
DEFAULT_CUDA_BATCH = 10  # samples per synchronize once min_samples are in
MAX_CALLS_PER_SAMPLE = 10**6  # CPU batching never times more calls than this in one sample

# stop reasons recorded in Measurement.stop_reason
STOP_MAX, STOP_CONVERGED, STOP_BUDGET = C.STOP_MAX, C.STOP_CONVERGED, C.STOP_BUDGET
STOP_COUNTED = C.STOP_COUNTED

_warned: set[str] = set()  # warnings already logged in this process


@dataclass(frozen=True)
class TimingConfig:
    """How one point is timed. Units are in the names."""

    warmup_n: int = param(2, "warm-up calls before sampling (at least this many)", range=(0, None))
    warmup_ms: float = param(0.0, "keep warming up until this much time has passed", range=(0, None))
    min_samples: int = param(5, "never stop before this many samples", range=(1, None))
    max_samples: int = param(50, "never take more than this many samples", range=(1, None))
    budget_s: float = param(10.0, "stop sampling once this much time was spent (after min_samples)",
                            range=(0, None))
    target_rel_iqr: float = param(0.05, "stop early when IQR/median falls under this", range=(0, None))
    min_sample_ms: float = param(
        1.0, "on CPU, batch calls so each sample lasts at least this long (the clock's own cost then "
        "stays far below 1% of a sample; the sample is the batch's time / calls); 0: one call per sample",
        range=(0, None))
    flush_l2: bool = param(False, "on CUDA, zero a buffer larger than L2 before each sample (cold cache)")
    cuda_graph: bool = param(False, "on CUDA, capture fn in a CUDA graph and time graph replays")
    mode: str = param(
        MODE_TIME, "time: time each call (host clock or CUDA events); instructions: count each call's CPU "
        "instructions under valgrind's Callgrind (min_samples counted calls after the warm-up calls; "
        "CPU only; the run re-executes itself under valgrind)", choices=MODES)


@dataclass
class Measurement:
    """Raw samples of one point. device_ms: per-sample time (CUDA events on GPU, host clock on
    CPU); host_ms: per-sample host wall time (same as device_ms on CPU).

    n_warmup: warm-up calls actually made (graph mode adds the side-stream call before capture).
    stop_reason: why sampling stopped ("max_samples", "converged", "budget"; "" if unknown).
    sampling_s: host wall time spent in the sampling phase (warm-up excluded).
    calls_per_sample: calls of fn timed together in one sample (CPU batching of short calls; each
    sample is the batch's time divided by it); 1 on CUDA.
    """

    device_ms: list[float]
    host_ms: list[float]
    n_warmup: int
    timer: str
    threads: int
    output: Any = None
    stop_reason: str = ""
    sampling_s: float = 0.0
    calls_per_sample: int = 1
    target_rel_iqr: float = 0.0  # the spread sampling aimed for (the stability verdict names it)
    instructions: list[float] = dataclasses.field(default_factory=list)  # per call, one per sample

    def summary(self) -> dict[str, float | int | str]:
        """The ``columns.TIMING`` row of this measurement (see :func:`summarize`)."""
        return summarize(self)


# ---------------------------------------------------------------------------------------------
# statistics and the stopping rule (pure functions)


def rel_iqr(samples_ms: Sequence[float]) -> float:
    """IQR / median of the samples (numpy linear interpolation); inf with fewer than 3 samples.

    A zero median gives 0.0 when the IQR is zero too (all samples equal), else inf.
    """
    if len(samples_ms) < MIN_SAMPLES_FOR_IQR:
        return float("inf")
    p25, p50, p75 = np.percentile(np.asarray(samples_ms, dtype=float), [25, 50, 75])
    iqr = float(p75 - p25)
    if p50 <= 0:
        return 0.0 if iqr == 0 else float("inf")
    return iqr / float(p50)


def stop_reason(samples_ms: Sequence[float], elapsed_s: float, cfg: TimingConfig) -> str | None:
    """Why sampling should stop now, or None to take more samples.

    ``max_samples`` always wins; before ``min_samples`` nothing else stops; after it, a spread
    IQR/median strictly below ``target_rel_iqr`` (so 0 disables it) or ``elapsed_s >= budget_s``.
    """
    n = len(samples_ms)
    if n >= cfg.max_samples:
        return STOP_MAX
    if n < cfg.min_samples:
        return None
    if rel_iqr(samples_ms) < cfg.target_rel_iqr:
        return STOP_CONVERGED
    if elapsed_s >= cfg.budget_s:
        return STOP_BUDGET
    return None


def calls_for(k: int, batch_ms: float, target_ms: float) -> int:
    """Calls per sample after a batch of ``k`` calls took ``batch_ms`` (short of ``target_ms``): the
    first of 1, 2, 5, 10, 20, 50, ... above ``k`` whose batch would last ``target_ms`` at this
    speed, with 20 % to spare (x10 when the clock saw no time pass), at most
    :data:`MAX_CALLS_PER_SAMPLE`."""
    need = k * 10 if batch_ms <= 0 else k * target_ms * 1.2 / batch_ms
    step = 1
    while True:
        for m in (1, 2, 5):
            if step * m > k and step * m >= need or step * m >= MAX_CALLS_PER_SAMPLE:
                return min(step * m, MAX_CALLS_PER_SAMPLE)
        step *= 10


def summarize(m: Measurement) -> dict[str, float | int | str]:
    """The ``columns.TIMING`` columns for ``m`` (milliseconds), then, for counted instructions, the
    ``columns.INSTRUCTION_COUNTS`` (:func:`instruction_columns`).

    Percentiles use numpy's linear interpolation; IQR = p75 - p25; CV = sample std (ddof=1) /
    mean (0.0 for a single sample). Without samples the float columns are NaN.
    """
    x = np.asarray(m.device_ms, dtype=float)
    nan = float("nan")
    row: dict[str, float | int | str] = {}
    if x.size:
        p10, p25, p50, p75, p90 = (float(v) for v in np.percentile(x, [10, 25, 50, 75, 90]))
        mean = float(x.mean())
        std = float(x.std(ddof=1)) if x.size > 1 else 0.0
        cv = std / mean if mean > 0 else nan
        row.update({
            C.LAT_MEDIAN: p50, C.LAT_MEAN: mean, C.LAT_IQR: p75 - p25, C.LAT_P10: p10, C.LAT_P90: p90,
            C.LAT_MIN: float(x.min()), C.LAT_MAX: float(x.max()), C.LAT_CV: cv,
        })
    else:
        row.update({k: nan for k in (C.LAT_MEDIAN, C.LAT_MEAN, C.LAT_IQR, C.LAT_P10, C.LAT_P90,
                                     C.LAT_MIN, C.LAT_MAX, C.LAT_CV)})
    row[C.N_SAMPLES] = int(x.size)
    row[C.N_WARMUP] = int(m.n_warmup)
    row[C.CALLS_PER_SAMPLE] = int(m.calls_per_sample)
    row[C.HOST_MEDIAN] = float(np.median(m.host_ms)) if len(m.host_ms) else nan
    row[C.TIMER] = m.timer
    row[C.THREADS] = int(m.threads)
    row[C.STOP_REASON] = m.stop_reason
    # counted runs are judged on their counts: their times are wall times under valgrind
    verdict = judge(m.instructions or m.device_ms, stopped_on_budget=m.stop_reason == STOP_BUDGET,
                    target_rel_iqr=m.target_rel_iqr)
    row[C.STABLE] = verdict.stable
    row[C.UNSTABLE_WHY] = verdict.text
    return {k: row[k] for k in C.TIMING} | instruction_columns(m.instructions)


def instruction_columns(counts: Sequence[float]) -> dict[str, float]:
    """The ``columns.INSTRUCTION_COUNTS`` of per-call instruction samples ({} without any): median,
    min, max and (max - min) / median."""
    if not len(counts):
        return {}
    x = np.asarray(counts, dtype=float)
    median = float(np.median(x))
    spread = float(x.max() - x.min()) / median if median > 0 else 0.0
    return {C.INSTRUCTIONS: median, C.INSTRUCTIONS_MIN: float(x.min()), C.INSTRUCTIONS_MAX: float(x.max()),
            C.INSTRUCTIONS_SPREAD: spread}


# ---------------------------------------------------------------------------------------------
# devices




def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        log.warning(msg)


# ---------------------------------------------------------------------------------------------
# the timer


class Timer:
    """Times a zero-argument callable; see the module docstring for the procedure.

    clock: host clock in seconds (default ``time.perf_counter``); injectable so tests can
    drive warm-up, sampling and the budget deterministically.
    cuda_batch: samples per synchronize on CUDA once ``min_samples`` are in (the first batch
    is ``min_samples`` long; later batches also shrink to fit the remaining budget).
    counter: the instruction :class:`~harness.measure.instructions.Counter` of ``mode:
    instructions`` (default: one over this process's Callgrind dumps, made at the first count).
    """

    def __init__(self, cfg: TimingConfig | None = None, *, clock: Callable[[], float] | None = None,
                 cuda_batch: int = DEFAULT_CUDA_BATCH, counter: Counter | None = None) -> None:
        self.cfg = cfg if cfg is not None else TimingConfig()
        if self.cfg.min_samples > self.cfg.max_samples:
            raise ValueError(f"TimingConfig: min_samples={self.cfg.min_samples} is larger than "
                             f"max_samples={self.cfg.max_samples}; need min_samples <= max_samples")
        if cuda_batch < 1:
            raise ValueError(f"Timer: cuda_batch={cuda_batch} must be >= 1")
        self.clock = clock if clock is not None else time.perf_counter
        self.cuda_batch = cuda_batch
        self.counter = counter

    def measure(self, fn: Callable[[], Any], device: Any = "cpu") -> Measurement:
        """Warm up, sample adaptively and return every raw sample plus the last output of ``fn``."""
        if self.cfg.mode == MODE_INSTRUCTIONS:
            where = resolve_device(device) if isinstance(device, str) else str(device)
            if not where.startswith("cpu"):
                raise ValueError(f"timing.mode {MODE_INSTRUCTIONS!r} counts CPU instructions; the point runs "
                                 f"on {where}: time it (timing.mode {MODE_TIME!r}) or run it on the CPU")
            return self._measure_instructions(fn)
        dev = parse_device(device)
        if dev.type == "cuda":
            return self._measure_cuda(fn, dev)
        return self._measure_cpu(fn)

    # -- shared pieces ---------------------------------------------------------------------

    def _warm_up(self, fn: Callable[[], Any],
                 sync: Callable[[], None] | None = None) -> tuple[Any, int, float | None]:
        """Call fn until both warmup_n calls and warmup_ms have passed; returns (last output, calls,
        the last call's milliseconds or None without a call)."""
        cfg, out, n, last_ms = self.cfg, None, 0, None
        t0 = now = self.clock()
        while n < cfg.warmup_n or (now - t0) * 1e3 < cfg.warmup_ms:
            before = now
            out = fn()
            if sync is not None:
                sync()
            n += 1
            now = self.clock()
            last_ms = (now - before) * 1e3
        return out, n, last_ms

    def _calls_per_sample(self, fn: Callable[[], Any], last_ms: float) -> tuple[int, int, Any]:
        """(k, calls made, last output): from the last warm-up call's time, batches of growing k
        (more warm-up) until one lasts ``min_sample_ms``; k = 1 when a call already does."""
        k, batch_ms, calls, out = 1, last_ms, 0, None
        while batch_ms < self.cfg.min_sample_ms and k < MAX_CALLS_PER_SAMPLE:
            k = calls_for(k, batch_ms, self.cfg.min_sample_ms)
            t0 = self.clock()
            for _ in range(k - 1):  # outputs dropped at once, as timeit does: no two alive together
                fn()
            out = fn()
            batch_ms = (self.clock() - t0) * 1e3
            calls += k
        return k, calls, out

    # -- CPU ---------------------------------------------------------------------------------

    def _measure_cpu(self, fn: Callable[[], Any]) -> Measurement:
        """Host-clock samples; a call shorter than ``min_sample_ms`` is timed in batches of k calls
        (k found after the warm-up, in more warm-up; without a warm-up, on the first samples, which
        are then dropped and counted as warm-up)."""
        import torch

        cfg = self.cfg
        ignored = [name for name, on in (("flush_l2", cfg.flush_l2), ("cuda_graph", cfg.cuda_graph)) if on]
        if ignored:
            _warn_once(f"timing on CPU: {', '.join(ignored)} only apply to CUDA devices and are ignored")
        out, n_warm, last_ms = self._warm_up(fn)
        k, calibrated = 1, last_ms is not None
        if calibrated:
            k, calls, batch_out = self._calls_per_sample(fn, last_ms)
            n_warm, out = n_warm + calls, batch_out if calls else out
        samples: list[float] = []
        clock = self.clock
        marks = markers.enabled()
        start = clock()
        while True:
            if marks:
                markers.push(f"sample {len(samples)}")
            t0 = clock()
            for _ in range(k - 1):  # outputs dropped at once, as timeit does: no two alive together
                fn()
            out = fn()
            t1 = clock()
            if marks:
                markers.pop()
            batch_ms = (t1 - t0) * 1e3
            if not (samples or calibrated) and batch_ms < cfg.min_sample_ms and k < MAX_CALLS_PER_SAMPLE:
                n_warm += k  # too short to time well: batch more calls, from the start
                k = calls_for(k, batch_ms, cfg.min_sample_ms)
                start = clock()
                continue
            samples.append(batch_ms / k)
            reason = stop_reason(samples, t1 - start, cfg)
            if reason is not None:
                break
        return Measurement(device_ms=samples, host_ms=list(samples), n_warmup=n_warm, timer=TIMER_CPU,
                           threads=torch.get_num_threads(), output=out, stop_reason=reason,
                           sampling_s=clock() - start, calls_per_sample=k, target_rel_iqr=cfg.target_rel_iqr)

    # -- instructions -------------------------------------------------------------------------

    def _measure_instructions(self, fn: Callable[[], Any]) -> Measurement:
        """After the warm-up, ``min_samples`` calls each counted on its own (one call per sample:
        counts need no batching); the wall time of each counted call is kept beside its count.
        Callgrind instruments code only from the warm-up to the last count (the rest of the run
        goes several times faster uninstrumented)."""
        import torch

        if self.counter is None:
            self.counter = Counter()
        counts: list[float] = []
        samples: list[float] = []
        with self.counter.instrumented():
            out, n_warm, _ = self._warm_up(fn)
            start = self.clock()
            while len(counts) < self.cfg.min_samples:
                t0 = self.clock()
                n, out = self.counter.count(fn)
                samples.append((self.clock() - t0) * 1e3)
                counts.append(float(n))
        return Measurement(device_ms=samples, host_ms=list(samples), n_warmup=n_warm, timer=TIMER_CALLGRIND,
                           threads=torch.get_num_threads(), output=out, stop_reason=STOP_COUNTED,
                           sampling_s=self.clock() - start, target_rel_iqr=self.cfg.target_rel_iqr,
                           instructions=counts)

    # -- CUDA --------------------------------------------------------------------------------

    def _next_batch(self, samples_ms: Sequence[float], elapsed_s: float) -> int:
        """How many samples to take before the next synchronize."""
        cfg, n = self.cfg, len(samples_ms)
        remaining = cfg.max_samples - n
        if n < cfg.min_samples:
            k = cfg.min_samples - n
        else:
            k = self.cuda_batch
            median_ms = float(np.median(samples_ms))
            if median_ms > 0:
                fit = int((cfg.budget_s - elapsed_s) * 1e3 / median_ms + 1e-9)
                k = min(k, max(1, fit))
        return max(1, min(k, remaining))

    def _measure_cuda(self, fn: Callable[[], Any], dev: Any) -> Measurement:
        import torch

        cfg, clock = self.cfg, self.clock
        with torch.cuda.device(dev):
            out, n_warm, _ = self._warm_up(fn, sync=lambda: torch.cuda.synchronize(dev))
            call, timer_name, graph = fn, TIMER_CUDA, None
            if cfg.cuda_graph:
                graph, out = _capture_graph(fn, dev)
                n_warm += 1  # the side-stream call before capture
                call, timer_name = graph.replay, TIMER_GRAPH
            flush = _l2_flush_buffer(dev) if cfg.flush_l2 else None
            stream = torch.cuda.current_stream(dev)
            device_ms: list[float] = []
            host_ms: list[float] = []
            marks = markers.enabled()
            if marks:
                torch.cuda.synchronize(dev)  # the warm-up's work stays out of the capture
                markers.capture_start(dev)  # nsys --capture-range=cudaProfilerApi records from here
            start = clock()
            while True:
                pairs = []
                for _ in range(self._next_batch(device_ms, clock() - start)):
                    if flush is not None:
                        flush.zero_()
                    ev0 = torch.cuda.Event(enable_timing=True)
                    ev1 = torch.cuda.Event(enable_timing=True)
                    if marks:
                        markers.push(f"sample {len(host_ms)}")
                    ev0.record(stream)
                    h0 = clock()
                    result = call()
                    h1 = clock()
                    ev1.record(stream)
                    if marks:
                        markers.pop()
                    if graph is None:
                        out = result
                    pairs.append((ev0, ev1))
                    host_ms.append((h1 - h0) * 1e3)
                torch.cuda.synchronize(dev)  # one sync per batch
                device_ms.extend(ev0.elapsed_time(ev1) for ev0, ev1 in pairs)
                reason = stop_reason(device_ms, clock() - start, cfg)
                if reason is not None:
                    break
            markers.capture_stop(dev)  # ... to here (the last batch was synchronized)
        return Measurement(device_ms=device_ms, host_ms=host_ms, n_warmup=n_warm, timer=timer_name,
                           threads=torch.get_num_threads(), output=out, stop_reason=reason,
                           sampling_s=clock() - start, target_rel_iqr=cfg.target_rel_iqr)


def _l2_flush_buffer(dev: Any) -> Any:
    """A byte buffer of ``L2_FLUSH_FACTOR`` x the device's L2 size (256 MiB if unreported)."""
    import torch

    l2 = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0) or 0)
    nbytes = L2_FLUSH_FACTOR * l2 if l2 > 0 else DEFAULT_L2_FLUSH_BYTES
    return torch.empty(nbytes, dtype=torch.int8, device=dev)


def _capture_graph(fn: Callable[[], Any], dev: Any) -> tuple[Any, Any]:
    """Capture ``fn`` into a CUDA graph on a side stream; returns (graph, static output)."""
    import torch

    current = torch.cuda.current_stream(dev)
    side = torch.cuda.Stream(device=dev)
    side.wait_stream(current)
    try:
        with torch.cuda.stream(side):
            fn()  # warm-up on the capture stream (lazy workspaces, autotuning)
        current.wait_stream(side)
        torch.cuda.synchronize(dev)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            out = fn()
        graph.replay()
        torch.cuda.synchronize(dev)
    except Exception as e:
        _recover_after_failed_capture(dev)
        raise RuntimeError(
            f"timing with cuda_graph=True: capturing fn into a CUDA graph failed ({type(e).__name__}: {e}). "
            "A capturable fn has static shapes, no host synchronization (.item(), .cpu(), printing "
            "tensors), no CPU tensors created inside, and no data-dependent control flow; "
            "set cuda_graph=False to time it eagerly."
        ) from e
    return graph, out


def _recover_after_failed_capture(dev: Any) -> None:
    """Leave CUDA usable after an aborted capture.

    When capture fails, torch never runs the RNG generator's capture epilogue, so the next
    random op on the device fails ("Offset increment outside graph capture"). Replacing the
    generator's state by a clone (same seed and offset, not capturing) resets it.
    """
    import torch

    try:
        torch.cuda.synchronize(dev)
    except Exception as e:  # the capture error may surface here once more
        log.debug("synchronize after failed capture: %s", e)
    try:
        gen = torch.cuda.default_generators[dev.index]
        gen.graphsafe_set_state(gen.clone_state())
    except Exception as e:
        log.warning("could not reset the CUDA RNG state after a failed graph capture: %s", e)


def time_fn(fn: Callable[[], Any], device: Any = "cpu", **cfg_overrides: Any) -> Measurement:
    """Ad-hoc timing: ``time_fn(f, "cuda", min_samples=20, flush_l2=True).summary()``.

    Keyword arguments override :class:`TimingConfig` fields.
    """
    names = [f.name for f in dataclasses.fields(TimingConfig)]
    for key in cfg_overrides:
        if key not in names:
            raise TypeError(f"time_fn: unknown timing option {key!r}{did_you_mean(key, names)}; "
                            f"allowed: {', '.join(names)}")
    return Timer(TimingConfig(**cfg_overrides)).measure(fn, device)
