"""From a detection box to a full pose with a trained AAE (Sundermeyer et al. 2018, section 3.6).

Rotation: the codebook entry whose code is nearest to the crop's (cosine similarity); translation
from the box and the perspective correction as every view-based method does
(:mod:`posekit.methods.viewbased`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from posekit.data.types import PoseEstimate
from posekit.geometry.camera import Camera
from posekit.methods.viewbased import ViewEntries, image_tensor, poses_from_entries


@torch.no_grad()
def estimate_poses(workspace, image: np.ndarray, camera: Camera, boxes_xywh, obj_id: int,
                   top_k: int = 1, correct_perspective: bool = True) -> list[list[PoseEstimate]]:
    """Top-k pose hypotheses per box: one list of ``top_k`` PoseEstimates (best first) for each box.

    ``image`` (H, W, 3) uint8; boxes (B, 4) BOP [x, y, w, h]. Scores are cosine similarities.
    Timings (s) per stage are recorded on every estimate: crop, encode, lookup.
    """
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    book = workspace.codebook
    t0 = time.perf_counter()
    crops, _ = workspace.crop(image_tensor(image).expand(len(boxes), -1, -1, -1), boxes)
    t1 = time.perf_counter()
    codes = workspace.encode(crops)
    t2 = time.perf_counter()
    idx, sims = workspace.lookup(codes, top_k)
    t3 = time.perf_counter()
    entries = ViewEntries(book.rotations, book.box_size, book.box_offset, book.distance, book.K)
    return poses_from_entries(entries, boxes, camera, idx.cpu().numpy(), sims.cpu().numpy(), obj_id,
                              correct_perspective, dict(crop=t1 - t0, encode=t2 - t1, lookup=t3 - t2),
                              (t3 - t0) / max(len(boxes), 1))
