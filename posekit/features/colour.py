"""Colour evidence for a pose: does the photo under a rendered silhouette have the part's colours?

Compares hue-saturation histograms (with the unsaturated pixels in grey-level bins), so that shading and the
exposure of the photo move the score little; the part's colours come from its model (vertex colours or texture
as rendered). No training; used by the template detector to rank its candidates.
"""

from __future__ import annotations

import numpy as np
import torch


def _hs_bins(rgb: torch.Tensor, hues: int, sats: int, greys: int, grey_sat: float) -> torch.Tensor:
    """(B, H, W) bin index of each pixel of (B, 3, H, W) rgb in [0, 1]: ``hues`` x ``sats`` colour bins for pixels
    saturated at least ``grey_sat``, ``greys`` bins of value for the others."""
    mx, _ = rgb.max(1)
    mn, _ = rgb.min(1)
    delta = mx - mn
    sat = delta / mx.clamp_min(1e-6)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    d = delta.clamp_min(1e-6)
    h = torch.where(mx == r, ((g - b) / d) % 6, torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) / 6.0
    hb = (h * hues).long().clamp(0, hues - 1)
    sb = ((sat - grey_sat) / (1 - grey_sat) * sats).long().clamp(0, sats - 1)
    vb = (mx * greys).long().clamp(0, greys - 1)
    return torch.where(sat >= grey_sat, hb * sats + sb, hues * sats + vb)


def colour_agreement(observed: torch.Tensor, rendered: torch.Tensor, mask: torch.Tensor, hues: int = 12,
                     sats: int = 3, greys: int = 4, grey_sat: float = 0.2) -> np.ndarray:
    """(B,) in [0, 1]: the Bhattacharyya coefficient between the colour histograms of the photo and of the render
    under the render's mask (observed, rendered (B, 3, H, W) in [0, 1]; mask (B, 1, H, W), weights in [0, 1]).
    1: the same colours in the same shares; 0: none in common. A part with no colours (a grey STL) compares
    grey levels only, which says little: its callers weigh it accordingly."""
    a = _histograms(observed, mask, hues, sats, greys, grey_sat)
    b = _histograms(rendered, mask, hues, sats, greys, grey_sat)
    return torch.sqrt(a * b).sum(1).double().cpu().numpy()


def _histograms(rgb: torch.Tensor, weights: torch.Tensor, hues: int, sats: int, greys: int,
                grey_sat: float) -> torch.Tensor:
    """(B, bins) normalised colour histograms of (B, 3, H, W) rgb with per-pixel weights (B, 1, H, W)."""
    n = hues * sats + greys
    idx = _hs_bins(rgb.float(), hues, sats, greys, grey_sat).flatten(1)
    hist = torch.zeros(len(idx), n, dtype=torch.float32, device=idx.device).scatter_add_(
        1, idx, weights[:, 0].flatten(1).float())
    return hist / hist.sum(1, keepdim=True).clamp_min(1e-8)


__all__ = ["colour_agreement"]
