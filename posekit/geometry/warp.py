"""Image warps that stand in for renders: candidate poses whose image is a homography of one render.

Turning the whole scene about the **camera centre** by a rotation Q (P' = Q P) changes its image by the
homography ``H = K Q K^-1``, exactly (pixel positions, visibility and, with the renderers' headlight at the
camera centre, shading too). Two kinds of pose candidates are such turns of an object at (R, t):

- a **turn about the viewing ray** of the model origin by an angle a: Q = rot(t / |t|, a), so R' = Q R and
  t' = Q t = t -- the in-plane turn of the object about its own centre;
- an **image-plane move**: Q the smallest rotation taking the ray of t to the ray of t + d, so R' = Q R and
  t' = Q t (on the ray of t + d, at the distance |t|): the object moved across the image, seen from the same
  direction relative to its viewing ray (a plain translation t + d would also turn its appearance by the
  parallax, about |d| / |t| rad).

A change of **depth** (t' = s t, R' = R) is no homography (a zoom by 1 / s about the origin's projection is only
its weak-perspective approximation, measured too coarse for the feature search's depth sweep: docs/benchmarks.md),
so it is rendered.

Homographies here map **source pixel coordinates to target pixel coordinates** (OpenCV: pixel centres at
integers), (..., 3, 3); :func:`warp_images` samples the source at ``H^-1`` of each target pixel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from posekit.geometry.rotations import so3_exp


def ray_turns(t: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(..., 3, 3) turns about the viewing rays of t (..., 3) by ``angles`` (...) radians."""
    t = np.asarray(t, dtype=np.float64)
    axis = t / np.linalg.norm(t, axis=-1, keepdims=True)
    return so3_exp(axis * np.asarray(angles, dtype=np.float64)[..., None])


def ray_to_ray(t: np.ndarray, t_new: np.ndarray) -> np.ndarray:
    """(..., 3, 3) the smallest rotations taking the direction of t (..., 3) to that of t_new (..., 3)."""
    a = np.asarray(t, dtype=np.float64)
    b = np.asarray(t_new, dtype=np.float64)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    axis = np.cross(a, b)
    s = np.linalg.norm(axis, axis=-1, keepdims=True)
    c = np.sum(a * b, axis=-1, keepdims=True)
    angle = np.arctan2(s, c)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.where(s > 1e-12, axis / s * angle, 0.0)
    return so3_exp(v)


def rotation_homography(K: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """(..., 3, 3) ``K Q K^-1``: the image map of turning the scene by Q (..., 3, 3) about the camera centre."""
    K = np.asarray(K, dtype=np.float64)
    return K @ np.asarray(Q, dtype=np.float64) @ np.linalg.inv(K)


def warp_images(images: torch.Tensor, H, mode: str = "bilinear") -> torch.Tensor:
    """``images`` (B, C, h, w) warped by homographies H (B, 3, 3) (source -> target pixels) into the same size;
    outside the source is zero (the renders' black background, an empty mask)."""
    if images.ndim != 4:
        raise ValueError(f"warp_images: images must be (B, C, H, W), got {tuple(images.shape)}")
    B, _, h, w = images.shape
    Hinv = torch.as_tensor(np.linalg.inv(np.asarray(H, dtype=np.float64)), dtype=torch.float32,
                           device=images.device)
    if Hinv.shape != (B, 3, 3):
        raise ValueError(f"warp_images: {tuple(Hinv.shape)} homographies for {B} images")
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=images.device),
                            torch.arange(w, dtype=torch.float32, device=images.device), indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)  # target pixel centres
    src = pts @ Hinv.transpose(1, 2)
    src = src[..., :2] / src[..., 2:].clamp_min(1e-9)
    grid = torch.stack([(2 * src[..., 0] + 1) / w - 1, (2 * src[..., 1] + 1) / h - 1], dim=-1)
    return F.grid_sample(images, grid.reshape(B, h, w, 2).to(images.dtype), mode=mode, padding_mode="zeros",
                         align_corners=False)


__all__ = ["ray_turns", "ray_to_ray", "rotation_homography", "warp_images"]
