"""Rigid transforms in SE(3) as (R, t) pairs: x' = R x + t (BOP: model -> camera, t in mm).

numpy arrays or torch tensors with any leading batch dimensions (broadcast), returning
the same kind (see ``rotations`` for the dispatch rules).
"""

from __future__ import annotations

import torch

from posekit.geometry.rotations import _check, _dispatch


def _compose(R1: torch.Tensor, t1: torch.Tensor, R2: torch.Tensor, t2: torch.Tensor):
    R = R1 @ R2
    t = (R1 @ t2[..., None])[..., 0] + t1
    return R, t


def _inverse(R: torch.Tensor, t: torch.Tensor):
    Rt = R.transpose(-1, -2)
    return Rt, -(Rt @ t[..., None])[..., 0]


def _transform_points(p: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return p @ R.transpose(-1, -2) + t[..., None, :]


def _to_matrix4(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    shape = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    T = torch.zeros(*shape, 4, 4, dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def compose(R1, t1, R2, t2):
    """(R1, t1) o (R2, t2): the transform that applies 2 first, then 1.

    R = R1 R2, t = R1 t2 + t1; e.g. ``compose(R_delta, t_delta, R_est, t_est)`` applies a
    camera-frame update to a model->camera pose. Returns (R (..., 3, 3), t (..., 3)).
    """
    _check(R1, (3, 3), "compose R1")
    _check(t1, (3,), "compose t1")
    _check(R2, (3, 3), "compose R2")
    _check(t2, (3,), "compose t2")
    return _dispatch(_compose, R1, t1, R2, t2)


def inverse(R, t):
    """Inverse of x' = R x + t: (R^T, -R^T t). Assumes R is a rotation."""
    _check(R, (3, 3), "inverse R")
    _check(t, (3,), "inverse t")
    return _dispatch(_inverse, R, t)


def transform_points(points, R, t):
    """Apply (R (..., 3, 3), t (..., 3)) to points (..., N, 3): returns R p + t, (..., N, 3)."""
    _check(points, (3,), "transform_points points")
    _check(R, (3, 3), "transform_points R")
    _check(t, (3,), "transform_points t")
    return _dispatch(_transform_points, points, R, t)


def to_matrix4(R, t):
    """(R (..., 3, 3), t (..., 3)) -> homogeneous matrices (..., 4, 4)."""
    _check(R, (3, 3), "to_matrix4 R")
    _check(t, (3,), "to_matrix4 t")
    return _dispatch(_to_matrix4, R, t)


def from_matrix4(T):
    """Homogeneous matrices (..., 4, 4) -> (R (..., 3, 3), t (..., 3))."""
    _check(T, (4, 4), "from_matrix4")
    return _dispatch(lambda m: (m[..., :3, :3].clone(), m[..., :3, 3].clone()), T)


__all__ = ["compose", "inverse", "transform_points", "to_matrix4", "from_matrix4"]
