"""What the view-based coarse methods (AAE codebook, templates) share: from retrieved view entries to poses.

Each method crops the observed boxes by the square box-crop convention, scores every stored view
entry against each crop (code cosine for the AAE, masked feature similarity for templates) and keeps
the top k. :func:`poses_from_entries` turns those entries into full poses the same way for both
(Sundermeyer et al. 2018, section 3.6):

- translation from the box: depth from the ratio of the entry's tight-box side to the observed
  one, x and y from the box centre plus the entry's offset (:func:`translation_from_boxes`);
- perspective correction: the entries are rendered on the optical axis, but a box off the axis is
  seen along the ray through it, so ``R = R_ray @ R_entry`` with R_ray the smallest rotation that
  takes the optical axis onto the ray (:func:`posekit.render.views.align_optical_axis`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from posekit.cad.model import ObjectModel
from posekit.data.types import PoseEstimate
from posekit.geometry.camera import Camera
from posekit.render.views import align_optical_axis


@dataclass
class ViewEntries:
    """The stored views of a method: rotations (N, 3, 3), tight-box side (N,) and offset (N, 2) in render
    pixels of camera ``K`` at ``distance`` mm."""

    rotations: np.ndarray
    box_size: np.ndarray
    box_offset: np.ndarray
    distance: float
    K: np.ndarray


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) float of an image: (H, W, 3[+]) or grey (H, W); uint8 scaled to [0, 1], floats kept as they are
    (copied: the input may be read-only)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    x = torch.from_numpy(np.array(a[..., :3], copy=True)).permute(2, 0, 1).float()
    return (x / 255.0 if a.dtype == np.uint8 else x)[None]


def translation_from_boxes(boxes_xywh: np.ndarray, camera: Camera, box_size: np.ndarray, box_offset: np.ndarray,
                           distance: float, K_render: np.ndarray) -> np.ndarray:
    """(B, 3) translations (mm) from observed BOP boxes (B, 4) and entries' box size (B,) / offset (B, 2).

    depth z = distance * (box_size / s_obs) * (f_obs / f_render) with s the larger side of the box;
    the origin's pixel is the box centre plus the offset scaled by s_obs / box_size, back-projected at z.
    """
    b = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    K = camera.K
    f_obs = 0.5 * (K[0, 0] + K[1, 1])
    f_render = 0.5 * (K_render[0, 0] + K_render[1, 1])
    s_obs = np.maximum(b[:, 2], b[:, 3])
    z = distance * (np.asarray(box_size) / s_obs) * (f_obs / f_render)
    scale = (s_obs / np.asarray(box_size))[:, None]
    centre = np.stack([b[:, 0] + 0.5 * b[:, 2] - 0.5, b[:, 1] + 0.5 * b[:, 3] - 0.5], axis=1)
    uv = centre + np.asarray(box_offset).reshape(-1, 2) * scale
    x = (uv[:, 0] - K[0, 2]) * z / K[0, 0]
    y = (uv[:, 1] - K[1, 2]) * z / K[1, 1]
    return np.stack([x, y, z], axis=1)


def poses_from_entries(entries: ViewEntries, boxes_xywh: np.ndarray, camera: Camera, idx: np.ndarray,
                       scores: np.ndarray, obj_id: int, correct_perspective: bool = True,
                       timings: dict[str, float] | None = None, time_per_box: float = -1.0) -> list[list[PoseEstimate]]:
    """One list of k PoseEstimates (best first) per box from the top-k entry indices (B, k) and their scores."""
    start = time.perf_counter()
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    idx = np.asarray(idx).reshape(len(boxes), -1)
    k = idx.shape[1]
    flat = idx.reshape(-1)
    t = translation_from_boxes(np.repeat(boxes, k, axis=0), camera, entries.box_size[flat], entries.box_offset[flat],
                               entries.distance, entries.K)
    R = entries.rotations[flat]
    if correct_perspective:
        R = align_optical_axis(t) @ R
    timings = {**(timings or {}), "translation": time.perf_counter() - start}
    return [[PoseEstimate(obj_id=obj_id, R=R[i * k + j], t=t[i * k + j], score=float(scores[i, j]),
                          time=time_per_box, timings=dict(timings)) for j in range(k)]
            for i in range(len(boxes))]


def center_hint(config: dict, model: ObjectModel) -> str:
    """' (made with --center ...)' where the workspace and the model differ only in re-centring, else ''."""
    made = bool(config.get("object", {}).get("centered", False))
    now = model.center_shift is not None
    if made == now:
        return ""
    return " (the workspace was made with --center: pass it here too)" if made else \
        " (the workspace was made without --center: leave it out)"
