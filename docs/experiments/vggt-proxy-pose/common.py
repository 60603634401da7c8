"""What the diagnostic scripts of this folder share: cutting a clip and one camera-loss step."""

import torch

import harness.train.vggt_proxy as vp
from harness.models.vggt.pose import extri_intri_to_pose_encoding


def clip_of(scene, idx: torch.Tensor) -> vp.Clip:
    """The frames ``idx`` of a rendered scene, normalised as the proxy's training clips are."""
    return vp.normalize_clip(scene.images[idx], scene.depth[idx], scene.valid[idx], scene.extrinsics[idx],
                             scene.intrinsics[idx])


def camera_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> float:
    """One optimiser step on the camera loss alone (gradients clipped at norm 1); returns the loss.

    batch: images [B, S, 3, H, W], extrinsics [B, S, 3, 4], intrinsics [B, S, 3, 3].
    """
    out = model(batch["images"], heads=("camera",))
    gt = extri_intri_to_pose_encoding(batch["extrinsics"], batch["intrinsics"], (vp.HEIGHT, vp.WIDTH))
    loss = vp.camera_loss(out["pose_enc_list"], gt)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def train_pairs(model: torch.nn.Module, sample, *, steps: int, lr: float, every: int, report) -> None:
    """AdamW (weight decay 0.05), linear warm-up over 100 steps, camera loss only.

    ``sample()`` gives a batch for :func:`camera_step`; ``report(step, mean_loss)`` runs before
    steps 0, every, 2 * every, ... (mean_loss over the steps since the last report).
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
    running = 0.0
    for it in range(steps + 1):
        if it % every == 0:
            report(it, running / every)
            running = 0.0
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (it + 1) / 100)
        running += camera_step(model, opt, sample())
