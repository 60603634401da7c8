"""HeSS's calibration errors (harness/metrics/aligned_errors.py): hand values for the two formulas,
an exactly similar prediction scoring 0 once aligned, and the stop-gradient on the alignment."""

from __future__ import annotations

import math

import pytest
import torch

from harness.data.scenes import SceneConfig, render_scene
from harness.metrics.aligned_errors import (
    aligned_errors,
    camera_position_error,
    inlier_point_error,
    sample_valid,
)
from harness.models.vggt.pose import extri_intri_to_pose_encoding


def test_the_point_error_averages_half_squared_nearest_distances_over_the_inliers_only():
    aligned = torch.tensor([[0.0, 0, 0], [1, 0, 0], [5, 5, 5]], dtype=torch.float64)
    # the second point's nearest cloud point is the second, not the first in the list
    cloud = torch.tensor([[0.0, 0, 0.03], [1, 0.04, 0], [9, 9, 9]], dtype=torch.float64)
    e, frac = inlier_point_error(aligned, cloud, eps=0.05)
    assert float(e) == pytest.approx(0.5 * (0.03**2 + 0.04**2) / 2, rel=1e-12)
    assert frac == pytest.approx(2 / 3)
    # a tighter radius keeps the first point only
    e, frac = inlier_point_error(aligned, cloud, eps=0.035)
    assert float(e) == pytest.approx(0.5 * 0.03**2, rel=1e-12) and frac == pytest.approx(1 / 3)


def test_no_inlier_gives_an_exact_zero_that_still_has_a_graph():
    aligned = torch.tensor([[0.0, 0, 0], [1, 0, 0]], dtype=torch.float64, requires_grad=True)
    e, frac = inlier_point_error(aligned, torch.tensor([[3.0, 3, 3]]), eps=0.05)
    assert float(e.detach()) == 0.0 and frac == 0.0
    (g,) = torch.autograd.grad(e, aligned)
    assert torch.equal(g, torch.zeros_like(g))


def test_the_camera_error_is_half_the_mean_squared_distance_after_the_similarity():
    pred = torch.tensor([[0.0, 0, 0], [1, 0, 0]])
    gt = torch.tensor([[1.0, 2, 3], [1, 4, 3]])
    quarter = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)  # 90 deg about z
    # H c = 2 R c + (1, 2, 3): (0,0,0) -> (1,2,3) exactly; (1,0,0) -> (1,4,3) exactly
    assert float(camera_position_error(pred, gt, 2.0, quarter, torch.tensor([1.0, 2, 3]))) == 0.0
    # without the rotation (1,0,0) lands on (3,2,3): distance sqrt(8) for one of two cameras
    e = camera_position_error(pred, gt, 2.0, torch.eye(3, dtype=torch.float64), torch.tensor([1.0, 2, 3]))
    assert float(e) == pytest.approx(0.5 * 8 / 2)


def test_the_valid_pixel_sample_is_seeded_sorted_and_only_of_valid_pixels():
    valid = torch.zeros(2, 3, 4, dtype=torch.bool)
    valid[0, 1, 2] = valid[1, 0, 0] = valid[1, 2, 3] = True
    assert sample_valid(valid, 10, seed=0).tolist() == [6, 12, 23]
    a, b = sample_valid(valid, 2, seed=5), sample_valid(valid, 2, seed=5)
    assert torch.equal(a, b) and a.tolist() == sorted(a.tolist()) and set(a.tolist()) <= {6, 12, 23}


def scene_and_similar_prediction(scale=2.0, angle=0.5, shift=(1.0, -2.0, 0.5)):
    """A small synthetic scene and a prediction of it in another world frame: the predicted world is
    ``scale * R(angle about y) * gt + shift``; so its depth is ``scale`` times the ground truth's and
    camera i's pose is (R_i R^T, scale t_i - R_i R^T shift)."""
    scene = render_scene(SceneConfig(frames=3, height=28, width=42, seed=11, mode="video"))
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    shift_t = torch.tensor(shift)
    r_i, t_i = scene.extrinsics[..., :3], scene.extrinsics[..., 3]
    r_pred = r_i @ rot.T
    t_pred = scale * t_i - (r_pred @ shift_t[:, None])[..., 0]
    extr = torch.cat([r_pred, t_pred[..., None]], dim=-1)
    pose_enc = extri_intri_to_pose_encoding(extr, scene.intrinsics, (28, 42))
    return scene, scale * scene.depth, pose_enc


def test_a_prediction_similar_to_the_ground_truth_scores_zero_once_aligned():
    scene, depth, pose_enc = scene_and_similar_prediction()
    err = aligned_errors(depth, pose_enc, (28, 42), scene.world_points, scene.extrinsics, scene.valid)
    assert float(err.camera) < 1e-9 and float(err.points) < 1e-9 and err.inlier_frac == 1.0


def test_one_frame_pushed_away_raises_the_camera_error_and_loses_inliers():
    scene, depth, pose_enc = scene_and_similar_prediction()
    moved = pose_enc.clone()
    moved[1, :3] += torch.tensor([0.0, 0.0, 0.8])  # frame 1's camera translation, in its own frame
    err = aligned_errors(depth, moved, (28, 42), scene.world_points, scene.extrinsics, scene.valid)
    assert float(err.camera) > 1e-3 and float(err.points) > 0 and err.inlier_frac < 1.0


def test_the_alignment_is_held_fixed_so_depth_moves_no_camera():
    scene, depth, pose_enc = scene_and_similar_prediction()
    depth = (depth * 1.05).requires_grad_(True)  # slightly off, so both errors have a gradient
    pose_enc = pose_enc.clone().requires_grad_(True)
    err = aligned_errors(depth, pose_enc, (28, 42), scene.world_points, scene.extrinsics, scene.valid)
    # cameras do not depend on depth: only an alignment that is differentiated would connect them
    g_depth = torch.autograd.grad(err.camera, depth, allow_unused=True, retain_graph=True)[0]
    assert g_depth is None or torch.equal(g_depth, torch.zeros_like(g_depth))
    g_pose, = torch.autograd.grad(err.camera, pose_enc, retain_graph=True)
    assert g_pose[:, :7].abs().sum() > 0
    g_depth, g_pose = torch.autograd.grad(err.points, (depth, pose_enc))
    assert g_depth.abs().sum() > 0 and g_pose.abs().sum() > 0


def test_a_scene_without_ground_truth_is_refused():
    scene, depth, pose_enc = scene_and_similar_prediction()
    with pytest.raises(ValueError, match=r"^aligned_errors: the scene has no valid ground-truth pixel$"):
        aligned_errors(depth, pose_enc, (28, 42), scene.world_points, scene.extrinsics,
                       torch.zeros_like(scene.valid))


def test_a_point_exactly_at_the_inlier_radius_is_not_an_inlier():
    aligned = torch.tensor([[0.0, 0, 0], [2, 0, 0]], dtype=torch.float64)
    cloud = torch.tensor([[0.0, 0, 0.5], [2, 0, 0.25]], dtype=torch.float64)
    e, frac = inlier_point_error(aligned, cloud, eps=0.5)
    assert frac == 0.5 and float(e) == pytest.approx(0.5 * 0.25**2)


def test_the_fit_samples_max_points_valid_pixels_with_the_seed_zero_by_default():
    scene, depth, pose_enc = scene_and_similar_prediction()
    moved = pose_enc.clone()
    moved[1, :3] += torch.tensor([0.0, 0.0, 0.8])  # not exactly similar: the sample changes the fit
    args = (depth, moved, (28, 42), scene.world_points, scene.extrinsics, scene.valid)
    default = aligned_errors(*args, max_points=64)
    seed0 = aligned_errors(*args, max_points=64, seed=0)
    seed1 = aligned_errors(*args, max_points=64, seed=1)
    assert float(default.camera) == float(seed0.camera) and float(default.points) == float(seed0.points)
    assert float(seed1.camera) != float(seed0.camera)
