"""Rotations: SO(3) exp/log, quaternions, the continuous 6D representation, and conversions.

Every function takes numpy arrays *or* torch tensors with any leading batch dimensions
and returns the same kind. The math is written once, in torch (float64 for numpy
inputs, so numpy results are exact to ~1e-15): numpy inputs are converted, computed and
converted back (a float32 array comes back float32, anything else float64). Torch
inputs keep their dtype and device and stay differentiable.

Conventions
- Axis-angle ("rotation vector", the so(3) Lie algebra Deep-6DPose regresses): a
  3-vector ``w = angle * axis``, angle in radians.
- Quaternions are scalar-first ``(w, x, y, z)``, unit norm, canonical with ``w >= 0``.
- The 6D representation (Zhou et al., CVPR 2019) is the first two **columns** of R,
  concatenated: ``(R[:, 0], R[:, 1])``; decoding is Gram-Schmidt.
- Matrices act on column vectors: ``x' = R @ x``.

Numerical care: small angles use Taylor expansions (exact values and finite gradients
at angle 0); the log map goes through a Shepperd-style quaternion (the best
conditioned of four candidates) and ``atan2``, so it is accurate at and near pi
where ``acos(trace)`` based formulas lose half the digits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# Below this squared angle the Taylor expansions are used (their truncation error is
# ~theta^6 ~ 1e-18, below float64 resolution).
_SMALL2 = 1e-6


# --------------------------------------------------------------------------- dispatch


def _is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _np_out_dtype(x: Any) -> np.dtype:
    dt = np.asarray(x).dtype
    return np.dtype(np.float32) if dt == np.float32 else np.dtype(np.float64)


def _to_t(x: Any, like: torch.Tensor | None = None) -> torch.Tensor:
    """A float tensor from x (numpy -> float64 on CPU, or dtype/device of ``like``)."""
    if _is_torch(x):
        t = x if x.is_floating_point() else x.to(torch.get_default_dtype())
        if like is not None:
            t = t.to(dtype=like.dtype, device=like.device)
        return t
    # A C-ordered copy: works for read-only and negatively strided views (e.g. R[::-1]).
    t = torch.from_numpy(np.array(x, dtype=np.float64, order="C"))
    if like is not None:
        t = t.to(dtype=like.dtype, device=like.device)
    return t


def _dispatch(fn, *args: Any):
    """Run the torch implementation ``fn`` on args; return numpy if no arg was a tensor.

    Tensors among the args fix dtype and device for the others. ``fn`` may return a
    tensor or a tuple of tensors.
    """
    like = next((a for a in args if _is_torch(a)), None)
    if like is not None:
        like = _to_t(like)
        return fn(*(_to_t(a, like) for a in args))
    out_dtype = _np_out_dtype(args[0])
    out = fn(*(_to_t(a) for a in args))
    if isinstance(out, tuple):
        return tuple(o.numpy().astype(out_dtype, copy=False) for o in out)
    return out.numpy().astype(out_dtype, copy=False)


def _check(x: Any, shape: tuple[int, ...], name: str) -> None:
    s = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    if len(s) < len(shape) or s[len(s) - len(shape) :] != shape:
        raise ValueError(f"{name}: expected shape (..., {', '.join(map(str, shape))}), got {s}")


# --------------------------------------------------------------------------- torch helpers


def _safe_norm2(sq: torch.Tensor, small: float) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(sq) where sq >= small, else 1; and the mask of the small entries.

    The double-``where`` trick: sqrt is never evaluated at 0, so gradients stay finite.
    """
    is_small = sq < small
    return torch.sqrt(torch.where(is_small, torch.ones_like(sq), sq)), is_small


def _hat(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) skew-symmetric matrix, hat(w) @ v = w x v."""
    x, y, z = w.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*w.shape[:-1], 3, 3)


def _so3_exp(w: torch.Tensor) -> torch.Tensor:
    th2 = (w * w).sum(-1)
    th, small = _safe_norm2(th2, _SMALL2)
    # A = sin(th)/th, B = (1 - cos(th))/th^2 with their Taylor series near 0.
    a = torch.where(small, 1.0 - th2 / 6.0 + th2 * th2 / 120.0, torch.sin(th) / th)
    b = torch.where(small, 0.5 - th2 / 24.0 + th2 * th2 / 720.0, (1.0 - torch.cos(th)) / (th * th))
    K = _hat(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand(K.shape)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def _quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    w, x, y, z = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1)  # normalises non-unit quaternions
    # fmt: off
    R = torch.stack(
        [
            1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
            s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
            s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
        ],
        dim=-1,
    )
    # fmt: on
    return R.reshape(*q.shape[:-1], 3, 3)


def _matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Shepperd's method, branch-free: compute all four candidates, keep the best conditioned."""
    m = R
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4*q_i^2 for i = w, x, y, z.
    four_sq = torch.stack(
        [
            1 + m00 + m11 + m22,
            1 + m00 - m11 - m22,
            1 - m00 + m11 - m22,
            1 - m00 - m11 + m22,
        ],
        dim=-1,
    )
    # Row i is (4 q_i) * q; dividing by 4 q_i = 2 sqrt(four_sq_i) gives q.
    rows = torch.stack(
        [
            torch.stack([four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, four_sq[..., 2], m21 + m12], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]], dim=-1),
        ],
        dim=-2,
    )
    # The largest four_sq is >= 1 for a rotation; clamping the others keeps their
    # (discarded) candidates and gradients finite.
    denom = 2.0 * torch.sqrt(torch.clamp(four_sq, min=0.01))
    cands = rows / denom[..., None]
    best = four_sq.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def _axis_angle_to_quat(v: torch.Tensor) -> torch.Tensor:
    th2 = (v * v).sum(-1)
    th, small = _safe_norm2(th2, _SMALL2)
    half = torch.where(small, 0.5 - th2 / 48.0 + th2 * th2 / 3840.0, torch.sin(0.5 * th) / th)
    w = torch.where(small, 1.0 - th2 / 8.0 + th2 * th2 / 384.0, torch.cos(0.5 * th))
    return torch.cat([w[..., None], v * half[..., None]], dim=-1)


def _quat_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)
    w, xyz = q[..., 0], q[..., 1:]
    n2 = (xyz * xyz).sum(-1)
    n, small = _safe_norm2(n2, _SMALL2)
    # angle / n = 2 atan2(n, w) / n; near n = 0 (w ~ 1): (2/w)(1 - r^2/3 + r^4/5), r = n/w.
    r2 = n2 / (w * w)
    k = torch.where(small, (2.0 / w) * (1.0 - r2 / 3.0 + r2 * r2 / 5.0), 2.0 * torch.atan2(n, w) / n)
    return xyz * k[..., None]


def _rot6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def _geodesic(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    M = R1.transpose(-1, -2) @ R2
    c = 0.5 * (M[..., 0, 0] + M[..., 1, 1] + M[..., 2, 2] - 1.0)
    v = torch.stack(
        [M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]], -1
    )
    s2 = 0.25 * (v * v).sum(-1)  # sin^2(angle)
    s, small = _safe_norm2(s2, 1e-300)
    s = torch.where(small, torch.zeros_like(s), s)
    # atan2 is accurate at both ends (acos is not) and clamps non-orthonormal input into [0, pi].
    return torch.atan2(s, c)


def _orthonormalize(M: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(M)
    d = torch.det(U @ Vh)
    D = torch.ones(*M.shape[:-2], 3, dtype=M.dtype, device=M.device)
    D = torch.cat([D[..., :2], d[..., None]], dim=-1)
    return (U * D[..., None, :]) @ Vh


# --------------------------------------------------------------------------- public API


def so3_exp(w):
    """Exponential map: axis-angle (..., 3) -> rotation matrices (..., 3, 3) (Rodrigues).

    Exact and differentiable at angle 0 (Taylor series below 1e-3 rad).
    """
    _check(w, (3,), "so3_exp")
    return _dispatch(_so3_exp, w)


def so3_log(R):
    """Log map: rotation matrices (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi].

    Goes through the canonical quaternion, so it is accurate at and near pi (where the
    axis is defined up to sign: at exactly pi either sign may come back).
    """
    _check(R, (3, 3), "so3_log")
    return _dispatch(lambda m: _quat_to_axis_angle(_matrix_to_quat(m)), R)


def quat_to_matrix(q):
    """Quaternions (..., 4) scalar-first (w, x, y, z) -> matrices (..., 3, 3). Non-unit q is normalised."""
    _check(q, (4,), "quat_to_matrix")
    return _dispatch(_quat_to_matrix, q)


def matrix_to_quat(R):
    """Matrices (..., 3, 3) -> unit quaternions (..., 4) (w, x, y, z) with w >= 0."""
    _check(R, (3, 3), "matrix_to_quat")
    return _dispatch(_matrix_to_quat, R)


def axis_angle_to_quat(v):
    """Axis-angle (..., 3) -> unit quaternions (..., 4) (w, x, y, z); w >= 0 for angles <= pi."""
    _check(v, (3,), "axis_angle_to_quat")
    return _dispatch(_axis_angle_to_quat, v)


def quat_to_axis_angle(q):
    """Quaternions (..., 4) (w, x, y, z) -> axis-angle (..., 3) with angle in [0, pi]."""
    _check(q, (4,), "quat_to_axis_angle")
    return _dispatch(_quat_to_axis_angle, q)


def rot6d_to_matrix(d6):
    """6D representation (..., 6) = (first column, second column) -> matrices (..., 3, 3).

    Gram-Schmidt (Zhou et al. 2019): b1 = a1/|a1|, b2 = unit(a2 - (b1.a2) b1), b3 = b1 x b2;
    continuous, so a network can regress it. Degenerate (parallel) inputs are undefined.
    """
    _check(d6, (6,), "rot6d_to_matrix")
    return _dispatch(_rot6d_to_matrix, d6)


def matrix_to_rot6d(R):
    """Matrices (..., 3, 3) -> 6D representation (..., 6): the first two columns, concatenated."""
    _check(R, (3, 3), "matrix_to_rot6d")
    return _dispatch(lambda m: torch.cat([m[..., :, 0], m[..., :, 1]], dim=-1), R)


def geodesic_distance(R1, R2):
    """Angle in radians (in [0, pi]) of the relative rotation R1^T R2; batched, broadcasting.

    Computed as atan2(|sin|, cos) from the skew and trace parts: accurate at 0 and pi and
    never NaN for slightly non-orthonormal input. Its (sub)gradient is 0 at exactly 0 and pi.
    """
    _check(R1, (3, 3), "geodesic_distance R1")
    _check(R2, (3, 3), "geodesic_distance R2")
    return _dispatch(_geodesic, R1, R2)


def orthonormalize(M):
    """Nearest rotation (..., 3, 3) to M in Frobenius norm (SVD, det forced to +1).

    LM-O ground-truth rotations are stored with ~1e-6 round-off; use this before
    treating them as exact. (Torch gradients through SVD are undefined when singular
    values coincide, i.e. for near-rotations: regress rot6d instead.)
    """
    _check(M, (3, 3), "orthonormalize")
    return _dispatch(_orthonormalize, M)


def random_rotations(
    n: int,
    rng: np.random.Generator | int | None | torch.Generator = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
):
    """``n`` rotations (n, 3, 3) drawn uniformly (Haar measure) on SO(3).

    With a numpy Generator / int seed / None: numpy float64 via scipy's
    ``Rotation.random``. With a ``torch.Generator`` (or a ``device``/``dtype`` given):
    a tensor, from normalised 4D Gaussian quaternions (also uniform).
    """
    if isinstance(rng, torch.Generator) or device is not None or dtype is not None:
        if isinstance(rng, torch.Generator):
            gen = rng
            dev = torch.device(device) if device is not None else gen.device
        else:
            dev = torch.device(device) if device is not None else torch.device("cpu")
            seed = int(np.random.default_rng(rng).integers(2**62))
            gen = torch.Generator(device=dev).manual_seed(seed)
        q = torch.randn(n, 4, generator=gen, device=gen.device, dtype=torch.float64)
        return _quat_to_matrix(q).to(device=dev, dtype=dtype or torch.get_default_dtype())
    from scipy.spatial.transform import Rotation

    return Rotation.random(n, random_state=rng).as_matrix()


def rotation_angle(R):
    """Rotation angle in radians (..., ) of matrices (..., 3, 3), in [0, pi]."""
    _check(R, (3, 3), "rotation_angle")
    return _dispatch(lambda m: _geodesic(torch.eye(3, dtype=m.dtype, device=m.device).expand(m.shape), m), R)


__all__ = [
    "so3_exp",
    "so3_log",
    "quat_to_matrix",
    "matrix_to_quat",
    "axis_angle_to_quat",
    "quat_to_axis_angle",
    "rot6d_to_matrix",
    "matrix_to_rot6d",
    "geodesic_distance",
    "rotation_angle",
    "orthonormalize",
    "random_rotations",
]
