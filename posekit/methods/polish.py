"""Polish: a few gradient steps on the pose through PyTorch3D's differentiable renderer.

Shared by both refiners (``--polish N`` after ``--refine deepim`` or ``--refine features``). The pose is
parameterised like the DeepIM update (``posekit.geometry.update``): a camera-frame rotation
``so3_exp(w)`` about the object's origin and (vx, vy, vz) in crop units, all starting at zero, optimised
with Adam on a loss of what ``DiffRenderer`` renders in the crop. Each sample keeps its best pose, so the
loss never ends above where it started. Two losses, summed when both are given:

* **silhouette** (:func:`silhouette_loss`): soft IoU of the rendered silhouette with a target mask,

      L = 1 - sum(s m) / sum(s + m - s m)      (s: rendered silhouette, m: target, both in [0, 1]);

  the target is the DeepIM refiner's predicted visible mask or a mask the user gives (``--mask``). Only
  the outline is compared, so it fixes image-plane position, scale (depth) and in-plane rotation, not
  rotations that keep the outline; with a good mask it removes most of a depth error.
* **features** (:func:`feature_loss`): feature-metric alignment (as PixLoc aligns features rather than
  pixels): the rendered RGB goes through the frozen pretrained backbone (gradients flow through the
  network to the pose, not into its weights) and

      L = 1 - masked cosine(backbone(render), backbone(observed crop))

  the same per-cell similarity the templates and the feature search score, under weights fixed at the
  start (the starting silhouette's cells, dilated by one cell), so that shrinking the render cannot
  raise the score by leaving poorly matching cells out (the union-mask argument of the feature search).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from posekit.geometry.rotations import so3_exp
from posekit.geometry.update import apply_update

#: A polish loss: the renderer's outputs (``silhouette`` (B, H, W), ``rgb`` (B, H, W, 3)) -> (B,) losses.
Loss = Callable[[dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class PolishResult:
    """Polished poses R (B, 3, 3), t (B, 3) mm, the loss before/after (B,), what the loss was
    (``silhouette``, ``features`` or ``features+silhouette``) and the time taken (s)."""

    R: np.ndarray
    t: np.ndarray
    loss_before: np.ndarray
    loss_after: np.ndarray
    seconds: float
    kind: str = "silhouette"


def soft_iou_loss(sil: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) 1 - soft IoU of silhouettes (B, H, W) and targets (B, H, W) in [0, 1]."""
    inter = (sil * target).sum((-1, -2))
    union = (sil + target - sil * target).sum((-1, -2)).clamp_min(1e-6)
    return 1.0 - inter / union


def silhouette_loss(target_mask, device: torch.device | str = "cpu") -> Loss:
    """The soft-IoU loss against target masks (B, H, W) in [0, 1] of the crop's size."""
    target = torch.as_tensor(np.asarray(target_mask), dtype=torch.float32, device=device)

    def loss(out: dict[str, torch.Tensor]) -> torch.Tensor:
        return soft_iou_loss(out["silhouette"], target)

    loss.modes, loss.kind = ("silhouette",), "silhouette"
    return loss


def feature_weights(silhouette: torch.Tensor, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) fixed weights of the feature loss: the cells a silhouette (B, H, W) touches, dilated by one."""
    from posekit.features.similarity import mask_weights

    w = mask_weights((silhouette > 0.5).float()[:, None], stride, size)
    return F.max_pool2d((w > 0).float()[:, None], 3, stride=1, padding=1)[:, 0]


def feature_loss(backbone, observed: torch.Tensor, weights: torch.Tensor, feature: str = "s8") -> Loss:
    """1 - masked cosine of the rendered crop's ``feature`` maps with ``observed`` maps (B, C, h, w), under
    ``weights`` (B, h, w) (see :func:`feature_weights`). The rendered background is black, as the
    templates' renders are."""
    from posekit.features.similarity import paired_similarity

    def loss(out: dict[str, torch.Tensor]) -> torch.Tensor:
        rgb = out["rgb"].permute(0, 3, 1, 2)
        f = backbone(rgb, (feature,))[feature]
        return 1.0 - paired_similarity(f, observed, weights)

    loss.modes, loss.kind = ("rgb",), "features"
    return loss


def polish(diff_renderer, obj_index, R, t, K_crop, loss: Loss | Sequence[Loss] | np.ndarray, steps: int = 10,
           lr: float = 0.01, kind: str | None = None, depth: bool = True) -> PolishResult:
    """``steps`` Adam steps on poses (R (B, 3, 3), t (B, 3) mm) seen by crop intrinsics K_crop (B, 3, 3),
    descending ``loss`` (one :data:`Loss` or several, summed; a mask array (B, H, W) is short for
    :func:`silhouette_loss` of it). ``diff_renderer`` is a ``DiffRenderer`` at the crop's size whose models
    ``obj_index`` (B,) indexes. ``depth=False`` keeps the depth (vz = 0). Each sample keeps its best pose."""
    t_start = time.perf_counter()
    dev = diff_renderer.device
    if isinstance(loss, (np.ndarray, torch.Tensor)):
        loss = silhouette_loss(loss, dev)
    losses = [loss] if callable(loss) else list(loss)
    modes = tuple(sorted({m for f in losses for m in getattr(f, "modes", ("silhouette", "rgb"))}))
    R0 = torch.as_tensor(np.asarray(R), dtype=torch.float64, device=dev)
    t0 = torch.as_tensor(np.asarray(t), dtype=torch.float64, device=dev)
    K = torch.as_tensor(np.asarray(K_crop), dtype=torch.float64, device=dev)
    B = R0.shape[0]
    unit = torch.full((B,), float(diff_renderer.image_size[0]), dtype=torch.float64, device=dev)
    idx = torch.as_tensor(np.asarray(obj_index), dtype=torch.long)
    w = torch.zeros(B, 3, dtype=torch.float64, device=dev, requires_grad=True)
    v = torch.zeros(B, 3, dtype=torch.float64, device=dev, requires_grad=True)
    opt = torch.optim.Adam([w, v], lr=lr)
    free = torch.tensor([1.0, 1.0, 1.0 if depth else 0.0], dtype=torch.float64, device=dev)

    best_R, best_t = R0.clone(), t0.clone()
    best = torch.full((B,), float("inf"), device=dev)
    first = None
    for step in range(max(0, steps) + 1):
        Rp, tp = apply_update(R0, t0, so3_exp(w), v * free, K, unit)
        out = diff_renderer.render(Rp.float(), tp.float(), K.float(), idx, modes=modes)
        total = sum(f(out) for f in losses)
        with torch.no_grad():
            if first is None:
                first = total.detach().clone()
            better = total < best
            best = torch.where(better, total, best)
            best_R[better], best_t[better] = Rp[better].detach(), tp[better].detach()
        if step == steps:
            break
        opt.zero_grad()
        total.sum().backward()
        opt.step()
    return PolishResult(R=best_R.cpu().numpy(), t=best_t.cpu().numpy(), loss_before=first.cpu().numpy(),
                        loss_after=best.cpu().numpy(), seconds=time.perf_counter() - t_start,
                        kind=kind or "+".join(getattr(f, "kind", "loss") for f in losses))


__all__ = ["polish", "PolishResult", "soft_iou_loss", "silhouette_loss", "feature_loss", "feature_weights", "Loss"]
