"""Differentiable reconstruction errors against ground truth after a similarity alignment held
fixed (stop-gradient), as HeSS's calibration defines them (arXiv 2603.25336):

- camera-position error ``e_cam = 1/(2S) sum_i ||sg(H) c_hat_i - c_i||^2`` over the S cameras'
  centres;
- point-cloud error ``e_pc = 1/(2|I|) sum_{j in I} min_p ||sg(H) p_hat_j - p||^2`` over the inlier
  set ``I`` of predicted points within ``eps`` of their nearest ground-truth point.

``H`` is the Umeyama Sim(3) fit of the predicted to the ground-truth points of the same pixels (the
correspondences are known, so this is the fixed point an ICP refinement converges to from them). It
is computed on detached values: gradients flow through the predictions only, never through ``H``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.metrics.geometry import (
    apply_sim3,
    camera_centres,
    nearest_neighbours,
    pointmap_from_depth,
    umeyama_sim3,
)
from harness.models.vggt.pose import pose_encoding_to_extri_intri

#: Default inlier radius of the point-cloud error, in ground-truth units (the paper's epsilon).
INLIER_EPS = 0.05
#: Default number of valid pixels whose predicted points enter the fit and the point-cloud error.
MAX_POINTS = 4096


@dataclass(frozen=True)
class AlignedErrors:
    """camera, points: scalar tensors attached to the predictions' graph; inlier_frac: |I| over the
    sampled points (0 when none is within eps: ``points`` is then an exact 0 with a graph)."""

    camera: torch.Tensor
    points: torch.Tensor
    inlier_frac: float


def sample_valid(valid: torch.Tensor, max_points: int, seed: int) -> torch.Tensor:
    """Flat indices [n] (sorted) of at most ``max_points`` pixels where ``valid`` [S, H, W] is true,
    a seeded random subset when there are more."""
    flat = valid.reshape(-1).nonzero()[:, 0]
    if flat.numel() <= max_points:
        return flat
    gen = torch.Generator().manual_seed(seed)
    return flat[torch.randperm(flat.numel(), generator=gen)[:max_points]].sort().values


def camera_position_error(pred_centres: torch.Tensor, gt_centres: torch.Tensor, s: float, rot: torch.Tensor,
                          t: torch.Tensor) -> torch.Tensor:
    """``e_cam = 1/(2S) sum_i ||H c_hat_i - c_i||^2``: pred_centres, gt_centres [S, 3]; H = (s, rot [3, 3],
    t [3]) held fixed -> scalar float64."""
    aligned = apply_sim3(pred_centres.double(), s, rot, t)
    return 0.5 * (aligned - gt_centres.to(aligned.device).double()).pow(2).sum(-1).mean()


def inlier_point_error(aligned: torch.Tensor, cloud: torch.Tensor, eps: float) -> tuple[torch.Tensor, float]:
    """``e_pc = 1/(2|I|) sum_{j in I} min_p ||a_j - p||^2`` with I the points of ``aligned`` [n, 3] whose
    nearest point of ``cloud`` [m, 3] is closer than ``eps`` -> (scalar float64, |I| / n). The nearest
    point is chosen on detached values; the gradient flows through ``aligned``. No inlier: an exact 0
    that keeps the graph."""
    dist, nn = nearest_neighbours(aligned.detach(), cloud)
    inliers = dist < eps
    frac = float(inliers.double().mean())
    if not inliers.any():
        return aligned.double().sum() * 0.0, frac
    diff = aligned[inliers].double() - cloud.to(aligned.device)[nn[inliers]].double()
    return 0.5 * diff.pow(2).sum(-1).mean(), frac


def aligned_errors(depth: torch.Tensor, pose_enc: torch.Tensor, hw: tuple[int, int], gt_points: torch.Tensor,
                   gt_extrinsics: torch.Tensor, valid: torch.Tensor, *, eps: float = INLIER_EPS,
                   max_points: int = MAX_POINTS, seed: int = 0) -> AlignedErrors:
    """HeSS's two calibration errors of one scene's prediction.

    depth: [S, H, W] predicted z-depth; pose_enc: [S, 9] predicted pose encoding; hw: (H, W) of the
    images; gt_points: [S, H, W, 3] ground-truth world points; gt_extrinsics: [S, 3, 4]
    camera-from-world; valid: [S, H, W] bool (pixels with ground truth). The predicted points are
    the depth unprojected with the predicted cameras; at most ``max_points`` valid pixels (a seeded
    subset) enter the fit and the point-cloud error, whose ground-truth cloud is every valid
    ground-truth point."""
    if not valid.any():
        raise ValueError("aligned_errors: the scene has no valid ground-truth pixel")
    dev = depth.device
    valid = valid.to(dev)
    extr, intr = pose_encoding_to_extri_intri(pose_enc.float(), hw)
    pred = pointmap_from_depth(depth.float(), intr, extr).reshape(-1, 3)  # [S*H*W, 3]
    gt = gt_points.to(dev).reshape(-1, 3).double()
    idx = sample_valid(valid, max_points, seed)
    s, rot, t = umeyama_sim3(pred[idx].detach(), gt[idx])  # sg(H)
    e_cam = camera_position_error(camera_centres(extr), camera_centres(gt_extrinsics), s, rot, t)
    e_pc, frac = inlier_point_error(apply_sim3(pred[idx].double(), s, rot, t), gt[valid.reshape(-1)], eps)
    return AlignedErrors(camera=e_cam, points=e_pc, inlier_frac=frac)
