"""Work accounting: MACs per Swin operation (vs torch's FLOP counter) and BOPs with per-window bits."""

from __future__ import annotations

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer
from torch.utils.flop_counter import FlopCounterMode

from harness.metrics.work import (
    BlockGeometry,
    SwinGeometry,
    block_bops,
    bops,
    equivalent_act_bits,
    float_bops,
    model_macs,
)
from harness.models.swin import build_swin, set_fused_attn

pytestmark = pytest.mark.usefixtures("one_thread")


def _block(**kw) -> BlockGeometry:
    base = dict(
        stage=0,
        index=0,
        dim=4,
        attn_dim=4,
        heads=2,
        hidden=16,
        resolution=(4, 4),
        window=(2, 2),
        shift=(0, 0),
    )
    base.update(kw)
    return BlockGeometry(**base)


def _flops_macs(model: torch.nn.Module, img_size: int) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.randn(1, 3, img_size, img_size))
    return fc.get_total_flops() / 2


@pytest.mark.parametrize("img_size", [112, 160], ids=["tiling", "padded"])
def test_macs_match_torch_flop_counter(img_size):
    torch.manual_seed(0)
    model = SwinTransformer(
        img_size=img_size, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)
    ).eval()
    set_fused_attn(model, False)
    assert model_macs(SwinGeometry.from_model(model))["total"] == _flops_macs(model, img_size)


def test_swin_t_macs_match_torch_flop_counter_and_the_spec_facts():
    model = build_swin("swin_t", 224)
    m = model_macs(SwinGeometry.from_model(model))
    assert m["total"] == _flops_macs(model, 224)
    assert m["blocks"] == pytest.approx(4.30e9, rel=2e-3)  # spec section 3: ~4.30 G block MACs at 224
    assert (m["qk"] + m["av"]) / m["blocks"] == pytest.approx(0.033, abs=1e-3)  # act x act share
    geom = SwinGeometry.from_model(model)
    shares = [
        sum(sum(b.macs().values()) for b in geom.blocks if b.stage == s) / m["blocks"] for s in range(4)
    ]
    assert shares == pytest.approx([0.175, 0.168, 0.494, 0.163], abs=1.5e-3)


def test_block_macs_by_hand():
    # 4 x 4 tokens, 2 x 2 windows (N = 4), C = A = 4, hidden 16
    m = _block().macs()
    assert m == {
        "qkv": 4 * 4 * 4 * 12,
        "proj": 4 * 4 * 4 * 4,
        "qk": 4 * 16 * 4,
        "av": 4 * 16 * 4,
        "fc1": 16 * 4 * 16,
        "fc2": 16 * 16 * 4,
    }


def test_padded_windows_count_attention_on_pads_and_mlp_on_real_tokens_only():
    blk = _block(resolution=(3, 3))  # padded to 4 x 4: windows hold 4, 2, 2, 1 real tokens
    assert blk.real_tokens().tolist() == [4, 2, 2, 1]
    m = blk.macs()
    assert m["qkv"] == 4 * 4 * 4 * 12 and m["fc1"] == 9 * 4 * 16


def test_uniform_bops_by_hand_both_conventions():
    blk = _block()
    lin = 4 * 4 * 4 * 12 + 4 * 4 * 4 * 4 + 16 * 4 * 16 * 2  # qkv + proj + fc1 + fc2
    aa = 2 * 4 * 16 * 4
    assert block_bops(blk, 4, w_bits=4, act_act_convention="product") == lin * 4 * 4 + aa * 4 * 4
    assert block_bops(blk, 8, w_bits=4, act_act_convention="product") == lin * 4 * 8 + aa * 8 * 8
    assert block_bops(blk, 8, w_bits=4, act_act_convention="linear") == (lin + aa) * 4 * 8


def test_per_window_bits_and_pruned_windows():
    blk = _block()
    per_window = sum(v[0] for v in blk.op_macs_per_window().values())  # all 4 windows alike here
    got = block_bops(blk, torch.tensor([8, 4, 4, 0]), w_bits=2, act_act_convention="linear")
    assert got == per_window * 2 * (8 + 4 + 4 + 0)
    batch = torch.tensor([[8, 8, 8, 8], [0, 0, 0, 0]])  # a [B, nW] assignment is averaged over images
    assert block_bops(blk, batch, 2, "linear") == per_window * 2 * 16


def test_model_bops_add_embedding_parts_at_embed_bits():
    geom = SwinGeometry((_block(),), patch_embed_macs=100.0, merging_macs=(10.0,), head_macs=5.0)
    assert bops(geom, 4, w_bits=4, embed_bits=8) == 115 * 64 + block_bops(_block(), 4, 4)
    assert float_bops(geom) == model_macs(geom)["total"] * 32 * 32


def test_speedup_equals_high_over_equivalent_bits_in_the_linear_convention():
    geom = SwinGeometry((_block(), _block(index=1)), 0.0, (), 0.0)
    hi = bops(geom, 8, 4, 8)
    mixed = bops(geom, [torch.tensor([8, 8, 4, 4]), torch.tensor([8, 4, 4, 4])], 4, 8)
    b_eq = equivalent_act_bits(geom, mixed, 4, 8)
    assert b_eq == pytest.approx(5.5)
    assert hi / mixed == pytest.approx(8 / b_eq)


@pytest.mark.parametrize("convention", ["linear", "product"])
def test_equivalent_bits_of_a_uniform_model_are_its_bits(convention):
    model = build_swin("swin_micro", 112)
    geom = SwinGeometry.from_model(model)
    for b in (2, 3, 8):
        total = bops(geom, b, 4, 8, convention)
        assert equivalent_act_bits(geom, total, 4, 8, convention) == pytest.approx(b)


def test_geometry_at_448_has_the_spec_window_counts():
    geom = SwinGeometry.from_model(build_swin("swin_micro", 448))
    per_stage = {b.stage: b.n_windows for b in geom.blocks}
    assert per_stage == {0: 256, 1: 64, 2: 16, 3: 4}


def test_unknown_convention_is_rejected():
    with pytest.raises(ValueError, match="allowed: linear, product"):
        block_bops(_block(), 4, 4, "quadratic")


def test_model_macs_names_every_part_by_hand():
    geom = SwinGeometry((_block(),), patch_embed_macs=100.0, merging_macs=(10.0, 20.0), head_macs=5.0)
    blocks = 768 + 256 + 256 + 256 + 1024 + 1024  # qkv, proj, qk, av, fc1, fc2 of _block()
    assert model_macs(geom) == {
        "patch_embed": 100.0,
        "merging": 30.0,
        "head": 5.0,
        "qkv": 768.0,
        "proj": 256.0,
        "fc1": 1024.0,
        "fc2": 1024.0,
        "qk": 256.0,
        "av": 256.0,
        "blocks": float(blocks),
        "total": blocks + 135.0,
    }


def test_per_window_macs_are_float64_and_exact_past_float32_precision():
    # one 1-token window, C = A = 4097: qkv = 3 * 4097^2 = 50_356_227 and proj = 4097^2 = 16_785_409
    # are odd and above 2^24, so a float32 count would round them
    blk = _block(dim=4097, attn_dim=4097, hidden=1, resolution=(1, 1), window=(1, 1))
    per_window = blk.op_macs_per_window()
    assert {k: v.dtype for k, v in per_window.items()} == dict.fromkeys(per_window, torch.float64)
    m = blk.macs()
    assert m["qkv"] == 50_356_227.0
    assert m["proj"] == 16_785_409.0


def test_real_tokens_are_int64_counts():
    real = _block(resolution=(3, 3)).real_tokens()
    assert real.dtype == torch.int64
    assert real.tolist() == [4, 2, 2, 1]


def test_bits_given_as_a_uint8_tensor_do_not_wrap_around():
    # 16 x 16 = 256 and 16 * w_bits 16 = 256 overflow uint8; the counter must widen the bits first
    blk = _block()
    lin = 4 * 4 * 4 * 12 + 4 * 4 * 4 * 4 + 16 * 4 * 16 * 2
    aa = 2 * 4 * 16 * 4
    bits = torch.full((4,), 16, dtype=torch.uint8)
    assert block_bops(blk, bits, w_bits=16, act_act_convention="product") == (lin + aa) * 256
    assert block_bops(blk, bits, w_bits=16, act_act_convention="linear") == (lin + aa) * 256


def test_wrong_window_bit_count_is_rejected_with_the_block_and_both_counts():
    blk = _block(stage=1, index=2)  # 4 windows
    with pytest.raises(ValueError, match=r"^block 1\.2: 5 window bits, 4 windows$"):
        block_bops(blk, torch.full((5,), 4), 4)
    with pytest.raises(ValueError, match=r"^block 1\.2: 3 window bits, 4 windows$"):
        block_bops(blk, torch.full((2, 3), 4), 4)  # [B, nW] with the wrong nW


def test_wrong_block_entry_count_is_rejected_with_both_counts():
    geom = SwinGeometry((_block(),), 0.0, (), 0.0)
    with pytest.raises(ValueError, match=r"^3 block bit entries for 1 blocks$"):
        bops(geom, [4, 4, 4], 4, 8)


def test_a_none_block_entry_without_default_bits_is_rejected():
    geom = SwinGeometry((_block(), _block(index=1)), 0.0, (), 0.0)
    with pytest.raises(ValueError, match=r"^a block entry is None but no default_bits was given$"):
        bops(geom, [4, None], 4, 8)
    both = block_bops(_block(), 4, 4) + block_bops(_block(), 6, 4)
    assert bops(geom, [4, None], 4, 8, default_bits=6) == both


def test_equivalent_bits_without_attention_products_solve_the_linear_case_under_product():
    # attn_dim 0: no qkv/proj/q.k^T/attn.v MACs, so the product convention's quadratic has a = 0
    geom = SwinGeometry((_block(attn_dim=0),), patch_embed_macs=100.0, merging_macs=(), head_macs=0.0)
    lin = 16 * 4 * 16 * 2  # fc1 + fc2 = 2048
    fixed = 100 * 8 * 8
    assert bops(geom, 3, 4, 8, "product") == fixed + lin * 4 * 3
    assert equivalent_act_bits(geom, fixed + lin * 4 * 3, 4, 8, "product") == 3.0
    assert equivalent_act_bits(geom, fixed + lin * 4 * 2.5, 4, 8, "product") == 2.5


def test_from_model_reads_every_block_field_and_a_headless_model_has_no_head_macs():
    model = SwinTransformer(
        img_size=112, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=0
    ).eval()
    geom = SwinGeometry.from_model(model)
    # stage s: dim 16 * 2^s, heads (1, 2, 2, 4), mlp 4x; maps 28, 14, 7, 4 (112 / 32 padded up);
    # window 7 (the whole map from stage 2 on, so no shift there); odd blocks shift by 3
    expected = []
    stages = [(16, 1, 28, 7), (32, 2, 14, 7), (64, 2, 7, 7), (128, 4, 4, 4)]
    for s, (dim, heads, res, win) in enumerate(stages):
        for i in range(2):
            shift = (3, 3) if i == 1 and res > win else (0, 0)
            expected.append((s, i, dim, dim, heads, 4 * dim, (res, res), (win, win), shift))
    got = [
        (b.stage, b.index, b.dim, b.attn_dim, b.heads, b.hidden, b.resolution, b.window, b.shift)
        for b in geom.blocks
    ]
    assert got == expected
    assert all(type(b.attn_dim) is int for b in geom.blocks)
    assert geom.patch_embed_macs == 28 * 28 * 16 * 3 * 4 * 4
    assert geom.merging_macs == (14 * 14 * 64 * 32, 7 * 7 * 128 * 64, 4 * 4 * 256 * 128)
    assert geom.head_macs == 0.0  # head.fc is an Identity, not a Linear
    with_head = SwinTransformer(
        img_size=112, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=10
    ).eval()
    assert SwinGeometry.from_model(with_head).head_macs == 128 * 10
