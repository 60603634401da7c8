"""Readers for multi-view RGB-D datasets with ground-truth poses, and VGGT input sizing.

Every reader returns :class:`Frames`: images, metric depth, a validity mask, pinhole
intrinsics and OpenCV camera-from-world extrinsics (``x_cam = R x_world + t``; camera
axes x right, y down, z forward). Pixel coordinates follow the convention used by
:func:`harness.metrics.geometry.pointmap_from_depth`: pixel ``(row i, column j)`` sits at
``(u, v) = (j, i)``.

Layouts (paths relative to the dataset root):

- 7-Scenes: ``<scene>/seq-XX/frame-000000.color.png`` (RGB), ``frame-000000.depth.png``
  (uint16 millimetres, 65535 and 0 = invalid), ``frame-000000.pose.txt`` (4x4
  camera-to-world, OpenCV axes).
- NRGBD (Neural RGB-D synthetic scenes): ``<scene>/images/img{i}.png``,
  ``<scene>/depth/depth{i}.png`` (uint16 millimetres, 0 = invalid), ``<scene>/poses.txt``
  (one 4x4 camera-to-world matrix per frame, 4 lines each, rows of ``nan`` for frames
  without a pose; OpenGL camera axes), ``<scene>/focal.txt`` (one focal length in pixels).
- ScanNet (SensReader export): ``<scene>/color/{i}.jpg`` (1296x968), ``<scene>/depth/{i}.png``
  (uint16 millimetres, 640x480, 0 = invalid), ``<scene>/pose/{i}.txt`` (4x4 camera-to-world,
  OpenCV axes; some are ``-inf``/``nan``), ``<scene>/intrinsic/intrinsic_depth.txt`` and
  ``intrinsic_color.txt`` (4x4).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

log = logging.getLogger(__name__)

#: Commonly used 7-Scenes intrinsics for the 640x480 Kinect images (the dataset's documented
#: depth-camera values; colour and depth are treated as registered, as most evaluations do).
SEVEN_SCENES_FOCAL_PX = 585.0
SEVEN_SCENES_SIZE_WH = (640, 480)

#: Millimetre depth PNGs: value that marks a missing measurement in 7-Scenes.
_DEPTH_INVALID_U16 = 65535
_MM_PER_M = 1000.0

#: VGGT's patch size: model inputs must have H and W divisible by it.
PATCH_PX = 14

#: OpenGL camera axes (x right, y up, z backward) to OpenCV (x right, y down, z forward).
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


@dataclass
class Frames:
    """A set of posed RGB-D frames.

    images: [S, 3, H, W] float32 in [0, 1]
    depth: [S, H, W] float32 metres (z-depth in the camera frame; 0 where invalid)
    valid: [S, H, W] bool
    intrinsics: [S, 3, 3] float32 pinhole K
    extrinsics: [S, 3, 4] float32 OpenCV camera-from-world [R | t]
    names: one label per frame (source file stem), may be empty
    """

    images: torch.Tensor
    depth: torch.Tensor
    valid: torch.Tensor
    intrinsics: torch.Tensor
    extrinsics: torch.Tensor
    names: tuple[str, ...] = ()

    @property
    def num_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])


# --------------------------------------------------------------------------- file helpers


def _require_dir(path: Path, what: str, parent_listing: Path | None = None) -> None:
    if path.is_dir():
        return
    msg = f"{what} not found: '{path}'"
    if parent_listing is not None and parent_listing.is_dir():
        found = sorted(p.name for p in parent_listing.iterdir() if p.is_dir())
        msg += f"; found in '{parent_listing}': {', '.join(found) if found else '(no folders)'}"
    raise FileNotFoundError(msg)


def _read_rgb(path: Path) -> torch.Tensor:
    """PNG/JPG -> [3, H, W] float32 in [0, 1] (RGBA composited onto white, like VGGT's loader)."""
    with Image.open(path) as im:
        if im.mode == "RGBA":
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, im)
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def _read_depth_mm(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """16-bit millimetre depth PNG -> (depth [H, W] metres, valid [H, W] bool)."""
    with Image.open(path) as im:
        arr = np.asarray(im).astype(np.int64)
    if arr.ndim != 2:
        raise ValueError(f"depth image '{path}' has shape {arr.shape}; expected a single-channel 16-bit PNG")
    valid = (arr > 0) & (arr != _DEPTH_INVALID_U16)
    depth = np.where(valid, arr / _MM_PER_M, 0.0)
    return torch.from_numpy(depth).float(), torch.from_numpy(valid)


def _pinhole(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


def _world_from_cam_to_extrinsics(poses: torch.Tensor) -> torch.Tensor:
    """poses: [S, 4, 4] camera-to-world (OpenCV axes) -> [S, 3, 4] camera-from-world."""
    p = poses.double()
    r_wc = p[:, :3, :3]
    c = p[:, :3, 3:]
    r_cw = r_wc.transpose(1, 2)
    return torch.cat([r_cw, -r_cw @ c], dim=2).float()


def _select(indices: list[int], stride: int, max_frames: int | None) -> list[int]:
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    picked = indices[::stride]
    return picked if max_frames is None else picked[:max_frames]


def _stack(images, depths, valids, intrinsics, extrinsics, names, where: str) -> Frames:
    sizes = {tuple(im.shape[-2:]) for im in images} | {tuple(d.shape) for d in depths}
    if len(sizes) != 1:
        raise ValueError(f"{where}: images and depth maps differ in size {sorted(sizes)}; expected one size")
    return Frames(
        images=torch.stack(images),
        depth=torch.stack(depths),
        valid=torch.stack(valids),
        intrinsics=torch.stack(intrinsics),
        extrinsics=extrinsics,
        names=tuple(names),
    )


# --------------------------------------------------------------------------- 7-Scenes


def read_7scenes(
    root: str | Path, scene: str, seq: str = "seq-01", stride: int = 10, max_frames: int | None = None
) -> Frames:
    """Read one 7-Scenes sequence (every ``stride``-th frame, at most ``max_frames``).

    Intrinsics are the commonly used 7-Scenes values fx = fy = 585, cx = 320, cy = 240 for
    640x480 images (scaled proportionally if the files have another size). Poses in
    ``frame-*.pose.txt`` are 4x4 camera-to-world matrices in OpenCV axes; they are inverted
    into camera-from-world extrinsics. Depth is uint16 millimetres; 0 and 65535 are invalid.

    Returns Frames at the original resolution.
    """
    root = Path(root)
    _require_dir(root, "7-Scenes root")
    scene_dir = root / scene
    _require_dir(scene_dir, f"7-Scenes scene '{scene}'", parent_listing=root)
    seq_dir = scene_dir / seq
    _require_dir(seq_dir, f"7-Scenes sequence '{seq}'", parent_listing=scene_dir)

    pattern = "frame-*.color.png"
    colour_files = sorted(seq_dir.glob(pattern))
    if not colour_files:
        raise FileNotFoundError(f"no frames matching '{seq_dir / pattern}'")
    chosen = _select(list(range(len(colour_files))), stride, max_frames)

    images, depths, valids, intrinsics, poses, names = [], [], [], [], [], []
    for i in chosen:
        colour = colour_files[i]
        stem = colour.name[: -len(".color.png")]
        depth_path = seq_dir / f"{stem}.depth.png"
        pose_path = seq_dir / f"{stem}.pose.txt"
        for p in (depth_path, pose_path):
            if not p.is_file():
                raise FileNotFoundError(f"7-Scenes frame '{stem}' in '{seq_dir}' lacks '{p.name}'")
        img = _read_rgb(colour)
        d, v = _read_depth_mm(depth_path)
        h, w = img.shape[-2:]
        sx, sy = w / SEVEN_SCENES_SIZE_WH[0], h / SEVEN_SCENES_SIZE_WH[1]
        intrinsics.append(_pinhole(SEVEN_SCENES_FOCAL_PX * sx, SEVEN_SCENES_FOCAL_PX * sy, w / 2, h / 2))
        pose = torch.from_numpy(np.loadtxt(pose_path, dtype=np.float64).reshape(4, 4))
        images.append(img)
        depths.append(d)
        valids.append(v)
        poses.append(pose)
        names.append(stem)
    extr = _world_from_cam_to_extrinsics(torch.stack(poses))
    return _stack(images, depths, valids, intrinsics, extr, names, str(seq_dir))


# --------------------------------------------------------------------------- NRGBD


def _numbered(folder: Path, prefix: str) -> dict[int, Path]:
    rx = re.compile(rf"^{re.escape(prefix)}(\d+)\.png$")
    out = {}
    for p in folder.glob(f"{prefix}*.png"):
        m = rx.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return out


def read_nrgbd(root: str | Path, scene: str, stride: int = 10, max_frames: int | None = None) -> Frames:
    """Read one NRGBD scene (every ``stride``-th frame, at most ``max_frames``).

    ``poses.txt`` holds 4x4 camera-to-world matrices with OpenGL camera axes (x right, y up,
    z backward). They are converted to OpenCV axes (x right, y down, z forward) by negating
    the y and z camera axes (``pose @ diag(1, -1, -1, 1)``) and then inverted into
    camera-from-world extrinsics. Frames whose pose contains NaN are dropped after striding
    (stride counts frame indices, so the kept frames keep their spacing). Intrinsics: fx = fy
    = the value in ``focal.txt``, principal point at (W/2, H/2). Depth: uint16 millimetres,
    0 invalid.
    """
    root = Path(root)
    _require_dir(root, "NRGBD root")
    scene_dir = root / scene
    _require_dir(scene_dir, f"NRGBD scene '{scene}'", parent_listing=root)
    for sub in ("images", "depth"):
        _require_dir(scene_dir / sub, f"NRGBD folder '{sub}/' of scene '{scene}'", parent_listing=scene_dir)
    for f in ("poses.txt", "focal.txt"):
        if not (scene_dir / f).is_file():
            raise FileNotFoundError(f"NRGBD scene '{scene}' lacks '{scene_dir / f}'")

    colour = _numbered(scene_dir / "images", "img")
    if not colour:
        raise FileNotFoundError(f"no frames matching '{scene_dir / 'images' / 'img*.png'}'")
    depth_files = _numbered(scene_dir / "depth", "depth")
    pose_vals = np.loadtxt(scene_dir / "poses.txt", dtype=np.float64).reshape(-1, 4)
    if pose_vals.shape[0] % 4:
        raise ValueError(f"'{scene_dir / 'poses.txt'}' has {pose_vals.shape[0]} rows; expected 4 per frame")
    all_poses = torch.from_numpy(pose_vals.reshape(-1, 4, 4))
    focal = float(np.loadtxt(scene_dir / "focal.txt", dtype=np.float64).reshape(-1)[0])

    chosen = _select(sorted(colour), stride, max_frames=None)
    images, depths, valids, intrinsics, poses, names = [], [], [], [], [], []
    for i in chosen:
        if i >= all_poses.shape[0]:
            raise ValueError(
                f"'{scene_dir / 'poses.txt'}' has {all_poses.shape[0]} poses; frame {i} has none"
            )
        pose = all_poses[i]
        if not torch.isfinite(pose).all():
            continue
        if i not in depth_files:
            raise FileNotFoundError(f"NRGBD frame {i} lacks '{scene_dir / 'depth' / f'depth{i}.png'}'")
        img = _read_rgb(colour[i])
        d, v = _read_depth_mm(depth_files[i])
        h, w = img.shape[-2:]
        intrinsics.append(_pinhole(focal, focal, w / 2, h / 2))
        images.append(img)
        depths.append(d)
        valids.append(v)
        poses.append(pose @ _GL_TO_CV)
        names.append(colour[i].stem)
        if max_frames is not None and len(images) >= max_frames:
            break
    if not images:
        raise ValueError(f"NRGBD scene '{scene_dir}': every selected frame has a NaN pose")
    extr = _world_from_cam_to_extrinsics(torch.stack(poses))
    return _stack(images, depths, valids, intrinsics, extr, names, str(scene_dir))


# --------------------------------------------------------------------------- ScanNet

#: Colour frame suffixes accepted in a ScanNet ``color/`` folder (SensReader writes .jpg).
_SCANNET_COLOUR_SUFFIXES = (".jpg", ".jpeg", ".png")


def _numbered_files(folder: Path, suffixes: tuple[str, ...]) -> dict[int, Path]:
    """``{i: path}`` for the files ``<i><suffix>`` of ``folder`` (plain frame numbers)."""
    return {int(p.stem): p for p in folder.iterdir() if p.stem.isdigit() and p.suffix.lower() in suffixes}


def _scannet_intrinsics(
    intrinsic_dir: Path, depth_hw: tuple[int, int], colour_hw: tuple[int, int]
) -> torch.Tensor:
    """Pinhole K [3, 3] for pixels of the depth map.

    ``intrinsic_depth.txt`` when present (it is the depth camera's, at the depth resolution);
    otherwise ``intrinsic_color.txt`` scaled from the colour to the depth resolution with the
    pixel-centre convention ``u' = s (u + 0.5) - 0.5`` (as :func:`to_model_input`).
    """
    depth_file, colour_file = intrinsic_dir / "intrinsic_depth.txt", intrinsic_dir / "intrinsic_color.txt"
    if depth_file.is_file():
        k = np.loadtxt(depth_file, dtype=np.float64).reshape(4, 4)[:3, :3]
        return torch.from_numpy(k).float()
    if not colour_file.is_file():
        raise FileNotFoundError(f"ScanNet intrinsics not found: neither '{depth_file}' nor '{colour_file}'")
    k = np.loadtxt(colour_file, dtype=np.float64).reshape(4, 4)[:3, :3].copy()
    sy, sx = depth_hw[0] / colour_hw[0], depth_hw[1] / colour_hw[1]
    k[0, 0] *= sx
    k[1, 1] *= sy
    k[0, 2] = sx * (k[0, 2] + 0.5) - 0.5
    k[1, 2] = sy * (k[1, 2] + 0.5) - 0.5
    return torch.from_numpy(k).float()


def read_scannet(root: str | Path, scene: str, stride: int = 10, max_frames: int | None = None) -> Frames:
    """Read one exported ScanNet scene (every ``stride``-th frame, at most ``max_frames``).

    Colour (1296x968) and depth (640x480) differ in resolution: each colour image is resized
    to the depth resolution (bicubic, antialiased, clamped to [0, 1]) and the depth camera's
    intrinsics (``intrinsic_depth.txt``) are used, so images, depth and K describe one
    640x480 camera (the exported colour is registered to depth up to this scale). Without
    ``intrinsic_depth.txt``, ``intrinsic_color.txt`` is scaled to the depth resolution.

    ``pose/{i}.txt`` holds 4x4 camera-to-world matrices in OpenCV axes; they are inverted into
    camera-from-world extrinsics. Frames are numbered 0..N-1; ``stride`` counts frame numbers
    and frames whose pose holds inf/nan (ScanNet has such frames) are dropped after striding,
    with their count logged. Depth: uint16 millimetres, 0 invalid.
    """
    root = Path(root)
    _require_dir(root, "ScanNet root")
    scene_dir = root / scene
    _require_dir(scene_dir, f"ScanNet scene '{scene}'", parent_listing=root)
    for sub in ("color", "depth", "pose", "intrinsic"):
        _require_dir(scene_dir / sub, f"ScanNet folder '{sub}/' of scene '{scene}'", parent_listing=scene_dir)

    colour = _numbered_files(scene_dir / "color", _SCANNET_COLOUR_SUFFIXES)
    if not colour:
        raise FileNotFoundError(f"no frames matching '{scene_dir / 'color' / '<i>.jpg'}'")
    chosen = _select(sorted(colour), stride, max_frames=None)
    images, depths, valids, poses, names = [], [], [], [], []
    skipped = 0
    colour_hw = depth_hw = None
    for i in chosen:
        depth_path, pose_path = scene_dir / "depth" / f"{i}.png", scene_dir / "pose" / f"{i}.txt"
        for p in (depth_path, pose_path):
            if not p.is_file():
                raise FileNotFoundError(f"ScanNet frame {i} of '{scene_dir}' lacks '{p}'")
        pose = torch.from_numpy(np.loadtxt(pose_path, dtype=np.float64).reshape(4, 4))
        if not torch.isfinite(pose).all():
            skipped += 1
            continue
        img = _read_rgb(colour[i])
        d, v = _read_depth_mm(depth_path)
        colour_hw, depth_hw = tuple(img.shape[-2:]), tuple(d.shape)
        if colour_hw != depth_hw:
            img = F.interpolate(img[None], size=depth_hw, mode="bicubic", antialias=True)[0].clamp(0.0, 1.0)
        images.append(img)
        depths.append(d)
        valids.append(v)
        poses.append(pose)
        names.append(str(i))
        if max_frames is not None and len(images) >= max_frames:
            break
    if skipped:
        log.warning("ScanNet scene '%s': skipped %d selected frame(s) whose pose holds inf/nan",
                    scene_dir, skipped)
    if not images:
        raise ValueError(f"ScanNet scene '{scene_dir}': every selected frame has an inf/nan pose")
    k = _scannet_intrinsics(scene_dir / "intrinsic", depth_hw, colour_hw)
    extr = _world_from_cam_to_extrinsics(torch.stack(poses))
    return _stack(images, depths, valids, [k] * len(images), extr, names, str(scene_dir))


# --------------------------------------------------------------------------- model input sizing

_MODES = ("crop", "pad")


def _resize_plan(h: int, w: int, target_w: int, mode: str) -> tuple[int, int]:
    """Size (new_h, new_w) after VGGT's resize step, before crop/pad."""
    if mode == "crop" or w >= h:
        new_w = target_w
        new_h = round(h * target_w / w / PATCH_PX) * PATCH_PX
    else:
        new_h = target_w
        new_w = round(w * target_w / h / PATCH_PX) * PATCH_PX
    return max(new_h, PATCH_PX), max(new_w, PATCH_PX)


def _nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """x: [S, C, H, W] any dtype -> nearest-neighbour resize (pixel-centre aligned)."""
    return F.interpolate(x.float(), size=size, mode="nearest-exact").to(x.dtype)


def to_model_input(frames: Frames, target_w: int = 518, mode: str = "crop") -> Frames:
    """Resize and crop (or pad) images, depth, validity and intrinsics consistently for VGGT.

    Same rule as VGGT's image loader:
    - ``"crop"``: width becomes ``target_w``, height ``round(H * target_w / W / 14) * 14``;
      if that height exceeds ``target_w`` the middle ``target_w`` rows are kept.
    - ``"pad"``: the longer side becomes ``target_w``, the other is rounded to a multiple of
      14, and the image is padded (white, centred) to ``target_w x target_w``; padded depth is
      0 and invalid.

    Images use bicubic resampling with antialiasing (VGGT uses PIL bicubic), clamped to [0, 1];
    depth, validity and any ``world_points`` field use nearest-neighbour. Intrinsics follow
    the pixel-centre convention ``u' = s_x (u + 0.5) - 0.5`` and are shifted by the crop/pad
    offset. Works for :class:`Frames` and subclasses (e.g. ``Scene``), whose extra per-pixel
    fields ``[S, H, W, ...]`` are resized the same way.
    """
    if mode not in _MODES:
        raise ValueError(f"to_model_input: mode {mode!r} is not allowed; choose one of {_MODES}")
    if target_w < PATCH_PX or target_w % PATCH_PX:
        raise ValueError(f"to_model_input: target_w={target_w} must be a positive multiple of {PATCH_PX}")
    s, _, h, w = frames.images.shape
    new_h, new_w = _resize_plan(h, w, target_w, mode)
    sx, sy = new_w / w, new_h / h

    images = F.interpolate(frames.images, size=(new_h, new_w), mode="bicubic", antialias=True)
    images = images.clamp(0.0, 1.0)
    depth = _nearest(frames.depth[:, None], (new_h, new_w))[:, 0]
    valid = _nearest(frames.valid[:, None], (new_h, new_w))[:, 0]
    extra = {}
    for f in dataclasses.fields(frames):
        val = getattr(frames, f.name)
        if f.name in ("images", "depth", "valid") or not isinstance(val, torch.Tensor):
            continue
        if val.dim() >= 3 and tuple(val.shape[:3]) == (s, h, w):
            moved = val.movedim(3, 1) if val.dim() == 4 else val[:, None]
            resized = _nearest(moved, (new_h, new_w))
            extra[f.name] = resized.movedim(1, 3) if val.dim() == 4 else resized[:, 0]

    k = frames.intrinsics.clone().double()
    k[:, 0, 0] *= sx
    k[:, 1, 1] *= sy
    k[:, 0, 2] = sx * (k[:, 0, 2] + 0.5) - 0.5
    k[:, 1, 2] = sy * (k[:, 1, 2] + 0.5) - 0.5

    if mode == "crop" and new_h > target_w:
        top = (new_h - target_w) // 2
        rows = slice(top, top + target_w)
        images, depth, valid = images[:, :, rows], depth[:, rows], valid[:, rows]
        extra = {n: v[:, rows] for n, v in extra.items()}
        k[:, 1, 2] -= top
    elif mode == "pad" and (new_h < target_w or new_w < target_w):
        top, left = (target_w - new_h) // 2, (target_w - new_w) // 2
        pad = (left, target_w - new_w - left, top, target_w - new_h - top)
        images = F.pad(images, pad, value=1.0)
        depth = F.pad(depth, pad, value=0.0)
        valid = F.pad(valid.to(torch.uint8), pad, value=0).bool()
        extra = {n: F.pad(v.movedim(-1, 1), pad, value=0.0).movedim(1, -1) if v.dim() == 4 else F.pad(v, pad)
                 for n, v in extra.items()}
        k[:, 0, 2] += left
        k[:, 1, 2] += top

    return dataclasses.replace(
        frames, images=images.contiguous(), depth=depth.contiguous(), valid=valid.contiguous(),
        intrinsics=k.float(), **{n: v.contiguous() for n, v in extra.items()},
    )


def model_input_hw(h: int, w: int, target_w: int = 518, mode: str = "crop") -> tuple[int, int]:
    """(H, W) that :func:`to_model_input` produces for an ``h x w`` image."""
    if mode not in _MODES:
        raise ValueError(f"model_input_hw: mode {mode!r} is not allowed; choose one of {_MODES}")
    new_h, new_w = _resize_plan(h, w, target_w, mode)
    if mode == "crop":
        return min(new_h, target_w), new_w
    return target_w, target_w


__all__ = [
    "Frames",
    "PATCH_PX",
    "SEVEN_SCENES_FOCAL_PX",
    "model_input_hw",
    "read_7scenes",
    "read_nrgbd",
    "read_scannet",
    "to_model_input",
]
