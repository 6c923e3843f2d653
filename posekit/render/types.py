"""Typed containers shared by the renderers (pyrender ``gl`` and PyTorch3D ``diff``) and the dataset generator.

Everything is in the OpenCV camera frame (x right, y down, z forward) and in millimetres,
like the rest of posekit; conversion to OpenGL happens inside the renderers only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from posekit.cad.model import ObjectModel

#: Reference distance (mm) of the point/spot light intensity scale: a light of ``intensity`` 1.0
#: lights a white surface facing it at this distance to full white (before ambient).
LIGHT_REFERENCE_DISTANCE_MM = 1000.0


@dataclass
class Light:
    """A light in the OpenCV camera frame (mm).

    ``intensity`` scale (the renderer converts to pyrender's units):
      * directional: 1.0 lights a white surface facing the light to full white;
      * point / spot: fall off with distance^2; 1.0 gives full white on a facing white
        surface at ``LIGHT_REFERENCE_DISTANCE_MM`` (1 m), 4.0 at 2 m, 0.25 at 0.5 m.
    ``direction`` is where the light shines to (camera frame), used by directional and spot lights.
    ``inner_cone`` / ``outer_cone`` (radians) shape spot lights.
    """

    kind: str = "point"  # "point" | "directional" | "spot"
    color: tuple = (1.0, 1.0, 1.0)
    intensity: float = 1.0
    position: tuple = (0.0, 0.0, 0.0)
    direction: tuple = (0.0, 0.0, 1.0)
    inner_cone: float = 0.0
    outer_cone: float = float(np.pi / 4.0)

    def __post_init__(self) -> None:
        if self.kind not in ("point", "directional", "spot"):
            raise ValueError(f"light kind must be 'point', 'directional' or 'spot', got {self.kind!r}")


@dataclass
class RenderObject:
    """One object instance to render: its model, model-to-camera pose (mm) and material.

    ``color``: RGB in [0, 1] (sRGB, like vertex colours) of a plain material overriding the
    model's vertex colours; None -> the vertex colours where the model has them, else grey.
    ``metallic`` / ``roughness``: PBR material parameters (domain-randomisation hooks).
    """

    model: ObjectModel
    R: np.ndarray
    t: np.ndarray
    color: tuple | None = None
    metallic: float = 0.0
    roughness: float = 0.8

    def __post_init__(self) -> None:
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)


@dataclass
class RenderResult:
    """What a render returns.

    rgb: (H, W, 3) uint8.
    depth: (H, W) float32, camera z in mm, 0 where no object.
    masks: per object (in the order given) its full silhouette ignoring the others, bool (H, W).
    masks_visib: per object its visible part, bool (H, W).
    labels: (H, W) int32 instance map, index into the objects + 1, 0 = background.
    camera: the camera rendered with (for ``render_crop``: the crop's camera).
    """

    rgb: np.ndarray
    depth: np.ndarray
    masks: list[np.ndarray] = field(default_factory=list)
    masks_visib: list[np.ndarray] = field(default_factory=list)
    labels: np.ndarray | None = None
    camera: object | None = None

    def visib_fract(self) -> list[float]:
        """Per object: visible pixels / silhouette pixels (BOP's visib_fract; 0 where the silhouette is empty)."""
        out = []
        for m, v in zip(self.masks, self.masks_visib, strict=True):
            n = int(m.sum())
            out.append(float(v.sum()) / n if n else 0.0)
        return out
