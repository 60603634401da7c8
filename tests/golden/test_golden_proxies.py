"""The committed proxies' outputs on fixed held-out inputs: model code and weights pinned together.

``swin-proxy.safetensors`` (logits of the first 2 held-out shapes images) and
``vggt-proxy.safetensors`` (camera and depth outputs on the first 4 frames of the first held-out
video scene) were written by ``make_golden.py proxies`` from harness/proxies/*/model.safetensors
through the harness's own loading path; the script also checked them against plain timm and the
official VGGT code on the same weights (difference 0, recorded in each file's ``official_check``).
A change of the model code, the loader or the committed weights that moves an output fails here.

Tolerance: 1e-5 + 1e-4 |ref| per element (float32 both sides, the same operations; bitwise equal on
the machine that wrote the files; the margin covers other CPUs and thread counts).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from harness.models.swin import build_swin
from harness.models.vggt import load_checkpoint
from harness.models.weights import resolve_weights
from harness.train.vggt_proxy import HEADS, VGGTProxy

pytestmark = pytest.mark.usefixtures("one_thread")

HERE = Path(__file__).parent
ATOL, RTOL = 1e-5, 1e-4


def read(name: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(HERE / name), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def test_swin_proxy_logits_on_held_out_images_are_pinned():
    meta, golden = read("swin-proxy.safetensors")
    model = build_swin("swin_proxy", 224, checkpoint=resolve_weights("proxy:swin-proxy").path)
    with torch.no_grad():
        logits = model(golden["input.images"].float())
    torch.testing.assert_close(logits, golden["output.logits"], atol=ATOL, rtol=RTOL)
    assert torch.equal(logits.argmax(-1), golden["input.labels"])  # both images classified right
    assert meta["official_check"].endswith("max abs diff 0")


@pytest.fixture(scope="module")
def vggt_proxy() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    meta, golden = read("vggt-proxy.safetensors")
    assert meta["official_check"].endswith("max abs diff 0")
    model = VGGTProxy().build_model(0)
    load_checkpoint(model, resolve_weights("proxy:vggt-proxy").path, strict=True)
    with torch.no_grad():
        out = model.eval()(golden["input.images"].float()[None], heads=HEADS)
    out["pose_enc_list"] = torch.stack(out["pose_enc_list"])
    return out, golden


@pytest.mark.parametrize("key", ["pose_enc_list", "depth", "depth_conf"])
def test_vggt_proxy_outputs_on_a_held_out_scene_are_pinned(vggt_proxy, key):
    out, golden = vggt_proxy
    torch.testing.assert_close(out[key], golden[f"output.{key}"], atol=ATOL, rtol=RTOL)
