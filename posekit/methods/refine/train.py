"""Training the refiner on the shared trainer (``posekit.train.loop``): one network for all given objects.

Workspace layout (``--out``):
  config.json               preset, objects (name, obj_id, mesh hash, CAD path, diameter, models_info
                            entry with symmetries), data source -- what ``load_refiner`` needs
  checkpoints/last.pt       the shared trainer's atomic checkpoint (``--resume`` continues it)
  curves.png, samples.png   loss curve; rows of observed crop / rendering / predicted mask / true mask

Each step: draw observed patches (synthetic on the fly, or a BOP dataset), perturb their true
poses, build the zoom-in pairs, and for ``second_iter_p`` of the batch run the network once and
rebuild the pair at its own output (DeepIM trains on its iterates too, so it learns to correct
its own typical residuals, not only the synthetic noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posekit.cad.model import ObjectModel
from posekit.data.jsonio import write_json_atomic
from posekit.data.store import read_workspace_config
from posekit.errors import InputError
from posekit.geometry.update import apply_update
from posekit.methods.refine.loss import pad_symmetries, refine_loss
from posekit.methods.refine.network import build_network, mask_probabilities
from posekit.methods.refine.pairs import (
    DEFAULT_CAMERA,
    BopObserved,
    PairBatch,
    PooledObserved,
    RefineObject,
    SyntheticObserved,
    make_pairs,
    perturb_poses,
    prepare_object,
    torch_rng,
)
from posekit.methods.refine.presets import RefinePreset
from posekit.train.checkpoint import load_weights
from posekit.train.loop import (
    TrainConfig,
    TrainContext,
    TrainResult,
    checkpoint_path,
    distributed_env,
    refuse_existing_checkpoint,
    refuse_missing_checkpoint,
    resolve_device,
    train,
)

CONFIG_NAME = "config.json"
METHOD = "deepim-refiner"


class ObjectTensors:
    """Per-object loss data stacked for gathering by object index: points, diameters, padded symmetries."""

    def __init__(self, objects: list[RefineObject], device: torch.device | str = "cpu") -> None:
        self.points = torch.as_tensor(np.stack([o.points for o in objects]), dtype=torch.float32, device=device)
        self.diameters = torch.tensor([o.diameter for o in objects], dtype=torch.float32, device=device)
        self.symmetries = pad_symmetries([o.symmetries for o in objects], device=device)

    def to(self, device) -> ObjectTensors:
        self.points, self.diameters, self.symmetries = (x.to(device) for x in (self.points, self.diameters, self.symmetries))
        return self


def pair_loss(net: torch.nn.Module, pb: PairBatch, data: ObjectTensors, mask_weight: float):
    """The loss of the network on a pair batch (see ``loss.refine_loss``)."""
    out = net(pb.inputs)
    i = pb.obj_index
    return refine_loss(out, pb.R_src, pb.t_src, pb.R_gt, pb.t_gt, pb.K, pb.unit, data.points[i], data.diameters[i],
                       data.symmetries[i], pb.visible_mask, mask_weight)


class RefineTrainTask:
    """The refiner as a ``posekit.train.loop.TrainTask``."""

    def __init__(self, objects: list[RefineObject], preset: RefinePreset, source, renderer) -> None:
        self.objects, self.preset, self.source, self.renderer = objects, preset, source, renderer
        self.model = build_network(preset)
        self.data = ObjectTensors(objects)

    def batch(self, step: int, ctx: TrainContext) -> PairBatch:
        pre, gen = self.preset, ctx.generator
        n = ctx.share(pre.batch_size)
        obs = self.source.sample(n, gen)
        rng = torch_rng(gen)
        R0, t0 = perturb_poses(obs.R, obs.t, pre, rng)
        pb = make_pairs(obs.images, obs.K, R0, t0, obs.obj_index, self.objects, pre, self.renderer, masks=obs.masks,
                        R_gt=obs.R, t_gt=obs.t, gen=gen, device=ctx.device)
        k = int(round(pre.second_iter_p * n))
        if k > 0:
            sel = np.sort(rng.choice(n, size=k, replace=False))
            with torch.no_grad():
                out = self.model(pb.inputs[sel])
                R1, t1 = apply_update(pb.R_src[sel].double(), pb.t_src[sel].double(), out.dR.double(),
                                      out.v.double(), pb.K[sel].double(), pb.unit[sel].double())
            R1, t1 = R1.cpu().numpy(), t1.cpu().numpy()
            ok = np.isfinite(t1).all(1) & (t1[:, 2] > 0.3 * obs.t[sel, 2])  # keep sane iterates only
            sel, R1, t1 = sel[ok], R1[ok], t1[ok]
            if len(sel):
                p2 = make_pairs(obs.images[sel], obs.K[sel], R1, t1, obs.obj_index[sel], self.objects, pre,
                                self.renderer, masks=obs.masks[sel], R_gt=obs.R[sel], t_gt=obs.t[sel], gen=gen,
                                device=ctx.device)
                for name in ("inputs", "visible_mask", "R_src", "t_src", "K", "unit", "windows"):
                    getattr(pb, name)[torch.as_tensor(sel, device=ctx.device)] = getattr(p2, name)
        return pb

    def loss(self, model: torch.nn.Module, pb: PairBatch) -> tuple[torch.Tensor, dict[str, float]]:
        self.data.to(pb.inputs.device)
        t = pair_loss(model, pb, self.data, self.preset.mask_weight)
        return t.total, {"rot": t.rot, "xy": t.xy, "z": t.z, "mask": t.mask}

    def samples(self, model: torch.nn.Module, pb: PairBatch) -> list[np.ndarray] | None:
        n = min(8, len(pb.inputs))
        x = pb.inputs[:n]
        out = model(x)
        pm = mask_probabilities(out.mask_logits, x.shape[-2:])
        rows = [x[:, :3], x[:, 3:6], pm.expand(-1, 3, -1, -1)]
        if pb.visible_mask is not None:
            rows.append(pb.visible_mask[:n].expand(-1, 3, -1, -1))
        return [r.permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy() for r in rows]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def write_config(ws: Path, models: list[ObjectModel], preset: RefinePreset, data: str | None,
                 init_from: str | None = None, backgrounds: dict | None = None) -> Path:
    return write_json_atomic(ws / CONFIG_NAME, {
        "method": METHOD, "preset": preset.to_json(), "objects": [m.workspace_record() for m in models],
        "data": data, "init_from": init_from, "backgrounds": backgrounds,
    })


def read_config(ws: str | Path) -> dict:
    """The workspace's config.json; InputError naming the file when it is missing or not a refiner's."""
    return read_workspace_config(ws, METHOD, "posekit train refine", "refiner")


def check_workspace(ws: Path, models: list[ObjectModel], preset: RefinePreset, resume: bool) -> dict | None:
    """A resumed (or reused) workspace must hold the same meshes and preset (checked before anything is written);
    returns its config (None for a new workspace)."""
    if not (ws / CONFIG_NAME).is_file():
        return None
    cfg = read_config(ws)
    old = [o["mesh_hash"] for o in cfg["objects"]]
    new = [m.mesh_hash for m in models]
    if old != new:
        raise InputError(f"{ws / CONFIG_NAME}: trained for meshes {old}, but --cad gives {new} (same files, same order)")
    if cfg["preset"]["name"] != preset.name:
        raise InputError(f"{ws} was trained with --preset {cfg['preset']['name']}; resume it with that preset")
    return cfg


def initial_weights(src: Path, preset: RefinePreset) -> dict:
    """The weights of refiner workspace ``src``, checked to fit ``preset``'s network (loaded into one) before
    anything is written; InputError naming the preset fields that differ otherwise."""
    old = RefinePreset.from_json(read_config(src)["preset"])
    net = build_network(preset)
    try:
        load_weights(net, checkpoint_path(src))
    except InputError as exc:
        diff = [f for f in ("widths", "blocks_per_stage", "fc_width", "coord_channels", "diff_channels",
                            "pool_grid", "groups", "trunk", "trunk_freeze") if getattr(old, f) != getattr(preset, f)]
        why = f"differs from preset {preset.name}'s in {', '.join(diff)}" if diff else f"does not load ({exc})"
        raise InputError(f"--init-from {src}: its network {why}") from None
    return net.state_dict()


@dataclass
class RefineTrainResult:
    workspace: Path
    train: TrainResult


def train_refiner(
    models: list[ObjectModel],
    workspace: str | Path,
    preset: RefinePreset,
    steps: int | None = None,
    resume: bool = False,
    device: str = "auto",
    data: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    threads: int | None = None,
    pool: int | None = None,
    init_from: str | Path | None = None,
    backgrounds: str | Path | None = None,
) -> RefineTrainResult:
    """Train one refiner for ``models`` into ``workspace``.

    ``data``: a BOP dataset with masks (``posekit render`` output) whose obj_ids are the models'
    ``obj_id``; None -> domain-randomised patches rendered on the fly. ``steps`` overrides the preset's.
    ``pool``: draw that many observed patches once and reuse them (``PooledObserved``; quick runs).
    ``init_from``: another refiner workspace whose weights start this run (fine-tuning with a changed
    preset or data; its network must have the same shape); the optimiser and schedule start afresh.
    ``backgrounds``: a folder of photos (e.g. of the user's workcell without the objects); the preset's
    ``background_image_p`` share of the observed backgrounds are random crops of them, the rest procedural.
    """
    from posekit.render.gl import OffscreenRenderer

    if not models:
        raise InputError("posekit train refine: give at least one --cad")
    ws = Path(workspace)
    if ws.exists() and not ws.is_dir():
        raise InputError(f"{ws}: exists and is not a folder (--out must be a workspace folder)")
    existing = check_workspace(ws, models, preset, resume)
    init_state = initial_weights(Path(init_from), preset) if init_from is not None and not resume else None
    if backgrounds is not None and data:
        raise InputError("--backgrounds applies to patches rendered on the fly, not to --data (a rendered dataset "
                         "has its own backgrounds: `posekit render --backgrounds`)")
    if backgrounds is None and resume and existing and existing.get("backgrounds"):
        backgrounds = existing["backgrounds"]["folder"]  # a resumed run keeps its photos
    photos = None
    if backgrounds is not None:  # read before anything is written: a bad folder leaves no workspace
        photos = SyntheticObserved.load_photos(backgrounds, preset)
    if resume:
        refuse_missing_checkpoint(ws)
    refuse_existing_checkpoint(ws, resume)  # before config.json is touched
    rank, world, local = distributed_env()
    dev = resolve_device(device, local)
    ws.mkdir(parents=True, exist_ok=True)
    if init_state is not None:
        init_record = str(Path(init_from).resolve())
    else:  # a resumed fine-tuning keeps the record of where it started
        init_record = existing.get("init_from") if resume and existing else None
    bg_record = {"folder": str(Path(backgrounds).resolve()), "images": len(photos)} if photos is not None else None
    if rank == 0:
        write_config(ws, models, preset, str(data) if data else None, init_from=init_record, backgrounds=bg_record)
    objects = [prepare_object(m, preset) for m in models]
    W, H = preset.crop_size
    renderer = OffscreenRenderer(W, H)
    obs_renderer = None
    if data:
        ids = [m.obj_id for m in models]
        if any(i is None for i in ids):
            raise InputError("--data needs every --cad to carry a BOP obj_id (pass models named obj_XXXXXX.ply)")
        source = BopObserved(data, objects, ids, preset)
    else:
        obs_renderer = OffscreenRenderer(*SyntheticObserved.patch_size_for(preset))
        source = SyntheticObserved(objects, preset, obs_renderer, camera=DEFAULT_CAMERA, backgrounds=photos)
    if pool:
        source = PooledObserved(source, int(pool), torch.Generator().manual_seed(seed + 1),
                                progress=progress and rank == 0)
    torch.manual_seed(seed)
    task = RefineTrainTask(objects, preset, source, renderer)
    if init_state is not None:
        task.model.load_state_dict(init_state)
    cfg = TrainConfig(out_dir=ws, steps=steps if steps is not None else preset.steps, lr=preset.lr,
                      checkpoint_every=preset.checkpoint_every, sample_every=preset.sample_every, seed=seed,
                      device=str(dev), resume=resume, progress=progress, grad_clip=10.0, threads=threads,
                      lr_schedule=preset.lr_schedule)
    try:
        result = train(task, cfg)
    finally:
        renderer.close()
        if obs_renderer is not None:
            obs_renderer.close()
    return RefineTrainResult(workspace=ws, train=result)


__all__ = ["RefineTrainTask", "train_refiner", "read_config", "write_config", "ObjectTensors", "pair_loss",
           "RefineTrainResult", "CONFIG_NAME"]
