"""Does MixA-Q's window importance point at the windows that matter? Diagnostics for the Swin workload.

- :func:`score_cv`: spread of the L2 window scores within a stage (coefficient of variation
  over an image's windows). Near 0, any ranking is close to arbitrary.
- :func:`window_sensitivity`: the output error a window adds when it *alone* runs at the low
  activation width. For stage s and each of its windows j (regular partition), a copy of the
  image runs with window j routed LOW in every regular (non-shifted) block of stage s and every
  other window of every block HIGH; the sensitivity is the squared L2 distance of its logits
  (classifier) or of the backbone's stage outputs (:func:`stage_outputs`, detection) from the
  all-HIGH ones. Batched forwards per image and stage (nW copies, in chunks).
- :func:`spearman`: rank correlation per row; with the two above it says whether the L2 score
  (stage input, regular partition, what MixA-Q routes on) ranks windows by sensitivity.

These run on a small sample outside the timed region (the workload's ``evaluate``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from harness.quant.qswin import HIGH, LOW, BlockRoute, QSwinStage, window_scores


def score_cv(tok: torch.Tensor, window: tuple[int, int]) -> torch.Tensor | None:
    """Coefficient of variation (std / mean) of the regular-partition window scores per image.

    tok: [B, H, W] per-token mean |x| of a stage input -> [B], or None when the stage has
    fewer than 2 windows.
    """
    s = window_scores(tok, window, (0, 0)).double()  # [B, nW]
    if s.shape[1] < 2:
        return None
    return s.std(dim=1, unbiased=False) / s.mean(dim=1).clamp_min(1e-30)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank) along the last dim. x: [B, n] -> [B, n] float64."""
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(x.detach().double().cpu().numpy(), axis=-1))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row. a, b: [B, n] -> [B] float64 (NaN for a constant row)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    den = (ra.pow(2).sum(-1) * rb.pow(2).sum(-1)).sqrt()
    return torch.where(den > 0, (ra * rb).sum(-1) / den.clamp_min(1e-300), torch.nan)


def _stages(qmodel: nn.Module) -> list[QSwinStage]:
    stages = list(qmodel.layers)
    if not all(isinstance(s, QSwinStage) for s in stages):
        raise TypeError("window_sensitivity needs a quantized two-branch Swin (qswin.quantize_swin)")
    return stages


def stage_inputs(qmodel: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Per-token mean |x| of every stage input (after downsample) of an all-HIGH forward:
    [B, H_s, W_s] per stage."""
    toks: list[torch.Tensor] = []
    hooks = [
        st.downsample.register_forward_hook(lambda _m, _a, y: toks.append(y.float().abs().mean(-1).cpu()))
        for st in _stages(qmodel)
    ]
    try:
        with torch.inference_mode():
            qmodel(images)
    finally:
        for h in hooks:
            h.remove()
    return toks


Outputs = Callable[[nn.Module, torch.Tensor], torch.Tensor]
"""What a window's error is measured on: (quantized Swin, images [B, 3, H, W]) -> [B, ...]."""


def logits(qmodel: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The classifier's output (the default of :func:`window_sensitivity`)."""
    return qmodel(images)


def stage_outputs(qmodel: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A detection backbone's outputs: every stage's output map (what the FPN reads), each divided by
    the square root of its size per image, concatenated -> [B, D]; a squared distance between two of
    them is the sum over stages of each stage's mean squared error."""
    x = qmodel.patch_embed(images)
    parts = []
    for stage in _stages(qmodel):
        x = stage(x)
        flat = x.reshape(x.shape[0], -1)
        parts.append(flat / flat.shape[1] ** 0.5)
    return torch.cat(parts, dim=1)


def window_sensitivity(qmodel: nn.Module, image: torch.Tensor, stage_index: int, outputs: Outputs = logits,
                       chunk: int = 0) -> torch.Tensor:
    """Output error each window of ``stage_index`` adds when it alone runs LOW.

    qmodel: a quantized two-branch Swin whose LOW branch is calibrated (e.g. ``calib="whole"``)
    and whose routing leaves every window HIGH; image: [3, H, W] -> [nW] float64 (regular
    partition, timm's window order), ``||outputs(window j low) - outputs(all high)||^2`` with
    ``outputs`` the logits (classifier) or :func:`stage_outputs` (detection backbone). The nW copies
    run in batches of ``chunk`` (0: all at once).
    """
    stage = _stages(qmodel)[stage_index]
    H, W = stage.blocks[0].block.input_resolution
    n_win = stage.blocks[0].num_windows(H, W)
    step = chunk or n_win
    errors = []
    try:
        with torch.inference_mode():
            ref = outputs(qmodel, image.unsqueeze(0)).reshape(1, -1).double()
            for j in range(0, n_win, step):
                rows = min(step, n_win - j)
                assign = torch.full((rows, n_win), HIGH, dtype=torch.int64, device=image.device)
                assign[torch.arange(rows), torch.arange(j, j + rows)] = LOW
                stage.forced_routes = [BlockRoute(None, (n_win, 0, 0)) if any(blk.shift_size)
                                       else BlockRoute(assign, (n_win - 1, 1, 0)) for blk in stage.blocks]
                copies = image.unsqueeze(0).expand(rows, *image.shape)
                out = outputs(qmodel, copies).reshape(rows, -1).double()
                errors.append((out - ref).pow(2).sum(-1).cpu())
    finally:
        stage.forced_routes = None
    return torch.cat(errors)


def importance_sensitivity(
    qmodel: nn.Module, images: torch.Tensor, min_windows: int = 4, stages: list[int] | None = None,
    outputs: Outputs = logits, chunk: int = 0,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """(scores [B, nW], sensitivities [B, nW]) per stage with at least ``min_windows`` windows
    (of ``stages`` when given, else all).

    images: [B, 3, H, W]; scores: the L2 window scores of the stage input (regular partition);
    outputs, chunk: as :func:`window_sensitivity`.
    """
    toks = stage_inputs(qmodel, images)
    out = {}
    for si, stage in enumerate(_stages(qmodel)):
        if stages is not None and si not in stages:
            continue
        window = stage.blocks[0].window_size
        scores = window_scores(toks[si], window, (0, 0)).double()
        if scores.shape[1] < min_windows:
            continue
        sens = torch.stack([window_sensitivity(qmodel, img, si, outputs, chunk) for img in images])
        out[si] = (scores, sens)
    return out


def spearman_columns(per_stage: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """``fid_imp_sens_spearman_stage{i}`` (mean over images of the rank correlation between window
    scores and sensitivities) per stage of :func:`importance_sensitivity`'s result, and
    ``fid_imp_sens_spearman``, their mean; a stage where every image's correlation is undefined is
    left out."""
    row: dict[str, float] = {}
    for si, (scores, sens) in per_stage.items():
        rho = spearman(scores, sens)
        rho = rho[~torch.isnan(rho)]
        if rho.numel():
            row[f"fid_imp_sens_spearman_stage{si}"] = float(rho.mean())
    if row:
        row["fid_imp_sens_spearman"] = sum(row.values()) / len(row)
    return row


__all__ = ["importance_sensitivity", "logits", "score_cv", "spearman", "spearman_columns", "stage_inputs",
           "stage_outputs", "window_sensitivity"]
