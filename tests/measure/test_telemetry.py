"""Telemetry: summarizing NVML readings (scripted with FakeNVML), the sampler thread, CPU fallback."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
import torch
from fake_nvml import FakeNVML, FakeNVMLError

from harness.measure import nvml as N
from harness.measure import telemetry as T
from harness.measure.load import under_load
from harness.measure.telemetry import TelemetrySample, TelemetrySampler, summarize_samples
from harness.store import columns as C

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SLOW_HZ = 1e-3  # the background thread never fires within a test: samples come from enter/sample_now/exit
GPU_COLUMNS = tuple(k for k in C.TELEMETRY if k not in (C.RSS_PEAK_MB, C.CPU_TIME_S, C.TORCH_PEAK_ALLOC_MB))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend the sampler runs on cuda:0 without touching CUDA; torch's peak reads 123 MiB."""
    monkeypatch.setattr(T, "parse_device", lambda d: torch.device("cuda", 0))
    monkeypatch.setattr(N, "parse_device", lambda d: torch.device("cuda", 0))
    monkeypatch.setattr(T, "_cuda_window_start", lambda dev: None)
    monkeypatch.setattr(T, "_cuda_window_end", lambda dev: 123.0)
    monkeypatch.setattr(N, "torch_uuid", lambda i: "GPU-fake-0")
    monkeypatch.setattr(N, "_nvml_warned", False)


def run_window(backend: FakeNVML, n_middle: int = 1, step_s: float = 1.0) -> TelemetrySampler:
    """enter (sample 0), n_middle sample_now() calls, exit (last sample); the clock moves step_s each."""
    clock = FakeClock()
    sampler = TelemetrySampler("cuda:0", rate_hz=SLOW_HZ, backend=backend, clock=clock)
    with sampler:
        for _ in range(n_middle):
            clock.now += step_s
            sampler.sample_now()
        clock.now += step_s
    return sampler


# --- summarizing (pure) -----------------------------------------------------------------------


def samples(**series) -> list[TelemetrySample]:
    n = max(len(v) for v in series.values())
    return [TelemetrySample(t_s=float(i), **{k: v[i] for k, v in series.items()}) for i in range(n)]


def test_summary_has_exactly_the_telemetry_columns():
    assert tuple(summarize_samples([], gpu=True)) == C.TELEMETRY


def test_energy_is_the_counter_delta_in_joules():
    row = summarize_samples(samples(power_w=[100, 100]), gpu=True, energy_start_mj=1_000, energy_end_mj=6_000)
    assert (row[C.ENERGY_J], row[C.ENERGY_SOURCE]) == (5.0, "counter")


def test_energy_without_counter_integrates_power_with_the_trapezoid_rule():
    row = summarize_samples(samples(power_w=[100.0, 200.0, 100.0]), gpu=True)
    assert (row[C.ENERGY_J], row[C.ENERGY_SOURCE]) == (pytest.approx(300.0), "integrated_power")


def test_energy_counter_that_did_not_advance_falls_back_to_integrated_power():
    row = summarize_samples(samples(power_w=[50.0, 50.0]), gpu=True, energy_start_mj=7, energy_end_mj=7)
    assert (row[C.ENERGY_J], row[C.ENERGY_SOURCE]) == (pytest.approx(50.0), "integrated_power")


def test_no_energy_source_leaves_energy_empty():
    row = summarize_samples(samples(temp_c=[40.0]), gpu=True)
    assert (row[C.ENERGY_J], row[C.ENERGY_SOURCE]) == (None, None)


def test_power_mean_and_max():
    row = summarize_samples(samples(power_w=[100.0, 300.0, None]), gpu=True)
    assert (row[C.POWER_MEAN_W], row[C.POWER_MAX_W]) == (200.0, 300.0)


def test_sm_clock_min_and_mean_temperature_max_util_mean_memory_peak():
    row = summarize_samples(samples(sm_clock_mhz=[1980.0, 1500.0, 1755.0], temp_c=[50.0, 61.0, 58.0],
                                    gpu_util_pct=[0.0, 100.0, 50.0], mem_used_mb=[900.0, 4000.0, 3000.0]),
                            gpu=True)
    assert (row[C.SM_CLOCK_MIN_MHZ], row[C.SM_CLOCK_MEAN_MHZ]) == (1500.0, pytest.approx(1745.0))
    assert (row[C.TEMP_MAX_C], row[C.GPU_UTIL_MEAN_PCT], row[C.GPU_MEM_PEAK_MB]) == (61.0, 50.0, 4000.0)


def test_throttle_reasons_are_ored_and_idle_or_sync_boost_are_not_throttling():
    row = summarize_samples(samples(reasons=[0x1, 0x10, 0x0]), gpu=True)
    assert (row[C.THROTTLE_REASONS], row[C.THROTTLED]) == (0x11, False)


@pytest.mark.parametrize("bit", [0x4, 0x8, 0x20, 0x40, 0x80])
def test_power_and_thermal_slowdown_bits_flag_throttling(bit):
    row = summarize_samples(samples(reasons=[0x1, bit, 0x0]), gpu=True)
    assert (row[C.THROTTLE_REASONS], row[C.THROTTLED]) == (0x1 | bit, True)


def test_without_nvml_gpu_columns_are_empty_but_host_columns_are_filled():
    row = summarize_samples(samples(rss_mb=[10.0, 30.0, 20.0], power_w=[1.0, 1.0, 1.0]), gpu=False,
                            cpu_time_s=0.5, torch_peak_alloc_mb=7.0)
    assert all(row[k] is None for k in GPU_COLUMNS)
    assert (row[C.RSS_PEAK_MB], row[C.CPU_TIME_S], row[C.TORCH_PEAK_ALLOC_MB]) == (30.0, 0.5, 7.0)


def test_rss_peak_falls_back_to_the_lifetime_peak_without_rss_samples():
    row = summarize_samples(samples(temp_c=[1.0]), gpu=False, rss_fallback_mb=99.0)
    assert row[C.RSS_PEAK_MB] == 99.0


# --- the sampler with a scripted NVML ---------------------------------------------------------


def test_sampler_reads_the_energy_counter_at_the_window_edges(fake_cuda):
    nv = FakeNVML({"energy_mj": [10_000, 13_500], "power_mw": [150_000]})
    row = run_window(nv).summary()
    assert (row[C.ENERGY_J], row[C.ENERGY_SOURCE]) == (3.5, "counter")
    assert row[C.POWER_MEAN_W] == 150.0


def test_sampler_integrates_power_when_the_counter_is_not_supported(fake_cuda):
    pynvml = pytest.importorskip("pynvml")
    nv = FakeNVML({"energy_mj": [pynvml.NVMLError_NotSupported()], "power_mw": [100_000, 200_000, 100_000]})
    row = run_window(nv, n_middle=1, step_s=2.0).summary()
    assert (row[C.ENERGY_J], row[C.ENERGY_SOURCE]) == (pytest.approx(600.0), "integrated_power")


def test_sampler_takes_enter_middle_and_exit_samples(fake_cuda):
    sampler = run_window(FakeNVML({"temperature_c": [40.0, 45.0, 50.0, 55.0]}), n_middle=2)
    assert [s.temp_c for s in sampler.samples] == [40.0, 45.0, 50.0, 55.0]
    assert [s.t_s for s in sampler.samples] == [0.0, 1.0, 2.0, 3.0]


def test_sampler_converts_units_and_ors_throttle_bits(fake_cuda):
    nv = FakeNVML({"mem_used_bytes": [2 * N.MIB, 6 * N.MIB, 4 * N.MIB], "clock_event_reasons": [0, 0x20, 0x1],
                   "sm_clock_mhz": [1900.0, 1400.0, 1600.0]})  # mean 1633.3
    row = run_window(nv).summary()
    assert (row[C.GPU_MEM_PEAK_MB], row[C.THROTTLE_REASONS], row[C.THROTTLED]) == (6.0, 0x21, True)
    assert (row[C.SM_CLOCK_MIN_MHZ], row[C.SM_CLOCK_MEAN_MHZ]) == (1400.0, pytest.approx(4900.0 / 3))


def test_other_compute_processes_on_the_gpu_are_counted_besides_this_one(fake_cuda):
    me = os.getpid()
    nv = FakeNVML({"compute_pids": [[me], [me, 4242], [me, 4242, 4343]]})
    row = run_window(nv).summary()
    assert row[C.GPU_OTHER_PROCS] == 2
    assert under_load(row) and not under_load({C.GPU_OTHER_PROCS: 0})


@pytest.mark.parametrize("pids, own, others", [([7, 8], 7, 1), ([7], 7, 0), ([100, 200], 7, 1), ([100], 7, 0),
                                               ([], 7, 0), ([7, 7, 8], 7, 1)])
def test_inside_a_container_one_listed_process_is_taken_to_be_this_one(pids, own, others):
    assert N.other_processes(pids, own) == others


def test_a_failing_reading_mid_run_is_skipped_not_fatal(fake_cuda):
    nv = FakeNVML({"power_mw": [100_000, FakeNVMLError("GPU is lost"), 300_000], "temperature_c": [40.0]})
    sampler = run_window(nv)
    row = sampler.summary()
    assert [s.power_w for s in sampler.samples] == [100.0, None, 300.0]
    assert (row[C.POWER_MEAN_W], row[C.TEMP_MAX_C]) == (200.0, 40.0)


def test_sampler_reports_torch_allocator_peak_on_cuda(fake_cuda):
    assert run_window(FakeNVML({})).summary()[C.TORCH_PEAK_ALLOC_MB] == 123.0


def test_sampler_thread_starts_samples_and_stops_cleanly(fake_cuda):
    nv = FakeNVML({"power_mw": [100_000]})
    sampler = TelemetrySampler("cuda:0", rate_hz=200.0, backend=nv)
    with sampler:
        assert sampler.running
        deadline = time.monotonic() + 10.0
        while len(sampler.samples) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    n_after_exit = len(sampler.samples)
    time.sleep(0.05)
    assert not sampler.running
    assert n_after_exit >= 4 and len(sampler.samples) == n_after_exit
    assert nv.initialized and nv.shut_down


def test_missing_nvml_leaves_gpu_columns_empty_and_warns_once(fake_cuda, caplog):
    with caplog.at_level(logging.WARNING, logger="harness.measure.nvml"):
        rows = [run_window(FakeNVML(init_error=FakeNVMLError("NVML Shared Library Not Found"))).summary()
                for _ in range(2)]
    assert all(row[k] is None for row in rows for k in GPU_COLUMNS)
    assert rows[0][C.TORCH_PEAK_ALLOC_MB] == 123.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "NVML Shared Library Not Found" in warnings[0].getMessage()


def test_real_backend_without_an_nvml_library_is_reported_not_raised(monkeypatch, caplog):
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("NVML works on this machine")
    monkeypatch.setattr(N, "_nvml_warned", False)
    with caplog.at_level(logging.WARNING, logger="harness.measure.nvml"):
        assert N.open_nvml(None, 0) is None
    assert "NVML unavailable" in caplog.text


# --- CPU --------------------------------------------------------------------------------------


def test_cpu_window_reports_rss_and_cpu_time_and_never_touches_nvml():
    nv = FakeNVML({"power_mw": [1.0]})
    with TelemetrySampler("cpu", rate_hz=50.0, backend=nv) as tel:
        sum(i * i for i in range(20_000))
    row = tel.summary()
    assert all(row[k] is None for k in GPU_COLUMNS) and row[C.TORCH_PEAK_ALLOC_MB] is None
    assert row[C.RSS_PEAK_MB] > 0 and row[C.CPU_TIME_S] >= 0
    assert not nv.initialized


def test_rate_must_be_positive():
    with pytest.raises(ValueError, match="rate_hz=0 must be > 0"):
        TelemetrySampler("cpu", rate_hz=0)


# --- device mapping ---------------------------------------------------------------------------


def test_handle_is_found_by_uuid_first():
    nv = FakeNVML(uuids=["GPU-a", "GPU-b", "GPU-c"])
    assert N.resolve_handle(nv, 0, torch_uuid="GPU-c", visible_devices="0") == 2


def test_handle_follows_cuda_visible_devices_indices():
    nv = FakeNVML(uuids=["GPU-a", "GPU-b", "GPU-c"])
    assert N.resolve_handle(nv, 0, torch_uuid=None, visible_devices="2,0") == 2
    assert N.resolve_handle(nv, 1, torch_uuid="GPU-unknown", visible_devices="2,0") == 0


def test_handle_follows_cuda_visible_devices_uuids():
    nv = FakeNVML(uuids=["GPU-a", "GPU-b"])
    assert N.resolve_handle(nv, 0, visible_devices="GPU-b") == 1


def test_handle_falls_back_to_the_torch_index():
    nv = FakeNVML(uuids=["GPU-a", "GPU-b"])
    assert N.resolve_handle(nv, 1) == 1


# --- static info ------------------------------------------------------------------------------


def test_static_info_on_cpu_is_all_empty():
    assert N.gpu_static_info("cpu") == dict.fromkeys(N.GPU_STATIC_KEYS)


def test_static_info_reads_nvml_facts_in_fingerprint_units(fake_cuda):
    nv = FakeNVML(static={"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-fake-0", "driver_version": "580.1",
                          "power_limit_mw": 700_000, "max_sm_clock_mhz": 1980, "persistence_mode": True,
                          "mig_mode": False, "memory_total_bytes": 80 * 1024 * N.MIB})
    info = N.gpu_static_info("cuda:0", backend=nv)
    assert set(info) == set(N.GPU_STATIC_KEYS)
    assert (info["gpu_name"], info["gpu_driver"], info["gpu_power_limit_w"]) == ("NVIDIA H100 80GB HBM3",
                                                                                 "580.1", 700.0)
    assert (info["gpu_max_sm_clock_mhz"], info["gpu_persistence_mode"], info["gpu_mig_mode"]) == (1980, True,
                                                                                                  False)
    assert info["gpu_memory_total_mb"] == 80 * 1024


def test_static_info_without_nvml_keeps_the_torch_uuid(fake_cuda):
    info = N.gpu_static_info("cuda:0", backend=FakeNVML(init_error=FakeNVMLError("no driver")))
    assert info["gpu_uuid"] == "GPU-fake-0" and info["gpu_driver"] is None


# --- real GPU ---------------------------------------------------------------------------------


@needs_cuda
def test_real_gpu_window_reports_allocator_peak_and_some_nvml_readings():
    x = torch.randn(1024, 1024, device="cuda")
    with TelemetrySampler("cuda", rate_hz=50.0) as tel:
        for _ in range(50):
            y = x @ x
        torch.cuda.synchronize()
    row = tel.summary()
    assert row[C.TORCH_PEAK_ALLOC_MB] >= 4.0  # x and y are 4 MiB each
    assert row[C.GPU_MEM_PEAK_MB] is not None and row[C.SM_CLOCK_MIN_MHZ] is not None
    del y


@needs_cuda
def test_real_gpu_static_info_names_the_device():
    info = N.gpu_static_info("cuda")
    assert info["gpu_name"] and info["gpu_uuid"]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc/self/clear_refs")
def test_rss_peak_is_the_window_peak_even_between_samples_and_not_the_lifetime_peak():
    from harness.measure.telemetry import TelemetrySampler

    mib = 2**20
    big = bytearray(400 * mib)  # before the window: a lifetime peak must not count
    big[::4096] = b"x" * len(big[::4096])
    del big
    with TelemetrySampler("cpu", rate_hz=1e-3) as s:  # no background sample: only entry and exit
        base = s.samples[0].rss_mb
        spike = bytearray(200 * mib)
        spike[::4096] = b"y" * len(spike[::4096])  # touch every page: it becomes resident
        del spike
    row = s.summary()
    assert max(x.rss_mb for x in s.samples) < base + 100  # the samples saw nothing of the spike
    assert base + 190 <= row["rss_peak_mb"] < base + 390  # the kernel's window peak did
