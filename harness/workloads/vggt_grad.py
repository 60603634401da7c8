"""The ``vggt`` workload's gradient probe: one VGGT forward with gradients on a calibration scene and
its ground-truth camera and point-cloud errors (what :class:`harness.models.seam.GradProbe` hands a
method such as HeSS). Only the global blocks' fused qkv weights require grad during the forward;
every parameter's ``requires_grad`` flag, and the model's lean mode, are restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from harness.measure.devices import autocast
from harness.metrics.aligned_errors import aligned_errors
from harness.models.seam import AttentionFn, GradCalibration


@contextmanager
def qkv_grads_only(model: torch.nn.Module) -> Iterator[dict[int, torch.Tensor]]:
    """Within: only ``model.aggregator.global_blocks[i].attn.qkv.weight`` require grad (yielded as
    ``{i: weight}``) and a lean model keeps its layer outputs attached to the graph (lean mode detaches
    them); the flags and the mode are restored on exit."""
    flags = {name: t.requires_grad for name, t in model.named_parameters()}
    lean = getattr(model, "lean", False)
    qkv = {i: blk.attn.qkv.weight for i, blk in enumerate(model.aggregator.global_blocks)}
    try:
        model.requires_grad_(False)
        for w in qkv.values():
            w.requires_grad_(True)
        model.lean = False
        yield qkv
    finally:
        for name, t in model.named_parameters():
            t.requires_grad_(flags[name])
        model.lean = lean


def grad_calibration(model: torch.nn.Module, images: torch.Tensor, fn: AttentionFn, *, device: str,
                     dtype: str, gt_points: torch.Tensor, gt_extrinsics: torch.Tensor, valid: torch.Tensor,
                     qkv: dict[int, torch.Tensor], seed: int) -> GradCalibration:
    """Forward ``images`` [S, 3, H, W] through ``model`` with ``fn`` at the global seams, with
    gradients, under the point's autocast; the losses are :func:`aligned_errors` of the camera and
    depth predictions against ``gt_points`` [S, H, W, 3], ``gt_extrinsics`` [S, 3, 4] and ``valid``
    [S, H, W]. Call inside :func:`qkv_grads_only` (``qkv`` is what it yields)."""
    hw = (int(images.shape[-2]), int(images.shape[-1]))
    with torch.enable_grad(), autocast(device, dtype):
        out = model(images, attention_fn=fn, heads=("camera", "depth"))
    errors = aligned_errors(out["depth"][0, ..., 0], out["pose_enc"][0], hw, gt_points, gt_extrinsics, valid,
                            seed=seed)
    return GradCalibration(losses={"camera": errors.camera, "points": errors.points}, qkv=qkv,
                           heads=int(model.config.num_heads), stats={"inlier_frac": errors.inlier_frac})
