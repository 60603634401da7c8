"""VGGT aggregator: patch embedding, special tokens and alternating frame/global attention.

Per frame the token layout is ``[camera(1), registers(R), patches(h*w)]``, P = 1 + R + h*w.
Block pair i runs frame block i on ``[B*S, P, C]`` (attention within each frame) and global
block i on ``[B, S*P, C]`` (attention across all frames); its output is
``concat(frame_out_i, global_out_i)`` of shape ``[B, S, P, 2C]``.

Global blocks route their attention core through ``attention_fn(q, k, v, layout)`` (the seam
of :mod:`harness.models.seam`); frame blocks always use plain SDPA.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from harness.models.seam import AttentionFn, AttentionLayout, Recorder, named_range, sdpa_attention
from harness.models.vggt.dino import ConvPatchEmbed, DinoViT
from harness.models.vggt.layers import Block, RoPE2D, init_normal_, patch_positions
from harness.models.vggt.presets import VGGTConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Layer outputs as the heads see them: the full list (index = layer) or, in lean mode, a
# dict holding only the kept layers. Both are indexed by the absolute layer index.
LayerOutputs = list[torch.Tensor] | dict[int, torch.Tensor]


def slot_tokens(token: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """Expand a ``[1, 2, X, C]`` special token to ``[batch * frames, X, C]``.

    Slot 0 goes to frame 0 (the reference frame) only, slot 1 to frames 1..S-1.
    """
    first = token[:, 0:1].expand(batch, 1, *token.shape[2:])
    rest = token[:, 1:2].expand(batch, frames - 1, *token.shape[2:])
    return torch.cat([first, rest], dim=1).reshape(batch * frames, *token.shape[2:])


class Aggregator(nn.Module):
    """images [B, S, 3, H, W] in [0, 1] -> (layer outputs [B, S, P, 2C], patch_start_idx)."""

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.patch_size = c.patch_size
        self.depth = c.depth
        self.patch_start_idx = c.patch_start_idx
        if c.patch_embed == "dinov2":
            self.patch_embed: nn.Module = DinoViT(
                img_size=c.img_size,
                patch_size=c.patch_size,
                embed_dim=c.embed_dim,
                depth=c.dino_depth,
                num_heads=c.dino_num_heads,
                mlp_ratio=c.mlp_ratio,
                num_register_tokens=4,
            )
        else:
            self.patch_embed = ConvPatchEmbed(c.patch_size, c.embed_dim)
        self.rope = RoPE2D(c.rope_freq) if c.rope_freq > 0 else None

        def make_block() -> Block:
            return Block(
                c.embed_dim,
                c.num_heads,
                mlp_ratio=c.mlp_ratio,
                init_values=c.init_values,
                qk_norm=c.qk_norm,
                norm_eps=1e-5,
                rope=self.rope,
            )

        self.frame_blocks = nn.ModuleList([make_block() for _ in range(c.depth)])
        self.global_blocks = nn.ModuleList([make_block() for _ in range(c.depth)])
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, c.embed_dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, c.num_register_tokens, c.embed_dim))
        init_normal_(self.camera_token, std=1e-6)
        init_normal_(self.register_token, std=1e-6)
        self.register_buffer(
            "_resnet_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False
        )
        self.register_buffer("_resnet_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)

    def reset_buffers(self, device: torch.device | str) -> None:
        """(Re)create the non-persistent normalization buffers on ``device`` (after a meta build)."""
        self._resnet_mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)
        self._resnet_std = torch.tensor(IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, S, 3, H, W] in [0, 1] -> initial tokens [B*S, P, C]."""
        B, S, _, H, W = images.shape
        x = (images - self._resnet_mean) / self._resnet_std
        patches = self.patch_embed(x.reshape(B * S, 3, H, W))  # [B*S, h*w, C]
        camera = slot_tokens(self.camera_token, B, S).to(patches.dtype)
        register = slot_tokens(self.register_token, B, S).to(patches.dtype)
        return torch.cat([camera, register, patches], dim=1)

    def forward(
        self,
        images: torch.Tensor,
        *,
        attention_fn: AttentionFn | None = None,
        recorder: Recorder | None = None,
        keep_layers: Collection[int] | None = None,
        keep_dtype: torch.dtype | None = None,
        empty_cache: bool = False,
    ) -> tuple[LayerOutputs, int]:
        """Run the alternating-attention stack.

        images: [B, S, 3, H, W] in [0, 1], H and W multiples of the patch size.
        attention_fn: the global-attention core (None: :func:`seam.sdpa_attention`); it is
            called once per global block with the layout of that block.
        recorder: passed to the attention_fn through ``layout.recorder``.
        keep_layers: None keeps every layer output (a list of ``depth`` tensors); otherwise
            only these layers are kept, detached, in a dict ``{layer: tensor}`` (lean mode).
        keep_dtype: cast kept outputs to this dtype (lean mode on CUDA: bfloat16).
        empty_cache: call ``torch.cuda.empty_cache()`` after every block (lean mode on CUDA).
        Returns (outputs, patch_start_idx); each output is [B, S, P, 2C].
        """
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"Aggregator expects images [B, S, 3, H, W], got {tuple(images.shape)}")
        B, S, _, H, W = images.shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
        patch_h, patch_w = H // p, W // p
        attention_fn = attention_fn if attention_fn is not None else sdpa_attention

        with named_range("patch_embed"):
            tokens = self.embed(images)
        P, C = tokens.shape[1], tokens.shape[2]
        pos_frame = patch_positions(B * S, patch_h, patch_w, self.patch_start_idx, images.device)
        pos_global = pos_frame.view(B, S * P, 2)
        num_positions = max(patch_h, patch_w) + 1
        cuda_cleanup = empty_cache and images.device.type == "cuda"
        keep = None if keep_layers is None else set(keep_layers)

        outputs: LayerOutputs = [] if keep is None else {}
        for i in range(self.depth):
            x = tokens.view(B * S, P, C)
            with named_range(f"frame_block.{i}"):
                x = self.frame_blocks[i](x, pos_frame, num_positions=num_positions)
            frame_out = x.view(B, S, P, C)
            if cuda_cleanup:
                torch.cuda.empty_cache()
            layout = AttentionLayout(
                frames=S,
                tokens_per_frame=P,
                patch_h=patch_h,
                patch_w=patch_w,
                patch_start=self.patch_start_idx,
                layer=i,
                recorder=recorder,
                depth=self.depth,
            )
            with named_range(f"global_block.{i}"):
                x = self.global_blocks[i](
                    x.view(B, S * P, C),
                    pos_global,
                    num_positions=num_positions,
                    attention_fn=attention_fn,
                    layout=layout,
                )
            tokens = x
            if keep is None:
                outputs.append(torch.cat([frame_out, x.view(B, S, P, C)], dim=-1))  # type: ignore[union-attr]
            elif i in keep:
                out = torch.cat([frame_out, x.view(B, S, P, C)], dim=-1).detach()
                outputs[i] = out.to(keep_dtype) if keep_dtype is not None else out  # type: ignore[index]
            del frame_out
            if cuda_cleanup:
                torch.cuda.empty_cache()
        return outputs, self.patch_start_idx
