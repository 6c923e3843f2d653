"""The AAE's crop convention, written once and used for the training cache, the codebook and test images.

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


def window_theta(windows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 2, 3) ``affine_grid`` matrices that sample the windows (B, 4) = (x0, y0, side_x, side_y) of an image."""
    w = windows.to(torch.float32)
    theta = torch.zeros(w.shape[0], 2, 3, device=w.device)
    theta[:, 0, 0] = w[:, 2] / width
    theta[:, 1, 1] = w[:, 3] / height
    theta[:, 0, 2] = (2 * w[:, 0] + w[:, 2]) / width - 1
    theta[:, 1, 2] = (2 * w[:, 1] + w[:, 3]) / height - 1
    return theta


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
    h, w = images.shape[-2:]
    theta = window_theta(torch.as_tensor(windows, device=images.device), h, w)
    ratio = float(windows[:, 2].max()) / size if len(windows) else 1.0
    return sample_windows(images, theta, size, supersample=max(1, math.ceil(ratio))), windows


def rotated_crops(
    images: torch.Tensor, masks: torch.Tensor, angles: torch.Tensor, size: int, pad: float = DEFAULT_PAD,
    extra: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Rotate centred renders in-plane and crop them by the AAE convention, in one resampling.

    For an object rendered centred with fx = fy and the principal point at the image centre, turning
    the object by ``angle`` about the optical axis (R' = Rz(angle) R) turns its image by the same
    angle about the centre, exactly. The tight box of the turned image is found by turning the
    mask's pixel centres; the square window around it is cut with one ``grid_sample``.

    images (B, 3, H, H), masks (B, 1, H, H) float, angles (B,) radians, extra (B, C, H, H) sampled along.
    Returns (crops (B, 3, S, S), crop masks (B, 1, S, S), extra crops or None,
    tight-box sides max(w, h) (B,) in render pixels, offset (B, 2) of the image centre (where the
    object's origin projects) from the tight-box centre, in render pixels).
    """
    B, _, H, W = images.shape
    if H != W:
        raise ValueError("rotated_crops needs square renders")
    dev = images.device
    c = (W - 1) / 2.0
    cos, sin = torch.cos(angles.float()), torch.sin(angles.float())
    sides = torch.zeros(B, device=dev)
    centres = torch.zeros(B, 2, device=dev)
    for i in range(B):  # a box per image from its mask pixels (few thousand points each)
        ys, xs = torch.nonzero(masks[i, 0] > 0.5, as_tuple=True)
        if len(xs) == 0:
            sides[i] = 1.0
            continue
        dx, dy = xs.float() - c, ys.float() - c
        rx, ry = cos[i] * dx - sin[i] * dy, sin[i] * dx + cos[i] * dy
        x0, x1 = rx.min() - 0.5, rx.max() + 0.5
        y0, y1 = ry.min() - 0.5, ry.max() + 0.5
        sides[i] = torch.maximum(x1 - x0, y1 - y0)
        centres[i, 0], centres[i, 1] = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    half = pad * sides / 2.0  # window half-side, pixels
    # Output normalised coords q in [-1, 1] -> rotated-image offset p' = centre + q * half ->
    # source offset p = Rot(-angle) p' -> source normalised coords p / (W / 2).
    s = 2.0 / W
    theta = torch.zeros(B, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1] = cos * half * s, sin * half * s
    theta[:, 1, 0], theta[:, 1, 1] = -sin * half * s, cos * half * s
    theta[:, 0, 2] = (cos * centres[:, 0] + sin * centres[:, 1]) * s
    theta[:, 1, 2] = (-sin * centres[:, 0] + cos * centres[:, 1]) * s
    k = max(1, math.ceil(float((2 * half).max()) / size))
    stack = torch.cat([images, masks] + ([extra] if extra is not None else []), dim=1)
    out = sample_windows(stack, theta, size, supersample=k)
    crops, cmask = out[:, :3], out[:, 3:4]
    ext = out[:, 4:] if extra is not None else None
    return crops, cmask, ext, sides, -centres
