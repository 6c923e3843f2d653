"""The refiner's pose update (DeepIM, Li et al. ECCV 2018, Sec. 3.2), and its exact inverse.

Convention (fixed; the network is trained to predict exactly this):

* rotation: ``R_new = dR @ R_src`` -- ``dR`` rotates the object about its own origin with axes
  of the **camera** frame, so it does not move the object's projected origin; the network
  regresses it in the continuous 6D form (``rot6d_to_matrix``), identity = (1,0,0, 0,1,0);
* depth: ``vz = log(z_src / z_new)``, i.e. ``z_new = z_src * exp(-vz)``; a ratio, so the
  same ``vz`` means the same apparent scale change at any distance;
* image plane: ``vx = fx * (x_new / z_new - x_src / z_src) / unit`` and
  ``vy = fy * (y_new / z_new - y_src / z_src) / unit``: the shift of the projected model
  origin, in pixels of ``K``, divided by ``unit`` pixels.

DeepIM uses ``unit = 1`` (full-image pixels). posekit's refiner passes the full image's K and
``unit = w``, the width in full-image pixels of the zoom window (see ``geometry.crop.zoom_window``),
which is ``scale`` times the projected object extent: vx, vy are then in units of the object's
size in the image, the quantity a zoomed-in crop shows the same way at every distance
(equivalently: K of the crop and ``unit`` = crop width in crop pixels; identical numbers).

``apply_update`` and ``target_update`` are exact inverses (up to float round-off), batched over
leading dimensions, numpy or torch (torch keeps dtype/device and stays differentiable).
"""

from __future__ import annotations

import numpy as np
import torch

from posekit.geometry.rotations import _check, _dispatch


def _as_unit(unit, like_shape):
    """unit as an array broadcastable to the batch shape (scalars allowed)."""
    if isinstance(unit, torch.Tensor):
        return unit
    return np.broadcast_to(np.asarray(unit, dtype=np.float64), like_shape).copy()


def _apply(R, t, dR, v, K, unit):
    fx, fy = K[..., 0, 0], K[..., 1, 1]
    z_src = t[..., 2]
    z_new = z_src * torch.exp(-v[..., 2])
    x_new = (t[..., 0] / z_src + v[..., 0] * unit / fx) * z_new
    y_new = (t[..., 1] / z_src + v[..., 1] * unit / fy) * z_new
    return dR @ R, torch.stack([x_new, y_new, z_new], dim=-1)


def _target(R_src, t_src, R_tgt, t_tgt, K, unit):
    fx, fy = K[..., 0, 0], K[..., 1, 1]
    zs, zt = t_src[..., 2], t_tgt[..., 2]
    vx = fx * (t_tgt[..., 0] / zt - t_src[..., 0] / zs) / unit
    vy = fy * (t_tgt[..., 1] / zt - t_src[..., 1] / zs) / unit
    vz = torch.log(zs / zt)
    return R_tgt @ R_src.transpose(-1, -2), torch.stack([vx, vy, vz], dim=-1)


def apply_update(R, t, dR, v, K, unit=1.0):
    """Apply the update (dR (..., 3, 3), v = (vx, vy, vz) (..., 3)) to poses (R (..., 3, 3), t (..., 3) mm).

    K (..., 3, 3) gives fx, fy; ``unit`` (scalar or (...,)) is the pixel length of one vx/vy unit
    (the zoom window width for posekit's refiner). Returns (R_new, t_new). Depths must be > 0.
    """
    _check(R, (3, 3), "apply_update R")
    _check(t, (3,), "apply_update t")
    _check(dR, (3, 3), "apply_update dR")
    _check(v, (3,), "apply_update v")
    _check(K, (3, 3), "apply_update K")
    return _dispatch(_apply, R, t, dR, v, K, _as_unit(unit, np.shape(t)[:-1]))


def target_update(R_src, t_src, R_tgt, t_tgt, K, unit=1.0):
    """The update (dR, v) that takes (R_src, t_src) exactly to (R_tgt, t_tgt): the training label.

    Same conventions and shapes as :func:`apply_update`; ``apply_update(R_src, t_src,
    *target_update(R_src, t_src, R_tgt, t_tgt, K, unit), K, unit) == (R_tgt, t_tgt)``.
    """
    _check(R_src, (3, 3), "target_update R_src")
    _check(t_src, (3,), "target_update t_src")
    _check(R_tgt, (3, 3), "target_update R_tgt")
    _check(t_tgt, (3,), "target_update t_tgt")
    _check(K, (3, 3), "target_update K")
    return _dispatch(_target, R_src, t_src, R_tgt, t_tgt, K, _as_unit(unit, np.shape(t_src)[:-1]))


__all__ = ["apply_update", "target_update"]
