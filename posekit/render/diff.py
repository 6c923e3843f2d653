"""Differentiable rendering with PyTorch3D: soft silhouette, depth (mm) and vertex-colour shaded RGB,
batched over poses and objects, with gradients to R and t.

Conventions: R (B, 3, 3), t (B, 3) mm are OpenCV model-to-camera poses and K (B, 3, 3) OpenCV
intrinsics; they go through ``pytorch3d.utils.cameras_from_opencv_projection``. That function (like
pyrender) treats pixel ``i`` as spanning ``[i, i+1]``, while OpenCV/posekit put pixel centres at
integers, so the principal point is shifted by +0.5 px on the way in (checked against
``project_points`` and the pyrender renderer in tests/test_render_agreement.py).

Cost: PyTorch3D's CPU rasteriser costs about faces x pixels (x faces_per_pixel), so every model is
decimated to ``max_faces`` (posekit.cad.decimate). Defaults (``DEFAULT_*`` below) come from the
sweep in benchmarks/diff_render.py, recorded in docs/benchmarks.md.

Soft silhouette (SoftRas): a pixel's coverage by face f is sigmoid(-d_f / sigma) with d_f the signed
squared screen distance (NDC units^2) to the face; faces farther than ``blur_radius`` are ignored, so
``blur_radius = sigma * log(1/eps - 1)`` keeps contributions above eps. ``blur_radius=0`` with
``faces_per_pixel=1`` is hard rasterisation (silhouette > 0.5 is exactly coverage).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from posekit.cad.decimate import DEFAULT_MAX_FACES, decimate, texture_to_vertex_colors
from posekit.cad.model import ObjectModel

#: Soft-rasterisation defaults (chosen by benchmarks/diff_render.py, see docs/benchmarks.md).
#: The softness is set in pixels: sigma (PyTorch3D's, a squared NDC distance) = (sigma_px * 2 / min(W, H))^2,
#: so it does not change meaning with the image size.
DEFAULT_SIGMA_PX = 0.07
DEFAULT_FACES_PER_PIXEL = 4
#: None = PyTorch3D's heuristic (naive rasteriser on CPU, where coarse-to-fine binning is not implemented).
DEFAULT_BIN_SIZE = None


def sigma_from_px(sigma_px: float, image_size: tuple[int, int]) -> float:
    """PyTorch3D's sigma (squared NDC distance) of a soft edge ``sigma_px`` pixels wide."""
    return float((sigma_px * 2.0 / min(image_size)) ** 2)


def blur_radius_for(sigma: float, eps: float = 1e-3) -> float:
    """Blur radius (squared NDC distance) beyond which a face's soft coverage is below ``eps``."""
    return float(sigma * math.log(1.0 / eps - 1.0))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA where available, CPU otherwise."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class DiffRenderer:
    """PyTorch3D renderer over a fixed list of models (decimated once, kept on ``device``).

    Args:
        models: the objects; ``obj_index`` in :meth:`render` indexes this list.
        image_size: (W, H) of every render.
        max_faces: face budget per model (None = no decimation).
        device: "auto", "cpu", "cuda", or a torch.device.
        faces_per_pixel, sigma, blur_radius, bin_size: rasterisation / blending settings; sigma None ->
            :func:`sigma_from_px` (``sigma_px``); blur_radius None -> :func:`blur_radius_for` (sigma). ``hard=True`` overrides them with
            faces_per_pixel=1, blur_radius=0 (exact coverage; for comparisons, not gradients).
        gamma: SoftRas RGB blending temperature (depth softness of the colour blend).
        ambient, diffuse: headlight shading of the RGB output (a point light at the camera centre).
    """

    def __init__(self, models: Sequence[ObjectModel], image_size: tuple[int, int] = (128, 128),
                 max_faces: int | None = DEFAULT_MAX_FACES, device: str | torch.device = "auto",
                 faces_per_pixel: int = DEFAULT_FACES_PER_PIXEL, sigma: float | None = None,
                 sigma_px: float = DEFAULT_SIGMA_PX, blur_radius: float | None = None, bin_size: int | None = DEFAULT_BIN_SIZE,
                 gamma: float = 1e-4, hard: bool = False, ambient: float = 0.3, diffuse: float = 0.7,
                 perspective_correct: bool | None = None) -> None:
        from pytorch3d.renderer import BlendParams, RasterizationSettings, TexturesVertex
        from pytorch3d.structures import Meshes

        if not models:
            raise ValueError("DiffRenderer needs at least one model")
        self.device = resolve_device(device)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.models = [decimate(m, max_faces) if max_faces else m for m in models]
        self.hard = bool(hard)
        if self.hard:
            faces_per_pixel, blur_radius = 1, 0.0
        self.sigma = sigma_from_px(sigma_px, self.image_size) if sigma is None else float(sigma)
        self.blur_radius = blur_radius_for(self.sigma) if blur_radius is None else float(blur_radius)
        self.faces_per_pixel = int(faces_per_pixel)
        self.bin_size = bin_size
        self.ambient, self.diffuse = float(ambient), float(diffuse)
        W, H = self.image_size
        self.raster_settings = RasterizationSettings(
            image_size=(H, W), blur_radius=self.blur_radius, faces_per_pixel=self.faces_per_pixel,
            bin_size=bin_size, perspective_correct=perspective_correct, cull_backfaces=False,
        )
        self.blend = BlendParams(sigma=self.sigma, gamma=float(gamma), background_color=(0.0, 0.0, 0.0))

        verts, faces, cols = [], [], []
        for m in self.models:
            verts.append(torch.as_tensor(np.asarray(m.vertices), dtype=torch.float32))
            faces.append(torch.as_tensor(np.asarray(m.faces), dtype=torch.int64))
            c = m.vertex_colors if m.vertex_colors is not None else texture_to_vertex_colors(m)
            c = np.full((len(m.vertices), 3), 0.7) if c is None else c
            cols.append(torch.as_tensor(np.asarray(c)[:, :3], dtype=torch.float32))
        self._meshes = Meshes(verts=verts, faces=faces, textures=TexturesVertex(cols)).to(self.device)

    @property
    def face_counts(self) -> list[int]:
        return [len(m.faces) for m in self.models]

    def cameras(self, R: torch.Tensor, t: torch.Tensor, K: torch.Tensor):
        """PyTorch3D cameras of OpenCV poses (B, 3, 3), (B, 3) mm and intrinsics (B, 3, 3)."""
        from pytorch3d.utils import cameras_from_opencv_projection

        W, H = self.image_size
        K = K.clone()
        K[:, 0, 2] = K[:, 0, 2] + 0.5  # OpenCV pixel centres (integers) -> PyTorch3D's (i + 0.5)
        K[:, 1, 2] = K[:, 1, 2] + 0.5
        size = torch.tensor([[H, W]], dtype=R.dtype, device=R.device).expand(R.shape[0], 2)
        return cameras_from_opencv_projection(R, t, K, size)

    def render(self, R: torch.Tensor, t: torch.Tensor, K: torch.Tensor, obj_index: torch.Tensor | None = None,
               modes: Sequence[str] = ("silhouette", "depth", "rgb")) -> dict[str, torch.Tensor]:
        """Render B views; returns the requested of ``silhouette`` (B, H, W) in [0, 1], ``depth`` (B, H, W)
        camera z in mm (0 where no face covers the pixel; the nearest covering face, differentiable) and
        ``rgb`` (B, H, W, 3) in [0, 1]. Inputs are moved to the renderer's device (float32)."""
        from pytorch3d.renderer import MeshRasterizer
        from pytorch3d.renderer.blending import sigmoid_alpha_blend, softmax_rgb_blend
        from pytorch3d.renderer.mesh.utils import interpolate_face_attributes

        unknown = set(modes) - {"silhouette", "depth", "rgb"}
        if unknown:
            raise ValueError(f"unknown render modes {sorted(unknown)}; use silhouette, depth, rgb")
        dev = self.device
        R = torch.as_tensor(R, dtype=torch.float32, device=dev).reshape(-1, 3, 3)
        B = R.shape[0]
        t = torch.as_tensor(t, dtype=torch.float32, device=dev).reshape(B, 3)
        K = torch.as_tensor(K, dtype=torch.float32, device=dev).reshape(-1, 3, 3).expand(B, 3, 3)
        if obj_index is None:
            if len(self.models) != 1:
                raise ValueError("obj_index is required when the renderer holds several models")
            obj_index = torch.zeros(B, dtype=torch.long)
        idx = torch.as_tensor(obj_index, dtype=torch.long).reshape(B).cpu()
        meshes = self._meshes[idx.tolist()]
        cameras = self.cameras(R, t, K)
        fragments = MeshRasterizer(cameras=cameras, raster_settings=self.raster_settings)(meshes)

        out: dict[str, torch.Tensor] = {}
        if "silhouette" in modes:
            colors = torch.ones(fragments.pix_to_face.shape + (3,), device=dev)
            out["silhouette"] = sigmoid_alpha_blend(colors, fragments, self.blend)[..., 3]
        if "depth" in modes:
            # the nearest face that covers the pixel (with blur, the K faces include near misses)
            covers = (fragments.pix_to_face >= 0) & (fragments.dists <= 0)
            first = covers.to(torch.uint8).argmax(dim=-1, keepdim=True)
            z = fragments.zbuf.gather(-1, first)[..., 0]
            out["depth"] = torch.where(covers.any(dim=-1), z, torch.zeros_like(z))
        if "rgb" in modes:
            texels = meshes.sample_textures(fragments)  # (B, H, W, K, 3)
            # Headlight: a point light at the camera centre; in the camera frame the view ray is the
            # pixel's point itself, so |n . p| / |p| is the cosine between normal and ray.
            faces_normals = meshes.verts_normals_packed()[meshes.faces_packed()]  # (F, 3, 3) model frame
            normals = interpolate_face_attributes(fragments.pix_to_face, fragments.bary_coords, faces_normals)
            Rb = R[:, None, None, None]  # (B,1,1,1,3,3)
            n_cam = (Rb @ normals.unsqueeze(-1)).squeeze(-1)
            faces_verts = meshes.verts_packed()[meshes.faces_packed()]
            pts = interpolate_face_attributes(fragments.pix_to_face, fragments.bary_coords, faces_verts)
            p_cam = (Rb @ pts.unsqueeze(-1)).squeeze(-1) + t[:, None, None, None]
            cos = (torch.nn.functional.normalize(n_cam, dim=-1) * torch.nn.functional.normalize(p_cam, dim=-1)).sum(-1)
            shade = self.ambient + self.diffuse * cos.abs()
            colors = texels * shade.unsqueeze(-1)
            rgb = softmax_rgb_blend(colors, fragments, self.blend, znear=1.0, zfar=1e5)
            out["rgb"] = rgb[..., :3].clamp(0.0, 1.0)
        return out
