"""Image-edge evidence for a pose: how well a rendered outline runs along the image's own edges.

Used by the DeepIM refiner's ``--score edges`` and the feature search's depth sweep (``depth_score="edges"``);
classical gradient-orientation matching (as LINE-MOD's templates), so it needs no training and has no
sim-to-real gap.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x/y Sobel derivatives of (B, 1, H, W), replicate-padded."""
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype) / 8.0
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(xp, k.view(1, 1, 3, 3)), F.conv2d(xp, k.t().reshape(1, 1, 3, 3))


def contour_edge_agreement(observed: torch.Tensor, rendered_mask: torch.Tensor, edge_scale: float = 0.05,
                            spread: int = 0) -> np.ndarray:
    """(B,) in [0, 1]: mean over the rendered silhouette's contour of |cos| between the contour normal and the
    image gradient, weighted by the gradient's strength (saturating at ``edge_scale`` per pixel).

    observed (B, 3, H, W) in [0, 1]; rendered_mask (B, 1, H, W). A pose whose outline runs along the object's
    real outline scores high; one that cuts across texture or background scores low. Classical
    gradient-orientation matching (as LINE-MOD's templates), so it needs no training. ``spread`` > 0: an image
    edge counts within ``spread`` pixels of the outline (the best within that distance, per orientation, as
    LINE-MOD spreads its orientations), so that a hypothesis a pixel or two off is not scored as a miss.
    """
    gray = observed.mean(1, keepdim=True)
    gx, gy = _sobel(gray)
    mx, my = _sobel(rendered_mask.float())
    w = torch.sqrt(mx * mx + my * my)
    g = torch.sqrt(gx * gx + gy * gy)
    strength = (g / edge_scale).clamp(max=1.0)
    if spread <= 0:
        cos = (gx * mx + gy * my).abs() / (g * w).clamp_min(1e-8)
        num = (w * cos * strength).flatten(1).sum(1)
        return (num / w.flatten(1).sum(1).clamp_min(1e-8)).double().cpu().numpy()
    # 8 orientations over half a turn: the image's evidence for each, spread by a max filter, read at each contour
    # pixel in the orientation of its normal (interpolated between the two nearest)
    bins = 8
    phi = torch.arange(bins, device=g.device, dtype=g.dtype) * (math.pi / bins)
    c, s = torch.cos(phi).view(1, bins, 1, 1), torch.sin(phi).view(1, bins, 1, 1)
    ev = (gx * c + gy * s).abs() / g.clamp_min(1e-8) * strength  # (B, bins, H, W)
    ev = F.max_pool2d(ev, 2 * spread + 1, 1, spread)
    theta = torch.atan2(my, mx) % math.pi  # (B, 1, H, W) normal orientation in [0, pi)
    pos = theta / (math.pi / bins)
    lo = pos.floor().long() % bins
    frac = pos - pos.floor()
    e = torch.gather(ev, 1, lo) * (1 - frac) + torch.gather(ev, 1, (lo + 1) % bins) * frac
    num = (w * e).flatten(1).sum(1)
    return (num / w.flatten(1).sum(1).clamp_min(1e-8)).double().cpu().numpy()


__all__ = ["contour_edge_agreement"]
