"""VGGT model shapes: a frozen config dataclass and the named presets.

- ``vggt-1b``: the official facebook/VGGT-1B shape (1,256,537,516 parameters with the
  track head); the official checkpoint loads strictly into it.
- ``vggt-1b-layer``: the official layer shape (dim 1024, 16 heads of 64, qk-norm, RoPE) but
  only 2 frame + 2 global blocks, a 1-block DINO patch embedding and light heads, so CPU
  timings stay representative per layer.
- ``vggt-tiny``: dim 64, depth 4, 4 heads, conv patch embedding, small heads, for tests.
- ``vggt-proxy``: the shape of the trained proxy (``checkpoint: proxy:vggt-proxy``): dim 128 with
  the official 16 heads (head dim 8), 4 frame + 4 global blocks, LayerScale init 1, conv patch
  embedding, small camera and DPT heads; trained at 112x140 px (8x10 patches). Not a published
  model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from harness.params import did_you_mean, param

# Official depth-24 layer indices the DPT heads read; their relative depths define the
# indices of other depths (see default_intermediate_layers).
OFFICIAL_INTERMEDIATE_LAYERS = (4, 11, 17, 23)
OFFICIAL_DEPTH = 24


def default_intermediate_layers(depth: int) -> tuple[int, int, int, int]:
    """The 4 aggregator layers the DPT heads read for a given depth.

    Keeps the official relative depths (5/24, 12/24, 18/24, 24/24): 24 -> (4, 11, 17, 23),
    4 -> (0, 1, 2, 3), 2 -> (0, 0, 1, 1). Indices may repeat for very shallow models.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    out = []
    for idx in OFFICIAL_INTERMEDIATE_LAYERS:
        frac = (idx + 1) / OFFICIAL_DEPTH
        out.append(max(0, min(depth - 1, math.floor(frac * depth + 0.5) - 1)))
    return tuple(out)  # type: ignore[return-value]


@dataclass(frozen=True)
class VGGTConfig:
    """Every shape knob of the VGGT re-implementation (defaults: the official VGGT-1B)."""

    img_size: int = param(
        518, "reference image size (px) the DINO pos-embed grid is learned for", range=(14, None)
    )
    patch_size: int = param(14, "patch size (px)", range=(1, None))
    embed_dim: int = param(1024, "aggregator width C (heads read 2C)", range=(4, None))
    depth: int = param(24, "number of frame/global block pairs", range=(1, None))
    num_heads: int = param(16, "attention heads of frame and global blocks", range=(1, None))
    mlp_ratio: float = param(4.0, "MLP hidden size / width", range=(0.25, None))
    num_register_tokens: int = param(4, "register tokens per frame (after the camera token)", range=(0, None))
    patch_embed: str = param(
        "dinov2", "patch embedding: a DINOv2 ViT with registers, or a bare conv", choices=("dinov2", "conv")
    )
    dino_depth: int = param(24, "blocks of the DINO patch embedding", range=(0, None))
    dino_num_heads: int = param(16, "heads of the DINO patch embedding", range=(1, None))
    qk_norm: bool = param(True, "LayerNorm over the head dim of q and k in frame/global blocks")
    rope_freq: float = param(100.0, "2-D RoPE base frequency (0 disables RoPE)", range=(0.0, None))
    init_values: float = param(0.01, "LayerScale init of frame/global blocks", range=(0.0, None))
    intermediate_layer_idx: tuple[int, ...] = param(
        OFFICIAL_INTERMEDIATE_LAYERS, "the 4 aggregator layers the DPT heads read"
    )
    camera_trunk_depth: int = param(4, "transformer blocks of the camera-head trunk", range=(0, None))
    camera_num_heads: int = param(16, "heads of the camera-head trunk (must divide 2C)", range=(1, None))
    camera_iterations: int = param(4, "iterative refinement steps of the camera head", range=(1, None))
    dpt_features: int = param(256, "fusion channels of the depth/point DPT heads", range=(2, None))
    dpt_out_channels: tuple[int, ...] = param((256, 512, 1024, 1024), "DPT per-layer projection channels")
    frames_chunk_size: int = param(8, "frames per DPT-head chunk (memory only; same result)", range=(1, None))
    track_features: int = param(128, "feature channels of the track head", range=(2, None))
    track_out_channels: tuple[int, ...] = param(
        (256, 512, 1024, 1024), "projection channels of the track feature extractor"
    )
    track_hidden_size: int = param(384, "width of the tracker's update transformer", range=(1, None))
    track_num_heads: int = param(8, "heads of the tracker's update transformer", range=(1, None))
    track_depth: int = param(6, "time (and space) blocks of the update transformer", range=(1, None))
    track_virtual_tracks: int = param(64, "virtual tracks of the update transformer", range=(1, None))
    track_corr_levels: int = param(7, "correlation pyramid levels", range=(1, None))
    track_corr_radius: int = param(4, "correlation radius", range=(0, None))
    track_stride: int = param(2, "tracker stride relative to the image", range=(1, None))
    track_iters: int = param(4, "tracker refinement iterations", range=(1, None))

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"VGGTConfig: {msg}")

        if self.embed_dim % self.num_heads:
            fail(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        if self.rope_freq > 0 and (self.embed_dim // self.num_heads) % 4:
            fail(f"2-D RoPE needs head_dim % 4 == 0, got head_dim {self.embed_dim // self.num_heads}")
        if self.patch_embed not in ("dinov2", "conv"):
            fail(f"patch_embed must be 'dinov2' or 'conv', got {self.patch_embed!r}")
        if self.patch_embed == "dinov2" and self.embed_dim % self.dino_num_heads:
            fail(f"embed_dim {self.embed_dim} must be divisible by dino_num_heads {self.dino_num_heads}")
        if (2 * self.embed_dim) % self.camera_num_heads:
            fail(f"camera_num_heads {self.camera_num_heads} must divide 2*embed_dim = {2 * self.embed_dim}")
        if len(self.intermediate_layer_idx) != 4:
            fail(f"intermediate_layer_idx needs 4 entries, got {self.intermediate_layer_idx}")
        bad = [i for i in self.intermediate_layer_idx if not 0 <= i < self.depth]
        if bad:
            fail(
                f"intermediate_layer_idx {self.intermediate_layer_idx} has indices outside [0, {self.depth})"
            )
        for name in ("dpt_out_channels", "track_out_channels"):
            if len(getattr(self, name)) != 4:
                fail(f"{name} needs 4 entries, got {getattr(self, name)}")
        if self.track_hidden_size % self.track_num_heads:
            fail(f"track_hidden_size {self.track_hidden_size} must be divisible by track_num_heads")
        if self.track_features % 4:
            fail(f"track_features must be divisible by 4, got {self.track_features}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def patch_start_idx(self) -> int:
        """Index of the first patch token in a frame: 1 camera + the register tokens."""
        return 1 + self.num_register_tokens

    def tokens_per_frame(self, height: int, width: int) -> int:
        """P = patch_start + (H/p) * (W/p)."""
        return self.patch_start_idx + (height // self.patch_size) * (width // self.patch_size)


VGGT_1B = VGGTConfig()

VGGT_1B_LAYER = replace(
    VGGT_1B,
    depth=2,
    dino_depth=1,
    intermediate_layer_idx=default_intermediate_layers(2),
    camera_trunk_depth=1,
    dpt_features=64,
    dpt_out_channels=(64, 128, 256, 256),
    track_features=32,
    track_out_channels=(32, 64, 128, 128),
    track_hidden_size=64,
    track_num_heads=4,
    track_depth=2,
    track_virtual_tracks=16,
    track_corr_levels=4,
)

VGGT_TINY = VGGTConfig(
    img_size=56,
    embed_dim=64,
    depth=4,
    num_heads=4,
    patch_embed="conv",
    dino_depth=1,
    dino_num_heads=4,
    intermediate_layer_idx=default_intermediate_layers(4),
    camera_trunk_depth=1,
    camera_num_heads=4,
    dpt_features=16,
    dpt_out_channels=(8, 16, 32, 32),
    track_features=16,
    track_out_channels=(8, 16, 32, 32),
    track_hidden_size=32,
    track_num_heads=4,
    track_depth=2,
    track_virtual_tracks=8,
    track_corr_levels=3,
    track_corr_radius=2,
)

VGGT_PROXY = replace(
    VGGT_TINY,  # the tiny preset's (unused) track head shape; wider, with the official 16 heads
    img_size=140,
    embed_dim=128,
    num_heads=16,
    # LayerScale starts at 1 (not VGGT's 0.01): with 0.01 the 4-block proxy trained on CPU kept its
    # blocks at ~0.005 gain, left the residual stream to the patch embedding and never used
    # global attention (merging changed its depth by < 0.04 %, relative pose was not learned)
    init_values=1.0,
    dino_num_heads=16,
    camera_trunk_depth=2,
    camera_num_heads=8,
    dpt_features=64,
    dpt_out_channels=(64, 96, 128, 128),
)

PRESETS: dict[str, VGGTConfig] = {
    "vggt-1b": VGGT_1B,
    "vggt-1b-layer": VGGT_1B_LAYER,
    "vggt-tiny": VGGT_TINY,
    "vggt-proxy": VGGT_PROXY,
}


def get_preset(name: str) -> VGGTConfig:
    """The config of a named preset; unknown names raise with the known ones listed."""
    try:
        return PRESETS[name]
    except KeyError:
        hint = did_you_mean(name, list(PRESETS))
        raise KeyError(f"unknown VGGT preset {name!r}{hint}; known presets: {', '.join(PRESETS)}") from None
