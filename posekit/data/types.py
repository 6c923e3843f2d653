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
    failed: str | None = None  # why the pose is not a pose (e.g. behind the camera): see estimate.pipeline.pose_problem
    reliable: bool | None = None  # score at or above its method's measured threshold (None: no threshold measured)

    def __post_init__(self) -> None:
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)

    @property
    def T(self) -> np.ndarray:
        """4x4 model-to-camera transform (t in mm)."""
        from posekit.geometry.transforms import to_matrix4

        return to_matrix4(self.R, self.t)


@dataclass
class RefineRun:
    """Poses after each iteration and what they cost.

    R (iters + 1, B, 3, 3), t (iters + 1, B, 3) mm; index 0 holds the initial poses.
    times / render_times / network_times (iters,): seconds of each iteration for the whole batch.
    mask_probs (B, h, w): the network's observed visible mask of the last iteration, in the crop
    ``windows`` (B, 4) (x0, y0, w, h, image pixels) whose intrinsics are ``K_crops`` (B, 3, 3).
    """

    R: np.ndarray
    t: np.ndarray
    times: list[float] = field(default_factory=list)
    render_times: list[float] = field(default_factory=list)
    network_times: list[float] = field(default_factory=list)
    mask_probs: np.ndarray | None = None
    windows: np.ndarray | None = None
    K_crops: np.ndarray | None = None
    scores: np.ndarray | None = None  # (iters + 1, B) agreement of each iterate with the image (``score=``)
    depth_scales: np.ndarray | None = None  # (B,) the feature search's last depth sweep: depth after / before (1: kept)
    depth_time: float = 0.0  # seconds of that sweep (inside the last iteration's time)

    @classmethod
    def start(cls, n_objects: int, R, t, iters: int) -> RefineRun:
        """An empty run of ``iters`` iterations from poses R (B, 3, 3), t (B, 3) mm, checked: one pose per object,
        objects in front of the camera, ``iters`` >= 0 (what every refiner checks first)."""
        from posekit.errors import InputError

        if iters < 0:
            raise InputError(f"--iters must be >= 0, got {iters}")
        R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
        t = np.asarray(t, dtype=np.float64).reshape(-1, 3)
        B = len(R)
        if n_objects != B or len(t) != B:
            raise ValueError(f"refine: {n_objects} objects, {len(R)} rotations and {len(t)} translations")
        if B and np.any(t[:, 2] <= 0):
            raise InputError("refine: initial poses must put the objects in front of the camera (t_z > 0)")
        run = cls(R=np.empty((iters + 1, B, 3, 3)), t=np.empty((iters + 1, B, 3)))
        run.R[0], run.t[0] = R, t
        return run

    @property
    def best(self) -> np.ndarray:
        """(B,) index of the iterate to keep: the best-scored one when scored, else the last."""
        if self.scores is None:
            return np.full(self.R.shape[1], len(self.R) - 1, dtype=np.int64)
        return np.argmax(self.scores, axis=0)

    @property
    def final(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept poses (B, 3, 3), (B, 3): the best-scored iterate per detection, or the last iteration's."""
        b = self.best
        i = np.arange(self.R.shape[1])
        return self.R[b, i], self.t[b, i]

    def history(self, i: int) -> list[dict]:
        """Detection ``i``'s pose after each iteration, JSON-ready (``PoseEstimate.history`` entries)."""
        out = []
        for k in range(len(self.R)):
            e = {"iteration": k, "R": self.R[k, i].reshape(-1).tolist(), "t": self.t[k, i].tolist()}
            if k > 0:
                e["time"] = float(self.times[k - 1])
            out.append(e)
        return out
