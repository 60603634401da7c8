"""Micro-benchmark: one VGGT global-attention call, plain SDPA vs HTTM vs ToMe vs FastVGGT.

pytest-benchmark (run by ``nox -s microbench``): modest sizes, B=1, H=16, d=64, S=8 frames of
a 14 x 19 patch grid (P = 271, N = 2168).

As a script, the VGGT-1B shape (patch grid 28 x 37, P = 1041) with interleaved repeats and
the per-phase breakdown (match / aggregate / attention)::

    PYTHONPATH=. python tests/benchmarks/bench_merging_layer.py --frames 8 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from baselines.fastvggt import FastVGGTParams, make_fastvggt
from baselines.tome import ToMeParams, make_tome
from harness.methods import kernels
from harness.methods.httm import HTTMParams, make_httm
from harness.models.seam import AttentionLayout, Recorder, sdpa_attention

HEADS, HEAD_DIM, WIDTH, PATCH_START = 16, 64, 1024, 5


def make_inputs(frames: int, patch_h: int, patch_w: int, device: str = "cpu", dtype=torch.float32, seed=0):
    """q, k, v [1, H, N, d] with temporal redundancy (one frame repeated + noise); x_norm [1, N, C]."""
    g = torch.Generator().manual_seed(seed)
    P = PATCH_START + patch_h * patch_w
    out = []
    for _ in range(3):
        base = torch.randn(1, HEADS, 1, P, HEAD_DIM, generator=g)
        noise = torch.randn(1, HEADS, frames, P, HEAD_DIM, generator=g)
        out.append((base + 0.3 * noise).reshape(1, HEADS, -1, HEAD_DIM))
    x = torch.randn(1, frames * P, WIDTH, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (*out, x)]


def methods() -> dict[str, Callable]:
    return {
        "sdpa": sdpa_attention,
        "httm_q0.2_kv0.3": make_httm(HTTMParams()),
        "httm_q0.4_kv0.3": make_httm(HTTMParams(query_merge=0.7)),
        "httm_g1": make_httm(HTTMParams(head_groups=1)),
        "fastvggt": make_fastvggt(FastVGGTParams()),
        "tome_0.5": make_tome(ToMeParams(tome_ratio=0.5)),
    }


# ------------------------------------------------------------------ pytest-benchmark

_SMALL = dict(frames=8, patch_h=14, patch_w=19)


def _bench(benchmark, name: str) -> None:
    torch.manual_seed(0)
    q, k, v, x = make_inputs(**_SMALL)
    lay = AttentionLayout(_SMALL["frames"], PATCH_START + 14 * 19, 14, 19, PATCH_START, x_norm=x)
    fn = methods()[name]
    out = benchmark(fn, q, k, v, lay)
    assert out.shape == q.shape


def test_sdpa(benchmark):
    _bench(benchmark, "sdpa")


def test_httm_paper_setting(benchmark):
    _bench(benchmark, "httm_q0.2_kv0.3")


def test_httm_q04(benchmark):
    _bench(benchmark, "httm_q0.4_kv0.3")


def test_fastvggt(benchmark):
    _bench(benchmark, "fastvggt")


def test_tome(benchmark):
    _bench(benchmark, "tome_0.5")


# ----------------------------------------------------------------------------- script


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(frames: int, repeats: int, device: str, dtype: torch.dtype, skip: set[str]) -> None:
    patch_h, patch_w = 28, 37
    P = PATCH_START + patch_h * patch_w
    q, k, v, x = make_inputs(frames, patch_h, patch_w, device, dtype)
    fns = {n: f for n, f in methods().items() if n not in skip}
    times: dict[str, list[float]] = {n: [] for n in fns}
    info: dict[str, tuple[dict, dict]] = {}
    for f in fns.values():  # warm-up (caches, allocator)
        f(q, k, v, AttentionLayout(frames, P, patch_h, patch_w, PATCH_START, x_norm=x))
    for _ in range(repeats):
        for n, f in fns.items():  # interleaved, so load changes hit every method alike
            lay = AttentionLayout(frames, P, patch_h, patch_w, PATCH_START, x_norm=x)
            _sync(device)
            t0 = time.perf_counter()
            f(q, k, v, lay)
            _sync(device)
            times[n].append((time.perf_counter() - t0) * 1e3)
    for n, f in fns.items():  # one breakdown run each (synchronizing phases)
        rec = Recorder(timed=True, device=device)
        f(q, k, v, AttentionLayout(frames, P, patch_h, patch_w, PATCH_START, x_norm=x, recorder=rec))
        info[n] = (dict(rec.phases_ms), dict(rec.counters))
    N = frames * P
    base = statistics.median(times["sdpa"]) if "sdpa" in times else None
    path = kernels.resolved(device.split(":")[0])
    print(f"B=1 H={HEADS} d={HEAD_DIM} S={frames} P={P} N={N} device={device} dtype={dtype} "
          f"threads={torch.get_num_threads()} repeats={repeats} merge kernels={path}")
    print(f"{'method':18s} {'median_ms':>10s} {'min..max_ms':>17s} {'speedup':>8s} {'q/N':>6s} {'kv/N':>6s} "
          f"{'match%':>7s} {'aggr%':>6s} {'attn%':>6s}")
    for n, ts in times.items():
        ph, c = info[n]
        tot = sum(ph.values()) or 1.0
        med = statistics.median(ts)
        sp = f"{base / med:8.2f}" if base else "     n/a"
        print(f"{n:18s} {med:10.1f} {min(ts):8.1f}..{max(ts):<8.1f} {sp} "
              f"{c.get('tokens_q', 0) / HEADS / N:6.3f} {c.get('tokens_kv', 0) / HEADS / N:6.3f} "
              f"{100 * ph.get('match', 0) / tot:7.1f} {100 * ph.get('aggregate', 0) / tot:6.1f} "
              f"{100 * ph.get('attention', 0) / tot:6.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--skip", default="", help="comma-separated method names to leave out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for s in a.frames:
        run(s, a.repeats, a.device, getattr(torch, a.dtype), set(filter(None, a.skip.split(","))))
