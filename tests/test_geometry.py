"""Pose geometry: rotations (exp/log, quaternions, 6D), SE(3), projection and crop geometry.

Property tests (hypothesis) cover round trips and gradients, including the angles users
actually hit and naive formulas get wrong: 0, 1e-8 and at/near pi.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from posekit.geometry.camera import crop_K, project_points, project_points_torch
from posekit.geometry.crop import crop_affine_theta, crop_images, crop_intrinsics, zoom_window
from posekit.geometry.rotations import (
    axis_angle_to_quat,
    geodesic_distance,
    matrix_to_quat,
    matrix_to_rot6d,
    orthonormalize,
    quat_to_axis_angle,
    quat_to_matrix,
    random_rotations,
    rot6d_to_matrix,
    rotation_angle,
    so3_exp,
    so3_log,
)
from posekit.geometry.transforms import compose, from_matrix4, inverse, to_matrix4, transform_points

PI = math.pi
SPECIAL_ANGLES = [0.0, 1e-8, 1e-4, 1e-3, 1.0, PI / 2, PI - 1e-3, PI - 1e-6, PI]
SETTINGS = settings(deadline=None, max_examples=40)

unit = (
    st.tuples(*[st.floats(-1, 1)] * 3)
    .filter(lambda v: np.linalg.norm(v) > 0.1)
    .map(lambda v: np.asarray(v) / np.linalg.norm(v))
)
angle = st.one_of(st.sampled_from(SPECIAL_ANGLES), st.floats(0.0, PI))
quat = st.tuples(*[st.floats(-1, 1)] * 4).filter(lambda q: np.linalg.norm(q) > 0.1)
seed = st.integers(0, 2**32 - 1)


def _rotvec(axis, ang):
    return np.asarray(axis) * ang


def _is_rotation(R, tol=1e-9):
    R = np.asarray(R)
    eye = np.broadcast_to(np.eye(3), R.shape)
    return np.allclose(np.swapaxes(R, -1, -2) @ R, eye, atol=tol) and np.allclose(
        np.linalg.det(R), 1.0, atol=tol
    )


# ----------------------------------------------------------------------------- exp / log


@SETTINGS
@given(unit, angle)
def test_exp_matches_scipy_and_log_inverts_it(axis, ang):
    v = _rotvec(axis, ang)
    R = so3_exp(v)
    assert np.allclose(R, Rotation.from_rotvec(v).as_matrix(), atol=1e-12)
    w = so3_log(R)
    if ang < PI - 1e-9:
        # The rotation vector is unique: the log must give v back, axis included.
        assert np.allclose(w, v, atol=1e-9), (w, v)
    else:
        # At pi, v and -v are the same rotation.
        assert np.allclose(w, v, atol=1e-9) or np.allclose(w, -v, atol=1e-9), (w, v)
    assert abs(np.linalg.norm(w) - ang) < 1e-9
    assert np.allclose(so3_exp(w), R, atol=1e-12)


@pytest.mark.parametrize("ang", [PI - 1e-6, PI])
def test_log_near_pi_axis_is_right_for_every_axis_direction(ang):
    # Axes along each coordinate and off-axis: the branch choice in the quaternion must not matter.
    axes = np.concatenate([np.eye(3), np.array([[1, 1, 0], [0, 1, -1], [1, -2, 3.0]])])
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    R = so3_exp(axes * ang)
    w = so3_log(R)
    assert np.allclose(np.linalg.norm(w, axis=1), ang, atol=1e-9)
    cos = np.abs(np.sum(w / np.linalg.norm(w, axis=1, keepdims=True) * axes, axis=1))
    assert np.allclose(cos, 1.0, atol=1e-12)
    if ang < PI:
        assert np.allclose(w, axes * ang, atol=1e-9)


@SETTINGS
@given(unit, angle)
def test_torch_float64_matches_numpy(axis, ang):
    v = _rotvec(axis, ang)
    R = so3_exp(torch.from_numpy(v))
    assert isinstance(R, torch.Tensor) and R.dtype == torch.float64
    assert np.allclose(R.numpy(), so3_exp(v), atol=1e-15)
    assert np.allclose(so3_log(R).numpy(), so3_log(so3_exp(v)), atol=1e-15)


# ----------------------------------------------------------------------------- quaternions, 6D


@SETTINGS
@given(quat)
def test_quaternion_round_trips(q):
    q = np.asarray(q) / np.linalg.norm(q)
    q = q if q[0] >= 0 else -q
    R = quat_to_matrix(q)
    assert _is_rotation(R)
    assert np.allclose(R, Rotation.from_quat(q, scalar_first=True).as_matrix(), atol=1e-12)
    q2 = matrix_to_quat(R)
    assert q2[0] >= 0 and abs(np.linalg.norm(q2) - 1) < 1e-12
    # w == 0 is the one place where q and -q are both canonical.
    assert np.allclose(q2, q, atol=1e-9) or (abs(q[0]) < 1e-9 and np.allclose(q2, -q, atol=1e-9))
    v = quat_to_axis_angle(q)
    assert np.allclose(so3_exp(v), R, atol=1e-12)
    assert np.allclose(quat_to_matrix(axis_angle_to_quat(v)), R, atol=1e-12)


def test_quat_to_matrix_normalises_and_axis_angle_of_identity():
    assert np.allclose(quat_to_matrix(np.array([2.0, 0, 0, 0])), np.eye(3))
    assert np.allclose(quat_to_axis_angle(np.array([-1.0, 0, 0, 0])), 0.0)
    assert np.allclose(axis_angle_to_quat(np.zeros(3)), [1, 0, 0, 0])


@SETTINGS
@given(seed)
def test_rot6d_round_trip_and_any_6d_vector_decodes_to_a_rotation(s):
    rng = np.random.default_rng(s)
    R = random_rotations(8, rng)
    d6 = matrix_to_rot6d(R)
    assert d6.shape == (8, 6)
    assert np.allclose(d6[:, :3], R[:, :, 0]) and np.allclose(d6[:, 3:], R[:, :, 1])
    assert np.allclose(rot6d_to_matrix(d6), R, atol=1e-12)
    x = rng.normal(size=(8, 6)) * 5
    Rx = rot6d_to_matrix(x)
    assert _is_rotation(Rx)
    assert np.allclose(Rx[:, :, 0], x[:, :3] / np.linalg.norm(x[:, :3], axis=1, keepdims=True))


# ----------------------------------------------------------------------------- gradients


def _grad(fn, x):
    x = torch.as_tensor(x, dtype=torch.float64).clone().requires_grad_(True)
    y = fn(x)
    w = torch.linspace(0.3, 1.7, y.numel(), dtype=torch.float64).reshape(y.shape)  # generic cotangent
    (g,) = torch.autograd.grad((y * w).sum(), x)
    return g


@pytest.mark.parametrize("ang", SPECIAL_ANGLES)
def test_gradients_are_finite_at_0_and_near_pi(ang):
    axis = np.array([0.3, -0.5, 0.81])
    axis /= np.linalg.norm(axis)
    v = axis * ang
    R = so3_exp(v)
    for fn, x in [
        (so3_exp, v),
        (so3_log, R),
        (axis_angle_to_quat, v),
        (quat_to_axis_angle, matrix_to_quat(R)),
        (matrix_to_quat, R),
        (quat_to_matrix, matrix_to_quat(R)),
        (rot6d_to_matrix, matrix_to_rot6d(R)),
        (lambda m: geodesic_distance(torch.eye(3, dtype=m.dtype), m), R),
        (lambda m: geodesic_distance(m, m), R),
    ]:
        g = _grad(fn, x)
        assert torch.isfinite(g).all(), (fn, ang, g)
    # Zero vector: exp and quaternion maps must have their exact derivative there.
    g = _grad(so3_exp, np.zeros(3))
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("ang", [0.0, 1e-8, 1e-4, 0.7, 2.5, PI - 1e-3])
def test_gradcheck_exp_and_log(ang):
    axis = np.array([0.6, 0.0, -0.8])
    v = torch.tensor(axis * ang, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(so3_exp, (v,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(axis_angle_to_quat, (v,), eps=1e-6, atol=1e-6)
    R = torch.from_numpy(so3_exp(axis * ang)).requires_grad_(True)
    # The log is smooth on (0, pi) and, through the quaternion, also at the identity.
    assert torch.autograd.gradcheck(so3_log, (R,), eps=1e-7, atol=1e-5)


def test_exp_jacobian_at_zero_is_the_generators():
    # d exp(v)/dv_i at v = 0 is hat(e_i): checks the Taylor branch has the right slope, not just a finite one.
    J = torch.autograd.functional.jacobian(so3_exp, torch.zeros(3, dtype=torch.float64))
    for i in range(3):
        e = np.zeros(3)
        e[i] = 1.0
        hat = np.cross(e, np.eye(3)).T  # column j is e x e_j, so hat @ x == e x x
        assert np.allclose(J[..., i].numpy(), hat, atol=1e-12)


# ----------------------------------------------------------------------------- distance, orthonormalize, sampling


@SETTINGS
@given(seed, unit, angle)
def test_geodesic_distance_is_the_angle_of_the_relative_rotation(s, axis, ang):
    R1 = random_rotations(1, np.random.default_rng(s))[0]
    R2 = R1 @ so3_exp(_rotvec(axis, ang))
    d = geodesic_distance(R1, R2)
    assert abs(d - ang) < 1e-9
    assert abs(geodesic_distance(R2, R1) - ang) < 1e-9
    assert abs(d - Rotation.from_matrix(R1.T @ R2).magnitude()) < 1e-7
    assert abs(rotation_angle(R1.T @ R2) - ang) < 1e-9


def test_geodesic_distance_batched_broadcast_and_never_nan():
    R = random_rotations(5, 1)
    d = geodesic_distance(R[:, None], R[None, :])
    assert d.shape == (5, 5) and np.allclose(np.diag(d), 0.0)
    assert np.allclose(d, d.T, atol=1e-12)
    # Slightly non-orthonormal input (as stored in LM-O) still gives a number in [0, pi].
    for M in (np.eye(3) * 1.001, np.diag([-1.001, -1.001, 1.0]), np.diag([-1.0, -1.0, 1.0])):
        v = geodesic_distance(np.eye(3), M)
        assert np.isfinite(v) and 0 <= v <= PI
    assert abs(geodesic_distance(np.eye(3), np.diag([-1.0, -1.0, 1.0])) - PI) < 1e-15


def test_orthonormalize_recovers_the_rotation_and_fixes_det():
    rng = np.random.default_rng(2)
    R = random_rotations(10, rng)
    M = R + rng.normal(scale=1e-6, size=R.shape)
    Ro = orthonormalize(M)
    assert _is_rotation(Ro, 1e-12)
    assert np.all(geodesic_distance(Ro, R) < 1e-5)
    refl = R @ np.diag([1.0, 1.0, -1.0])
    assert np.allclose(np.linalg.det(orthonormalize(refl)), 1.0)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_random_rotations_are_uniform(backend):
    n = 20000
    if backend == "numpy":
        R = random_rotations(n, np.random.default_rng(0))
    else:
        R = random_rotations(n, torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    assert R.shape == (n, 3, 3) and _is_rotation(R, 1e-9)
    # Haar measure: E[R] = 0 (entry std ~ 0.004 here) and E[angle] = pi/2 + 2/pi.
    assert np.abs(R.mean(0)).max() < 0.03
    assert abs(rotation_angle(R).mean() - (PI / 2 + 2 / PI)) < 0.02
    same = random_rotations(3, np.random.default_rng(5)), random_rotations(3, np.random.default_rng(5))
    assert np.array_equal(*same)


# ----------------------------------------------------------------------------- dispatch / shapes


def test_types_dtypes_and_batch_dims_are_preserved():
    v = np.random.default_rng(0).normal(size=(2, 5, 3))
    assert so3_exp(v).shape == (2, 5, 3, 3) and so3_exp(v).dtype == np.float64
    assert so3_exp(v.astype(np.float32)).dtype == np.float32
    assert so3_exp(v.tolist()).shape == (2, 5, 3, 3)
    vt = torch.from_numpy(v).float()
    for out in (so3_exp(vt), so3_log(so3_exp(vt)), matrix_to_quat(so3_exp(vt)), matrix_to_rot6d(so3_exp(vt))):
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert torch.allclose(so3_log(so3_exp(vt)), vt, atol=1e-4)
    # Mixed numpy / torch: torch wins and keeps its dtype.
    d = geodesic_distance(so3_exp(v), so3_exp(vt))
    assert isinstance(d, torch.Tensor) and d.shape == (2, 5) and float(d.max()) < 1e-3
    with pytest.raises(ValueError, match=r"so3_exp: expected shape \(\.\.\., 3\)"):
        so3_exp(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="so3_log"):
        so3_log(np.zeros(3))


# ----------------------------------------------------------------------------- SE(3)


def _pose(rng, batch=()):
    return random_rotations(int(np.prod(batch)) or 1, rng).reshape(*batch, 3, 3), rng.normal(
        scale=100, size=(*batch, 3)
    )


@SETTINGS
@given(seed)
def test_se3_compose_inverse_identities(s):
    rng = np.random.default_rng(s)
    (R1, t1), (R2, t2), (R3, t3) = _pose(rng, (4,)), _pose(rng, (4,)), _pose(rng, (4,))
    p = rng.normal(scale=50, size=(4, 7, 3))
    # compose applies 2 first, then 1.
    R, t = compose(R1, t1, R2, t2)
    assert np.allclose(transform_points(p, R, t), transform_points(transform_points(p, R2, t2), R1, t1))
    # Inverse on either side is the identity.
    Ri, ti = inverse(R1, t1)
    for Rc, tc in (compose(R1, t1, Ri, ti), compose(Ri, ti, R1, t1)):
        assert np.allclose(Rc, np.eye(3)) and np.allclose(tc, 0, atol=1e-9)
    # Associativity, and the 4x4 form agrees.
    a = compose(*compose(R1, t1, R2, t2), R3, t3)
    b = compose(R1, t1, *compose(R2, t2, R3, t3))
    assert np.allclose(a[0], b[0]) and np.allclose(a[1], b[1])
    T = to_matrix4(R1, t1) @ to_matrix4(R2, t2)
    assert np.allclose(T, to_matrix4(R, t)) and np.allclose(T[:, 3], [0, 0, 0, 1])
    Rb, tb = from_matrix4(T)
    assert np.allclose(Rb, R) and np.allclose(tb, t)
    # inverse(compose) = compose(inverses) in reverse order.
    x = inverse(R, t)
    y = compose(*inverse(R2, t2), *inverse(R1, t1))
    assert np.allclose(x[0], y[0]) and np.allclose(x[1], y[1])


def test_se3_torch_matches_numpy_and_broadcasts():
    rng = np.random.default_rng(3)
    (R1, t1), (R2, t2) = _pose(rng, (3,)), _pose(rng)
    assert R2.shape == (3, 3) and t2.shape == (3,)
    R, t = compose(R1, t1, R2, t2)  # batch o single
    Rt, tt = compose(torch.from_numpy(R1), torch.from_numpy(t1), R2, t2)
    assert isinstance(Rt, torch.Tensor) and np.allclose(Rt.numpy(), R) and np.allclose(tt.numpy(), t)
    pts = rng.normal(size=(10, 3))
    out = transform_points(pts, R1, t1)  # shared points, batched poses
    assert out.shape == (3, 10, 3) and np.allclose(out[1], pts @ R1[1].T + t1[1])


# ----------------------------------------------------------------------------- projection


K_LMO = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


def test_project_points_numpy_and_torch_agree_and_are_differentiable():
    rng = np.random.default_rng(4)
    R, t = random_rotations(4, rng), np.array([[0, 0, 800.0]] * 4) + rng.normal(scale=30, size=(4, 3))
    pts = rng.normal(scale=40, size=(50, 3))
    ref = np.stack([project_points(pts, K_LMO, R[i], t[i]) for i in range(4)])
    Rt = torch.from_numpy(R).requires_grad_(True)
    tt = torch.from_numpy(t).requires_grad_(True)
    uv = project_points_torch(torch.from_numpy(pts), torch.from_numpy(K_LMO), Rt, tt)
    assert uv.shape == (4, 50, 2) and np.allclose(uv.detach().numpy(), ref, atol=1e-9)
    # The numpy entry point forwards tensors to the torch version.
    uv2 = project_points(torch.from_numpy(pts), K_LMO, Rt, tt)
    assert isinstance(uv2, torch.Tensor) and torch.allclose(uv, uv2)
    uv.sum().backward()
    assert torch.isfinite(Rt.grad).all() and torch.isfinite(tt.grad).all() and tt.grad.abs().sum() > 0
    # Moving the object along x by dx mm at depth z moves it fx*dx/z pixels.
    p0 = project_points(np.zeros((1, 3)), K_LMO, np.eye(3), [0, 0, 1000.0])
    p1 = project_points(np.zeros((1, 3)), K_LMO, np.eye(3), [10.0, 0, 1000.0])
    assert np.allclose(p1 - p0, [[K_LMO[0, 0] * 0.01, 0]])


# ----------------------------------------------------------------------------- crops


def test_crop_intrinsics_is_batched_crop_K():
    rng = np.random.default_rng(5)
    boxes = np.column_stack(
        [rng.uniform(-20, 500, 6), rng.uniform(-20, 400, 6), rng.uniform(10, 300, (6, 2))]
    )
    Ks = crop_intrinsics(K_LMO, boxes, (128, 96))
    for i in range(6):
        assert np.allclose(Ks[i], crop_K(K_LMO, boxes[i], (128, 96)))
    Kt = crop_intrinsics(torch.from_numpy(K_LMO), torch.from_numpy(boxes), (128, 96))
    assert isinstance(Kt, torch.Tensor) and np.allclose(Kt.numpy(), Ks)


def test_integer_crop_at_native_size_is_an_exact_pixel_slice():
    # Checks the half-pixel convention: box (x0, y0, w, h) = the BOP bbox of those pixels.
    img = torch.arange(2 * 3 * 40 * 50, dtype=torch.float64).reshape(2, 3, 40, 50)
    boxes = np.array([[5, 7, 20, 10], [0, 0, 50, 40]], dtype=float)
    out = crop_images(img, boxes, (20, 10))
    assert torch.allclose(out[0], img[0, :, 7:17, 5:25])
    full = crop_images(img, boxes[1:].repeat(2, 0), (50, 40))
    assert torch.allclose(full, img)
    theta = crop_affine_theta(boxes[1:], (50, 40))
    assert torch.allclose(theta, torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]], dtype=torch.float64))


def _blob(H, W, u, v, sigma):
    ys, xs = np.mgrid[0:H, 0:W]
    return np.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * sigma**2))


@settings(deadline=None, max_examples=20)
@given(
    st.floats(-0.4, 0.4),
    st.floats(-0.3, 0.3),
    st.floats(300, 1500),  # point in camera frame (x/z, y/z, z)
    st.floats(40, 140),
    st.floats(0.6, 1.6),  # window width, aspect w/h
    st.floats(0.3, 0.7),
    st.floats(0.3, 0.7),  # where the point sits inside the window
)
def test_crop_K_projects_onto_the_same_content_as_the_image_crop(xz, yz, z, bw, asp, fx, fy):
    """A bright dot at the projection of a 3D point must appear, in the grid_sample crop,
    where crop_K projects that point (within 0.5 output pixel)."""
    H, W = 120, 160
    K = np.array([[150.0, 0, 79.3], [0, 152.0, 60.7], [0, 0, 1]])
    X = np.array([[xz * z, yz * z, z]])
    u, v = project_points(X, K)[0]
    bh = bw / asp
    box = np.array([u - fx * bw + 0.5, v - fy * bh + 0.5, bw, bh])  # window covering [x0-0.5, x0+w-0.5]
    out_size = (64, 48)
    img = torch.from_numpy(_blob(H, W, u, v, sigma=2.0))[None, None]
    crop = crop_images(img, box[None], out_size)[0, 0].numpy()
    ys, xs = np.mgrid[0 : out_size[1], 0 : out_size[0]]
    centroid = np.array([(crop * xs).sum(), (crop * ys).sum()]) / crop.sum()
    expected = project_points(X, crop_K(K, box, out_size))[0]
    # The expected position is the window fraction we asked for (continuous-coordinate check).
    assert np.allclose(expected + 0.5, [fx * out_size[0], fy * out_size[1]], atol=1e-9)
    # The dot (3 sigma) lies inside the window: the centroid is where crop_K says.
    # (Measured error <= 0.03 px; a half-pixel convention slip would cost >= 0.23 px.)
    assert np.linalg.norm(centroid - expected) < 0.1, (centroid, expected)


def test_crop_images_is_differentiable_in_image_and_box():
    img = torch.rand(2, 3, 30, 40, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor(
        [[3.0, 4.0, 20.0, 15.0], [10.0, 2.0, 25.0, 25.0]], dtype=torch.float64, requires_grad=True
    )
    out = crop_images(img, boxes, (16, 12))
    assert out.shape == (2, 3, 12, 16)
    out.square().sum().backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0
    assert torch.isfinite(boxes.grad).all() and boxes.grad.abs().sum() > 0
    # Same result as affine_grid/grid_sample written out by hand, one sample at a time.
    th = crop_affine_theta(boxes.detach(), (40, 30))
    g = F.affine_grid(th[1:], [1, 3, 12, 16], align_corners=False)
    ref = F.grid_sample(img[1:].detach(), g, align_corners=False)
    assert torch.allclose(out[1:].detach(), ref)


@pytest.mark.parametrize("center", ["origin", "box"])
def test_zoom_window_contains_the_object_with_the_requested_aspect(center):
    rng = np.random.default_rng(6)
    R, t = (
        random_rotations(5, rng),
        np.column_stack([rng.normal(scale=80, size=(5, 2)), rng.uniform(500, 1200, 5)]),
    )
    corners = np.array(
        [[sx, sy, sz] for sx in (-40, 40) for sy in (-30, 30) for sz in (-50, 50)], dtype=float
    )
    aspect, scale = 4 / 3, 1.4
    box = zoom_window(R, t, corners, K_LMO, out_aspect=aspect, scale=scale, center=center)
    assert box.shape == (5, 4)
    assert np.allclose(box[:, 2] / box[:, 3], aspect)
    for i in range(5):
        uv = project_points(corners, K_LMO, R[i], t[i])
        lo, hi = box[i, :2] - 0.5, box[i, :2] - 0.5 + box[i, 2:]
        assert np.all(uv >= lo) and np.all(uv <= hi)
        c = project_points(t[i][None], K_LMO)[0] if center == "origin" else 0.5 * (uv.min(0) + uv.max(0))
        assert np.allclose(0.5 * (lo + hi), c)
        # Tight along the binding side: the object spans exactly 1/scale of it.
        span = 2 * np.abs(uv - c).max(0) / box[i, 2:]
        assert np.isclose(span.max(), 1 / scale)
    # Extra pixels (e.g. the observed mask) are included too; torch gives the same numbers.
    far = np.array([[K_LMO[0, 2] + 900.0, K_LMO[1, 2]]])
    big = zoom_window(R, t, corners, K_LMO, out_aspect=aspect, extra_pixels=far, center=center)
    assert np.all(big[:, 0] - 0.5 + big[:, 2] >= far[0, 0])
    bt = zoom_window(
        torch.from_numpy(R), torch.from_numpy(t), corners, K_LMO, out_aspect=aspect, center=center
    )
    assert isinstance(bt, torch.Tensor) and np.allclose(bt.numpy(), box)


def test_align_optical_axis_is_the_minimal_turn_of_the_optical_axis_onto_t():
    """Left-multiplying a centred view by it moves the part off-centre without a roll: the optical axis goes onto
    t's direction, about an axis in the image plane (the smallest turn), with det +1; on the axis it is the
    identity, straight behind the camera the half turn diag(1, -1, -1). A flipped sign or a transposed result
    fails the first check."""
    from posekit.render.views import align_optical_axis

    rng = np.random.default_rng(3)
    t = rng.normal(size=(200, 3)) * [300.0, 300.0, 100.0] + [0.0, 0.0, 800.0]
    R = align_optical_axis(t)
    d = t / np.linalg.norm(t, axis=1, keepdims=True)
    assert np.allclose(R @ [0.0, 0.0, 1.0], d, atol=1e-12)
    assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-12) and np.allclose(np.linalg.det(R), 1.0)
    axis = np.cross([0.0, 0.0, 1.0], d)
    assert np.allclose(np.einsum("bij,bj->bi", R, axis), axis, atol=1e-9)  # the turn's axis lies in the image plane
    ref = Rotation.align_vectors(d[:1], [[0.0, 0.0, 1.0]])[0].as_matrix()
    assert np.allclose(R[0], ref, atol=1e-9)
    assert np.allclose(align_optical_axis(np.array([0.0, 0.0, 500.0])), np.eye(3))
    assert np.allclose(align_optical_axis(np.array([0.0, 0.0, -5.0])), np.diag([1.0, -1.0, -1.0]))
    assert align_optical_axis(t.reshape(10, 20, 3)).shape == (10, 20, 3, 3)
