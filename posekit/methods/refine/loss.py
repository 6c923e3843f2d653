"""The refiner's training loss: symmetry-aware, disentangled point matching plus the visible-mask BCE.

Point matching (DeepIM's loss, disentangled as in CosyPose, Labbe et al. ECCV 2020): model points
are moved by the pose the predicted update gives and by the ground-truth pose, and their mean L1
distance is taken, divided by the object's diameter so that objects of any size weigh the same.
To keep the three parts of the update from masking each other's errors the loss is the sum of
three terms, each using the prediction for one part and the exact label for the others:

    L_R  : (dR_pred, vx_gt,   vy_gt,   vz_gt)
    L_xy : (dR_gt,   vx_pred, vy_pred, vz_gt)
    L_z  : (dR_gt,   vx_gt,   vy_gt,   vz_pred)

Symmetries: the ground truth is any of ``T_gt @ S_k`` for the object's symmetry transforms S_k
(identity included; continuous symmetries sampled); labels are computed for every k and the
loss is the minimum over k of the summed terms. Objects of a batch with fewer symmetries are
padded with identities (duplicates cannot change a minimum).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from posekit.geometry.update import apply_update, target_update
from posekit.methods.refine.network import RefineOutput


def pad_symmetries(per_object: Sequence[np.ndarray], device=None, dtype=torch.float32) -> torch.Tensor:
    """Stack (K_i, 4, 4) symmetry sets into (B, K_max, 4, 4), padding with identities."""
    kmax = max(len(s) for s in per_object)
    out = np.tile(np.eye(4), (len(per_object), kmax, 1, 1))
    for i, s in enumerate(per_object):
        out[i, : len(s)] = s
    return torch.as_tensor(out, dtype=dtype, device=device)


@dataclass
class LossTerms:
    """The loss and its parts (floats, for logging)."""

    total: torch.Tensor
    rot: float
    xy: float
    z: float
    mask: float
    sym_index: torch.Tensor  # (B,) which symmetry won


def _points_l1(pts: torch.Tensor, R: torch.Tensor, t: torch.Tensor, R_ref: torch.Tensor, t_ref: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance (..., ) of pts (B, N, 3) moved by (R, t) and by (R_ref, t_ref), batch dims (B, K)."""
    a = torch.einsum("bkij,bnj->bkni", R, pts) + t[..., None, :]
    b = torch.einsum("bkij,bnj->bkni", R_ref, pts) + t_ref[..., None, :]
    return (a - b).abs().sum(-1).mean(-1)


def point_matching_loss(
    out_rot: torch.Tensor,
    out_v: torch.Tensor,
    R_src: torch.Tensor,
    t_src: torch.Tensor,
    R_gt: torch.Tensor,
    t_gt: torch.Tensor,
    K: torch.Tensor,
    unit: torch.Tensor,
    points: torch.Tensor,
    diameters: torch.Tensor,
    symmetries: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per-sample symmetric disentangled point loss (B,), the winning symmetry (B,) and the three terms (B,).

    out_rot (B, 3, 3) predicted dR, out_v (B, 3); poses (B, 3, 3)/(B, 3) mm; K (B, 3, 3) and unit (B,)
    as in ``update.py``; points (B, N, 3) mm; diameters (B,) mm; symmetries (B, S, 4, 4).
    """
    B, S = symmetries.shape[:2]
    Rs = symmetries[..., :3, :3]
    ts = symmetries[..., :3, 3]
    # every symmetric ground truth T_gt @ S_k: (B, S, 3, 3), (B, S, 3)
    R_k = R_gt[:, None] @ Rs
    t_k = (R_gt[:, None] @ ts[..., None])[..., 0] + t_gt[:, None]
    ex = (lambda x: x[:, None].expand(B, S, *x.shape[1:]))  # noqa: E731
    Rsrc, tsrc, Kk, uk = ex(R_src), ex(t_src), ex(K), ex(unit)
    dR_gt, v_gt = target_update(Rsrc, tsrc, R_k, t_k, Kk, uk)
    dR_p, v_p = ex(out_rot), ex(out_v)
    R_rot, t_rot = apply_update(Rsrc, tsrc, dR_p, v_gt, Kk, uk)
    v_xy = torch.cat([v_p[..., :2], v_gt[..., 2:]], dim=-1)
    R_xy, t_xy = apply_update(Rsrc, tsrc, dR_gt, v_xy, Kk, uk)
    v_z = torch.cat([v_gt[..., :2], v_p[..., 2:]], dim=-1)
    R_z, t_z = apply_update(Rsrc, tsrc, dR_gt, v_z, Kk, uk)
    d = diameters[:, None]
    l_rot = _points_l1(points, R_rot, t_rot, R_k, t_k) / d
    l_xy = _points_l1(points, R_xy, t_xy, R_k, t_k) / d
    l_z = _points_l1(points, R_z, t_z, R_k, t_k) / d
    total = l_rot + l_xy + l_z  # (B, S)
    best = total.detach().argmin(dim=1)
    pick = (lambda x: x.gather(1, best[:, None])[:, 0])  # noqa: E731
    return pick(total), best, (pick(l_rot), pick(l_xy), pick(l_z))


def mask_loss(mask_logits: torch.Tensor, visible_mask: torch.Tensor) -> torch.Tensor:
    """BCE of the predicted observed-crop mask against the true visible mask (B, 1, H, W) in [0, 1],
    area-downsampled to the logits' resolution (soft targets at the object's border)."""
    target = F.adaptive_avg_pool2d(visible_mask.float(), mask_logits.shape[-2:])
    return F.binary_cross_entropy_with_logits(mask_logits, target)


def refine_loss(
    out: RefineOutput,
    R_src: torch.Tensor,
    t_src: torch.Tensor,
    R_gt: torch.Tensor,
    t_gt: torch.Tensor,
    K: torch.Tensor,
    unit: torch.Tensor,
    points: torch.Tensor,
    diameters: torch.Tensor,
    symmetries: torch.Tensor,
    visible_mask: torch.Tensor | None,
    mask_weight: float = 1.0,
) -> LossTerms:
    """Point loss (batch mean) + ``mask_weight`` x mask BCE; see the module docstring."""
    per, best, (lr, lxy, lz) = point_matching_loss(
        out.dR, out.v, R_src, t_src, R_gt, t_gt, K, unit, points, diameters, symmetries
    )
    total = per.mean()
    lm = torch.zeros((), device=total.device)
    if visible_mask is not None and mask_weight > 0:
        lm = mask_loss(out.mask_logits, visible_mask)
        total = total + mask_weight * lm
    return LossTerms(total=total, rot=float(lr.detach().mean()), xy=float(lxy.detach().mean()),
                     z=float(lz.detach().mean()), mask=float(lm.detach()), sym_index=best)


__all__ = ["pad_symmetries", "point_matching_loss", "mask_loss", "refine_loss", "LossTerms"]
