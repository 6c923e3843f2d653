"""From a detection box to a full pose with a trained AAE (Sundermeyer et al. 2018, section 3.6).

Rotation: the codebook entry whose code is nearest to the crop's (cosine similarity).
Translation from the box, as the paper does:
- depth  z = d_render * (s_render / s_obs) * (f_obs / f_render), with s the larger side of the tight
  box (the codebook stores s_render per entry) and d_render the codebook's render distance;
- x, y: the object origin's pixel is the observed box centre plus the entry's offset (origin minus
  tight-box centre, in render pixels) scaled by s_obs / s_render, back-projected at depth z.
Perspective correction: the codebook views are rendered on the optical axis, but a detection off the
axis is seen along the ray through it. The crop then shows the view a camera turned towards the
object would see, so the rotation is corrected by the smallest rotation that takes the optical axis
onto that ray: R = R_ray @ R_codebook.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from posekit.estimate.types import PoseEstimate
from posekit.geometry.camera import Camera
from posekit.render.views import align_optical_axis


def translation_from_boxes(boxes_xywh: np.ndarray, camera: Camera, box_size: np.ndarray, box_offset: np.ndarray,
                           distance: float, K_render: np.ndarray) -> np.ndarray:
    """(B, 3) translations (mm) from observed BOP boxes (B, 4) and codebook entries' box size (B,) / offset (B, 2)."""
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


@torch.no_grad()
def estimate_poses(workspace, image: np.ndarray, camera: Camera, boxes_xywh, obj_id: int,
                   top_k: int = 1, correct_perspective: bool = True) -> list[list[PoseEstimate]]:
    """Top-k pose hypotheses per box: one list of ``top_k`` PoseEstimates (best first) for each box.

    ``image`` (H, W, 3) uint8; boxes (B, 4) BOP [x, y, w, h]. Scores are cosine similarities.
    Timings (s) per stage are recorded on every estimate: crop, encode, lookup, translation.
    """
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    book = workspace.codebook
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    img = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)[None]
    crops, _ = workspace.crop(img.expand(len(boxes), -1, -1, -1), boxes)
    t1 = time.perf_counter()
    codes = workspace.encode(crops)
    t2 = time.perf_counter()
    idx, sims = workspace.lookup(codes, top_k)
    idx, sims = idx.cpu().numpy(), sims.cpu().numpy()
    t3 = time.perf_counter()
    flat = idx.reshape(-1)
    t = translation_from_boxes(np.repeat(boxes, idx.shape[1], axis=0), camera, book.box_size[flat],
                               book.box_offset[flat], book.distance, book.K)
    R = book.rotations[flat]
    if correct_perspective:
        R = align_optical_axis(t) @ R
    t4 = time.perf_counter()
    timings.update(crop=t1 - t0, encode=t2 - t1, lookup=t3 - t2, translation=t4 - t3)
    per_box = (t4 - t0) / max(len(boxes), 1)
    out: list[list[PoseEstimate]] = []
    k = idx.shape[1]
    for i in range(len(boxes)):
        out.append([
            PoseEstimate(obj_id=obj_id, R=R[i * k + j], t=t[i * k + j], score=float(sims[i, j]), time=per_box,
                         timings=dict(timings))
            for j in range(k)
        ])
    return out
