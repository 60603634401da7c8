"""VGGT re-implementation that loads the official facebook/VGGT-1B checkpoint strictly.

Public API::

    build_vggt(preset, *, device="cpu", enable_track=False, lean=False, heads=None) -> VGGT
    PRESETS: dict[str, VGGTConfig]            # "vggt-1b", "vggt-1b-layer", "vggt-tiny"
    VGGT.forward(images, query_points=None, *, attention_fn=None, recorder=None, heads=None) -> dict
    load_checkpoint(model, path, *, strict=True) / save_checkpoint(model, path)
    load_images(paths, mode="crop", target=518) / preprocess_tensor(images, mode, target)
    pose_encoding_to_extri_intri(pose_enc, image_hw) / extri_intri_to_pose_encoding(...)

Global-attention seam: every global block calls ``attention_fn(q, k, v, layout)`` with q, k, v
``[B, H, N, d]`` after qk-norm and RoPE and a :class:`harness.models.seam.AttentionLayout`
(frames, tokens_per_frame, patch grid, patch_start=5, layer = global block index, x_norm,
recorder). Frame blocks always use plain SDPA.
"""

from harness.models.vggt.aggregator import Aggregator, LayerOutputs
from harness.models.vggt.checkpoint import (
    CheckpointError,
    LoadReport,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
)
from harness.models.vggt.model import ALL_HEADS, DEFAULT_HEADS, VGGT, build_vggt
from harness.models.vggt.pose import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri
from harness.models.vggt.preprocess import load_images, preprocess_tensor
from harness.models.vggt.presets import PRESETS, VGGTConfig, default_intermediate_layers, get_preset

__all__ = [
    "ALL_HEADS",
    "DEFAULT_HEADS",
    "PRESETS",
    "VGGT",
    "Aggregator",
    "CheckpointError",
    "LayerOutputs",
    "LoadReport",
    "VGGTConfig",
    "build_vggt",
    "default_intermediate_layers",
    "extri_intri_to_pose_encoding",
    "get_preset",
    "load_checkpoint",
    "load_images",
    "pose_encoding_to_extri_intri",
    "preprocess_tensor",
    "read_state_dict",
    "save_checkpoint",
]
