"""Geometry metrics on known transformations: identities, similarity invariance, noise growth."""

from __future__ import annotations

import math

import pytest
import torch

from harness.data.scenes import Scene, SceneConfig, render_scene
from harness.metrics.geometry import (
    accuracy_completeness,
    align_points,
    apply_sim3,
    camera_centres,
    depth_metrics,
    nearest_neighbours,
    normals_from_pointmap,
    pointmap_from_depth,
    pose_auc,
    pose_metrics,
    reconstruction_metrics,
    relative_pose_errors,
    rotation_angle_deg,
    umeyama_sim3,
)


def _rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def _axis_rotation(deg: float, axis: int = 2) -> torch.Tensor:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = [a for a in range(3) if a != axis]
    rot = torch.eye(3, dtype=torch.float64)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot


def _cloud(n: int = 500, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    return x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return render_scene(SceneConfig(frames=4, height=28, width=42, seed=2))


# --------------------------------------------------------------------------- similarity fits


def test_umeyama_recovers_a_known_similarity():
    src = _cloud()
    rot, s, t = _rotation(3), 2.5, torch.tensor([0.3, -1.0, 4.0], dtype=torch.float64)
    s_fit, r_fit, t_fit = umeyama_sim3(src, s * src @ rot.T + t)
    assert s_fit == pytest.approx(s, rel=1e-9)
    assert torch.allclose(r_fit, rot, atol=1e-9)
    assert torch.allclose(t_fit, t, atol=1e-9)


def test_umeyama_returns_a_proper_rotation_for_mirrored_points():
    src = _cloud()
    mirrored = src * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    _, rot, _ = umeyama_sim3(src, mirrored)
    assert torch.det(rot).item() == pytest.approx(1.0)


def test_umeyama_without_scale_fits_a_rigid_motion():
    src = _cloud()
    s, rot, _ = umeyama_sim3(src, 3.0 * src @ _rotation(4).T, with_scale=False)
    assert s == 1.0 and torch.allclose(rot, _rotation(4), atol=1e-9)


def test_align_points_removes_a_random_similarity():
    gt = _cloud()
    pred = 0.4 * gt @ _rotation(5).T + torch.tensor([2.0, 0.0, -3.0], dtype=torch.float64)
    assert torch.allclose(align_points(pred, gt), gt, atol=1e-9)


def test_align_points_via_camera_centres_uses_the_camera_fit():
    scene = render_scene(SceneConfig(frames=4, height=14, width=14, mode="sparse"))  # well-spread centres
    gt_extr = scene.extrinsics.double()
    s, rot, t = 2.0, _rotation(6), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    # the same cameras in a world scaled by s, rotated by rot and shifted by t
    r_new = gt_extr[:, :, :3] @ rot.T
    pred_extr = torch.cat([r_new, s * gt_extr[:, :, 3:] - r_new @ t[:, None]], dim=2)
    pts = scene.world_points.reshape(-1, 3).double()
    pred_pts = s * pts @ rot.T + t
    aligned = align_points(pred_pts, pred_extrinsics=pred_extr, gt_extrinsics=gt_extr)
    assert torch.allclose(aligned, pts, atol=1e-5)  # float32 rotations are orthonormal to ~1e-7


# --------------------------------------------------------------------------- point clouds


def test_identical_clouds_have_zero_accuracy_and_completeness():
    x = _cloud(2000)
    out = accuracy_completeness(x, x.clone())
    assert out == {"acc": 0.0, "acc_med": 0.0, "comp": 0.0, "comp_med": 0.0}


def test_a_plane_shifted_along_its_normal_is_off_by_the_shift():
    u, v = torch.meshgrid(torch.linspace(0, 1, 30), torch.linspace(0, 1, 30), indexing="ij")
    plane = torch.stack([u, v, torch.zeros_like(u)], -1).reshape(-1, 3)
    out = accuracy_completeness(plane + torch.tensor([0.0, 0.0, 0.01]), plane)
    assert out["acc"] == pytest.approx(0.01, rel=1e-5) and out["comp"] == pytest.approx(0.01, rel=1e-5)


def test_a_partial_prediction_is_accurate_but_incomplete():
    gt = _cloud(1000)
    out = accuracy_completeness(gt[gt[:, 0] > 0], gt)
    assert out["acc"] == 0.0 and out["comp"] > 0.1


def test_normal_consistency_is_one_for_matching_normals_and_zero_for_perpendicular():
    x = _cloud(300)
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(300, 3)
    flipped = accuracy_completeness(x, x, normals_pred=-z, normals_gt=z)
    perp = accuracy_completeness(x, x, normals_pred=z[:, [2, 0, 1]], normals_gt=z)
    assert flipped["nc"] == pytest.approx(1.0) and perp["nc"] == pytest.approx(0.0)


def test_accuracy_grows_with_noise():
    gt = _cloud(2000)
    accs = [accuracy_completeness(_noisy(gt, s), gt)["acc"] for s in (0.01, 0.03, 0.1, 0.3)]
    assert accs == sorted(accs) and accs[0] > 0


def test_subsampling_is_seeded():
    gt = _cloud(3000)
    pred = _noisy(gt, 0.05)
    a = accuracy_completeness(pred, gt, max_points=500, seed=1)
    b = accuracy_completeness(pred, gt, max_points=500, seed=1)
    c = accuracy_completeness(pred, gt, max_points=500, seed=2)
    assert a == b and a != c


def test_kdtree_and_torch_nearest_neighbours_agree():
    query, ref = _cloud(700, seed=3), _cloud(900, seed=4)
    d_tree, i_tree = nearest_neighbours(query, ref, backend="kdtree")
    d_torch, i_torch = nearest_neighbours(query, ref, backend="torch")
    assert torch.equal(i_tree, i_torch) and torch.allclose(d_tree, d_torch, atol=1e-12)
    assert torch.allclose(d_tree, torch.cdist(query, ref).amin(dim=1), atol=1e-9)


def test_normals_at_chosen_pixels_match_the_full_map(scene: Scene):
    full = normals_from_pointmap(scene.world_points)
    pixels = torch.tensor([0, 41, 500, scene.world_points[..., 0].numel() - 1])
    assert torch.equal(normals_from_pointmap(scene.world_points, pixels), full.reshape(-1, 3)[pixels])


def test_normals_of_a_tilted_plane_are_its_normal():
    u, v = torch.meshgrid(torch.linspace(0, 1, 6), torch.linspace(0, 1, 7), indexing="ij")
    plane = torch.stack([u, v, 0.5 * u + 0.2 * v], -1)[None]  # z = 0.5x + 0.2y
    n = normals_from_pointmap(plane)
    expected = torch.tensor([-0.5, -0.2, 1.0]) / math.sqrt(1.29)
    assert torch.allclose((n @ expected).abs(), torch.ones(1, 6, 7), atol=1e-6)


def test_pointmap_from_depth_reproduces_the_rendered_world_points(scene: Scene):
    pts = pointmap_from_depth(scene.depth, scene.intrinsics, scene.extrinsics)
    assert pts.shape == scene.world_points.shape
    assert torch.allclose(pts, scene.world_points, atol=1e-4)


def test_reconstruction_metrics_are_perfect_for_the_ground_truth(scene: Scene):
    out = reconstruction_metrics(scene.world_points, scene.world_points, scene.valid)
    assert out["acc"] < 1e-5 and out["comp"] < 1e-5 and out["nc"] == pytest.approx(1.0, abs=1e-5)


def test_reconstruction_metrics_align_away_a_similarity(scene: Scene):
    pts = scene.world_points.double()
    pred = apply_sim3(pts, 0.3, _rotation(7), torch.tensor([5.0, -2.0, 1.0], dtype=torch.float64))
    out = reconstruction_metrics(pred, pts, scene.valid)
    assert out["acc"] < 1e-6 and out["comp"] < 1e-6


def test_reconstruction_error_grows_with_noise(scene: Scene):
    pts = scene.world_points.double()
    accs = [reconstruction_metrics(_noisy(pts, s), pts, scene.valid)["acc"] for s in (0.005, 0.02, 0.08)]
    assert accs == sorted(accs)


def test_confidence_filtering_drops_unconfident_outliers(scene: Scene):
    pts = scene.world_points.double()
    pred = pts.clone()
    bad = torch.zeros(scene.valid.shape, dtype=torch.bool)
    bad[:, ::4] = True
    pred[bad] += 3.0
    conf = torch.where(bad, 0.1, 1.0)
    raw = reconstruction_metrics(pred, pts, scene.valid)
    kept = reconstruction_metrics(pred, pts, scene.valid, pred_conf=conf, conf_quantile=0.3)
    assert kept["acc"] < 1e-6 < raw["acc"]


# --------------------------------------------------------------------------- depth


def test_depth_metrics_identity_is_perfect(scene: Scene):
    out = depth_metrics(scene.depth, scene.depth, scene.valid)
    assert out == {"abs_rel": 0.0, "delta_1_25": 1.0}


def test_depth_metrics_scale_each_frame_by_its_median(scene: Scene):
    scales = torch.tensor([0.5, 2.0, 3.0, 7.0])[:, None, None]
    scaled = depth_metrics(scene.depth * scales, scene.depth, scene.valid)
    assert scaled["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    unscaled = depth_metrics(scene.depth * 2.0, scene.depth, scene.valid, median_scaling=False)
    assert unscaled["abs_rel"] == pytest.approx(1.0) and unscaled["delta_1_25"] == 0.0


def test_depth_error_grows_with_noise(scene: Scene):
    outs = [depth_metrics(_noisy(scene.depth.double(), s).clamp(min=0.01), scene.depth, scene.valid)
            for s in (0.01, 0.05, 0.2, 0.8)]
    rels = [o["abs_rel"] for o in outs]
    deltas = [o["delta_1_25"] for o in outs]
    assert rels == sorted(rels) and deltas == sorted(deltas, reverse=True)


def test_depth_metrics_ignore_invalid_pixels(scene: Scene):
    valid = scene.valid.clone()
    valid[:, :, :5] = False
    pred = scene.depth.clone()
    pred[:, :, :5] = 100.0
    assert depth_metrics(pred, scene.depth, valid)["abs_rel"] == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- poses


def test_pose_metrics_identity_is_perfect(scene: Scene):
    out = pose_metrics(scene.extrinsics, scene.extrinsics)
    assert out["rre_deg"] == pytest.approx(0.0, abs=1e-6) and out["rte_deg"] == pytest.approx(0.0, abs=1e-5)
    assert out["auc_30"] == 1.0 and out["ate"] == pytest.approx(0.0, abs=1e-6)


def test_pose_metrics_are_invariant_to_a_world_similarity(scene: Scene):
    gt = scene.extrinsics.double()
    s, rot, t = 3.0, _rotation(8), torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    r_new = gt[:, :, :3] @ rot.T
    pred = torch.cat([r_new, s * gt[:, :, 3:] - r_new @ t[:, None]], dim=2)
    out = pose_metrics(pred, gt)
    assert out["rre_deg"] < 1e-5 and out["rte_deg"] < 1e-4 and out["ate"] < 1e-6 and out["auc_30"] == 1.0


def test_pose_errors_grow_with_rotation_and_translation_noise(scene: Scene):
    gt = scene.extrinsics.double()
    results = []
    for k, deg in enumerate((0.5, 2.0, 8.0, 25.0)):
        rots = torch.stack([_axis_rotation(deg * (-1) ** i, axis=i % 3) for i in range(gt.shape[0])])
        pred = gt.clone()
        pred[:, :, :3] = rots @ gt[:, :, :3]
        pred[:, :, 3] = _noisy(gt[:, :, 3], 0.02 * 4**k, seed=9)
        results.append(pose_metrics(pred, gt))
    for key in ("rre_deg", "rte_deg", "ate"):
        vals = [r[key] for r in results]
        assert vals == sorted(vals), key
    aucs = [r["auc_30"] for r in results]
    assert aucs == sorted(aucs, reverse=True) and aucs[-1] < aucs[0]


def test_auc_averages_pair_success_over_thresholds_1_to_30():
    rre = torch.tensor([0.5, 5.0, 40.0], dtype=torch.float64)
    assert pose_auc(rre, torch.zeros(3, dtype=torch.float64)) == pytest.approx(55 / 90)


def test_rotation_angle_of_a_known_rotation():
    assert rotation_angle_deg(_axis_rotation(30.0, axis=1)).item() == pytest.approx(30.0)
    assert rotation_angle_deg(_axis_rotation(180.0)).item() == pytest.approx(180.0)


def test_reversed_translation_counts_as_correct_only_with_sign_ambiguity():
    gt = torch.zeros(2, 3, 4, dtype=torch.float64)
    gt[:, :, :3] = torch.eye(3)
    gt[1, :, 3] = torch.tensor([1.0, 0.0, 0.0])
    pred = gt.clone()
    pred[1, :, 3] = -gt[1, :, 3]
    _, rte = relative_pose_errors(pred, gt)
    _, rte_signed = relative_pose_errors(pred, gt, translation_sign_ambiguity=False)
    assert rte.item() == pytest.approx(0.0) and rte_signed.item() == pytest.approx(180.0)


def test_a_camera_that_never_moves_scores_90_degrees_of_translation_error():
    """Zero predicted translation has no direction: 90 degrees, as upstream's acos(0) (not 0)."""
    gt = torch.zeros(3, 3, 4, dtype=torch.float64)
    gt[:, :, :3] = torch.eye(3)
    gt[1, :, 3] = torch.tensor([1.0, 0.0, 0.0])
    gt[2, :, 3] = torch.tensor([0.0, 0.0, 2.0])
    identity = torch.zeros_like(gt)
    identity[:, :, :3] = torch.eye(3)
    rre, rte = relative_pose_errors(identity, gt)
    assert rre.tolist() == pytest.approx([0.0, 0.0, 0.0])
    assert rte.tolist() == pytest.approx([90.0, 90.0, 90.0])
    assert pose_auc(rre, rte) == pytest.approx(0.0)
    _, rte_same = relative_pose_errors(identity, identity)
    assert rte_same.tolist() == pytest.approx([0.0, 0.0, 0.0])  # no motion predicted nor true: agree


def test_camera_centres_invert_the_extrinsics(scene: Scene):
    c = camera_centres(scene.extrinsics.double())
    extr = scene.extrinsics.double()
    cam = torch.einsum("sij,sj->si", extr[:, :, :3], c) + extr[:, :, 3]
    assert torch.allclose(cam, torch.zeros_like(cam), atol=1e-6)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 3\)"):
        umeyama_sim3(torch.zeros(4, 3), torch.zeros(5, 3))
