"""Viewpoints and clean object-centred renders (what the augmented autoencoder is trained on and its codebook holds).

A *view* is an object-to-camera rotation R (BOP convention, x_cam = R x_model + t) for a camera that looks at
the model origin from a point on the unit sphere around it. ``view_sphere_rotations`` spreads view points evenly
(Fibonacci lattice) and multiplies them by in-plane rotations about the optical axis, as the AAE paper does
(2562 views x 36 in-plane angles = 92,232 codebook entries). ``render_clean_views`` renders the object centred at a
fixed distance on a black background under one fixed light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posekit.cad.model import ObjectModel
from posekit.geometry.camera import Camera

#: The model frame's "up" for hemisphere sampling and look-at frames (+z, as in BOP/LINEMOD models).
UP = np.array([0.0, 0.0, 1.0])


def fibonacci_sphere(n: int, hemisphere: bool = False) -> np.ndarray:
    """(n, 3) unit vectors spread evenly over the sphere (or the upper half, z >= 0) by a Fibonacci lattice.

    Equal-area: point i sits at height z_i equally spaced in z (Archimedes), longitude stepped by the golden angle.
    """
    if n <= 0:
        raise ValueError(f"number of view points must be positive, got {n}")
    i = np.arange(n, dtype=np.float64) + 0.5
    z = 1.0 - i / n if hemisphere else 1.0 - 2.0 * i / n
    rho = np.sqrt(np.clip(1.0 - z * z, 0.0, 1.0))
    phi = i * np.pi * (3.0 - np.sqrt(5.0))
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)


def look_at_rotation(viewpoints: np.ndarray) -> np.ndarray:
    """Object-to-camera rotations (..., 3, 3) for cameras at ``viewpoints`` (..., 3) looking at the model origin.

    The optical axis (camera +z) points from the view point to the origin; the camera's y axis (down in the image)
    is aligned with the model's -z (``UP`` appears up in the image) except near the poles, where the model's +y
    is used instead so the frame stays well defined.
    """
    v = np.asarray(viewpoints, dtype=np.float64)
    z_c = -v / np.linalg.norm(v, axis=-1, keepdims=True)
    up = np.broadcast_to(UP, z_c.shape).copy()
    near_pole = np.abs((z_c * UP).sum(-1)) > 0.999
    up[near_pole] = np.array([0.0, 1.0, 0.0])
    x_c = np.cross(z_c, up)  # image right
    x_c /= np.linalg.norm(x_c, axis=-1, keepdims=True)
    y_c = np.cross(z_c, x_c)  # image down
    # Rows of R are the camera axes expressed in the model frame.
    return np.stack([x_c, y_c, z_c], axis=-2)


def inplane_rotation(angles: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations by ``angles`` (radians) about the camera's optical axis."""
    a = np.asarray(angles, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    R = np.zeros(a.shape + (3, 3))
    R[..., 0, 0], R[..., 0, 1] = c, -s
    R[..., 1, 0], R[..., 1, 1] = s, c
    R[..., 2, 2] = 1.0
    return R


def view_sphere_rotations(n_views: int, n_inplane: int, hemisphere: bool = False) -> np.ndarray:
    """(n_views * n_inplane, 3, 3) object-to-camera rotations: Fibonacci view points x evenly spaced in-plane angles.

    Ordered view-major: entry ``v * n_inplane + k`` is view point v turned by ``2 pi k / n_inplane`` about the
    optical axis. ``hemisphere=True`` keeps the camera above the model's xy plane (z >= 0).
    """
    if n_inplane <= 0:
        raise ValueError(f"number of in-plane angles must be positive, got {n_inplane}")
    R_view = look_at_rotation(fibonacci_sphere(n_views, hemisphere))
    R_in = inplane_rotation(2.0 * np.pi * np.arange(n_inplane) / n_inplane)
    return np.einsum("kij,vjl->vkil", R_in, R_view).reshape(-1, 3, 3)


def align_optical_axis(t: np.ndarray) -> np.ndarray:
    """Camera-frame rotations taking the optical axis (0, 0, 1) onto the direction of ``t`` (3,) or (..., 3).

    Left-multiplying a centred view's R by it keeps the camera looking at the object from the same view point
    when the object is moved off-centre to ``t`` (minimal rotation, no extra roll). A ``t`` straight behind the
    camera gets the half turn diag(1, -1, -1).
    """
    d = np.asarray(t, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    # Rodrigues' formula about the unit axis k = (0, 0, 1) x d / |...|, with cos = d_z, sin = |(0, 0, 1) x d|, in
    # numpy (not scipy's Rotation: importing scipy.spatial costs a one-call estimate 0.3 s of its ~2 s)
    axis = np.stack([-d[..., 1], d[..., 0], np.zeros_like(d[..., 0])], axis=-1)
    s = np.linalg.norm(axis, axis=-1)
    k = np.where(s[..., None] > 1e-12, axis / np.maximum(s, 1e-12)[..., None], [1.0, 0.0, 0.0])
    sin, cos = s[..., None, None], d[..., 2, None, None]
    Kx = np.zeros(k.shape[:-1] + (3, 3))
    Kx[..., 0, 1], Kx[..., 0, 2], Kx[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    Kx = Kx - np.swapaxes(Kx, -1, -2)
    return np.eye(3) + sin * Kx + (1.0 - cos) * (Kx @ Kx)


def clean_camera(model: ObjectModel, size: tuple[int, int], distance: float, fill: float = 0.9) -> Camera:
    """A centred pinhole camera whose image the model's bounding sphere at ``distance`` fills to ``fill``.

    The silhouette of a sphere of radius r at distance d has angular radius asin(r / d); the focal length is chosen
    so that angle spans ``fill`` of half the shorter image side.
    """
    W, H = size
    r = 0.5 * float(model.diameter)
    if distance <= r:
        raise ValueError(f"distance {distance} mm must exceed the model's radius {r:.1f} mm")
    f = fill * 0.5 * min(W, H) / np.tan(np.arcsin(r / distance))
    return Camera.from_fxfycxcy(f, f, (W - 1) / 2.0, (H - 1) / 2.0, W, H)


@dataclass
class CleanViews:
    """Clean renders of one object: a batch of N views.

    rgb (N, H, W, 3) uint8 on black; depth (N, H, W) float32 mm (0 = background); mask (N, H, W) bool;
    rotations (N, 3, 3) and t (3,) mm the poses used (object-to-camera); K the 3x3 intrinsics.
    """

    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    rotations: np.ndarray
    t: np.ndarray
    K: np.ndarray


def clean_light():
    """The fixed light of clean views: a white directional light along the optical axis (a head light)."""
    from posekit.render.types import Light

    return Light(kind="directional", color=(1.0, 1.0, 1.0), intensity=0.7, position=(0.0, 0.0, 0.0),
                 direction=(0.0, 0.0, 1.0))


def render_clean_views(
    model: ObjectModel,
    rotations: np.ndarray,
    size: tuple[int, int] = (128, 128),
    distance: float | None = None,
    K: np.ndarray | None = None,
    renderer=None,
    ambient: float = 0.3,
    progress: bool = False,
) -> CleanViews:
    """Render ``model`` at t = (0, 0, distance) in each of ``rotations`` (N, 3, 3): black background, fixed light.

    ``distance`` defaults to 3 model diameters; ``K`` defaults to :func:`clean_camera` (the object fills ~90 % of
    the shorter side). Pass ``renderer`` (an OffscreenRenderer of this size) to reuse a GL context across calls.
    """
    from posekit.render.gl import OffscreenRenderer
    from posekit.render.types import RenderObject

    W, H = int(size[0]), int(size[1])
    if W <= 0 or H <= 0:
        raise ValueError(f"size must be positive, got {W}x{H}")
    Rs = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    d = float(distance) if distance is not None else 3.0 * float(model.diameter)
    cam = Camera(K, W, H) if K is not None else clean_camera(model, (W, H), d)
    t = np.array([0.0, 0.0, d])
    own = renderer is None
    r = OffscreenRenderer(W, H) if own else renderer
    n = len(Rs)
    rgb = np.zeros((n, H, W, 3), np.uint8)
    depth = np.zeros((n, H, W), np.float32)
    light = [clean_light()]
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="clean views", unit="view", leave=False)
    try:
        for i in it:
            res = r.render(cam, [RenderObject(model=model, R=Rs[i], t=t)], lights=light, ambient=ambient,
                           bg_color=(0.0, 0.0, 0.0))
            rgb[i] = res.rgb
            depth[i] = res.depth
    finally:
        if own and hasattr(r, "close"):
            r.close()
    return CleanViews(rgb=rgb, depth=depth, mask=depth > 0, rotations=Rs, t=t, K=cam.K)
