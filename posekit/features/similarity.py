"""The masked feature similarity: per-cell cosine between two feature maps, averaged under a mask.

For a query map q (C, h, w) and a reference map r (C, h, w) with mask weights m (h, w) (the share of
each cell that the rendered object covers), the similarity is

    sim(q, r) = sum_cells m * <q / |q|, r / |r|>  /  sum_cells m        (in [-1, 1])

Cells outside the object do not count, so the background of a real photo is ignored where the
render has none. Folding ``m / sum(m)`` into the normalised reference turns the comparison of B
queries with N references into one (B, C h w) x (C h w, N) matrix product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cell_normalise(f: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(N, C, h, w) maps with every cell's C-vector scaled to unit length (cells of zeros stay zero)."""
    return f / f.norm(dim=1, keepdim=True).clamp_min(eps)


def mask_weights(mask: torch.Tensor, stride: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, h, w) share of each feature cell covered by a (N, 1, H, W) mask in [0, 1] (average pool by ``stride``)."""
    w = F.avg_pool2d(mask.float(), stride)
    if size is not None and tuple(w.shape[-2:]) != tuple(size):
        w = F.interpolate(w, size=size, mode="area")
    return w[:, 0]


def fold_references(features: torch.Tensor, weights: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(N, C h w) references ready for :func:`similarity_matrix`: cell-normalised maps times m / sum(m)."""
    w = weights / weights.flatten(1).sum(1).clamp_min(eps)[:, None, None]
    # in place on one float32 copy: the same numbers as cell_normalise(...) * w, with two fewer passes over the
    # (N, C, h, w) maps (what opening a workspace of thousands of templates costs at start-up)
    x = features.to(torch.float32, copy=True)
    return x.div_(x.norm(dim=1, keepdim=True).clamp_min(eps)).mul_(w[:, None]).flatten(1)


def similarity_matrix(queries: torch.Tensor, folded: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """(B, N) masked similarities of (B, C, h, w) query maps with N folded references (C h w each)."""
    q = cell_normalise(queries.float()).flatten(1).to(folded.dtype)
    return torch.cat([q @ folded[i : i + chunk].T for i in range(0, folded.shape[0], chunk)], dim=1)


def paired_similarity(queries: torch.Tensor, references: torch.Tensor, weights: torch.Tensor,
                      eps: float = 1e-6) -> torch.Tensor:
    """(B,) masked similarity of each query map with its own reference map (B, C, h, w) under weights (B, h, w).

    Differentiable in both maps (the feature-metric refinement descends it).
    """
    cos = (cell_normalise(queries, eps) * cell_normalise(references, eps)).sum(1)  # (B, h, w)
    return (cos * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(eps)


def union_similarity(queries: torch.Tensor, references: torch.Tensor, weights: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) masked similarity of each of B query maps with its n references, all under the union of its n masks.

    queries (B, C, h, w); references (B n, C, h, w) and weights (B n, h, w), query-major. Scoring n poses of one
    object under their common mask keeps a smaller render from winning by covering fewer cells (with each
    render's own mask the feature search preferred smaller renders on real crops).
    """
    B = queries.shape[0]
    union = weights.view(B, n, *weights.shape[-2:]).amax(1, keepdim=True).expand(-1, n, -1, -1).reshape_as(weights)
    return paired_similarity(queries.repeat_interleave(n, dim=0), references, union).view(B, n)


def local_correlation(a: torch.Tensor, b: torch.Tensor, radius: int, eps: float = 1e-6) -> torch.Tensor:
    """(B, (2r+1)^2, h, w) cosine of each cell of ``a`` with the cells of ``b`` within ``radius`` of it.

    Channel ``(dy + r) * (2r+1) + (dx + r)`` holds cos(a[y, x], b[y + dy, x + dx]) (0 where that cell lies
    outside the map), the cost volume of flow networks (PWC-Net, RAFT) over (B, C, h, w) maps. Only
    directions are compared, so a map's overall strength (a real photo's texture against a flat-shaded
    render) does not enter it.
    """
    k = 2 * radius + 1
    B, C, h, w = a.shape
    bn = F.unfold(cell_normalise(b, eps), k, padding=radius).view(B, C, k * k, h, w)
    return (cell_normalise(a, eps).unsqueeze(2) * bn).sum(1)
