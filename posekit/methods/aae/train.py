"""Training the AAE: the render cache (made once per object and preset) and the training task for the shared loop.

The cache holds, for ``preset.cache_views`` uniformly random rotations, the clean crop (object
rendered centred at the preset's distance under the head light, cut by the crop convention of
:mod:`posekit.geometry.boxcrop`), its soft mask and its camera-frame normals (for relighting).
Each training step draws a batch of cache entries; the inputs are their augmented versions
(:class:`posekit.data.augment.Augmenter`), the targets the clean crops themselves.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from posekit.cad.model import ObjectModel
from posekit.data.augment import AugmentConfig, Augmenter, load_background_images
from posekit.errors import InputError
from posekit.methods.aae.network import AugmentedAutoencoder, bootstrapped_l2
from posekit.methods.aae.presets import AaePreset
from posekit.render.centred import render_camera, render_crops
from posekit.train.loop import (
    TrainConfig,
    TrainContext,
    TrainResult,
    distributed_env,
    refuse_existing_checkpoint,
    refuse_missing_checkpoint,
    resolve_device,
    train,
)

CACHE_NAME = "render_cache.npz"
CONFIG_NAME = "config.json"


# --------------------------------------------------------------------------- rendering


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


def build_render_cache(model: ObjectModel, preset: AaePreset, seed: int = 0, progress: bool = True) -> RenderCache:
    """Render ``preset.cache_views`` uniformly random rotations of ``model`` into a :class:`RenderCache`."""
    from posekit.geometry.rotations import random_rotations

    rotations = random_rotations(preset.cache_views, np.random.default_rng(seed))
    r = render_crops(model, rotations, preset.crop_spec, progress=progress, desc="render cache")
    distance, K = render_camera(model, preset.crop_spec)
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
        distance, _ = render_camera(model, preset.crop_spec)
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
                   "centered": model.center_shift is not None,
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
    if resume:
        refuse_missing_checkpoint(ws)
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
