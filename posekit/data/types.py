"""Typed containers that flow between estimation stages."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from posekit.geometry.camera import Camera


@dataclass
class Observation:
    """One RGB image (H, W, 3 uint8) with its camera and, optionally, a box (x, y, w, h) and the object's mask
    (H, W) in [0, 1] (the silhouette polish's target where given)."""

    image: np.ndarray
    camera: Camera
    bbox: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None


@dataclass
class PoseEstimate:
    """A pose hypothesis: model-to-camera R (3x3) and t (3,) in mm, with a score and per-stage times (s)."""

    obj_id: int
    R: np.ndarray
    t: np.ndarray
    score: float = 1.0
    scene_id: int | None = None
    im_id: int | None = None
    time: float = -1.0
    timings: dict[str, float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)

    @property
    def T(self) -> np.ndarray:
        """4x4 model-to-camera transform (t in mm)."""
        from posekit.geometry.transforms import to_matrix4

        return to_matrix4(self.R, self.t)
