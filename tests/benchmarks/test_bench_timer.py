"""Micro-benchmarks of the harness's own costs: what one timed sample and one stored point cost.

- ``test_timer_overhead_per_sample``: ``Timer.measure`` on a no-op taking a fixed number of
  samples, with and without the adaptive stopping rule at work. The per-sample cost
  (``stats.mean / samples_per_round``, also stored as ``extra_info["per_sample_us"]``) is the
  floor under any latency the harness reports plus the time the stopping rule adds between
  samples.
- ``test_results_append``: ``RunWriter.append`` of one point and its raw samples, into an
  empty run and into one already holding ``SWEEP_POINTS`` points (the append rewrites the
  parquet tables from the JSONL logs, so its cost grows with the run).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from harness.measure.timing import Timer, TimingConfig
from harness.store import RunWriter
from harness.store import columns as C

SAMPLES_PER_ROUND = 200
SAMPLES_PER_POINT = 30
SWEEP_POINTS = 100
APPEND_ROUNDS = 15


def _noop() -> None:
    return None


@pytest.mark.parametrize("rule", ["fixed", "adaptive"])
def test_timer_overhead_per_sample(benchmark, device: str, rule: str) -> None:
    """fixed: min_samples = max_samples (the stopping rule only counts); adaptive: min_samples = 1,
    so the rule evaluates the IQR after every sample (``target_rel_iqr=0`` never converges)."""
    min_samples = SAMPLES_PER_ROUND if rule == "fixed" else 1
    cfg = TimingConfig(warmup_n=0, min_samples=min_samples, max_samples=SAMPLES_PER_ROUND,
                       budget_s=1e9, target_rel_iqr=0.0, min_sample_ms=0)  # one call per sample
    timer = Timer(cfg)
    benchmark.group = "harness overhead"
    benchmark.extra_info.update({"device": device, "rule": rule, "min_samples": min_samples,
                                 "samples_per_round": SAMPLES_PER_ROUND})
    m = benchmark(timer.measure, _noop, device)
    assert len(m.device_ms) == SAMPLES_PER_ROUND and m.stop_reason == "max_samples"
    benchmark.extra_info["per_sample_us"] = benchmark.stats.stats.mean / SAMPLES_PER_ROUND * 1e6


def _row(i: int) -> dict[str, Any]:
    """A point row shaped like the runner's (identity, a few params, timing summary)."""
    return {
        C.RUN_ID: "bench", C.SUITE: "bench", C.HASH: f"{i:016x}", C.WORKLOAD: "attention", C.METHOD: "sdpa",
        C.PRESET: "cpu", C.STATUS: C.OK, C.ERROR: None, C.STARTED_AT: "2025-01-01T00:00:00+00:00",
        C.ELAPSED_S: 0.5, "seq_len": 256, "heads": 4, "head_dim": 64, "batch": 1, "device": "cpu",
        "dtype": "float32", "seed": 0, "threads": 1, C.LAT_MEDIAN: 1.0, C.LAT_MEAN: 1.1, C.LAT_IQR: 0.1,
        C.N_SAMPLES: SAMPLES_PER_POINT, "fid_cos": 1.0, "work_attn_flops": 6.7e7,
    }


def _samples(i: int) -> list[dict[str, Any]]:
    return [{C.RUN_ID: "bench", C.HASH: f"{i:016x}", C.SAMPLE: s, C.DEVICE_MS: 1.0 + s * 1e-3,
             C.HOST_MS: 1.0 + s * 1e-3} for s in range(SAMPLES_PER_POINT)]


def _new_run(path: Path, n_points: int) -> RunWriter:
    writer = RunWriter.create(path, {"run_id": "bench", "suite": "bench"}, {"name": "bench"}, {}, {})
    for i in range(n_points):
        writer.append(_row(i), _samples(i))
    return writer


@pytest.mark.parametrize("existing", [0, SWEEP_POINTS])
def test_results_append(benchmark, tmp_path: Path, existing: int) -> None:
    template = tmp_path / "template"
    _new_run(template, existing)
    counter = {"round": 0}

    def fresh_copy() -> tuple[tuple[RunWriter, dict[str, Any], list[dict[str, Any]]], dict]:
        counter["round"] += 1
        run = tmp_path / f"round{counter['round']}"
        shutil.copytree(template, run)
        return (RunWriter.open_existing(run)[0], _row(existing), _samples(existing)), {}

    benchmark.group = "results writer"
    benchmark.extra_info.update({"existing_points": existing, "samples_per_point": SAMPLES_PER_POINT})
    benchmark.pedantic(lambda w, row, samples: w.append(row, samples), setup=fresh_copy,
                       rounds=APPEND_ROUNDS, iterations=1)
    last, _ = RunWriter.open_existing(tmp_path / f"round{counter['round']}")
    assert len(last.finished_hashes()) == existing + 1
