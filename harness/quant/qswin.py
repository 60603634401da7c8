"""The quantized two-branch Swin block and stage wrapper, shared by uniform quantization and MixA-Q.

Written against timm 1.0.x (``SwinTransformerStage`` runs ``downsample`` first, blocks take
NHWC ``[B, H, W, C]``, ``WindowAttention`` has ``qkv``/``proj``/``softmax``; timm pads *after*
``norm1`` and runs the MLP on real tokens only). ``check_timm`` guards the version.

How a quantized model is built (:func:`quantize_swin`):

1. deep-copy the float timm model (the float model stays the fidelity reference);
2. fake-quantize the block linears' weights in place (qkv, proj, fc1, fc2: ``w_bits``,
   symmetric per output channel) so both branches share the same quantized weights;
3. wrap patch embedding, patch-merging reductions and the classifier at ``embed_bits``
   (input activation and weight);
4. replace each ``SwinTransformerStage`` by a :class:`QSwinStage` whose blocks are
   :class:`QSwinBlock` (two branches: 0 = high activation bits, 1 = low activation bits);
5. calibrate the activation quantizers on a float pass over the calibration images;
6. with ``reparam_ln`` (the RepQ-ViT base, :mod:`harness.quant.repq`): the post-LayerNorm
   quantizers (qkv and fc1 inputs of each branch, patch-merging reduction inputs) were calibrated
   per channel in step 5; each is folded into its LayerNorm (copy) and a copy of the next linear
   made from the float weights and re-quantized, and keeps the resulting per-tensor grid.

Window routing (per stage, per image): the stage computes window importance once from its
input (after downsample), one ordering for regular and one for shifted partitions, and
gives each block an assignment of its windows to HIGH / LOW / PRUNED from the block pair's
ratios. Uniform quantization is this machinery with every window HIGH.

Calibration (both modes observe *float* activations: quantizers pass values through while
observing, so calibration never depends on other quantizers):

- ``whole``: the calibration pass routes every window to the high branch; each low-branch
  quantizer shares its high twin's observer and is calibrated on the whole tensor at the low
  bit width (exactly what uniform low-bit would compute).
- ``routed``: the calibration pass routes windows as at inference; each branch's quantizers
  observe only the windows routed to that branch.

Exactness: a branch that receives every window runs the same ops on the same tensors as a
single-branch model, so ratio 0 reproduces uniform high-bit bitwise and "all windows low"
reproduces uniform low-bit bitwise (both calibration modes, with or without ``reparam_ln``).

Two branches under ``reparam_ln``: the fold depends on the branch's per-channel grids, so each
branch folds its own LayerNorm copies and gets its own folded qkv and fc1 (the high branch's
become the timm block's own; proj, fc2 and the relative-position bias stay shared). Each branch's
grids come from its calibration (``routed``: its windows; ``whole``: the whole tensor at its bit
width), so "all windows low" still equals uniform low-bit, fold included.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import (
    SwinTransformerBlock,
    SwinTransformerStage,
    window_partition,
    window_reverse,
)
from torch import nn

from harness.models.seam import named_range
from harness.quant.quantizers import ActQuantizer, is_float, quantize_weight
from harness.quant.repq import reparameterize

TIMM_RANGE = ((1, 0, 31), (1, 1, 0))  # checked on 1.0.31; 1.0.29 sizes odd-resolution stages differently
"""timm versions the hooks were checked against: >= 1.0.31, < 1.1 (pinned in pyproject). timm 1.0.29
sizes odd-resolution stages (e.g. 112 px) differently from the window geometry used for BOPs."""

HIGH, LOW, PRUNED = 0, 1, 2
#: named ranges of the two branches in profiles and NVTX (harness.models.seam.named_range)
BRANCH_RANGES = {HIGH: "branch:high", LOW: "branch:low"}
BRANCHES = ("high", "low")
ACT_POINTS = ("qkv_in", "q", "k", "v", "attn", "proj_in", "fc1_in", "fc2_in")
"""Activation quantizers of one branch: qkv input, q, k, v, softmax output, proj input, fc1 input,
fc2 input (after GELU)."""
POST_LN_POINTS = ("qkv_in", "fc1_in")
"""The branch's post-LayerNorm activations (after norm1 / norm2): per channel, then folded, under
``reparam_ln``."""
CALIB_MODES = ("routed", "whole")
IMPORTANCE_MODES = ("l2", "random", "reversed")
SOFTMAX_QUANT = ("uniform", "log2")
"""Softmax quantizers a method may choose directly; ``log_sqrt2`` (calibrated max) comes with the
RepQ-ViT base."""

_COUNT_EPS = 1e-9  # window counts: floor(nW * fraction + eps), so 10 * (1 - 0.9) gives 1, not 0


def check_timm() -> None:
    """Raise when the installed timm is outside ``TIMM_RANGE``."""
    parts = tuple(int(p) for p in timm.__version__.split("+")[0].split(".")[:3] if p.isdigit())
    lo, hi = TIMM_RANGE
    if not (lo <= parts < hi):
        raise RuntimeError(
            f"timm {timm.__version__} is not supported by the Swin quantization hooks; "
            f"need >=1.0.31,<1.1 (the hooks and the window geometry were checked against 1.0.31)"
        )


@dataclass(frozen=True)
class QuantSpec:
    """Bit widths and calibration of a quantized Swin.

    a_bits_high / a_bits_low: activation bits of the high / low branch (>= 32: float).
    embed_bits: weights and input activations of patch embedding, patch merging and the head.
    softmax_quant: the attention-probability quantizer, an ``ActQuantizer`` kind: "uniform"
    (asymmetric, calibrated), "log2" (max 1) or "log_sqrt2" (RepQ-ViT, calibrated max).
    act_calib: activation range method ("minmax" | "percentile" | "repq"); calib: "whole" | "routed".
    reparam_ln: RepQ-ViT's scale reparameterization of the post-LayerNorm activations (qkv, fc1
    and patch-merging inputs: per-channel calibration folded into LayerNorm and the next linear).
    Choices and ranges are checked once, on the method's params (MixAQParams), not here.
    """

    w_bits: int = 4
    a_bits_high: int = 8
    a_bits_low: int = 4
    embed_bits: int = 8
    softmax_quant: str = "uniform"
    act_calib: str = "percentile"
    calib: str = "whole"
    reparam_ln: bool = False


@dataclass(frozen=True)
class RoutingSpec:
    """Which windows go low / are pruned.

    pair_ratios / pair_prune: one value per pair of consecutive blocks, in model order
    (Swin-T: 1, 1, 3, 1 pairs per stage = 6 values); fraction of each image's windows sent to
    the low branch / skipped. Within a stage the values are sorted ascending (as in SparseViT)
    so low-bit and pruned sets only grow from block to block (nested prefixes of one ordering).
    importance: "l2" (most important first), "reversed" (least first), "random" (seeded).
    min_active: windows per image a block keeps whatever its prune ratio (see :func:`window_counts`).
    The per-pair values are checked here: params cannot range-check the elements of a tuple.
    """

    pair_ratios: tuple[float, ...]
    pair_prune: tuple[float, ...]
    importance: str = "l2"
    seed: int = 0
    min_active: int = 0

    def __post_init__(self) -> None:
        if len(self.pair_ratios) != len(self.pair_prune):
            raise ValueError(
                f"pair_ratios has {len(self.pair_ratios)} values but pair_prune has {len(self.pair_prune)}"
            )
        for r, p in zip(self.pair_ratios, self.pair_prune):
            if not (0.0 <= r <= 1.0 and 0.0 <= p <= 1.0 and r + p <= 1.0 + _COUNT_EPS):
                raise ValueError(f"pair ratio {r} and prune {p} must lie in [0, 1] with ratio + prune <= 1")


def pairs_per_stage(depths: tuple[int, ...] | list[int]) -> list[int]:
    """Block pairs per stage: ceil(depth / 2). Swin-T (2, 2, 6, 2) -> [1, 1, 3, 1]."""
    return [math.ceil(d / 2) for d in depths]


def expand_pairs(values: tuple[float, ...], depths: tuple[int, ...] | list[int]) -> list[list[float]]:
    """Per-pair values (model order) -> per-block values per stage, sorted ascending within a stage."""
    per_stage = pairs_per_stage(depths)
    if len(values) != sum(per_stage):
        raise ValueError(
            f"expected {sum(per_stage)} per-pair values for stage depths {tuple(depths)} "
            f"({per_stage} pairs per stage), got {len(values)}"
        )
    out, i = [], 0
    for depth, n in zip(depths, per_stage):
        stage_vals = sorted(float(v) for v in values[i : i + n])
        out.append([stage_vals[b // 2] for b in range(depth)])
        i += n
    return out


def window_counts(n_windows: int, ratio: float, prune: float, min_active: int = 0) -> tuple[int, int, int]:
    """(high, low, pruned) windows per image: active = max(floor(nW(1-p)), min_active), high =
    floor(nW(1-r-p)). min_active = 1 keeps a stage's only window (stage 4 of Swin at 224 px)
    from being pruned by any p > 0 (a window kept that way is high or low as it would be without
    pruning: high when floor(nW(1-r)) reaches it); 0 is SparseViT's plain floor."""
    floor_act = min(n_windows, int(math.floor(n_windows * (1.0 - prune) + _COUNT_EPS)))
    n_act = max(floor_act, min(min_active, n_windows))
    n_high = max(0, min(n_act, int(math.floor(n_windows * (1.0 - ratio - prune) + _COUNT_EPS))))
    if n_act > floor_act:  # windows kept by min_active
        unpruned_high = int(math.floor(n_windows * (1.0 - ratio) + _COUNT_EPS))
        n_high = max(n_high, min(n_act, unpruned_high))
    return n_high, n_act - n_high, n_windows - n_act


def window_scores(
    tok: torch.Tensor, window: tuple[int, int], shift: tuple[int, int], pad_first: bool = False
) -> torch.Tensor:
    """L2 norm per window of a per-token score map.

    tok: [B, H, W] (per-token mean |x|); rolled by -shift when shifted, zero-padded to a multiple
    of the window (timm's order; ``pad_first``: padded, then rolled, mmdet's order, see
    :class:`QSwinBlock`), partitioned like ``timm.window_partition`` (row-major) -> [B, nW].
    """
    B, H, W = tok.shape
    wh, ww = window
    pad_h, pad_w = (wh - H % wh) % wh, (ww - W % ww) % ww
    if pad_first:
        tok = F.pad(tok, (0, pad_w, 0, pad_h))
    if any(shift):
        tok = torch.roll(tok, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    if not pad_first:
        tok = F.pad(tok, (0, pad_w, 0, pad_h))
    Hp, Wp = tok.shape[1:]
    win = tok.reshape(B, Hp // wh, wh, Wp // ww, ww).permute(0, 1, 3, 2, 4).reshape(B, -1, wh * ww)
    return torch.linalg.vector_norm(win.float(), ord=2, dim=-1)


def window_order(
    scores: torch.Tensor, importance: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Window indices per image, most important first. scores: [B, nW] -> [B, nW] (int64).

    l2: descending score (stable); reversed: the l2 order flipped; random: a seeded permutation
    per image (``generator`` on CPU).
    """
    if importance == "l2":
        return torch.argsort(scores, dim=1, descending=True, stable=True)
    if importance == "reversed":
        return torch.argsort(scores, dim=1, descending=True, stable=True).flip(1)
    if importance == "random":
        noise = torch.rand(scores.shape, generator=generator)
        return torch.argsort(noise, dim=1).to(scores.device)
    raise ValueError(f"importance={importance!r}; allowed: {', '.join(IMPORTANCE_MODES)}")


@dataclass
class BlockRoute:
    """Assignment of one block's windows. assign: [B, nW] int64 of HIGH/LOW/PRUNED, or None when
    every window is HIGH; counts: windows per image in (high, low, pruned)."""

    assign: torch.Tensor | None
    counts: tuple[int, int, int]

    @property
    def n_windows(self) -> int:
        return sum(self.counts)

    def single_branch(self) -> int | None:
        """The branch holding every window, or None when windows are split (or pruned)."""
        if self.assign is None or self.counts[HIGH] == self.n_windows:
            return HIGH
        if self.counts[LOW] == self.n_windows:
            return LOW
        return None


def _branch_quantizers(bits: int, spec: QuantSpec, share: nn.ModuleDict | None) -> nn.ModuleDict:
    qs = {}
    for name in ACT_POINTS:
        kind = spec.softmax_quant if name == "attn" else "uniform"
        observer = share[name].observer if share is not None else None
        per_channel = spec.reparam_ln and name in POST_LN_POINTS
        qs[name] = ActQuantizer(bits, kind=kind, calib=spec.act_calib, observer=observer,
                                per_channel=per_channel)
    return nn.ModuleDict(qs)


class QSwinBlock(nn.Module):
    """Two-branch Swin block around a timm ``SwinTransformerBlock`` (weights shared, not copied).

    Branch b has its own LayerNorm copies (``norm1[b]``, ``norm2[b]``) and activation quantizers
    (``aq[b]``); qkv/proj/fc1/fc2 weights and the relative-position bias are the block's own,
    except after :meth:`reparameterize`, which gives each branch its folded ``qkv[b]`` / ``fc1[b]``.
    forward(x: [B, H, W, C], route) -> [B, H, W, C]. Attention runs on the windows gathered per
    branch (shifted windows gather their rows of the attention mask); the MLP runs per token on
    the tokens of each branch's windows; pruned windows skip the block (identity).
    """

    def __init__(self, block: SwinTransformerBlock, spec: QuantSpec) -> None:
        super().__init__()
        self.block = block
        self.norm1 = nn.ModuleList([block.norm1, copy.deepcopy(block.norm1)])
        self.norm2 = nn.ModuleList([block.norm2, copy.deepcopy(block.norm2)])
        high = _branch_quantizers(spec.a_bits_high, spec, share=None)
        low = _branch_quantizers(spec.a_bits_low, spec, share=high if spec.calib == "whole" else None)
        self.aq = nn.ModuleList([high, low])
        self.qkv = nn.ModuleList([block.attn.qkv, block.attn.qkv])  # per branch: shared until folded
        self.fc1 = nn.ModuleList([block.mlp.fc1, block.mlp.fc1])
        self.folded = [False, False]  # norm1[b] folded (reparameterize): padded tokens take pad1[b]
        # window geometry on maps that are not window multiples: timm's (shift, then pad) or, for a
        # block that says so (harness.models.swin_det.PadFirstSwinBlock), mmdet's (pad, then shift)
        self.pad_first = bool(getattr(block, "pad_before_shift", False))
        norm_w = block.norm1.weight
        self.register_buffer("pad1", torch.zeros(2, block.dim, device=norm_w.device, dtype=norm_w.dtype),
                             persistent=False)

    @property
    def window_size(self) -> tuple[int, int]:
        return tuple(self.block.window_size)

    @property
    def shift_size(self) -> tuple[int, int]:
        return tuple(self.block.shift_size)

    def num_windows(self, H: int, W: int) -> int:
        wh, ww = self.window_size
        return math.ceil(H / wh) * math.ceil(W / ww)

    def _attention(self, w: torch.Tensor, mask: torch.Tensor | None, valid: torch.Tensor | None, br: int):
        """Window attention of one branch. w: [K, N, C] (pre-norm windows); mask: [K, N, N] or None;
        valid: [K, N] (False on padded tokens) or None -> [K, N, C]."""
        K, N, _ = w.shape
        attn, aq = self.block.attn, self.aq[br]
        h = self.norm1[br](w)
        if valid is not None:  # timm pads after norm1: padded tokens are exact zeros
            h = h * valid.unsqueeze(-1).to(h.dtype)
            if self.folded[br]:  # ... which a folded norm1 writes as its image of 0
                h = h + (~valid).unsqueeze(-1).to(h.dtype) * self.pad1[br].to(h.dtype)
        h = aq["qkv_in"](h)
        qkv = self.qkv[br](h).reshape(K, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [K, heads, N, d]
        q, k, v = aq["q"](q), aq["k"](k), aq["v"](v)
        s = (q * attn.scale) @ k.transpose(-2, -1)
        s = s + attn._get_rel_pos_bias()
        if mask is not None:
            s = s + mask.unsqueeze(1)
        p = attn.attn_drop(attn.softmax(s))
        p = aq["attn"](p)
        o = (p @ v).transpose(1, 2).reshape(K, N, -1)
        o = aq["proj_in"](o)
        return attn.proj_drop(attn.proj(o))

    def _mlp(self, t: torch.Tensor, br: int) -> torch.Tensor:
        """Per-token MLP of one branch. t: [..., C] (pre-norm) -> [..., C]."""
        mlp, aq = self.block.mlp, self.aq[br]
        h = aq["fc1_in"](self.norm2[br](t))
        h = mlp.norm(mlp.drop1(mlp.act(self.fc1[br](h))))
        h = aq["fc2_in"](h)
        return mlp.drop2(mlp.fc2(h))

    def reparameterize(self, float_block: SwinTransformerBlock, w_bits: int) -> None:
        """RepQ-ViT's scale reparameterization of each calibrated branch (:mod:`harness.quant.repq`):
        norm1[b] / norm2[b] folded in place, qkv[b] / fc1[b] folded from ``float_block``'s float
        weights and quantized at ``w_bits``. The high branch's folded linears become the block's
        own. A branch without per-channel grids (float bits, no calibration data) is left as is."""
        for br in (HIGH, LOW):
            aq = self.aq[br]
            folded_qkv = reparameterize(aq["qkv_in"], self.norm1[br], float_block.attn.qkv, w_bits)
            if folded_qkv is not None:
                self.qkv[br], pad = folded_qkv
                with torch.no_grad():
                    self.pad1[br] = pad
                self.folded[br] = True
            folded_fc1 = reparameterize(aq["fc1_in"], self.norm2[br], float_block.mlp.fc1, w_bits)
            if folded_fc1 is not None:
                self.fc1[br] = folded_fc1[0]
        self.block.attn.qkv, self.block.mlp.fc1 = self.qkv[HIGH], self.fc1[HIGH]

    def forward(self, x: torch.Tensor, route: BlockRoute | None = None) -> torch.Tensor:
        B, H, W, C = x.shape
        (wh, ww), shift = self.window_size, self.shift_size
        has_shift = any(shift)
        pad_h, pad_w = (wh - H % wh) % wh, (ww - W % ww) % ww
        xs = F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) if self.pad_first else x
        xs = torch.roll(xs, shifts=(-shift[0], -shift[1]), dims=(1, 2)) if has_shift else xs
        xs = xs if self.pad_first else F.pad(xs, (0, 0, 0, pad_w, 0, pad_h))
        Hp, Wp = xs.shape[1:3]
        nW, N = (Hp // wh) * (Wp // ww), wh * ww
        win = window_partition(xs, (wh, ww)).reshape(B * nW, N, C)  # batch-major: b * nW + j

        if self.block.dynamic_mask:
            mask = self.block.get_attn_mask(xs)
        else:
            mask = self.block.attn_mask  # [nW, N, N] or None
        valid = None
        if pad_h or pad_w:
            real = torch.zeros(1, Hp, Wp, 1, device=x.device, dtype=x.dtype)
            real[:, :H, :W] = 1
            if self.pad_first and has_shift:  # the padding was rolled with the map
                real = torch.roll(real, shifts=(-shift[0], -shift[1]), dims=(1, 2))
            valid = window_partition(real, (wh, ww)).reshape(nW, N) > 0

        route = route if route is not None else BlockRoute(None, (nW, 0, 0))
        if route.n_windows != nW:
            raise ValueError(f"route has {route.n_windows} windows per image, block has {nW} (H={H}, W={W})")
        single = route.single_branch()
        if single is not None:
            with named_range(BRANCH_RANGES[single]):
                attn_win = self._attention(
                    win,
                    mask.repeat(B, 1, 1) if mask is not None else None,
                    valid.repeat(B, 1) if valid is not None else None,
                    single,
                )
        else:
            flat = route.assign.reshape(-1)
            attn_win = torch.zeros_like(win)
            for br in (HIGH, LOW):
                if route.counts[br] == 0:
                    continue
                idx = (flat == br).nonzero().squeeze(1)
                widx = idx % nW
                with named_range(BRANCH_RANGES[br]):
                    out = self._attention(
                        win.index_select(0, idx),
                        mask.index_select(0, widx) if mask is not None else None,
                        valid.index_select(0, widx) if valid is not None else None,
                        br,
                    )
                attn_win = attn_win.index_copy(0, idx, out.to(attn_win.dtype))

        a = self._unwindow(attn_win.reshape(B * nW, wh, ww, C), H, W, Hp, Wp)
        x = x + self.block.drop_path1(a)

        if single is not None:
            t = x.reshape(B, -1, C)
            with named_range(BRANCH_RANGES[single]):
                t = t + self.block.drop_path2(self._mlp(t, single))
            return t.reshape(B, H, W, C)
        tok = route.assign.to(x.dtype).reshape(B * nW, 1, 1, 1).expand(-1, wh, ww, 1)
        tok = self._unwindow(tok, H, W, Hp, Wp).reshape(-1)
        t = x.reshape(-1, C)
        for br in (HIGH, LOW):
            if route.counts[br] == 0:
                continue
            idx = (tok == br).nonzero().squeeze(1)
            sel = t.index_select(0, idx)
            with named_range(BRANCH_RANGES[br]):
                sel = sel + self.block.drop_path2(self._mlp(sel, br))
            t = t.index_copy(0, idx, sel.to(t.dtype))
        return t.reshape(B, H, W, C)

    def _unwindow(self, win: torch.Tensor, H: int, W: int, Hp: int, Wp: int) -> torch.Tensor:
        """[B*nW, wh, ww, C] windows (shifted, padded coordinates) -> [B, H, W, C] image coordinates."""
        shift = self.shift_size
        x = window_reverse(win, self.window_size, Hp, Wp)
        if self.pad_first:  # shifted on the padded map: roll back there, then crop
            x = torch.roll(x, shifts=shift, dims=(1, 2)) if any(shift) else x
            return x[:, :H, :W, :].contiguous()
        x = x[:, :H, :W, :].contiguous()
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x


class QSwinStage(nn.Module):
    """A Swin stage with window routing: downsample, importance once, then two-branch blocks.

    block_ratios: per block (low ratio, prune ratio). The importance score is the L2 norm per
    window of the per-token mean |x| of the stage input (after downsample, before any norm);
    one ordering for regular partitions and one for shifted ones (rolled by -M/2, then padded).
    ``last_routes`` keeps the routes of the last forward (for work accounting and analysis);
    ``forced_routes``, when set, replaces the computed routes (one per block; analysis only,
    e.g. :mod:`harness.quant.sensitivity` sends one chosen window low).
    """

    def __init__(
        self,
        stage: SwinTransformerStage,
        spec: QuantSpec,
        block_ratios: list[tuple[float, float]],
        importance: str,
        seed: int,
        stage_index: int,
        min_active: int = 0,
    ) -> None:
        super().__init__()
        if len(block_ratios) != len(stage.blocks):
            raise ValueError(
                f"stage {stage_index}: {len(stage.blocks)} blocks but {len(block_ratios)} ratios"
            )
        self.downsample = stage.downsample
        self.blocks = nn.ModuleList([QSwinBlock(b, spec) for b in stage.blocks])
        self.block_ratios = list(block_ratios)
        self.importance = importance
        self.seed = seed
        self.min_active = min_active
        self.stage_index = stage_index
        self.calib_whole = spec.calib == "whole"
        self.calibrating = False
        self.input_resolution = stage.input_resolution
        self.output_resolution = stage.output_resolution
        self.last_routes: list[BlockRoute] = []
        self.forced_routes: list[BlockRoute] | None = None

    def _generator(self, shift: tuple[int, int]) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.stage_index * 101 + int(any(shift)))

    def routes(self, x: torch.Tensor) -> list[BlockRoute]:
        """Routes of every block for stage input x: [B, H, W, C]."""
        B, H, W, _ = x.shape
        out: list[BlockRoute] = []
        orders: dict[tuple[int, int], torch.Tensor] = {}
        tok = None
        for blk, (ratio, prune) in zip(self.blocks, self.block_ratios):
            nW = blk.num_windows(H, W)
            counts = window_counts(nW, ratio, prune, self.min_active)
            if counts[HIGH] == nW or (self.calibrating and self.calib_whole):
                out.append(BlockRoute(None, (nW, 0, 0)))
                continue
            key = (blk.shift_size, blk.pad_first)
            if key not in orders:
                if tok is None:
                    tok = x.detach().float().abs().mean(-1)
                scores = window_scores(tok, blk.window_size, blk.shift_size, blk.pad_first)
                orders[key] = window_order(scores, self.importance, self._generator(blk.shift_size))
            order = orders[key]
            n_high, n_low, _ = counts
            assign = torch.full((B, nW), PRUNED, dtype=torch.int64, device=x.device)
            assign.scatter_(1, order[:, :n_high], HIGH)
            assign.scatter_(1, order[:, n_high : n_high + n_low], LOW)
            out.append(BlockRoute(assign, counts))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with named_range(f"stage.{self.stage_index}"):
            x = self.downsample(x)
            if self.forced_routes is not None:
                routes = self.forced_routes
            else:
                with named_range("importance"):  # window scores and routes: MixA-Q's overhead
                    routes = self.routes(x)
            for blk, route in zip(self.blocks, routes):
                x = blk(x, route)
        self.last_routes = routes
        return x


class QuantIO(nn.Module):
    """A Linear or Conv2d with fake-quantized input (per tensor; per channel until folded with
    ``per_channel``) and weight (per output channel) at ``bits``."""

    def __init__(self, inner: nn.Module, bits: int, act_calib: str, per_channel: bool = False) -> None:
        super().__init__()
        with torch.no_grad():
            inner.weight.copy_(quantize_weight(inner.weight, bits))
        self.inner = inner
        self.aq = ActQuantizer(bits, calib=act_calib, per_channel=per_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.aq(x))


@dataclass(frozen=True)
class QuantInfo:
    """Attached to a quantized model as ``model.quant_info``: what work accounting needs."""

    spec: QuantSpec
    routing: RoutingSpec
    ref_a_bits: int  # activation bits of the uniform model its BOPs speedup is measured against


def quantize_swin(
    model: nn.Module,
    spec: QuantSpec,
    routing: RoutingSpec,
    calib_images: torch.Tensor | None,
    *,
    ref_a_bits: int | None = None,
    calib_batch: int = 4,
) -> nn.Module:
    """A fake-quantized two-branch copy of a timm ``SwinTransformer`` (the input is not modified).

    calib_images: [N, 3, H, W] normalized images on the model's device (required unless every
    activation is float). ref_a_bits: reference for BOPs speedup (default ``spec.a_bits_high``).
    """
    check_timm()
    depths = [len(s.blocks) for s in model.layers]
    ratios = expand_pairs(routing.pair_ratios, depths)
    prunes = expand_pairs(routing.pair_prune, depths)
    q = copy.deepcopy(model).eval()
    with torch.no_grad():
        for stage in q.layers:
            for blk in stage.blocks:
                for lin in (blk.attn.qkv, blk.attn.proj, blk.mlp.fc1, blk.mlp.fc2):
                    lin.weight.copy_(quantize_weight(lin.weight, spec.w_bits))
    if not is_float(spec.embed_bits):
        q.patch_embed.proj = QuantIO(q.patch_embed.proj, spec.embed_bits, spec.act_calib)
        for stage in q.layers:
            if not isinstance(stage.downsample, nn.Identity):  # the reduction's input is post-LayerNorm
                stage.downsample.reduction = QuantIO(
                    stage.downsample.reduction, spec.embed_bits, spec.act_calib, per_channel=spec.reparam_ln
                )
        if isinstance(q.head.fc, nn.Linear):
            q.head.fc = QuantIO(q.head.fc, spec.embed_bits, spec.act_calib)
    q.layers = nn.Sequential(
        *[
            QSwinStage(stage, spec, list(zip(ratios[i], prunes[i])), routing.importance, routing.seed, i,
                       routing.min_active)
            for i, stage in enumerate(q.layers)
        ]
    )
    q.quant_info = QuantInfo(spec, routing, spec.a_bits_high if ref_a_bits is None else ref_a_bits)
    calibrate(q, calib_images, calib_batch)
    if spec.reparam_ln:
        reparameterize_swin(q, model, spec)
    return q


def reparameterize_swin(q: nn.Module, model: nn.Module, spec: QuantSpec) -> None:
    """Fold every per-channel post-LayerNorm quantizer of the calibrated quantized copy ``q``
    (RepQ-ViT): each block's branches (:meth:`QSwinBlock.reparameterize`, at ``w_bits``) and each
    patch merging (norm + reduction, at ``embed_bits``). ``model``: the float model ``q`` was copied
    from (the folds start from its float weights)."""
    with torch.no_grad():
        for float_stage, stage in zip(model.layers, q.layers):
            red = getattr(stage.downsample, "reduction", None)
            if isinstance(red, QuantIO):
                folded = reparameterize(red.aq, stage.downsample.norm, float_stage.downsample.reduction,
                                        spec.embed_bits)
                if folded is not None:
                    red.inner = folded[0]
            for float_blk, blk in zip(float_stage.blocks, stage.blocks):
                blk.reparameterize(float_blk, spec.w_bits)


def calibrate(model: nn.Module, images: torch.Tensor | None, batch: int = 4) -> None:
    """Observe float activations over ``images`` ([N, 3, H, W]) and fix every quantizer's grid."""
    quantizers = [m for m in model.modules() if isinstance(m, ActQuantizer)]
    if any(qz.needs_calibration for qz in quantizers):
        if images is None or images.shape[0] == 0:
            raise ValueError("calibration needs at least one image (calib_images >= 1)")
        stages = [m for m in model.modules() if isinstance(m, QSwinStage)]
        for qz in quantizers:
            qz.observing = True
        for st in stages:
            st.calibrating = True
        try:
            with torch.inference_mode():
                for i in range(0, images.shape[0], batch):
                    model(images[i : i + batch])
        finally:
            for qz in quantizers:
                qz.observing = False
            for st in stages:
                st.calibrating = False
    for qz in quantizers:
        if not qz.needs_calibration or qz.observer.n_seen > 0:
            qz.finalize()
        # else: a branch that received no window during calibration stays uncalibrated; it
        # would raise if ever used (it cannot be: window counts per image do not depend on the image)


def window_bits(model: nn.Module) -> list[torch.Tensor | None]:
    """Activation bits per window of every block in the last forward: [B, nW] int64 (0 = pruned),
    or None for a block whose windows were all high. Empty for a model that is not quantized."""
    info = getattr(model, "quant_info", None)
    if info is None:
        return []
    hi, lo = info.spec.a_bits_high, info.spec.a_bits_low
    out: list[torch.Tensor | None] = []
    for stage in model.layers:
        if not stage.last_routes:
            raise RuntimeError("window_bits needs a forward pass of the quantized model first")
        for route in stage.last_routes:
            if route.single_branch() == HIGH:
                out.append(None)
                continue
            a = route.assign
            bits = torch.where(a == HIGH, hi, torch.where(a == LOW, lo, 0))
            out.append(bits)
    return out
