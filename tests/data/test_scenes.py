"""Procedural multi-view scenes: shapes, determinism, camera conventions, path modes."""

from __future__ import annotations

import math

import pytest
import torch

from harness.data.scenes import Scene, SceneConfig, look_at, render_scene
from harness.params import describe

SMALL = dict(height=28, width=42)


@pytest.fixture(scope="module")
def video() -> Scene:
    return render_scene(SceneConfig(frames=4, **SMALL, seed=3))


def test_outputs_have_documented_shapes_and_dtypes(video: Scene):
    s, h, w = 4, SMALL["height"], SMALL["width"]
    assert video.images.shape == (s, 3, h, w) and video.images.dtype == torch.float32
    assert video.depth.shape == (s, h, w) and video.depth.dtype == torch.float32
    assert video.valid.shape == (s, h, w) and video.valid.dtype == torch.bool
    assert video.intrinsics.shape == (s, 3, 3)
    assert video.extrinsics.shape == (s, 3, 4)
    assert video.world_points.shape == (s, h, w, 3)
    assert len(video.names) == s


def test_images_lie_in_unit_range_and_are_not_flat(video: Scene):
    assert video.images.min() >= 0.0 and video.images.max() <= 1.0
    assert video.images.std() > 0.05


def test_depth_is_positive_wherever_valid_and_every_ray_hits_the_room(video: Scene):
    assert video.valid.all()
    assert (video.depth[video.valid] > 0).all()
    assert torch.isfinite(video.world_points).all()


def test_same_seed_renders_identical_frames():
    cfg = SceneConfig(frames=2, **SMALL, seed=11)
    a, b = render_scene(cfg), render_scene(cfg)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.depth, b.depth)
    assert torch.equal(a.extrinsics, b.extrinsics)


def test_different_seeds_render_different_scenes():
    a = render_scene(SceneConfig(frames=2, **SMALL, seed=1))
    b = render_scene(SceneConfig(frames=2, **SMALL, seed=2))
    assert (a.images - b.images).abs().mean() > 0.02
    assert not torch.allclose(a.extrinsics, b.extrinsics)


def test_video_path_prefix_does_not_depend_on_frame_count():
    short = render_scene(SceneConfig(frames=2, **SMALL, seed=5))
    long = render_scene(SceneConfig(frames=5, **SMALL, seed=5))
    assert torch.equal(short.images, long.images[:2])
    assert torch.equal(short.extrinsics, long.extrinsics[:2])


def test_intrinsics_put_the_principal_point_at_the_centre_with_the_configured_fov():
    cfg = SceneConfig(frames=1, height=28, width=56, fov_deg=90.0)
    k = render_scene(cfg).intrinsics[0]
    assert k[0, 2] == pytest.approx(28.0) and k[1, 2] == pytest.approx(14.0)
    assert k[0, 0] == pytest.approx(28.0 / math.tan(math.radians(45.0)))
    assert k[0, 0] == k[1, 1]


def test_extrinsics_hold_proper_rotations(video: Scene):
    rot = video.extrinsics[:, :, :3]
    eye = torch.eye(3).expand_as(rot)
    assert torch.allclose(rot @ rot.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.det(rot), torch.ones(4), atol=1e-5)


def test_projecting_world_points_reproduces_the_pixel_grid_and_depth(video: Scene):
    rot, t = video.extrinsics[:, :, :3].double(), video.extrinsics[:, :, 3].double()
    cam = torch.einsum("sij,shwj->shwi", rot, video.world_points.double()) + t[:, None, None, :]
    k = video.intrinsics.double()
    uvw = torch.einsum("sij,shwj->shwi", k, cam)
    u, v = uvw[..., 0] / uvw[..., 2], uvw[..., 1] / uvw[..., 2]
    h, w = video.depth.shape[1:]
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    assert torch.allclose(u, cols.expand_as(u), atol=2e-3)
    assert torch.allclose(v, rows.expand_as(v), atol=2e-3)
    assert torch.allclose(cam[..., 2], video.depth.double(), rtol=1e-5, atol=1e-5)


def test_look_at_uses_opencv_axes():
    extr = look_at(torch.tensor([0.0, 1.0, -2.0]), torch.tensor([0.0, 1.0, 0.0]))
    rot, t = extr[:, :3], extr[:, 3]
    ahead = rot @ torch.tensor([0.0, 1.0, 1.0]) + t  # a point in front of the camera
    above = rot @ torch.tensor([0.0, 2.0, 0.0]) + t  # a point higher up in the world
    assert ahead[2] > 0
    assert above[1] < 0  # higher in the world = smaller image row (y down)


def test_consecutive_video_frames_overlap_more_than_sparse_frames():
    cfg = dict(frames=4, height=42, width=56, seed=0)
    vid = render_scene(SceneConfig(mode="video", **cfg)).images
    spa = render_scene(SceneConfig(mode="sparse", **cfg)).images
    diff_video = (vid[1:] - vid[:-1]).abs().mean()
    diff_sparse = (spa[1:] - spa[:-1]).abs().mean()
    assert diff_video < 0.6 * diff_sparse


def test_sparse_views_are_widely_separated():
    scene = render_scene(SceneConfig(frames=4, **SMALL, mode="sparse"))
    rot = scene.extrinsics[:, :, :3]
    rel = rot[1:] @ rot[:-1].transpose(1, 2)
    angles = torch.rad2deg(torch.acos(((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))
    assert (angles > 30).all()


def test_square_vggt_size_renders():
    scene = render_scene(SceneConfig(frames=1, height=518, width=518, objects=2))
    assert scene.images.shape == (1, 3, 518, 518)


def test_scene_without_objects_is_just_the_room():
    scene = render_scene(SceneConfig(frames=1, **SMALL, objects=0))
    assert scene.valid.all() and scene.depth.min() > 0.5


def test_unknown_mode_is_rejected_with_the_allowed_values():
    with pytest.raises(ValueError, match="'video' or 'sparse'"):
        render_scene(SceneConfig(frames=1, **SMALL, mode="orbit"))


def test_every_config_field_is_documented():
    infos = {p.name: p for p in describe(SceneConfig)}
    assert set(infos) == {"frames", "height", "width", "seed", "mode", "objects", "fov_deg"}
    assert all(p.help for p in infos.values())
    assert infos["mode"].choices == ("video", "sparse")
