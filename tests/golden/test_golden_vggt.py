"""Our VGGT against the official implementation: golden tensors of a small seeded model.

``vggt-small.safetensors`` holds the state dict of the official VGGT (facebookresearch/vggt
44b3afbd18, see its metadata and tests/golden/README.md) built at a small config with seeded
weights, a fixed input (2 sequences of 3 frames of 42 x 56 px, 5 query points) and the official
outputs. Here our VGGT is built at the same config, loads that state dict through the real
checkpoint loader (strict) and must reproduce every output. No network, no official code.

Tolerance: |ours - official| <= 1e-5 + 1e-4 |official| per element (track: 1e-4 px). Both sides
are float32 and run the same operations in the same order, so on the machine that wrote the file
they agree bitwise everywhere except the track head (<= 3e-6: its 4 refinement steps feed sampled
coordinates back into grid sampling); the margin covers other CPUs' vector widths and thread
counts (float32 rounding 6e-8 relative per operation, tens of operations deep). A wiring mistake
(a swapped RoPE axis, a wrong LayerNorm eps, a missing frame/global alternation, one perturbed
weight) moves the outputs by 1e-3 or more.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from harness.models.vggt import VGGTConfig, build_vggt, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

GOLDEN = Path(__file__).parent / "vggt-small.safetensors"
OFFICIAL_COMMIT = "44b3afbd1869d8bde4894dd8ea1e293112dd5eba"
ATOL, RTOL = 1e-5, 1e-4
TRACK_ATOL_PX = 1e-4
HEAD_OUTPUTS = ("pose_enc", "pose_enc_list", "depth", "depth_conf", "world_points", "world_points_conf")
TRACK_OUTPUTS = ("track", "vis", "conf")


def read_golden() -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(GOLDEN), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def config_of(meta: dict[str, str]) -> VGGTConfig:
    fields = json.loads(meta["config"])
    return VGGTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def state_dict_of(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if not k.startswith(("input.", "output."))}


@pytest.fixture(scope="module")
def golden() -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    return read_golden()


@pytest.fixture(scope="module")
def ours(golden, tmp_path_factory) -> dict[str, torch.Tensor]:
    """Our outputs on the golden input, the official weights loaded by load_checkpoint (strict)."""
    meta, tensors = golden
    path = tmp_path_factory.mktemp("golden") / "official-small.safetensors"
    save_file(state_dict_of(tensors), str(path))
    model = build_vggt(config_of(meta), enable_track=True)
    load_checkpoint(model, path, strict=True)
    images, queries = tensors["input.images"], tensors["input.query_points"]
    with torch.no_grad():
        layers, _ = model.aggregator(images)
        pred = model(images, queries)
    out = {f"aggregator.{i}": layer for i, layer in enumerate(layers)}
    out |= {k: pred[k] for k in HEAD_OUTPUTS + TRACK_OUTPUTS if k != "pose_enc_list"}
    out["pose_enc_list"] = torch.stack(pred["pose_enc_list"])
    return out


def test_the_file_says_which_official_code_and_versions_made_it(golden):
    meta, _ = golden
    assert meta["source"] == "facebookresearch/vggt" and meta["commit"] == OFFICIAL_COMMIT
    assert meta["torch"] and meta["python"] and meta["generator"].startswith("tests/golden/make_golden.py")
    assert GOLDEN.stat().st_size < 2_000_000


def test_the_official_state_dict_loads_strictly_with_every_key_used(golden, tmp_path):
    meta, tensors = golden
    path = tmp_path / "official-small.safetensors"
    save_file(state_dict_of(tensors), str(path))
    model = build_vggt(config_of(meta), enable_track=True)
    report = load_checkpoint(model, path, strict=True)
    assert report.loaded == len(state_dict_of(tensors)) == len(model.state_dict())
    assert not (report.missing or report.unexpected or report.skipped)


@pytest.mark.parametrize("layer", range(4))
def test_aggregator_layer_outputs_match_the_official(golden, ours, layer):
    _, tensors = golden
    key = f"aggregator.{layer}"
    assert ours[key].shape == tensors[f"output.{key}"].shape  # [B, S, P, 2C]
    torch.testing.assert_close(ours[key], tensors[f"output.{key}"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("key", HEAD_OUTPUTS)
def test_camera_depth_and_point_heads_match_the_official(golden, ours, key):
    _, tensors = golden
    torch.testing.assert_close(ours[key], tensors[f"output.{key}"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("key", TRACK_OUTPUTS)
def test_track_head_matches_the_official(golden, ours, key):
    _, tensors = golden
    atol, rtol = (TRACK_ATOL_PX, 0.0) if key == "track" else (ATOL, RTOL)
    torch.testing.assert_close(ours[key], tensors[f"output.{key}"], atol=atol, rtol=rtol)


def test_the_golden_outputs_are_not_degenerate(golden):
    """The check has teeth only if the outputs vary: frames, sequences and pixels all differ."""
    _, tensors = golden
    depth = tensors["output.depth"][..., 0]  # [B, S, H, W]
    assert depth.std() > 0.1
    assert (depth[:, 0] - depth[:, 1]).abs().mean() > 1e-2  # frame 0 has its own special tokens
    assert (depth[0] - depth[1]).abs().mean() > 1e-2  # the two sequences differ
    pose = tensors["output.pose_enc"]
    assert (pose[:, 0] - pose[:, 1]).abs().max() > 1e-2
    moved = tensors["output.track"][:, 1:] - tensors["input.query_points"][:, None]
    assert moved.abs().max() > 0.05  # the tracker's refinement steps move the points
