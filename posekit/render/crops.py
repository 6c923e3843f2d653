"""Rendering objects straight into crop cameras: what every render-and-compare stage (the DeepIM refiner, the
feature refinement) draws each iteration."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from posekit.cad.model import ObjectModel
from posekit.geometry.camera import Camera


def render_in_crops(renderer, models: Sequence[ObjectModel], obj_index, R, t, K_crops,
                    size: tuple[int, int], coverage: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``models[obj_index[b]]`` at (R[b], t[b]) seen by crop camera K_crops[b]: rgb (B, 3, H, W) and
    mask (B, 1, H, W), both in [0, 1].

    ``renderer`` is a pyrender :class:`~posekit.render.gl.OffscreenRenderer` of ``size`` (one render per
    crop; fast on CPU) or a :class:`~posekit.render.diff.DiffRenderer` built over ``models`` with image_size
    ``size`` (one batched call; the CUDA choice). ``coverage``: with pyrender, the mask is the colour pass's
    fractional coverage (one pass per crop instead of two: what scoring by pooled features needs; the
    default is the binary mask at pixel centres of a second, SEG pass).
    """
    from posekit.render.diff import DiffRenderer

    W, H = size
    if isinstance(renderer, DiffRenderer):
        out = renderer.render(torch.as_tensor(np.asarray(R)), torch.as_tensor(np.asarray(t)),
                              torch.as_tensor(np.asarray(K_crops)), torch.as_tensor(np.asarray(obj_index)),
                              modes=("silhouette", "rgb"))
        return out["rgb"].permute(0, 3, 1, 2), out["silhouette"][:, None]
    from posekit.render.types import RenderObject

    rgbs, masks = [], []
    for i, Rb, tb, Kb in zip(np.asarray(obj_index), np.asarray(R), np.asarray(t), np.asarray(K_crops), strict=True):
        objects = [RenderObject(models[int(i)], Rb, tb)]
        if coverage:
            rgb, mask = renderer.render_coverage(Camera(Kb, W, H), objects)
        else:
            res = renderer.render(Camera(Kb, W, H), objects, with_masks=False)
            rgb, mask = res.rgb, res.labels > 0
        rgbs.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0)
        masks.append(torch.from_numpy(mask)[None].float())
    return torch.stack(rgbs), torch.stack(masks)
