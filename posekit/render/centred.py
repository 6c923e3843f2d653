"""Clean, centred crops of an object: what the view-based methods (AAE codebook and training cache, templates) render.

The object is rendered at ``distance_factor`` diameters on the optical axis of a centred camera
(fx = fy, principal point at the image centre, black background, head light), then cut by the
square box-crop convention of :mod:`posekit.geometry.boxcrop`. In-plane angles are exact image
rotations of one centred render (:func:`posekit.geometry.boxcrop.turned_crops`), so only the view
points are rendered. :class:`CropSpec` holds the sizes; each method's preset gives one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from posekit.cad.model import ObjectModel
from posekit.errors import InputError
from posekit.geometry.boxcrop import turned_crops


@dataclass(frozen=True)
class CropSpec:
    """Sizes of clean centred crops: crop side ``image_size``, render side ``render_size`` (crops are cut from it),
    ``crop_pad`` (square window / larger side of the tight box), render distance ``distance_factor`` in
    diameters, and ``render_max_faces`` (meshes with more faces are decimated first; None: never)."""

    image_size: int
    render_size: int
    crop_pad: float = 1.2
    distance_factor: float = 5.0
    render_max_faces: int | None = 10000


def render_camera(model: ObjectModel, spec: CropSpec, fill: float = 0.9) -> tuple[float, np.ndarray]:
    """(distance mm, K 3x3) of the clean renders: the object at ``distance_factor`` diameters, centred camera.

    The focal length makes the sphere about the model origin that holds every vertex span ``fill`` of
    the image, so no view is clipped even where the origin is off the mesh's centre; fx = fy and the
    principal point is the image centre (in-plane turns are then exact image rotations).
    """
    from posekit.geometry.camera import Camera

    distance = spec.distance_factor * float(model.diameter)
    r = max(float(np.linalg.norm(model.vertices, axis=1).max()), 0.5 * float(model.diameter))
    if distance <= r:
        raise InputError(f"{model.source or model.name}: model origin is too far from the mesh ({r:.0f} mm) "
                         f"for the render distance {distance:.0f} mm; load it with centring")
    S = spec.render_size
    f = fill * 0.5 * S / np.tan(np.arcsin(r / distance))
    return distance, Camera.from_fxfycxcy(f, f, (S - 1) / 2.0, (S - 1) / 2.0, S, S).K


def depth_normals(depth: torch.Tensor, K: np.ndarray) -> torch.Tensor:
    """(N, 3, H, W) unit camera-frame normals (facing the camera) from (N, H, W) depth in mm; 0 where unknown.

    Points are back-projected through K; the normal is the cross product of central differences,
    kept only where both neighbours in x and y are on the object.
    """
    n, h, w = depth.shape
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    z = depth.float()
    P = torch.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], dim=1)  # (N, 3, H, W)
    du = torch.zeros_like(P)
    dv = torch.zeros_like(P)
    du[..., 1:-1] = P[..., 2:] - P[..., :-2]
    dv[..., 1:-1, :] = P[..., 2:, :] - P[..., :-2, :]
    nrm = torch.cross(dv, du, dim=1)
    nrm = nrm / nrm.norm(dim=1, keepdim=True).clamp_min(1e-9)
    nrm = torch.where(nrm[:, 2:3] > 0, -nrm, nrm)  # face the camera
    m = z > 0
    ok = torch.zeros_like(m)
    ok[:, 1:-1, 1:-1] = m[:, 1:-1, 1:-1] & m[:, 2:, 1:-1] & m[:, :-2, 1:-1] & m[:, 1:-1, 2:] & m[:, 1:-1, :-2]
    return nrm * ok.unsqueeze(1)


_DECIMATED: dict[tuple[int, str, int], ObjectModel] = {}


def render_model(model: ObjectModel, spec: CropSpec) -> ObjectModel:
    """The mesh the cache and codebook are rendered from: decimated to ``spec.render_max_faces`` (same hash,
    diameter and frame), or ``model`` itself when it is small enough or the spec renders full meshes.

    Memoised (a few entries), since the codebook renders in chunks. The render camera is always computed
    from the full mesh (:func:`render_camera`), so K and distance do not depend on the decimation.
    """
    if not spec.render_max_faces or len(model.faces) <= spec.render_max_faces:
        return model
    key = (id(model), model.mesh_hash, int(spec.render_max_faces))
    if key not in _DECIMATED:
        from posekit.cad.decimate import decimate

        if len(_DECIMATED) >= 4:
            _DECIMATED.pop(next(iter(_DECIMATED)))
        _DECIMATED[key] = decimate(model, spec.render_max_faces)
    return _DECIMATED[key]


def render_crops(model: ObjectModel, rotations: np.ndarray, spec: CropSpec, angles: np.ndarray | None = None,
                 chunk: int = 128, progress: bool = True, desc: str = "render",
                 with_normals: bool = True) -> dict[str, np.ndarray | torch.Tensor]:
    """Render ``rotations`` centred and cut AAE crops; each render may be turned in-plane by several ``angles``.

    Returns float tensors rgb (N*A, 3, S, S), mask (N*A, 1, S, S), normals (or None), box_size (N*A,),
    box_offset (N*A, 2), ordered rotation-major (entry r * A + a); A = len(angles) (1 if None).
    """
    from posekit.render.gl import OffscreenRenderer
    from posekit.render.views import render_clean_views

    distance, K = render_camera(model, spec)
    model = render_model(model, spec)
    angles = np.zeros(1) if angles is None else np.asarray(angles, dtype=np.float64)
    size = spec.render_size
    out: dict[str, list] = {"rgb": [], "mask": [], "normals": [], "box_size": [], "box_offset": []}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rotations), desc=desc, unit="view", file=sys.stderr, dynamic_ncols=True)
    renderer = OffscreenRenderer(size, size)
    try:
        for start in range(0, len(rotations), chunk):
            views = render_clean_views(model, rotations[start : start + chunk], size=(size, size), distance=distance,
                                       K=K, renderer=renderer)
            rgb = torch.from_numpy(views.rgb).permute(0, 3, 1, 2).float() / 255.0
            mask = torch.from_numpy(views.mask).unsqueeze(1).float()
            normals = depth_normals(torch.from_numpy(views.depth), K) if with_normals else None
            n = rgb.shape[0]
            ang = torch.from_numpy(angles).float()
            parts = [turned_crops(rgb[i], mask[i], ang, spec.image_size, spec.crop_pad,
                                  extra=normals[i] if normals is not None else None) for i in range(n)]
            crops, cmask, side, offset = (torch.cat([p[j] for p in parts]) for j in (0, 1, 3, 4))
            cnorm = torch.cat([p[2] for p in parts]) if normals is not None else None
            out["rgb"].append(crops)
            out["mask"].append(cmask)
            if cnorm is not None:
                out["normals"].append(cnorm)
            out["box_size"].append(side)
            out["box_offset"].append(offset)
            if bar is not None:
                bar.update(n)
    finally:
        renderer.close()
        if bar is not None:
            bar.close()
    result = {k: torch.cat(v) for k, v in out.items() if v}
    result.setdefault("normals", None)
    return result


