"""Training the regressor: images rendered on the fly (or read from BOP folders), the task for the shared loop.

Training images come from ``posekit render``'s scene sampler and renderer (:class:`posekit.render.dataset.
FrameRenderer`): several target objects, distractors, random primitives and occluders, random lights, procedural
or photo backgrounds (``--backgrounds``), noise and blur. Image ``k`` of the run is a pure function of (seed, k),
so a resumed run draws what the killed one would have. With ``--data`` the images are read from BOP folders with
visible masks instead (e.g. ``posekit render`` output, or real training images).

Targets per instance (visible at least ``MIN_VISIB`` and ``MIN_PIXELS``): the visible box and mask for Mask
R-CNN, and for the pose branch the instance's RoIs -- its visible box jittered in centre and size, as the
positive proposals Deep-6DPose trains on -- with the pose targets of :func:`~posekit.methods.regress.network.
pose_targets` relative to each RoI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from posekit.cad.model import ObjectModel
from posekit.data.jsonio import write_json_atomic
from posekit.data.store import read_workspace_config
from posekit.errors import InputError
from posekit.methods.regress.network import PoseRCNN, pose_targets
from posekit.methods.regress.presets import RegressPreset
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

METHOD = "regress"
CONFIG_NAME = "config.json"
MIN_VISIB = 0.15
MIN_PIXELS = 40
ROI_COPIES = 2  # jittered RoIs per instance for the pose branch
ROI_JITTER = 0.08  # std of the centre shift (fraction of the box) and of the log size change


def object_tensors(models: list[ObjectModel], n_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Model points in diameters (K, P, 3) and symmetry rotations (K, S, 3, 3), identity first, padded."""
    from posekit.cad.properties import sample_surface
    from posekit.data.bop import symmetry_transforms_from_info

    pts, syms = [], []
    for m in models:
        pts.append(sample_surface(m.vertices, m.faces, n_points, seed=0) / float(m.diameter))
        syms.append(symmetry_transforms_from_info(m.models_info_entry(), continuous_steps=12)[:, :3, :3])
    S = max(len(s) for s in syms)
    pad = [np.concatenate([s, np.repeat(np.eye(3)[None], S - len(s), axis=0)]) for s in syms]
    return torch.as_tensor(np.stack(pts), dtype=torch.float32), torch.as_tensor(np.stack(pad), dtype=torch.float32)


@dataclass
class Instance:
    label: int  # 1-based index into the workspace's objects
    R: np.ndarray
    t: np.ndarray
    mask: np.ndarray  # visible mask (H, W) bool


def jittered_rois(boxes: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """ROI_COPIES jittered copies of each box (x0, y0, x1, y1), clipped to the image (W, H)."""
    n = len(boxes)
    r = rng.normal(size=(n * ROI_COPIES, 3)) * ROI_JITTER
    b = np.repeat(boxes, ROI_COPIES, axis=0)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = 0.5 * (b[:, 0] + b[:, 2]) + r[:, 0] * w, 0.5 * (b[:, 1] + b[:, 3]) + r[:, 1] * h
    s = np.exp(r[:, 2])
    out = np.stack([cx - 0.5 * s * w, cy - 0.5 * s * h, cx + 0.5 * s * w, cy + 0.5 * s * h], axis=1)
    W, H = size
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, W)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, H)
    return out


def make_target(instances: list[Instance], K: np.ndarray, diameters: np.ndarray, size: tuple[int, int],
                rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Mask R-CNN's target dict plus the pose branch's RoIs, labels and targets (original image pixels)."""
    W, H = size
    boxes, labels, masks = [], [], []
    for ins in instances:
        ys, xs = np.nonzero(ins.mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(ins.label)
        masks.append(ins.mask)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = {"boxes": torch.as_tensor(boxes, dtype=torch.float32),
           "labels": torch.as_tensor(labels, dtype=torch.int64),
           "masks": torch.as_tensor(np.asarray(masks, dtype=np.uint8).reshape(-1, H, W))}
    if len(instances):
        rois = jittered_rois(boxes, size, rng)
        keep = ((rois[:, 2] - rois[:, 0]) > 2) & ((rois[:, 3] - rois[:, 1]) > 2)
        idx = np.repeat(np.arange(len(instances)), ROI_COPIES)[keep]
        rois = rois[keep]
        R = np.stack([instances[i].R for i in idx])
        t = np.stack([instances[i].t for i in idx])
        lab = np.asarray(labels)[idx]
        goal = pose_targets(R, t, rois, K, diameters[lab - 1])
    else:
        rois, lab, goal = np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros((0, 12))
    out["pose_rois"] = torch.as_tensor(rois, dtype=torch.float32)
    out["pose_labels"] = torch.as_tensor(lab, dtype=torch.int64)
    out["pose_targets"] = torch.as_tensor(goal, dtype=torch.float32)
    return out


class RenderedImages:
    """Training images rendered on the fly (see the module docstring)."""

    def __init__(self, models: list[ObjectModel], preset: RegressPreset, seed: int, backgrounds: Path | None) -> None:
        from posekit.cad.decimate import decimate
        from posekit.render.backgrounds import ImageBackgrounds
        from posekit.render.dataset import FrameRenderer, RenderJob, default_camera
        from posekit.render.scenes import RandomizationConfig

        cap = preset.render_max_faces
        targets = [decimate(m, cap) if cap and len(m.faces) > cap else m for m in models]
        self.camera = default_camera(preset.image_size)
        bg = ImageBackgrounds.from_dir(backgrounds) if backgrounds else None
        config = RandomizationConfig(objects=preset.objects, distractors=preset.distractors, views=preset.views,
                                     apparent_size=preset.apparent_size, background="images" if bg else "procedural")
        job = RenderJob(targets=targets, camera=self.camera, count=1, seed=seed, config=config, backgrounds=bg)
        self.renderer = FrameRenderer(job, "unused")  # render() writes nothing

    def image(self, index: int) -> tuple[np.ndarray, np.ndarray, list[Instance]]:
        rgb, _, _, visib, sample = self.renderer.render(index)
        inst = []
        for o, vis, (n_all, _) in zip(sample.targets, visib, sample.extra["infos"], strict=True):
            n = int(vis.sum())
            if n >= MIN_PIXELS and n_all and n / n_all >= MIN_VISIB:
                inst.append(Instance(o.index + 1, o.R, o.t, vis))
        return rgb, self.camera.K, inst

    def close(self) -> None:
        self.renderer.close()


class BopImages:
    """Training images from BOP folders with visible masks; object ids must be the workspace's."""

    def __init__(self, folders: list[Path], models: list[ObjectModel]) -> None:
        from posekit.data.bop import BopDataset

        self.label = {m.obj_id: i + 1 for i, m in enumerate(models) if m.obj_id is not None}
        self.frames = []
        for folder in folders:
            ds = BopDataset(folder)
            for split in ds.splits:
                for f in ds.frames(split):
                    if any(g.obj_id in self.label for g in f.gts):
                        self.frames.append(f)
        if not self.frames:
            raise InputError(f"--data {', '.join(map(str, folders))}: no images of the objects' ids "
                             f"{sorted(self.label)} (name the CAD files obj_XXXXXX to give them ids)")

    def image(self, index: int) -> tuple[np.ndarray, np.ndarray, list[Instance]]:
        f = self.frames[index % len(self.frames)]
        inst = []
        for k, g in enumerate(f.gts):
            if g.obj_id not in self.label:
                continue
            vis = f.mask_visib(k)
            if vis is None:
                raise InputError(f"{f.scene_dir}: no mask_visib for image {f.im_id}: --data needs visible masks")
            vis = vis > 0
            n = int(vis.sum())
            if n >= MIN_PIXELS and (g.visib_fract is None or g.visib_fract >= MIN_VISIB):
                inst.append(Instance(self.label[g.obj_id], g.R, g.t, vis))
        return f.rgb(), f.camera.K, inst

    def close(self) -> None:
        pass


class RegressTrainTask:
    """The regressor for :func:`posekit.train.loop.train`: rendered (or read) images in, the summed losses out."""

    def __init__(self, preset: RegressPreset, models: list[ObjectModel], source, seed: int = 0) -> None:
        self.preset, self.source, self.seed = preset, source, seed
        self.model = PoseRCNN(preset, len(models))
        self.model.set_objects(*object_tensors(models, preset.pose_points))
        self.diameters = np.array([m.diameter for m in models], dtype=np.float64)

    def batch(self, step: int, ctx: TrainContext):
        n = ctx.share(self.preset.batch)
        images, targets = [], []
        for i in range(n):
            index = (step * ctx.world_size + ctx.rank) * n + i  # image k of the run: a function of (seed, k)
            rgb, K, inst = self.source.image(index)
            H, W = rgb.shape[:2]
            images.append(torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1).float().div_(255.0).to(ctx.device))
            tgt = make_target(inst, np.asarray(K, np.float64), self.diameters, (W, H),
                              np.random.default_rng([self.seed, index]))
            targets.append({k: v.to(ctx.device) for k, v in tgt.items()})
        return images, targets

    def loss(self, model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        losses = model(*batch)
        total = sum(losses.values())
        return total, {k.replace("loss_", ""): float(v.detach()) for k, v in losses.items()
                       if k in ("loss_classifier", "loss_mask", "loss_pose_rot", "loss_pose_trans")}

    def samples(self, model: torch.nn.Module, batch) -> list[np.ndarray] | None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def read_config(ws: Path) -> dict:
    return read_workspace_config(ws, METHOD, "posekit train regress", "regressor")


def check_workspace(ws: Path, models: list[ObjectModel]) -> None:
    """InputError when ``ws`` holds a regressor of other parts (before anything is written)."""
    if ws.exists() and not ws.is_dir():
        raise InputError(f"{ws}: exists and is not a folder (--out must be a workspace folder)")
    if not (ws / CONFIG_NAME).is_file():
        return
    old = [o["mesh_hash"] for o in read_config(ws)["objects"]]
    if old != [m.mesh_hash for m in models]:
        raise InputError(f"{ws}: holds a regressor of other parts (mesh hashes {', '.join(h[:12] for h in old)}); "
                         "choose another --out")


def train_regress(models: list[ObjectModel], workspace: str | Path, preset: RegressPreset, resume: bool = False,
                  device: str = "auto", seed: int = 0, data: list[Path] | None = None,
                  backgrounds: Path | None = None, progress: bool = True) -> TrainResult:
    """Train a detector + pose regressor for ``models`` into ``workspace`` (config.json, checkpoints, curves)."""
    ws = Path(workspace)
    if not models:
        raise InputError("posekit train regress needs at least one --cad")
    check_workspace(ws, models)
    if resume:
        refuse_missing_checkpoint(ws)
    refuse_existing_checkpoint(ws, resume)
    source = BopImages(data, models) if data else RenderedImages(models, preset, seed, backgrounds)
    ws.mkdir(parents=True, exist_ok=True)
    threads = None if os.environ.get("OMP_NUM_THREADS") else preset.threads
    rank, world, local = distributed_env()
    dev = resolve_device(device, local)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if rank == 0:
        write_json_atomic(ws / CONFIG_NAME, {
            "method": METHOD, "preset": preset.to_dict(), "objects": [m.workspace_record() for m in models],
            "data": [str(Path(d).resolve()) for d in data] if data else None,
            "backgrounds": str(Path(backgrounds).resolve()) if backgrounds else None, "seed": seed,
        })
    torch.manual_seed(seed)
    task = RegressTrainTask(preset, models, source, seed)
    cfg = TrainConfig(out_dir=ws, steps=preset.steps, lr=preset.lr, checkpoint_every=preset.checkpoint_every,
                      sample_every=preset.sample_every, seed=seed, device=str(dev), resume=resume, progress=progress,
                      threads=threads, lr_schedule=preset.lr_schedule, grad_clip=10.0)
    try:
        return train(task, cfg)
    finally:
        source.close()
