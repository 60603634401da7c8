"""Write the golden reference tensors of tests/golden/ (run by hand; the tests only read the files).

Usage (from the repository root, with the dev venv)::

    python tests/golden/make_golden.py vggt --vggt-src /tmp/vggt-official   # -> vggt-small.safetensors
    python tests/golden/make_golden.py swin                                 # -> swin-small.safetensors
    python tests/golden/make_golden.py proxies [--vggt-src /tmp/vggt-official]  # -> {swin,vggt}-proxy...

What produced the committed files (tests/golden/README.md has the details):

- ``vggt``: the official VGGT code, facebookresearch/vggt at commit
  ``44b3afbd1869d8bde4894dd8ea1e293112dd5eba`` (2025-10-11, "Update README.md"), imported from
  ``--vggt-src`` (a checkout or ``git archive`` of that commit; its ``vggt`` package needs einops
  and huggingface_hub importable). Nothing of that code is in this repository. The file's metadata
  records the commit given by ``--vggt-commit`` and a sha256 of the official ``vggt/`` sources read.
- ``swin``: timm's own ``SwinTransformer`` (timm 1.0.31) with its default attention path (explicit
  q.k^T; timm 1.0.31 counts fused SDPA in Swin as experimental and leaves it off).
- ``proxies``: the committed proxy weights (harness/proxies/*/model.safetensors) through the
  harness's own loading path (a regression pin of model code + weights). Each is also run through
  the outside implementation (plain timm; with ``--vggt-src``, the official VGGT at the vggt-proxy
  config) and the largest difference is recorded in the metadata as ``official_check`` (0 for both).

All files were written with torch 2.14.1+cu130 on CPU, float32, one intra-op thread; the versions
actually used are stored in each file's metadata (``torch``, ``timm``, ``python``).

Weights of the two small models are seeded and deliberately not the libraries' own init (LayerScale
0.01, special tokens of std 1e-6 and zero biases would hide wrong wiring): every floating parameter
is redrawn by :func:`golden_init_` from one ``torch.Generator``, in sorted parameter-name order,
and then saved, so the tests load exactly these values.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import importlib
import json
import math
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from harness.data import shapes
from harness.data.shapes import shapes_images
from harness.models import swin
from harness.models.vggt import load_checkpoint
from harness.models.vggt.presets import VGGT_PROXY
from harness.models.weights import PROXY_ROOT
from harness.train import vggt_proxy as vp

HERE = Path(__file__).resolve().parent
VGGT_COMMIT = "44b3afbd1869d8bde4894dd8ea1e293112dd5eba"
SEED = 20251011

# ----------------------------------------------------------------------------------------- VGGT

VGGT_FILE = "vggt-small.safetensors"
#: The small VGGT, in the field names of harness.models.vggt.VGGTConfig. The official side gets the
#: same sizes through the constructor arguments of its Aggregator / DinoVisionTransformer /
#: CameraHead / DPTHead / BaseTrackerPredictor / EfficientUpdateFormer (see build_official_vggt).
VGGT_CONFIG = {
    "img_size": 56,  # DINO pos-embed learned for a 4 x 4 grid; the 3 x 4 input grid interpolates it
    "patch_size": 14,
    "embed_dim": 32,
    "depth": 4,
    "num_heads": 4,  # head dim 8: 2-D RoPE with 2 frequencies per axis
    "mlp_ratio": 4.0,
    "num_register_tokens": 4,
    "patch_embed": "dinov2",
    "dino_depth": 1,
    "dino_num_heads": 4,
    "qk_norm": True,
    "rope_freq": 100.0,
    "init_values": 0.01,
    "intermediate_layer_idx": [0, 1, 2, 3],
    "camera_trunk_depth": 1,
    "camera_num_heads": 4,
    "camera_iterations": 4,
    "dpt_features": 8,
    "dpt_out_channels": [8, 16, 16, 16],
    "frames_chunk_size": 8,
    "track_features": 8,
    "track_out_channels": [8, 16, 16, 16],
    "track_hidden_size": 16,
    "track_num_heads": 2,
    "track_depth": 1,
    "track_virtual_tracks": 8,
    "track_corr_levels": 3,
    "track_corr_radius": 2,
    "track_stride": 2,
    "track_iters": 4,
}
#: The track head's update head (``tracker.updateformer.flow_head``, coordinate and feature deltas) is
#: scaled by this after golden_init_: with unit-gain random weights the 4-step tracker amplifies float
#: rounding ~300x per step (the official model against itself with 1e-7 relative noise on its feature
#: maps ends 2.5 px apart), so no tolerance could tell a bug from rounding; at 0.02 the steps are
#: contractive (that noise stays at 1e-6 px) and the tracks still move (0.24 px at most).
TRACK_UPDATE_SCALE = 0.02
#: B sequences of S frames of H x W pixels (3 x 4 patches: non-square, so a y/x mix-up shows)
VGGT_INPUT = {"batch": 2, "frames": 3, "height": 42, "width": 56, "query_points": 5}

# ----------------------------------------------------------------------------------------- Swin

SWIN_FILE = "swin-small.safetensors"
#: timm SwinTransformer keyword arguments. 120 px -> stage maps 30 / 15 / 8 tokens: every stage pads
#: to a multiple of the window 7 (25, 9 and 4 windows), and 15 -> 8 is an odd-size patch merging.
SWIN_CONFIG = {
    "img_size": 120,
    "patch_size": 4,
    "embed_dim": 16,
    "depths": [2, 2, 2],
    "num_heads": [1, 2, 4],
    "window_size": 7,
    "num_classes": 10,
}
SWIN_BATCH = 2

# ----------------------------------------------------------------------------------------- proxies

SWIN_PROXY_FILE = "swin-proxy.safetensors"
VGGT_PROXY_FILE = "vggt-proxy.safetensors"
SWIN_PROXY_IMAGES = 2  # the first held-out images (shapes.HELDOUT_SEED)
VGGT_PROXY_FRAMES = 4  # the first frames of the first held-out video scene (vggt_proxy.HELDOUT_SEED)


def golden_init_(model: nn.Module, seed: int) -> None:
    """Redraw every floating parameter of ``model`` from one seeded generator (sorted names).

    Linear / conv / attention matrices: N(0, 1 / fan_in) (ConvTranspose2d: fan_in = its input
    channels); LayerNorm / GroupNorm weights 1 + N(0, 0.1^2); biases N(0, 0.1^2); LayerScale gammas
    U(0.3, 1.0); every other parameter (special tokens, position tables, relative-position biases,
    the empty pose token) N(0, 0.5^2), so the special-token slots and positions differ clearly.
    """
    owner = {}
    for mod_name, mod in model.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            owner[f"{mod_name}.{p_name}" if mod_name else p_name] = mod
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            mod, leaf = owner[name], name.rsplit(".", 1)[-1]
            if isinstance(mod, (nn.LayerNorm, nn.GroupNorm)):
                base = 1.0 if leaf == "weight" else 0.0
                new = base + 0.1 * torch.randn(p.shape, generator=g)
            elif leaf == "gamma":
                new = 0.3 + 0.7 * torch.rand(p.shape, generator=g)
            elif leaf.endswith("bias") and p.dim() == 1:
                new = 0.1 * torch.randn(p.shape, generator=g)
            elif leaf.endswith("weight") and p.dim() >= 2:
                fan_in = p.shape[0] if isinstance(mod, nn.ConvTranspose2d) else p[0].numel()
                new = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)
            else:
                new = 0.5 * torch.randn(p.shape, generator=g)
            p.copy_(new)


def versions() -> dict[str, str]:
    return {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
            "threads": str(torch.get_num_threads())}


def write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=meta)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.2f} MB, {len(tensors)} tensors)")


@contextlib.contextmanager
def patched(module: object, name: str, value: object) -> Iterator[None]:
    """Temporarily replace ``module.name`` (restored on exit)."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def source_digest(src: Path) -> str:
    """sha256 over the official ``vggt/**/*.py`` files (sorted relative paths and contents)."""
    h = hashlib.sha256()
    for f in sorted((src / "vggt").rglob("*.py")):
        h.update(str(f.relative_to(src)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def build_official_vggt(src: Path, c: dict, *, track: bool = True) -> nn.Module:
    """The official ``VGGT`` at config ``c`` (VGGTConfig field names), built by its own constructors.

    ``VGGT(img_size, patch_size, embed_dim)`` hard-codes the sizes of its children, so while it is
    constructed the names it (and its children) instantiate are bound to ``functools.partial``s of
    the *same official classes* with the small sizes added as constructor arguments:

    - ``vggt.models.vggt.Aggregator``: depth, num_heads, mlp_ratio, num_register_tokens,
      qk_norm, rope_freq, init_values, and patch_embed "conv" when ``c`` asks for it (else it
      stays "dinov2_vitl14_reg");
    - ``vggt.models.aggregator.vit_large``: ``DinoVisionTransformer`` with vit_large's arguments
      (mlp_ratio 4, MemEffAttention blocks) except embed_dim, depth and num_heads;
    - ``vggt.models.vggt.CameraHead``: trunk_depth, num_heads, mlp_ratio, init_values;
    - ``vggt.models.vggt.DPTHead`` and ``vggt.heads.track_head.DPTHead``: features (depth/point
      heads), out_channels, intermediate_layer_idx;
    - ``vggt.models.vggt.TrackHead``: features, iters, stride, corr_levels, corr_radius,
      hidden_size; ``vggt.heads.track_head.BaseTrackerPredictor``: depth;
      ``vggt.heads.track_modules.base_track_predictor.EfficientUpdateFormer``: num_heads,
      num_virtual_tracks.

    No official module is modified after construction and no block list is truncated.
    """
    sys.path.insert(0, str(src))
    m_vggt = importlib.import_module("vggt.models.vggt")
    m_agg = importlib.import_module("vggt.models.aggregator")
    m_vit = importlib.import_module("vggt.layers.vision_transformer")
    m_track = importlib.import_module("vggt.heads.track_head")
    m_btp = importlib.import_module("vggt.heads.track_modules.base_track_predictor")
    from vggt.layers.attention import MemEffAttention
    from vggt.layers.block import Block

    def small_vit(patch_size: int = 16, num_register_tokens: int = 0, **kwargs):
        return m_vit.DinoVisionTransformer(
            patch_size=patch_size, embed_dim=c["embed_dim"], depth=c["dino_depth"],
            num_heads=c["dino_num_heads"], mlp_ratio=4,
            block_fn=functools.partial(Block, attn_class=MemEffAttention),
            num_register_tokens=num_register_tokens, **kwargs,
        )

    dpt_sizes = {"out_channels": c["dpt_out_channels"], "intermediate_layer_idx": c["intermediate_layer_idx"]}
    track_dpt_sizes = {"out_channels": c["track_out_channels"],
                       "intermediate_layer_idx": c["intermediate_layer_idx"]}
    with contextlib.ExitStack() as stack:
        for module, name, value in [
            (m_vggt, "Aggregator", functools.partial(
                m_vggt.Aggregator, depth=c["depth"], num_heads=c["num_heads"], mlp_ratio=c["mlp_ratio"],
                num_register_tokens=c["num_register_tokens"], qk_norm=c["qk_norm"],
                rope_freq=c["rope_freq"], init_values=c["init_values"],
                **({"patch_embed": "conv"} if c["patch_embed"] == "conv" else {}))),
            (m_agg, "vit_large", small_vit),
            (m_vggt, "CameraHead", functools.partial(
                m_vggt.CameraHead, trunk_depth=c["camera_trunk_depth"], num_heads=c["camera_num_heads"],
                mlp_ratio=c["mlp_ratio"], init_values=c["init_values"])),
            (m_vggt, "DPTHead", functools.partial(m_vggt.DPTHead, features=c["dpt_features"], **dpt_sizes)),
            (m_vggt, "TrackHead", functools.partial(
                m_vggt.TrackHead, features=c["track_features"], iters=c["track_iters"],
                stride=c["track_stride"], corr_levels=c["track_corr_levels"],
                corr_radius=c["track_corr_radius"], hidden_size=c["track_hidden_size"])),
            (m_track, "DPTHead", functools.partial(m_track.DPTHead, **track_dpt_sizes)),
            (m_track, "BaseTrackerPredictor", functools.partial(
                m_track.BaseTrackerPredictor, depth=c["track_depth"])),
            (m_btp, "EfficientUpdateFormer", functools.partial(
                m_btp.EfficientUpdateFormer, num_heads=c["track_num_heads"],
                num_virtual_tracks=c["track_virtual_tracks"])),
        ]:
            stack.enter_context(patched(module, name, value))
        model = m_vggt.VGGT(img_size=c["img_size"], patch_size=c["patch_size"], embed_dim=c["embed_dim"],
                            enable_camera=True, enable_point=True, enable_depth=True, enable_track=track)
    return model.eval()


def vggt_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded images [B, S, 3, H, W] in [0, 1] and query points [B, N, 2] (x, y pixels in frame 0)."""
    i = VGGT_INPUT
    g = torch.Generator().manual_seed(SEED + 1)
    images = torch.rand(i["batch"], i["frames"], 3, i["height"], i["width"], generator=g)
    scale = torch.tensor([i["width"] - 1.0, i["height"] - 1.0])
    queries = 2.0 + torch.rand(i["batch"], i["query_points"], 2, generator=g) * (scale - 4.0)
    return images, queries


OUTPUT_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "track", "vis", "conf")


def make_vggt(src: Path, commit: str, out: Path) -> None:
    torch.manual_seed(SEED)
    model = build_official_vggt(src, VGGT_CONFIG)
    golden_init_(model, SEED)
    with torch.no_grad():
        flow_head = model.track_head.tracker.updateformer.flow_head
        flow_head.weight.mul_(TRACK_UPDATE_SCALE)
        flow_head.bias.mul_(TRACK_UPDATE_SCALE)
    images, queries = vggt_inputs()
    with torch.no_grad():
        layers, patch_start = model.aggregator(images)
        pred = model(images, query_points=queries)
    tensors = dict(model.state_dict())
    assert not any(k.startswith(("input.", "output.")) for k in tensors)
    tensors |= {"input.images": images, "input.query_points": queries,
                "output.pose_enc_list": torch.stack(pred["pose_enc_list"])}
    tensors |= {f"output.aggregator.{i}": layer for i, layer in enumerate(layers)}
    tensors |= {f"output.{key}": pred[key] for key in OUTPUT_KEYS}
    for key, t in tensors.items():
        if key.startswith("output."):
            assert torch.isfinite(t).all(), key
            print(f"  {key:28s} {tuple(t.shape)} |max| {t.abs().max():.3g}")
    meta = versions() | {
        "source": "facebookresearch/vggt", "commit": commit, "source_sha256": source_digest(src),
        "config": json.dumps(VGGT_CONFIG), "input": json.dumps(VGGT_INPUT), "seed": str(SEED),
        "track_update_scale": str(TRACK_UPDATE_SCALE), "patch_start_idx": str(patch_start),
        "generator": "tests/golden/make_golden.py vggt",
    }
    write(out / VGGT_FILE, tensors, meta)


def swin_input() -> torch.Tensor:
    """Seeded ImageNet-normalized images [B, 3, S, S], float16 (the reference runs on ``.float()``):
    smooth colour blobs (bicubic upsampling of a 6 x 6 random map) with pixel noise, so windows
    differ in content and the per-window importance of MixA-Q has an order to find."""
    g = torch.Generator().manual_seed(SEED + 2)
    s = SWIN_CONFIG["img_size"]
    coarse = torch.rand(SWIN_BATCH, 3, 6, 6, generator=g)
    smooth = F.interpolate(coarse, size=(s, s), mode="bicubic", align_corners=False)
    pixels = (smooth + 0.1 * torch.randn(SWIN_BATCH, 3, s, s, generator=g)).clamp(0, 1)
    return swin.normalize(pixels).half()


def make_swin(out: Path) -> None:
    torch.manual_seed(SEED)
    model = SwinTransformer(**SWIN_CONFIG).eval()  # timm's default: explicit q.k^T (fused is "experimental")
    golden_init_(model, SEED)
    images = swin_input()
    with torch.no_grad():
        feats = model.forward_features(images.float())
        logits = model.forward_head(feats)
    tensors = dict(model.state_dict())
    tensors |= {"input.images": images, "output.features": feats, "output.logits": logits}
    print(f"  logits {logits}")
    meta = versions() | {"source": "timm.models.swin_transformer.SwinTransformer",
                         "config": json.dumps(SWIN_CONFIG), "seed": str(SEED),
                         "generator": "tests/golden/make_golden.py swin"}
    write(out / SWIN_FILE, tensors, meta)


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: tuple[str, ...]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in keys)


def make_swin_proxy(out: Path) -> None:
    """swin-proxy logits on the first held-out images, through build_swin; cross-checked (recorded in
    the metadata) against plain timm ``load_state_dict`` of the same weights."""
    weights = PROXY_ROOT / "swin-proxy" / "model.safetensors"
    images, labels = shapes_images(SWIN_PROXY_IMAGES, shapes.HELDOUT_SEED)
    images = images.half()  # stored in float16; the reference runs on the stored values
    model = swin.build_swin("swin_proxy", 224, checkpoint=weights)
    plain = SwinTransformer(img_size=224, num_classes=swin.PROXY_CLASSES, **swin.PROXY).eval()
    plain.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()}, strict=True)
    with torch.no_grad():
        logits, plain_logits = model(images.float()), plain(images.float())
    check = max_diff({"logits": logits}, {"logits": plain_logits}, ("logits",))
    meta = versions() | {
        "source": "harness.models.swin.build_swin('swin_proxy', checkpoint=<proxy weights>)",
        "heldout": f"harness.data.shapes seed {shapes.HELDOUT_SEED}, indices 0..{SWIN_PROXY_IMAGES - 1}",
        "official_check": f"timm SwinTransformer.load_state_dict, same weights and images: "
                          f"max abs diff {check:.3g}",
        "generator": "tests/golden/make_golden.py proxies",
    }
    print(f"  {meta['official_check']}")
    tensors = {"input.images": images, "input.labels": labels, "output.logits": logits}
    write(out / SWIN_PROXY_FILE, tensors, meta)


def make_vggt_proxy(out: Path, vggt_src: Path | None, commit: str) -> None:
    """vggt-proxy camera + depth outputs on the first frames of the first held-out video scene,
    through the proxy's own builder and ``load_checkpoint``; with ``vggt_src``, cross-checked
    (recorded in the metadata) against the official VGGT built at the vggt-proxy config."""
    frames = vp.heldout_clips("video", n=1)[0].images[:VGGT_PROXY_FRAMES].half()
    model = vp.VGGTProxy().build_model(0)
    load_checkpoint(model, PROXY_ROOT / "vggt-proxy" / "model.safetensors", strict=True)
    model.eval()
    with torch.no_grad():
        pred = model(frames.float()[None], heads=vp.HEADS)
    keys = ("pose_enc_list", "depth", "depth_conf")
    pred["pose_enc_list"] = torch.stack(pred["pose_enc_list"])
    meta = versions() | {
        "source": "VGGTProxy().build_model(0) + harness.models.vggt.load_checkpoint(<proxy weights>)",
        "heldout": f"heldout_clips('video', n=1)[0] (seed {vp.HELDOUT_SEED}), "
                   f"frames 0..{VGGT_PROXY_FRAMES - 1}",
        "heads": ",".join(vp.HEADS), "generator": "tests/golden/make_golden.py proxies",
    }
    if vggt_src is not None:
        official = build_official_vggt(vggt_src, dataclasses.asdict(VGGT_PROXY), track=False)
        official.load_state_dict(model.state_dict(), strict=True)
        with torch.no_grad():
            ref = official(frames.float()[None])
        ref["pose_enc_list"] = torch.stack(ref["pose_enc_list"])
        meta["official_check"] = (f"facebookresearch/vggt {commit[:12]} at the vggt-proxy config, same "
                                  f"weights and frames: max abs diff {max_diff(pred, ref, keys):.3g}")
        print(f"  {meta['official_check']}")
    write(out / VGGT_PROXY_FILE, {"input.images": frames} | {f"output.{k}": pred[k] for k in keys}, meta)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("vggt", "swin", "proxies", "all"))
    ap.add_argument("--vggt-src", type=Path, help="folder holding the official `vggt` package (vggt; for "
                    "proxies it adds a cross-check of the vggt-proxy outputs against the official code)")
    ap.add_argument("--vggt-commit", default=VGGT_COMMIT, help="commit of --vggt-src, recorded in the file")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.what in ("vggt", "all"):
        if args.vggt_src is None or not (args.vggt_src / "vggt" / "models" / "vggt.py").is_file():
            ap.error("vggt needs --vggt-src pointing at a checkout of facebookresearch/vggt")
        make_vggt(args.vggt_src, args.vggt_commit, args.out)
    if args.what in ("swin", "all"):
        make_swin(args.out)
    if args.what in ("proxies", "all"):
        make_swin_proxy(args.out)
        make_vggt_proxy(args.out, args.vggt_src, args.vggt_commit)


if __name__ == "__main__":
    main()
