"""Pinhole cameras in the OpenCV convention (x right, y down, z forward), K 3x3.

The K of a crop is what DeepIM's zoom-in and the renderers' "render straight into
a crop" need: cropping a window (x0, y0, w, h) and resizing it to (W, H) is an
affine map of pixel coordinates, so K' = S @ T @ K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Intrinsics K (3x3, pixels) and the image size (width, height) in pixels."""

    K: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        object.__setattr__(self, "K", K)
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @classmethod
    def from_fxfycxcy(cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> Camera:
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        return cls(K, width, height)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return (self.width, self.height)

    def crop(self, box_xywh, out_size: tuple[int, int]) -> Camera:
        """The camera of the window ``box_xywh`` (x0, y0, w, h in pixels) resized to ``out_size`` (W, H)."""
        return Camera(crop_K(self.K, box_xywh, out_size), out_size[0], out_size[1])


def project_points(points: np.ndarray, K: np.ndarray, R: np.ndarray | None = None, t: np.ndarray | None = None) -> np.ndarray:
    """Project (N, 3) points to (N, 2) pixels: x = K (R p + t), divided by depth.

    With R, t omitted the points are taken as already in the camera frame. Pixel
    coordinates follow OpenCV: the centre of the top-left pixel is (0, 0).
    Torch tensors go to ``project_points_torch`` (batched, differentiable).
    """
    if any(type(a).__module__.startswith("torch") for a in (points, K, R, t)):
        return project_points_torch(points, K, R, t)
    p = np.asarray(points, dtype=np.float64)
    if R is not None:
        p = p @ np.asarray(R, dtype=np.float64).T
    if t is not None:
        p = p + np.asarray(t, dtype=np.float64).reshape(1, 3)
    uvw = p @ np.asarray(K, dtype=np.float64).T
    return uvw[:, :2] / uvw[:, 2:3]


def project_points_torch(points, K, R=None, t=None):
    """Batched, differentiable projection: points (..., N, 3), K (..., 3, 3), R (..., 3, 3),
    t (..., 3) -> pixels (..., N, 2), leading dims broadcast. Numpy arguments are
    converted to the dtype/device of the first tensor argument (float64 if none).

    No depth clamping: points at or behind the camera (z <= 0) give inf / mirrored pixels,
    as in the numpy version; callers that can meet them must mask by depth.
    """
    import torch

    like = next((a for a in (points, K, R, t) if isinstance(a, torch.Tensor)), None)
    dtype = like.dtype if like is not None and like.is_floating_point() else torch.float64
    device = like.device if like is not None else None

    def conv(a):
        return None if a is None else torch.as_tensor(a, dtype=dtype, device=device)

    p, Kt, Rt, tt = conv(points), conv(K), conv(R), conv(t)
    if Rt is not None:
        p = p @ Rt.transpose(-1, -2)
    if tt is not None:
        p = p + tt[..., None, :]
    uvw = p @ Kt.transpose(-1, -2)
    return uvw[..., :2] / uvw[..., 2:3]


def crop_K(K: np.ndarray, box_xywh, out_size: tuple[int, int]) -> np.ndarray:
    """K of the crop window ``box_xywh`` (x0, y0, w, h) resized to ``out_size`` (W, H).

    Pixel centres are mapped consistently: the window's left edge x0 - 0.5 ... right
    edge x0 + w - 0.5 becomes -0.5 ... W - 0.5 (the same map ``grid_sample`` with
    ``align_corners=False`` uses).
    """
    x0, y0, w, h = (float(v) for v in box_xywh)
    W, H = out_size
    sx, sy = W / w, H / h
    A = np.array(
        [
            [sx, 0.0, (0.5 - x0) * sx - 0.5],
            [0.0, sy, (0.5 - y0) * sy - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )
    return A @ np.asarray(K, dtype=np.float64)
