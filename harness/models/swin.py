"""timm Swin Transformer models, local checkpoints and image sources for the Swin workload.

Models are built with random init seeded by ``seed``, or weights from a local
``.pth``/``.pt``/``.safetensors`` file loaded strictly, or (``pretrained=True``, timm models only)
timm's pretrained weights: their file is fetched from the Hugging Face hub into the standard hub
cache by :func:`harness.models.weights.hf_download` (offline: the cache only) and handed to
``timm.create_model(..., pretrained=True)`` as a local file.
``img_size`` is passed to timm, which keeps the window size (7) and grows the window count
(224 -> 64/16/4/1 windows per stage, 448 -> 256/64/16/4). Fused attention is switched off so
the explicit q.k^T path runs (the quantized blocks need q, k, v and the softmax output).

Images (all returned normalized with the ImageNet mean/std, [N, 3, S, S] float32):

- :func:`synthetic_images`: seeded structured scenes, a smooth low-contrast background with
  1-3 textured, saturated objects, so windows differ clearly in content;
- :func:`read_image_folder`: an ImageFolder (``root/<class>/<image>``): resize the short side
  to S/0.875, center-crop S. Labels are the index of the class folder in sorted order; that is
  the ImageNet-1k class index when the folder holds the standard 1000 synset folders
  (``n01440764`` ... ``n15075141``), e.g. the usual ImageNet val layout.
"""

from __future__ import annotations

import math
from pathlib import Path

import timm
import torch
from timm.models.swin_transformer import SwinTransformer, WindowAttention, checkpoint_filter_fn

from harness.models.checkpoint import CheckpointError as CheckpointError  # re-exported: swin's public name
from harness.models.checkpoint import compare_state_dict, read_state_dict
from harness.models.weights import hf_download
from harness.quant.qswin import check_timm

MODELS = {
    "swin_t": "swin_tiny_patch4_window7_224",
    "swin_s": "swin_small_patch4_window7_224",
    "swin_b": "swin_base_patch4_window7_224",
}
MICRO = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7)
"""``swin_micro``: a reduced Swin (same block structure, embed_dim 32) for tests and smoke runs;
not a published architecture."""
PROXY = dict(embed_dim=32, depths=(2, 2, 4, 2), num_heads=(2, 4, 8, 16), window_size=7)
"""``swin_proxy``: the shape of the trained proxy (``harness train swin-proxy``, weights in
``harness/proxies/swin-proxy``): Swin-T's patch 4 / window 7 geometry (224 px -> stage maps
56/28/14/7, 64/16/4/1 windows), embed_dim 32, depths (2, 2, 4, 2), head dim 16, 10 classes."""
PROXY_CLASSES = 10
"""Classes of ``swin_proxy``: the procedural shape x texture set (``harness.data.shapes``)."""
SMALL = {"swin_micro": MICRO, "swin_proxy": PROXY}
MODEL_CHOICES = tuple(MODELS) + tuple(SMALL)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_PCT = 0.875


def build_swin(
    name: str,
    img_size: int = 224,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    pretrained: bool = False,
) -> SwinTransformer:
    """A timm Swin in eval mode, random init seeded by ``seed``, loaded from ``checkpoint``, or
    with timm's pretrained weights (``pretrained``, see :func:`pretrained_file`).

    name: one of ``MODEL_CHOICES``; img_size: square input side, a multiple of the patch size 4.
    num_classes: None = the model's own (1000; ``swin_proxy``: ``PROXY_CLASSES``).
    ``pretrained`` needs a timm model (not ``swin_micro``) and excludes ``checkpoint``.
    """
    check_timm()
    if name not in MODEL_CHOICES:
        raise ValueError(f"unknown Swin model {name!r}; allowed: {', '.join(MODEL_CHOICES)}")
    if img_size % 4:
        raise ValueError(f"img_size={img_size} must be a multiple of the patch size 4")
    problem = pretrained_problem(name, pretrained, checkpoint)
    if problem:
        raise ValueError(problem)
    weights_file = pretrained_file(name) if pretrained else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if num_classes is None:
            num_classes = PROXY_CLASSES if name == "swin_proxy" else 1000
        if name in SMALL:
            model = SwinTransformer(img_size=img_size, num_classes=num_classes, **SMALL[name])
        elif weights_file is not None:
            model = timm.create_model(
                MODELS[name], pretrained=True, pretrained_cfg_overlay={"file": str(weights_file)},
                img_size=img_size, num_classes=num_classes,
            )
        else:
            model = timm.create_model(
                MODELS[name], pretrained=False, img_size=img_size, num_classes=num_classes
            )
    set_fused_attn(model, False)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model.eval()


def pretrained_problem(name: str, pretrained: bool, checkpoint: object = None) -> str | None:
    """Why ``pretrained`` cannot be used with this model / checkpoint, or None (no download)."""
    if not pretrained:
        return None
    if name not in MODELS:
        return (f"pretrained: true needs a timm model ({', '.join(MODELS)}); model {name!r} has no "
                "published weights (use pretrained: false, or a checkpoint)")
    if checkpoint:
        return (f"pretrained: true and checkpoint {str(checkpoint)!r} both give the weights; set only one "
                "(pretrained: false with a checkpoint)")
    return None


def pretrained_file(name: str) -> Path:
    """The local file of timm's pretrained weights for ``name`` (swin_t/s/b), from the hub cache.

    The file is the one timm's own ``pretrained=True`` would fetch (the model's ``hf_hub_id``,
    ``model.safetensors`` then ``pytorch_model.bin``), downloaded into the standard hub cache;
    with ``HF_HUB_OFFLINE=1`` only the cache is read. Raises
    :class:`harness.models.weights.WeightsError` (one paragraph: what was tried, where, and how
    to pass a manually downloaded file) when it cannot be had.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(MODELS[name])
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise ValueError(f"timm has no Hugging Face hub weights for {MODELS[name]}; pass checkpoint=/path")
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    path, _ = hf_download(
        repo, files, what=f"pretrained: true for {name} (timm {MODELS[name]})",
        manual=f"checkpoint=/local/path/{files[0]} with pretrained: false",
    )
    return path


def set_fused_attn(model: torch.nn.Module, enabled: bool) -> None:
    """Switch timm's fused SDPA path in every ``WindowAttention`` on or off."""
    for m in model.modules():
        if isinstance(m, WindowAttention):
            m.fused_attn = enabled


def load_checkpoint(model: SwinTransformer, path: str | Path) -> None:
    """Load ``path`` strictly into ``model``.

    timm's ``checkpoint_filter_fn`` is applied first: it maps the original Microsoft layout
    (downsample at the end of a stage, ``head.weight``) to timm's, resizes relative-position
    tables and the patch embedding when their shapes differ, and drops non-persistent buffers.
    Missing, unexpected or misshapen keys raise :class:`CheckpointError` listing them; a
    nonexistent path raises FileNotFoundError.
    """
    raw = read_state_dict(path)
    try:
        sd = checkpoint_filter_fn(raw, model)
    except (AttributeError, KeyError, IndexError):  # another layout (e.g. other depths): the filter
        sd = raw  # trips over keys the model lacks; the comparison below names them
    compare_state_dict(sd, model).raise_if_mismatched(path, what="the Swin model")
    model.load_state_dict(sd, strict=True)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> ImageNet-normalized."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def synthetic_images(n: int, img_size: int, seed: int = 0) -> torch.Tensor:
    """Seeded structured images, ImageNet-normalized: [n, 3, S, S] float32.

    Each image: a smooth, low-contrast two-colour gradient background with faint noise, and
    1-3 objects (ellipses, 12-30% of the side each) filled with a saturated colour modulated by
    a high-frequency stripe texture and a bright rim, so object windows carry most of the detail.
    """
    g = torch.Generator().manual_seed(seed)
    S = img_size
    yy, xx = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing="ij")
    out = torch.empty(n, 3, S, S)
    for i in range(n):
        c0, c1 = 0.35 + 0.3 * torch.rand(3, 1, 1, generator=g), 0.35 + 0.3 * torch.rand(3, 1, 1, generator=g)
        angle = 2 * math.pi * torch.rand(1, generator=g).item()
        t = (math.cos(angle) * xx + math.sin(angle) * yy + 1.5) / 3.0
        img = c0 * (1 - t) + c1 * t + 0.01 * torch.randn(3, S, S, generator=g)
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cy, cx = (0.15 + 0.7 * torch.rand(2, generator=g)).tolist()
            ry, rx = (0.12 + 0.18 * torch.rand(2, generator=g)).tolist()
            d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
            inside = (d <= 1.0).float()
            rim = ((d > 0.8) & (d <= 1.0)).float()
            freq = 20 + 40 * torch.rand(1, generator=g).item()
            theta = math.pi * torch.rand(1, generator=g).item()
            stripes = 0.5 + 0.5 * torch.sin(freq * (math.cos(theta) * xx + math.sin(theta) * yy) * math.pi)
            colour = torch.rand(3, 1, 1, generator=g)
            colour = colour / colour.amax().clamp_min(1e-6)  # saturated
            obj = colour * (0.3 + 0.7 * stripes)
            img = img * (1 - inside) + obj * inside
            img = img * (1 - rim) + rim
        out[i] = img.clamp(0, 1)
    return normalize(out)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def list_image_folder(root: str | Path) -> list[tuple[Path, int]]:
    """(path, label) of every image under ``root/<class>/``, classes and files in sorted order
    (torchvision's ImageFolder order when torchvision is installed)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    try:
        from torchvision.datasets import ImageFolder
    except ImportError:
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        return [
            (f, label)
            for label, c in enumerate(classes)
            for f in sorted((root / c).rglob("*"))
            if f.suffix.lower() in IMAGE_SUFFIXES
        ]
    return [(Path(p), int(y)) for p, y in ImageFolder(str(root)).samples]


def load_image(path: str | Path, img_size: int) -> torch.Tensor:
    """One RGB image: short side resized to floor(S / 0.875) (bicubic), center crop S,
    ImageNet-normalized -> [3, S, S]."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        short = int(math.floor(img_size / CROP_PCT))
        scale = short / min(w, h)
        im = im.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - img_size) // 2, (h - img_size) // 2
        im = im.crop((left, top, left + img_size, top + img_size))
        x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).reshape(img_size, img_size, 3)
    return normalize(x.permute(2, 0, 1).float().div(255).unsqueeze(0))[0]


def read_image_folder(
    root: str | Path, img_size: int, indices: list[int] | range | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels from an ImageFolder. indices: positions in :func:`list_image_folder`'s
    order (negative ones count from the end); None reads all -> ([N, 3, S, S], [N] int64)."""
    samples = list_image_folder(root)
    n = len(samples)
    idx = list(range(n)) if indices is None else list(indices)
    if n == 0 or any(not -n <= i < n for i in idx):
        raise ValueError(f"image folder {root} has {n} images; asked for positions {idx[:5]}...")
    picked = [samples[i] for i in idx]
    images = torch.stack([load_image(p, img_size) for p, _ in picked])
    return images, torch.tensor([y for _, y in picked], dtype=torch.int64)
