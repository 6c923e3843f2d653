"""Visible Surface Discrepancy (VSD, Hodan et al. ECCVW 2016 / BOP 2019), with model depth from open3d.

VSD compares the model's depth in the estimated and the ground-truth pose only where the object is
visible in the test depth image, so it needs a depth image of the scene. Model depth is rendered with
open3d's ``RaycastingScene`` (exact ray-triangle hits, CPU, no OpenGL context): one ray per pixel
centre, OpenCV camera, pixel (0, 0) the centre of the top-left pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: BOP 2019 VSD settings: visibility tolerance delta (mm) and misalignment tolerances tau (x diameter).
VSD_DELTA_MM = 15.0
VSD_TAUS = tuple(np.round(np.arange(0.05, 0.51, 0.05), 2))


class DepthRenderer:
    """Renders the depth (mm, 0 where the model is absent) of one mesh in a given pose."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        self.vertices = np.asarray(vertices, dtype=np.float64)
        self.faces = np.asarray(faces, dtype=np.uint32)
        self._rays_key: tuple | None = None
        self._dirs: np.ndarray | None = None

    def _directions(self, K: np.ndarray, width: int, height: int) -> np.ndarray:
        """Per-pixel ray directions K^-1 [u, v, 1] (z = 1, so the hit distance is the depth)."""
        key = (tuple(np.round(K.reshape(-1), 9)), width, height)
        if key != self._rays_key:
            u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
            pix = np.stack([u, v, np.ones_like(u)], axis=-1)
            self._dirs = pix @ np.linalg.inv(K).T
            self._rays_key = key
        return self._dirs

    def render(self, K: np.ndarray, R: np.ndarray, t: np.ndarray, width: int, height: int) -> np.ndarray:
        """Depth image (H, W) float64 in mm of the model posed by (R, t) seen by camera K."""
        import open3d as o3d

        K = np.asarray(K, dtype=np.float64)
        cam_vertices = self.vertices @ np.asarray(R, dtype=np.float64).T + np.asarray(t, dtype=np.float64).reshape(1, 3)
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(
            o3d.core.Tensor(cam_vertices.astype(np.float32)), o3d.core.Tensor(self.faces)
        )
        dirs = self._directions(K, width, height)
        rays = np.concatenate([np.zeros_like(dirs), dirs], axis=-1).astype(np.float32)
        hit = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().astype(np.float64)
        hit[~np.isfinite(hit)] = 0.0
        return hit


def depth_to_distance(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Distance from the camera centre to each pixel's 3D point (0 stays 0), as VSD compares distances."""
    K = np.asarray(K, dtype=np.float64)
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    scale = np.sqrt(((u - K[0, 2]) / K[0, 0]) ** 2 + ((v - K[1, 2]) / K[1, 1]) ** 2 + 1.0)
    return np.asarray(depth, dtype=np.float64) * scale


def visibility_mask(dist_test: np.ndarray, dist_model: np.ndarray, delta: float) -> np.ndarray:
    """BOP 2019 visibility: the model is visible where it is rendered and not behind the scene by more
    than delta; pixels with missing test depth count as visible."""
    return np.logical_and(np.logical_or(dist_model - dist_test <= delta, dist_test == 0), dist_model > 0)


def vsd(R_est, t_est, R_gt, t_gt, depth_test: np.ndarray, K: np.ndarray, renderer: DepthRenderer,
        diameter: float, delta: float = VSD_DELTA_MM, taus: Sequence[float] = VSD_TAUS,
        normalized_by_diameter: bool = True, depth_gt: np.ndarray | None = None) -> np.ndarray:
    """VSD errors (one per tau, each in [0, 1]) of an estimated pose, BOP 2019 "step" cost.

    e = (#{p in V_gt & V_est : |d_est - d_gt| >= tau} + #(V_gt xor V_est)) / #(V_gt | V_est), where V are
    visibility masks against the test depth (tolerance ``delta`` mm) and d are distances from the
    camera centre; with ``normalized_by_diameter`` the distance differences are divided by the
    diameter (so tau is a fraction of it). An empty union gives 1. ``depth_gt`` may pass a cached
    render of the ground-truth pose.
    """
    h, w = depth_test.shape
    depth_est = renderer.render(K, R_est, t_est, w, h)
    if depth_gt is None:
        depth_gt = renderer.render(K, R_gt, t_gt, w, h)
    dist_test = depth_to_distance(depth_test, K)
    dist_gt = depth_to_distance(depth_gt, K)
    dist_est = depth_to_distance(depth_est, K)
    visib_gt = visibility_mask(dist_test, dist_gt, delta)
    visib_est = np.logical_or(visibility_mask(dist_test, dist_est, delta), np.logical_and(visib_gt, dist_est > 0))
    inter = np.logical_and(visib_gt, visib_est)
    union_count = int(np.logical_or(visib_gt, visib_est).sum())
    if union_count == 0:
        return np.ones(len(taus))
    comp_count = union_count - int(inter.sum())
    dists = np.abs(dist_gt[inter] - dist_est[inter])
    if normalized_by_diameter:
        dists = dists / float(diameter)
    return np.array([(np.count_nonzero(dists >= tau) + comp_count) / union_count for tau in taus])
