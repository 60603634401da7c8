"""Pose encoding ``absT_quaR_FoV`` <-> OpenCV extrinsics and pinhole intrinsics.

Encoding [..., 9] = translation t (3), rotation quaternion (4, scalar-last XYZW as upstream
VGGT), fov_h, fov_w (radians). Extrinsics [..., 3, 4] = [R | t] are camera-from-world
(OpenCV: x right, y down, z forward). Intrinsics: fy = (H/2) / tan(fov_h/2),
fx = (W/2) / tan(fov_w/2), principal point at the image centre (W/2, H/2).
"""

from __future__ import annotations

import torch


def quat_to_mat(quat: torch.Tensor) -> torch.Tensor:
    """Scalar-last quaternions [..., 4] (x, y, z, w; need not be unit) -> rotations [..., 3, 3]."""
    x, y, z, w = torch.unbind(quat, dim=-1)
    two_s = 2.0 / (quat * quat).sum(dim=-1)
    m = torch.stack(
        (
            1 - two_s * (y * y + z * z),
            two_s * (x * y - z * w),
            two_s * (x * z + y * w),
            two_s * (x * y + z * w),
            1 - two_s * (x * x + z * z),
            two_s * (y * z - x * w),
            two_s * (x * z - y * w),
            two_s * (y * z + x * w),
            1 - two_s * (x * x + y * y),
        ),
        dim=-1,
    )
    return m.reshape(quat.shape[:-1] + (3, 3))


def mat_to_quat(rot: torch.Tensor) -> torch.Tensor:
    """Rotations [..., 3, 3] -> unit scalar-last quaternions [..., 4] (x, y, z, w) with w >= 0.

    Uses the numerically best-conditioned of the four candidate formulas per matrix.
    """
    m = rot.reshape(-1, 3, 3)
    m00, m01, m02 = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    m10, m11, m12 = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    m20, m21, m22 = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    # 4 * component^2 for (w, x, y, z), clamped for safety.
    abs4 = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), dim=-1
    ).clamp_min(0)
    q_abs = torch.sqrt(abs4)
    # Candidate (w, x, y, z) quaternions, each scaled by 2 * (its pivot component).
    cands = torch.stack(
        (
            torch.stack((abs4[:, 0], m21 - m12, m02 - m20, m10 - m01), dim=-1),
            torch.stack((m21 - m12, abs4[:, 1], m10 + m01, m02 + m20), dim=-1),
            torch.stack((m02 - m20, m10 + m01, abs4[:, 2], m12 + m21), dim=-1),
            torch.stack((m10 - m01, m20 + m02, m21 + m12, abs4[:, 3]), dim=-1),
        ),
        dim=1,
    )
    cands = cands / (2.0 * q_abs.clamp_min(0.1))[..., None]
    best = q_abs.argmax(dim=-1)
    wxyz = cands[torch.arange(m.shape[0], device=m.device), best]
    wxyz = wxyz / wxyz.norm(dim=-1, keepdim=True)
    wxyz = torch.where(wxyz[:, :1] < 0, -wxyz, wxyz)
    return wxyz[:, [1, 2, 3, 0]].reshape(rot.shape[:-2] + (4,))


def pose_encoding_to_extri_intri(
    pose_enc: torch.Tensor, image_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """pose_enc [B, S, 9] (or [..., 9]) -> (extrinsics [..., 3, 4], intrinsics [..., 3, 3]).

    image_hw: (H, W) of the images the model saw, in pixels.
    """
    if pose_enc.shape[-1] != 9:
        raise ValueError(f"pose encoding must have 9 values in its last dim, got {tuple(pose_enc.shape)}")
    H, W = image_hw
    t = pose_enc[..., :3]
    rot = quat_to_mat(pose_enc[..., 3:7])
    extrinsics = torch.cat([rot, t[..., None]], dim=-1)
    fy = (H / 2.0) / torch.tan(pose_enc[..., 7] / 2.0)
    fx = (W / 2.0) / torch.tan(pose_enc[..., 8] / 2.0)
    intrinsics = torch.zeros(pose_enc.shape[:-1] + (3, 3), device=pose_enc.device, dtype=pose_enc.dtype)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = W / 2.0
    intrinsics[..., 1, 2] = H / 2.0
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def extri_intri_to_pose_encoding(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]
) -> torch.Tensor:
    """(extrinsics [..., 3, 4] camera-from-world, intrinsics [..., 3, 3]) -> pose_enc [..., 9] float32."""
    H, W = image_hw
    t = extrinsics[..., :3, 3]
    quat = mat_to_quat(extrinsics[..., :3, :3])
    fov_h = 2 * torch.atan((H / 2.0) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((W / 2.0) / intrinsics[..., 0, 0])
    return torch.cat([t, quat, fov_h[..., None], fov_w[..., None]], dim=-1).float()
