"""LiteVGGT-style geometry-aware cached token merging at VGGT's global-attention seam.

Shu et al., "LiteVGGT: Boosting Vanilla VGGT via Geometry-aware Cached Token Merging"
(arXiv 2512.04939), re-implemented from the paper and its code (``GarlicBa/LiteVGGT-repo``,
``merging/merge.py``, ``vggt/layers/block.py``, ``vggt/models/aggregator.py``). Training-free part
only: the paper's fine-tuning is not implemented. Its FP8 (Transformer Engine on the linear layers,
not on attention) is approximated by ``lv_fp8``: a model transform that runs the aggregator blocks'
qkv, fc1 and fc2 through ``torch._scaled_mm`` in float8_e4m3fn with per-tensor scales from the
current amax (TE: delayed scaling from an amax history); CUDA compute capability >= 8.9 only,
refused elsewhere. Steps, knobs and every deviation: docs/methods/litevggt.md.

One forward, per batch row:

1. **Geometry score** of every patch token (once per forward, at its first global layer): the
   local variance of the patch tokens over a ``lv_var_window`` square of the patch grid, after a
   fixed random orthogonal projection to ``lv_proj_dim`` channels (the reference's token-variance
   map; its pixel-gradient map needs the input image, which the seam does not carry).
2. **Roles**: frame 0 is the reference frame (all its patches are targets); in frames >= 1 the
   anchor of every 2 x 2 cell of the patch grid is the cell's LOWEST-scoring patch (a target), the
   top ``lv_protect_frac`` of the remaining patches by score are protected (own slot, never
   merged), the rest are src. Camera/register tokens pass through (``lv_special_targets``: they
   are targets, as upstream).
3. **Matching** (at the forward's first layer and at ``lv_recompute_layers``): every src finds its
   most similar target by cosine similarity of the layer's normed input ``x_norm`` over all
   targets of all frames; the top ``lv_ratio`` share of src by that score merge.
4. **Reuse**: the other layers apply the cached assignment to their own q, k, v.
5. ONE assignment for Q, K and V: plain mean per group, SDPA, output copied back to every member.

A forward starts when the layer index does not increase (``layer <= last layer seen``): the
roles and the match are then recomputed. At the attention scope the same layer is called over
and over, so every call recomputes.

Shapes: q, k, v ``[B, H, N, d]`` with N = S * P (frames times tokens per frame) -> ``[B, H, N, d]``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from baselines.quantvggt import aggregator_blocks
from harness.methods.merging import (
    Partition,
    SlotMap,
    assign,
    merged_count,
    percentile,
    phase,
    rows_gather,
    shared_merge_attention,
    static_partition,
)
from harness.metrics.memory_model import (
    BOOL,
    FLOAT32,
    INT64,
    Forward,
    Ledger,
    MatchSetShape,
    ModelExtra,
    Moment,
    SeamShape,
    SlotMapBytes,
    assign_bytes,
    output_bytes,
    plain_bytes,
    shared_merge_bytes,
)
from harness.models.seam import (
    AttentionFn,
    AttentionLayout,
    CalibrationRun,
    VGGTMethod,
    check_tokens,
    elem_bytes,
    sdpa_attention,
    token_bytes,
)
from harness.params import param
from harness.registry import register_method

CELL = 2  # side of the anchor cells of the patch grid (the reference's sx = sy = 2)
ROLE_SRC, ROLE_TARGET, ROLE_KEPT = 0, 1, 2

FP8_DTYPE = torch.float8_e4m3fn
"""The FP8 format of TE's forward pass (its E4M3 recipe): 4 exponent bits, 3 mantissa bits, no inf."""
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)
"""Largest finite float8_e4m3fn (448): a tensor's amax is scaled onto it."""
FP8_LINEARS = (("attn", "qkv"), ("mlp", "fc1"), ("mlp", "fc2"))
"""The linear layers of an aggregator block that run in FP8 (parent, attribute): the reference's TE
modules (``te.Linear`` qkv, ``te.LayerNormMLP``); ``attn.proj`` stays a float ``nn.Linear`` there."""
FP8_MIN_CAPABILITY = (8, 9)
"""CUDA compute capability of the first GPUs with FP8 tensor cores (Ada; then Hopper, Blackwell)."""
FP8_ALIGN = 16
"""``torch._scaled_mm`` needs a linear's input and output widths divisible by this."""
SCALED_MM_OUT = (torch.bfloat16, torch.float16, torch.float32)
"""Output dtypes ``torch._scaled_mm`` writes; any other (float64) is computed in float32 and cast."""


@dataclass(frozen=True)
class LiteVGGTParams:
    """LiteVGGT knobs (names are what suites sweep). Defaults: the reference code's configuration."""

    lv_ratio: float = param(
        1.0, "fraction of the unprotected src merged into their most similar target (1.0: upstream's "
        "effective setting, its r = 0.9 N exceeds the src count)", range=(0.0, 1.0)
    )
    lv_recompute_layers: tuple[int, ...] = param(
        (0, 6, 15, 20), "global layers that recompute the merge indices; the others reuse the last "
        "ones (upstream: 0, 6, 15, 20 of VGGT-1B's 24); a forward's first layer always computes"
    )
    lv_protect_frac: float = param(
        0.1, "share of each frame's patches protected by highest geometry score (never merged)",
        range=(0.0, 1.0)
    )
    lv_special_targets: bool = param(
        False, "camera/register tokens absorb merges (upstream); False: pass-through"
    )
    lv_proj_dim: int = param(
        32, "channels of the random orthogonal projection before the token variance (0: all)",
        range=(0, None)
    )
    lv_var_window: int = param(3, "side of the local window of the token variance (odd)", range=(1, 15))
    lv_proj_seed: int = param(0, "seed of the random orthogonal projection", range=(0, None))
    lv_fp8: bool = param(
        False, "also run the aggregator blocks' qkv, fc1, fc2 in FP8 e4m3 (per-tensor current amax "
        "scaling, torch._scaled_mm) as the reference's Transformer Engine does; a model transform: "
        "scope model, CUDA compute capability >= 8.9 only (refused elsewhere)"
    )

    def __post_init__(self) -> None:
        if self.lv_var_window % 2 == 0:
            raise ValueError(f"lv_var_window={self.lv_var_window} must be odd (a window centred on a token)")
        if any(layer < 0 for layer in self.lv_recompute_layers):
            raise ValueError(f"lv_recompute_layers={list(self.lv_recompute_layers)} must be global layer "
                             "indices >= 0")

    def seam_peak_bytes(self, shape: SeamShape) -> dict[str, float]:
        """Temporaries at the peak of one call of a forward that runs layers 0, 1, ... (GPU path,
        Triton merge kernels), counting the cache the previous calls left: the cached random
        projection ``[C, lv_proj_dim]``, each row's partition (int64 indices of N tokens) and the slot
        map of the last recompute with its counts and unmerge index (``[B * H * N]`` int64).

        - Layer 0 starts a forward: the geometry scores (:func:`geometry_bytes`), the roles
          (:func:`roles_bytes`), the new partitions (:func:`partition_bytes`; the old ones die when
          they replace them), then as a recompute layer, whose ``cand_src`` is built on first use.
        - A recompute layer: per batch row the assignment on x_norm (:func:`assign_bytes`: the
          gathered ``[targets | src]`` x_norm rows, the largest term), the rows' slot maps joined;
          the previous slot map (and its counts and unmerge index) dies when the new one replaces it;
          then the merge as below with counts and unmerge index built.
        - Any other layer reuses the cached slot map: merged q, k, v, SDPA on M slots, the output
          copied back (:func:`shared_merge_bytes`).
        """
        if shape.frames == 1:
            return plain_bytes(shape)
        led = Ledger()
        sm = matching_bytes(led, shape, self)
        return led.terms(shared_merge_bytes(led, shape, sm), output_bytes(shape))

    def model_extra_bytes(self, fw: Forward) -> ModelExtra:
        """What ``lv_fp8``'s model copy adds to the forward ``fw`` (the memory wall's model terms, bytes;
        without ``lv_fp8`` nothing: the merging runs on the harness's model).

        held: :func:`fp8_copy`'s **copy** of the model, beside the original the workload keeps for the
        reference: every parameter again in its float dtype and the model's buffers, plus each
        :class:`FP8Linear`'s e4m3 weight ``[N, K]`` (1 byte per element) and its float32 scale (4
        bytes), for qkv, fc1 and fc2 of every frame and global block. Moments: the last global
        block's MLP while its FP8 ``fc1`` and ``fc2`` run (:func:`fp8_linear_bytes`; fc2, whose
        input is the MLP's width, is the largest of the three FP8 linears). The copy's parameters
        do not require grad, so autocast keeps no bf16 weight cache."""
        if not self.lv_fp8:
            return ModelExtra()
        fw = dataclasses.replace(fw, weight_cache=False)
        cfg = fw.cfg
        C, hidden = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)
        layers = 2 * cfg.depth  # frame and global blocks
        held_by = "FP8 copy: "
        held = {f"{held_by}weights (float) and buffers": float(fw.lin.params) * fw.w + fw.lin.buffers,
                f"{held_by}e4m3 weights (1 byte each)": float(layers) * (3 * C * C + 2 * C * hidden)
                * FP8_DTYPE.itemsize,
                f"{held_by}weight scales (float32)": float(layers * len(FP8_LINEARS)) * FLOAT32}
        around = fw.kept(cfg.depth - 1) + fw.mlp_around()
        fc1, fc2 = Ledger(), Ledger()
        *_, fc1_size, fc2_size = fw.lin.block  # weights + biases
        fp8_linear_bytes(fc1, fw, C, hidden, fc1_size - C * hidden, fw.r, "fc1 ")
        fc2.alloc("GELU output (fc2's input)", fw.tokens * hidden * fw.e)
        fp8_linear_bytes(fc2, fw, hidden, C, fc2_size - hidden * C, fw.e, "fc2 ")
        moments = {f"MLP fc1, FP8, layer {cfg.depth - 1}": Moment(around, fc1.terms()),
                   f"MLP fc2, FP8, layer {cfg.depth - 1}": Moment(around, fc2.terms())}
        return ModelExtra(held=held, moments=moments, weight_cache=False)


def fp8_linear_bytes(led: Ledger, fw: Forward, n_in: int, n_out: int, bias: int, x_elem: int,
                     what: str = "") -> int:
    """An :class:`FP8Linear` (:func:`fp8_linear`, ``bias`` bias elements) on all ``fw.tokens`` tokens,
    x ``[T, n_in]`` of ``x_elem`` bytes, replayed on ``led`` (bytes): x's scale (float32, 0-dim; the
    amax's other 0-dim temporaries die before anything below exists and are left out), x in float32
    (always a copy; scaled and clamped in place) and its e4m3 cast (1 byte per element), the two
    inverse scales ``_scaled_mm`` takes (float32, 0-dim), its output ``[T, n_out]`` in the linear's
    dtype (autocast's under autocast, else x's), the bias cast to that dtype (a copy when the float
    weights' dtype differs) and the sum. Returns the output's handle (everything else freed)."""
    T, out_elem = float(fw.tokens), fw.e if fw.autocast else x_elem
    scale = led.alloc(f"{what}input scale (float32)", FLOAT32)
    x32 = led.alloc(f"{what}x in float32 (scaled, clamped)", T * n_in * FLOAT32)
    xq = led.alloc(f"{what}x in e4m3", T * n_in * FP8_DTYPE.itemsize)
    led.free(x32)
    inverse = led.alloc(f"{what}inverse scales (float32)", 2 * FLOAT32)
    y = led.alloc(f"{what}_scaled_mm output", T * n_out * out_elem)
    led.free(inverse)
    cast = None
    if bias and fw.w != out_elem:  # bias.to(the output dtype)
        cast = led.alloc(f"{what}bias in the output dtype", bias * out_elem)
    out = led.alloc(f"{what}output", T * n_out * out_elem)
    led.free(y, cast, xq, scale)
    return out


# -- the memory wall's replay (harness/metrics/memory_model.py) ---------------------------------


def litevggt_sets(s: SeamShape, p: LiteVGGTParams) -> tuple[MatchSetShape, int]:
    """The one match set of a batch row's partition and its slot count M: the role counts are fixed
    by the layout (one anchor per 2 x 2 cell, a fixed number protected per frame)."""
    S, hw, ps = s.frames, s.patch_h * s.patch_w, s.patch_start
    cells = -(-s.patch_h // CELL) * -(-s.patch_w // CELL)
    protected = protected_count(hw, cells, p.lv_protect_frac)
    special = S * ps
    kept = (S - 1) * protected + (0 if p.lv_special_targets else special)
    targets = hw + (S - 1) * cells + (special if p.lv_special_targets else 0)
    src = (S - 1) * (hw - cells - protected)
    r = merged_count(p.lv_ratio, src)
    return MatchSetShape(nb=1, ns=src, nc=targets, r=r), kept + targets + src - r


def partition_index_bytes(tokens: int, ms: MatchSetShape) -> float:
    """Bytes of one row's partition on the device: the static slots ``[N]``, src, targets, their
    slots and the unmerged base, and ``cand_src`` once matched (a set that merges nothing is never
    matched), int64 each."""
    matched = ms.nc + ms.ns if ms.ns and ms.r else 0
    return float(tokens + ms.ns + 2 * ms.nc + 1 + matched) * INT64


def matching_bytes(led: Ledger, s: SeamShape, p: LiteVGGTParams) -> SlotMapBytes:
    """One call of a forward up to its merge (see :meth:`LiteVGGTParams.seam_peak_bytes`), replayed on
    ``led`` with the cache the previous calls left: returns the slot map the merge uses (the cached
    one, with its counts and unmerge index, on a reuse layer)."""
    B, N, C = s.batch, s.tokens, s.heads * s.head_dim
    ms, n_slots = litevggt_sets(s, p)
    if 0 < p.lv_proj_dim < C:
        led.alloc("cached: random projection (float32)", C * p.lv_proj_dim * FLOAT32)
    parts = [led.alloc("cached: partition (int64)", partition_index_bytes(N, ms)) for _ in range(B)]
    old = led.alloc("cached: slot map (int64)", B * N * INT64)
    old_sm = SlotMapBytes(led, s, 1, n_slots, old)
    old_sm.reuse()
    new_forward = s.layer == 0
    if not new_forward and s.layer not in p.lv_recompute_layers:
        return old_sm
    scores = roles = None
    if new_forward:
        scores, score_elem = geometry_bytes(led, s, p)
        roles = roles_bytes(led, s, p, score_elem)
        for _ in range(B):
            partition_bytes(led, s, ms)  # kept: the new cache
        led.free(*parts)
    rows = [assign_bytes(led, s, 1, [ms], C, s.norm_bytes, fresh=new_forward) for _ in range(B)]
    slot = led.alloc("slot map (int64)", B * N * INT64)
    led.free(*rows)
    old_sm.release()
    led.free(old, scores, roles)
    return SlotMapBytes(led, s, 1, n_slots, slot)


def geometry_bytes(led: Ledger, s: SeamShape, p: LiteVGGTParams) -> tuple[int, int]:
    """:func:`geometry_scores` on x_norm ``[B, N, C]``: x_norm in float32 (a copy unless it is); with
    the projection (``0 < lv_proj_dim < C``) the patch tokens times ``[C, lv_proj_dim]`` (under
    autocast: bf16 copies of both and a bf16 product; otherwise the matmul's contiguous copy of the
    strided patch tokens); then the local variance, ``[B * S, c, h, w]`` each: the windowed mean, the
    square, the windowed mean of squares, the squared mean, the difference, its clamp, and the sum over
    channels ``[B, S, h, w]`` (float32 under CUDA autocast, which casts its input up first; CPU autocast
    sums in the input's dtype). Returns (scores, their element size)."""
    B, C = s.batch, s.heads * s.head_dim
    patches = B * s.frames * s.patch_h * s.patch_w
    x32 = led.alloc("geometry: x_norm in float32", float(B) * s.tokens * C * FLOAT32) \
        if s.norm_bytes != FLOAT32 else None
    c, elem, projected = C, FLOAT32, None
    if 0 < p.lv_proj_dim < C:
        c = p.lv_proj_dim
        if s.autocast:
            elem = s.elem_bytes
            casts = [led.alloc("geometry: patch tokens in bf16 (autocast copy)", float(patches) * C * elem),
                     led.alloc("geometry: patch tokens in bf16 (autocast copy)", float(C) * c * elem)]
        else:
            strided = s.patch_start > 0  # the patch tokens skip each frame's special tokens
            name = "geometry: patch tokens (matmul's contiguous copy)"
            casts = [led.alloc(name, float(patches) * C * elem)] if strided else []
        projected = led.alloc("geometry: projected patch tokens", float(patches) * c * elem)
        led.free(*casts)
    cells = float(patches) * c * elem
    mean = led.alloc("geometry: local variance", cells)
    square = led.alloc("geometry: local variance", cells)
    mean_sq = led.alloc("geometry: local variance", cells)
    led.free(square)
    mean2 = led.alloc("geometry: local variance", cells)
    diff = led.alloc("geometry: local variance", cells)
    led.free(mean2)
    clamped = led.alloc("geometry: local variance", cells)
    led.free(diff)
    if s.autocast and s.device == "cuda" and elem != FLOAT32:
        up = led.alloc("geometry: local variance", float(patches) * c * FLOAT32)
        scores = led.alloc("geometry scores", float(patches) * FLOAT32)
        led.free(up)
        elem = FLOAT32
    else:
        scores = led.alloc("geometry scores", float(patches) * elem)
    led.free(clamped, mean, mean_sq, projected, x32)
    return scores, elem


def roles_bytes(led: Ledger, s: SeamShape, p: LiteVGGTParams, score_elem: int) -> int | None:
    """:func:`sequence_roles`: the roles ``[B, N]`` int64 on the host (device memory only when the
    device is the CPU; None otherwise) and, on the device, :func:`cell_anchors` of frames >= 1 (the
    padded scores, their cell-major copy, the argmin, row and column indices, the anchor mask),
    the role map (int64 ``[R, h * w]``, R = B (S - 1)), the masked scores and their top-k.
    Returns the host roles' handle."""
    B, S, h, w = s.batch, s.frames, s.patch_h, s.patch_w
    host = s.device == "cpu"
    roles = led.alloc("roles (int64, on the host)", float(B) * s.tokens * INT64) if host else None
    R, hw = B * (S - 1), h * w
    ch, cw = -(-h // CELL), -(-w // CELL)
    rcells = R * ch * cw
    flat = led.alloc("roles", R * hw * score_elem) if B > 1 else None  # scores[:, 1:].flatten(0, 1)
    padded = led.alloc("roles: cell anchors", R * CELL * ch * CELL * cw * score_elem)
    cells = led.alloc("roles: cell anchors", R * CELL * ch * CELL * cw * score_elem)
    index = [led.alloc("roles: cell anchors", rcells * INT64)]  # argmin
    for n in (ch, cw):  # arange * CELL + pick // CELL (rows), pick % CELL (columns)
        ar = led.alloc("roles: cell anchors", n * INT64)
        times = led.alloc("roles: cell anchors", n * INT64)
        led.free(ar)
        part = led.alloc("roles: cell anchors", rcells * INT64)
        index.append(led.alloc("roles: cell anchors", rcells * INT64))
        led.free(times, part)
    anchors = led.alloc("roles: anchor mask", R * hw * BOOL)
    led.free(led.alloc("roles: cell anchors", R * INT64), padded, cells, *index)
    scalars = [led.alloc("roles", INT64), led.alloc("roles", INT64)]
    role = led.alloc("roles of frames >= 1 (int64)", R * hw * INT64)
    led.free(*scalars)
    k = protected_count(hw, ch * cw, p.lv_protect_frac)
    if k > 0:
        ranked = led.alloc("roles: ranked scores", R * hw * score_elem)
        values = led.alloc("roles: ranked scores", R * k * score_elem)
        top = led.alloc("roles: ranked scores", R * k * INT64)
        led.free(values, ranked, top)
    led.free(anchors, role, flat)
    return roles


def partition_bytes(led: Ledger, s: SeamShape, ms: MatchSetShape) -> list[int]:
    """:func:`row_partition` of one batch row. On the CPU (host and device alike) the role masks and
    their nonzero indices, then :func:`harness.methods.merging.static_partition`'s static slots,
    block bases and target slots; on CUDA that is host work and only the device copies of the
    static slots, src, targets, their slots and the unmerged base are made. Returns the handles
    the partition keeps."""
    N, nb, ns, nc = s.tokens, ms.nb, ms.ns, ms.nc
    name = "partition (int64)"
    n_kept = N - ns - nc
    if s.device != "cpu":
        return [led.alloc(name, n * INT64) for n in (N, ns, nc, nb * nc, nb)]
    found = []
    for n in (n_kept, ns, nc):  # role == x, then its nonzero indices
        mask = led.alloc(name, N * BOOL)
        found.append(led.alloc(name, n * INT64))
        led.free(mask)
    static = led.alloc(name, N * INT64)
    led.free(led.alloc(name, n_kept * INT64))
    ar = led.alloc(name, nb * INT64)
    times = led.alloc(name, nb * INT64)
    led.free(ar)
    base = led.alloc(name, nb * INT64)
    led.free(times)
    ar = led.alloc(name, nc * INT64)
    slots = led.alloc(name, nb * nc * INT64)
    led.free(ar)
    if ms.r == 0:  # the src keep static slots after the targets
        led.free(led.alloc(name, nb * INT64), led.alloc(name, ns * INT64), led.alloc(name, nb * ns * INT64))
    unmerged = led.alloc(name, nb * INT64)
    led.free(base, found[0])
    return [static, found[1], found[2], slots, unmerged]


# -- step 1: geometry score ------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def projection(channels: int, dim: int, seed: int, device: str, dtype: torch.dtype) -> torch.Tensor | None:
    """[channels, dim] matrix with orthonormal columns, drawn in float64 on the CPU from ``seed``;
    None when ``dim`` is 0 or not below ``channels`` (the variance is then taken on all channels)."""
    if dim == 0 or dim >= channels:
        return None
    mat = torch.empty(channels, dim, dtype=torch.float64)
    torch.nn.init.orthogonal_(mat, generator=torch.Generator().manual_seed(seed))
    return mat.to(device=device, dtype=dtype)


def local_variance(grid: torch.Tensor, window: int) -> torch.Tensor:
    """Variance over the ``window`` x ``window`` neighbourhood (in-grid tokens only), summed over
    channels. grid: [R, C, h, w] -> [R, h, w]."""
    pad = window // 2
    mean = F.avg_pool2d(grid, window, stride=1, padding=pad, count_include_pad=False)
    mean_sq = F.avg_pool2d(grid * grid, window, stride=1, padding=pad, count_include_pad=False)
    return (mean_sq - mean * mean).clamp_min(0.0).sum(1)


def geometry_scores(metric: torch.Tensor, layout: AttentionLayout, p: LiteVGGTParams) -> torch.Tensor:
    """Token-variance score of every patch token. metric: [B, N, C] -> [B, S, h, w] (float32 or
    float64)."""
    B, _, C = metric.shape
    S, P, ps = layout.frames, layout.tokens_per_frame, layout.patch_start
    h, w = layout.patch_h, layout.patch_w
    x = metric if metric.dtype == torch.float64 else metric.float()
    patches = x.reshape(B, S, P, C)[:, :, ps:]  # [B, S, h*w, C]
    proj = projection(C, p.lv_proj_dim, p.lv_proj_seed, str(x.device), x.dtype)
    if proj is not None:
        patches = patches @ proj
    grid = patches.reshape(B * S, h, w, -1).permute(0, 3, 1, 2)
    return local_variance(grid, p.lv_var_window).view(B, S, h, w)


# -- step 2: roles ----------------------------------------------------------------------------


def cell_anchors(scores: torch.Tensor) -> torch.Tensor:
    """The lowest-scoring patch of every 2 x 2 cell (cells from even row / column; an odd last row
    or column gives 1 x 2, 2 x 1 or 1 x 1 cells); ties go to the first in row-major order.
    scores: [R, h, w] -> anchor mask [R, h, w] bool."""
    R, h, w = scores.shape
    ch, cw = -(-h // CELL), -(-w // CELL)
    padded = F.pad(scores, (0, cw * CELL - w, 0, ch * CELL - h), value=float("inf"))
    cells = padded.view(R, ch, CELL, cw, CELL).permute(0, 1, 3, 2, 4).reshape(R, ch, cw, CELL * CELL)
    pick = cells.argmin(-1)  # [R, ch, cw]: dy * 2 + dx
    rows = torch.arange(ch, device=scores.device).view(1, ch, 1) * CELL + pick // CELL
    cols = torch.arange(cw, device=scores.device).view(1, 1, cw) * CELL + pick % CELL
    mask = torch.zeros(R, h, w, dtype=torch.bool, device=scores.device)
    mask[torch.arange(R, device=scores.device).view(R, 1, 1).expand_as(rows), rows, cols] = True
    return mask


def protected_count(patches: int, cells: int, frac: float) -> int:
    """Protected patches per frame: int(frac * patches) (upstream's count), at most the non-anchors."""
    return min(int(frac * patches), patches - cells)


def frame_roles(scores: torch.Tensor, frac: float) -> torch.Tensor:
    """Roles of the patches of frames >= 1. scores: [R, h, w] -> [R, h * w] long (ROLE_*):
    anchors are targets, the top ``frac`` of the others by score kept, the rest src."""
    R, h, w = scores.shape
    anchors = cell_anchors(scores).view(R, h * w)
    n_cells = -(-h // CELL) * -(-w // CELL)
    role = torch.where(anchors, ROLE_TARGET, ROLE_SRC)
    k = protected_count(h * w, n_cells, frac)
    if k > 0:
        ranked = scores.view(R, h * w).masked_fill(anchors, float("-inf"))
        top = ranked.topk(k, dim=1).indices
        role.scatter_(1, top, ROLE_KEPT)
    return role


def sequence_roles(scores: torch.Tensor, layout: AttentionLayout, p: LiteVGGTParams) -> torch.Tensor:
    """Role of every token. scores: [B, S, h, w] -> [B, N] long on the CPU."""
    B, S = scores.shape[:2]
    P, ps = layout.tokens_per_frame, layout.patch_start
    role = torch.empty(B, S, P, dtype=torch.long)
    role[:, :, :ps] = ROLE_TARGET if p.lv_special_targets else ROLE_KEPT
    role[:, 0, ps:] = ROLE_TARGET  # the reference frame
    rest = frame_roles(scores[:, 1:].flatten(0, 1), p.lv_protect_frac)
    role[:, 1:, ps:] = rest.view(B, S - 1, -1).cpu()
    return role.view(B, S * P)


def row_partition(role: torch.Tensor, ratio: float, device: torch.device) -> Partition:
    """One batch row's partition: one match set of all src against all targets. role: [N] (CPU)."""
    kept = (role == ROLE_KEPT).nonzero().view(-1)
    src = (role == ROLE_SRC).nonzero().view(1, -1)
    dst = (role == ROLE_TARGET).nonzero().view(1, -1)
    r = merged_count(ratio, src.shape[1])
    return static_partition(role.numel(), kept, [(src, dst, r)], device)


# -- steps 3 and 4: matching and its cache ----------------------------------------------------


@dataclass
class MergeCache:
    """What the layers of one forward share: the rows' partitions (from the geometry scores, fixed
    for the forward) and the slot map of the last recompute. One per built ``attention_fn``."""

    key: tuple = ()
    last_layer: int = -1
    parts: list[Partition] = field(default_factory=list)
    slots: SlotMap | None = None

    def new_forward(self, key: tuple, layer: int) -> bool:
        """A call starts a forward when nothing is cached, the shape changed or the layer index
        did not increase."""
        return self.slots is None or key != self.key or layer <= self.last_layer


def match(metric: torch.Tensor, parts: list[Partition], sample: bool) -> tuple[SlotMap, torch.Tensor]:
    """Assign every row against its partition. metric: [B, N, C] -> (SlotMap [B, 1, N], merged
    pairs' cosine similarities, a subsample)."""
    rows = [assign(rows_gather(metric[b:b + 1]), 1, part, sample) for b, part in enumerate(parts)]
    n_slots = {part.n_slots for part in parts}
    assert len(n_slots) == 1, "LiteVGGT: every batch row must keep the same number of slots"
    slot_of = torch.cat([a.slot_of for a in rows]).unsqueeze(1)
    return SlotMap(slot_of, n_slots.pop()), torch.cat([a.merged_scores for a in rows])


def merge_metric(k: torch.Tensor, layout: AttentionLayout, warned: list[bool]) -> torch.Tensor:
    """The layer's normed input [B, N, C]; the keys averaged over heads [B, N, d] without one."""
    if layout.x_norm is not None:
        return layout.x_norm
    if not warned[0]:
        warnings.warn("LiteVGGT: layout.x_norm is None; matching on the keys averaged over heads instead",
                      stacklevel=4)
        warned[0] = True
    return k.mean(dim=1)


def recompute(cache: MergeCache, metric: torch.Tensor, layout: AttentionLayout, p: LiteVGGTParams,
              new_forward: bool) -> None:
    """Refresh the cache at a recompute layer (and the roles too at a forward's first layer)."""
    rec = layout.recorder
    B, N, C = metric.shape
    flops = bytes_read = 0.0
    if new_forward:
        scores = geometry_scores(metric, layout, p)
        roles = sequence_roles(scores, layout, p)
        cache.parts = [row_partition(roles[b], p.lv_ratio, metric.device) for b in range(B)]
        patches = layout.frames * layout.patch_h * layout.patch_w
        proj_dim = p.lv_proj_dim if 0 < p.lv_proj_dim < C else 0
        flops += 2.0 * B * patches * C * proj_dim
        bytes_read += token_bytes(B, patches, C, elem_bytes(metric))
    cache.slots, merged_scores = match(metric, cache.parts, rec is not None)
    if rec is not None:
        rec.count("match_flops", flops + sum(part.match_flops(1, C) for part in cache.parts))
        rec.count("match_bytes", bytes_read + token_bytes(B, N, C, elem_bytes(metric)))
        if merged_scores.numel():
            rec.observe("merge_sim_p10", percentile(merged_scores, 0.1))


# -- one call -----------------------------------------------------------------------------------


def litevggt_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout,
                       p: LiteVGGTParams, cache: MergeCache, warned: list[bool]) -> torch.Tensor:
    """LiteVGGT-merged attention. q, k, v: [B, H, N, d] -> [B, H, N, d]."""
    B, H, N, d = q.shape
    check_tokens("LiteVGGT", q, layout)
    if layout.tokens_per_frame != layout.patch_start + layout.patch_h * layout.patch_w:
        raise ValueError(
            f"LiteVGGT: tokens_per_frame={layout.tokens_per_frame} != patch_start={layout.patch_start} "
            f"+ patch_h*patch_w={layout.patch_h}*{layout.patch_w}"
        )
    if layout.frames == 1:
        return sdpa_attention(q, k, v, layout)  # no frame besides the reference: nothing to merge
    rec = layout.recorder
    key = (B, N, layout.frames, layout.patch_h, layout.patch_w, layout.patch_start, q.device)
    new_forward = cache.new_forward(key, layout.layer)
    again = new_forward or layout.layer in p.lv_recompute_layers
    if again:
        metric = merge_metric(k, layout, warned)
        with phase(rec, "match"):
            recompute(cache, metric, layout, p, new_forward)
        if rec is not None and layout.x_norm is None:
            rec.count("metric_fallback", 1)
    cache.key, cache.last_layer = key, layout.layer
    if rec is not None:
        rec.count("index_recompute" if again else "index_reuse", 1)
    assert cache.slots is not None
    return shared_merge_attention(q, k, v, cache.slots, rec)


# -- FP8 linear layers (lv_fp8) -----------------------------------------------------------------


def fp8_scale(t: torch.Tensor) -> torch.Tensor:
    """Per-tensor scale ``FP8_MAX / amax`` from ``t``'s current absolute maximum (float32, 0-dim, on
    t's device, no host sync); 1 where amax is 0 or not finite. t: any shape."""
    lo, hi = torch.aminmax(t)
    amax = torch.maximum(hi, -lo).float()
    usable = (amax > 0) & torch.isfinite(amax)
    return torch.where(usable, FP8_MAX / amax, torch.ones_like(amax))


def to_e4m3(t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``t * scale`` in float32, saturated to [-FP8_MAX, FP8_MAX] and rounded to float8_e4m3fn
    (nearest, ties to even). t: any shape -> same shape, float8_e4m3fn."""
    return t.to(torch.float32, copy=True).mul_(scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def quantize_e4m3(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(``t`` in float8_e4m3fn at its current-amax scale, that scale): ``t ~ values / scale``."""
    scale = fp8_scale(t)
    return to_e4m3(t, scale), scale


def fp8_linear_reference(x: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None = None) -> torch.Tensor:
    """What an FP8 linear computes, in plain float32 ops (any device): x and the weight each cast to
    float8_e4m3fn at its own per-tensor scale (:func:`quantize_e4m3`), dequantized (times
    1 / scale), multiplied in float32, plus the bias. x: [..., K], weight: [N, K], bias: [N] ->
    [..., N] float32."""
    xq, x_scale = quantize_e4m3(x)
    wq, w_scale = quantize_e4m3(weight)
    y = (xq.float() * x_scale.reciprocal()) @ (wq.float() * w_scale.reciprocal()).T
    return y if bias is None else y + bias.float()


def linear_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype an ``nn.Linear`` would return on ``x``: autocast's where it is on for x's device,
    else x's own."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def fp8_linear(x: torch.Tensor, weight_fp8: torch.Tensor, weight_scale: torch.Tensor,
               bias: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`fp8_linear_reference`'s quantity through ``torch._scaled_mm`` (FP8 tensor cores on CUDA
    compute capability >= 8.9): x cast to e4m3 at its current amax, one FP8 GEMM with float32
    accumulation and the inverse scales applied to its result, then the bias. x: [..., K];
    weight_fp8: [N, K] float8_e4m3fn, contiguous (``quantize_e4m3(weight)``); weight_scale: its
    0-dim scale; bias: [N] -> [..., N] in :func:`linear_dtype` (x) (autocast's, as an nn.Linear)."""
    out_dtype = linear_dtype(x)
    mm_dtype = out_dtype if out_dtype in SCALED_MM_OUT else torch.float32
    xq, x_scale = quantize_e4m3(x.reshape(-1, x.shape[-1]))  # [M, K], row-major
    y = torch._scaled_mm(xq, weight_fp8.t(), x_scale.reciprocal(), weight_scale.reciprocal(),
                         out_dtype=mm_dtype, use_fast_accum=False)
    if bias is not None:
        y = y + bias.to(mm_dtype)
    return y.to(out_dtype).reshape(*x.shape[:-1], weight_fp8.shape[0])


class FP8Linear(nn.Module):
    """An ``nn.Linear`` run in FP8 (:func:`fp8_linear`): the weight is cast once, at construction, to
    float8_e4m3fn at its amax scale (its current amax is constant); every forward casts its input at
    the input's current amax. Keeps the float ``weight`` and ``bias`` (as TE keeps its
    high-precision parameters). x: [..., in_features] -> [..., out_features]."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        weight_fp8, weight_scale = quantize_e4m3(linear.weight.detach())
        self.register_buffer("weight_fp8", weight_fp8)
        self.register_buffer("weight_scale", weight_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp8_linear(x, self.weight_fp8, self.weight_scale, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3, per-tensor"


def fp8_supported(device: torch.device) -> bool:
    """Whether ``device`` has FP8 tensor cores that ``torch._scaled_mm`` uses: CUDA, compute
    capability >= 8.9 (Ada, Hopper, Blackwell)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= FP8_MIN_CAPABILITY


def describe_device(device: torch.device) -> str:
    """``device`` for an error message: a CUDA GPU with its name and compute capability."""
    if device.type != "cuda":
        return str(device)
    major, minor = torch.cuda.get_device_capability(device)
    return f"{device} ({torch.cuda.get_device_name(device)}, compute capability {major}.{minor})"


def fp8_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, nn.Module]]:
    """(where, parent, attribute, linear) of the FP8 layers (:data:`FP8_LINEARS`) of every frame and
    global block of ``model``'s aggregator; ``where`` names it, e.g. ``"global block 3 attn.qkv"``."""
    counts: dict[str, int] = {}
    for kind, block in aggregator_blocks(model):
        index = counts[kind] = counts.get(kind, -1) + 1
        for parent_name, attr in FP8_LINEARS:
            parent = getattr(block, parent_name)
            yield f"{kind} block {index} {parent_name}.{attr}", parent, attr, getattr(parent, attr)


def fp8_transform(model: nn.Module, run: CalibrationRun) -> nn.Module:
    """A copy of ``model`` (never modified) whose aggregator blocks' qkv, fc1 and fc2 are
    :class:`FP8Linear`; ``attn.proj`` and everything outside the aggregator's blocks stay float.
    ``run`` is not needed: the scales come from each tensor's current amax. Raises ValueError where
    the model's device has no FP8 matmul (no silent float fallback) or a layer's width does not
    suit ``torch._scaled_mm``."""
    device = next(model.parameters()).device
    if not fp8_supported(device):
        raise ValueError(
            f"litevggt lv_fp8: the model runs on {describe_device(device)}, but FP8 matmuls "
            "(torch._scaled_mm on float8_e4m3fn) need a CUDA GPU of compute capability 8.9 or newer "
            "(Ada, Hopper, Blackwell); lv_fp8: false runs the merging alone")
    for where, _, _, lin in fp8_layers(model):
        if lin.in_features % FP8_ALIGN or lin.out_features % FP8_ALIGN:
            raise ValueError(f"litevggt lv_fp8: {where} maps {lin.in_features} -> {lin.out_features} "
                             f"features; torch._scaled_mm needs both divisible by {FP8_ALIGN}")
    return fp8_copy(model)


def fp8_copy(model: nn.Module) -> nn.Module:
    """What :func:`fp8_transform` returns once its checks passed (any device; the memory model's
    tests build it on the CPU): a deep copy of ``model`` whose parameters do not require grad and whose
    aggregator blocks' qkv, fc1 and fc2 are :class:`FP8Linear`. ``model`` is not modified."""
    fp8 = copy.deepcopy(model)
    for prm in fp8.parameters():
        prm.requires_grad_(False)
    for _, parent, attr, lin in list(fp8_layers(fp8)):
        setattr(parent, attr, FP8Linear(lin))
    return fp8


# -- the method -----------------------------------------------------------------------------------


@register_method("litevggt", params=LiteVGGTParams, workloads=("vggt",),
                 doc="LiteVGGT-style geometry-aware merging, indices cached across layers (arXiv 2512.04939)")
def make_litevggt(p: LiteVGGTParams) -> AttentionFn | VGGTMethod:
    """Build LiteVGGT's ``attention_fn(q, k, v, layout) -> out`` (with its own index cache); with
    ``lv_fp8`` a :class:`VGGTMethod` of that attention_fn and :func:`fp8_transform`."""
    cache = MergeCache()
    warned = [False]

    def attention_fn(q, k, v, layout):
        return litevggt_attention(q, k, v, layout, p, cache, warned)

    if p.lv_fp8:
        return VGGTMethod(attention_fn=attention_fn, model_transform=fp8_transform)
    return attention_fn
