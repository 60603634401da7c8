"""Which points run, and in which order: grouping by model, the three orders, shards, selection.

Orders: ``grid`` (suite order, grouped by model key), ``interleave`` (within each model group,
methods take turns), ``shuffle`` (a permutation seeded by the suite hash, so a resumed run keeps
its order). Shards cut the points sorted by hash, so they are the same on every machine.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

from harness.errors import RunError
from harness.workloads.base import Point

ORDERS = ("grid", "shuffle", "interleave")


def hashable_key(key: Any) -> Hashable:
    """``key`` itself when it can be hashed, else its repr (model keys may hold lists)."""
    try:
        hash(key)
        return key
    except TypeError:
        return repr(key)


def order_points(points: Sequence[Point], model_key: Any, order: str, seed_text: str) -> list[Point]:
    """Points in run order. ``model_key(point)`` groups points that share a model; inside a model
    group, points with equal workload parameters (same inputs) are adjacent."""
    if order not in ORDERS:
        raise RunError(f"unknown order {order!r}; allowed: {', '.join(ORDERS)}")
    if order == "shuffle":
        out = list(points)
        random.Random(int(hashlib.sha256(seed_text.encode()).hexdigest()[:16], 16)).shuffle(out)
        return out
    # two levels: points sharing a model run together (each model is built once), and inside
    # that, points sharing the workload-level config (the same inputs and reference output)
    by_model: OrderedDict[Hashable, OrderedDict[Hashable, list[Point]]] = OrderedDict()
    for p in points:
        inputs = hashable_key((p.workload_params, p.common))
        by_model.setdefault(hashable_key(model_key(p)), OrderedDict()).setdefault(inputs, []).append(p)
    groups = [g for inner in by_model.values() for g in inner.values()]
    out = []
    for group in groups:
        if order == "grid":
            out.extend(group)
            continue
        by_method: OrderedDict[str, list[Point]] = OrderedDict()
        for p in group:
            by_method.setdefault(p.method, []).append(p)
        queues = list(by_method.values())
        i = 0
        while any(queues):
            q = queues[i % len(queues)]
            if q:
                out.append(q.pop(0))
            i += 1
    return out


def shard_points(points: Sequence[Point], model_key: Any, seed_text: str, index: int,
                 count: int) -> list[Point]:
    """Shard ``index`` of ``count``: a contiguous slice of the points grouped by model (points sharing
    a model stay together; at most the points at a cut build their model twice), starting from the
    points sorted by hash, so the split depends on the set of points only: the same suite gives the
    same shards on every machine, whatever ``--order`` each shard runs in. The shards are disjoint,
    differ in size by at most one point, and together hold every point. Raises RunError for an
    invalid pair."""
    if not (count >= 1 and 0 <= index < count):
        raise RunError(f"--shard {index}/{count}: need 0 <= i < n (shards are numbered 0 .. n-1)")
    grid = order_points(sorted(points, key=lambda p: p.hash), model_key, "grid", seed_text)
    return grid[index * len(grid) // count:(index + 1) * len(grid) // count]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n); raises ValueError saying the expected form."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError("expected I/N, e.g. 0/4 (shard I of N, numbered from 0)") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError("need 0 <= I < N (shards are numbered 0 .. N-1)")
    return i, n


def select_points(points: Sequence[Point], recorded: set[str], hashes: Sequence[str] = (),
                  methods: Sequence[str] = ()) -> list[Point]:
    """The recorded points chosen by hash (a unique prefix is enough) and/or method; all recorded
    points when neither is given. Raises RunError naming what is unknown and what exists."""
    pool = [p for p in points if p.hash in recorded]
    known_methods = list(dict.fromkeys(p.method for p in pool))
    bad = [m for m in methods if m not in known_methods]
    if bad:
        raise RunError(f"--method {bad[0]!r} has no recorded point in this run; "
                       f"methods: {', '.join(known_methods)}")
    chosen = [p for p in pool if not methods or p.method in methods]
    if hashes:
        picked = []
        for h in hashes:
            hits = [p for p in pool if p.hash.startswith(h)]
            if len(hits) != 1:
                listed = hits or pool  # the ambiguous matches, or what there is
                shown = ", ".join(f"{p.hash} ({p.method})" for p in listed[:6])
                shown += ", ..." if len(listed) > 6 else ""
                what, which = ("no recorded point", "points") if not hits else \
                    (f"{len(hits)} recorded points", "give more of the hash to pick one of")
                raise RunError(f"--point {h!r} matches {what} of this run; {which}: {shown} "
                               "(report/points.csv of the run lists every point_hash)")
            picked.append(hits[0])
        chosen = [p for p in chosen if p in picked]
    return chosen
