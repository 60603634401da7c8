"""Measurement: what a point's numbers are made of, and the machine they were measured on.

- :mod:`~harness.measure.timing`: the timer (warm-up, adaptive sampling, CUDA events or the host clock)
- :mod:`~harness.measure.telemetry` and :mod:`~harness.measure.nvml`: NVML power, energy, clocks,
  memory on GPU; RSS and CPU time on the host
- :mod:`~harness.measure.env`: the environment fingerprint (``env.json``)
- :mod:`~harness.measure.peaks` and :mod:`~harness.measure.efficiency`: device peaks, fraction of peak
- :mod:`~harness.measure.profiling`, :mod:`~harness.measure.markers`, :mod:`~harness.measure.memory`:
  torch.profiler traces, NVTX ranges, CUDA memory snapshots
- :mod:`~harness.measure.devices`, :mod:`~harness.measure.cpu_alloc`: device and dtype names, the C
  allocator's policy
"""
