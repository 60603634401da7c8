"""Timer: statistics, stopping rules and warm-up, driven by a fake clock; CUDA paths on a GPU."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from harness.measure import timing
from harness.measure.timing import (
    Measurement,
    Timer,
    TimingConfig,
    parse_device,
    stop_reason,
    summarize,
    time_fn,
)
from harness.store import columns as C

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class FakeClock:
    """A clock (seconds) that only moves when a scripted fn runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scripted_fn(clock: FakeClock, durations_ms: list[float]):
    """fn whose k-th call takes durations_ms[k % len] (the script cycles); returns the call index."""
    calls = {"n": 0}

    def fn() -> int:
        i = calls["n"]
        clock.now += durations_ms[i % len(durations_ms)] / 1e3
        calls["n"] += 1
        return i

    fn.calls = calls
    return fn


def measure(durations_ms: list[float], **cfg) -> tuple[Measurement, dict]:
    clock = FakeClock()
    fn = scripted_fn(clock, durations_ms)
    m = Timer(TimingConfig(**cfg), clock=clock).measure(fn)
    return m, fn.calls


# --- summary statistics -----------------------------------------------------------------------


def known_measurement() -> Measurement:
    return Measurement(device_ms=[float(v) for v in range(1, 11)], host_ms=[0.5, 1.5, 2.5],
                       n_warmup=3, timer="perf_counter", threads=4)


def test_summary_has_exactly_the_timing_columns_in_order():
    assert tuple(summarize(known_measurement())) == C.TIMING


def test_summary_values_on_known_samples_use_linear_interpolation():
    s = summarize(known_measurement())
    assert s[C.LAT_MEDIAN] == pytest.approx(5.5)
    assert s[C.LAT_MEAN] == pytest.approx(5.5)
    assert s[C.LAT_IQR] == pytest.approx(7.75 - 3.25)
    assert s[C.LAT_P10] == pytest.approx(1.9)
    assert s[C.LAT_P90] == pytest.approx(9.1)
    assert (s[C.LAT_MIN], s[C.LAT_MAX]) == (1.0, 10.0)


def test_on_skewed_samples_the_median_is_the_median_not_the_mean():
    """On clean samples (1..10) mean and median agree; a slow outlier tells them apart, and each
    statistic its own way (a mean for the median, or a max for p90, would show here)."""
    s = summarize(Measurement([1.0, 1.0, 1.0, 1.0, 100.0], [], 0, "perf_counter", 1))
    assert s[C.LAT_MEDIAN] == 1.0 and s[C.LAT_MEAN] == pytest.approx(20.8)
    assert (s[C.LAT_IQR], s[C.LAT_P10], s[C.LAT_MAX]) == (0.0, 1.0, 100.0)
    assert s[C.LAT_P90] == pytest.approx(60.4)  # linear interpolation between 1 and 100


def test_summary_cv_is_sample_std_over_mean():
    assert summarize(known_measurement())[C.LAT_CV] == pytest.approx(3.0276503540974917 / 5.5)


def test_summary_carries_counts_host_median_timer_and_threads():
    s = summarize(known_measurement())
    assert (s[C.N_SAMPLES], s[C.N_WARMUP], s[C.HOST_MEDIAN], s[C.TIMER], s[C.THREADS]) == (
        10, 3, 1.5, "perf_counter", 4)


def test_measurement_summary_method_equals_summarize():
    m = known_measurement()
    assert m.summary() == summarize(m)


def test_single_sample_has_zero_cv_and_zero_iqr():
    s = summarize(Measurement([2.0], [2.0], 0, "perf_counter", 1))
    assert (s[C.LAT_CV], s[C.LAT_IQR], s[C.LAT_MEDIAN]) == (0.0, 0.0, 2.0)


def test_empty_measurement_gives_nan_statistics_and_zero_samples():
    s = summarize(Measurement([], [], 0, "perf_counter", 1))
    assert s[C.N_SAMPLES] == 0
    assert all(math.isnan(s[k]) for k in (C.LAT_MEDIAN, C.LAT_IQR, C.LAT_CV, C.HOST_MEDIAN))


# --- the stopping rule (pure) -----------------------------------------------------------------


def test_stop_rule_converges_on_constant_samples_once_min_samples_reached():
    cfg = TimingConfig(min_samples=5, max_samples=50)
    assert stop_reason([1.0] * 4, 0.0, cfg) is None
    assert stop_reason([1.0] * 5, 0.0, cfg) == timing.STOP_CONVERGED


def test_stop_rule_needs_three_samples_for_the_iqr():
    cfg = TimingConfig(min_samples=1, max_samples=50, budget_s=100.0)
    assert stop_reason([1.0, 1.0], 0.0, cfg) is None
    assert stop_reason([1.0, 1.0, 1.0], 0.0, cfg) == timing.STOP_CONVERGED


def test_stop_rule_max_samples_wins_over_min_samples_wait():
    cfg = TimingConfig(min_samples=3, max_samples=3)
    assert stop_reason([1.0, 5.0, 9.0], 0.0, cfg) == timing.STOP_MAX


def test_stop_rule_budget_applies_only_after_min_samples():
    cfg = TimingConfig(min_samples=4, max_samples=50, budget_s=1.0)
    noisy = [1.0, 3.0, 1.0]
    assert stop_reason(noisy, 5.0, cfg) is None
    assert stop_reason(noisy + [3.0], 5.0, cfg) == timing.STOP_BUDGET


def test_stop_rule_target_zero_disables_convergence():
    cfg = TimingConfig(min_samples=3, max_samples=50, target_rel_iqr=0.0)
    assert stop_reason([1.0] * 10, 0.0, cfg) is None


# --- the CPU timer with a fake clock ----------------------------------------------------------


def test_constant_samples_stop_at_min_samples():
    m, _ = measure([2.0], warmup_n=0, min_samples=6, max_samples=50)
    assert (len(m.device_ms), m.stop_reason) == (6, timing.STOP_CONVERGED)


def test_noisy_samples_continue_to_max_samples():
    m, _ = measure([1.0, 3.0], warmup_n=0, min_samples=3, max_samples=20, budget_s=100.0)
    assert (len(m.device_ms), m.stop_reason) == (20, timing.STOP_MAX)


def test_budget_stops_sampling_after_min_samples():
    # samples of 10/20 ms alternate (IQR/median ~ 0.67): elapsed 10, 30, 40, 60 ms -> stop at 60 >= 50
    m, _ = measure([10.0, 20.0], warmup_n=0, min_samples=2, max_samples=100, budget_s=0.05)
    assert (len(m.device_ms), m.stop_reason) == (4, timing.STOP_BUDGET)


def test_a_long_warm_up_spends_none_of_the_sampling_budget_nor_of_the_sampling_time():
    # 30 warm-up calls take 450 ms of a 50 ms budget: were they counted, sampling would stop at
    # min_samples (2); counted from the first sample, it stops at 60 ms as without a warm-up
    m, calls = measure([10.0, 20.0], warmup_n=30, min_samples=2, max_samples=100, budget_s=0.05)
    assert (m.n_warmup, len(m.device_ms), m.stop_reason) == (30, 4, timing.STOP_BUDGET)
    assert m.device_ms == pytest.approx([10.0, 20.0, 10.0, 20.0])
    assert m.sampling_s == pytest.approx(0.060)
    assert calls["n"] == 34


def test_warming_up_by_time_counts_only_the_warm_up_calls_toward_warmup_ms():
    # 7 ms calls, warmup_ms 20: 7, 14, 21 -> three calls; a fourth would mean the clock started late
    m, calls = measure([7.0], warmup_n=0, warmup_ms=20.0, min_samples=2, max_samples=2)
    assert (m.n_warmup, calls["n"]) == (3, 5)


def test_on_a_device_each_warm_up_call_is_synchronized_before_the_warm_up_clock_reads_it():
    # a launch returns at once (1 ms) and the device finishes its work at the synchronize (4 ms more):
    # warmup_ms counts device time only if every call is synchronized; syncing once at the end
    # would count 1 ms per call and make ten calls
    clock, events = FakeClock(), []

    def fn() -> None:
        events.append("call")
        clock.now += 0.001

    def sync() -> None:
        events.append("sync")
        clock.now += 0.004

    _, n, last_ms = Timer(TimingConfig(warmup_n=0, warmup_ms=10.0), clock=clock)._warm_up(fn, sync)
    assert events == ["call", "sync", "call", "sync"] and n == 2
    assert last_ms == pytest.approx(5.0)


def test_budget_never_cuts_below_min_samples():
    m, _ = measure([10.0, 20.0], warmup_n=0, min_samples=7, max_samples=100, budget_s=0.0)
    assert (len(m.device_ms), m.stop_reason) == (7, timing.STOP_BUDGET)


def test_raw_samples_are_kept_in_order_in_milliseconds():
    m, _ = measure([1.0, 2.0, 4.0], warmup_n=1, min_samples=3, max_samples=3)
    assert m.device_ms == pytest.approx([2.0, 4.0, 1.0])  # call 0 was the warm-up
    assert m.host_ms == m.device_ms


def test_warmup_by_time_keeps_calling_until_warmup_ms_elapsed():
    m, calls = measure([3.0], warmup_n=1, warmup_ms=10.0, min_samples=3, max_samples=3)
    assert m.n_warmup == 4  # 3, 6, 9 ms < 10 ms -> a 4th call
    assert calls["n"] == 4 + 3


def test_warmup_by_count_wins_when_time_is_already_satisfied():
    m, _ = measure([3.0], warmup_n=5, warmup_ms=1.0, min_samples=3, max_samples=3)
    assert m.n_warmup == 5


def test_no_warmup_when_both_are_zero():
    m, calls = measure([3.0], warmup_n=0, warmup_ms=0.0, min_samples=3, max_samples=3)
    assert (m.n_warmup, calls["n"]) == (0, 3)


def test_output_is_the_last_return_value_of_fn():
    m, calls = measure([1.0], warmup_n=2, min_samples=3, max_samples=3)
    assert m.output == calls["n"] - 1 == 4


def test_cpu_records_perf_counter_timer_and_torch_threads():
    m, _ = measure([1.0], min_samples=3, max_samples=3)
    assert (m.timer, m.threads) == ("perf_counter", torch.get_num_threads())


def test_sampling_time_is_recorded():
    m, _ = measure([5.0], warmup_n=0, min_samples=4, max_samples=4)
    assert m.sampling_s == pytest.approx(0.020)


def test_cuda_options_on_cpu_log_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(timing, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="harness.measure.timing"):
        measure([1.0], flush_l2=True, cuda_graph=True, min_samples=3, max_samples=3)
        m, _ = measure([1.0], flush_l2=True, cuda_graph=True, min_samples=3, max_samples=3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "flush_l2, cuda_graph" in warnings[0].getMessage()
    assert m.timer == "perf_counter"


class CostlyClock(FakeClock):
    """A fake clock whose every reading costs ``read_ms`` (as perf_counter's own call does)."""

    def __init__(self, read_ms: float) -> None:
        super().__init__()
        self.read_ms = read_ms

    def __call__(self) -> float:
        self.now += self.read_ms / 1e3
        return self.now


@pytest.mark.parametrize("call_ms, read_ms", [(0.003, 0.001), (0.001, 0.0005), (0.0002, 0.0001),
                                              (0.05, 0.001)])
@pytest.mark.parametrize("warmup_n", [0, 2])  # k found on dropped first samples / in more warm-up
def test_short_calls_are_timed_in_batches_so_the_clocks_cost_stays_under_1_percent(call_ms, read_ms,
                                                                                   warmup_n):
    clock = CostlyClock(read_ms)
    fn = scripted_fn(clock, [call_ms])
    cfg = TimingConfig(warmup_n=warmup_n, min_samples=5, max_samples=5, min_sample_ms=1.0)
    m = Timer(cfg, clock=clock).measure(fn)
    k = m.calls_per_sample
    assert k * call_ms >= 1.0 and k in {10**e * f for e in range(7) for f in (1, 2, 5)}
    assert len(m.device_ms) == 5 and all(v == pytest.approx(call_ms, rel=0.01) for v in m.device_ms)
    # one call per sample, the same clock: the clock's cost is in the figure
    unbatched = Timer(TimingConfig(warmup_n=0, min_samples=5, max_samples=5, min_sample_ms=0),
                      clock=clock).measure(fn)
    assert unbatched.calls_per_sample == 1
    assert unbatched.device_ms[0] == pytest.approx(call_ms + read_ms, rel=1e-6)
    # the calibration batches were dropped, counted as warm-up, and the budget starts after them
    assert fn.calls["n"] - 5 - 5 * k == m.n_warmup > warmup_n
    assert summarize(m)[C.CALLS_PER_SAMPLE] == k


def test_calls_long_enough_are_timed_one_per_sample_with_no_extra_call():
    m, calls = measure([1.0, 1.5], warmup_n=0, min_samples=4, max_samples=4, min_sample_ms=1.0)
    assert (m.calls_per_sample, m.n_warmup, calls["n"]) == (1, 0, 4)
    assert m.device_ms == pytest.approx([1.0, 1.5, 1.0, 1.5])


def test_after_a_warm_up_its_last_call_decides_and_no_sample_is_dropped():
    m, calls = measure([2.0, 0.3, 0.3, 0.3], warmup_n=1, min_samples=3, max_samples=3, min_sample_ms=1.0)
    assert (m.calls_per_sample, m.n_warmup, calls["n"]) == (1, 1, 4)
    assert m.device_ms == pytest.approx([0.3, 0.3, 0.3])


def test_batching_is_decided_once_so_later_short_samples_are_kept():
    m, _ = measure([0.3, 2.0, 2.0, 0.3, 0.3], warmup_n=0, min_samples=4, max_samples=4, min_sample_ms=1.0)
    # the 0.3 ms call asks for batches; the batches of 5 calls (0.3 x 1.2 -> 5) are never undone
    assert m.calls_per_sample == 5 and len(m.device_ms) == 4


@pytest.mark.parametrize("k, batch_ms, target_ms, expected", [
    (1, 0.003, 1.0, 500), (1, 0.5, 1.0, 5), (1, 0.9, 1.0, 2), (500, 0.9, 1.0, 1000), (1, 0.0, 1.0, 10),
    (10, 0.0, 1.0, 100), (1, 1e-9, 1.0, 10**6),
])
def test_calls_per_sample_steps_through_1_2_5_to_the_target_with_room_to_spare(k, batch_ms, target_ms,
                                                                               expected):
    assert timing.calls_for(k, batch_ms, target_ms) == expected


def test_min_samples_above_max_samples_is_rejected():
    with pytest.raises(ValueError, match="min_samples=9 is larger than max_samples=3"):
        Timer(TimingConfig(min_samples=9, max_samples=3))


def test_real_clock_measures_a_real_function():
    x = torch.randn(32, 32)
    m = Timer(TimingConfig(warmup_n=1, min_samples=3, max_samples=6, budget_s=0.5)).measure(lambda: x @ x)
    assert 3 <= len(m.device_ms) <= 6
    assert all(v > 0 for v in m.device_ms)
    assert torch.equal(m.output, x @ x)


# --- time_fn and devices ----------------------------------------------------------------------


def test_time_fn_applies_config_overrides():
    m = time_fn(lambda: 1, warmup_n=0, min_samples=2, max_samples=2, min_sample_ms=0)
    assert (len(m.device_ms), m.n_warmup, m.output, m.calls_per_sample) == (2, 0, 1, 1)


def test_time_fn_rejects_unknown_options_with_a_suggestion():
    with pytest.raises(TypeError, match="unknown timing option 'min_sample'.*did you mean 'min_samples'"):
        time_fn(lambda: 1, min_sample=3)


def test_parse_device_accepts_cpu():
    assert parse_device("cpu") == torch.device("cpu")


def test_parse_device_rejects_unsupported_types():
    with pytest.raises(ValueError, match="supports 'cpu' and 'cuda"):
        parse_device("meta")
    with pytest.raises(ValueError, match="not a device name"):
        parse_device("banana")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is missing")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="is_available"):
        Timer().measure(lambda: 1, "cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks auto on a CPU-only machine")
def test_auto_means_cpu_without_cuda():
    assert parse_device("auto") == torch.device("cpu")


# --- CUDA batch sizing (pure) -----------------------------------------------------------------


def test_first_cuda_batch_is_min_samples_long():
    t = Timer(TimingConfig(min_samples=7, max_samples=50), cuda_batch=4)
    assert t._next_batch([], 0.0) == 7


def test_later_cuda_batches_are_capped_by_batch_size_budget_and_max_samples():
    t = Timer(TimingConfig(min_samples=2, max_samples=12, budget_s=1.0), cuda_batch=4)
    assert t._next_batch([1.0] * 2, 0.0) == 4  # cap
    assert t._next_batch([100.0] * 2, 0.8) == 2  # 200 ms of budget left / 100 ms per sample
    assert t._next_batch([100.0] * 2, 2.0) == 1  # budget spent: still at least one
    assert t._next_batch([1.0] * 10, 0.0) == 2  # only 2 left before max_samples


# --- CUDA -------------------------------------------------------------------------------------


@needs_cuda
def test_cuda_events_time_every_sample_with_host_times_alongside():
    x = torch.randn(512, 512, device="cuda")
    m = Timer(TimingConfig(min_samples=5, max_samples=10)).measure(lambda: x @ x, "cuda")
    assert m.timer == "cuda_event"
    assert len(m.device_ms) == len(m.host_ms) >= 5
    assert all(v > 0 for v in m.device_ms)
    assert torch.allclose(m.output, x @ x)


@needs_cuda
def test_cuda_sampling_synchronizes_once_per_batch(monkeypatch):
    x = torch.randn(256, 256, device="cuda")
    calls = {"n": 0}
    real_sync = torch.cuda.synchronize

    def counting_sync(*a, **k):
        calls["n"] += 1
        return real_sync(*a, **k)

    monkeypatch.setattr(torch.cuda, "synchronize", counting_sync)
    m = Timer(TimingConfig(warmup_n=0, min_samples=8, max_samples=8)).measure(lambda: x @ x, "cuda")
    assert (len(m.device_ms), calls["n"]) == (8, 1)


@needs_cuda
def test_cuda_l2_flush_still_times_fn():
    x = torch.randn(512, 512, device="cuda")
    m = Timer(TimingConfig(min_samples=3, max_samples=5, flush_l2=True)).measure(lambda: x @ x, "cuda")
    assert m.timer == "cuda_event" and len(m.device_ms) >= 3


@needs_cuda
def test_cuda_graph_replays_match_eager_output():
    x = torch.randn(256, 256, device="cuda")
    m = Timer(TimingConfig(warmup_n=1, min_samples=3, max_samples=5, cuda_graph=True)).measure(
        lambda: torch.relu(x @ x), "cuda")
    assert m.timer == "cuda_graph"
    assert m.n_warmup == 2  # one eager warm-up + the side-stream call before capture
    assert torch.allclose(m.output, torch.relu(x @ x))


@needs_cuda
def test_cuda_graph_capture_failure_is_a_clear_error():
    x = torch.randn(8, device="cuda")
    with pytest.raises(RuntimeError, match="capturing fn into a CUDA graph failed"):
        Timer(TimingConfig(min_samples=3, max_samples=3, cuda_graph=True)).measure(
            lambda: float(x.sum().item()), "cuda")


@needs_cuda
def test_cuda_stays_usable_after_a_failed_capture():
    x = torch.randn(8, device="cuda")
    with pytest.raises(RuntimeError, match="capturing fn into a CUDA graph failed"):
        Timer(TimingConfig(min_samples=3, max_samples=3, cuda_graph=True)).measure(
            lambda: float(x.sum().item()), "cuda")
    y = torch.randn(64, device="cuda")  # RNG works again
    m = Timer(TimingConfig(min_samples=3, max_samples=3)).measure(lambda: y * 2, "cuda")
    assert len(m.device_ms) == 3
    g = Timer(TimingConfig(min_samples=3, max_samples=3, cuda_graph=True)).measure(lambda: y * 2, "cuda")
    assert g.timer == "cuda_graph" and torch.allclose(g.output, y * 2)
