"""Specification tests of the VGGT re-implementation (random weights; no downloads)."""

from __future__ import annotations

import ast
import logging
import math
from pathlib import Path

import pytest
import torch

from harness.models.seam import AttentionLayout, Recorder, sdpa_attention
from harness.models.vggt import (
    PRESETS,
    CheckpointError,
    VGGTConfig,
    build_vggt,
    default_intermediate_layers,
    extri_intri_to_pose_encoding,
    load_checkpoint,
    load_images,
    pose_encoding_to_extri_intri,
    preprocess_tensor,
    save_checkpoint,
)
from harness.models.vggt.dpt_head import ResidualConvUnit
from harness.models.vggt.layers import RoPE2D, patch_positions
from harness.models.vggt.pose import mat_to_quat, quat_to_mat
from harness.models.vggt.preprocess import resized_hw

MANIFEST = Path(__file__).parent / "vggt-1b-state-dict.tsv"
H, W = 56, 70  # 4 x 5 patches
B, S = 2, 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The CPU is shared; one intra-op thread avoids oversubscription stalls."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _tiny(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_vggt("vggt-tiny", **kw)


@pytest.fixture(scope="module")
def tiny():
    return _tiny()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(B, S, 3, H, W, generator=g)


def _read_manifest() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in MANIFEST.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        out[key] = tuple(ast.literal_eval(shape))
    return out


# ---------------------------------------------------------------- official checkpoint layout


def test_vggt_1b_state_dict_matches_official_manifest_exactly():
    with torch.device("meta"):
        model = build_vggt("vggt-1b", device="meta", enable_track=True)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = _read_manifest()
    assert len(expected) == 1797
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: got[k] for k in expected if got[k] != expected[k]} == {}
    assert sum(math.prod(s) for s in got.values()) == 1_256_537_516
    assert all(p.is_meta for p in model.parameters())


def test_vggt_1b_without_track_head_has_every_other_key():
    model = build_vggt("vggt-1b", device="meta")
    keys = set(model.state_dict())
    expected = {k for k in _read_manifest() if not k.startswith("track_head.")}
    assert keys == expected


def test_normalization_buffers_are_not_in_the_state_dict(tiny):
    assert not any("_resnet" in k for k in tiny.state_dict())
    assert tiny.aggregator._resnet_mean.shape == (1, 1, 3, 1, 1)


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, images, suffix):
    src = _tiny(seed=3)
    path = save_checkpoint(src, tmp_path / f"tiny{suffix}")
    dst = _tiny(seed=4)
    report = load_checkpoint(dst, path)
    assert report.loaded == len(src.state_dict())
    with torch.no_grad():
        a, b = src(images), dst(images)
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
        assert torch.equal(a[key], b[key]), key


def test_checkpoint_wrapped_under_model_key_loads(tmp_path):
    src = _tiny(seed=3)
    torch.save({"model": src.state_dict(), "epoch": 3}, tmp_path / "wrapped.pth")
    dst = _tiny(seed=4)
    load_checkpoint(dst, tmp_path / "wrapped.pth")
    assert torch.equal(dst.aggregator.camera_token, src.aggregator.camera_token)


def test_strict_load_lists_missing_unexpected_and_misshapen_keys(tmp_path):
    sd = _tiny().state_dict()
    del sd["depth_head.norm.weight"]
    sd["extra.weight"] = torch.zeros(2)
    sd["aggregator.camera_token"] = torch.zeros(1, 2, 1, 8)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(_tiny(), tmp_path / "bad.pt")
    msg = str(err.value)
    assert str(tmp_path / "bad.pt") in msg
    assert "1 missing keys [depth_head.norm.weight]" in msg
    assert "1 unexpected keys [extra.weight]" in msg
    assert "aggregator.camera_token (checkpoint (1, 2, 1, 8), model (1, 2, 1, 64))" in msg


def test_strict_error_shows_first_ten_keys_and_the_count(tmp_path):
    sd = _tiny().state_dict()
    for i in range(13):
        sd[f"extra.{i}"] = torch.zeros(1)
    torch.save(sd, tmp_path / "many.pt")
    with pytest.raises(
        CheckpointError, match=r"13 unexpected keys \[extra\.0, .*extra\.9, \.\.\. \(3 more\)\]"
    ):
        load_checkpoint(_tiny(), tmp_path / "many.pt")


def test_non_strict_load_skips_missing_and_unexpected_but_not_misshapen(tmp_path):
    src = _tiny(seed=3)
    sd = src.state_dict()
    del sd["depth_head.norm.weight"]
    sd["extra.weight"] = torch.zeros(2)
    torch.save(sd, tmp_path / "partial.pt")
    dst = _tiny(seed=4)
    report = load_checkpoint(dst, tmp_path / "partial.pt", strict=False)
    assert report.missing == ["depth_head.norm.weight"]
    assert report.unexpected == ["extra.weight"]
    assert torch.equal(dst.point_head.norm.weight, src.point_head.norm.weight)
    sd["aggregator.camera_token"] = torch.zeros(3)
    torch.save(sd, tmp_path / "misshapen.pt")
    with pytest.raises(CheckpointError, match="misshapen"):
        load_checkpoint(dst, tmp_path / "misshapen.pt", strict=False)


def test_nonexistent_checkpoint_path_raises_file_not_found(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_checkpoint(_tiny(), missing)


def test_unknown_checkpoint_suffix_is_rejected(tmp_path):
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="allowed suffixes"):
        load_checkpoint(_tiny(), tmp_path / "w.npz")


def test_track_keys_are_skipped_with_a_log_line_when_track_is_disabled(tmp_path, caplog):
    full = _tiny(seed=3, enable_track=True)
    n_track = sum(1 for k in full.state_dict() if k.startswith("track_head."))
    path = save_checkpoint(full, tmp_path / "full.safetensors")
    with caplog.at_level(logging.INFO, logger="harness.models.vggt.checkpoint"):
        report = load_checkpoint(_tiny(seed=4), path)
    assert f"track head disabled: skipping {n_track} checkpoint keys" in caplog.text
    assert len(report.skipped) == n_track
    with_track = _tiny(seed=4, enable_track=True)
    load_checkpoint(with_track, path)  # strict, track head included
    assert torch.equal(with_track.track_head.tracker.query_ref_token, full.track_head.tracker.query_ref_token)


def test_meta_model_takes_checkpoint_tensors_and_runs(tmp_path, images):
    src = _tiny(seed=3)
    path = save_checkpoint(src, tmp_path / "tiny.safetensors")
    meta = build_vggt("vggt-tiny", device="meta")
    load_checkpoint(meta, path)
    assert not any(t.is_meta for t in list(meta.parameters()) + list(meta.buffers()))
    with torch.no_grad():
        assert torch.equal(meta(images)["depth"], src(images)["depth"])


def test_tiny_dino_patch_embed_round_trips_and_interpolates_pos_embed(tmp_path):
    cfg = VGGTConfig(**{**PRESETS["vggt-tiny"].__dict__, "patch_embed": "dinov2", "dino_depth": 1})
    torch.manual_seed(0)
    src = build_vggt(cfg)
    assert src.aggregator.patch_embed.pos_embed.shape == (1, 17, 64)  # 4x4 grid + cls
    keys = set(src.state_dict())
    assert {"aggregator.patch_embed.mask_token", "aggregator.patch_embed.patch_embed.proj.weight"} <= keys
    path = save_checkpoint(src, tmp_path / "dino.pt")
    torch.manual_seed(1)
    dst = build_vggt(cfg)
    load_checkpoint(dst, path)
    x = torch.rand(1, 2, 3, 56, 70)  # 4x5 grid: pos-embed is resized
    with torch.no_grad():
        assert torch.equal(src(x)["depth"], dst(x)["depth"])


# ---------------------------------------------------------------- attention seam and layout


def _run_hooked(model, images, attention_fn, hooks) -> None:
    """Run ``model`` on ``images`` through ``attention_fn`` (no heads, no grad), then remove ``hooks``."""
    try:
        with torch.no_grad():
            model(images, attention_fn=attention_fn, heads=())
    finally:
        for h in hooks:
            h.remove()


def test_frame_and_global_attention_see_the_expected_shapes(tiny, images):
    P = 5 + 4 * 5
    C = 64
    frame_inputs = []
    hooks = [
        blk.attn.register_forward_pre_hook(lambda m, args: frame_inputs.append(tuple(args[0].shape)))
        for blk in tiny.aggregator.frame_blocks
    ]
    seen = []

    def recording(q, k, v, layout):
        seen.append((tuple(q.shape), tuple(k.shape), tuple(v.shape), tuple(layout.x_norm.shape)))
        return sdpa_attention(q, k, v, layout)

    _run_hooked(tiny, images, recording, hooks)
    assert frame_inputs == [(B * S, P, C)] * 4
    assert seen == [((B, 4, S * P, 16),) * 3 + ((B, S * P, C),)] * 4


def test_layout_fields_are_correct_for_every_global_layer(tiny, images):
    layouts: list[AttentionLayout] = []
    rec = Recorder()

    def recording(q, k, v, layout):
        layouts.append(layout)
        return sdpa_attention(q, k, v, layout)

    with torch.no_grad():
        tiny(images, attention_fn=recording, recorder=rec, heads=())
    assert [lo.layer for lo in layouts] == [0, 1, 2, 3]
    for lo in layouts:
        assert (lo.frames, lo.tokens_per_frame, lo.patch_h, lo.patch_w, lo.patch_start) == (S, 25, 4, 5, 5)
        assert lo.num_tokens == S * 25
        assert lo.recorder is rec
    assert rec.counters["tokens_q"] == 4 * 4 * S * 25  # layers x heads x tokens (the seam's convention)


def test_layout_x_norm_is_the_normed_global_block_input(tiny, images):
    block_inputs = {}
    hooks = [
        blk.register_forward_pre_hook(lambda m, args, i=i: block_inputs.__setitem__(i, args[0]))
        for i, blk in enumerate(tiny.aggregator.global_blocks)
    ]
    x_norms = {}

    def recording(q, k, v, layout):
        x_norms[layout.layer] = layout.x_norm
        return sdpa_attention(q, k, v)

    _run_hooked(tiny, images, recording, hooks)
    for i, blk in enumerate(tiny.aggregator.global_blocks):
        assert torch.equal(x_norms[i], blk.norm1(block_inputs[i]))


def test_wrapped_sdpa_attention_fn_gives_identical_outputs(tiny, images):
    def wrapped(q, k, v, layout):
        return sdpa_attention(q, k, v, layout)

    with torch.no_grad():
        ref = tiny(images)
        out = tiny(images, attention_fn=wrapped)
    for key in ("pose_enc", "depth", "world_points", "world_points_conf"):
        assert torch.equal(ref[key], out[key]), key


def test_attention_fn_changes_only_global_attention(tiny, images):
    calls = []

    def zero(q, k, v, layout):
        calls.append(layout.layer)
        return torch.zeros_like(q)

    with torch.no_grad():
        ref = tiny(images)
        out = tiny(images, attention_fn=zero)
    assert calls == [0, 1, 2, 3]
    assert not torch.equal(ref["depth"], out["depth"])


def test_attention_fn_returning_a_wrong_shape_is_reported(tiny, images):
    with pytest.raises(ValueError, match="must return the shape of q"):
        with torch.no_grad():
            tiny(images, attention_fn=lambda q, k, v, layout: q[:, :, :-1])


# ---------------------------------------------------------------- RoPE and special tokens


def test_rope_positions_specials_at_zero_patches_offset_by_one_same_in_every_frame():
    pos = patch_positions(3, 2, 3, 5, "cpu")
    assert pos.shape == (3, 5 + 6, 2)
    assert pos[:, :5].eq(0).all()
    expected = torch.tensor([[1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]])
    for frame in range(3):
        assert torch.equal(pos[frame, 5:], expected)


def test_rope_at_position_zero_is_the_identity_and_rotates_halves_by_y_and_x():
    rope = RoPE2D(100.0)
    x = torch.randn(1, 2, 3, 8)
    pos = torch.tensor([[[0, 0], [2, 0], [0, 3]]])
    out = rope(x, pos)
    assert torch.allclose(out[:, :, 0], x[:, :, 0], atol=0, rtol=0)
    # token 1: only the first (y) half rotates, by angle 2 * 100^(-2j/4), j = 0, 1
    assert torch.equal(out[:, :, 1, 4:], x[:, :, 1, 4:])
    inv = torch.tensor([1.0, 100.0**-0.5])
    ang = 2 * inv
    u, w = x[:, :, 1, :2], x[:, :, 1, 2:4]
    exp = torch.cat([u * ang.cos() - w * ang.sin(), w * ang.cos() + u * ang.sin()], dim=-1)
    assert torch.allclose(out[:, :, 1, :4], exp, atol=1e-6)
    # token 2: only the second (x) half rotates
    assert torch.equal(out[:, :, 2, :4], x[:, :, 2, :4])
    assert not torch.allclose(out[:, :, 2, 4:], x[:, :, 2, 4:])


def test_first_frame_slot_of_special_tokens_goes_to_frame_zero_only(images):
    model = _tiny()
    with torch.no_grad():
        model.aggregator.camera_token[:, 0] = 1.0
        model.aggregator.camera_token[:, 1] = 2.0
        model.aggregator.register_token[:, 0] = 3.0
        model.aggregator.register_token[:, 1] = 4.0
        tokens = model.aggregator.embed(images).view(B, S, 25, 64)
    assert tokens[:, 0, 0].eq(1.0).all() and tokens[:, 1:, 0].eq(2.0).all()
    assert tokens[:, 0, 1:5].eq(3.0).all() and tokens[:, 1:, 1:5].eq(4.0).all()


# ---------------------------------------------------------------- outputs, heads, lean mode


def test_output_shapes_and_value_ranges(tiny, images):
    with torch.no_grad():
        out = tiny(images)
    assert out["pose_enc"].shape == (B, S, 9)
    assert len(out["pose_enc_list"]) == 4
    assert out["depth"].shape == (B, S, H, W, 1)
    assert out["depth_conf"].shape == (B, S, H, W)
    assert out["world_points"].shape == (B, S, H, W, 3)
    assert out["world_points_conf"].shape == (B, S, H, W)
    assert (out["depth"] > 0).all()
    assert (out["depth_conf"] > 1).all() and (out["world_points_conf"] > 1).all()
    assert (out["pose_enc"][..., 7:] >= 0).all()  # ReLU on the FoVs
    assert torch.equal(out["images"], images)


def test_single_sequence_input_gets_a_batch_dimension(tiny, images):
    with torch.no_grad():
        out = tiny(images[0])
    assert out["depth"].shape == (1, S, H, W, 1)


def test_a_single_frame_runs(tiny, images):
    with torch.no_grad():
        out = tiny(images[:1, :1])
    assert out["pose_enc"].shape == (1, 1, 9) and out["depth"].shape == (1, 1, H, W, 1)


def test_head_selection_runs_only_the_requested_heads(tiny, images):
    with torch.no_grad():
        out = tiny(images, heads=("camera", "depth"))
    assert {"pose_enc", "depth", "depth_conf"} <= set(out)
    assert "world_points" not in out
    with pytest.raises(ValueError, match="unknown VGGT heads"):
        tiny(images, heads=("normals",))


def test_lean_mode_keeps_only_the_head_layers_equal_to_the_full_outputs(tiny, images):
    with torch.no_grad():
        full, start = tiny.aggregator(images)
        lean, _ = tiny.aggregator(images, keep_layers={1, 3})
    assert start == 5 and len(full) == 4
    assert sorted(lean) == [1, 3]
    for i in (1, 3):
        assert torch.equal(lean[i], full[i])
        assert lean[i].shape == (B, S, 25, 128)


def test_lean_model_outputs_equal_the_full_model(images):
    full = _tiny()
    lean = _tiny(lean=True)
    lean.load_state_dict(full.state_dict())
    assert lean.layers_needed(("camera",)) == {3}
    assert lean.layers_needed(("depth",)) == {0, 1, 2, 3}
    with torch.no_grad():
        a, b = full(images), lean(images)
    for key in ("pose_enc", "depth", "world_points_conf"):
        assert torch.equal(a[key], b[key]), key


def test_dpt_frame_chunking_does_not_change_the_result(tiny, images):
    with torch.no_grad():
        tokens, start = tiny.aggregator(images)
        one = tiny.depth_head(tokens, images, start, frames_chunk_size=1)
        all_ = tiny.depth_head(tokens, images, start, frames_chunk_size=8)
    assert torch.allclose(one[0], all_[0], rtol=1e-5, atol=1e-6)
    assert torch.allclose(one[1], all_[1], rtol=1e-5, atol=1e-6)


def test_residual_conv_unit_skip_carries_relu_of_its_input():
    rcu = ResidualConvUnit(4)
    with torch.no_grad():
        for conv in (rcu.conv1, rcu.conv2):
            conv.weight.zero_()
            conv.bias.zero_()
        x = torch.randn(1, 4, 3, 3)
        assert torch.equal(rcu(x), torch.relu(x))


def test_track_head_outputs_tracks_visibility_and_confidence(images):
    model = _tiny(enable_track=True)
    q = torch.tensor([[10.0, 20.0], [30.0, 40.0], [5.0, 50.0]])
    with torch.no_grad():
        out = model(images, query_points=q.expand(B, 3, 2))
    assert out["track"].shape == (B, S, 3, 2)
    assert out["vis"].shape == (B, S, 3) and out["conf"].shape == (B, S, 3)
    assert torch.allclose(out["track"][:, 0], q.expand(B, 3, 2))  # frame 0 stays the query
    assert ((out["vis"] > 0) & (out["vis"] < 1)).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for bf16 autocast")
def test_heads_run_in_fp32_under_cuda_bf16_autocast(images):
    model = _tiny().cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(images.cuda())
    assert out["depth"].dtype == torch.float32 and out["pose_enc"].dtype == torch.float32


# ---------------------------------------------------------------- presets


def test_default_intermediate_layers_keep_official_relative_depths():
    assert default_intermediate_layers(24) == (4, 11, 17, 23)
    assert default_intermediate_layers(4) == (0, 1, 2, 3)
    assert default_intermediate_layers(2) == (0, 0, 1, 1)


def test_presets_shapes():
    assert set(PRESETS) == {"vggt-1b", "vggt-1b-layer", "vggt-tiny", "vggt-proxy"}
    layer = PRESETS["vggt-1b-layer"]
    assert (layer.embed_dim, layer.num_heads, layer.head_dim, layer.qk_norm) == (1024, 16, 64, True)
    tiny = PRESETS["vggt-tiny"]
    assert (tiny.embed_dim, tiny.depth, tiny.num_heads, tiny.patch_embed) == (64, 4, 4, "conv")
    proxy = PRESETS["vggt-proxy"]  # the official head count, so every merging method runs per head
    assert (proxy.embed_dim, proxy.depth, proxy.num_heads, proxy.qk_norm, proxy.rope_freq > 0) == (
        128, 4, 16, True, True)


def test_config_validation_says_what_is_wrong():
    with pytest.raises(ValueError, match="head_dim % 4"):
        VGGTConfig(embed_dim=60, num_heads=6)
    with pytest.raises(ValueError, match="outside"):
        VGGTConfig(depth=4)
    with pytest.raises(KeyError, match="did you mean 'vggt-tiny'"):
        build_vggt("vggt-tiyn")


# ---------------------------------------------------------------- preprocessing


def _save_png(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    from PIL import Image

    color = (200, 10, 10, 0) if mode == "RGBA" else (200, 10, 10)
    Image.new(mode, (width, height), color).save(path)
    return path


def test_crop_mode_resizes_landscape_to_width_518(tmp_path):
    out = load_images([_save_png(tmp_path / "a.png", 640, 480)])
    assert out.shape == (1, 3, 392, 518)
    assert out.min() >= 0 and out.max() <= 1


def test_crop_mode_centre_crops_tall_images_to_518(tmp_path):
    assert resized_hw(640, 480, "crop") == (686, 518)
    out = load_images([_save_png(tmp_path / "t.png", 480, 640)])
    assert out.shape == (1, 3, 518, 518)


def test_pad_mode_pads_white_to_a_square(tmp_path):
    out = load_images([_save_png(tmp_path / "a.png", 640, 480)], mode="pad")
    assert out.shape == (1, 3, 518, 518)
    assert out[:, :, :63].eq(1.0).all() and out[:, :, -63:].eq(1.0).all()  # (518 - 392) / 2 rows each side
    assert out[0, 1, 259, 259] < 0.1  # the red image in the middle


def test_rgba_is_composited_on_white(tmp_path):
    out = load_images([_save_png(tmp_path / "a.png", 140, 140, mode="RGBA")], target=140)
    assert torch.allclose(out, torch.ones_like(out))


def test_mixed_shapes_are_padded_white_with_a_warning(tmp_path, caplog):
    paths = [_save_png(tmp_path / "a.png", 640, 480), _save_png(tmp_path / "b.png", 480, 640)]
    with caplog.at_level(logging.WARNING):
        out = load_images(paths)
    assert out.shape == (2, 3, 518, 518)
    assert "different shapes" in caplog.text
    assert out[0, :, :63].eq(1.0).all()


def test_small_targets_must_be_multiples_of_the_patch_size(tmp_path):
    out = load_images([_save_png(tmp_path / "a.png", 640, 480)], target=224)
    assert out.shape == (1, 3, 168, 224)
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        load_images([tmp_path / "a.png"], target=220)


def test_preprocess_tensor_matches_the_loader_sizes():
    imgs = torch.rand(2, 3, 480, 640)
    assert preprocess_tensor(imgs).shape == (2, 3, 392, 518)
    assert preprocess_tensor(imgs, mode="pad").shape == (2, 3, 518, 518)
    rgba = torch.cat([torch.zeros(1, 3, 28, 28), torch.zeros(1, 1, 28, 28)], dim=1)
    assert torch.allclose(preprocess_tensor(rgba, target=28), torch.ones(1, 3, 28, 28))


def test_missing_image_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_images([tmp_path / "nope.png"])


# ---------------------------------------------------------------- pose encoding


def test_pose_encoding_decodes_to_opencv_extrinsics_and_pinhole_intrinsics():
    enc = torch.zeros(1, 1, 9)
    enc[..., :3] = torch.tensor([1.0, 2.0, 3.0])
    enc[..., 6] = 1.0  # identity quaternion (x, y, z, w)
    enc[..., 7] = enc[..., 8] = math.pi / 2
    extri, intri = pose_encoding_to_extri_intri(enc, (392, 518))
    assert torch.allclose(extri[0, 0], torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3]]))
    expected_k = torch.tensor([[259.0, 0, 259], [0, 196, 196], [0, 0, 1]])
    assert torch.allclose(intri[0, 0], expected_k, atol=1e-4)


def test_pose_encoding_round_trip():
    g = torch.Generator().manual_seed(0)
    quat = torch.randn(2, 5, 4, generator=g)
    quat = quat / quat.norm(dim=-1, keepdim=True)
    quat = torch.where(quat[..., 3:] < 0, -quat, quat)
    enc = torch.cat([torch.randn(2, 5, 3, generator=g), quat, torch.rand(2, 5, 2, generator=g) + 0.5], dim=-1)
    extri, intri = pose_encoding_to_extri_intri(enc, (392, 518))
    back = extri_intri_to_pose_encoding(extri, intri, (392, 518))
    assert torch.allclose(back, enc, atol=1e-5)
    assert torch.allclose(quat_to_mat(mat_to_quat(extri[..., :3])), extri[..., :3], atol=1e-5)


def test_every_attention_layer_rotates_queries_and_keys_by_their_patch_positions(tiny, images):
    """A VGGT whose frame or global attention lost its positional encoding (no ``pos`` passed, or
    the wrong one) must fail here: the q and k each attention sees are its own projections
    rotated by the patch positions (frame: one frame's; global: every frame's, the same grid)."""
    captured, frame_pos = {}, {}

    def recording(q, k, v, layout):
        captured[layout.layer] = (q, k, layout)
        return sdpa_attention(q, k, v)

    hooks = [blk.attn.register_forward_pre_hook(
        lambda m, args, i=i: frame_pos.__setitem__(i, args[1] if len(args) > 1 else None))
        for i, blk in enumerate(tiny.aggregator.frame_blocks)]
    _run_hooked(tiny, images, recording, hooks)
    seen = 0
    for i, blk in enumerate(tiny.aggregator.global_blocks):
        q, k, layout = captured[i]
        attn = blk.attn
        B, N, _ = layout.x_norm.shape
        qkv = attn.qkv(layout.x_norm).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q0, k0 = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        grid = patch_positions(layout.frames, layout.patch_h, layout.patch_w, layout.patch_start, "cpu")
        pos = grid.view(1, layout.frames * layout.tokens_per_frame, 2).expand(B, -1, -1)
        rope = tiny.aggregator.rope  # parameter-free; its rotation itself is checked by the RoPE tests above
        assert torch.allclose(q, rope(q0, pos), atol=1e-6) and torch.allclose(k, rope(k0, pos), atol=1e-6)
        patches = slice(layout.patch_start, None)
        assert not torch.allclose(q[:, :, patches], q0[:, :, patches], atol=1e-3)  # the rotation matters
        seen += 1
    assert seen == len(tiny.aggregator.global_blocks) > 0
    layout = captured[0][2]
    one_frame = patch_positions(1, layout.patch_h, layout.patch_w, layout.patch_start, "cpu")[0]
    for i in range(len(tiny.aggregator.frame_blocks)):
        pos = frame_pos[i]
        assert pos is not None and pos.shape[0] == B * layout.frames
        assert all(torch.equal(p.cpu().long(), one_frame.long()) for p in pos)
