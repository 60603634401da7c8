"""Slow loop references of the merging methods, written from the algorithms' descriptions.

They share no code with ``harness/methods`` or ``baselines/`` (no partitions, no slot maps):
roles, blocks and matches are computed by plain Python loops over token indices, and a merge
result is described by *labels* (one integer per token; tokens with the same label form one
merged token). Used by the ToMe, FastVGGT and HTTM tests to catch wrong metrics, wrong match
directions and wrong block layouts that aggregate checks (counts, finiteness) let through.
"""

from __future__ import annotations

import math

import torch


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-12))


def bipartite_labels(x: torch.Tensor, src: list[int], dst: list[int], r: int, labels: list[int],
                     next_label: int, least: bool = False) -> int:
    """Every src finds its most cosine-similar dst in ``x`` ([N, D]); the ``r`` src with the highest
    such similarity take their dst's label, the rest get fresh labels. Mutates ``labels``; returns
    the next free label. ``least=True`` is a planted mistake (the r LEAST similar src merge) that
    tests use to show they would notice it."""
    best = []
    for s in src:
        sims = [cosine(x[s], x[t]) for t in dst]
        j = max(range(len(dst)), key=lambda i: sims[i])
        best.append((sims[j], s, dst[j]))
    best.sort(key=lambda e: e[0] if least else -e[0])
    for rank, (_, s, t) in enumerate(best):
        if rank < r:
            labels[s] = labels[t]
        else:
            labels[s] = next_label
            next_label += 1
    return next_label


def groups_of(labels: list[int]) -> list[list[int]]:
    """Member lists, one per distinct label."""
    out: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        out.setdefault(lab, []).append(i)
    return list(out.values())


def merged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_groups: list[list[list[int]]],
                     kv_groups: list[list[list[int]]], prop_attn: bool = False) -> torch.Tensor:
    """Attention on plain-mean merged tokens, unmerged by copy. q, k, v: [H, N, d] -> [H, N, d].

    q_groups[h] / kv_groups[h]: the member lists of head h's merged queries / keys+values.
    ``prop_attn`` adds log(group size) of every key to the logits.
    """
    H, N, d = q.shape
    out = torch.empty_like(q)
    for h in range(H):
        qm = torch.stack([q[h, g].mean(0) for g in q_groups[h]])
        km = torch.stack([k[h, g].mean(0) for g in kv_groups[h]])
        vm = torch.stack([v[h, g].mean(0) for g in kv_groups[h]])
        logits = qm @ km.T / math.sqrt(d)
        if prop_attn:
            logits = logits + torch.tensor([math.log(len(g)) for g in kv_groups[h]])
        om = torch.softmax(logits, dim=-1) @ vm
        for row, g in zip(om, q_groups[h]):
            out[h, g] = row
    return out


# ------------------------------------------------------------------------------- ToMe


def tome_labels(metric: torch.Tensor, tokens_per_frame: int, patch_start: int, ratio: float,
                least: bool = False) -> list[int]:
    """ToMe with protected special tokens: A = even, B = odd positions (specials in neither);
    r = min(floor(ratio N), |A|) of A merge into their most similar B. metric: [N, D]."""
    N = metric.shape[0]
    special = [i % tokens_per_frame < patch_start for i in range(N)]
    a = [i for i in range(N) if i % 2 == 0 and not special[i]]
    b = [i for i in range(N) if i % 2 == 1 and not special[i]]
    labels = list(range(N))
    bipartite_labels(metric, a, b, min(int(ratio * N), len(a)), labels, N, least)
    return labels


# --------------------------------------------------------------------------- FastVGGT


def fastvggt_labels(metric: torch.Tensor, frames: int, tokens_per_frame: int, patch_start: int,
                    dst_cells: torch.Tensor, ratio: float, least: bool = False) -> list[int]:
    """FastVGGT without salient tokens: frame 0's patches and one patch per 2x2 cell of every later
    frame (``dst_cells`` [frames - 1, h * w] bool) are dst; specials pass through; the other
    patches are src and the top floor(ratio * #src) merge into their most similar dst of ANY frame.
    metric: [N, D] (the layer's normed input)."""
    P = tokens_per_frame
    dst, src = [], []
    for f in range(frames):
        for j in range(patch_start, P):
            if f == 0 or bool(dst_cells[f - 1, j - patch_start]):
                dst.append(f * P + j)
            else:
                src.append(f * P + j)
    labels = list(range(frames * P))
    bipartite_labels(metric, src, dst, int(ratio * len(src)), labels, frames * P, least)
    return labels


# ------------------------------------------------------------------------------- HTTM


def httm_blocks(frames: int, tokens_per_frame: int, patch_start: int, n_s: int, n_t: int) -> list[list[int]]:
    """HTTM's temporal blocks (protected specials, no anchoring): frames in groups of ``n_t``
    consecutive frames, each frame's patches in chunks of ``n_s`` consecutive tokens (last chunks
    and groups shorter); a block = one chunk position of every frame of a group, frame-major."""
    P = tokens_per_frame
    blocks = []
    for g0 in range(0, frames, n_t):
        group = range(g0, min(frames, g0 + n_t))
        for c0 in range(patch_start, P, n_s):
            chunk = range(c0, min(P, c0 + n_s))
            blocks.append([f * P + j for f in group for j in chunk])
    return blocks


def httm_block_labels(x: torch.Tensor, blocks: list[list[int]], ratio: float, dst_frac: float) -> list[int]:
    """One decision row: per block of n tokens, round-half-up(ratio n) to merge; dst evenly strided
    (n - that many dst, or ceil(dst_frac n) when dst_frac > 0; at least one); top-r src merge into
    their most similar dst of the block. x: [N, D]."""
    N = x.shape[0]
    labels = list(range(N))
    nxt = N
    for blk in blocks:
        n = len(blk)
        r_target = min(n, int(ratio * n + 0.5))
        nd = n - r_target if dst_frac <= 0 else math.ceil(dst_frac * n)
        nd = min(n, max(1, nd))
        dst_pos = {int((i + 0.5) * n / nd) for i in range(nd)}
        dst = [blk[i] for i in range(n) if i in dst_pos]
        src = [blk[i] for i in range(n) if i not in dst_pos]
        nxt = bipartite_labels(x, src, dst, min(r_target, n - nd), labels, nxt)
    return labels


def httm_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, frames: int, tokens_per_frame: int,
                   patch_start: int, n_s: int, n_t: int, head_groups: int, query_merge: float,
                   kv_merge: float, outlier_frac: float, dst_frac: float = 0.0, decouple_qk: bool = True,
                   budget: int | None = None) -> torch.Tensor:
    """HTTM, one batch element, from the paper's description. q, k, v: [H, N, d] -> [H, N, d].

    A head group decides on the concatenation of its heads' vectors; Q merges on Q similarity, K and
    V on K similarity (one K-based decision for all three when not ``decouple_qk``); the
    ``budget`` (default round(outlier_frac * G * N)) largest positive query deviations from their
    merged query, summed over a group's heads, over all groups, leave their group as singletons.
    """
    H, N, d = q.shape
    G, hg = head_groups, H // head_groups
    blocks = httm_blocks(frames, tokens_per_frame, patch_start, n_s, n_t)

    def group_vectors(t: torch.Tensor, g: int) -> torch.Tensor:
        return torch.cat([t[h] for h in range(g * hg, (g + 1) * hg)], dim=-1)  # [N, hg d]

    kv_labels = [httm_block_labels(group_vectors(k, g), blocks, kv_merge, dst_frac) for g in range(G)]
    if decouple_qk:
        q_labels = [httm_block_labels(group_vectors(q, g), blocks, query_merge, dst_frac) for g in range(G)]
    else:
        q_labels = kv_labels
    deviations = []  # (deviation, group, token)
    for g in range(G):
        for members in groups_of(q_labels[g]):
            for i in members:
                heads = range(g * hg, (g + 1) * hg)
                dev = sum(float((q[h, i] - q[h, members].mean(0)).pow(2).sum()) for h in heads)
                deviations.append((dev, g, i))
    n_out = int(outlier_frac * G * N + 0.5) if budget is None else budget
    deviations.sort(key=lambda e: -e[0])
    flagged = {(g, i) for dev, g, i in deviations[:n_out] if dev > 0}
    q_groups, kv_groups = [], []
    for h in range(H):
        g = h // hg
        kept = [[i for i in m if (g, i) not in flagged] for m in groups_of(q_labels[g])]
        q_groups.append([m for m in kept if m] + [[i] for (gg, i) in sorted(flagged) if gg == g])
        kv_groups.append(groups_of(kv_labels[g]))
    return merged_attention(q, k, v, q_groups, kv_groups)
