"""Pose errors, one function per error, as defined by bop_toolkit's ``pose_error.py`` and the BOP 2019 rules.

Every function takes the estimated pose (``R_est``, ``t_est``) and the ground-truth pose (``R_gt``,
``t_gt``) either as one pose (R 3x3, t 3) -> a float, or as a batch with a leading dimension
(R (E, 3, 3), t (E, 3)) -> an (E,) array. Poses are BOP's model-to-camera transforms, t in mm;
``pts`` are model points (N, 3) in mm (BOP evaluates on the decimated ``models_eval`` vertices).

Symmetries are given as ``syms``: an (S, 4, 4) array of model-frame transforms that leave the object's
appearance unchanged, identity included (``posekit.data.bop.symmetry_transforms_from_info`` builds
them from models_info: the discrete ones plus the continuous ones sampled). The formulas, thresholds and
sources are in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree

#: Points per chunk when a batch of posed models is materialised (bounds memory to ~100 MB).
_CHUNK_POINTS = 4_000_000


def _as_batch(R_est, t_est, R_gt, t_gt) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Poses as float64 batches (E, 3, 3) and (E, 3); also whether the input was a single pose."""
    R_est = np.asarray(R_est, dtype=np.float64)
    single = R_est.ndim == 2
    R_est = R_est.reshape(-1, 3, 3)
    E = len(R_est)
    t_est = np.asarray(t_est, dtype=np.float64).reshape(E, 3)
    R_gt = np.broadcast_to(np.asarray(R_gt, dtype=np.float64).reshape(-1, 3, 3), (E, 3, 3))
    t_gt = np.broadcast_to(np.asarray(t_gt, dtype=np.float64).reshape(-1, 3), (E, 3))
    return R_est, t_est, R_gt, t_gt, single


def _out(values: np.ndarray, single: bool):
    return float(values[0]) if single else values


def _chunks(n_poses: int, n_points: int, n_syms: int = 1) -> range:
    step = max(1, _CHUNK_POINTS // max(1, n_points * n_syms))
    return range(0, n_poses, step)


def transform(R: np.ndarray, t: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points (N, 3) posed by a batch of transforms: (E, N, 3) = R pts + t."""
    return np.matmul(pts[None], np.swapaxes(R, 1, 2)) + t[:, None, :]


def _norm(v: np.ndarray) -> np.ndarray:
    """Euclidean norm over the last axis (faster than np.linalg.norm for small vectors)."""
    return np.sqrt(np.einsum("...i,...i->...", v, v))


def project(K: np.ndarray, cam_pts: np.ndarray) -> np.ndarray:
    """Camera-frame points (..., 3) to pixels (..., 2) with intrinsics K (OpenCV pinhole)."""
    uvw = cam_pts @ np.asarray(K, dtype=np.float64).T
    return uvw[..., :2] / uvw[..., 2:3]


def _syms(syms: np.ndarray | None) -> np.ndarray:
    return np.eye(4)[None] if syms is None else np.asarray(syms, dtype=np.float64).reshape(-1, 4, 4)


# --------------------------------------------------------------------------------------------- errors


def rotation_error(R_est, R_gt):
    """Angle (degrees) of R_est R_gt^-1: arccos((trace - 1) / 2), clipped to [0, 180] (bop_toolkit ``re``).

    Uses the inverse of R_gt, not its transpose, as bop_toolkit does (BOP ground truth is not always
    exactly orthonormal). Symmetries are not taken into account.
    """
    R_est = np.asarray(R_est, dtype=np.float64)
    single = R_est.ndim == 2
    R_est = R_est.reshape(-1, 3, 3)
    R_gt = np.broadcast_to(np.asarray(R_gt, dtype=np.float64).reshape(-1, 3, 3), R_est.shape)
    diff = R_est @ np.linalg.inv(R_gt)
    cos = np.clip(0.5 * (np.trace(diff, axis1=1, axis2=2) - 1.0), -1.0, 1.0)
    return _out(np.degrees(np.arccos(cos)), single)


def translation_error(t_est, t_gt):
    """Euclidean distance ||t_est - t_gt|| (mm) (bop_toolkit ``te``)."""
    t_est = np.asarray(t_est, dtype=np.float64)
    single = t_est.size == 3
    t_est = t_est.reshape(-1, 3)
    t_gt = np.asarray(t_gt, dtype=np.float64).reshape(-1, 3)
    return _out(np.linalg.norm(t_est - t_gt, axis=1), single)


def add(R_est, t_est, R_gt, t_gt, pts: np.ndarray):
    """ADD: mean over model points of ||(R_est x + t_est) - (R_gt x + t_gt)|| (mm) (Hinterstoisser 2012)."""
    R_est, t_est, R_gt, t_gt, single = _as_batch(R_est, t_est, R_gt, t_gt)
    pts = np.asarray(pts, dtype=np.float64)
    out = np.empty(len(R_est))
    chunks = _chunks(len(R_est), len(pts))
    for s in chunks:
        e = slice(s, s + chunks.step)
        # The difference of the two posed models is a single affine map of the points.
        d = transform(R_est[e] - R_gt[e], t_est[e] - t_gt[e], pts)
        out[e] = _norm(d).mean(axis=1)
    return _out(out, single)


def _is_orthonormal(R: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    return np.abs(R @ np.swapaxes(R, 1, 2) - np.eye(3)).max(axis=(1, 2)) <= tol


def adds(R_est, t_est, R_gt, t_gt, pts: np.ndarray, tree: cKDTree | None = None, workers: int = 1):
    """ADD-S (bop_toolkit ``adi``): mean over the GT-posed points of the distance to the closest
    estimate-posed point (mm).

    Closest points come from a KD-tree, never an all-pairs matrix. When R_est is orthonormal the
    GT-posed points are mapped into the estimate's model frame, y = R_est^T (R_gt x + t_gt - t_est),
    which preserves distances, so one tree on the model points (``tree``, built here when omitted)
    serves every estimate; an R_est that is not orthonormal (to 1e-9) gets a tree of its own posed
    points, so the value is exact either way.
    """
    R_est, t_est, R_gt, t_gt, single = _as_batch(R_est, t_est, R_gt, t_gt)
    pts = np.asarray(pts, dtype=np.float64)
    if tree is None:
        tree = cKDTree(pts)
    ortho = _is_orthonormal(R_est)
    out = np.empty(len(R_est))
    idx = np.flatnonzero(ortho)
    step = _chunks(len(idx), len(pts)).step
    for s in range(0, len(idx), step):
        e = idx[s:s + step]
        # y_gt in the estimate's model frame: R_est^T (R_gt x + t_gt - t_est).
        A = np.swapaxes(R_est[e], 1, 2) @ R_gt[e]
        b = np.einsum("eji,ej->ei", R_est[e], t_gt[e] - t_est[e])
        y = transform(A, b, pts)
        d, _ = tree.query(y.reshape(-1, 3), k=1, workers=workers)
        out[e] = d.reshape(len(e), -1).mean(axis=1)
    for e in np.flatnonzero(~ortho):
        est_pts = pts @ R_est[e].T + t_est[e]
        gt_pts = pts @ R_gt[e].T + t_gt[e]
        d, _ = cKDTree(est_pts).query(gt_pts, k=1, workers=workers)
        out[e] = d.mean()
    return _out(out, single)


def _sym_gt_poses(R_gt: np.ndarray, t_gt: np.ndarray, syms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GT poses composed with each symmetry: (E, S, 3, 3) and (E, S, 3); P_gt S."""
    R = np.einsum("eij,sjk->esik", R_gt, syms[:, :3, :3])
    t = np.einsum("eij,sj->esi", R_gt, syms[:, :3, 3]) + t_gt[:, None, :]
    return R, t


def _sym_reduce(R_est, t_est, R_gt, t_gt, pts, syms, reducers: list[Callable[[np.ndarray], np.ndarray]],
                K: np.ndarray | None) -> tuple[list[np.ndarray], bool]:
    """For each reducer r: min over symmetries S of r_x ||f(P_est x) - f(P_gt S x)||, f = identity or
    projection by K. Several reducers share one computation of the posed (and projected) points."""
    R_est, t_est, R_gt, t_gt, single = _as_batch(R_est, t_est, R_gt, t_gt)
    pts = np.asarray(pts, dtype=np.float64)
    syms = _syms(syms)
    S = len(syms)
    outs = [np.empty(len(R_est)) for _ in reducers]
    step = _chunks(len(R_est), len(pts), S + 1).step
    for s in range(0, len(R_est), step):
        e = slice(s, s + step)
        est = transform(R_est[e], t_est[e], pts)  # (e, N, 3)
        Rs, ts = _sym_gt_poses(R_gt[e], t_gt[e], syms)
        n = Rs.shape[0]
        gt = transform(Rs.reshape(-1, 3, 3), ts.reshape(-1, 3), pts).reshape(n, S, len(pts), 3)
        if K is not None:
            est, gt = project(K, est), project(K, gt)
        dist = _norm(est[:, None] - gt)  # (e, S, N)
        for out, reduce in zip(outs, reducers, strict=True):
            out[e] = reduce(dist).min(axis=1)
    return outs, single


def _max(d: np.ndarray) -> np.ndarray:
    return d.max(axis=-1)


def _mean(d: np.ndarray) -> np.ndarray:
    return d.mean(axis=-1)


def mssd(R_est, t_est, R_gt, t_gt, pts: np.ndarray, syms: np.ndarray | None = None):
    """MSSD (BOP 2019): min over symmetries S of max over points ||P_est x - P_gt S x|| (mm)."""
    (out,), single = _sym_reduce(R_est, t_est, R_gt, t_gt, pts, syms, [_max], None)
    return _out(out, single)


def mspd(R_est, t_est, R_gt, t_gt, K: np.ndarray, pts: np.ndarray, syms: np.ndarray | None = None):
    """MSPD (BOP 2019): min over symmetries S of max over points ||proj(P_est x) - proj(P_gt S x)|| (px)."""
    (out,), single = _sym_reduce(R_est, t_est, R_gt, t_gt, pts, syms, [_max], np.asarray(K, float))
    return _out(out, single)


def proj2d(R_est, t_est, R_gt, t_gt, K: np.ndarray, pts: np.ndarray, syms: np.ndarray | None = None):
    """2D projection error (LINEMOD "Proj2D", Brachmann 2016; bop_toolkit ``proj``): mean over points
    of ||proj(P_est x) - proj(P_gt x)|| (px). With ``syms`` it is the min over the symmetries of that
    mean (posekit's choice for symmetric objects, documented in docs/metrics.md)."""
    (out,), single = _sym_reduce(R_est, t_est, R_gt, t_gt, pts, syms, [_mean], np.asarray(K, float))
    return _out(out, single)


def mspd_and_proj2d(R_est, t_est, R_gt, t_gt, K: np.ndarray, pts: np.ndarray, syms: np.ndarray | None = None):
    """(:func:`mspd`, :func:`proj2d`) over the same symmetries, from one projection of the posed points
    (the evaluation computes both; this halves the work). Equal to calling the two functions."""
    (a, b), single = _sym_reduce(R_est, t_est, R_gt, t_gt, pts, syms, [_max, _mean], np.asarray(K, float))
    return _out(a, single), _out(b, single)
