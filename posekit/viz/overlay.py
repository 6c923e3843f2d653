"""Pose overlays for a person to check: the model's contour at the pose and its axes, over the image.

The contour is the outline of the model's silhouette rendered with the offscreen renderer at the image's
camera, so it shows exactly what the pose means (not a box approximation). Axes: x red, y green, z blue,
half a diameter long, from the model origin.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from posekit.cad.model import ObjectModel
from posekit.data.jsonio import atomic_write, save_image_atomic
from posekit.geometry.camera import Camera, project_points

AXIS_COLORS = ((230, 40, 40), (40, 200, 40), (60, 90, 255))


@contextmanager
def _renderer_for(camera: Camera, renderer=None) -> Iterator:
    """The caller's renderer, or an offscreen one of the camera's size made for the block and closed after it."""
    if renderer is not None:
        yield renderer
        return
    from posekit.render.gl import OffscreenRenderer

    own = OffscreenRenderer(camera.width, camera.height)
    try:
        yield own
    finally:
        own.close()


def silhouette(renderer, camera: Camera, model: ObjectModel, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Boolean (H, W) silhouette of ``model`` at pose (R, t) seen by ``camera``."""
    from posekit.render.types import RenderObject

    result = renderer.render(camera, [RenderObject(model=model, R=R, t=t)])
    return result.masks[0]


def contour(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The outline of a boolean mask, ``width`` pixels thick (inside the mask)."""
    inner = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~inner


def draw_pose(
    image: np.ndarray,
    camera: Camera,
    model: ObjectModel,
    R: np.ndarray,
    t: np.ndarray,
    renderer=None,
    color: tuple[int, int, int] = (255, 220, 0),
    axes: bool = True,
    label: str | None = None,
) -> np.ndarray:
    """Return a copy of ``image`` (H, W, 3 uint8) with the model's contour (and axes) at pose (R, t)."""
    out = np.array(image, dtype=np.uint8, copy=True)
    with _renderer_for(camera, renderer) as r:
        mask = silhouette(r, camera, model, R, t)
    out[contour(mask)] = color
    pil = Image.fromarray(out)
    draw = ImageDraw.Draw(pil)
    if axes and t[2] > 0:
        length = 0.5 * model.diameter
        pts = np.array([[0, 0, 0], [length, 0, 0], [0, length, 0], [0, 0, length]], dtype=np.float64)
        uv = project_points(pts, camera.K, R, t)
        for k in range(3):
            draw.line([tuple(uv[0]), tuple(uv[k + 1])], fill=AXIS_COLORS[k], width=3)
    if label:
        draw.text((6, 6), label, fill=color)
    return np.asarray(pil)


def draw_poses(
    image: np.ndarray,
    camera: Camera,
    model: ObjectModel,
    poses: Sequence[tuple[np.ndarray, np.ndarray]],
    renderer=None,
    label: str | None = None,
) -> np.ndarray:
    """``draw_pose`` for several instances of one model: every pose (R, t) over one copy of ``image``."""
    out = np.array(image, dtype=np.uint8, copy=True)
    with _renderer_for(camera, renderer) as r:
        for k, (R, t) in enumerate(poses):
            out = draw_pose(out, camera, model, R, t, renderer=r, label=label if k == 0 else None)
    return out


def pose_strip(
    image: np.ndarray,
    camera: Camera,
    model: ObjectModel,
    stages: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]],
    labels: Sequence[str] | None = None,
    crop_box: tuple[float, float, float, float] | None = None,
    renderer=None,
) -> list[np.ndarray]:
    """One overlay frame per stage (e.g. per refiner iteration) with that stage's poses (R, t) of every instance,
    optionally cropped to ``crop_box``."""
    frames = []
    with _renderer_for(camera, renderer) as r:
        for k, poses in enumerate(stages):
            label = labels[k] if labels else None
            frame = draw_poses(image, camera, model, poses, renderer=r, label=label)
            if crop_box is not None:
                x, y, w, h = (int(round(v)) for v in crop_box)
                x0, y0 = max(x, 0), max(y, 0)
                frame = frame[y0 : min(y + h, camera.height), x0 : min(x + w, camera.width)]
            frames.append(frame)
    return frames


def save_frames(path: str | Path, frames: Sequence[np.ndarray], duration_ms: int = 600) -> None:
    """Save frames as an animated GIF (``.gif``) or side by side as one strip image (other extensions)."""
    path = Path(path)
    if not frames:
        raise ValueError("no frames to save")
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in frames]
        atomic_write(path, lambda f: images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                                                    duration=duration_ms, loop=0))
        return
    h = max(f.shape[0] for f in frames)
    strip = np.zeros((h, sum(f.shape[1] for f in frames), 3), dtype=np.uint8)
    x = 0
    for f in frames:
        strip[: f.shape[0], x : x + f.shape[1]] = f
        x += f.shape[1]
    save_image_atomic(path, strip)


def draw_detections(image: np.ndarray, detections: Sequence, color=(255, 200, 0)) -> np.ndarray:
    """Detection boxes (BOP [x, y, w, h]) with their scores, and their visible masks tinted, over ``image``.

    ``detections``: anything with ``bbox``, ``score`` and an optional ``mask`` (H, W) bool
    (:class:`posekit.estimate.pipeline.Detection`).
    """
    from PIL import Image, ImageDraw

    out = np.array(image, dtype=np.uint8, copy=True)
    tint = np.asarray(color, np.float32)
    for d in detections:
        m = getattr(d, "mask", None)
        if m is not None and m.shape == out.shape[:2]:
            out[m] = (0.55 * out[m] + 0.45 * tint).astype(np.uint8)
    im = Image.fromarray(out)
    draw = ImageDraw.Draw(im)
    for d in detections:
        x, y, w, h = d.bbox
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=tuple(int(c) for c in color), width=2)
        draw.text((x + 2, max(0, y - 11)), f"{d.score:.2f}", fill=tuple(int(c) for c in color))
    return np.asarray(im)
