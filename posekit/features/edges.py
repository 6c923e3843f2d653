"""Image-edge evidence for a pose: how well a rendered outline runs along the image's own edges.

Used by the DeepIM refiner's ``--score edges`` and the feature search's depth sweep (``depth_score="edges"``);
classical gradient-orientation matching (as LINE-MOD's templates), so it needs no training and has no
sim-to-real gap.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x/y Sobel derivatives of (B, 1, H, W), replicate-padded."""
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype) / 8.0
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(xp, k.view(1, 1, 3, 3)), F.conv2d(xp, k.t().reshape(1, 1, 3, 3))


def contour_edge_agreement(observed: torch.Tensor, rendered_mask: torch.Tensor, edge_scale: float = 0.05) -> np.ndarray:
    """(B,) in [0, 1]: mean over the rendered silhouette's contour of |cos| between the contour normal and the
    image gradient, weighted by the gradient's strength (saturating at ``edge_scale`` per pixel).

    observed (B, 3, H, W) in [0, 1]; rendered_mask (B, 1, H, W). A pose whose outline runs along the object's
    real outline scores high; one that cuts across texture or background scores low. Classical
    gradient-orientation matching (as LINE-MOD's templates), so it needs no training.
    """
    gray = observed.mean(1, keepdim=True)
    gx, gy = _sobel(gray)
    mx, my = _sobel(rendered_mask.float())
    w = torch.sqrt(mx * mx + my * my)
    g = torch.sqrt(gx * gx + gy * gy)
    cos = (gx * mx + gy * my).abs() / (g * w).clamp_min(1e-8)
    strength = (g / edge_scale).clamp(max=1.0)
    num = (w * cos * strength).flatten(1).sum(1)
    return (num / w.flatten(1).sum(1).clamp_min(1e-8)).double().cpu().numpy()


__all__ = ["contour_edge_agreement"]
