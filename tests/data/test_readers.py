"""Dataset readers (7-Scenes, NRGBD layouts) and VGGT input sizing, on tiny folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data.readers import (
    Frames,
    model_input_hw,
    read_7scenes,
    read_nrgbd,
    read_scannet,
    to_model_input,
)
from harness.data.scenes import SceneConfig, render_scene

W, H = 32, 24
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _pose(rng: np.random.Generator) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = _rotation(rng)
    pose[:3, 3] = rng.normal(size=3)
    return pose


def _colour(i: int) -> np.ndarray:
    rng = np.random.default_rng(100 + i)
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _depth_mm(i: int) -> np.ndarray:
    depth = np.full((H, W), 1000 + 10 * i, dtype=np.uint16)
    depth[0, 0] = 65535  # 7-Scenes "no measurement"
    depth[0, 1] = 0
    return depth


def _save_depth(path: Path, depth: np.ndarray) -> None:
    Image.fromarray(depth).save(path)


@pytest.fixture
def seven_scenes(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    seq = tmp_path / "chess" / "seq-01"
    seq.mkdir(parents=True)
    (tmp_path / "fire" / "seq-02").mkdir(parents=True)
    poses = []
    for i in range(5):
        stem = f"frame-{i:06d}"
        Image.fromarray(_colour(i)).save(seq / f"{stem}.color.png")
        _save_depth(seq / f"{stem}.depth.png", _depth_mm(i))
        pose = _pose(rng)
        np.savetxt(seq / f"{stem}.pose.txt", pose)
        poses.append(pose)
    return tmp_path, poses


@pytest.fixture
def nrgbd(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    rng = np.random.default_rng(1)
    scene = tmp_path / "kitchen"
    (scene / "images").mkdir(parents=True)
    (scene / "depth").mkdir()
    poses = []
    lines = []
    for i in range(12):
        Image.fromarray(_colour(i)).save(scene / "images" / f"img{i}.png")
        depth = _depth_mm(i)
        depth[0, 0] = 0
        _save_depth(scene / "depth" / f"depth{i}.png", depth)
        pose = np.full((4, 4), np.nan) if i == 2 else _pose(rng)
        poses.append(pose)
        lines += [" ".join("nan" if np.isnan(v) else f"{v:.10f}" for v in row) for row in pose]
    (scene / "poses.txt").write_text("\n".join(lines) + "\n")
    (scene / "focal.txt").write_text("554.25\n")
    return tmp_path, poses


def _inverse_3x4(pose: np.ndarray) -> np.ndarray:
    return np.linalg.inv(pose)[:3]


# --------------------------------------------------------------------------- 7-Scenes


def test_7scenes_reads_images_depth_and_inverted_poses(seven_scenes):
    root, poses = seven_scenes
    frames = read_7scenes(root, "chess", stride=1)
    assert isinstance(frames, Frames)
    assert frames.images.shape == (5, 3, H, W) and frames.depth.shape == (5, H, W)
    assert torch.allclose(frames.images[3], torch.from_numpy(_colour(3)).permute(2, 0, 1).float() / 255)
    assert frames.depth[2, 5, 5].item() == pytest.approx(1.02)
    for i in range(5):
        assert np.allclose(frames.extrinsics[i].numpy(), _inverse_3x4(poses[i]), atol=1e-5)
    assert frames.names[0] == "frame-000000"


def test_7scenes_marks_65535_and_0_as_invalid(seven_scenes):
    root, _ = seven_scenes
    frames = read_7scenes(root, "chess", stride=1)
    assert not frames.valid[:, 0, 0].any() and not frames.valid[:, 0, 1].any()
    assert frames.depth[0, 0, 0] == 0 and frames.valid[:, 5, 5].all()


def test_7scenes_intrinsics_are_the_standard_values_scaled_to_the_image(seven_scenes):
    root, _ = seven_scenes
    k = read_7scenes(root, "chess", stride=1).intrinsics[0]
    assert k[0, 0].item() == pytest.approx(585.0 * W / 640)
    assert k[1, 1].item() == pytest.approx(585.0 * H / 480)
    assert (k[0, 2].item(), k[1, 2].item()) == (W / 2, H / 2)


def test_7scenes_stride_and_max_frames_pick_every_nth_frame(seven_scenes):
    root, _ = seven_scenes
    assert read_7scenes(root, "chess", stride=2).names == ("frame-000000", "frame-000002", "frame-000004")
    assert read_7scenes(root, "chess", stride=2, max_frames=2).names == ("frame-000000", "frame-000002")


def test_7scenes_missing_scene_lists_the_scenes_found(seven_scenes):
    root, _ = seven_scenes
    with pytest.raises(FileNotFoundError, match=r"'office'.*found in .*chess, fire"):
        read_7scenes(root, "office")


def test_7scenes_missing_sequence_lists_the_sequences_found(seven_scenes):
    root, _ = seven_scenes
    with pytest.raises(FileNotFoundError, match=r"seq-03.*seq-01"):
        read_7scenes(root, "chess", seq="seq-03")


def test_7scenes_empty_sequence_names_the_glob_pattern(seven_scenes):
    root, _ = seven_scenes
    with pytest.raises(FileNotFoundError, match=r"frame-\*\.color\.png"):
        read_7scenes(root, "fire", seq="seq-02")


def test_missing_root_is_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="root not found.*nowhere"):
        read_7scenes(tmp_path / "nowhere", "chess")


# --------------------------------------------------------------------------- NRGBD


def test_nrgbd_converts_opengl_poses_to_opencv_extrinsics(nrgbd):
    root, poses = nrgbd
    frames = read_nrgbd(root, "kitchen", stride=1)
    expected = _inverse_3x4(poses[0] @ GL_TO_CV)
    assert np.allclose(frames.extrinsics[0].numpy(), expected, atol=1e-5)


def test_nrgbd_points_in_front_of_an_opengl_camera_get_positive_depth(nrgbd):
    root, poses = nrgbd
    frames = read_nrgbd(root, "kitchen", stride=1, max_frames=1)
    ahead_world = poses[0] @ np.array([0.0, 0.5, -2.0, 1.0])  # OpenGL: looking down -z, y up
    cam = frames.extrinsics[0].double().numpy() @ ahead_world
    assert cam[2] == pytest.approx(2.0, abs=1e-5)
    assert cam[1] == pytest.approx(-0.5, abs=1e-5)  # up in the image = negative y in OpenCV


def test_nrgbd_skips_frames_with_nan_poses_and_sorts_numerically(nrgbd):
    root, _ = nrgbd
    names = read_nrgbd(root, "kitchen", stride=1).names
    assert names == tuple(f"img{i}" for i in range(12) if i != 2)
    assert read_nrgbd(root, "kitchen", stride=5).names == ("img0", "img5", "img10")
    assert read_nrgbd(root, "kitchen", stride=1, max_frames=3).names == ("img0", "img1", "img3")


def test_nrgbd_reads_focal_depth_and_validity(nrgbd):
    root, _ = nrgbd
    frames = read_nrgbd(root, "kitchen", stride=1, max_frames=2)
    k = frames.intrinsics[1]
    assert (k[0, 0].item(), k[1, 1].item()) == (pytest.approx(554.25), pytest.approx(554.25))
    assert (k[0, 2].item(), k[1, 2].item()) == (W / 2, H / 2)
    assert frames.depth[1, 3, 3].item() == pytest.approx(1.01)
    assert not frames.valid[:, 0, 0].any()


def test_nrgbd_missing_scene_lists_the_scenes_found(nrgbd):
    root, _ = nrgbd
    with pytest.raises(FileNotFoundError, match=r"'breakfast_room'.*kitchen"):
        read_nrgbd(root, "breakfast_room")


def test_nrgbd_missing_poses_file_is_named(nrgbd):
    root, _ = nrgbd
    (root / "kitchen" / "poses.txt").unlink()
    with pytest.raises(FileNotFoundError, match="poses.txt"):
        read_nrgbd(root, "kitchen")


# --------------------------------------------------------------------------- model input sizing


@pytest.mark.parametrize(
    ("hw", "mode", "expected"),
    [((480, 640), "crop", (392, 518)), ((640, 480), "crop", (518, 518)), ((518, 518), "crop", (518, 518)),
     ((480, 640), "pad", (518, 518)), ((1080, 1920), "crop", (294, 518))],
)
def test_model_input_size_follows_vggt_rule(hw, mode, expected):
    assert model_input_hw(*hw, mode=mode) == expected


def test_to_model_input_resizes_images_depth_and_intrinsics_together(seven_scenes):
    root, _ = seven_scenes
    frames = read_7scenes(root, "chess", stride=1)
    out = to_model_input(frames, target_w=56)
    assert out.images.shape == (5, 3, 42, 56)
    assert out.depth.shape == (5, 42, 56) and out.valid.shape == (5, 42, 56)
    assert out.intrinsics[0, 0, 0].item() == pytest.approx(frames.intrinsics[0, 0, 0].item() * 56 / W)
    assert out.intrinsics[0, 1, 1].item() == pytest.approx(frames.intrinsics[0, 1, 1].item() * 42 / H)
    assert out.depth[0, 20, 20].item() == pytest.approx(1.0)
    assert torch.equal(out.extrinsics, frames.extrinsics)
    assert out.images.min() >= 0 and out.images.max() <= 1


def _pixel_error(frames: Frames, points: torch.Tensor) -> torch.Tensor:
    """Largest distance between each pixel and the projection of its world point."""
    rot, t = frames.extrinsics[:, :, :3].double(), frames.extrinsics[:, :, 3].double()
    cam = torch.einsum("sij,shwj->shwi", rot, points.double()) + t[:, None, None]
    uvw = torch.einsum("sij,shwj->shwi", frames.intrinsics.double(), cam)
    u, v = uvw[..., 0] / uvw[..., 2], uvw[..., 1] / uvw[..., 2]
    h, w = points.shape[1:3]
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    return torch.maximum((u - cols).abs(), (v - rows).abs()).amax()


def test_to_model_input_crop_keeps_world_points_on_their_pixels():
    scene = render_scene(SceneConfig(frames=2, height=84, width=56))  # portrait: gets cropped
    out = to_model_input(scene, target_w=28, mode="crop")
    assert out.images.shape == (2, 3, 28, 28) and out.world_points.shape == (2, 28, 28, 3)
    assert _pixel_error(out, out.world_points) <= 0.5 * 28 / 56 + 1e-3


def test_to_model_input_pad_fills_white_and_invalid():
    scene = render_scene(SceneConfig(frames=1, height=28, width=56))
    out = to_model_input(scene, target_w=42, mode="pad")
    assert out.images.shape == (1, 3, 42, 42)
    assert (out.images[:, :, 0] == 1.0).all() and not out.valid[:, 0].any() and (out.depth[:, 0] == 0).all()
    rows = out.valid[0].any(dim=1)
    inner = out.world_points[:, rows]
    sub = Frames(out.images[:, :, rows], out.depth[:, rows], out.valid[:, rows], out.intrinsics.clone(),
                 out.extrinsics)
    sub.intrinsics[:, 1, 2] -= int(rows.nonzero()[0])
    assert _pixel_error(sub, inner) <= 0.5 * 42 / 56 + 1e-3


def test_to_model_input_rejects_unknown_mode_and_bad_width(seven_scenes):
    root, _ = seven_scenes
    frames = read_7scenes(root, "chess", stride=1, max_frames=1)
    with pytest.raises(ValueError, match="'crop', 'pad'"):
        to_model_input(frames, mode="stretch")
    with pytest.raises(ValueError, match="multiple of 14"):
        to_model_input(frames, target_w=30)


# --------------------------------------------------------------------------- ScanNet

SCANNET_COLOUR_WH = (72, 48)  # colour larger than depth (W x H), with other x and y ratios
SCANNET_FRAMES = 12
SCANNET_INF_FRAME = 3
K_DEPTH = np.array([[30.0, 0, 15.5, 0], [0, 29.0, 11.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
K_COLOUR = np.array([[70.0, 0, 35.0, 0], [0, 66.0, 23.0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def _scannet_colour(i: int) -> np.ndarray:
    """Left half red, right half blue, green level encoding the frame number."""
    cw, ch = SCANNET_COLOUR_WH
    img = np.zeros((ch, cw, 3), dtype=np.uint8)
    img[:, : cw // 2, 0] = 255
    img[:, cw // 2 :, 2] = 255
    img[..., 1] = 10 * i
    return img


@pytest.fixture
def scannet(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    rng = np.random.default_rng(2)
    scene = tmp_path / "scene0000_00"
    for sub in ("color", "depth", "pose", "intrinsic"):
        (scene / sub).mkdir(parents=True)
    (tmp_path / "scene0001_00").mkdir()
    np.savetxt(scene / "intrinsic" / "intrinsic_depth.txt", K_DEPTH)
    np.savetxt(scene / "intrinsic" / "intrinsic_color.txt", K_COLOUR)
    poses = []
    for i in range(SCANNET_FRAMES):
        Image.fromarray(_scannet_colour(i)).save(scene / "color" / f"{i}.jpg", quality=95)
        depth = np.full((H, W), 1000 + 10 * i, dtype=np.uint16)
        depth[0, 0] = 0
        _save_depth(scene / "depth" / f"{i}.png", depth)
        pose = np.full((4, 4), -np.inf) if i == SCANNET_INF_FRAME else _pose(rng)
        np.savetxt(scene / "pose" / f"{i}.txt", pose)
        poses.append(pose)
    return tmp_path, poses


def test_scannet_resizes_colour_to_the_depth_resolution(scannet):
    root, _ = scannet
    frames = read_scannet(root, "scene0000_00", stride=1, max_frames=3)
    assert frames.images.shape == (3, 3, H, W) and frames.depth.shape == (3, H, W)
    left, right = frames.images[2, :, :, :4], frames.images[2, :, :, -4:]
    assert torch.allclose(left.mean(dim=(1, 2)), torch.tensor([1.0, 20 / 255, 0.0]), atol=0.05)
    assert torch.allclose(right.mean(dim=(1, 2)), torch.tensor([0.0, 20 / 255, 1.0]), atol=0.05)


def test_scannet_inverts_camera_to_world_poses_and_reads_millimetre_depth(scannet):
    root, poses = scannet
    frames = read_scannet(root, "scene0000_00", stride=1)
    for name, extr in zip(frames.names, frames.extrinsics):
        assert np.allclose(extr.numpy(), _inverse_3x4(poses[int(name)]), atol=1e-5)
    assert frames.depth[1, 5, 5].item() == pytest.approx(1.01)
    assert frames.depth[4, 5, 5].item() == pytest.approx(1.05)  # frame 5 (frame 3 skipped)
    assert not frames.valid[:, 0, 0].any() and frames.valid[:, 5, 5].all()
    assert frames.depth[0, 0, 0] == 0


def test_scannet_skips_inf_poses_with_a_logged_count_and_sorts_numerically(scannet, caplog):
    root, _ = scannet
    with caplog.at_level("WARNING", logger="harness.data.readers"):
        names = read_scannet(root, "scene0000_00", stride=1).names
    assert names == tuple(str(i) for i in range(SCANNET_FRAMES) if i != SCANNET_INF_FRAME)
    assert "skipped 1 selected frame" in caplog.text


def test_scannet_stride_counts_frame_numbers_and_max_frames_counts_kept_frames(scannet):
    root, _ = scannet
    assert read_scannet(root, "scene0000_00", stride=5).names == ("0", "5", "10")
    assert read_scannet(root, "scene0000_00", stride=3).names == ("0", "6", "9")  # 3 has an inf pose
    assert read_scannet(root, "scene0000_00", stride=3, max_frames=2).names == ("0", "6")


def test_scannet_uses_the_depth_intrinsics(scannet):
    root, _ = scannet
    k = read_scannet(root, "scene0000_00", stride=1, max_frames=2).intrinsics
    assert torch.allclose(k, torch.from_numpy(K_DEPTH[:3, :3]).float().expand(2, 3, 3))


def test_scannet_without_depth_intrinsics_scales_the_colour_ones_to_the_depth_size(scannet):
    root, _ = scannet
    (root / "scene0000_00" / "intrinsic" / "intrinsic_depth.txt").unlink()
    k = read_scannet(root, "scene0000_00", stride=1, max_frames=1).intrinsics[0]
    sx, sy = W / SCANNET_COLOUR_WH[0], H / SCANNET_COLOUR_WH[1]
    assert k[0, 0].item() == pytest.approx(70.0 * sx) and k[1, 1].item() == pytest.approx(66.0 * sy)
    assert k[0, 2].item() == pytest.approx(sx * (35.0 + 0.5) - 0.5)  # pixel-centre convention
    assert k[1, 2].item() == pytest.approx(sy * (23.0 + 0.5) - 0.5)


def test_scannet_missing_scene_lists_the_scenes_found(scannet):
    root, _ = scannet
    with pytest.raises(FileNotFoundError, match=r"'scene0002_00'.*found in .*scene0000_00, scene0001_00"):
        read_scannet(root, "scene0002_00")
    with pytest.raises(FileNotFoundError, match="root not found.*nowhere"):
        read_scannet(root / "nowhere", "scene0000_00")


def test_scannet_missing_pose_folder_is_named(scannet):
    root, _ = scannet
    shutil.rmtree(root / "scene0000_00" / "pose")
    with pytest.raises(FileNotFoundError, match=r"'pose/' of scene 'scene0000_00'.*color, depth, intrinsic"):
        read_scannet(root, "scene0000_00")


def test_vggt_workload_reads_scannet_and_checks_its_paths(scannet):
    from harness.workloads.vggt import VGGTParams, VGGTWorkload, load_inputs

    root, _ = scannet
    wl = VGGTWorkload()
    ok = VGGTParams(data="scannet", data_path=str(root), data_scene="scene0000_00", stride=2, frames=2,
                    width=42)
    assert wl.check_paths(ok) == []
    (bad,) = wl.check_paths(VGGTParams(data="scannet", data_path=str(root), data_scene="scene0009_00"))
    assert "scene0009_00" in bad and "scene0000_00, scene0001_00" in bad
    (missing,) = wl.check_paths(VGGTParams(data="scannet", data_path=str(root / "x"), data_scene="s"))
    assert "does not exist" in missing
    inputs = load_inputs(ok, seed=0, device="cpu")
    assert inputs.images.shape == (2, 3, 28, 42)  # 32x24 depth resolution -> width 42, height 28
    assert inputs.frames.names == ("0", "2")
