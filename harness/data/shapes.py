"""Procedural object classification images whose class evidence sits in a few windows.

The set the Swin proxy (``harness train swin-proxy``) learns and the Swin workload evaluates
with ``images: shapes``. Each image is S x S (224 by default), 10 classes, and holds:

- a background: either *smooth* (a linear gradient plus faint grain) or *cluttered*
  (low-frequency noise, bicubic upsampled from a coarse grid, plus grain);
- ``n_distractors`` lures drawn first (they may overlap each other and the class object);
- the class object, drawn last (never occluded), at a random position, half-extent
  ``radius_px`` (18-44 px: 1-3 windows of 32 px across), rotation, texture period and phase.

Two class cues (``ShapesConfig.class_cue``):

- ``"hue"`` (default; what the swin-proxy is trained on): the class is the class object's hue,
  one of 10 hue bins 36 degrees apart (``HUE_NAMES``, jitter +-``hue_jitter_deg``), with random
  saturation 0.7-1 and brightness; the object has a random shape (disc, plus, triangle, square,
  ring) and a random periodic texture (stripes, checker, dots, concentric rings, grid lines)
  between two brightness levels of its hue. Background and lures are grey-ish (saturation at
  most ``lure_max_saturation``, the background a faint tint), and the lures carry every shape
  and texture the class object can have, so shape and texture say nothing about the class and
  nothing outside the class object's windows reveals it;
- ``"shape_texture"``: the label is ``shape * 5 + texture`` (disc/plus x the 5 periodic
  textures), colours random and contrasting, lures filled with non-class textures (flat, a
  smooth gradient, pixel noise; half of them with a class shape), optionally
  (``texture_lure_prob``) class textures on non-class shapes. The harder conjunction task: the
  tiny swin_proxy did not leave chance level on it within the CPU budget (200 steps at three
  learning rates), which is why the proxy uses the hue cue.

Labels cycle with the index (``index % 10``), so any 10 consecutive indices hold every class once.

Every image is a deterministic function of ``(seed, index)``: its parameters and noise come from
a generator seeded with ``seed * 2**24 + index``, so a batch does not depend on which other
indices it is drawn with. torch's CPU generator (mt19937) keeps only 32 bits of its seed, so
the mapping is one-to-one only for ``seed < 256`` and ``index < 2**24`` (enforced). Training and
held-out data use different seeds (:data:`TRAIN_SEED` + the recipe's seed, :data:`HELDOUT_SEED`,
:data:`CALIB_SEED`), hence disjoint images. Rendering is vectorised over the batch in torch
(every object on an L x L patch around it, then composited).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.models.swin import normalize

CLASS_SHAPES = ("disc", "plus")
LURE_SHAPES = ("triangle", "square", "ring")
SHAPES = CLASS_SHAPES + LURE_SHAPES
CLASS_TEXTURES = ("stripes", "checker", "dots", "rings", "grid")
LURE_TEXTURES = ("flat", "gradient", "noise")
TEXTURES = CLASS_TEXTURES + LURE_TEXTURES
N_TEXTURES = len(CLASS_TEXTURES)
NUM_CLASSES = len(CLASS_SHAPES) * N_TEXTURES
SHAPE_TEXTURE_NAMES = tuple(f"{s}-{t}" for s in CLASS_SHAPES for t in CLASS_TEXTURES)
HUE_NAMES = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "blue", "purple", "magenta")
CLASS_CUES = ("hue", "shape_texture")
CLASS_NAMES = HUE_NAMES
"""Class names of the default cue (``hue``); ``SHAPE_TEXTURE_NAMES`` for ``shape_texture``."""
_HUE_STEP_DEG = 360.0 / NUM_CLASSES

TRAIN_SEED = 0
"""Seed of the training stream (index = step * batch + i); a recipe seed s uses TRAIN_SEED + s."""
HELDOUT_SEED = 255
"""Seed of the held-out set (proxy evaluation and the workload's evaluated images)."""
CALIB_SEED = 254
"""Seed of the workload's calibration images (disjoint from both)."""
N_SEEDS = 256
"""Seeds are 0 .. N_SEEDS - 1 (the generator's 32-bit seed holds seed * 2**24 + index)."""

_INDEX_SPAN = 2**24
_COARSE_GRID = 6  # cells per side of the cluttered background's colour noise
_GRAIN = 0.03  # std of the per-pixel grain added to every image
_BG_TINT = 0.15  # hue cue: the background's colour deviation from grey (fraction of a unit)
_PARAMS_PER_SLOT = 12  # random numbers drawn per object slot


@dataclass(frozen=True)
class ShapesConfig:
    """Generator knobs (the defaults are what the swin-proxy was trained on).

    radius_px: half-extent range of the class object (18-44: 1-3 windows of 32 px across);
    lure_radius_px: the same for the lures; period_px: texture period range; n_distractors:
    lures per image (inclusive range); texture_lure_prob: probability that a lure is a texture
    lure (a class texture on a non-class shape; 0 in the trained set, which keeps every periodic
    texture on the class object); clutter_prob: probability of a cluttered background.
    """

    img_size: int = 224
    class_cue: str = "hue"
    radius_px: tuple[float, float] = (18.0, 44.0)
    lure_radius_px: tuple[float, float] = (14.0, 36.0)
    period_px: tuple[float, float] = (6.0, 11.0)
    n_distractors: tuple[int, int] = (1, 3)
    texture_lure_prob: float = 0.0
    clutter_prob: float = 0.5
    hue_jitter_deg: float = 10.0
    lure_max_saturation: float = 0.2

    def __post_init__(self) -> None:
        if self.class_cue not in CLASS_CUES:
            raise ValueError(f"class_cue={self.class_cue!r}; allowed: {', '.join(CLASS_CUES)}")

    @classmethod
    def for_size(cls, img_size: int) -> ShapesConfig:
        """The default set rescaled to ``img_size`` (radii and periods scale with the side)."""
        f = img_size / cls.img_size
        base = cls()
        return cls(
            img_size=img_size,
            class_cue=base.class_cue,
            radius_px=(base.radius_px[0] * f, base.radius_px[1] * f),
            lure_radius_px=(base.lure_radius_px[0] * f, base.lure_radius_px[1] * f),
            period_px=(max(2.0, base.period_px[0] * f), max(3.0, base.period_px[1] * f)),
        )


@dataclass
class ShapesBatch:
    """images: [N, 3, S, S] ImageNet-normalized float32; labels: [N] int64; boxes: [N, 4]
    (x0, y0, x1, y1) pixel bounds of the class object, exclusive upper; masks: [N, S, S] bool,
    the class object's pixels (it is drawn last, so all of them are visible)."""

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor


def _generator(seed: int, index: int) -> torch.Generator:
    if not 0 <= index < _INDEX_SPAN:
        raise ValueError(f"index {index} outside [0, 2**24)")
    if not 0 <= seed < N_SEEDS:
        raise ValueError(f"seed {seed} outside [0, {N_SEEDS}) (torch's CPU generator takes 32-bit seeds)")
    return torch.Generator().manual_seed(seed * _INDEX_SPAN + index)


def _lerp(lo_hi: tuple[float, float], t: torch.Tensor) -> torch.Tensor:
    return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * t


def _shape_mask(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Inside-masks of the shapes. kind: [M] index into SHAPES; u, v: [M, S, S] object-frame
    pixel offsets; r: [M, 1, 1] half-extent -> [M, S, S] bool. Each shape is evaluated only on
    the objects of that kind."""
    out = torch.zeros(u.shape, dtype=torch.bool)
    for k, name in enumerate(SHAPES):
        sel = (kind == k).nonzero().squeeze(1)
        if sel.numel():
            out[sel] = _SHAPE_FNS[name](u[sel], v[sel], r[sel])
    return out


def _disc(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return u * u + v * v <= r * r


def _plus(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    arm = r / 2.5
    au, av = u.abs(), v.abs()
    return ((au <= r) & (av <= arm)) | ((av <= r) & (au <= arm))


def _triangle(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Equilateral, circumradius r: three half-planes."""
    return (v <= r / 2) & (math.sqrt(3) * u - v <= r) & (-math.sqrt(3) * u - v <= r)


def _square(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return (u.abs() <= 0.8 * r) & (v.abs() <= 0.8 * r)


def _ring(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    d2 = u * u + v * v
    return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)


_SHAPE_FNS = {"disc": _disc, "plus": _plus, "triangle": _triangle, "square": _square, "ring": _ring}


def _texture(
    kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor, period: torch.Tensor, phase: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Pattern values in [0, 1] of the textures. kind: [M] index into TEXTURES; u, v: [M, S, S];
    period, phase: [M, 1, 1]; noise: [M, S, S] uniform pixel noise -> [M, S, S]. Each texture
    is evaluated only on the objects of that kind."""
    out = torch.zeros(u.shape)
    for k, name in enumerate(TEXTURES):
        sel = (kind == k).nonzero().squeeze(1)
        if sel.numel():
            out[sel] = _TEXTURE_FNS[name](u[sel], v[sel], period[sel], phase[sel], noise[sel])
    return out


def _stripes(u, v, per, ph, noise):
    return (torch.sin(2 * math.pi * u / per + ph) > 0).float()


def _checker(u, v, per, ph, noise):
    return (torch.sin(2 * math.pi * u / per + ph) * torch.sin(2 * math.pi * v / per + ph) > 0).float()


def _dots(u, v, per, ph, noise):
    return (torch.cos(2 * math.pi * u / per + ph) + torch.cos(2 * math.pi * v / per + ph) > 1.0).float()


def _rings(u, v, per, ph, noise):
    """Concentric rings around the object centre."""
    return (torch.sin(2 * math.pi * torch.sqrt(u * u + v * v) / per + ph) > 0).float()


def _grid(u, v, per, ph, noise):
    """Thin grid lines: near a cell edge in either direction."""
    fu, fv = torch.frac(u / per + 100.0), torch.frac(v / per + 100.0)
    return (torch.maximum((fu - 0.5).abs(), (fv - 0.5).abs()) > 0.34).float()


def _flat(u, v, per, ph, noise):
    return torch.zeros_like(u)


def _gradient(u, v, per, ph, noise):
    """A smooth ramp across the object."""
    return ((u + v) / 128.0 + 0.5).clamp(0, 1)


def _noise(u, v, per, ph, noise):
    return noise


_TEXTURE_FNS = {
    "stripes": _stripes, "checker": _checker, "dots": _dots, "rings": _rings, "grid": _grid,
    "flat": _flat, "gradient": _gradient, "noise": _noise,
}


def _draw_params(
    g: torch.Generator, cfg: ShapesConfig, label: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One image's object parameters (slot 0 = the class object, then the lures) as rows of
    [kind_shape, kind_texture, cx, cy, r, angle, period, phase, colA(3), colB(3)]."""
    n_d = int(torch.randint(cfg.n_distractors[0], cfg.n_distractors[1] + 1, (1,), generator=g))
    rows = []
    S = cfg.img_size
    for slot in range(1 + cfg.n_distractors[1]):
        rnd = torch.rand(_PARAMS_PER_SLOT, generator=g)
        hue_cue = cfg.class_cue == "hue"
        if slot == 0 and hue_cue:  # any shape, any periodic texture: the hue is the class
            shape, tex = int(rnd[2] * len(SHAPES)), int(rnd[3] * N_TEXTURES)
            r = float(_lerp(cfg.radius_px, rnd[0]))
        elif slot == 0:
            shape, tex, r = label // N_TEXTURES, label % N_TEXTURES, float(_lerp(cfg.radius_px, rnd[0]))
        elif hue_cue:  # any shape and texture, desaturated
            r = float(_lerp(cfg.lure_radius_px, rnd[0]))
            shape, tex = int(rnd[2] * len(SHAPES)), int(rnd[3] * len(TEXTURES))
        else:
            r = float(_lerp(cfg.lure_radius_px, rnd[0]))
            if rnd[1] < cfg.texture_lure_prob:  # class texture on a non-class shape
                shape = len(CLASS_SHAPES) + int(rnd[2] * len(LURE_SHAPES))
                tex = int(rnd[3] * N_TEXTURES)
            else:  # any shape (a class shape half of the time), non-class texture
                shape = int(rnd[2] * len(CLASS_SHAPES)) if rnd[9] < 0.5 else int(rnd[2] * len(SHAPES))
                tex = N_TEXTURES + int(rnd[3] * len(LURE_TEXTURES))
        cx = r + (S - 2 * r) * float(rnd[4])
        cy = r + (S - 2 * r) * float(rnd[5])
        angle = 2 * math.pi * float(rnd[6])
        period = float(_lerp(cfg.period_px, rnd[7]))
        phase = 2 * math.pi * float(rnd[8])
        c = torch.rand(4, generator=g)
        if hue_cue and slot == 0:  # saturated, hue of the class; the texture varies brightness
            hue = label * _HUE_STEP_DEG + cfg.hue_jitter_deg * (2 * float(c[0]) - 1)
            sat, val = 0.7 + 0.3 * float(c[1]), 0.65 + 0.35 * float(c[2])
            col_a, col_b = _hsv(hue, sat, val), _hsv(hue, sat, val * (0.35 + 0.25 * float(c[3])))
        elif hue_cue:  # a lure: grey-ish, any hue
            hue, sat = 360.0 * float(c[0]), cfg.lure_max_saturation * float(c[1])
            val = 0.25 + 0.7 * float(c[2])
            col_a, col_b = _hsv(hue, sat, val), _hsv(hue, sat, val * (0.35 + 0.4 * float(c[3])))
        else:
            col_a = torch.rand(3, generator=g)
            col_b = (1.0 - col_a + 0.25 * (torch.rand(3, generator=g) - 0.5)).clamp(0, 1)  # contrasting
        rows.append(torch.tensor([shape, tex, cx, cy, r, angle, period, phase, *col_a, *col_b]))
    return torch.stack(rows), torch.rand(6, generator=g), n_d


def _hsv(hue_deg: float, sat: float, val: float) -> torch.Tensor:
    """HSV (hue in degrees) -> RGB [3] in [0, 1]."""
    h = (hue_deg % 360.0) / 60.0
    k = (torch.tensor([5.0, 3.0, 1.0]) + h) % 6
    return val - val * sat * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def make_shapes(
    indices: range | list[int] | torch.Tensor,
    seed: int,
    cfg: ShapesConfig = ShapesConfig(),
    *,
    draw_class_object: bool = True,
) -> ShapesBatch:
    """Render the images of ``indices`` under ``seed`` (see the module doc).

    Objects are rendered on an L x L patch around their centre (L covers the largest radius),
    all objects of the batch at once, then composited slot by slot (lures first, the class
    object last). draw_class_object=False leaves the class object out (same everything else):
    the pixels that change are exactly ``masks`` (used by the tests).
    """
    idx = [int(i) for i in indices]
    S, B = cfg.img_size, len(idx)
    n_slots = 1 + cfg.n_distractors[1]
    half = math.ceil(max(cfg.radius_px[1], cfg.lure_radius_px[1])) + 1
    L = 2 * half
    params, bg_rnd, n_lures, grids, grain, pix = [], [], [], [], [], []
    for i in idx:
        g = _generator(seed, i)
        p, bgr, n_d = _draw_params(g, cfg, i % NUM_CLASSES)
        params.append(p)
        bg_rnd.append(bgr)
        n_lures.append(n_d)
        grids.append(torch.rand(3, _COARSE_GRID, _COARSE_GRID, generator=g))
        grain.append(torch.randn(3, S, S, generator=g))
        pix.append(torch.rand(n_slots, L, L, generator=g))
    P = torch.stack(params)  # [B, n_slots, 14]
    bgr = torch.stack(bg_rnd)  # [B, 6]

    img = _backgrounds(bgr, torch.stack(grids), cfg)  # [B, 3, S*S + 1]

    # every object of the batch on its L x L patch: M = B * n_slots objects
    Pm = P.reshape(B * n_slots, -1)
    M = Pm.shape[0]
    cx, cy, r = (Pm[:, k].view(M, 1, 1) for k in (2, 3, 4))
    off = torch.arange(L, dtype=torch.float32) - half
    px = torch.floor(cx) + off.view(1, 1, L)  # [M, 1, L] pixel columns
    py = torch.floor(cy) + off.view(1, L, 1)  # [M, L, 1] pixel rows
    dx, dy = px + 0.5 - cx, py + 0.5 - cy
    ca, sa = torch.cos(Pm[:, 5]).view(M, 1, 1), torch.sin(Pm[:, 5]).view(M, 1, 1)
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy  # [M, L, L]
    in_img = (px >= 0) & (px < S) & (py >= 0) & (py < S)
    inside = _shape_mask(Pm[:, 0].long(), u, v, r) & in_img
    noise = torch.stack(pix).reshape(M, L, L)
    pat = _texture(Pm[:, 1].long(), u, v, Pm[:, 6].view(M, 1, 1), Pm[:, 7].view(M, 1, 1), noise)
    pat = pat.unsqueeze(1)  # [M, 1, L, L]
    obj = Pm[:, 8:11].view(M, 3, 1, 1) * (1 - pat) + Pm[:, 11:14].view(M, 3, 1, 1) * pat
    # patch pixels outside the image go to one spare slot past the end (index S*S), so every
    # in-image pixel appears at most once per patch and the scatters below are deterministic
    flat = torch.where(in_img, py * S + px, float(S * S)).long().reshape(B, n_slots, L * L)
    inside = inside.reshape(B, n_slots, L * L)
    obj = obj.reshape(B, n_slots, 3, L * L)

    n_l = torch.tensor(n_lures)
    for slot in list(range(1, n_slots)) + [0]:  # lures first, the class object on top
        active = (slot <= n_l) if slot else torch.full((B,), draw_class_object)
        m = inside[:, slot] & active.view(B, 1)  # [B, L*L]
        where = flat[:, slot].unsqueeze(1).expand(B, 3, L * L)
        cur = img.gather(2, where)
        img = img.scatter(2, where, torch.where(m.unsqueeze(1), obj[:, slot], cur))
    img = (img[:, :, : S * S].reshape(B, 3, S, S) + _GRAIN * torch.stack(grain)).clamp(0, 1)

    class_mask = torch.zeros(B, S * S + 1, dtype=torch.bool)
    if draw_class_object:
        class_mask.scatter_(1, flat[:, 0], inside[:, 0])
    class_mask = class_mask[:, : S * S].reshape(B, S, S)
    labels = torch.tensor([i % NUM_CLASSES for i in idx], dtype=torch.int64)
    return ShapesBatch(normalize(img), labels, _boxes(class_mask), class_mask)


def _backgrounds(bgr: torch.Tensor, grids: torch.Tensor, cfg: ShapesConfig) -> torch.Tensor:
    """Smooth gradients or cluttered low-frequency colour noise: [B, 3, S*S + 1], flattened, with one
    spare pixel past the end (where the object patches' off-image pixels are scattered).

    bgr: [B, 6] each image's background draws; grids: [B, 3, g, g] its coarse noise grid."""
    S, B = cfg.img_size, bgr.shape[0]
    coords = torch.arange(S, dtype=torch.float32) + 0.5
    Y, X = torch.meshgrid(coords, coords, indexing="ij")
    ang = 2 * math.pi * bgr[:, 0].view(B, 1, 1)
    t = (((torch.cos(ang) * X + torch.sin(ang) * Y) / S + 1.0) / 2.0).unsqueeze(1)
    c0 = 0.3 + 0.4 * bgr[:, [1, 2, 3]].view(B, 3, 1, 1)
    c1 = 0.3 + 0.4 * bgr[:, [2, 3, 1]].view(B, 3, 1, 1)
    smooth = c0 * (1 - t) + c1 * t
    clutter = F.interpolate(grids, size=(S, S), mode="bicubic", align_corners=False)
    if cfg.class_cue == "hue":  # grey-ish backgrounds: at most a faint tint, no class hue
        tint = _BG_TINT * (bgr[:, [1, 2, 3]] - bgr[:, [1, 2, 3]].mean(1, keepdim=True)).view(B, 3, 1, 1)
        smooth = smooth.mean(1, keepdim=True) + tint
        clutter = clutter.mean(1, keepdim=True) * 1.6 - 0.3 + tint
    cluttered = (bgr[:, 4] < cfg.clutter_prob).view(B, 1, 1, 1)
    img = torch.where(cluttered, clutter.clamp(0, 1), smooth).reshape(B, 3, S * S)
    return torch.cat([img, torch.zeros(B, 3, 1)], 2)  # the spare slot


def _boxes(mask: torch.Tensor) -> torch.Tensor:
    """[N, S, S] bool -> [N, 4] (x0, y0, x1, y1), exclusive upper; (0, 0, 0, 0) for an empty mask."""
    N, S, _ = mask.shape
    ar = torch.arange(S)
    rows, cols = mask.any(2), mask.any(1)  # [N, S]
    big = torch.full((N, S), S, dtype=torch.int64)
    x0 = torch.where(cols, ar, big).amin(1)
    y0 = torch.where(rows, ar, big).amin(1)
    x1 = torch.where(cols, ar + 1, torch.zeros_like(big)).amax(1)
    y1 = torch.where(rows, ar + 1, torch.zeros_like(big)).amax(1)
    empty = ~mask.flatten(1).any(1)
    out = torch.stack([x0, y0, x1, y1], 1)
    out[empty] = 0
    return out


def shapes_images(n: int, seed: int = HELDOUT_SEED, img_size: int = 224) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of the set ``seed`` at side ``img_size`` (:meth:`ShapesConfig.for_size`)
    -> ([n, 3, S, S] normalized, [n] labels)."""
    b = make_shapes(range(n), seed, ShapesConfig.for_size(img_size))
    return b.images, b.labels


__all__ = [
    "CALIB_SEED",
    "CLASS_NAMES",
    "HELDOUT_SEED",
    "NUM_CLASSES",
    "TRAIN_SEED",
    "ShapesBatch",
    "ShapesConfig",
    "make_shapes",
    "shapes_images",
]
