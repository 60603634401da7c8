"""How closely the harness's CPU timer agrees with ``torch.utils.benchmark`` from a microsecond to
a second (a benchmark, not a test: its figures depend on the machine and its load).

    python tests/benchmarks/timer_agreement.py [--threads 1] [--rounds 5] [--json FILE]

For each call (torch ops sized to take about 1 us ... 1 s on one thread), both timers measure the
same zero-argument callable on the same thread count, ``rounds`` times, alternating which goes
first; the figure is the median over rounds of each timer's median per-call time, and their ratio
(harness / torch.utils.benchmark). ``torch.utils.benchmark``: ``Timer(stmt="fn()").
blocked_autorange(min_run_time=...)``. The harness: :func:`harness.measure.timing.time_fn` with
its defaults (``min_sample_ms`` 1 ms batching) and with ``min_sample_ms=0`` (one call per
sample, the timer before batching) for contrast.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.utils.benchmark as tub

from harness.measure.timing import time_fn


def calls() -> dict[str, Callable[[], Any]]:
    """Name -> callable, from about a microsecond to about a second on one core (the names say
    what is computed; the timers say how long it takes)."""
    tiny = torch.ones(16)
    kib = torch.ones(256)  # 1 KiB of float32
    m64, m256, m1024 = (torch.randn(n, n) for n in (64, 256, 1024))
    m2048 = torch.randn(2048, 2048)
    return {
        "in-place add, 16 floats": lambda: tiny.add_(0),
        "add, 1 KiB": lambda: kib + kib,
        "matmul 64x64": lambda: m64 @ m64,
        "matmul 256x256": lambda: m256 @ m256,
        "matmul 1024x1024": lambda: m1024 @ m1024,
        "3 matmuls 2048x2048": lambda: (m2048 @ m2048, m2048 @ m2048, m2048 @ m2048),
    }


def torch_ms(fn: Callable[[], Any], threads: int) -> float:
    t = tub.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return t.blocked_autorange(min_run_time=1.0).median * 1e3


def harness_ms(fn: Callable[[], Any], **cfg: Any) -> tuple[float, int]:
    m = time_fn(fn, "cpu", warmup_n=2, min_samples=10, max_samples=50, budget_s=1.0, **cfg)
    return statistics.median(m.device_ms), m.calls_per_sample


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name, fn in calls().items():
        th, hb, h1, ks = [], [], [], []
        for r in range(args.rounds):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for which in order:
                if which == 0:
                    th.append(torch_ms(fn, args.threads))
                else:
                    ms, k = harness_ms(fn)
                    hb.append(ms)
                    ks.append(k)
                    h1.append(harness_ms(fn, min_sample_ms=0)[0])
        t, b, one = statistics.median(th), statistics.median(hb), statistics.median(h1)
        rows.append({"call": name, "torch_utils_benchmark_us": t * 1e3, "harness_us": b * 1e3,
                     "harness_ratio": b / t, "calls_per_sample": max(ks),
                     "one_call_per_sample_us": one * 1e3, "one_call_ratio": one / t})
        print(f"{name:24s} torch.utils.benchmark {t * 1e3:12.3f} us   harness {b * 1e3:12.3f} us "
              f"({b / t:6.3f}x, {max(ks)} calls/sample)   one call per sample {one * 1e3:12.3f} us "
              f"({one / t:6.3f}x)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "rounds": args.rounds, "torch": torch.__version__,
                       "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
