"""Fidelity of an accelerated run against the reference run on the same input.

These compare two outputs of the model (reference vs test), not an output against ground
truth. They are generic over workloads: the VGGT workload uses the depth / point-map / pose
and token comparisons, the Swin workload the logit ones (KL, top-1 agreement, SQNR).
Every function returns a Python float (or a dict of floats); arithmetic runs in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.metrics.geometry import camera_centres, rotation_angle_deg

_EPS = 1e-12


def _pair(a: torch.Tensor, b: torch.Tensor, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"{where}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    return a.double(), b.to(a.device).double()


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x[mask.to(x.device).bool()]


def relative_error(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """mean |a - b| / mean |b| over all elements (or those where mask is True).

    a, b: same shape; mask: broadcastable-by-indexing bool of a's leading dims or a's shape.
    Returns 0 when a == b; inf when b is all zero and a is not.
    """
    x, y = _pair(a, b, "relative_error")
    x, y = _masked(x, mask), _masked(y, mask)
    num, den = (x - y).abs().mean(), y.abs().mean()
    return _ratio(float(num), float(den))


def _ratio(num: float, den: float) -> float:
    if num == 0.0:
        return 0.0
    return num / den if den > 0 else math.inf


def depth_rel_error(depth_a: torch.Tensor, depth_b: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """mean over pixels of |a - b| / b, with b the reference depth.

    depth_a, depth_b: [S, H, W]; valid: [S, H, W] bool, optional. Pixels with b <= 0 or
    non-finite values are ignored.
    """
    a, b = _pair(depth_a, depth_b, "depth_rel_error")
    m = (b > 0) & torch.isfinite(a) & torch.isfinite(b)
    if valid is not None:
        m = m & valid.to(m.device).bool()
    if not m.any():
        raise ValueError("depth_rel_error: no pixel with a positive reference depth")
    return float(((a[m] - b[m]).abs() / b[m]).mean())


def pointmap_rel_error(pts_a: torch.Tensor, pts_b: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """mean ||a - b|| / mean ||b - mean(b)||: point distance relative to the reference
    cloud's spread (so it does not depend on where the world origin is).

    pts_a, pts_b: [..., 3]; valid: [...] bool, optional.
    """
    a, b = _pair(pts_a, pts_b, "pointmap_rel_error")
    if a.shape[-1] != 3:
        raise ValueError(f"pointmap_rel_error: last dim must be 3, got {tuple(a.shape)}")
    a, b = a.reshape(-1, 3), b.reshape(-1, 3)
    if valid is not None:
        m = valid.to(a.device).bool().reshape(-1)
        a, b = a[m], b[m]
    dist = (a - b).norm(dim=-1).mean()
    spread = (b - b.mean(0)).norm(dim=-1).mean()
    return _ratio(float(dist), float(spread))


def pose_difference(extr_a: torch.Tensor, extr_b: torch.Tensor) -> dict[str, float]:
    """Per-frame camera difference between two runs.

    extr_a, extr_b: [S, 3, 4] camera-from-world (b = reference). Returns
    - ``rot_deg``: mean geodesic angle between R_a and R_b;
    - ``trans_rel``: mean camera-centre distance divided by the reference trajectory's
      spread (mean distance of b's centres from their mean); when that spread is 0 (S = 1 or
      all centres equal) the plain mean distance is returned.
    """
    a, b = _pair(extr_a, extr_b, "pose_difference")
    if a.dim() != 3 or a.shape[-2:] != (3, 4):
        raise ValueError(f"pose_difference: extrinsics must be [S, 3, 4], got {tuple(a.shape)}")
    rot = rotation_angle_deg(a[:, :, :3].transpose(1, 2) @ b[:, :, :3]).mean()
    ca, cb = camera_centres(a), camera_centres(b)
    dist = float((ca - cb).norm(dim=-1).mean())
    spread = float((cb - cb.mean(0)).norm(dim=-1).mean())
    return {"rot_deg": float(rot), "trans_rel": dist / spread if spread > _EPS else dist}


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> float:
    """Mean over all other positions (e.g. tokens) of the cosine similarity along ``dim``.

    a, b: same shape, e.g. aggregator tokens [B, S, P, C] compared along C.
    Two zero vectors count as similarity 1; one zero vector as 0.
    """
    x, y = _pair(a, b, "cosine_similarity")
    nx, ny = x.norm(dim=dim), y.norm(dim=dim)
    cos = (x * y).sum(dim) / (nx * ny).clamp(min=_EPS)
    both_zero = (nx == 0) & (ny == 0)
    cos = torch.where(both_zero, torch.ones_like(cos), cos)
    return float(cos.mean())


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantisation-noise ratio 10 log10(||ref||² / ||ref - test||²) in dB.

    +inf when test == ref exactly; -inf when ref is zero and test is not.
    """
    r, t = _pair(ref, test, "sqnr_db")
    noise = float(((r - t) ** 2).sum())
    signal = float((r**2).sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def kl_divergence(logits_ref: torch.Tensor, logits_test: torch.Tensor) -> float:
    """KL(p_ref || p_test) in nats of the softmax over the last dim, mean over the rest.

    logits_ref, logits_test: [..., K] (e.g. [B, classes]).
    """
    r, t = _pair(logits_ref, logits_test, "kl_divergence")
    log_p, log_q = F.log_softmax(r, dim=-1), F.log_softmax(t, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return float(kl.clamp(min=0.0).mean())


def top1_agreement(logits_ref: torch.Tensor, logits_test: torch.Tensor) -> float:
    """Fraction of rows whose argmax over the last dim agrees. logits: [..., K] -> [0, 1]."""
    if logits_ref.shape != logits_test.shape:
        raise ValueError(
            f"top1_agreement: shapes differ, {tuple(logits_ref.shape)} vs {tuple(logits_test.shape)}"
        )
    same = logits_ref.argmax(-1) == logits_test.to(logits_ref.device).argmax(-1)
    return float(same.double().mean())


__all__ = [
    "cosine_similarity",
    "depth_rel_error",
    "kl_divergence",
    "pointmap_rel_error",
    "pose_difference",
    "relative_error",
    "sqnr_db",
    "top1_agreement",
]
