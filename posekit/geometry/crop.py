"""Crop geometry for DeepIM-style zoom-in: pick a window, crop images into it, and its K.

A window is ``(x0, y0, w, h)`` in pixels with the BOP/OpenCV pixel convention (pixel
(0, 0) is centred at (0, 0)): it covers the continuous pixel coordinates
``[x0 - 0.5, x0 + w - 0.5] x [y0 - 0.5, y0 + h - 0.5]`` -- so the BOP bbox ``[x, y, w, h]``
of a mask is the window of exactly its pixels. w, h may be fractional.

Three views of the same map must agree, and the tests check they do:
``crop_K`` (camera.py) / ``crop_intrinsics`` (batched) give the K of the crop,
``crop_affine_theta`` the ``affine_grid`` matrix (``align_corners=False``), and
``crop_images`` the pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from posekit.geometry.camera import project_points_torch
from posekit.geometry.rotations import _check, _dispatch


def _zoom_window(R, t, pts, K, extra, out_aspect: float, scale: float, center: str):
    uv = project_points_torch(pts, K, R, t)  # (..., N, 2)
    if extra is not None:
        uv = torch.cat([uv, extra.expand(*uv.shape[:-2], *extra.shape[-2:])], dim=-2)
    if center == "origin":
        c = project_points_torch(t[..., None, :], K)[..., 0, :]
    else:
        c = 0.5 * (uv.amin(-2) + uv.amax(-2))
    half = (uv - c[..., None, :]).abs().amax(-2)  # (..., 2): max |u - cx|, max |v - cy|
    w = scale * torch.maximum(2.0 * half[..., 0], 2.0 * half[..., 1] * out_aspect)
    h = w / out_aspect
    return torch.stack([c[..., 0] - 0.5 * w + 0.5, c[..., 1] - 0.5 * h + 0.5, w, h], dim=-1)


def zoom_window(
    R,
    t,
    points,
    K,
    out_aspect: float = 4.0 / 3.0,
    scale: float = 1.4,
    center: str = "origin",
    extra_pixels=None,
):
    """The zoom-in window (..., 4) = (x0, y0, w, h) around an object at pose (R, t), as DeepIM does.

    - centre: ``center="origin"`` uses the projection of t (the model origin, DeepIM's
      choice: it moves consistently with the pose), ``"box"`` the centre of the projected
      points' bounding box;
    - size: the window keeps that centre and must contain every projected point of
      ``points`` (model vertices or the 8 corners of its 3D bbox, (N, 3) or (..., N, 3), mm)
      plus any ``extra_pixels`` (..., M, 2) (e.g. the observed mask's bbox corners):
      ``w = scale * max(2 max|u - cx|, 2 max|v - cy| * out_aspect)``, ``h = w / out_aspect``,
      so resizing it to an output of aspect ``out_aspect`` = W/H is an isotropic zoom.

    R (..., 3, 3), t (..., 3) in mm, K (3, 3) or (..., 3, 3). numpy or torch, same kind back.
    """
    if center not in ("origin", "box"):
        raise ValueError(f"zoom_window: center must be 'origin' or 'box', got {center!r}")
    _check(R, (3, 3), "zoom_window R")
    _check(t, (3,), "zoom_window t")
    _check(points, (3,), "zoom_window points")
    _check(K, (3, 3), "zoom_window K")
    args = (R, t, points, K) + (() if extra_pixels is None else (extra_pixels,))

    def fn(R, t, pts, K, extra=None):
        return _zoom_window(R, t, pts, K, extra, float(out_aspect), float(scale), center)

    return _dispatch(fn, *args)


def _crop_intrinsics(K: torch.Tensor, boxes: torch.Tensor, W: float, H: float) -> torch.Tensor:
    x0, y0, w, h = boxes.unbind(-1)
    sx, sy = W / w, H / h
    o, one = torch.zeros_like(sx), torch.ones_like(sx)
    A = torch.stack([sx, o, (0.5 - x0) * sx - 0.5, o, sy, (0.5 - y0) * sy - 0.5, o, o, one], dim=-1).reshape(
        *boxes.shape[:-1], 3, 3
    )
    return A @ K


def crop_intrinsics(K, boxes, out_size: tuple[int, int]):
    """Batched ``crop_K``: K (..., 3, 3) of windows ``boxes`` (..., 4) resized to out_size (W, H)."""
    _check(K, (3, 3), "crop_intrinsics K")
    _check(boxes, (4,), "crop_intrinsics boxes")
    W, H = (float(v) for v in out_size)
    return _dispatch(lambda k, b: _crop_intrinsics(k, b, W, H), K, boxes)


def crop_affine_theta(boxes, image_size: tuple[int, int]) -> torch.Tensor:
    """``affine_grid`` matrices (B, 2, 3) that sample the windows ``boxes`` (B, 4) = (x0, y0, w, h).

    For ``F.affine_grid(theta, (B, C, H_out, W_out), align_corners=False)`` over an input of
    ``image_size`` (W, H). Output pixel j maps to input pixel (j + 0.5) w / W_out + x0 - 0.5,
    the same map as ``crop_K``; theta itself does not depend on the output size.
    Returns a tensor (float64 for numpy boxes, else the boxes' dtype/device).
    """
    b = torch.as_tensor(boxes) if not isinstance(boxes, torch.Tensor) else boxes
    if not b.is_floating_point():
        b = b.to(torch.float64)
    _check(b, (4,), "crop_affine_theta boxes")
    W, H = (float(v) for v in image_size)
    x0, y0, w, h = b.reshape(-1, 4).unbind(-1)
    o = torch.zeros_like(x0)
    theta = torch.stack([w / W, o, (2 * x0 + w) / W - 1, o, h / H, (2 * y0 + h) / H - 1], dim=-1)
    return theta.reshape(-1, 2, 3)


def crop_images(
    images: torch.Tensor,
    boxes,
    out_size: tuple[int, int],
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Crop-and-resize windows ``boxes`` (B, 4) of ``images`` (B, C, H, W) to out_size (W_out, H_out).

    One batched ``affine_grid`` + ``grid_sample`` call (differentiable w.r.t. images and
    boxes); outside the image is ``padding_mode``. The crop's intrinsics are
    ``crop_intrinsics(K, boxes, out_size)``.
    """
    if images.ndim != 4:
        raise ValueError(f"crop_images: images must be (B, C, H, W), got {tuple(images.shape)}")
    B, C, H, W = images.shape
    theta = crop_affine_theta(boxes, (W, H)).to(device=images.device, dtype=images.dtype)
    if theta.shape[0] != B:
        raise ValueError(f"crop_images: {theta.shape[0]} boxes for {B} images")
    Wo, Ho = (int(v) for v in out_size)
    grid = F.affine_grid(theta, [B, C, Ho, Wo], align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def crop_mask(mask: np.ndarray, windows: np.ndarray, size_hw) -> np.ndarray:
    """A whole-image mask (H, W) in [0, 1] cut into each zoom window (B, 4: x0, y0, w, h) at (h, w): (B, h, w)."""
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    B = len(windows)
    h, w = (int(v) for v in size_hw)
    out = crop_images(m.expand(B, 1, *m.shape[-2:]), torch.as_tensor(np.asarray(windows), dtype=torch.float32),
                      (w, h))
    return out[:, 0].numpy()


__all__ = ["zoom_window", "crop_intrinsics", "crop_affine_theta", "crop_images", "crop_mask"]
