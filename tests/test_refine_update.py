"""The refiner's update algebra: a known update applied to a pose is recovered exactly, and it means what
the docstring says (vx, vy shift the projected origin by unit pixels, vz is a log depth ratio, dR acts in
the camera frame about the object's origin)."""

from __future__ import annotations

import numpy as np
import torch

from posekit.geometry.camera import project_points
from posekit.geometry.rotations import random_rotations, so3_exp
from posekit.geometry.update import apply_update, target_update

K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])


def _poses(n, rng):
    R = random_rotations(n, rng)
    t = np.stack([rng.uniform(-150, 150, n), rng.uniform(-100, 100, n), rng.uniform(400, 1500, n)], -1)
    return R, t


def test_round_trip_numpy_batched_exact():
    rng = np.random.default_rng(0)
    R0, t0 = _poses(64, rng)
    dR = so3_exp(rng.normal(0, 0.4, (64, 3)))
    v = rng.normal(0, 0.3, (64, 3))
    unit = rng.uniform(50, 300, 64)
    R1, t1 = apply_update(R0, t0, dR, v, K, unit)
    dR2, v2 = target_update(R0, t0, R1, t1, K, unit)
    np.testing.assert_allclose(dR2, dR, atol=1e-12)
    np.testing.assert_allclose(v2, v, atol=1e-12)
    # and the other way: the label of any target pose takes the source exactly there
    R2, t2 = _poses(64, rng)
    R3, t3 = apply_update(R0, t0, *target_update(R0, t0, R2, t2, K, unit), K, unit)
    np.testing.assert_allclose(R3, R2, atol=1e-12)
    np.testing.assert_allclose(t3, t2, atol=1e-9)


def test_round_trip_torch_differentiable():
    rng = np.random.default_rng(1)
    R0, t0 = (torch.as_tensor(a) for a in _poses(8, rng))
    v = torch.tensor(rng.normal(0, 0.2, (8, 3)), requires_grad=True)
    dR = so3_exp(torch.tensor(rng.normal(0, 0.3, (8, 3))))
    R1, t1 = apply_update(R0, t0, dR, v, torch.as_tensor(K), 120.0)
    assert isinstance(t1, torch.Tensor) and t1.dtype == torch.float64
    t1.sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()
    dR2, v2 = target_update(R0, t0, R1.detach(), t1.detach(), torch.as_tensor(K), 120.0)
    torch.testing.assert_close(v2, v.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(dR2, dR, atol=1e-10, rtol=0)


def test_components_mean_what_they_say():
    R0 = random_rotations(1, 3)[0]
    t0 = np.array([40.0, -30.0, 800.0])
    eye = np.eye(3)
    unit = 100.0
    uv0 = project_points(np.zeros((1, 3)), K, R0, t0)[0]
    # vx = 0.5: the projected origin moves right by 50 px, depth unchanged
    _, t = apply_update(R0, t0, eye, np.array([0.5, 0.0, 0.0]), K, unit)
    np.testing.assert_allclose(project_points(np.zeros((1, 3)), K, R0, t)[0] - uv0, [50.0, 0.0], atol=1e-9)
    assert abs(t[2] - 800.0) < 1e-9
    # vy = -0.2: up by 20 px
    _, t = apply_update(R0, t0, eye, np.array([0.0, -0.2, 0.0]), K, unit)
    np.testing.assert_allclose(project_points(np.zeros((1, 3)), K, R0, t)[0] - uv0, [0.0, -20.0], atol=1e-9)
    # vz = log 2: half the depth, same projected origin
    _, t = apply_update(R0, t0, eye, np.array([0.0, 0.0, np.log(2.0)]), K, unit)
    np.testing.assert_allclose(t, t0 / 2.0, atol=1e-9)
    # dR: rotates about the object origin in camera axes, translation untouched
    dR = so3_exp(np.array([0.0, 0.0, 0.3]))
    R, t = apply_update(R0, t0, dR, np.zeros(3), K, unit)
    np.testing.assert_allclose(R, dR @ R0, atol=1e-12)
    np.testing.assert_allclose(t, t0, atol=1e-12)
