"""The square box-crop convention of the view-based methods (AAE, templates): one definition for their
clean renders, their codebooks / template sets and the test images.

A crop is the object's tight box made square about its centre, enlarged by ``pad`` (1.2 by
default) and resized to S x S. Boxes are BOP boxes [x, y, w, h] (x, y of the top-left pixel, so
the box spans x - 0.5 ... x + w - 0.5 in continuous pixel coordinates). A crop *window* is
(x0, y0, side, side) in the same convention as :func:`posekit.geometry.camera.crop_K`, so the K of
a crop is ``crop_K(K, window, (S, S))``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from posekit.geometry.crop import crop_affine_theta

DEFAULT_PAD = 1.2


def square_window(box_xywh, pad: float = DEFAULT_PAD) -> np.ndarray:
    """(..., 4) square crop windows (x0, y0, side, side): the box's centre, side = pad * max(w, h)."""
    b = np.asarray(box_xywh, dtype=np.float64)
    cx = b[..., 0] + 0.5 * b[..., 2]
    cy = b[..., 1] + 0.5 * b[..., 3]
    side = pad * np.maximum(b[..., 2], b[..., 3])
    return np.stack([cx - 0.5 * side, cy - 0.5 * side, side, side], axis=-1)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """BOP box [x, y, w, h] of a boolean (H, W) mask; [0, 0, 0, 0] when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros(4)
    return np.array([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1], dtype=np.float64)


def sample_windows(images: torch.Tensor, theta: torch.Tensor, size: int, supersample: int = 1,
                   mode: str = "bilinear") -> torch.Tensor:
    """Resample (B, C, H, W) images through ``theta`` to (B, C, size, size); zeros outside.

    ``supersample`` k > 1 samples at k*size and average-pools by k, which keeps a strong
    downscale (a 200-pixel box to 64 pixels) from aliasing.
    """
    k = max(1, int(supersample))
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size * k, size * k], align_corners=False)
    out = F.grid_sample(images, grid.to(images.dtype), mode=mode, padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(out, k) if k > 1 else out


def crop_boxes(images: torch.Tensor, boxes_xywh, size: int, pad: float = DEFAULT_PAD) -> tuple[torch.Tensor, np.ndarray]:
    """Crop (B, C, H, W) images at BOP boxes (B, 4) by the AAE convention; returns (crops (B, C, S, S), windows).

    Use it on test images with the detector's (or ground-truth) boxes; the windows (B, 4) give each
    crop's K through ``crop_K``.
    """
    windows = square_window(np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4), pad)
    return crop_windows(images, windows, size), windows


def crop_windows(images: torch.Tensor, windows, size: int) -> torch.Tensor:
    """(B, C, S, S) crops of (B, C, H, W) images at square windows (B, 4) = (x0, y0, side, side), supersampled
    where a window is larger than S (so a strong downscale does not alias)."""
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 4)
    h, w = images.shape[-2:]
    theta = crop_affine_theta(torch.as_tensor(windows, dtype=torch.float32, device=images.device), (w, h))
    ratio = float(windows[:, 2].max()) / size if len(windows) else 1.0
    return sample_windows(images, theta, size, supersample=max(1, math.ceil(ratio)))


def turned_boxes(mask: torch.Tensor, angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight boxes of a centred render's (H, W) mask turned by each of ``angles`` (A,) about the image centre.

    Returns (sides (A,) = max(w, h), centres (A, 2) relative to the image centre), in pixels; the
    box of a turn is the extent of the turned pixel centres +- half a pixel.
    """
    H, W = mask.shape[-2:]
    ys, xs = torch.nonzero(mask.reshape(H, W) > 0.5, as_tuple=True)
    A = angles.shape[0]
    if len(xs) == 0:
        return torch.ones(A, device=mask.device), torch.zeros(A, 2, device=mask.device)
    dx, dy = xs.float() - (W - 1) / 2.0, ys.float() - (H - 1) / 2.0
    cos, sin = torch.cos(angles.float())[:, None], torch.sin(angles.float())[:, None]
    rx, ry = cos * dx - sin * dy, sin * dx + cos * dy  # (A, P)
    x0, x1 = rx.amin(1) - 0.5, rx.amax(1) + 0.5
    y0, y1 = ry.amin(1) - 0.5, ry.amax(1) + 0.5
    return torch.maximum(x1 - x0, y1 - y0), torch.stack([0.5 * (x0 + x1), 0.5 * (y0 + y1)], 1)


def turned_crops(
    image: torch.Tensor, mask: torch.Tensor, angles: torch.Tensor, size: int, pad: float = DEFAULT_PAD,
    extra: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Turn one centred render in-plane by each of ``angles`` and crop it by the AAE convention, in one resampling.

    For an object rendered centred with fx = fy and the principal point at the image centre, turning
    the object by ``angle`` about the optical axis (R' = Rz(angle) R) turns its image by the same
    angle about the centre, exactly. The tight box of the turned image is found by turning the
    mask's pixel centres; the square window around it is cut with one ``grid_sample``.

    image (3, H, H), mask (1, H, H) float, angles (A,) radians, extra (C, H, H) sampled along.
    Returns (crops (A, 3, S, S), crop masks (A, 1, S, S), extra crops or None, tight-box sides
    max(w, h) (A,) in render pixels, offset (A, 2) of the image centre (where the object's origin
    projects) from the tight-box centre, in render pixels).
    """
    C, H, W = image.shape
    if H != W:
        raise ValueError("turned_crops needs square renders")
    A = angles.shape[0]
    sides, centres = turned_boxes(mask, angles)
    cos, sin = torch.cos(angles.float()), torch.sin(angles.float())
    half = pad * sides / 2.0  # window half-side, pixels
    # Output normalised coords q in [-1, 1] -> turned-image offset p' = centre + q * half ->
    # source offset p = Rot(-angle) p' -> source normalised coords p / (W / 2).
    s = 2.0 / W
    theta = torch.zeros(A, 2, 3, device=image.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos * half * s, sin * half * s
    theta[:, 1, 0], theta[:, 1, 1] = -sin * half * s, cos * half * s
    theta[:, 0, 2] = (cos * centres[:, 0] + sin * centres[:, 1]) * s
    theta[:, 1, 2] = (-sin * centres[:, 0] + cos * centres[:, 1]) * s
    k = max(1, math.ceil(float((2 * half).max()) / size))
    stack = torch.cat([image, mask] + ([extra] if extra is not None else []), dim=0)
    out = sample_windows(stack.unsqueeze(0).expand(A, -1, -1, -1), theta, size, supersample=k)
    ext = out[:, 4:] if extra is not None else None
    return out[:, :3], out[:, 3:4], ext, sides, -centres


def box_iou(a, b) -> float:
    """IoU of two BOP boxes [x, y, w, h]."""
    ax0, ay0, aw, ah = (float(v) for v in a)
    bx0, by0, bw, bh = (float(v) for v in b)
    iw = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    ih = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0
