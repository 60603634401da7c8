"""Fidelity metrics (test run vs reference run) on hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from harness.metrics.fidelity import (
    cosine_similarity,
    depth_rel_error,
    kl_divergence,
    pointmap_rel_error,
    pose_difference,
    relative_error,
    sqnr_db,
    top1_agreement,
)


def _extrinsics(n: int = 3) -> torch.Tensor:
    extr = torch.zeros(n, 3, 4, dtype=torch.float64)
    extr[:, :, :3] = torch.eye(3)
    extr[:, 0, 3] = torch.arange(n, dtype=torch.float64)
    return extr


def test_relative_error_is_mean_abs_difference_over_mean_abs_reference():
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0])
    assert relative_error(a, b) == pytest.approx(1 / 7)
    assert relative_error(a, b, mask=torch.tensor([True, True, False])) == 0.0
    assert relative_error(b, b) == 0.0


def test_depth_rel_error_divides_by_the_reference_depth():
    a, b = torch.tensor([[[2.0, 4.0]]]), torch.tensor([[[1.0, 4.0]]])
    assert depth_rel_error(a, b) == pytest.approx(0.5)
    assert depth_rel_error(a, b, valid=torch.tensor([[[False, True]]])) == 0.0


def test_depth_rel_error_ignores_pixels_without_reference_depth():
    a, b = torch.tensor([[[2.0, 5.0]]]), torch.tensor([[[1.0, 0.0]]])
    assert depth_rel_error(a, b) == pytest.approx(1.0)


def test_pointmap_rel_error_does_not_depend_on_the_world_origin():
    g = torch.Generator().manual_seed(0)
    b = torch.randn(2, 4, 5, 3, generator=g, dtype=torch.float64)
    a = b + 0.1 * torch.randn(b.shape, generator=g, dtype=torch.float64)
    shift = torch.tensor([100.0, -50.0, 20.0], dtype=torch.float64)
    assert pointmap_rel_error(a, b) == pytest.approx(pointmap_rel_error(a + shift, b + shift), rel=1e-6)
    assert pointmap_rel_error(b, b) == 0.0


def test_pointmap_rel_error_is_distance_over_spread():
    b = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    a = b + torch.tensor([0.0, 0.5, 0.0])
    assert pointmap_rel_error(a, b) == pytest.approx(0.5)


def test_pose_difference_of_identical_poses_is_zero():
    assert pose_difference(_extrinsics(), _extrinsics()) == {"rot_deg": 0.0, "trans_rel": 0.0}


def test_pose_difference_averages_the_per_frame_rotation_angle():
    a, b = _extrinsics(), _extrinsics()
    c, s = math.cos(math.radians(9.0)), math.sin(math.radians(9.0))
    a[1, :, :3] = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    a[1, :, 3] = a[1, :, :3] @ b[1, :, :3].T @ b[1, :, 3]  # same camera centre, rotated
    out = pose_difference(a, b)
    assert out["rot_deg"] == pytest.approx(3.0) and out["trans_rel"] == pytest.approx(0.0, abs=1e-12)


def test_pose_difference_translation_is_relative_to_the_trajectory_spread():
    a, b = _extrinsics(), _extrinsics()  # centres at x = 0, -1, -2: spread 2/3
    a[:, 1, 3] += 0.5  # every centre moves 0.5
    assert pose_difference(a, b)["trans_rel"] == pytest.approx(0.5 / (2 / 3))


def test_cosine_similarity_on_hand_vectors():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    assert cosine_similarity(a, b) == pytest.approx((1.0 + 0.0 - 1.0 + 1.0) / 4)


def test_cosine_similarity_along_a_chosen_dim():
    a = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # along dim 0 the columns are (1, 0) vs (1, 0) and (1, 0) vs (1, 1)
    assert cosine_similarity(a, b, dim=0) == pytest.approx((1.0 + 1 / math.sqrt(2)) / 2)


def test_sqnr_on_a_hand_example_and_at_equality():
    ref = torch.tensor([3.0, 4.0])
    assert sqnr_db(ref, torch.tensor([3.0, 3.0])) == pytest.approx(10 * math.log10(25.0))
    assert sqnr_db(ref, ref.clone()) == math.inf


def test_sqnr_drops_by_20_db_per_tenfold_error():
    ref = torch.tensor([1.0, -2.0, 3.0])
    noise = torch.tensor([0.1, 0.2, -0.1])
    assert sqnr_db(ref, ref + noise) - sqnr_db(ref, ref + 10 * noise) == pytest.approx(20.0)


def test_kl_divergence_on_a_two_class_example():
    ref = torch.tensor([[0.0, 0.0]])  # p = (1/2, 1/2)
    test = torch.tensor([[0.0, math.log(3.0)]])  # q = (1/4, 3/4)
    assert kl_divergence(ref, test) == pytest.approx(0.5 * math.log(4 / 3))
    assert kl_divergence(ref, ref) == 0.0


def test_kl_divergence_averages_over_the_batch():
    ref = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    test = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]])
    assert kl_divergence(ref, test) == pytest.approx(0.25 * math.log(4 / 3))


def test_top1_agreement_counts_matching_argmax():
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    test = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.9, 0.1]])
    assert top1_agreement(ref, test) == pytest.approx(2 / 3)


def test_mismatched_shapes_are_reported_with_both_shapes():
    with pytest.raises(ValueError, match=r"sqnr_db: shapes differ, \(2,\) vs \(3,\)"):
        sqnr_db(torch.zeros(2), torch.zeros(3))
