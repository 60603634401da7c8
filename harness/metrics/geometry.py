"""Geometry metrics against ground truth: point clouds, depth and camera poses.

Conventions (shared with :mod:`harness.data`): extrinsics are OpenCV camera-from-world
``[R | t]`` (``x_cam = R x_world + t``, camera x right, y down, z forward); intrinsics are
pinhole ``K``; pixel ``(row i, column j)`` sits at ``(u, v) = (j, i)``.

Point-cloud metrics follow the 7-Scenes / NRGBD protocol that HTTM and FastVGGT report
(Acc / Comp, Chamfer-style nearest-neighbour distances in metres after a similarity
alignment of the prediction to the ground truth; NC the normal consistency). Pose metrics
follow VGGT / PoseDiffusion (pairwise relative rotation and translation-direction errors,
AUC@30). All functions accept tensors on any device; internal fits run in float64.
"""

from __future__ import annotations

import math

import torch

#: Rows of the query set processed per torch.cdist call in nearest-neighbour search.
NN_CHUNK = 1024
#: Corresponding pixels used for the Sim(3) fit in reconstruction_metrics.
_FIT_POINTS = 200_000
#: AUC thresholds in degrees (VGGT / PoseDiffusion AUC@30 averages over 1..30).
AUC_MAX_DEG = 30


# --------------------------------------------------------------------------- similarity fits


def umeyama_sim3(
    src: torch.Tensor, dst: torch.Tensor, with_scale: bool = True
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Least-squares similarity ``dst ≈ s R src + t`` (Umeyama 1991).

    src, dst: [N, 3] corresponding points (N >= 3 for a unique rotation).
    Returns (s, R [3, 3], t [3]) in float64 on src's device; R is a proper rotation
    (det +1) even when the best orthogonal fit would be a reflection. ``with_scale=False``
    fixes s = 1 (a rigid fit).
    """
    if src.shape != dst.shape or src.dim() != 2 or src.shape[1] != 3:
        raise ValueError(
            f"umeyama_sim3: src {tuple(src.shape)} and dst {tuple(dst.shape)} must both be [N, 3]"
        )
    if src.shape[0] < 1:
        raise ValueError("umeyama_sim3: need at least one point pair")
    x, y = src.double(), dst.to(src.device).double()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    n = x.shape[0]
    cov = yc.T @ xc / n  # [3, 3]
    u, sv, vh = torch.linalg.svd(cov)
    fix = torch.ones(3, dtype=torch.float64, device=x.device)
    if torch.det(u) * torch.det(vh) < 0:
        fix[2] = -1.0
    rot = u @ torch.diag(fix) @ vh
    var_x = (xc * xc).sum() / n
    if with_scale:
        s = float((sv * fix).sum() / var_x) if var_x > 0 else 1.0
    else:
        s = 1.0
    t = my - s * rot @ mx
    return s, rot, t


def apply_sim3(points: torch.Tensor, s: float, rot: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """points: [..., 3] -> s R p + t, same shape and dtype as points."""
    out = s * points.double() @ rot.to(points.device).T + t.to(points.device)
    return out.to(points.dtype)


def camera_centres(extrinsics: torch.Tensor) -> torch.Tensor:
    """extrinsics: [S, 3, 4] camera-from-world -> camera centres in world [S, 3] (c = -R^T t)."""
    rot, t = extrinsics[..., :3].double(), extrinsics[..., 3:].double()
    return (-rot.transpose(-1, -2) @ t)[..., 0].to(extrinsics.dtype)


def align_points(
    pred: torch.Tensor,
    gt: torch.Tensor | None = None,
    *,
    pred_extrinsics: torch.Tensor | None = None,
    gt_extrinsics: torch.Tensor | None = None,
    with_scale: bool = True,
) -> torch.Tensor:
    """Map predicted points into the ground-truth frame with a Sim(3) fit.

    pred: [N, 3]. By default the fit uses corresponding points ``pred`` ↔ ``gt`` [N, 3].
    When ``pred_extrinsics`` and ``gt_extrinsics`` ([S, 3, 4] each) are both given, the fit
    uses the camera centres instead (``gt`` may then be None or any other cloud).
    Returns the aligned prediction [N, 3].
    """
    if pred_extrinsics is not None or gt_extrinsics is not None:
        if pred_extrinsics is None or gt_extrinsics is None:
            raise ValueError("align_points: give both pred_extrinsics and gt_extrinsics to align via cameras")
        s, rot, t = umeyama_sim3(camera_centres(pred_extrinsics), camera_centres(gt_extrinsics), with_scale)
    else:
        if gt is None or gt.shape != pred.shape:
            raise ValueError(
                f"align_points: point alignment needs gt with pred's shape {tuple(pred.shape)}, "
                f"got {None if gt is None else tuple(gt.shape)}"
            )
        s, rot, t = umeyama_sim3(pred, gt, with_scale)
    return apply_sim3(pred, s, rot, t)


# --------------------------------------------------------------------------- point clouds


def _subsample(x: torch.Tensor, max_points: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of at most max_points random rows of x [N, ...] (all rows if N <= max_points)."""
    n = x.shape[0]
    if n <= max_points:
        return torch.arange(n, device=x.device)
    return torch.randperm(n, generator=gen)[:max_points].to(x.device)


def nearest_neighbours(
    query: torch.Tensor, ref: torch.Tensor, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query point its nearest ref point (exact).

    query: [N, 3], ref: [M, 3] -> (distance [N] float64, index [N] long), on query's device.
    ``backend``: ``"kdtree"`` (scipy cKDTree, fast on CPU), ``"torch"`` (chunked float64
    squared-distance matrix + argmin, for GPUs; the distance is then recomputed as
    ``||q - ref[idx]||`` so coincident points give exactly 0), or ``"auto"`` (kdtree for CPU
    tensors, torch otherwise).
    """
    if backend not in ("auto", "kdtree", "torch"):
        raise ValueError(f"nearest_neighbours: backend {backend!r} is not one of 'auto', 'kdtree', 'torch'")
    if ref.shape[0] == 0:
        raise ValueError("nearest_neighbours: the reference cloud is empty")
    dev = query.device
    if backend == "kdtree" or (backend == "auto" and dev.type == "cpu"):
        from scipy.spatial import cKDTree

        tree = cKDTree(ref.detach().double().cpu().numpy())
        dist, idx = tree.query(query.detach().double().cpu().numpy(), k=1)
        return torch.from_numpy(dist).to(dev), torch.from_numpy(idx).long().to(dev)
    r = ref.to(dev).double()
    centre = r.mean(0)
    q, r = query.double() - centre, r - centre
    r_sq = (r * r).sum(1)
    idx = torch.empty(q.shape[0], dtype=torch.long, device=dev)
    for start in range(0, q.shape[0], NN_CHUNK):
        # ||q - r||^2 minus the per-row constant ||q||^2
        scores = torch.addmm(r_sq, q[start:start + NN_CHUNK], r.T, alpha=-2.0)
        idx[start:start + NN_CHUNK] = scores.argmin(dim=1)
    return (q - r[idx]).norm(dim=1), idx


def accuracy_completeness(
    pred: torch.Tensor,
    gt: torch.Tensor,
    *,
    normals_pred: torch.Tensor | None = None,
    normals_gt: torch.Tensor | None = None,
    max_points: int = 20000,
    seed: int = 0,
    nn_backend: str = "auto",
) -> dict[str, float]:
    """Chamfer-style accuracy and completeness of a predicted cloud against the GT cloud.

    pred: [N, 3], gt: [M, 3] (same frame and units, already aligned).
    normals_pred: [N, 3], normals_gt: [M, 3] optional unit normals (sign ignored).
    Each cloud is first reduced to a random subset of at most ``max_points`` (seeded);
    ``nn_backend`` picks the nearest-neighbour search (see :func:`nearest_neighbours`).

    Returns (distances in the clouds' units, normally metres):
    - ``acc`` / ``acc_med``: mean / median over pred of the distance to the nearest GT point;
    - ``comp`` / ``comp_med``: mean / median over GT of the distance to the nearest pred point;
    - ``nc`` (only with both normal sets): mean of |cos| between a point's normal and its
      nearest neighbour's normal, averaged over both directions (pred→GT and GT→pred).
    """
    if pred.dim() != 2 or pred.shape[-1] != 3 or gt.dim() != 2 or gt.shape[-1] != 3:
        raise ValueError(
            f"accuracy_completeness: pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must be [N, 3]"
        )
    if pred.shape[0] == 0 or gt.shape[0] == 0:
        raise ValueError(
            f"accuracy_completeness: empty cloud (pred {pred.shape[0]}, gt {gt.shape[0]} points)"
        )
    with_normals = normals_pred is not None and normals_gt is not None
    gen = torch.Generator().manual_seed(seed)
    ip = _subsample(pred, max_points, gen)
    ig = _subsample(gt, max_points, gen)
    p, g = pred[ip], gt[ig].to(pred.device)
    d_acc, nn_acc = nearest_neighbours(p, g, nn_backend)
    d_comp, nn_comp = nearest_neighbours(g, p, nn_backend)
    out = {
        "acc": float(d_acc.mean()),
        "acc_med": float(d_acc.median()),
        "comp": float(d_comp.mean()),
        "comp_med": float(d_comp.median()),
    }
    if with_normals:
        n_p = _unit(normals_pred[ip].double())
        n_g = _unit(normals_gt[ig].to(pred.device).double())
        nc_acc = (n_p * n_g[nn_acc]).sum(-1).abs().mean()
        nc_comp = (n_g * n_p[nn_comp]).sum(-1).abs().mean()
        out["nc"] = float((nc_acc + nc_comp) / 2)
    return out


def _unit(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=eps)


def normals_from_pointmap(points: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel unit normals of a point map.

    points: [S, H, W, 3]. The normal at pixel (s, i, j) is the normalised cross product of
    the central differences p(i, j+1) - p(i, j-1) and p(i+1, j) - p(i-1, j) (one-sided at
    the borders); a vanishing cross product gives a zero vector. Orientation is not
    meaningful (NC uses |cos|).
    pixels: optional [K] long indices into the flattened S*H*W grid; then only those normals
    are computed and [K, 3] is returned. Without it the result is [S, H, W, 3].
    """
    if points.dim() != 4 or points.shape[-1] != 3:
        raise ValueError(f"normals_from_pointmap: points must be [S, H, W, 3], got {tuple(points.shape)}")
    s, h, w, _ = points.shape
    flat = points.reshape(-1, 3)
    full = pixels is None
    if full:
        pixels = torch.arange(s * h * w, device=points.device)
    pixels = pixels.to(points.device)
    frame, rest = pixels // (h * w), pixels % (h * w)
    row, col = rest // w, rest % w
    base = frame * (h * w)

    def at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return flat[base + r.clamp(0, h - 1) * w + c.clamp(0, w - 1)]

    du = at(row, col + 1) - at(row, col - 1)
    dv = at(row + 1, col) - at(row - 1, col)
    n = torch.linalg.cross(du, dv, dim=-1)
    norm = n.norm(dim=-1, keepdim=True)
    n = torch.where(norm > 0, n / norm.clamp(min=1e-30), torch.zeros_like(n))
    return n.reshape(s, h, w, 3) if full else n


def pointmap_from_depth(
    depth: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor
) -> torch.Tensor:
    """Unproject z-depth to world points.

    depth: [S, H, W] metres; intrinsics: [S, 3, 3]; extrinsics: [S, 3, 4] camera-from-world.
    Pixel (i, j) is at (u, v) = (j, i): x_cam = d (u - cx) / fx, y_cam = d (v - cy) / fy,
    z_cam = d; then x_world = R^T (x_cam - t). Returns [S, H, W, 3] in depth's dtype.
    """
    s, h, w = depth.shape
    dev = depth.device
    k = intrinsics.double().to(dev)
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=dev),
                          torch.arange(w, dtype=torch.float64, device=dev), indexing="ij")
    fx, fy = k[:, 0, 0, None, None], k[:, 1, 1, None, None]
    cx, cy = k[:, 0, 2, None, None], k[:, 1, 2, None, None]
    z = depth.double()
    cam = torch.stack([z * (u - cx) / fx, z * (v - cy) / fy, z], dim=-1)  # [S, H, W, 3]
    rot = extrinsics[..., :3].double().to(dev)
    t = extrinsics[..., 3].double().to(dev)
    world = torch.einsum("sji,shwj->shwi", rot, cam - t[:, None, None, :])
    return world.to(depth.dtype)


def reconstruction_metrics(
    pred_points: torch.Tensor,
    gt_points: torch.Tensor,
    valid: torch.Tensor,
    *,
    pred_conf: torch.Tensor | None = None,
    conf_quantile: float | None = None,
    max_points: int = 20000,
    seed: int = 0,
) -> dict[str, float]:
    """Acc / Comp / NC of a predicted point map after a Sim(3) alignment to the GT.

    pred_points, gt_points: [S, H, W, 3]; valid: [S, H, W] bool (GT valid).
    pred_conf: [S, H, W] optional confidence; with ``conf_quantile`` = q in [0, 1), only
    predicted pixels whose confidence is at least the q-quantile (over valid pixels) are
    kept for the fit and for the predicted cloud (the GT cloud keeps every valid pixel).

    Steps: a similarity is fitted (Umeyama) on up to 200k kept corresponding pixels; each
    cloud is reduced to a seeded random subset of at most ``max_points`` pixels; normals come
    from :func:`normals_from_pointmap` on each map (predicted normals rotated by the fit);
    then :func:`accuracy_completeness`. No ICP refinement is applied. Returns acc, acc_med,
    comp, comp_med, nc (plain names; the workload adds the ``q_`` prefix).
    """
    if pred_points.shape != gt_points.shape or pred_points.shape[:-1] != valid.shape:
        raise ValueError(
            f"reconstruction_metrics: pred {tuple(pred_points.shape)}, gt {tuple(gt_points.shape)} must be "
            f"[S, H, W, 3] and valid {tuple(valid.shape)} [S, H, W]"
        )
    dev = pred_points.device
    gt_points = gt_points.to(dev)
    valid = valid.to(dev)
    gt_mask = valid & torch.isfinite(gt_points).all(-1)
    keep = gt_mask & torch.isfinite(pred_points).all(-1)
    if pred_conf is not None and conf_quantile is not None:
        if not 0.0 <= conf_quantile < 1.0:
            raise ValueError(f"reconstruction_metrics: conf_quantile={conf_quantile} must be in [0, 1)")
        conf = pred_conf.to(dev).float()
        vals = conf[keep]
        if vals.numel() > 0:
            thr = torch.quantile(_cap(vals, 1_000_000, seed), conf_quantile)
            keep = keep & (conf >= thr)
    keep_px = keep.reshape(-1).nonzero()[:, 0]
    gt_px = gt_mask.reshape(-1).nonzero()[:, 0]
    if keep_px.numel() < 3:
        raise ValueError(
            f"reconstruction_metrics: only {keep_px.numel()} valid corresponding points (need >= 3)"
        )
    gen = torch.Generator().manual_seed(seed)
    pred_flat, gt_flat = pred_points.reshape(-1, 3), gt_points.reshape(-1, 3)
    fit_px = keep_px[_subsample(keep_px, _FIT_POINTS, gen)]
    s, rot, t = umeyama_sim3(pred_flat[fit_px], gt_flat[fit_px])
    pred_px = keep_px[_subsample(keep_px, max_points, gen)]
    gt_px = gt_px[_subsample(gt_px, max_points, gen)]
    normals_pred = normals_from_pointmap(pred_points, pred_px).double() @ rot.T
    return accuracy_completeness(
        apply_sim3(pred_flat[pred_px], s, rot, t), gt_flat[gt_px],
        normals_pred=normals_pred, normals_gt=normals_from_pointmap(gt_points, gt_px),
        max_points=max_points, seed=seed,
    )


def _cap(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """At most n random entries of a 1-D tensor (torch.quantile has an input-size limit)."""
    if x.numel() <= n:
        return x
    gen = torch.Generator().manual_seed(seed)
    return x[torch.randperm(x.numel(), generator=gen)[:n].to(x.device)]


# --------------------------------------------------------------------------- depth


def depth_metrics(
    pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, *, median_scaling: bool = True
) -> dict[str, float]:
    """Monocular-style depth errors.

    pred, gt: [S, H, W] depth; valid: [S, H, W] bool (GT valid; pixels with gt <= 0 are
    also ignored). With ``median_scaling`` (default, as VGGT / monocular depth evaluations
    do) each frame's prediction is multiplied by median(gt) / median(pred) over its valid
    pixels, so only the per-frame shape of the depth is scored.

    Returns ``abs_rel`` = mean |p - g| / g and ``delta_1_25`` = fraction of pixels with
    max(p / g, g / p) < 1.25, each computed per frame and averaged over frames that have
    valid pixels.
    """
    if pred.shape != gt.shape or gt.shape != valid.shape or pred.dim() != 3:
        raise ValueError(
            f"depth_metrics: pred {tuple(pred.shape)}, gt {tuple(gt.shape)}, valid {tuple(valid.shape)} "
            "must all be [S, H, W]"
        )
    gt = gt.to(pred.device).double()
    p_all = pred.double()
    mask = valid.to(pred.device) & (gt > 0) & torch.isfinite(gt) & torch.isfinite(p_all)
    rels, deltas = [], []
    for i in range(pred.shape[0]):
        m = mask[i]
        if not m.any():
            continue
        p, g = p_all[i][m], gt[i][m]
        if median_scaling:
            p = p * (g.median() / p.median().clamp(min=1e-12))
        p = p.clamp(min=1e-12)
        rels.append(((p - g).abs() / g).mean())
        deltas.append((torch.maximum(p / g, g / p) < 1.25).double().mean())
    if not rels:
        raise ValueError("depth_metrics: no valid pixels in any frame")
    return {"abs_rel": float(torch.stack(rels).mean()), "delta_1_25": float(torch.stack(deltas).mean())}


# --------------------------------------------------------------------------- poses


def rotation_angle_deg(rot: torch.Tensor) -> torch.Tensor:
    """Geodesic angle of rotation matrices. rot: [..., 3, 3] -> [...] degrees."""
    r = rot.double()
    cos = ((r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    # atan2 of (sin, cos) is accurate near 0 where acos is not
    skew = torch.stack(
        [r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1
    )
    sin = skew.norm(dim=-1) / 2
    return torch.rad2deg(torch.atan2(sin, cos))


def _angle_between_deg(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Angle between vectors a, b: [..., 3] -> [...] degrees (atan2 form, stable near 0 and 180).

    A zero-length vector has no direction: its angle to a non-zero vector is 90 degrees (as
    upstream VGGT / PoseDiffusion score a zero translation: acos(0) after normalisation), so a
    predictor that never moves the camera is not rewarded; two zero vectors agree (0 degrees).
    """
    cross = torch.linalg.cross(a, b, dim=-1).norm(dim=-1)
    dot = (a * b).sum(-1)
    ang = torch.rad2deg(torch.atan2(cross, dot))
    small_a, small_b = a.norm(dim=-1) < eps, b.norm(dim=-1) < eps
    ang = torch.where(small_a | small_b, torch.full_like(ang, 90.0), ang)
    return torch.where(small_a & small_b, torch.zeros_like(ang), ang)


def _homogeneous(extr: torch.Tensor) -> torch.Tensor:
    """[S, 3, 4] -> [S, 4, 4] float64."""
    s = extr.shape[0]
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64, device=extr.device).expand(s, 1, 4)
    return torch.cat([extr.double(), bottom], dim=1)


def relative_pose_errors(
    pred_extr: torch.Tensor, gt_extr: torch.Tensor, *, translation_sign_ambiguity: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative rotation / translation-direction errors over all frame pairs i < j.

    pred_extr, gt_extr: [S, 3, 4] camera-from-world. For each pair the relative pose
    T_ij = T_i T_j^-1 is compared: rre = angle(R_ij_pred^T R_ij_gt), rte = angle between the
    relative translations (scale-free). With ``translation_sign_ambiguity`` (VGGT /
    PoseDiffusion evaluation) rte is min(rte, 180 - rte). Returns (rre [P], rte [P]) degrees.
    """
    if pred_extr.shape != gt_extr.shape or pred_extr.shape[-2:] != (3, 4) or pred_extr.dim() != 3:
        raise ValueError(
            f"pose errors: pred {tuple(pred_extr.shape)} and gt {tuple(gt_extr.shape)} must be [S, 3, 4]"
        )
    s = pred_extr.shape[0]
    i, j = torch.triu_indices(s, s, offset=1, device=pred_extr.device)
    tp, tg = _homogeneous(pred_extr), _homogeneous(gt_extr.to(pred_extr.device))
    rel_p = tp[i] @ torch.linalg.inv(tp[j])
    rel_g = tg[i] @ torch.linalg.inv(tg[j])
    rre = rotation_angle_deg(rel_p[:, :3, :3].transpose(1, 2) @ rel_g[:, :3, :3])
    rte = _angle_between_deg(rel_p[:, :3, 3], rel_g[:, :3, 3])
    if translation_sign_ambiguity:
        rte = torch.minimum(rte, 180.0 - rte)
    return rre, rte


def pose_auc(rre: torch.Tensor, rte: torch.Tensor, max_deg: int = AUC_MAX_DEG) -> float:
    """AUC@max_deg: mean over thresholds 1..max_deg degrees of the fraction of pairs whose
    max(rre, rte) is below the threshold (VGGT / PoseDiffusion). rre, rte: [P]."""
    err = torch.maximum(rre, rte)
    thresholds = torch.arange(1, max_deg + 1, dtype=torch.float64, device=err.device)
    return float((err[None, :] < thresholds[:, None]).double().mean())


def pose_metrics(pred_extr: torch.Tensor, gt_extr: torch.Tensor) -> dict[str, float]:
    """Camera-pose accuracy against ground truth.

    pred_extr, gt_extr: [S, 3, 4] OpenCV camera-from-world (S >= 2).
    Returns:
    - ``rre_deg`` / ``rte_deg``: mean relative rotation error and relative translation
      direction error over all pairs (see :func:`relative_pose_errors`);
    - ``auc_30``: AUC@30 of max(rre, rte) (see :func:`pose_auc`), in [0, 1];
    - ``ate``: RMSE of camera centres (GT units) after a Sim(3) alignment of predicted to
      GT centres.
    """
    if pred_extr.shape[0] < 2:
        raise ValueError(f"pose_metrics: need at least 2 frames, got {pred_extr.shape[0]}")
    rre, rte = relative_pose_errors(pred_extr, gt_extr)
    c_pred = camera_centres(pred_extr).double()
    c_gt = camera_centres(gt_extr).double().to(c_pred.device)
    s, rot, t = umeyama_sim3(c_pred, c_gt)
    ate = math.sqrt(float(((apply_sim3(c_pred, s, rot, t) - c_gt) ** 2).sum(-1).mean()))
    return {
        "rre_deg": float(rre.mean()),
        "rte_deg": float(rte.mean()),
        "auc_30": pose_auc(rre, rte),
        "ate": ate,
    }


__all__ = [
    "accuracy_completeness",
    "align_points",
    "apply_sim3",
    "camera_centres",
    "depth_metrics",
    "nearest_neighbours",
    "normals_from_pointmap",
    "pointmap_from_depth",
    "pose_auc",
    "pose_metrics",
    "reconstruction_metrics",
    "relative_pose_errors",
    "rotation_angle_deg",
    "umeyama_sim3",
]
