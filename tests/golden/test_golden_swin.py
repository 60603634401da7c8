"""The harness's Swin paths against timm's own SwinTransformer: golden tensors of a small seeded model.

``swin-small.safetensors`` holds the state dict of a timm ``SwinTransformer`` (embed_dim 16, depths
2-2-2, 120 px: every stage pads to a multiple of the window, 15 -> 8 is an odd-size merge) with
seeded weights, two fixed images and timm's features and logits (timm's default attention path;
versions in the file's metadata, see tests/golden/README.md). The harness must reproduce them
through its checkpoint loader with fused attention off, and through the two-branch quantized
block (:mod:`harness.quant.qswin`, via MixA-Q's ``apply``) with every bit width at 32 (float),
whatever the windows' routing between the branches. A timm upgrade that changes the numerics
fails here too.

Tolerance: 1e-5 + 1e-4 |ref| per element. Float32 on both sides with the same operations per
window; on the machine that wrote the file they agree bitwise. The margin covers other CPUs and
thread counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from timm.models.swin_transformer import SwinTransformer

from harness.methods.mixaq import MixAQParams, apply
from harness.models.swin import load_checkpoint, set_fused_attn

pytestmark = pytest.mark.usefixtures("one_thread")

GOLDEN = Path(__file__).parent / "swin-small.safetensors"
ATOL, RTOL = 1e-5, 1e-4
FLOAT_BITS = 32


@pytest.fixture(scope="module")
def golden() -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(GOLDEN), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def model(golden, tmp_path_factory) -> SwinTransformer:
    """timm's SwinTransformer at the golden config, loaded by the harness's loader, fused attention off."""
    meta, tensors = golden
    path = tmp_path_factory.mktemp("golden") / "swin-small.safetensors"
    save_file({k: v for k, v in tensors.items() if not k.startswith(("input.", "output."))}, str(path))
    m = SwinTransformer(**json.loads(meta["config"]))
    load_checkpoint(m, path)
    set_fused_attn(m, False)
    return m.eval()


def test_the_file_says_which_timm_and_torch_made_it(golden):
    meta, _ = golden
    assert meta["source"] == "timm.models.swin_transformer.SwinTransformer"
    assert meta["timm"] and meta["torch"] and meta["generator"].startswith("tests/golden/make_golden.py")


def test_the_harness_loader_reproduces_timms_features_and_logits(golden, model):
    _, tensors = golden
    with torch.no_grad():
        feats = model.forward_features(tensors["input.images"].float())
        logits = model.forward_head(feats)
    torch.testing.assert_close(feats, tensors["output.features"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(logits, tensors["output.logits"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0], ids=["all-high", "split", "all-low"])
def test_the_float_two_branch_model_reproduces_timms_logits(golden, model, ratio):
    """ratio: the share of each image's windows routed to the low branch (both branches float)."""
    _, tensors = golden
    params = MixAQParams(w_bits=FLOAT_BITS, a_bits_high=FLOAT_BITS, a_bits_low=FLOAT_BITS,
                         embed_bits=FLOAT_BITS, ratio=ratio)
    q = apply(model, params, calib_images=None)
    with torch.no_grad():
        logits = q(tensors["input.images"].float())
    torch.testing.assert_close(logits, tensors["output.logits"], atol=ATOL, rtol=RTOL)
    n_low = [stage.last_routes[0].counts[1] for stage in q.layers]
    assert (sum(n_low) == 0) == (ratio == 0.0)  # the split really used the low branch


def test_the_golden_logits_differ_between_the_two_images(golden):
    logits = golden[1]["output.logits"]
    assert (logits[0] - logits[1]).abs().max() > 0.1
