"""Geometric properties of a mesh that BOP's models_info records: diameter, bounding box, surface samples."""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import cdist


def diameter(vertices: np.ndarray, chunk: int = 2048) -> float:
    """Largest vertex-to-vertex distance (mm), exact.

    The farthest pair of a point set lies on its convex hull, so only hull vertices are compared
    (a few hundred to a few thousand for scanned models), pairwise in chunks to bound memory.
    Degenerate (flat or collinear) sets fall back to all vertices.
    """
    pts = np.asarray(vertices, dtype=np.float64)
    if len(pts) < 2:
        return 0.0
    try:
        pts = pts[ConvexHull(pts).vertices]
    except (QhullError, ValueError):
        pts = np.unique(pts, axis=0)
    best = 0.0
    for i in range(0, len(pts), chunk):
        best = max(best, float(cdist(pts[i:i + chunk], pts).max()))
    return best


def bbox_center(vertices: np.ndarray) -> np.ndarray:
    """Centre of the axis-aligned bounding box (the point BOP models are centred on)."""
    v = np.asarray(vertices, dtype=np.float64)
    return 0.5 * (v.min(axis=0) + v.max(axis=0))


def mesh_hash(vertices: np.ndarray, faces: np.ndarray) -> str:
    """Content hash of a mesh: sha256 over the vertices as little-endian float32 (mm, after the units
    decision and any re-centring) followed by the faces as little-endian int64, C order.

    float32 makes the hash insensitive to float64 round-off noise below ~1e-7 relative that does not
    change any rendered pixel, while a moved vertex, a re-scale or a changed face does change it.
    """
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(vertices, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(faces, dtype="<i8").tobytes())
    return h.hexdigest()


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area of each triangle (mm^2)."""
    tri = np.asarray(vertices, dtype=np.float64)[faces]
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points on the surface, area-weighted and uniform within each triangle, with a fixed seed
    (deterministic, so symmetry scores and hashes of derived data are reproducible)."""
    rng = np.random.default_rng(seed)
    areas = face_areas(vertices, faces)
    total = areas.sum()
    if not total > 0:
        raise ValueError("mesh has zero surface area")
    idx = rng.choice(len(faces), size=n, p=areas / total)
    tri = np.asarray(vertices, dtype=np.float64)[faces[idx]]
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    return tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
