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
