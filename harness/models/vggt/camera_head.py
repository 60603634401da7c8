"""Camera head: iterative adaLN-modulated trunk on the camera tokens (pose encoding absT_quaR_FoV).

Input: the camera token (index 0 of every frame) of the last aggregator layer, [B, S, 2C].
Each of ``num_iterations`` steps embeds the previous prediction (the learned
``empty_pose_tokens`` first), modulates the normed tokens (shift, scale, gate), runs the trunk
(attention across the S camera tokens) and adds a 9-d delta. Output per step: [B, S, 9] =
translation(3), quaternion(4, xyzw), fov_h, fov_w (ReLU on the FoVs).
"""

from __future__ import annotations

import torch
from torch import nn

from harness.models.vggt.layers import Block, Mlp

POSE_ENC_DIM = 9


def activate_pose(pose_enc: torch.Tensor) -> torch.Tensor:
    """Linear translation and quaternion, ReLU on the two FoVs.  [..., 9] -> [..., 9]."""
    return torch.cat([pose_enc[..., :7], torch.relu(pose_enc[..., 7:])], dim=-1)


class CameraHead(nn.Module):
    """[B, S, 2C] camera tokens -> list of ``num_iterations`` pose encodings [B, S, 9]."""

    def __init__(
        self,
        dim_in: int = 2048,
        *,
        trunk_depth: int = 4,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        init_values: float = 0.01,
        layer: int = -1,
        num_iterations: int = 4,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.num_iterations = num_iterations
        self.trunk = nn.Sequential(
            *[
                Block(dim_in, num_heads, mlp_ratio=mlp_ratio, init_values=init_values)
                for _ in range(trunk_depth)
            ]
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENC_DIM))
        self.embed_pose = nn.Linear(POSE_ENC_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENC_DIM)

    def forward(self, layer_outputs, num_iterations: int | None = None) -> list[torch.Tensor]:
        """layer_outputs: indexable by layer -> [B, S, P, 2C]; uses ``self.layer`` (the last one)."""
        tokens = layer_outputs[self.layer][:, :, 0]
        tokens = self.token_norm(tokens.to(self.token_norm.weight.dtype))
        B, S, _ = tokens.shape
        pred = None
        preds = []
        for _ in range(num_iterations or self.num_iterations):
            if pred is None:
                cond = self.embed_pose(self.empty_pose_tokens.expand(B, S, -1))
            else:
                pred = pred.detach()
                cond = self.embed_pose(pred)
            shift, scale, gate = self.poseLN_modulation(cond).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            x = self.trunk(x)
            delta = self.pose_branch(self.trunk_norm(x))
            pred = delta if pred is None else pred + delta
            preds.append(activate_pose(pred))
        return preds
