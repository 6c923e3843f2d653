"""Training the AAE: the render cache (made once per object and preset) and the training task for the shared loop.

The cache holds, for ``preset.cache_views`` uniformly random rotations, the clean crop (object
rendered centred at the preset's distance under the head light, cut by the crop convention of
:mod:`posekit.methods.aae.crops`), its soft mask and its camera-frame normals (for relighting).
Each training step draws a batch of cache entries; the inputs are their augmented versions
(:class:`posekit.data.augment.Augmenter`), the targets the clean crops themselves.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from posekit.cad.model import ObjectModel
from posekit.data.augment import AugmentConfig, Augmenter, load_background_images
from posekit.errors import InputError
from posekit.methods.aae.crops import turned_crops
from posekit.methods.aae.network import AugmentedAutoencoder, bootstrapped_l2
from posekit.methods.aae.presets import AaePreset
from posekit.train.loop import (
    TrainConfig,
    TrainContext,
    TrainResult,
    distributed_env,
    refuse_existing_checkpoint,
    resolve_device,
    train,
)

CACHE_NAME = "render_cache.npz"
CONFIG_NAME = "config.json"


# --------------------------------------------------------------------------- rendering


def render_camera(model: ObjectModel, preset: AaePreset, fill: float = 0.9) -> tuple[float, np.ndarray]:
    """(distance mm, K 3x3) of the clean renders: the object at ``distance_factor`` diameters, centred camera.

    The focal length makes the sphere about the model origin that holds every vertex span ``fill`` of
    the image, so no view is clipped even where the origin is off the mesh's centre; fx = fy and the
    principal point is the image centre (in-plane turns are then exact image rotations).
    """
    from posekit.geometry.camera import Camera

    distance = preset.distance_factor * float(model.diameter)
    r = max(float(np.linalg.norm(model.vertices, axis=1).max()), 0.5 * float(model.diameter))
    if distance <= r:
        raise InputError(f"{model.source or model.name}: model origin is too far from the mesh ({r:.0f} mm) "
                         f"for the render distance {distance:.0f} mm; load it with centring")
    S = preset.render_size
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


@dataclass
class RenderCache:
    """Clean training crops of one object (see the module docstring).

    rgb (N, S, S, 3) uint8 on black; mask (N, S, S) uint8 (soft, 255 = object); normals (N, S, S, 3)
    int8 (x127, camera frame); rotations (N, 3, 3) float32; box_size (N,) tight-box max side in render
    pixels; distance mm; K the render camera; render_size; mesh_hash.
    """

    rgb: np.ndarray
    mask: np.ndarray
    normals: np.ndarray
    rotations: np.ndarray
    box_size: np.ndarray
    distance: float
    K: np.ndarray
    render_size: int
    mesh_hash: str

    def save(self, path: Path) -> Path:
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, rgb=self.rgb, mask=self.mask, normals=self.normals, rotations=self.rotations,
                 box_size=self.box_size, distance=self.distance, K=self.K, render_size=self.render_size,
                 mesh_hash=self.mesh_hash)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> RenderCache:
        try:
            with np.load(path) as z:
                return cls(rgb=z["rgb"], mask=z["mask"], normals=z["normals"], rotations=z["rotations"],
                           box_size=z["box_size"], distance=float(z["distance"]), K=z["K"],
                           render_size=int(z["render_size"]), mesh_hash=str(z["mesh_hash"]))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: unreadable render cache ({exc}); delete it to render again") from None


_DECIMATED: dict[tuple[int, str, int], ObjectModel] = {}


def render_model(model: ObjectModel, preset: AaePreset) -> ObjectModel:
    """The mesh the cache and codebook are rendered from: decimated to ``preset.render_max_faces`` (same hash,
    diameter and frame), or ``model`` itself when it is small enough or the preset renders full meshes.

    Memoised (a few entries), since the codebook renders in chunks. The render camera is always computed
    from the full mesh (:func:`render_camera`), so K and distance do not depend on the decimation.
    """
    if not preset.render_max_faces or len(model.faces) <= preset.render_max_faces:
        return model
    key = (id(model), model.mesh_hash, int(preset.render_max_faces))
    if key not in _DECIMATED:
        from posekit.cad.decimate import decimate

        if len(_DECIMATED) >= 4:
            _DECIMATED.pop(next(iter(_DECIMATED)))
        _DECIMATED[key] = decimate(model, preset.render_max_faces)
    return _DECIMATED[key]


def render_crops(model: ObjectModel, rotations: np.ndarray, preset: AaePreset, angles: np.ndarray | None = None,
                 chunk: int = 128, progress: bool = True, desc: str = "render",
                 with_normals: bool = True) -> dict[str, np.ndarray | torch.Tensor]:
    """Render ``rotations`` centred and cut AAE crops; each render may be turned in-plane by several ``angles``.

    Returns float tensors rgb (N*A, 3, S, S), mask (N*A, 1, S, S), normals (or None), box_size (N*A,),
    box_offset (N*A, 2), ordered rotation-major (entry r * A + a); A = len(angles) (1 if None).
    """
    from posekit.render.gl import OffscreenRenderer
    from posekit.render.views import render_clean_views

    distance, K = render_camera(model, preset)
    model = render_model(model, preset)
    angles = np.zeros(1) if angles is None else np.asarray(angles, dtype=np.float64)
    size = preset.render_size
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
            parts = [turned_crops(rgb[i], mask[i], ang, preset.image_size, preset.crop_pad,
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


def build_render_cache(model: ObjectModel, preset: AaePreset, seed: int = 0, progress: bool = True) -> RenderCache:
    """Render ``preset.cache_views`` uniformly random rotations of ``model`` into a :class:`RenderCache`."""
    from posekit.geometry.rotations import random_rotations

    rotations = random_rotations(preset.cache_views, np.random.default_rng(seed))
    r = render_crops(model, rotations, preset, progress=progress, desc="render cache")
    distance, K = render_camera(model, preset)
    nrm = r["normals"]
    nrm = nrm / nrm.norm(dim=1, keepdim=True).clamp_min(1e-6) * (nrm.norm(dim=1, keepdim=True) > 0.5)
    return RenderCache(
        rgb=(r["rgb"].permute(0, 2, 3, 1).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy(),
        mask=(r["mask"][:, 0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy(),
        normals=(nrm.permute(0, 2, 3, 1) * 127).round().to(torch.int8).numpy(),
        rotations=rotations.astype(np.float32),
        box_size=r["box_size"].numpy().astype(np.float32),
        distance=distance, K=K, render_size=preset.render_size, mesh_hash=model.mesh_hash,
    )


def load_or_build_cache(workspace: Path, model: ObjectModel, preset: AaePreset, seed: int = 0,
                        progress: bool = True) -> RenderCache:
    """The workspace's render cache, rendered now if it is missing or was made for another mesh or size."""
    path = Path(workspace) / CACHE_NAME
    if path.is_file():
        cache = RenderCache.load(path)
        distance, _ = render_camera(model, preset)
        if (cache.mesh_hash == model.mesh_hash and cache.rgb.shape[0] == preset.cache_views
                and cache.rgb.shape[1] == preset.image_size and cache.render_size == preset.render_size
                and abs(cache.distance - distance) < 1e-6):
            return cache
    cache = build_render_cache(model, preset, seed=seed, progress=progress)
    cache.save(path)
    return cache


# --------------------------------------------------------------------------- the task


@dataclass
class _Batch:
    x: torch.Tensor  # augmented inputs (B, 3, S, S)
    y: torch.Tensor  # clean targets (B, 3, S, S)


class AaeTrainTask:
    """The AAE for :func:`posekit.train.loop.train`: augmented cache crops in, clean crops out, bootstrapped L2."""

    def __init__(self, preset: AaePreset, cache: RenderCache, augmenter: Augmenter | None = None) -> None:
        self.preset = preset
        self.cache = cache
        self.augmenter = augmenter or Augmenter()
        self.model = AugmentedAutoencoder.from_preset(preset)
        self._dev: torch.device | None = None
        self._t: dict[str, torch.Tensor] = {}

    def _tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        if self._dev != device:  # uint8 on the device; converted per batch
            self._t = {
                "rgb": torch.from_numpy(self.cache.rgb).permute(0, 3, 1, 2).contiguous().to(device),
                "mask": torch.from_numpy(self.cache.mask).unsqueeze(1).contiguous().to(device),
                "normals": torch.from_numpy(self.cache.normals).permute(0, 3, 1, 2).contiguous().to(device),
            }
            self._dev = device
        return self._t

    def batch(self, step: int, ctx: TrainContext) -> _Batch:
        t = self._tensors(ctx.device)
        n = ctx.share(self.preset.batch)
        idx = torch.randint(0, t["rgb"].shape[0], (n,), generator=ctx.generator, device=ctx.device)
        rgb = t["rgb"][idx].float() / 255.0
        mask = t["mask"][idx].float() / 255.0
        normals = t["normals"][idx].float() / 127.0
        x = self.augmenter(rgb, mask, normals, ctx.generator)
        return _Batch(x=x, y=rgb)

    def loss(self, model: torch.nn.Module, batch: _Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return bootstrapped_l2(model(batch.x), batch.y, self.preset.bootstrap_ratio), {}

    def samples(self, model: torch.nn.Module, batch: _Batch) -> list[np.ndarray]:
        k = min(8, batch.x.shape[0])
        rec = model(batch.x[:k])
        return [a.permute(0, 2, 3, 1).float().cpu().numpy() for a in (batch.x[:k], rec, batch.y[:k])]

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# --------------------------------------------------------------------------- the whole run


@dataclass
class AaeTrainResult:
    """What :func:`train_aae` leaves in the workspace."""

    workspace: Path
    train: TrainResult
    codebook: Path | None


def write_config(workspace: Path, model: ObjectModel, preset: AaePreset, distance: float, K: np.ndarray) -> Path:
    """WORKSPACE/config.json (atomic): preset, object, mesh hash, CAD path, render distance and K, crop size."""
    cfg = {
        "method": "aae",
        "preset": preset.to_dict(),
        "object": {"name": model.name, "obj_id": model.obj_id, "diameter": float(model.diameter),
                   "cad": str(Path(model.source).resolve()) if model.source else None},
        "mesh_hash": model.mesh_hash,
        "render": {"distance": float(distance), "K": np.asarray(K).tolist(), "size": preset.render_size},
        "image_size": preset.image_size,
        "crop_pad": preset.crop_pad,
    }
    path = workspace / CONFIG_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=2))
    os.replace(tmp, path)
    return path


def check_workspace_mesh(workspace: Path, model: ObjectModel) -> None:
    """InputError when the workspace at ``workspace`` was made for another mesh than ``model``."""
    path = Path(workspace) / CONFIG_NAME
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text()).get("mesh_hash")
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable workspace config ({exc})") from None
    if old and old != model.mesh_hash:
        name = model.source or model.name
        raise InputError(f"workspace {workspace} was trained for mesh hash {old} but {name} has {model.mesh_hash}")


def train_aae(
    model: ObjectModel,
    workspace: str | Path,
    preset: AaePreset,
    resume: bool = False,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    backgrounds: str | Path | None = None,
    augment: AugmentConfig | None = None,
    make_codebook: bool = True,
) -> AaeTrainResult:
    """Train an AAE for ``model`` into ``workspace`` (render cache, checkpoints, curves, samples, codebook).

    ``resume`` continues from WORKSPACE/checkpoints/last.pt; without it an existing checkpoint is
    an InputError (nothing is overwritten). Under torchrun, rank 0 renders the cache and writes
    the files; every rank trains on its share of the batch.
    """
    from posekit.methods.aae.codebook import build_codebook

    ws = Path(workspace)
    if ws.exists() and not ws.is_dir():
        raise InputError(f"{ws}: exists and is not a folder (--out must be a workspace folder)")
    check_workspace_mesh(ws, model)
    refuse_existing_checkpoint(ws, resume)  # before the cache or config.json is touched
    ws.mkdir(parents=True, exist_ok=True)
    threads = None if os.environ.get("OMP_NUM_THREADS") else preset.threads
    if threads:
        torch.set_num_threads(threads)
    rank, world, local = distributed_env()
    dev = resolve_device(device, local)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if rank == 0:
        cache = load_or_build_cache(ws, model, preset, seed=seed, progress=progress)
        write_config(ws, model, preset, cache.distance, cache.K)
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        cache = RenderCache.load(ws / CACHE_NAME)
    bg = load_background_images(backgrounds, preset.image_size) if backgrounds else None
    torch.manual_seed(seed)  # the same initial weights on every rank
    task = AaeTrainTask(preset, cache, Augmenter(augment, bg))
    cfg = TrainConfig(out_dir=ws, steps=preset.steps, lr=preset.lr, checkpoint_every=preset.checkpoint_every,
                      sample_every=preset.sample_every, seed=seed, device=str(dev), resume=resume,
                      progress=progress, threads=threads, lr_schedule=preset.lr_schedule)
    result = train(task, cfg)
    book = None
    if make_codebook and rank == 0:
        cb = build_codebook(task.model, model, preset, device=dev, progress=progress)
        book = cb.save(ws / "codebook.npz")
    if world > 1:
        torch.distributed.barrier()
    return AaeTrainResult(workspace=ws, train=result, codebook=book)
