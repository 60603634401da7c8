"""Procedural multi-view scenes with exact ground truth (depth, poses, point maps).

A textured room (an axis-aligned box: floor, ceiling, four walls) holds a few boxes and
spheres. Every pixel of every frame is ray-cast analytically in torch (ray/plane, ray/AABB
and ray/sphere intersections, vectorised over all rays), shaded with Lambert lighting from a
fixed point light plus ambient. Textures are procedural (checker, stripes, tiles, value noise,
colour gradients) modulated by low-frequency colour noise and fine grain, so patches are
distinguishable while walls still carry repeated structure.

World frame: y up, floor at y = 0, room centred on x = z = 0 (metres). Cameras follow the
OpenCV convention used everywhere in the harness: extrinsics ``[R | t]`` map world to camera
(``x_cam = R x_world + t``), camera axes x right, y down, z forward; pixel ``(row i, column j)``
looks through ``(u, v) = (j, i)`` with ``K = [[f, 0, W/2], [0, f, H/2], [0, 0, 1]]`` (principal
point at the image centre, as VGGT predicts it).

Camera paths:
- ``"video"``: a smooth arc around the room centre (3 degrees per frame, gentle height,
  radius and look-at variation), so consecutive frames overlap heavily.
- ``"sparse"``: viewpoints spread around the room by the golden angle with random heights and
  look-at points, so consecutive frames overlap little.

Everything is a deterministic function of the config. The room and objects depend only on
``seed`` (not on the frame count or size), and the first k frames of a path do not depend on
how many frames follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.data.readers import Frames
from harness.params import param

#: Angular step of the video orbit between consecutive frames.
VIDEO_STEP_DEG = 3.0
#: Golden angle: consecutive sparse views are this far apart around the room.
SPARSE_STEP_DEG = 137.50776
#: Objects stay within this horizontal radius of the room centre (centre of the object).
OBJECT_RADIUS_M = 1.2
#: Largest object half-size / sphere radius.
OBJECT_MAX_HALF_M = 0.45
#: Cameras stay at least this far from the room centre (outside every object).
CAMERA_MIN_RADIUS_M = 1.9
#: Lighting: shade = albedo * (AMBIENT + DIFFUSE * max(0, n . l)), clamped to [0, 1].
AMBIENT = 0.4
DIFFUSE = 0.8
#: Value-noise lattice side (cells); the lattice tiles periodically.
_LATTICE = 64
_TEXTURE_KINDS = ("checker", "stripes", "tiles", "noise", "gradient")
_EPS_T = 1e-4


@dataclass(frozen=True)
class SceneConfig:
    """What to render. Defaults give VGGT's 518x392 crop-mode input size."""

    frames: int = param(8, "number of views S", range=(1, None))
    height: int = param(392, "image height in pixels (VGGT needs a multiple of 14)", range=(1, None))
    width: int = param(518, "image width in pixels (VGGT needs a multiple of 14)", range=(1, None))
    seed: int = param(0, "seed of the room, objects, textures and camera path", range=(0, None))
    mode: str = param("video", "camera path: smooth overlapping video or widely separated views",
                      choices=("video", "sparse"))
    objects: int = param(6, "number of boxes and spheres in the room", range=(0, None))
    fov_deg: float = param(60.0, "horizontal field of view in degrees", range=(1.0, 170.0))


@dataclass
class Scene(Frames):
    """Rendered frames with exact ground truth.

    images: [S, 3, H, W] float32 in [0, 1]
    depth: [S, H, W] float32 z-depth in metres (camera frame)
    valid: [S, H, W] bool (every ray hits the closed room, so all True)
    intrinsics: [S, 3, 3] float32
    extrinsics: [S, 3, 4] float32 OpenCV camera-from-world
    world_points: [S, H, W, 3] float32 world coordinates of each pixel's surface point
    """

    world_points: torch.Tensor | None = None


# --------------------------------------------------------------------------- scene content


@dataclass
class _Surface:
    """Texture parameters of one surface (a room face or an object)."""

    kind: int
    colour_a: torch.Tensor  # [3]
    colour_b: torch.Tensor  # [3]
    scale_m: float
    angle: float
    lattice: torch.Tensor  # [L, L, 5]: 3 colour-variation channels, grain, pattern noise


@dataclass
class _Object:
    shape: str  # "box" | "sphere"
    centre: torch.Tensor  # [3]
    half: torch.Tensor  # [3] half extents (box) or [r, r, r] (sphere)
    surface: _Surface


@dataclass
class _Content:
    room_lo: torch.Tensor  # [3]
    room_hi: torch.Tensor  # [3]
    light: torch.Tensor  # [3]
    faces: list[_Surface]  # 6 room faces: (x lo, x hi, y lo, y hi, z lo, z hi)
    objects: list[_Object]


class _Rand:
    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(int(seed))

    def u(self, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.g, dtype=torch.float64))

    def vec(self, n: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.g)

    def int(self, n: int) -> int:
        return int(torch.randint(n, (), generator=self.g))


def _colour(r: _Rand) -> torch.Tensor:
    """A random, moderately saturated RGB albedo [3]."""
    base = r.vec(3, 0.15, 0.95)
    grey = base.mean()
    return (grey + 1.3 * (base - grey)).clamp(0.05, 0.98)


def _surface(r: _Rand, scale_range: tuple[float, float]) -> _Surface:
    kind = r.int(len(_TEXTURE_KINDS))
    a = _colour(r)
    b = _colour(r) if r.u() < 0.7 else (a * r.u(0.3, 0.6))
    return _Surface(kind, a, b, r.u(*scale_range), r.u(0.0, math.pi),
                    torch.rand(_LATTICE, _LATTICE, 5, generator=r.g))


def _content(seed: int, n_objects: int) -> _Content:
    r = _Rand(seed)
    half_x, half_z, height = r.u(2.8, 3.6), r.u(2.8, 3.6), r.u(2.6, 3.2)
    lo = torch.tensor([-half_x, 0.0, -half_z])
    hi = torch.tensor([half_x, height, half_z])
    light = torch.tensor([r.u(-1.0, 1.0), height - 0.3, r.u(-1.0, 1.0)])
    faces = [_surface(r, (0.25, 0.8)) for _ in range(6)]
    objects = []
    for _ in range(n_objects):
        ang, rad = r.u(0.0, 2 * math.pi), OBJECT_RADIUS_M * math.sqrt(r.u())
        cx, cz = rad * math.cos(ang), rad * math.sin(ang)
        surf = _surface(r, (0.06, 0.25))
        if r.u() < 0.5:
            hx, hz, hy = r.u(0.15, OBJECT_MAX_HALF_M), r.u(0.15, OBJECT_MAX_HALF_M), r.u(0.1, 0.5)
            objects.append(_Object("box", torch.tensor([cx, hy, cz]), torch.tensor([hx, hy, hz]), surf))
        else:
            rs = r.u(0.15, OBJECT_MAX_HALF_M)
            cy = rs if r.u() < 0.6 else r.u(rs + 0.2, 1.6)
            objects.append(_Object("sphere", torch.tensor([cx, cy, cz]), torch.tensor([rs, rs, rs]), surf))
    return _Content(lo, hi, light, faces, objects)


# --------------------------------------------------------------------------- cameras


def look_at(centre: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """OpenCV camera-from-world [3, 4] for a camera at ``centre`` [3] looking at ``target`` [3]
    with the world's +y up (image rows run towards world -y)."""
    c, g = centre.double(), target.double()
    fwd = (g - c) / (g - c).norm()
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    right = torch.linalg.cross(fwd, up)
    right = right / right.norm()
    down = torch.linalg.cross(fwd, right)
    rot = torch.stack([right, down, fwd])
    return torch.cat([rot, (-rot @ c)[:, None]], dim=1).float()


def _camera_path(cfg: SceneConfig, content: _Content) -> torch.Tensor:
    """[S, 3, 4] extrinsics along the configured path."""
    r = _Rand(cfg.seed * 7919 + (1 if cfg.mode == "video" else 2))
    max_rad = float(torch.minimum(-content.room_lo[[0, 2]], content.room_hi[[0, 2]]).min()) - 0.45
    height = float(content.room_hi[1])
    extr = []
    if cfg.mode == "video":
        theta0, direction = r.u(0.0, 2 * math.pi), (1.0 if r.u() < 0.5 else -1.0)
        rad0 = r.u(CAMERA_MIN_RADIUS_M + 0.15, max_rad - 0.15)
        h0, th0 = r.u(1.1, 1.6), r.u(0.4, 0.8)
        ph = r.vec(5, 0.0, 2 * math.pi).tolist()
        for i in range(cfg.frames):
            theta = theta0 + direction * math.radians(VIDEO_STEP_DEG) * i
            rad = rad0 + 0.12 * math.sin(0.21 * i + ph[0])
            cam = torch.tensor([rad * math.cos(theta), h0 + 0.15 * math.sin(0.17 * i + ph[1]),
                                rad * math.sin(theta)])
            tgt = torch.tensor([0.35 * math.sin(0.13 * i + ph[2]), th0 + 0.12 * math.sin(0.11 * i + ph[3]),
                                0.35 * math.cos(0.09 * i + ph[4])])
            extr.append(look_at(cam, tgt))
    else:
        theta0 = r.u(0.0, 2 * math.pi)
        for i in range(cfg.frames):
            theta = theta0 + math.radians(SPARSE_STEP_DEG) * i
            rad = r.u(CAMERA_MIN_RADIUS_M, max_rad)
            cam_y = r.u(0.5, min(2.0, height - 0.3))
            cam = torch.tensor([rad * math.cos(theta), cam_y, rad * math.sin(theta)])
            tgt = torch.tensor([r.u(-1.0, 1.0), r.u(0.1, 1.3), r.u(-1.0, 1.0)])
            extr.append(look_at(cam, tgt))
    return torch.stack(extr)


def _intrinsics(cfg: SceneConfig) -> torch.Tensor:
    f = (cfg.width / 2) / math.tan(math.radians(cfg.fov_deg) / 2)
    k = torch.tensor([[f, 0.0, cfg.width / 2], [0.0, f, cfg.height / 2], [0.0, 0.0, 1.0]])
    return k.expand(cfg.frames, 3, 3).clone()


# --------------------------------------------------------------------------- ray casting


def _inverse(d: torch.Tensor) -> torch.Tensor:
    """1 / d with components bounded away from zero (keeping the sign)."""
    tiny = 1e-9
    return 1.0 / torch.where(d >= 0, d.clamp(min=tiny), d.clamp(max=-tiny))


def _hit_box(o: torch.Tensor, inv_d: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Ray/AABB entry distance (inf on miss). o: [S, 1, 3], inv_d: [S, R, 3] -> [S, R]."""
    t1, t2 = (lo - o) * inv_d, (hi - o) * inv_d
    t_near = torch.minimum(t1, t2).amax(dim=-1)
    t_far = torch.maximum(t1, t2).amin(dim=-1)
    miss = (t_near > t_far) | (t_near <= _EPS_T)
    return t_near.masked_fill_(miss, math.inf)


def _hit_sphere(o: torch.Tensor, d: torch.Tensor, dd: torch.Tensor, centre: torch.Tensor,
                radius: float) -> torch.Tensor:
    """Ray/sphere nearest positive distance (inf on miss).

    o: [S, 1, 3], d: [S, R, 3], dd = |d|^2: [S, R] -> [S, R].
    """
    oc = o - centre  # [S, 1, 3]
    b = (d * oc).sum(-1)
    c = (oc * oc).sum(-1) - radius * radius  # [S, 1]
    disc = b * b - dd * c
    sq = disc.clamp(min=0).sqrt_()
    t0, t1 = (-b - sq) / dd, (sq - b) / dd
    t = torch.where(t0 > _EPS_T, t0, t1)
    return t.masked_fill_((disc < 0) | (t <= _EPS_T), math.inf)


# --------------------------------------------------------------------------- textures


def _value_noise(uv: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
    """Smooth periodic value noise. uv: [M, 2] lattice units; lattice: [L, L, C] -> [M, C]."""
    n = lattice.shape[0]
    flat = lattice.reshape(n * n, -1)
    base = torch.floor(uv)
    f = uv - base
    f = f * f * (3 - 2 * f)
    i0 = base.long().remainder_(n)
    i1 = (i0 + 1).remainder_(n)
    r0, r1 = i0[:, 0] * n, i1[:, 0] * n
    v00 = flat.index_select(0, r0 + i0[:, 1])
    v01 = flat.index_select(0, r0 + i1[:, 1])
    v10 = flat.index_select(0, r1 + i0[:, 1])
    v11 = flat.index_select(0, r1 + i1[:, 1])
    fu, fv = f[:, :1], f[:, 1:]
    return torch.lerp(torch.lerp(v00, v01, fv), torch.lerp(v10, v11, fv), fu)


def _albedo(surf: _Surface, uv: torch.Tensor) -> torch.Tensor:
    """Texture colour at surface coordinates uv [M, 2] (metres) -> [M, 3] in [0, 1]."""
    s = surf.scale_m
    ca, sa = math.cos(surf.angle), math.sin(surf.angle)
    w = uv[:, 0] * ca + uv[:, 1] * sa
    kind = _TEXTURE_KINDS[surf.kind]
    if kind == "checker":
        cells = torch.floor(uv / s)
        p = torch.remainder(cells[:, 0] + cells[:, 1], 2.0)
    elif kind == "stripes":
        p = 0.5 + 0.5 * torch.tanh(4.0 * torch.sin(2 * math.pi * w / s))
    elif kind == "tiles":
        frac = torch.remainder(uv / s, 1.0)
        edge = torch.minimum(frac, 1 - frac).amin(dim=1)
        p = (edge < 0.06).float()
    elif kind == "noise":
        p = _value_noise(uv / (0.5 * s), surf.lattice[..., 4:5])[:, 0]
    else:  # gradient
        p = 0.5 + 0.5 * torch.sin(w / (1.5 * s))
    base = surf.colour_a + (surf.colour_b - surf.colour_a) * p[:, None]
    variation = _value_noise(uv / 0.7, surf.lattice[..., :3])
    grain = _value_noise(uv / 0.05, surf.lattice[..., 3:4])
    return (base * (0.75 + 0.5 * (variation - 0.5)) + 0.08 * (grain - 0.5)).clamp(0.0, 1.0)


# --------------------------------------------------------------------------- render


def render_scene(cfg: SceneConfig) -> Scene:
    """Ray-cast ``cfg.frames`` views of the seeded room. See :class:`Scene` for the outputs."""
    _check_config(cfg)
    content = _content(cfg.seed, cfg.objects)
    extr = _camera_path(cfg, content)
    intr = _intrinsics(cfg)
    s, h, w = cfg.frames, cfg.height, cfg.width
    t_best, surf_id, d, o = _cast_rays(content, intr, extr, h, w)
    points = o + t_best[:, None] * d
    normals, albedo = _surfaces(content, points, surf_id)
    to_light = content.light - points
    to_light = to_light / to_light.norm(dim=1, keepdim=True).clamp(min=1e-6)
    lambert = (normals * to_light).sum(1).clamp(min=0.0)
    colour = albedo * (AMBIENT + DIFFUSE * lambert[:, None])

    images = colour.reshape(s, h, w, 3).permute(0, 3, 1, 2).clamp(0.0, 1.0).contiguous()
    depth = t_best.reshape(s, h, w).contiguous()
    valid = torch.isfinite(depth) & (depth > 0)
    return Scene(
        images=images,
        depth=torch.where(valid, depth, torch.zeros_like(depth)),
        valid=valid,
        intrinsics=intr,
        extrinsics=extr,
        names=tuple(f"{cfg.mode}-{cfg.seed}-{i:04d}" for i in range(s)),
        world_points=points.reshape(s, h, w, 3).contiguous(),
    )


def _check_config(cfg: SceneConfig) -> None:
    if cfg.mode not in ("video", "sparse"):
        raise ValueError(f"SceneConfig.mode={cfg.mode!r} is not allowed; choose 'video' or 'sparse'")
    for name in ("frames", "height", "width"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"SceneConfig.{name}={getattr(cfg, name)} must be >= 1")
    if cfg.objects < 0 or not 1.0 <= cfg.fov_deg <= 170.0:
        raise ValueError(f"SceneConfig: objects={cfg.objects} must be >= 0 and fov_deg={cfg.fov_deg} "
                         "in [1, 170]")


def _cast_rays(content: _Content, intr: torch.Tensor, extr: torch.Tensor, h: int,
               w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The nearest hit of every pixel's ray: (t [S*H*W], surface id [S*H*W], ray direction
    [S*H*W, 3], ray origin [S*H*W, 3]); surfaces 0-5 are the room's faces, 6 + j object j."""
    s = extr.shape[0]
    # Rays: camera-frame directions with z = 1, so the hit distance t is the z-depth.
    k = intr[0]
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                          indexing="ij")
    d_cam = torch.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], torch.ones_like(u)], -1)
    rot, trans = extr[:, :, :3], extr[:, :, 3]
    centres = -(rot.transpose(1, 2) @ trans[:, :, None])[:, :, 0]  # [S, 3]
    d = d_cam.reshape(1, -1, 3) @ rot  # R^T d_cam in row form: [S, H*W, 3]
    o = centres[:, None, :]  # [S, 1, 3]
    inv_d = _inverse(d)

    # Room: the exit distance of the box the camera sits in.
    t_axes = torch.where(inv_d > 0, (content.room_hi - o) * inv_d, (content.room_lo - o) * inv_d)
    t_best, axis = t_axes.min(dim=-1)  # [S, H*W]
    hi_side = inv_d.gather(-1, axis[..., None])[..., 0] > 0
    surf_id = 2 * axis + hi_side.long()
    dd = (d * d).sum(-1)
    for j, obj in enumerate(content.objects):
        if obj.shape == "box":
            t = _hit_box(o, inv_d, obj.centre - obj.half, obj.centre + obj.half)
        else:
            t = _hit_sphere(o, d, dd, obj.centre, float(obj.half[0]))
        closer = t < t_best
        t_best = torch.minimum(t, t_best)
        surf_id.masked_fill_(closer, 6 + j)
    return t_best.reshape(-1), surf_id.reshape(-1), d.reshape(-1, 3), o.expand(s, h * w, 3).reshape(-1, 3)


def _surfaces(content: _Content, points: torch.Tensor,
              surf_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(normals, albedo) [P, 3] of the hit points, from each surface's shape and texture."""
    normals = torch.zeros_like(points)
    albedo = torch.zeros_like(points)
    for sid in range(6 + len(content.objects)):
        idx = (surf_id == sid).nonzero()[:, 0]
        if idx.numel() == 0:
            continue
        p = points[idx]
        if sid < 6:
            ax, on_hi = sid // 2, sid % 2
            n = torch.zeros_like(p)
            n[:, ax] = -1.0 if on_hi else 1.0
            others = [a for a in range(3) if a != ax]
            uv = p[:, others]
            surf = content.faces[sid]
        else:
            obj = content.objects[sid - 6]
            rel = p - obj.centre
            surf = obj.surface
            if obj.shape == "box":
                ax_hit = (rel.abs() / obj.half).argmax(dim=1)
                n = torch.zeros_like(p)
                n.scatter_(1, ax_hit[:, None], torch.sign(rel.gather(1, ax_hit[:, None])))
                # face-local coordinates: the two axes other than the face normal, offset per face
                first = torch.where(ax_hit == 0, rel[:, 1], rel[:, 0])
                second = torch.where(ax_hit == 2, rel[:, 1], rel[:, 2])
                uv = torch.stack([first, second], 1) + 3.0 * ax_hit[:, None].float()
            else:
                radius = float(obj.half[0])
                n = rel / radius
                lat = torch.asin(n[:, 1].clamp(-1, 1)) * radius
                lon = torch.atan2(n[:, 2], n[:, 0]) * radius
                uv = torch.stack([lon, lat], 1)
        normals[idx] = n
        albedo[idx] = _albedo(surf, uv)
    return normals, albedo


__all__ = ["Scene", "SceneConfig", "look_at", "render_scene"]
