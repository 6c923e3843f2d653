"""Building, storing and matching templates (see the package docstring).

A workspace folder holds ``templates.npz`` (cell-normalised feature maps in float16, mask weights,
rotations, tight-box sides and offsets, render camera) and ``config.json`` (method, preset, object,
mesh hash, backbone fingerprint, build time). ``templates.npz`` is written first and ``config.json``
last, each atomically, so a killed build leaves no workspace that loads.
"""

from __future__ import annotations

import json
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from posekit.cad.model import ObjectModel
from posekit.data.jsonio import atomic_write, write_json_atomic
from posekit.data.store import workspace_config
from posekit.data.types import PoseEstimate
from posekit.errors import InputError
from posekit.features.backbone import Backbone, shared_backbone
from posekit.features.similarity import cell_normalise, fold_references, mask_weights, similarity_matrix
from posekit.geometry.boxcrop import crop_boxes
from posekit.geometry.camera import Camera
from posekit.methods.templates.presets import TemplatePreset
from posekit.methods.viewbased import ViewEntries, center_hint, image_tensor, poses_from_entries
from posekit.render.centred import render_camera, render_crops
from posekit.render.views import fibonacci_sphere, inplane_rotation, look_at_rotation

TEMPLATES_NAME = "templates.npz"
CONFIG_NAME = "config.json"
METHOD = "templates"


@dataclass
class TemplateSet:
    """N templates: cell-normalised maps (N, C, h, w), mask weights (N, h, w), and their view entries."""

    features: torch.Tensor
    weights: torch.Tensor
    entries: ViewEntries
    mesh_hash: str
    preset: TemplatePreset
    fingerprint: str

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def save(self, path: str | Path) -> Path:
        e = self.entries

        def write(fh) -> None:
            np.savez(fh, features=self.features.cpu().numpy().astype(np.float16),
                     weights=self.weights.cpu().numpy().astype(np.float16), rotations=e.rotations.astype(np.float32),
                     box_size=e.box_size.astype(np.float32), box_offset=e.box_offset.astype(np.float32),
                     distance=e.distance, K=e.K, mesh_hash=self.mesh_hash, preset=json.dumps(self.preset.to_dict()),
                     fingerprint=self.fingerprint)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path) -> TemplateSet:
        path = Path(path)
        try:
            with np.load(path) as z:
                entries = ViewEntries(rotations=z["rotations"].astype(np.float64),
                                      box_size=z["box_size"].astype(np.float64),
                                      box_offset=z["box_offset"].astype(np.float64), distance=float(z["distance"]),
                                      K=z["K"].astype(np.float64))
                return cls(features=torch.from_numpy(z["features"]), weights=torch.from_numpy(z["weights"]),
                           entries=entries, mesh_hash=str(z["mesh_hash"]),
                           preset=TemplatePreset.from_dict(json.loads(str(z["preset"]))),
                           fingerprint=str(z["fingerprint"]))
        except FileNotFoundError:
            raise InputError(f"{path}: no templates there (build them with `posekit train templates`)") from None
        except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: unreadable templates ({type(exc).__name__}: {exc}); build them again") from None


def template_views(preset: TemplatePreset) -> tuple[np.ndarray, np.ndarray]:
    """(view rotations (V, 3, 3), in-plane angles (I,)): template v * I + k is ``Rz(angle_k) @ R_view[v]``."""
    R_view = look_at_rotation(fibonacci_sphere(preset.views, hemisphere=preset.hemisphere == "upper"))
    return R_view, 2.0 * np.pi * np.arange(preset.inplane) / preset.inplane


@torch.no_grad()
def build_templates(model: ObjectModel, preset: TemplatePreset, device: str | torch.device = "cpu",
                    backbone: Backbone | None = None, progress: bool = True, chunk: int = 16) -> TemplateSet:
    """Render the templates of ``model`` and put them through the backbone (``chunk`` view points at a time)."""
    device = torch.device(device)
    net = backbone or shared_backbone(device)
    spec = preset.crop_spec
    R_view, angles = template_views(preset)
    stride = Backbone.stride(preset.feature)
    feats, weights, sizes, offsets = [], [], [], []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(R_view) * len(angles), desc="templates", unit="tpl", file=sys.stderr, dynamic_ncols=True)
    try:
        for start in range(0, len(R_view), chunk):
            r = render_crops(model, R_view[start : start + chunk], spec, angles=angles, progress=False,
                             with_normals=False)
            f = net.features(r["rgb"].to(device), preset.feature)
            feats.append(cell_normalise(f).half().cpu())
            weights.append(mask_weights(r["mask"], stride, tuple(f.shape[-2:])).half().cpu())
            sizes.append(r["box_size"])
            offsets.append(r["box_offset"])
            if bar is not None:
                bar.update(f.shape[0])
    finally:
        if bar is not None:
            bar.close()
    rotations = np.einsum("kij,vjl->vkil", inplane_rotation(angles), R_view).reshape(-1, 3, 3)
    distance, K = render_camera(model, spec)
    entries = ViewEntries(rotations=rotations, box_size=torch.cat(sizes).cpu().numpy().astype(np.float64),
                          box_offset=torch.cat(offsets).cpu().numpy().astype(np.float64), distance=distance, K=K)
    return TemplateSet(features=torch.cat(feats), weights=torch.cat(weights), entries=entries,
                       mesh_hash=model.mesh_hash, preset=preset, fingerprint=net.fingerprint())


# --------------------------------------------------------------------------- the workspace


def check_output(out: Path, model: ObjectModel) -> None:
    """InputError, before any work, when ``out`` cannot become this part's templates workspace."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder (--out must be a workspace folder)")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: output folder does not exist")
    config = workspace_config(out) if out.is_dir() else None
    if config is None:
        return
    if config.get("method") != METHOD:
        raise InputError(f"{out}: holds a {config.get('method', 'unknown')} workspace; choose another --out")
    if config.get("mesh_hash") != model.mesh_hash:
        raise InputError(f"{out}: holds templates of mesh hash {config.get('mesh_hash')} but "
                         f"{model.source or model.name} has {model.mesh_hash}; choose another --out")


def build_workspace(model: ObjectModel, out: str | Path, preset: TemplatePreset, device: str = "auto",
                    progress: bool = True) -> tuple[Path, float]:
    """Build (or rebuild) the templates workspace ``out`` for ``model``; returns (folder, build seconds)."""
    from posekit.train.loop import resolve_device

    out = Path(out)
    check_output(out, model)
    dev = resolve_device(device)
    start = time.perf_counter()
    templates = build_templates(model, preset, dev, progress=progress)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    templates.save(out / TEMPLATES_NAME)
    write_json_atomic(out / CONFIG_NAME, {
        "method": METHOD,
        "preset": preset.to_dict(),
        "object": {"name": model.name, "obj_id": model.obj_id, "diameter": float(model.diameter),
                   "centered": model.center_shift is not None,
                   "cad": str(Path(model.source).resolve()) if model.source else None},
        "mesh_hash": model.mesh_hash,
        "backbone": {"network": "efficientnet-lite0 (ImageNet)", "map": preset.feature,
                     "fingerprint": templates.fingerprint},
        "templates": len(templates),
        "build_seconds": round(seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    return out, seconds


@dataclass
class TemplateWorkspace:
    """Templates ready to match on ``device``: the set, its folded reference matrix and the shared backbone."""

    method_name = "templates"  # the coarse method, as the estimate JSON records it

    path: Path
    config: dict
    templates: TemplateSet
    device: torch.device
    backbone: Backbone
    folded: torch.Tensor

    @property
    def mesh_hash(self) -> str:
        return self.templates.mesh_hash

    @property
    def preset(self) -> TemplatePreset:
        return self.templates.preset

    def check_mesh(self, model: ObjectModel) -> None:
        if model.mesh_hash != self.mesh_hash:
            raise InputError(f"templates workspace {self.path} was built for mesh hash {self.mesh_hash} "
                             f"but {model.source or model.name} has {model.mesh_hash}{center_hint(self.config, model)}")

    def crop(self, images: torch.Tensor, boxes_xywh) -> tuple[torch.Tensor, np.ndarray]:
        return crop_boxes(images.to(self.device), boxes_xywh, self.preset.image_size, self.preset.crop_pad)

    @torch.no_grad()
    def match(self, crops: torch.Tensor, top_k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k templates of each (B, 3, S, S) crop: (indices (B, k), masked similarities (B, k))."""
        q = self.backbone.features(crops.to(self.device), self.preset.feature)
        sims = similarity_matrix(q, self.folded)
        vals, idx = sims.topk(min(int(top_k), sims.shape[1]), dim=1)
        return idx, vals

    def estimate(self, image: np.ndarray, camera: Camera, boxes_xywh, obj_id: int, top_k: int = 1,
                 correct_perspective: bool = True) -> list[list[PoseEstimate]]:
        """Top-k pose hypotheses per box (best first); scores are the masked feature similarities."""
        boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
        t0 = time.perf_counter()
        crops, _ = self.crop(image_tensor(image).expand(len(boxes), -1, -1, -1), boxes)
        t1 = time.perf_counter()
        idx, sims = self.match(crops, top_k)
        t2 = time.perf_counter()
        return poses_from_entries(self.templates.entries, boxes, camera, idx.cpu().numpy(), sims.cpu().numpy(),
                                  obj_id, correct_perspective, {"crop": t1 - t0, "match": t2 - t1},
                                  (t2 - t0) / max(len(boxes), 1))


def load_workspace(path: str | Path, device: str | torch.device = "cpu",
                   model: ObjectModel | None = None) -> TemplateWorkspace:
    """Open a workspace written by ``posekit train templates``; with ``model`` given, check its mesh hash."""
    from posekit.train.loop import resolve_device

    path = Path(path)
    config = workspace_config(path) if path.is_dir() else None
    if config is None:
        raise InputError(f"{path}: not a templates workspace (no config.json; build one with "
                         f"`posekit train templates --cad PART --out {path}`)")
    if config.get("method") != METHOD:
        raise InputError(f"{path}: a {config.get('method', 'unknown')} workspace, not templates")
    templates = TemplateSet.load(path / TEMPLATES_NAME)
    if templates.mesh_hash != config.get("mesh_hash"):
        raise InputError(f"{path / TEMPLATES_NAME}: templates of mesh hash {templates.mesh_hash} but the workspace "
                         f"is for {config.get('mesh_hash')}; build them again")
    dev = resolve_device(str(device))
    net = shared_backbone(dev)
    if templates.fingerprint != net.fingerprint():
        raise InputError(f"{path}: templates were made with other backbone weights (fingerprint "
                         f"{templates.fingerprint}, installed {net.fingerprint()}); build them again")
    folded = fold_references(templates.features.to(dev), templates.weights.to(dev))
    ws = TemplateWorkspace(path=path, config=config, templates=templates, device=dev, backbone=net, folded=folded)
    if model is not None:
        ws.check_mesh(model)
    return ws
