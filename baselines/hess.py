"""HeSS-guided block-sparse global attention ("HeSS: Head Sensitivity Score for Sparsity
Redistribution in VGGT", Kim et al., CVPR 2026, arXiv 2603.25336), at VGGT's global-attention seam.
Training-free and calibration-based. The authors' repository (libary753/HeSS) holds a README only
(code "upcoming"), so this follows the paper's description; docs/methods/hess.md lists every choice.

The sparse attention is the block-sparse attention of sparse-VGGT (arXiv 2509.07120, the
``blocksparse`` baseline, whose estimate, gather and FlexAttention paths are reused here): each
patch-query block keeps its top key blocks of a mean-pooled block map. HeSS changes one thing: the
number of key blocks a query block keeps (its *budget*) differs per head.

1. **Calibrate** (``calibrate(probe)``, once per point, untimed): one forward on the calibration
   frames; at every global layer >= ``start_layer`` each head's sensitivity is the error that the
   uniform-budget sparsification causes in its output, ``e_h = 1/2 sum_i ||o_i^sparse - o_i||^2``
   (the second-order term of the loss change with an identity downstream Hessian: the paper's
   Fisher trace needs ground-truth camera / point errors and gradients, which the forward-only
   probe does not give). The scores are sum-normalized over the heads of each layer, as the paper's
   ``HeSS(h) = tr F^h / sum_h tr F^h``.
2. **Redistribute** (per layer, as the paper: its scores are comparable only within a layer): the
   layer's total budget ``C = H * c`` (c: the uniform budget of ``hess_sparsity``) is split in
   proportion to the scores, ``c_h = clip(lam * w_h, 1, nk)`` with ``sum_h c_h = C`` (the paper's
   iterative capping at the nk key blocks that exist; the floor of one block is ours), then rounded
   to whole blocks by largest remainder, the total kept exactly.
3. **Attend**: block-sparse attention with head h's query blocks keeping their top ``c_h`` blocks.

Shapes: q, k, v ``[B, H, N, d]`` -> ``[B, H, N, d]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# the block-sparse machinery is blocksparse's own (one concept, one place), with a per-head budget
from baselines.blocksparse import BACKENDS, GATHER_CHUNK_ELEMS, BlockSpec, sparse_block_attention
from harness.metrics.memory_model import INT64, SeamShape, block_sparse_bytes, plain_bytes
from harness.models.seam import AttentionLayout, GradProbe, Probe, VGGTMethod, sdpa_attention
from harness.params import param
from harness.registry import register_method

ALLOCATIONS = ("sensitivity", "uniform", "inverted")
SCORES = ("fisher", "output_error")
MIN_BLOCKS = 1  # every head's query block keeps at least one key block
ROUND_TOL = 1e-9  # float slack when budgets that are whole numbers are rounded down


@dataclass(frozen=True)
class HeSSParams:
    """HeSS knobs (names are what suites sweep)."""

    hess_sparsity: float = param(0.75, "mean fraction of key blocks a query block drops, over the heads of "
                                 "each layer (0: keep all)", range=(0.0, 1.0))
    hess_allocation: str = param(
        "sensitivity", "per-head budgets: 'sensitivity' (HeSS), 'uniform' (every head the same: the "
        "blocksparse baseline) or 'inverted' (the HeSS budgets handed out in reverse order of sensitivity)",
        choices=ALLOCATIONS)
    hess_score: str = param(
        "fisher", "head sensitivity: 'fisher' (the paper's: trace of the Fisher information of the "
        "ground-truth camera and point-cloud errors w.r.t. each head's W_Q, on calibration scenes, with "
        "gradients) or 'output_error' (forward only: each head's output error under uniform sparsification)",
        choices=SCORES)
    hess_lambda: float = param(0.5, "fisher: weight of the camera-error score; 1 - it weights the "
                               "point-cloud error's (the paper's lambda)", range=(0.0, 1.0))
    hess_calib_frames: int = param(20, "fisher: frames of each calibration scene (the paper calibrates on "
                                   "20 views); 0: the point's frames", range=(0, None))
    hess_calib_scenes: int = param(1, "fisher: calibration scenes whose Fisher traces are summed",
                                   range=(1, None))
    hess_q_block: int = param(128, "query block size (tokens) of the block attention map", range=(1, 1 << 16))
    hess_k_block: int = param(64, "key block size (tokens) of the block attention map", range=(1, 1 << 16))
    hess_cdf: float = param(0.0, "keep only the top blocks holding this estimated attention mass, within "
                            "each head's budget (0: off)", range=(0.0, 1.0))
    hess_dense_special: bool = param(True, "camera/register tokens attend and are attended densely")
    start_layer: int = param(0, "global layers with a smaller index use plain attention", range=(0, None))
    hess_backend: str = param(
        "auto", "kept-block attention: 'gather' (any device), 'flex' (FlexAttention block mask; compiled on "
        "CUDA) or 'auto' (flex on CUDA)", choices=BACKENDS)

    def seam_peak_bytes(self, shape: SeamShape, largest_budget: int | None = None) -> dict[str, float]:
        """Temporaries at the peak of one call: blocksparse's core
        (:func:`harness.metrics.memory_model.block_sparse_bytes` with per-head caps) with its top-k
        as wide as the largest head budget, and the cached per-head budgets ``[H]``.

        The largest budget is data-dependent (the calibration sets it): ``largest_budget`` when
        given; otherwise the uniform budget for ``hess_allocation: uniform`` and, for the
        sensitivity-based splits, the cap every head budget is clipped to, all ``nk`` key blocks (an
        upper bound: the most sensitive head may keep every block)."""
        if shape.layer < self.start_layer:
            return plain_bytes(shape)

        def budget(nk: int) -> int:
            if largest_budget is not None:
                return largest_budget
            return uniform_budget(nk, self.hess_sparsity) if self.hess_allocation == "uniform" else nk

        terms = block_sparse_bytes(shape, self.hess_q_block, self.hess_k_block, self.hess_cdf,
                                   self.hess_dense_special, self.hess_backend, budget, per_head_caps=True,
                                   gather_chunk_elems=GATHER_CHUNK_ELEMS)
        return terms | {"cached: per-head budgets": float(shape.heads * INT64)}


# --------------------------------------------------------------------------------- budget allocation


def uniform_budget(key_blocks: int, sparsity: float) -> int:
    """Kept key blocks per query block at a uniform ``sparsity`` (blocksparse's rule: the dropped
    share rounded down, at least one kept)."""
    return max(MIN_BLOCKS, key_blocks - math.floor(sparsity * key_blocks + 1e-9))


def head_scores(errors: torch.Tensor) -> torch.Tensor:
    """HeSS of one layer: errors [H] >= 0 sum-normalized over the heads -> [H] float64 summing to 1
    (equal shares when every error is 0, e.g. at sparsity 0)."""
    e = errors.double().clamp_min(0)
    total = float(e.sum())
    return e / total if total > 0 else torch.full_like(e, 1.0 / e.numel())


def query_fisher_traces(loss: torch.Tensor, qkv: dict[int, torch.Tensor],
                        heads: int) -> dict[int, torch.Tensor]:
    """One sample's Fisher trace per head of each layer: ``tr F^h = ||d loss / d W_Q^h||_F^2``.

    loss: a scalar with a graph; qkv: layer -> fused qkv weight [3C, C] (requires grad), whose rows
    ``h*d .. (h+1)*d - 1`` (d = C / heads) are head h's query projection W_Q^h -> layer -> [heads]
    float64 on the CPU (zeros where the loss does not reach the layer). The graph is kept, for the
    next loss of the same forward."""
    layers = sorted(qkv)
    grads = torch.autograd.grad(loss, [qkv[i] for i in layers], retain_graph=True, allow_unused=True)
    traces: dict[int, torch.Tensor] = {}
    for i, g in zip(layers, grads, strict=True):
        C = qkv[i].shape[1]
        if g is None:
            traces[i] = torch.zeros(heads, dtype=torch.float64)
            continue
        w_q = g[:C].double().reshape(heads, C // heads, C)  # [H, d, C]: head h's rows of W_Q
        traces[i] = w_q.pow(2).sum(dim=(1, 2)).cpu()
    return traces


def mix_scores(camera: torch.Tensor, points: torch.Tensor, lam: float) -> torch.Tensor:
    """The paper's ``HeSS(h) = lam * HeSS_cam(h) + (1 - lam) * HeSS_pc(h)``, each term the Fisher
    traces [H] of one error sum-normalized over the layer's heads (:func:`head_scores`) -> [H] float64
    summing to 1."""
    return lam * head_scores(camera) + (1.0 - lam) * head_scores(points)


def capped_shares(weights: torch.Tensor, total: float, lo: float, hi: float) -> torch.Tensor:
    """Real budgets ``clip(lam * w_h, lo, hi)`` summing to ``total``. weights: [H] >= 0 -> [H] float64.

    Without the floor this is the paper's iterative capping (a head whose proportional share exceeds
    ``hi`` gets ``hi``, the rest is shared again in proportion); the sum is piecewise linear in lam,
    so lam is found exactly between two of its breakpoints. If every weighted head is capped, the
    remainder is split equally over the unweighted ones. Needs ``H * lo <= total <= H * hi``."""
    w = weights.double()
    H = w.numel()
    if not H * lo - 1e-9 <= total <= H * hi + 1e-9:
        raise ValueError(f"hess: a total of {total} blocks cannot be split over {H} heads "
                         f"within [{lo}, {hi}]")
    pos = w > 0

    def kept(lam: float) -> float:
        return float(torch.where(pos, (lam * w).clamp(lo, hi), torch.full_like(w, lo)).sum())

    if hi * int(pos.sum()) + lo * int((~pos).sum()) <= total:  # every weighted head saturates
        rest = (total - kept(math.inf)) / max(1, int((~pos).sum()))
        return torch.where(pos, torch.full_like(w, hi), torch.full_like(w, lo + rest))
    lam_lo, s_lo = 0.0, kept(0.0)
    for lam in sorted({*(lo / w[pos]).tolist(), *(hi / w[pos]).tolist()}):
        s = kept(lam)
        if s >= total:
            lam = lam_lo + (total - s_lo) * (lam - lam_lo) / (s - s_lo) if s > s_lo else lam
            return torch.where(pos, (lam * w).clamp(lo, hi), torch.full_like(w, lo))
        lam_lo, s_lo = lam, s
    raise AssertionError("unreachable: the saturated case returned above")


def whole_blocks(shares: torch.Tensor, total: int, hi: int) -> torch.Tensor:
    """Round real budgets [H] (within [MIN_BLOCKS, hi], summing to ``total``) to whole blocks [H] long
    summing to ``total``: each rounded down, the missing blocks to the largest remainders (ties: the
    lower head index)."""
    base = (shares + ROUND_TOL).floor().clamp(MIN_BLOCKS, hi).long()
    missing = total - int(base.sum())
    frac = torch.where(base < hi, shares - base.double(), torch.full_like(shares, -math.inf))
    order = sorted(range(shares.numel()), key=lambda h: (-float(frac[h]), h))
    for h in order[:missing]:
        base[h] += 1
    if int(base.sum()) != total:
        raise AssertionError(f"hess: rounded budgets {base.tolist()} do not sum to {total}")
    return base


def allocate(scores: torch.Tensor, key_blocks: int, sparsity: float, allocation: str) -> torch.Tensor:
    """Kept key blocks per head [H] long of one layer, summing to H times the uniform budget.

    scores: [H] HeSS of the layer (summing to 1); key_blocks: nk, the cap."""
    H = scores.numel()
    even = uniform_budget(key_blocks, sparsity)
    if allocation == "uniform":
        return torch.full((H,), even, dtype=torch.long)
    budgets = whole_blocks(capped_shares(scores, H * even, MIN_BLOCKS, key_blocks), H * even, key_blocks)
    if allocation == "inverted":  # the most sensitive head gets the smallest budget, and so on
        by_score = sorted(range(H), key=lambda h: (-float(scores[h]), h))
        ascending = sorted(budgets.tolist())
        budgets = torch.empty_like(budgets)
        for rank, h in enumerate(by_score):
            budgets[h] = ascending[rank]
    return budgets


# --------------------------------------------------------------------------------- sparse attention


def key_blocks(layout: AttentionLayout, p: HeSSParams) -> int:
    """nk: the number of patch key blocks of a sequence of this layout."""
    patch_per_frame = layout.tokens_per_frame - (layout.patch_start if p.hess_dense_special else 0)
    return -(-layout.frames * patch_per_frame // p.hess_k_block)


def head_budget_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout,
                          budgets: torch.Tensor, largest: int, p: HeSSParams) -> torch.Tensor:
    """Block-sparse attention where head h's query blocks keep their top ``budgets[h]`` key blocks.

    q, k, v: [B, H, N, d]; budgets: [H] long on q's device; largest: ``max(budgets)`` (known on the
    host, so that no device sync is needed) -> [B, H, N, d]."""
    spec = BlockSpec(p.hess_q_block, p.hess_k_block, p.hess_cdf, p.hess_dense_special, p.hess_backend)
    return sparse_block_attention(q, k, v, layout, spec, lambda nk: (largest, budgets), name="hess")


def sparsification_error(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout,
                         dense: torch.Tensor, p: HeSSParams) -> torch.Tensor:
    """Per-head error of uniform-budget sparsification: ``1/2 sum_{b, i} ||o_sparse - dense||^2``.

    q, k, v, dense: [B, H, N, d] (dense: plain attention's output) -> [H] float64 on the CPU."""
    plain = AttentionLayout(layout.frames, layout.tokens_per_frame, layout.patch_h, layout.patch_w,
                            layout.patch_start, layout.layer)  # no recorder: calibration is not counted
    even = uniform_budget(key_blocks(layout, p), p.hess_sparsity)
    budgets = torch.full((q.shape[1],), even, dtype=torch.long, device=q.device)
    sparse = head_budget_attention(q, k, v, plain, budgets, even, p)
    return 0.5 * (sparse.double() - dense.double()).pow(2).sum(dim=(0, 2, 3)).cpu()


class HeSSAttention:
    """The calibrated state and the ``attention_fn`` of one HeSS point.

    ``scores[layer]``: [H] HeSS of a calibrated layer (summing to 1); ``head_budgets(layer, layout)``:
    the kept key blocks per head [H] that ``__call__`` uses there."""

    def __init__(self, p: HeSSParams) -> None:
        self.p = p
        self.scores: dict[int, torch.Tensor] = {}
        self.stats: dict[str, float] = {}
        self._on_device: dict[tuple[int, int, str, int], tuple[torch.Tensor, int]] = {}

    def calibrate_fisher(self, probe: GradProbe) -> None:
        """The paper's calibration: per calibration scene, one forward with gradients of dense VGGT;
        each global layer's per-head Fisher traces of the camera and the point-cloud error w.r.t. W_Q^h
        (summed over the scenes), each normalized over the layer's heads, mixed with ``hess_lambda``."""
        p = self.p
        traces: dict[str, dict[int, torch.Tensor]] = {"camera": {}, "points": {}}
        inliers = []
        for scene in range(p.hess_calib_scenes):
            try:
                calib = probe(sdpa_attention, frames=p.hess_calib_frames or None, scene=scene)
                qkv = {i: w for i, w in calib.qkv.items() if i >= p.start_layer}
                for name, per_layer in traces.items():
                    for i, tr in query_fisher_traces(calib.losses[name], qkv, calib.heads).items():
                        per_layer[i] = per_layer[i] + tr if i in per_layer else tr
            except torch.OutOfMemoryError as e:
                said = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ValueError(
                    f"hess: the Fisher calibration (a forward and backward of the whole model on "
                    f"hess_calib_frames={p.hess_calib_frames} frames) ran out of device memory; lower "
                    "hess_calib_frames (e.g. --set hess_calib_frames=8) or use hess_score: output_error "
                    f"(forward only). The device said: {said}"
                ) from None
            inliers.append(calib.stats["inlier_frac"])
            del calib
        self.scores = {i: mix_scores(traces["camera"][i], traces["points"][i], p.hess_lambda)
                       for i in sorted(traces["camera"])}
        self.stats = {"hess_inlier_frac": sum(inliers) / len(inliers)}
        self._on_device = {}

    def calibrate(self, probe: Probe) -> None:
        """``hess_score: output_error``: one calibration forward; each layer's per-head sparsification
        error -> its HeSS."""
        errors: dict[int, torch.Tensor] = {}

        def record(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   layout: AttentionLayout) -> torch.Tensor:
            dense = sdpa_attention(q, k, v)
            if layout.layer >= self.p.start_layer:
                e = sparsification_error(q, k, v, layout, dense, self.p)
                errors[layout.layer] = errors[layout.layer] + e if layout.layer in errors else e
            return dense

        probe(record)
        self.scores = {layer: head_scores(e) for layer, e in sorted(errors.items())}
        self._on_device = {}

    def head_budgets(self, layer: int, layout: AttentionLayout, heads: int | None = None) -> torch.Tensor:
        """Kept key blocks per head [H] long (CPU) at global ``layer`` for sequences of ``layout``'s
        shape; raises ValueError for a layer the calibration did not see. ``uniform`` with ``heads``
        given needs no calibration (every head gets the uniform budget)."""
        if self.p.hess_allocation == "uniform" and heads is not None:
            even = uniform_budget(key_blocks(layout, self.p), self.p.hess_sparsity)
            return torch.full((heads,), even, dtype=torch.long)
        if layer not in self.scores:
            seen = sorted(self.scores) or "none"
            raise ValueError(f"hess: global layer {layer} has no calibration (calibrated layers: {seen}); "
                             "call the method's calibrate(probe) first (the vggt workload does so "
                             "before timing)")
        return allocate(self.scores[layer], key_blocks(layout, self.p), self.p.hess_sparsity,
                        self.p.hess_allocation)

    def _budgets(self, layout: AttentionLayout, device: torch.device, heads: int) -> tuple[torch.Tensor, int]:
        """(budgets [H] on ``device``, their largest value) of ``layout.layer``, cached."""
        key = (layout.layer, key_blocks(layout, self.p), str(device), heads)
        if key not in self._on_device:
            budgets = self.head_budgets(layout.layer, layout, heads)
            self._on_device[key] = budgets.to(device), int(budgets.max())
        return self._on_device[key]

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 layout: AttentionLayout) -> torch.Tensor:
        """HeSS attention: q, k, v [B, H, N, d] -> [B, H, N, d]."""
        if layout.layer < self.p.start_layer:
            return sdpa_attention(q, k, v, layout)
        budgets, largest = self._budgets(layout, q.device, q.shape[1])
        if budgets.numel() != q.shape[1]:
            raise ValueError(f"hess: layer {layout.layer} was calibrated with {budgets.numel()} heads, "
                             f"q has {q.shape[1]}")
        return head_budget_attention(q, k, v, layout, budgets, largest, self.p)


@register_method("hess", params=HeSSParams, workloads=("vggt",),
                 doc="HeSS: block-sparse global attention whose per-head block budgets follow calibrated "
                     "head sensitivities (arXiv 2603.25336)")
def make_hess(p: HeSSParams) -> VGGTMethod:
    """Build HeSS: its ``attention_fn`` and the ``calibrate(probe)`` that must run first."""
    attention = HeSSAttention(p)
    if p.hess_allocation == "uniform":  # every head the same budget: the scores would go unused
        return VGGTMethod(attention_fn=attention)
    if p.hess_score == "output_error":
        return VGGTMethod(attention_fn=attention, calibrate=attention.calibrate)
    return VGGTMethod(attention_fn=attention, calibrate_grad=attention.calibrate_fisher,
                      work_counters=lambda _model, _frames, _tpf: dict(attention.stats))
