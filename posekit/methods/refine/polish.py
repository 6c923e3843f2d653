"""Silhouette polish: a few gradient steps on the pose through PyTorch3D's differentiable silhouette.

After the refiner's last iteration, the pose is nudged so that the soft silhouette rendered at it
(``DiffRenderer``, in the last iteration's crop) matches a target mask of the observed object: the
refiner's own predicted visible mask, or a mask the user gives. The pose is parameterised like the
refiner's update (``update.py``): a camera-frame rotation ``so3_exp(w)`` and (vx, vy, vz) in crop
units, both starting at zero, optimised with Adam on a soft IoU loss

    L = 1 - sum(s m) / sum(s + m - s m)      (s: rendered silhouette, m: target, both in [0, 1])

Only the silhouette is compared, so the polish can fix what the outline shows (image-plane
position, scale, in-plane rotation) but not rotations that keep the outline; occluded parts are
not in the target, which is why the *visible* mask plus a silhouette of the full object would be
biased under occlusion. With the refiner's predicted mask it barely helps on lmo-dev (docs/benchmarks.md);
with a good mask (the user's, ``posekit estimate --mask``) it removes most of a depth error: it is an
option, off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from posekit.geometry.rotations import so3_exp
from posekit.methods.refine.update import apply_update


@dataclass
class PolishResult:
    """Polished poses R (B, 3, 3), t (B, 3) mm, the loss before/after (B,) and the time taken (s)."""

    R: np.ndarray
    t: np.ndarray
    loss_before: np.ndarray
    loss_after: np.ndarray
    seconds: float


def soft_iou_loss(sil: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) 1 - soft IoU of silhouettes (B, H, W) and targets (B, H, W) in [0, 1]."""
    inter = (sil * target).sum((-1, -2))
    union = (sil + target - sil * target).sum((-1, -2)).clamp_min(1e-6)
    return 1.0 - inter / union


def polish(diff_renderer, obj_index, R, t, K_crop, target_mask, steps: int = 10, lr: float = 0.01) -> PolishResult:
    """``steps`` Adam steps on poses (R (B, 3, 3), t (B, 3) mm) to fit ``target_mask`` (B, H, W) in [0, 1]
    seen by crop intrinsics K_crop (B, 3, 3); ``diff_renderer`` is a ``DiffRenderer`` whose image_size is
    the target's (W, H) and whose models ``obj_index`` (B,) indexes. Each sample keeps its best pose
    (the loss never gets worse than the start)."""
    import time

    t0 = time.perf_counter()
    dev = diff_renderer.device
    R0 = torch.as_tensor(np.asarray(R), dtype=torch.float64, device=dev)
    t0_ = torch.as_tensor(np.asarray(t), dtype=torch.float64, device=dev)
    K = torch.as_tensor(np.asarray(K_crop), dtype=torch.float64, device=dev)
    target = torch.as_tensor(np.asarray(target_mask), dtype=torch.float32, device=dev)
    B = R0.shape[0]
    unit = torch.full((B,), float(target.shape[-1]), dtype=torch.float64, device=dev)
    idx = torch.as_tensor(np.asarray(obj_index), dtype=torch.long)
    w = torch.zeros(B, 3, dtype=torch.float64, device=dev, requires_grad=True)
    v = torch.zeros(B, 3, dtype=torch.float64, device=dev, requires_grad=True)
    opt = torch.optim.Adam([w, v], lr=lr)

    def pose():
        return apply_update(R0, t0_, so3_exp(w), v, K, unit)

    best_R, best_t = R0.clone(), t0_.clone()
    best = torch.full((B,), float("inf"), device=dev)
    first = None
    for _ in range(max(0, steps) + 1):
        Rp, tp = pose()
        sil = diff_renderer.render(Rp.float(), tp.float(), K.float(), idx, modes=("silhouette",))["silhouette"]
        loss = soft_iou_loss(sil, target)
        with torch.no_grad():
            if first is None:
                first = loss.detach().clone()
            better = loss < best
            best = torch.where(better, loss, best)
            best_R[better], best_t[better] = Rp[better].detach(), tp[better].detach()
        if _ == steps:
            break
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    return PolishResult(R=best_R.cpu().numpy(), t=best_t.cpu().numpy(), loss_before=first.cpu().numpy(),
                        loss_after=best.cpu().numpy(), seconds=time.perf_counter() - t0)


__all__ = ["polish", "PolishResult", "soft_iou_loss"]
