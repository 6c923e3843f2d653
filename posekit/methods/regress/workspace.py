"""A trained regressor: detection (boxes, masks, scores) and the regressed pose of each detection.

``detect`` runs the whole network on an image; ``estimate`` (the coarse-stage interface of
:class:`posekit.estimate.pipeline.PoseEstimator`) regresses the poses of boxes given from elsewhere, through
the pose branch alone, so ``--method regress`` also works behind ``--bbox`` or another detector.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from posekit.cad.model import ObjectModel
from posekit.data.types import PoseEstimate
from posekit.errors import InputError
from posekit.geometry.camera import Camera
from posekit.methods.regress.network import PoseRCNN, decode_pose
from posekit.methods.regress.presets import RegressPreset
from posekit.methods.regress.train import read_config
from posekit.methods.viewbased import image_tensor


@dataclass
class RegressDetection:
    """One detection: object id, BOP box [x, y, w, h], score, visible mask (H, W) bool, regressed pose (R, t mm)."""

    obj_id: int
    bbox: tuple[float, float, float, float]
    score: float
    mask: np.ndarray
    R: np.ndarray
    t: np.ndarray


@dataclass
class RegressWorkspace:
    path: Path
    config: dict
    preset: RegressPreset
    net: PoseRCNN
    device: torch.device
    step: int
    obj_ids: list[int]  # label k (1-based) is obj_ids[k - 1]
    mesh_hashes: list[str]
    diameters: np.ndarray

    def covers(self, model: ObjectModel) -> bool:
        return model.mesh_hash in self.mesh_hashes

    def check_mesh(self, model: ObjectModel) -> None:
        if not self.covers(model):
            names = ", ".join(o["name"] for o in self.config["objects"])
            raise InputError(f"{self.path}: the regressor was not trained on {model.source or model.name} (mesh hash "
                             f"{model.mesh_hash[:16]}...; it knows {names})")

    @property
    def input_size(self) -> tuple[int, int]:
        """(long side, short side) that test images are resized to fit, as torchvision's transform keeps them: (W, H)
        of a landscape image (by default the preset's training size, e.g. 320 x 240)."""
        t = self.net.detector.transform
        return int(t.max_size), int(t.min_size[0])

    @input_size.setter
    def input_size(self, size: tuple[int, int]) -> None:
        """Run the network at another scale, e.g. a 640 x 480 photo at its own size where the preset trained at
        320 x 240 (the parts then appear twice as large as the test images of the training scale)."""
        w, h = (int(v) for v in size)
        if w < 32 or h < 32:
            raise InputError(f"detector input size must be at least 32 x 32, got {w} x {h}")
        t = self.net.detector.transform
        t.min_size, t.max_size = (min(w, h),), max(w, h)

    def label_of(self, model: ObjectModel) -> int:
        self.check_mesh(model)
        return self.mesh_hashes.index(model.mesh_hash) + 1

    @torch.no_grad()
    def detect(self, image: np.ndarray, camera: Camera, score_thresh: float = 0.5, top_k: int | None = None,
               labels: dict[int, int] | None = None, scale: float = 1.0) -> list[RegressDetection]:
        """Detections of one image, best first; ``labels`` maps the workspace's labels to the caller's object ids
        (default: the workspace's own ids); detections of other labels are dropped. ``top_k`` per object.
        ``scale``: the network's input at this multiple of :attr:`input_size` (2: a 640 x 480 photo at its own
        size where the preset trained at 320 x 240)."""
        size = self.input_size
        if scale != 1.0:
            self.input_size = (round(size[0] * scale), round(size[1] * scale))
        try:
            out = self.net([image_tensor(image)[0].to(self.device)])[0]
        finally:
            self.input_size = size
        boxes = out["boxes"].cpu().numpy().astype(np.float64)
        lab = out["labels"].cpu().numpy()
        scores = out["scores"].cpu().numpy()
        masks = (out["masks"][:, 0] > 0.5).cpu().numpy() if "masks" in out else np.zeros((len(boxes),) + image.shape[:2], bool)
        raw = out["pose"].cpu().numpy()
        mapping = labels or {k + 1: o for k, o in enumerate(self.obj_ids)}
        dets: list[RegressDetection] = []
        count: dict[int, int] = {}
        for i in np.argsort(-scores):
            obj = mapping.get(int(lab[i]))
            if obj is None or scores[i] < score_thresh:
                continue
            if top_k is not None and count.get(obj, 0) >= top_k:
                continue
            count[obj] = count.get(obj, 0) + 1
            R, t = decode_pose(raw[i : i + 1], boxes[i : i + 1], camera.K, self.diameters[lab[i] - 1 : lab[i]])
            x0, y0, x1, y1 = boxes[i]
            dets.append(RegressDetection(obj, (float(x0), float(y0), float(x1 - x0), float(y1 - y0)), float(scores[i]),
                                         masks[i], R[0], t[0]))
        return dets

    def for_model(self, model: ObjectModel) -> RegressCoarse:
        """The coarse stage for one part (the pipeline's interface), which must be one the regressor knows."""
        return RegressCoarse(self, model, self.label_of(model))

    @torch.no_grad()
    def regress(self, image: np.ndarray, camera: Camera, boxes_xywh, label: int,
                obj_id: int) -> list[list[PoseEstimate]]:
        """The regressed pose of each given box (BOP [x, y, w, h]) as the workspace's object ``label`` (1-based)."""
        t0 = time.perf_counter()
        b = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
        xyxy = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
        d = self.net.detector
        img = image_tensor(image)[0].to(self.device)
        images_t, _ = d.transform([img])
        feats = d.backbone(images_t.tensors)
        H, W = image.shape[:2]
        h, w = images_t.image_sizes[0]
        scale = torch.tensor([w / W, h / H] * 2, dtype=torch.float32, device=self.device)
        rois = [torch.as_tensor(xyxy, dtype=torch.float32, device=self.device) * scale]
        raw = self.net.pose(feats, rois, images_t.image_sizes,
                            torch.full((len(b),), label, dtype=torch.long, device=self.device)).cpu().numpy()
        R, t = decode_pose(raw, xyxy, camera.K, np.full(len(b), self.diameters[label - 1]))
        dt = time.perf_counter() - t0
        return [[PoseEstimate(obj_id=obj_id, R=R[i], t=t[i], score=1.0, time=dt / max(len(b), 1),
                              timings={"regress": dt})] for i in range(len(b))]


@dataclass
class RegressCoarse:
    """A regressor bound to one part: what :class:`~posekit.estimate.pipeline.PoseEstimator` calls."""

    method_name = "regress"  # the coarse method, as the estimate JSON records it

    workspace: RegressWorkspace
    model: ObjectModel
    label: int
    uses_detection_poses = True  # behind its own detections, the poses it regressed there are the coarse poses

    def estimate(self, image, camera, boxes_xywh, obj_id: int, top_k: int = 1,
                 correct_perspective: bool = True) -> list[list[PoseEstimate]]:
        return self.workspace.regress(image, camera, boxes_xywh, self.label, obj_id)

    def check_mesh(self, model: ObjectModel) -> None:
        if model.mesh_hash != self.model.mesh_hash:
            self.workspace.check_mesh(model)


def load_workspace(path: str | Path, device: str | torch.device = "cpu",
                   models: list[ObjectModel] | None = None) -> RegressWorkspace:
    """Open a workspace of ``posekit train regress``; with ``models``, each must be one it was trained on."""
    from posekit.train.checkpoint import load_weights
    from posekit.train.loop import checkpoint_path, resolve_device

    path = Path(path)
    cfg = read_config(path)
    try:
        preset = RegressPreset.from_dict(cfg["preset"])
        objs = cfg["objects"]
        hashes = [o["mesh_hash"] for o in objs]
        diam = np.array([float(o["diameter"]) for o in objs])
        ids = [int(o["obj_id"]) if o.get("obj_id") is not None else k + 1 for k, o in enumerate(objs)]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path / 'config.json'}: unreadable regressor config ({exc})") from None
    if not checkpoint_path(path).is_file():
        raise InputError(f"{path}: no checkpoint yet (train it with `posekit train regress`)")
    dev = resolve_device(str(device))
    net = PoseRCNN(preset, len(objs))
    step = load_weights(net, checkpoint_path(path))
    ws = RegressWorkspace(path=path, config=cfg, preset=preset, net=net.to(dev).eval(), device=dev, step=step,
                          obj_ids=ids, mesh_hashes=hashes, diameters=diam)
    for m in models or []:
        ws.check_mesh(m)
    return ws
