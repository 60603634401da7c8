"""VGGT top level: aggregator + camera / depth / point (/ track) heads.

Usage::

    model = build_vggt("vggt-tiny")                       # eval mode, random weights
    out = model(images)                                   # images [S, 3, H, W] or [B, S, 3, H, W] in [0, 1]
    out = model(images, attention_fn=fn, recorder=rec)    # route every global attention through fn
    out = model(images, heads=("camera", "depth"))        # run a subset of the heads

Output dict: pose_enc [B, S, 9], pose_enc_list (one per camera iteration), depth
[B, S, H, W, 1], depth_conf [B, S, H, W], world_points [B, S, H, W, 3], world_points_conf
[B, S, H, W]; with the track head and query points: track [B, S, N, 2], vis, conf [B, S, N];
in eval mode also images [B, S, 3, H, W]. The heads run with autocast disabled (fp32), as
upstream; the track head runs outside that region.

Lean mode ("VGGT*"): the aggregator keeps only the layers the selected heads read, detached;
on CUDA they are stored in bfloat16 and the allocator cache is emptied after every block.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn

from harness.models.seam import AttentionFn, Recorder, named_range
from harness.models.vggt.aggregator import Aggregator
from harness.models.vggt.camera_head import CameraHead
from harness.models.vggt.dpt_head import DPTHead
from harness.models.vggt.presets import VGGTConfig, get_preset
from harness.models.vggt.track_head import TrackHead

ALL_HEADS = ("camera", "depth", "point", "track")
DEFAULT_HEADS = ("camera", "depth", "point")


def _autocast_off(device: torch.device):
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


def _check_heads(heads: Sequence[str]) -> tuple[str, ...]:
    if isinstance(heads, str):
        heads = (heads,)
    bad = [h for h in heads if h not in ALL_HEADS]
    if bad:
        raise ValueError(f"unknown VGGT heads {bad}; allowed: {', '.join(ALL_HEADS)}")
    return tuple(heads)


class VGGT(nn.Module):
    """The VGGT model; parameter names match the official facebook/VGGT-1B checkpoint.

    enable_track: build the track head (needed to load the full official checkpoint strictly).
    lean: memory-lean "VGGT*" mode (see module docstring); ``lean_dtype`` and
    ``lean_empty_cache`` tune it (both only act on CUDA).
    heads: heads run by default (a forward call may override it).
    """

    def __init__(
        self,
        config: VGGTConfig,
        *,
        enable_track: bool = False,
        lean: bool = False,
        heads: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        c = config
        self.config = c
        dim_in = 2 * c.embed_dim
        self.aggregator = Aggregator(c)
        self.camera_head = CameraHead(
            dim_in,
            trunk_depth=c.camera_trunk_depth,
            num_heads=c.camera_num_heads,
            mlp_ratio=c.mlp_ratio,
            init_values=c.init_values,
            layer=c.depth - 1,
            num_iterations=c.camera_iterations,
        )
        dpt = dict(
            patch_size=c.patch_size,
            features=c.dpt_features,
            out_channels=c.dpt_out_channels,
            intermediate_layer_idx=c.intermediate_layer_idx,
            frames_chunk_size=c.frames_chunk_size,
        )
        self.point_head = DPTHead(dim_in, output_dim=4, activation="inv_log", conf_activation="expp1", **dpt)
        self.depth_head = DPTHead(dim_in, output_dim=2, activation="exp", conf_activation="expp1", **dpt)
        self.track_head: TrackHead | None = None
        if enable_track:
            self.track_head = TrackHead(
                dim_in,
                patch_size=c.patch_size,
                features=c.track_features,
                out_channels=c.track_out_channels,
                intermediate_layer_idx=c.intermediate_layer_idx,
                iters=c.track_iters,
                stride=c.track_stride,
                corr_levels=c.track_corr_levels,
                corr_radius=c.track_corr_radius,
                hidden_size=c.track_hidden_size,
                num_heads=c.track_num_heads,
                depth=c.track_depth,
                num_virtual_tracks=c.track_virtual_tracks,
                frames_chunk_size=c.frames_chunk_size,
            )
        self.lean = lean
        self.lean_dtype: torch.dtype | None = torch.bfloat16
        self.lean_empty_cache = True
        if heads is None:
            heads = DEFAULT_HEADS + (("track",) if enable_track else ())
        self.heads = _check_heads(heads)

    def layers_needed(self, heads: Sequence[str]) -> set[int]:
        """Aggregator layers the given heads read."""
        need: set[int] = set()
        if "camera" in heads:
            need.add(self.camera_head.layer)
        if "depth" in heads or "point" in heads or "track" in heads:
            need.update(self.config.intermediate_layer_idx)
        return need

    def forward(
        self,
        images: torch.Tensor,
        query_points: torch.Tensor | None = None,
        *,
        attention_fn: AttentionFn | None = None,
        recorder: Recorder | None = None,
        heads: Sequence[str] | None = None,
    ) -> dict:
        """images: [S, 3, H, W] or [B, S, 3, H, W] in [0, 1]; query_points: [N, 2] or [B, N, 2] pixels.

        attention_fn: ``fn(q, k, v, layout) -> out`` for every global block (None: plain SDPA).
        recorder: reaches the attention_fn through ``layout.recorder``.
        heads: subset of ("camera", "depth", "point", "track"); None uses ``self.heads``.
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if query_points is not None and query_points.dim() == 2:
            query_points = query_points.unsqueeze(0)
        heads = _check_heads(self.heads if heads is None else heads)
        if "track" in heads and query_points is not None and self.track_head is None:
            raise ValueError("the track head was requested but the model was built with enable_track=False")

        cuda = images.device.type == "cuda"
        outputs, patch_start_idx = self.aggregator(
            images,
            attention_fn=attention_fn,
            recorder=recorder,
            keep_layers=self.layers_needed(heads) if self.lean else None,
            keep_dtype=self.lean_dtype if (self.lean and cuda) else None,
            empty_cache=self.lean and self.lean_empty_cache,
        )

        pred: dict = {}
        with _autocast_off(images.device):
            if "camera" in heads:
                with named_range("camera_head"):
                    pose_enc_list = self.camera_head(outputs)
                pred["pose_enc"] = pose_enc_list[-1]
                pred["pose_enc_list"] = pose_enc_list
            if "depth" in heads:
                with named_range("depth_head"):
                    pred["depth"], pred["depth_conf"] = self.depth_head(outputs, images, patch_start_idx)
            if "point" in heads:
                with named_range("point_head"):
                    pred["world_points"], pred["world_points_conf"] = self.point_head(
                        outputs, images, patch_start_idx
                    )
        if "track" in heads and query_points is not None and self.track_head is not None:
            tracks, vis, conf = self.track_head(outputs, images, patch_start_idx, query_points)
            pred["track"], pred["vis"], pred["conf"] = tracks[-1], vis, conf
        if not self.training:
            pred["images"] = images
        return pred

    def reset_buffers(self, device: torch.device | str) -> None:
        """Recreate non-persistent buffers on ``device`` (after loading into a meta-device model)."""
        self.aggregator.reset_buffers(device)


def build_vggt(
    preset: str | VGGTConfig,
    *,
    device: torch.device | str = "cpu",
    enable_track: bool = False,
    lean: bool = False,
    heads: Sequence[str] | None = None,
) -> VGGT:
    """Build a VGGT (random weights, eval mode) directly on ``device`` ("meta" allocates nothing)."""
    config = get_preset(preset) if isinstance(preset, str) else preset
    with torch.device(device):
        model = VGGT(config, enable_track=enable_track, lean=lean, heads=heads)
    return model.eval()
