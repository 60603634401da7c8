"""Fidelity metrics (test run vs reference run) on hand-computed examples."""

from __future__ import annotations

import math
import re

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


# ---------------------------------------------------------------- edges and shapes the examples above miss
# (found by mutation testing: docs/guide/mutation.md)


def _rot_z(deg: float) -> torch.Tensor:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


@pytest.mark.parametrize("metric, a, b", [
    (relative_error, torch.zeros(2), torch.zeros(3)),
    (depth_rel_error, torch.ones(1, 2, 2), torch.ones(1, 2, 3)),
    (pointmap_rel_error, torch.ones(2, 3), torch.ones(3, 3)),
    (pose_difference, torch.zeros(2, 3, 4), torch.zeros(3, 3, 4)),
    (cosine_similarity, torch.ones(2, 4), torch.ones(2, 5)),
    (kl_divergence, torch.zeros(2, 4), torch.zeros(2, 5)),
    (top1_agreement, torch.zeros(2, 4), torch.zeros(2, 5)),
])
def test_every_metric_names_itself_and_both_shapes_when_the_shapes_differ(metric, a, b):
    expected = rf"^{metric.__name__}: shapes differ, {re.escape(str(tuple(a.shape)))} vs " \
               rf"{re.escape(str(tuple(b.shape)))}$"
    with pytest.raises(ValueError, match=expected):
        metric(a, b)


def test_relative_error_of_exactly_one_is_one():
    # the ratio's numerator is exactly 1.0 here: a shortcut for a zero numerator must not catch it
    assert relative_error(torch.tensor([2.0]), torch.tensor([1.0])) == 1.0


def test_relative_error_against_an_all_zero_reference_is_infinite():
    assert relative_error(torch.tensor([1.0, 0.0]), torch.zeros(2)) == math.inf
    assert pointmap_rel_error(torch.ones(2, 3), torch.zeros(2, 3)) == math.inf


def test_depth_rel_error_divides_by_a_reference_depth_other_than_one():
    a, b = torch.tensor([[[3.0, 4.0]]]), torch.tensor([[[2.0, 8.0]]])
    assert depth_rel_error(a, b) == pytest.approx((0.5 + 0.5) / 2)


def test_depth_rel_error_without_any_positive_reference_depth_says_so():
    with pytest.raises(ValueError, match="^depth_rel_error: no pixel with a positive reference depth$"):
        depth_rel_error(torch.ones(1, 1, 2), torch.zeros(1, 1, 2))


def test_pointmap_rel_error_ignores_the_points_marked_invalid():
    b = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    a = b + torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 100.0]])
    valid = torch.tensor([True, True, False])
    assert pointmap_rel_error(a, b, valid=valid) == pytest.approx(0.5)
    assert pointmap_rel_error(a.reshape(1, 3, 3), b.reshape(1, 3, 3), valid=valid.reshape(1, 3)) == \
        pytest.approx(0.5)


def test_pointmap_rel_error_refuses_points_that_are_not_3d_naming_the_shape():
    with pytest.raises(ValueError, match=r"^pointmap_rel_error: last dim must be 3, got \(4, 2\)$"):
        pointmap_rel_error(torch.ones(4, 2), torch.ones(4, 2))


def test_pose_difference_refuses_extrinsics_that_are_not_3_by_4_naming_the_shape():
    for shape in ((2, 3, 3), (3, 4)):
        with pytest.raises(ValueError, match=rf"^pose_difference: extrinsics must be \[S, 3, 4\], got "
                                             rf"{re.escape(str(shape))}$"):
            pose_difference(torch.zeros(shape), torch.zeros(shape))


def test_pose_difference_measures_the_relative_rotation_of_two_rotated_cameras():
    a, b = _extrinsics(1), _extrinsics(1)
    a[0, :, :3], b[0, :, :3] = _rot_z(30.0), _rot_z(20.0)
    assert pose_difference(a, b)["rot_deg"] == pytest.approx(10.0)


def test_pose_difference_of_a_single_frame_is_the_plain_centre_distance():
    a, b = _extrinsics(1), _extrinsics(1)  # one frame: the trajectory has no spread
    a[0, 1, 3] = 0.25
    assert pose_difference(a, b) == {"rot_deg": 0.0, "trans_rel": pytest.approx(0.25)}


def test_cosine_similarity_of_a_zero_vector_and_a_non_zero_one_is_zero():
    a, b = torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert cosine_similarity(a, b) == 0.0


def test_sqnr_of_a_unit_energy_reference():
    # ||ref||^2 is exactly 1 here: only a zero reference may give -inf
    assert sqnr_db(torch.tensor([1.0]), torch.tensor([0.5])) == pytest.approx(10 * math.log10(4.0))


def test_sqnr_of_a_zero_reference_and_a_non_zero_test_is_minus_infinity():
    assert sqnr_db(torch.zeros(2), torch.tensor([0.0, 1.0])) == -math.inf


def _logits_3d() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)  # [B, T, K]


def test_kl_divergence_is_over_the_last_dim_and_averaged_over_every_other():
    ref, test = _logits_3d()
    rows = []
    for r, t in zip(ref.reshape(-1, 4).double().tolist(), test.reshape(-1, 4).double().tolist()):
        zr, zt = sum(math.exp(v) for v in r), sum(math.exp(v) for v in t)
        p, q = [math.exp(v) / zr for v in r], [math.exp(v) / zt for v in t]
        rows.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))
    assert kl_divergence(ref, test) == pytest.approx(sum(rows) / len(rows), rel=1e-9)


def test_top1_agreement_compares_the_argmax_of_the_last_dim_of_every_row():
    ref, test = _logits_3d()
    rows = zip(ref.reshape(-1, 4).tolist(), test.reshape(-1, 4).tolist())
    agree = [max(range(4), key=r.__getitem__) == max(range(4), key=t.__getitem__) for r, t in rows]
    assert 0 < sum(agree) < len(agree)  # the example has rows that agree and rows that do not
    assert top1_agreement(ref, test) == pytest.approx(sum(agree) / len(agree))
