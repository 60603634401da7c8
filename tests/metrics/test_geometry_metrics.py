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


# --------------------------------------------------------------------------- hand-built cases (issue 28)
# Small inputs with values worked out by hand, the error messages, the defaults and the seeded
# subsampling: the lines that a mutation run showed no test was looking at.


def _extr(rot: torch.Tensor, centre) -> torch.Tensor:
    """[3, 4] camera-from-world of a camera with rotation rot at world position centre."""
    c = torch.as_tensor(centre, dtype=torch.float64)
    return torch.cat([rot, (-rot @ c)[:, None]], dim=1)


def _plane_grid(h: int, w: int) -> torch.Tensor:
    """[1, h, w, 3] points (j, i, 0): a unit-spaced grid in the plane z = 0."""
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                          indexing="ij")
    return torch.stack([j, i, torch.zeros_like(i)], -1)[None]


def test_umeyama_is_exact_for_clouds_far_from_the_origin():
    """Both clouds are centred before the covariance: a 1e6 offset costs no accuracy."""
    x = _cloud(200)
    rot = _rotation(11)
    src = x + torch.tensor([1e6, -2e6, 3e6], dtype=torch.float64)
    dst = 2.0 * x @ rot.T + torch.tensor([-1e6, 2e6, 1e6], dtype=torch.float64)
    s, r, t = umeyama_sim3(src, dst)
    assert s == pytest.approx(2.0, abs=1e-10)
    assert torch.allclose(r, rot, atol=1e-9)
    assert torch.allclose(apply_sim3(src, s, r, t), dst, atol=1e-6)


def test_umeyama_of_one_point_pair_is_a_pure_translation():
    src = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    dst = torch.tensor([[4.0, -1.0, 0.5]], dtype=torch.float64)
    for with_scale in (True, False):
        s, rot, t = umeyama_sim3(src, dst, with_scale=with_scale)
        assert s == 1.0  # no spread: no scale to fit
        assert torch.equal(rot, torch.eye(3, dtype=torch.float64))
        assert torch.equal(t, dst[0] - src[0])


def test_umeyama_names_bad_shapes_and_an_empty_set():
    msg = r"^umeyama_sim3: src \(4, 2\) and dst \(4, 2\) must both be \[N, 3\]$"
    with pytest.raises(ValueError, match=msg):
        umeyama_sim3(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"^umeyama_sim3: need at least one point pair$"):
        umeyama_sim3(torch.zeros(0, 3), torch.zeros(0, 3))


def test_rigid_point_alignment_keeps_the_scale():
    gt = _cloud(50)
    pred = 2.0 * gt  # a pure scaling about the origin: the best rigid motion is a translation
    aligned = align_points(pred, gt, with_scale=False)
    assert torch.allclose(aligned, pred - pred.mean(0) + gt.mean(0), atol=1e-12)
    assert torch.allclose(align_points(pred, gt), gt, atol=1e-12)


def test_rigid_camera_alignment_keeps_the_scale():
    centres = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]],
                           dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    gt_extr = torch.stack([_extr(eye, c) for c in centres])
    pred_extr = torch.stack([_extr(eye, 2.0 * c) for c in centres])  # the world scaled by 2
    pts = _cloud(20)
    rigid = align_points(pts, pred_extrinsics=pred_extr, gt_extrinsics=gt_extr, with_scale=False)
    assert torch.allclose(rigid, pts - centres.mean(0), atol=1e-12)  # t = mean(c) - mean(2 c)
    assert torch.allclose(align_points(pts, pred_extrinsics=pred_extr, gt_extrinsics=gt_extr), pts / 2,
                          atol=1e-12)


def test_align_points_names_what_is_missing():
    pts = torch.zeros(4, 3, dtype=torch.float64)
    extr = torch.zeros(4, 3, 4, dtype=torch.float64)
    both = r"^align_points: give both pred_extrinsics and gt_extrinsics to align via cameras$"
    with pytest.raises(ValueError, match=both):
        align_points(pts, pts, pred_extrinsics=extr)
    with pytest.raises(ValueError, match=both):
        align_points(pts, pts, gt_extrinsics=extr)
    with pytest.raises(ValueError, match=r"needs gt with pred's shape \(4, 3\), got None$"):
        align_points(pts)
    with pytest.raises(ValueError, match=r"^align_points: .*shape \(4, 3\), got \(5, 3\)$"):
        align_points(pts, torch.zeros(5, 3, dtype=torch.float64))


def test_apply_sim3_and_camera_centres_keep_the_input_dtype():
    pts = torch.tensor([[1.0, 2.0, 3.0]])
    t = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    out = apply_sim3(pts, 2.0, torch.eye(3, dtype=torch.float64), t)
    assert out.dtype == torch.float32 and out.tolist() == [[3.0, 4.0, 6.0]]
    extr = _extr(torch.eye(3, dtype=torch.float64), [1.0, 2.0, 3.0]).float()[None]
    c = camera_centres(extr)
    assert c.dtype == torch.float32 and c.tolist() == [[1.0, 2.0, 3.0]]


# point clouds


def test_accuracy_completeness_names_bad_shapes_and_empty_clouds():
    def shapes(p, g):
        return rf"^accuracy_completeness: pred {p} and gt {g} must be \[N, 3\]$"

    good = torch.zeros(5, 3)
    with pytest.raises(ValueError, match=shapes(r"\(5, 2\)", r"\(5, 3\)")):
        accuracy_completeness(torch.zeros(5, 2), good)
    with pytest.raises(ValueError, match=shapes(r"\(5, 3\)", r"\(5, 2\)")):
        accuracy_completeness(good, torch.zeros(5, 2))
    with pytest.raises(ValueError, match=shapes(r"\(1, 5, 3\)", r"\(5, 3\)")):
        accuracy_completeness(torch.zeros(1, 5, 3), good)
    with pytest.raises(ValueError, match=shapes(r"\(5, 3\)", r"\(1, 5, 3\)")):
        accuracy_completeness(good, torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match=r"^accuracy_completeness: empty cloud \(pred 0, gt 5 points\)$"):
        accuracy_completeness(torch.zeros(0, 3), good)
    with pytest.raises(ValueError, match=r"^accuracy_completeness: empty cloud \(pred 5, gt 0 points\)$"):
        accuracy_completeness(good, torch.zeros(0, 3))


def test_one_point_clouds_are_off_by_their_distance():
    out = accuracy_completeness(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[3.0, 4.0, 0.0]]))
    assert out == {"acc": 5.0, "acc_med": 5.0, "comp": 5.0, "comp_med": 5.0}


def test_normal_consistency_needs_both_normal_sets_and_normalises_them():
    x = _cloud(40)
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(40, 3)
    assert "nc" not in accuracy_completeness(x, x, normals_pred=z)
    assert "nc" not in accuracy_completeness(x, x, normals_gt=z)
    # predicted normals of length 0.5 at 60 degrees to GT normals of length 3: |cos| = 0.5
    tilted = 0.5 * torch.tensor([math.sin(math.pi / 3), 0.0, math.cos(math.pi / 3)], dtype=torch.float64)
    out = accuracy_completeness(x, x, normals_pred=tilted.expand(40, 3), normals_gt=3 * z)
    assert out["nc"] == pytest.approx(0.5, abs=1e-12)
    assert accuracy_completeness(x, x, normals_pred=0.5 * z, normals_gt=3 * z)["nc"] == pytest.approx(1.0)


def _acc_comp_by_hand(p: torch.Tensor, g: torch.Tensor) -> dict[str, float]:
    d = torch.cdist(p, g)
    acc, comp = d.amin(1), d.amin(0)
    return {"acc": float(acc.mean()), "acc_med": float(acc.median()),
            "comp": float(comp.mean()), "comp_med": float(comp.median())}


def test_subsampling_draws_pred_then_gt_from_one_generator_seeded_with_seed():
    gt = _cloud(300, seed=5)
    pred = _noisy(gt[:200], 0.05)
    # pred has exactly max_points points: kept whole and in order, no draw from the generator,
    # so the GT subset is the generator's first draw (seed 0 by default)
    out = accuracy_completeness(pred, gt, max_points=200)
    ig = torch.randperm(300, generator=torch.Generator().manual_seed(0))[:200]
    assert out == pytest.approx(_acc_comp_by_hand(pred, gt[ig]), abs=1e-12)
    # both over max_points: pred is the first draw, gt the second, from one generator
    gen = torch.Generator().manual_seed(7)
    ip = torch.randperm(200, generator=gen)[:150]
    ig = torch.randperm(300, generator=gen)[:150]
    out = accuracy_completeness(pred, gt, max_points=150, seed=7)
    assert out == pytest.approx(_acc_comp_by_hand(pred[ip], gt[ig]), abs=1e-12)


def test_accuracy_completeness_defaults_to_20000_points_and_seed_0():
    gt = _cloud(20100, seed=6)
    pred = _noisy(gt, 0.01)
    assert accuracy_completeness(pred, gt) == accuracy_completeness(pred, gt, max_points=20000, seed=0)


def test_accuracy_completeness_passes_its_backend_to_both_searches(monkeypatch):
    import harness.metrics.geometry as geometry

    seen, real = [], geometry.nearest_neighbours

    def spy(query, ref, backend="unset"):
        seen.append(backend)
        return real(query, ref, backend)

    monkeypatch.setattr(geometry, "nearest_neighbours", spy)
    x = _cloud(30)
    accuracy_completeness(x, x, nn_backend="torch")
    assert seen == ["torch", "torch"]


def test_nearest_neighbours_checks_its_arguments():
    q = _cloud(10)
    msg = r"^nearest_neighbours: backend 'bogus' is not one of 'auto', 'kdtree', 'torch'$"
    with pytest.raises(ValueError, match=msg):
        nearest_neighbours(q, q, backend="bogus")
    with pytest.raises(ValueError, match=r"^nearest_neighbours: the reference cloud is empty$"):
        nearest_neighbours(q, torch.zeros(0, 3, dtype=torch.float64))
    one = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)
    for backend in ("auto", "kdtree", "torch"):
        d, i = nearest_neighbours(q, one, backend)  # one reference point: every query's neighbour
        assert torch.equal(i, torch.zeros(10, dtype=torch.long))
        assert torch.allclose(d, (q - one).norm(dim=1), atol=1e-12)


def test_nearest_neighbours_default_is_the_kdtree_on_cpu(monkeypatch):
    import scipy.spatial

    built, real = [], scipy.spatial.cKDTree

    def counting(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(scipy.spatial, "cKDTree", counting)
    q, r = _cloud(50, seed=1), _cloud(60, seed=2)
    expected = torch.cdist(q, r).argmin(1)
    for backend, trees in (("auto", 1), ("kdtree", 1), ("torch", 0)):
        built.clear()
        d, i = nearest_neighbours(q, r, backend)
        assert len(built) == trees, backend
        assert torch.equal(i, expected) and d.dtype == torch.float64
    built.clear()
    _, i = nearest_neighbours(q, r)
    assert len(built) == 1 and torch.equal(i, expected)


def test_torch_nearest_neighbours_over_several_chunks_match_brute_force():
    query, ref = _cloud(2600, seed=7), _cloud(40, seed=8)
    expected_d, expected_i = torch.cdist(query, ref).min(dim=1)
    assert expected_i[0] != 0 and (expected_i[2048:] != 0).any()
    d, i = nearest_neighbours(query, ref, backend="torch")
    assert torch.equal(i, expected_i)
    assert torch.allclose(d, expected_d, atol=1e-12)


def test_torch_nearest_neighbours_are_exact_far_from_the_origin():
    """The search centres both clouds on the reference's centroid before the squared distances."""
    offset = torch.tensor([3e7, -1e7, 2e7], dtype=torch.float64)
    ref = 0.01 * _cloud(300, seed=9)
    query = 0.01 * _cloud(200, seed=10)
    expected = torch.cdist(query, ref).argmin(1)
    d_tree, i_tree = nearest_neighbours(query + offset, ref + offset, backend="kdtree")
    d, i = nearest_neighbours(query + offset, ref + offset, backend="torch")
    assert torch.equal(i_tree, expected) and torch.equal(i, expected)
    assert torch.allclose(d, d_tree, atol=1e-8)


def _normals_by_hand(points: torch.Tensor) -> torch.Tensor:
    """The documented rule, one pixel at a time: central differences, one-sided at the borders."""
    s, h, w, _ = points.shape
    out = torch.zeros_like(points)
    for f in range(s):
        for i in range(h):
            for j in range(w):
                du = points[f, i, min(j + 1, w - 1)] - points[f, i, max(j - 1, 0)]
                dv = points[f, min(i + 1, h - 1), j] - points[f, max(i - 1, 0), j]
                n = torch.linalg.cross(du, dv)
                out[f, i, j] = n / n.norm() if n.norm() > 0 else n
    return out


def test_normals_of_a_curved_two_frame_map_follow_the_central_difference_rule():
    i, j = torch.meshgrid(torch.arange(4, dtype=torch.float64), torch.arange(5, dtype=torch.float64),
                          indexing="ij")
    surf = torch.stack([j, i, 0.3 * i**2 + 0.1 * j**3 - 0.2 * i * j], -1)
    points = torch.stack([surf, surf.flip(1) * torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)])
    expected = _normals_by_hand(points)
    assert torch.allclose(normals_from_pointmap(points), expected, atol=1e-12)
    pixels = torch.tensor([0, 4, 7, 19, 20, 26, 39])  # corners, borders, interior, both frames
    assert torch.allclose(normals_from_pointmap(points, pixels), expected.reshape(-1, 3)[pixels], atol=1e-12)


def test_normals_from_pointmap_names_a_bad_shape():
    msg = r"^normals_from_pointmap: points must be \[S, H, W, 3\], got \(2, 3, 3\)$"
    with pytest.raises(ValueError, match=msg):
        normals_from_pointmap(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match=r"got \(1, 2, 2, 2\)$"):
        normals_from_pointmap(torch.zeros(1, 2, 2, 2))


# reconstruction


def test_reconstruction_metrics_skip_invalid_and_non_finite_pixels():
    gt = _plane_grid(6, 6)
    valid = torch.ones(1, 6, 6, dtype=torch.bool)
    valid[0, 0, :3] = False
    gt[0, 0, :3] = torch.tensor([500.0, 500.0, 500.0], dtype=torch.float64)  # garbage where invalid
    pred = apply_sim3(gt, 0.5, _rotation(12), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    pred[0, 0, :3] = torch.tensor([-90.0, 40.0, 7.0], dtype=torch.float64)
    gt[0, 5, 5, 2] = float("nan")  # a GT hole inside the valid mask: in neither cloud
    out = reconstruction_metrics(pred, gt, valid, max_points=100)
    assert out["acc"] < 1e-9 and out["comp"] < 1e-9
    # a predicted hole: its GT point (kept in the GT cloud) is 1 from the nearest predicted point
    pred[0, 3, 3, 0] = float("inf")
    out = reconstruction_metrics(pred, gt, valid, max_points=100)
    n_gt = 36 - 3 - 1
    assert out["acc"] < 1e-9 and out["comp"] == pytest.approx(1.0 / n_gt, abs=1e-9)
    assert out["comp_med"] < 1e-9


def test_reconstruction_metrics_need_three_corresponding_points():
    gt = _plane_grid(2, 2)
    valid = torch.tensor([[[True, True], [True, False]]])
    out = reconstruction_metrics(gt.clone(), gt, valid)  # exactly 3
    assert out["acc"] < 1e-12 and out["comp"] < 1e-12
    valid[0, 0, 0] = False
    msg = r"^reconstruction_metrics: only 2 valid corresponding points \(need >= 3\)$"
    with pytest.raises(ValueError, match=msg):
        reconstruction_metrics(gt.clone(), gt, valid)
    with pytest.raises(ValueError, match=r"only 0 valid corresponding points"):
        reconstruction_metrics(gt.clone(), gt, torch.zeros(1, 2, 2, dtype=torch.bool),
                               pred_conf=torch.ones(1, 2, 2), conf_quantile=0.5)


def test_reconstruction_metrics_name_bad_shapes_and_quantiles():
    pts, valid = torch.zeros(1, 4, 4, 3), torch.ones(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"^reconstruction_metrics: pred \(1, 4, 4, 3\), gt \(1, 4, 5, 3\) "
                                         r"must be \[S, H, W, 3\] and valid \(1, 4, 4\) \[S, H, W\]$"):
        reconstruction_metrics(pts, torch.zeros(1, 4, 5, 3), valid)
    with pytest.raises(ValueError, match=r"valid \(1, 4, 5\) \[S, H, W\]$"):
        reconstruction_metrics(pts, pts, torch.ones(1, 4, 5, dtype=torch.bool))
    for q in (1.0, -0.1):
        msg = rf"^reconstruction_metrics: conf_quantile={q} must be in \[0, 1\)$"
        with pytest.raises(ValueError, match=msg):
            reconstruction_metrics(pts, pts, valid, pred_conf=torch.ones(1, 4, 4), conf_quantile=q)


def test_confidence_filtering_needs_both_a_confidence_and_a_quantile():
    gt = _plane_grid(5, 5)
    valid = torch.ones(1, 5, 5, dtype=torch.bool)
    pred = gt.clone()
    pred[0, :, 0, 2] += 2.0  # the first column is off the plane and unconfident
    conf = torch.ones(1, 5, 5)
    conf[0, :, 0] = 0.1
    plain = reconstruction_metrics(pred, gt, valid, max_points=100)
    assert reconstruction_metrics(pred, gt, valid, pred_conf=conf, max_points=100) == plain
    assert reconstruction_metrics(pred, gt, valid, conf_quantile=0.5, max_points=100) == plain
    # quantile 0 keeps every pixel (the threshold is the least confidence)
    assert reconstruction_metrics(pred, gt, valid, pred_conf=conf, conf_quantile=0.0, max_points=100) == plain
    kept = reconstruction_metrics(pred, gt, valid, pred_conf=conf, conf_quantile=0.5, max_points=100)
    assert kept["acc"] < 1e-9 < plain["acc"]


def test_reconstruction_metrics_draw_every_subset_from_one_seeded_generator(monkeypatch):
    import harness.metrics.geometry as geometry

    caps, subsets = [], []
    real_cap, real_subsample = geometry._cap, geometry._subsample

    def cap(x, n, seed):
        caps.append((n, seed))
        return real_cap(x, n, seed)

    def subsample(x, max_points, gen):
        subsets.append((max_points, gen))
        return real_subsample(x, max_points, gen)

    monkeypatch.setattr(geometry, "_cap", cap)
    monkeypatch.setattr(geometry, "_subsample", subsample)
    gt = _plane_grid(5, 5)
    reconstruction_metrics(gt.clone(), gt, torch.ones(1, 5, 5, dtype=torch.bool),
                           pred_conf=torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(0)),
                           conf_quantile=0.2, max_points=10, seed=3)
    assert caps == [(1_000_000, 3)]  # the quantile sees at most a million confidences, seeded
    limits = [m for m, _ in subsets[:3]]
    gens = [g for _, g in subsets[:3]]
    assert limits == [200_000, 10, 10]  # the fit sample, then the predicted and the GT cloud
    assert all(isinstance(g, torch.Generator) for g in gens) and gens[0] is gens[1] is gens[2]


def test_reconstruction_metrics_default_to_20000_points_and_seed_0_and_pass_max_points_on():
    gt = _plane_grid(145, 145) * 0.01  # 21025 pixels, more than 20000
    gt[..., 2] = 0.05 * torch.sin(gt[..., 0] * 3) * torch.cos(gt[..., 1] * 2)
    valid = torch.ones(1, 145, 145, dtype=torch.bool)
    noisy = _noisy(gt, 0.002)
    explicit = reconstruction_metrics(noisy, gt, valid, max_points=20000, seed=0)
    assert reconstruction_metrics(noisy, gt, valid) == explicit
    # max_points above the pixel count: no subsampling anywhere, so an exact copy scores 0
    exact = reconstruction_metrics(gt.clone(), gt, valid, max_points=30000)
    assert exact["acc"] < 1e-12 and exact["comp"] < 1e-12


def test_cap_keeps_small_inputs_whole_and_draws_large_ones_with_the_seed():
    from harness.metrics.geometry import _cap

    x = torch.arange(100.0)
    assert torch.equal(_cap(x, 100, seed=4), x)  # at the cap: untouched, in order
    expected = x[torch.randperm(100, generator=torch.Generator().manual_seed(4))[:30]]
    assert torch.equal(_cap(x, 30, seed=4), expected)


# depth


def test_depth_metrics_by_hand_without_scaling():
    """Frame 0 has no valid pixel (skipped); frame 1: gt 0.5, 0.8, 4 and a 0 (ignored)."""
    gt = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.5, 0.8], [4.0, 0.0]]], dtype=torch.float64)
    pred = torch.tensor([[[9.0, 9.0], [9.0, 9.0]], [[0.6, 0.8], [5.0, 7.0]]], dtype=torch.float64)
    valid = torch.ones(2, 2, 2, dtype=torch.bool)
    valid[0] = False
    out = depth_metrics(pred, gt, valid, median_scaling=False)
    # |p - g| / g = 0.2, 0, 0.25; max(p/g, g/p) = 1.2, 1, 1.25 (1.25 is not < 1.25)
    assert out["abs_rel"] == pytest.approx(0.45 / 3, abs=1e-12)
    assert out["delta_1_25"] == pytest.approx(2 / 3, abs=1e-12)


def test_depth_metrics_by_hand_with_a_median_below_one():
    gt = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=torch.float64)
    pred = torch.tensor([[[0.1, 0.2, 0.4]]], dtype=torch.float64)  # x10 by the medians: 1, 2, 4
    out = depth_metrics(pred, gt, torch.ones(1, 1, 3, dtype=torch.bool))
    assert out["abs_rel"] == pytest.approx(1 / 9, abs=1e-12)
    assert out["delta_1_25"] == pytest.approx(2 / 3, abs=1e-12)


def test_depth_metrics_name_bad_shapes_and_no_valid_pixel():
    ok = torch.ones(1, 2, 2)
    msg = r"^depth_metrics: pred {}, gt {}, valid {} must all be \[S, H, W\]$"
    with pytest.raises(ValueError, match=msg.format(r"\(1, 2, 3\)", r"\(1, 2, 2\)", r"\(1, 2, 2\)")):
        depth_metrics(torch.ones(1, 2, 3), ok, ok.bool())
    with pytest.raises(ValueError, match=msg.format(r"\(1, 2, 2\)", r"\(1, 2, 2\)", r"\(1, 2, 3\)")):
        depth_metrics(ok, ok, torch.ones(1, 2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=msg.format(r"\(2, 2\)", r"\(2, 2\)", r"\(2, 2\)")):
        depth_metrics(ok[0], ok[0], ok[0].bool())
    with pytest.raises(ValueError, match=r"^depth_metrics: no valid pixels in any frame$"):
        depth_metrics(ok, ok, torch.zeros(1, 2, 2, dtype=torch.bool))


# poses


def test_rotation_angles_of_a_batch_about_z():
    rots = torch.stack([_axis_rotation(d, axis=2) for d in (10.0, 30.0, 120.0)])
    assert rotation_angle_deg(rots).tolist() == pytest.approx([10.0, 30.0, 120.0], abs=1e-9)


def test_rotation_angle_clamps_the_cosine_of_a_slightly_scaled_rotation():
    """(trace - 1) / 2 of 1.01 R leaves [-1, 1] near 0 and 180 degrees; the clamp holds it there."""
    for deg in (2.0, 178.0):
        sin = 1.01 * math.sin(math.radians(deg))
        cos = 1.0 if deg < 90 else -1.0
        expected = math.degrees(math.atan2(sin, cos))
        assert rotation_angle_deg(1.01 * _axis_rotation(deg)).item() == pytest.approx(expected, abs=1e-9)


def test_angle_between_batches_of_vectors_by_hand():
    from harness.metrics.geometry import _angle_between_deg

    x, y = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    a = torch.tensor([[x, x], [x, [0.0, 0.0, 0.0]]], dtype=torch.float64)  # [2, 2, 3]
    b = torch.tensor([[x, y], [[-1.0, 1.0, 0.0], y]], dtype=torch.float64)
    for ang in (_angle_between_deg(a, b), _angle_between_deg(b, a)):  # the zero vector on each side
        assert ang.shape == (2, 2)
        assert ang.reshape(-1).tolist() == pytest.approx([0.0, 90.0, 135.0, 90.0], abs=1e-12)
    # a length of exactly eps still has a direction
    tiny = torch.tensor([1e-12, 0.0, 0.0], dtype=torch.float64)
    one = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert _angle_between_deg(tiny, one).item() == 0.0 and _angle_between_deg(one, tiny).item() == 0.0


def test_homogeneous_rows_end_in_0_0_0_1():
    from harness.metrics.geometry import _homogeneous

    extr = torch.stack([_extr(_rotation(1), [1.0, 2.0, 3.0]), _extr(_rotation(2), [0.0, 0.0, 1.0])]).float()
    h = _homogeneous(extr)
    assert h.dtype == torch.float64 and h.shape == (2, 4, 4)
    assert torch.equal(h[:, 3], torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 2, dtype=torch.float64))
    assert torch.equal(h[:, :3], extr.double())


def test_relative_pose_errors_name_bad_shapes():
    msg = r"^pose errors: pred {} and gt {} must be \[S, 3, 4\]$"
    with pytest.raises(ValueError, match=msg.format(r"\(2, 3, 4\)", r"\(3, 3, 4\)")):
        relative_pose_errors(torch.zeros(2, 3, 4), torch.zeros(3, 3, 4))
    with pytest.raises(ValueError, match=msg.format(r"\(2, 3, 3\)", r"\(2, 3, 3\)")):
        relative_pose_errors(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match=msg.format(r"\(1, 2, 3, 4\)", r"\(1, 2, 3, 4\)")):
        relative_pose_errors(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))


def test_pose_metrics_of_two_frames_by_hand():
    """Frame 1 is rotated 10 degrees too far and moves 20.5 degrees off the true direction."""
    eye = torch.eye(3, dtype=torch.float64)
    gt = torch.stack([_extr(eye, [0.0, 0.0, 0.0]), _extr(eye, [1.0, 0.0, 0.0])])
    r1 = _axis_rotation(10.0)
    # relative translation of T_0 T_1^-1 is -R_1^T t_1: make it (cos 20.5, sin 20.5, 0)
    a = math.radians(20.5)
    t1 = -r1 @ torch.tensor([math.cos(a), math.sin(a), 0.0], dtype=torch.float64)
    pred = torch.stack([_extr(eye, [0.0, 0.0, 0.0]), torch.cat([r1, t1[:, None]], dim=1)])
    out = pose_metrics(pred, gt)
    assert out["rre_deg"] == pytest.approx(10.0, abs=1e-9)
    assert out["rte_deg"] == pytest.approx(20.5, abs=1e-9)
    assert out["auc_30"] == pytest.approx(10 / 30)  # max error 20.5: below thresholds 21..30
    assert out["ate"] == pytest.approx(0.0, abs=1e-9)  # two centres: a similarity fits them exactly
    with pytest.raises(ValueError, match=r"^pose_metrics: need at least 2 frames, got 1$"):
        pose_metrics(pred[:1], gt[:1])


def test_ate_is_the_rms_residual_of_the_similarity_fit_by_hand():
    """GT centres (+-1, 0, 0), (0, +-1, 0); predicted ones lifted by z = e, e, -e, -e.

    The fit keeps the rotation and translation and scales by 1 / (1 + e^2); each residual is
    then e / sqrt(1 + e^2): 0.6 for e = 0.75.
    """
    e = 0.75
    eye = torch.eye(3, dtype=torch.float64)
    gt_c = [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0]]
    pred_c = [[1.0, 0.0, e], [-1.0, 0.0, e], [0.0, 1.0, -e], [0.0, -1.0, -e]]
    gt = torch.stack([_extr(eye, c) for c in gt_c])
    pred = torch.stack([_extr(eye, c) for c in pred_c])
    out = pose_metrics(pred, gt)
    assert out["ate"] == pytest.approx(0.6, abs=1e-12)
    assert out["rre_deg"] == pytest.approx(0.0, abs=1e-9)
