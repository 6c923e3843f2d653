"""Read and write datasets in the BOP layout (https://bop.felk.cvut.cz, bop_datasets_format.md).

Layout::

    <root>/camera.json                     fx, fy, cx, cy, width, height, depth_scale
    <root>/models[_eval]/models_info.json  per obj_id: diameter, bbox, symmetries (mm)
    <root>/models[_eval]/obj_{obj_id:06d}.ply
    <root>/test_targets_bop19.json         [{scene_id, im_id, obj_id, inst_count}, ...]
    <root>/<split>/<scene_id:06d>/scene_camera.json   per im_id: cam_K (9, row-major), depth_scale
    <root>/<split>/<scene_id:06d>/scene_gt.json       per im_id: [{cam_R_m2c (9), cam_t_m2c (3, mm), obj_id}]
    <root>/<split>/<scene_id:06d>/scene_gt_info.json  per im_id: [{bbox_obj, bbox_visib, px_count_*, visib_fract}]
    <root>/<split>/<scene_id:06d>/{rgb,depth}/{im_id:06d}.{png,jpg}
    <root>/<split>/<scene_id:06d>/{mask,mask_visib}/{im_id:06d}_{gt_idx:06d}.png

The reader parses the JSON files into typed records and loads images only when
asked (``Frame.rgb()``). The writer (``SceneWriter``, ``BopWriter``) writes the same
layout with atomic file writes and can resume a partly written scene: images are
written before the JSON files that list them, and ``scene_camera.json`` is written
last, so the image ids in ``scene_camera.json`` are exactly the complete frames.

Every format problem raises :class:`BopFormatError` naming the file and the key.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from posekit.data.jsonio import read_json, save_image_atomic, write_json_atomic
from posekit.errors import BopFormatError
from posekit.geometry.camera import Camera

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif")
MODEL_DIRS = ("models", "models_eval", "models_cad", "models_reconst")
TARGETS_FILE = "test_targets_bop19.json"


# --------------------------------------------------------------------------- records


@dataclass
class GtInfo:
    """One instance's entry of scene_gt_info.json: boxes [x, y, w, h] and pixel counts."""

    bbox_obj: tuple[int, int, int, int]
    bbox_visib: tuple[int, int, int, int]
    px_count_all: int
    px_count_valid: int
    px_count_visib: int
    visib_fract: float

    def to_json(self) -> dict:
        return {
            "bbox_obj": [int(v) for v in self.bbox_obj],
            "bbox_visib": [int(v) for v in self.bbox_visib],
            "px_count_all": int(self.px_count_all),
            "px_count_valid": int(self.px_count_valid),
            "px_count_visib": int(self.px_count_visib),
            "visib_fract": float(self.visib_fract),
        }


@dataclass
class GtInstance:
    """A ground-truth object instance in one image: model-to-camera R (3x3), t (3,) in mm."""

    obj_id: int
    R: np.ndarray
    t: np.ndarray
    info: GtInfo | None = None

    def __post_init__(self) -> None:
        self.obj_id = int(self.obj_id)
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)

    @property
    def T(self) -> np.ndarray:
        """4x4 model-to-camera transform (t in mm)."""
        from posekit.geometry.transforms import to_matrix4

        return to_matrix4(self.R, self.t)

    @property
    def visib_fract(self) -> float | None:
        return None if self.info is None else self.info.visib_fract

    def to_json(self) -> dict:
        return {
            "cam_R_m2c": [float(v) for v in self.R.reshape(-1)],
            "cam_t_m2c": [float(v) for v in self.t],
            "obj_id": int(self.obj_id),
        }


@dataclass
class FrameCamera:
    """One image's entry of scene_camera.json."""

    K: np.ndarray
    depth_scale: float | None = None
    R_w2c: np.ndarray | None = None
    t_w2c: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d: dict[str, Any] = {"cam_K": [float(v) for v in np.asarray(self.K, dtype=np.float64).reshape(-1)]}
        if self.depth_scale is not None:
            d["depth_scale"] = float(self.depth_scale)
        if self.R_w2c is not None:
            d["cam_R_w2c"] = [float(v) for v in np.asarray(self.R_w2c).reshape(-1)]
        if self.t_w2c is not None:
            d["cam_t_w2c"] = [float(v) for v in np.asarray(self.t_w2c).reshape(-1)]
        d.update(self.extra)
        return d


@dataclass
class Target:
    """One BOP test target: estimate ``inst_count`` instances of ``obj_id`` in image (scene_id, im_id)."""

    scene_id: int
    im_id: int
    obj_id: int
    inst_count: int

    def to_json(self) -> dict:
        return {"im_id": self.im_id, "inst_count": self.inst_count, "obj_id": self.obj_id, "scene_id": self.scene_id}


@dataclass
class Frame:
    """One image of a scene: its camera, ground truth, and lazily loaded pixels.

    ``camera`` holds K from scene_camera.json and the image size (camera.json, else the
    image header). ``depth_scale`` converts stored depth values to mm.
    """

    split: str
    scene_id: int
    im_id: int
    camera: Camera
    depth_scale: float
    gts: list[GtInstance]
    scene_dir: Path
    rgb_path: Path | None
    depth_path: Path | None
    scene_camera: FrameCamera | None = None

    def rgb(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB (grey images are expanded to 3 channels)."""
        if self.rgb_path is None:
            raise BopFormatError(f"{self.scene_dir / 'rgb'}: no image for im_id {self.im_id} ({self.im_id:06d}.png/.jpg)")
        return _load_image(self.rgb_path, mode="RGB")

    def depth(self) -> np.ndarray | None:
        """(H, W) float32 depth in mm (depth_scale applied; 0 = no measurement), or None without a depth image."""
        if self.depth_path is None:
            return None
        raw = _load_image(self.depth_path, mode=None)
        return raw.astype(np.float32) * np.float32(self.depth_scale)

    def mask_path(self, gt_idx: int, visib: bool = False) -> Path:
        folder = "mask_visib" if visib else "mask"
        return self.scene_dir / folder / f"{self.im_id:06d}_{gt_idx:06d}.png"

    def mask(self, gt_idx: int) -> np.ndarray | None:
        """(H, W) bool full silhouette of instance ``gt_idx``, or None where the dataset has no masks."""
        return self._mask(gt_idx, visib=False)

    def mask_visib(self, gt_idx: int) -> np.ndarray | None:
        """(H, W) bool visible part of instance ``gt_idx``, or None where the dataset has no masks."""
        return self._mask(gt_idx, visib=True)

    def _mask(self, gt_idx: int, visib: bool) -> np.ndarray | None:
        if not 0 <= gt_idx < len(self.gts):
            raise IndexError(f"gt_idx {gt_idx} out of range: image {self.im_id} has {len(self.gts)} instances")
        path = self.mask_path(gt_idx, visib)
        if not path.is_file():
            return None
        return _load_image(path, mode="L") > 127

    def gts_of(self, obj_id: int) -> list[tuple[int, GtInstance]]:
        """(gt_idx, instance) pairs of one object in this image."""
        return [(i, g) for i, g in enumerate(self.gts) if g.obj_id == obj_id]

    def observation(self):
        """This frame as an :class:`~posekit.data.types.Observation` (loads the RGB image)."""
        from posekit.data.types import Observation

        return Observation(image=self.rgb(), camera=self.camera)


@dataclass
class Scene:
    """One scene folder's parsed JSON files (no pixels)."""

    split: str
    scene_id: int
    path: Path
    cameras: dict[int, FrameCamera]
    gt: dict[int, list[GtInstance]]

    @property
    def im_ids(self) -> list[int]:
        """Image ids listed in scene_camera.json, sorted (the complete frames)."""
        return sorted(self.cameras)


def _load_image(path: Path, mode: str | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            if mode is not None and img.mode != mode:
                img = img.convert(mode)
            return np.array(img)
    except FileNotFoundError:
        raise BopFormatError(f"{path}: file not found") from None
    except OSError as exc:
        raise BopFormatError(f"{path}: cannot be read as an image ({exc})") from None


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except OSError as exc:
        raise BopFormatError(f"{path}: cannot be read as an image ({exc})") from None


def _find_image(folder: Path, im_id: int) -> Path | None:
    for ext in IMAGE_EXTS:
        p = folder / f"{im_id:06d}{ext}"
        if p.is_file():
            return p
    return None


# --------------------------------------------------------------------------- JSON parsing with named errors


def _numbers(value: Any, n: int | None, name: str, where: str) -> np.ndarray:
    """A list of ``n`` finite numbers (any n when None), or BopFormatError '<where>: <name> ...'."""
    if not isinstance(value, (list, tuple)):
        raise BopFormatError(f"{where}: {name} must be a list of numbers, got {type(value).__name__}")
    if n is not None and len(value) != n:
        raise BopFormatError(f"{where}: {name} has {len(value)} numbers, expected {n}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BopFormatError(f"{where}: {name} contains {v!r}, which is not a number")
        if not math.isfinite(v):
            raise BopFormatError(f"{where}: {name} contains {v}, which is not finite")
    return np.asarray(value, dtype=np.float64)


def _integer(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise BopFormatError(f"{where}: {name} must be an integer, got {value!r}")
    return int(value)


def _number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BopFormatError(f"{where}: {name} must be a finite number, got {value!r}")
    return float(value)


def _field(entry: dict, key: str, where: str) -> Any:
    if not isinstance(entry, dict):
        raise BopFormatError(f"{where}: must be an object, got {type(entry).__name__}")
    if key not in entry:
        raise BopFormatError(f"{where}: missing {key}")
    return entry[key]


def _id_dict(content: Any, path: Path) -> dict[int, Any]:
    """A dict keyed by strings of integers (BOP's im_id / obj_id keys)."""
    if not isinstance(content, dict):
        raise BopFormatError(f"{path}: top level must be an object keyed by id, got {type(content).__name__}")
    out: dict[int, Any] = {}
    for key, value in content.items():
        try:
            out[int(key)] = value
        except ValueError:
            raise BopFormatError(f"{path}: key {key!r} is not an integer id") from None
    return out


def parse_scene_gt(content: Any, path: Path) -> dict[int, list[GtInstance]]:
    """scene_gt.json content -> {im_id: [GtInstance]} (info not attached)."""
    name = str(path)
    out: dict[int, list[GtInstance]] = {}
    for im_id, entries in _id_dict(content, path).items():
        if not isinstance(entries, list):
            raise BopFormatError(f"{path}: key '{im_id}' must be a list of instances")
        gts = []
        for i, e in enumerate(entries):
            where = f"{name}: key '{im_id}' entry {i}"
            R = _numbers(_field(e, "cam_R_m2c", where), 9, "cam_R_m2c", where)
            t = _numbers(_field(e, "cam_t_m2c", where), 3, "cam_t_m2c", where)
            obj_id = _integer(_field(e, "obj_id", where), "obj_id", where)
            gts.append(GtInstance(obj_id=obj_id, R=R.reshape(3, 3), t=t))
        out[im_id] = gts
    return out


def parse_gt_info(e: Any, where: str) -> GtInfo:
    bbox_obj = _numbers(_field(e, "bbox_obj", where), 4, "bbox_obj", where)
    bbox_visib = _numbers(_field(e, "bbox_visib", where), 4, "bbox_visib", where)
    return GtInfo(
        bbox_obj=tuple(int(v) for v in bbox_obj),
        bbox_visib=tuple(int(v) for v in bbox_visib),
        px_count_all=_integer(_field(e, "px_count_all", where), "px_count_all", where),
        px_count_valid=_integer(_field(e, "px_count_valid", where), "px_count_valid", where),
        px_count_visib=_integer(_field(e, "px_count_visib", where), "px_count_visib", where),
        visib_fract=_number(_field(e, "visib_fract", where), "visib_fract", where),
    )


def parse_scene_gt_info(content: Any, path: Path) -> dict[int, list[GtInfo]]:
    """scene_gt_info.json content -> {im_id: [GtInfo]}."""
    out: dict[int, list[GtInfo]] = {}
    for im_id, entries in _id_dict(content, path).items():
        if not isinstance(entries, list):
            raise BopFormatError(f"{path}: key '{im_id}' must be a list of instances")
        out[im_id] = [parse_gt_info(e, f"{path}: key '{im_id}' entry {i}") for i, e in enumerate(entries)]
    return out


def parse_scene_camera(content: Any, path: Path) -> dict[int, FrameCamera]:
    """scene_camera.json content -> {im_id: FrameCamera}."""
    out: dict[int, FrameCamera] = {}
    known = {"cam_K", "depth_scale", "cam_R_w2c", "cam_t_w2c"}
    for im_id, e in _id_dict(content, path).items():
        where = f"{path}: key '{im_id}'"
        K = _numbers(_field(e, "cam_K", where), 9, "cam_K", where).reshape(3, 3)
        ds = _number(e["depth_scale"], "depth_scale", where) if "depth_scale" in e else None
        R = _numbers(e["cam_R_w2c"], 9, "cam_R_w2c", where).reshape(3, 3) if "cam_R_w2c" in e else None
        t = _numbers(e["cam_t_w2c"], 3, "cam_t_w2c", where) if "cam_t_w2c" in e else None
        extra = {k: v for k, v in e.items() if k not in known}
        out[im_id] = FrameCamera(K=K, depth_scale=ds, R_w2c=R, t_w2c=t, extra=extra)
    return out


def parse_camera_json(content: Any, path: Path) -> tuple[Camera, float]:
    """camera.json content -> (Camera, depth_scale)."""
    where = str(path)
    vals = {k: _number(_field(content, k, where), k, where) for k in ("fx", "fy", "cx", "cy", "width", "height")}
    ds = _number(content["depth_scale"], "depth_scale", where) if "depth_scale" in content else 1.0
    if vals["width"] <= 0 or vals["height"] <= 0:
        raise BopFormatError(f"{where}: width and height must be positive, got {vals['width']}x{vals['height']}")
    cam = Camera.from_fxfycxcy(vals["fx"], vals["fy"], vals["cx"], vals["cy"], int(vals["width"]), int(vals["height"]))
    return cam, ds


def parse_models_info(content: Any, path: Path) -> dict[int, dict]:
    """models_info.json content -> {obj_id: entry}, checking the fields BOP's tools rely on."""
    out: dict[int, dict] = {}
    for obj_id, e in _id_dict(content, path).items():
        where = f"{path}: key '{obj_id}'"
        _number(_field(e, "diameter", where), "diameter", where)
        for i, sym in enumerate(e.get("symmetries_discrete", [])):
            _numbers(sym, 16, f"symmetries_discrete[{i}]", where)
        for i, sym in enumerate(e.get("symmetries_continuous", [])):
            _numbers(_field(sym, "axis", f"{where} symmetries_continuous[{i}]"), 3, "axis", where)
            _numbers(_field(sym, "offset", f"{where} symmetries_continuous[{i}]"), 3, "offset", where)
        out[obj_id] = dict(e)
    return out


def parse_targets(content: Any, path: Path) -> list[Target]:
    """test_targets_bop19.json content -> [Target]."""
    if not isinstance(content, list):
        raise BopFormatError(f"{path}: top level must be a list of targets")
    out = []
    for i, e in enumerate(content):
        where = f"{path}: entry {i}"
        vals = {k: _integer(_field(e, k, where), k, where) for k in ("scene_id", "im_id", "obj_id", "inst_count")}
        out.append(Target(**vals))
    return out


# --------------------------------------------------------------------------- symmetries


def symmetry_transforms_from_info(info: dict, continuous_steps: int = 36) -> np.ndarray:
    """(K, 4, 4) model-frame symmetry transforms of a models_info entry, identity first (t in mm).

    Discrete symmetries are taken as listed; each continuous symmetry (rotation about
    ``axis`` through ``offset``) is sampled at ``continuous_steps`` angles 2*pi*i/steps,
    i = 0..steps-1, and composed with every discrete one. This is what ADD-S/MSSD-style
    metrics minimise over (cf. bop_toolkit misc.get_symmetry_transformations).
    """
    from scipy.spatial.transform import Rotation

    discrete = [np.eye(4)]
    for sym in info.get("symmetries_discrete", []) or []:
        discrete.append(np.asarray(sym, dtype=np.float64).reshape(4, 4))
    out = discrete
    for sym in info.get("symmetries_continuous", []) or []:
        axis = np.asarray(sym["axis"], dtype=np.float64)
        axis = axis / np.linalg.norm(axis)
        offset = np.asarray(sym.get("offset", [0.0, 0.0, 0.0]), dtype=np.float64)
        rots = []
        for i in range(continuous_steps):
            R = Rotation.from_rotvec(axis * (2.0 * np.pi * i / continuous_steps)).as_matrix()
            T = np.eye(4)
            T[:3, :3] = R
            T[:3, 3] = offset - R @ offset
            rots.append(T)
        out = [Tc @ Td for Td in out for Tc in rots]
    return np.stack(out)


# --------------------------------------------------------------------------- reader


class BopDataset:
    """A BOP dataset folder, read lazily: JSON files are parsed on first use and cached, images on demand."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise BopFormatError(f"{self.root}: BOP dataset folder not found")
        self._scenes: dict[tuple[str, int], Scene] = {}
        self._image_sizes: dict[tuple[str, int], tuple[int, int]] = {}

    def __repr__(self) -> str:
        return f"BopDataset({str(self.root)!r})"

    # ---- dataset-level files
    @cached_property
    def camera_json(self) -> tuple[Camera, float] | None:
        """(Camera, depth_scale) from camera.json, or None where the file is absent."""
        path = self.root / "camera.json"
        if not path.is_file():
            return None
        return parse_camera_json(read_json(path), path)

    @property
    def camera(self) -> Camera:
        """The dataset's camera: camera.json where present, else the first frame's K and image size."""
        if self.camera_json is not None:
            return self.camera_json[0]
        for split in self.splits():
            for scene_id in self.scene_ids(split):
                scene = self.scene(split, scene_id)
                if scene.im_ids:
                    return self.frame(split, scene_id, scene.im_ids[0]).camera
        raise BopFormatError(f"{self.root}: no camera.json and no scene with images")

    @cached_property
    def models_info(self) -> dict[int, dict]:
        """{obj_id: models_info entry} from models/models_info.json."""
        path = self.root / "models" / "models_info.json"
        return parse_models_info(read_json(path), path)

    @property
    def obj_ids(self) -> list[int]:
        return sorted(self.models_info)

    def model_path(self, obj_id: int, eval: bool = False) -> Path:
        """models/obj_{obj_id:06d}.ply, or the models_eval/ one when ``eval`` and it exists."""
        name = f"obj_{int(obj_id):06d}.ply"
        if eval and (self.root / "models_eval" / name).is_file():
            return self.root / "models_eval" / name
        path = self.root / "models" / name
        if not path.is_file():
            raise BopFormatError(f"{path}: model of obj_id {obj_id} not found")
        return path

    def load_model(self, obj_id: int, eval: bool = False):
        """Load an object's mesh (mm) as an ObjectModel with the symmetries of models_info.json."""
        from posekit.cad.load import load_model

        info = self.models_info.get(int(obj_id))
        if info is None:
            raise BopFormatError(f"{self.root / 'models' / 'models_info.json'}: no entry for obj_id {obj_id}")
        return load_model(self.model_path(obj_id, eval=eval), units="mm", obj_id=int(obj_id), symmetries=info)

    def symmetry_transforms(self, obj_id: int, continuous_steps: int = 36) -> np.ndarray:
        """(K, 4, 4) symmetry transforms of ``obj_id`` from models_info.json, identity first."""
        return symmetry_transforms_from_info(self.models_info[int(obj_id)], continuous_steps)

    # ---- splits and scenes
    def splits(self) -> list[str]:
        """Folders under root holding scene folders (test, train, train_pbr, val, ...), sorted."""
        out = []
        for d in sorted(self.root.iterdir()):
            if not d.is_dir() or d.name.startswith(".") or d.name in MODEL_DIRS:
                continue
            if any(s.is_dir() and s.name.isdigit() for s in d.iterdir()):
                out.append(d.name)
        return out

    def scene_ids(self, split: str) -> list[int]:
        d = self.root / split
        if not d.is_dir():
            raise BopFormatError(f"{d}: split folder not found")
        return sorted(int(s.name) for s in d.iterdir() if s.is_dir() and s.name.isdigit())

    def scene_dir(self, split: str, scene_id: int) -> Path:
        return self.root / split / f"{int(scene_id):06d}"

    def scene(self, split: str, scene_id: int) -> Scene:
        """Parse one scene's JSON files (cached). scene_gt_info.json is optional."""
        key = (split, int(scene_id))
        if key not in self._scenes:
            self._scenes[key] = read_scene(self.scene_dir(split, scene_id), split=split)
        return self._scenes[key]

    def frame(self, split: str, scene_id: int, im_id: int) -> Frame:
        scene = self.scene(split, scene_id)
        cam = scene.cameras.get(int(im_id))
        if cam is None:
            raise BopFormatError(f"{scene.path / 'scene_camera.json'}: no key '{im_id}'")
        rgb_path = _find_image(scene.path / "rgb", im_id) or _find_image(scene.path / "gray", im_id)
        depth_path = _find_image(scene.path / "depth", im_id)
        width, height = self._size(scene, rgb_path or depth_path)
        default_ds = self.camera_json[1] if self.camera_json is not None else 1.0
        depth_scale = cam.depth_scale if cam.depth_scale is not None else default_ds
        return Frame(
            split=split,
            scene_id=scene.scene_id,
            im_id=int(im_id),
            camera=Camera(cam.K, width, height),
            depth_scale=depth_scale,
            gts=scene.gt.get(int(im_id), []),
            scene_dir=scene.path,
            rgb_path=rgb_path,
            depth_path=depth_path,
            scene_camera=cam,
        )

    def _size(self, scene: Scene, image_path: Path | None) -> tuple[int, int]:
        """Image size: camera.json's, else the first image header of the scene (BOP scenes share one size)."""
        if self.camera_json is not None:
            return self.camera_json[0].size
        key = (scene.split, scene.scene_id)
        if key not in self._image_sizes:
            if image_path is None:
                raise BopFormatError(f"{scene.path}: no camera.json and no image to take the image size from")
            self._image_sizes[key] = _image_size(image_path)
        return self._image_sizes[key]

    def frames(self, split: str, scene_id: int | None = None) -> Iterator[Frame]:
        """Frames of one scene (or all scenes of the split), ordered by scene_id then im_id."""
        ids = self.scene_ids(split) if scene_id is None else [int(scene_id)]
        for sid in ids:
            for im_id in self.scene(split, sid).im_ids:
                yield self.frame(split, sid, im_id)

    # ---- targets
    def targets(self, path: str | Path | None = None, split: str = "test", min_visib_fract: float = 0.0) -> list[Target]:
        """Test targets from ``path`` (default test_targets_bop19.json), else derived from scene_gt.json.

        Derived targets: one per (scene, image, object) with inst_count = number of instances
        (see :func:`derive_targets`; the official BOP'19 lists differ, so prefer the file).
        """
        path = Path(path) if path is not None else self.root / TARGETS_FILE
        if path.is_file() or path != self.root / TARGETS_FILE:
            return parse_targets(read_json(path), path)
        return derive_targets(self, split, min_visib_fract)


def read_scene(scene_dir: str | Path, split: str | None = None) -> Scene:
    """Parse scene_camera.json, scene_gt.json (optional for unannotated scenes) and scene_gt_info.json.

    Only images listed in scene_camera.json count; gt entries for other images are ignored
    (a writer interrupted between its JSON files leaves them behind).
    """
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise BopFormatError(f"{scene_dir}: scene folder not found")
    cam_path = scene_dir / "scene_camera.json"
    cameras = parse_scene_camera(read_json(cam_path), cam_path)
    gt_path = scene_dir / "scene_gt.json"
    gt = parse_scene_gt(read_json(gt_path), gt_path) if gt_path.is_file() else {}
    info_path = scene_dir / "scene_gt_info.json"
    if info_path.is_file():
        infos = parse_scene_gt_info(read_json(info_path), info_path)
        for im_id, gts in gt.items():
            inf = infos.get(im_id)
            if inf is None or im_id not in cameras:
                continue
            if len(inf) != len(gts):
                raise BopFormatError(
                    f"{info_path}: key '{im_id}' has {len(inf)} entries but scene_gt.json has {len(gts)}"
                )
            for g, i in zip(gts, inf, strict=True):
                g.info = i
    gt = {k: v for k, v in gt.items() if k in cameras}
    return Scene(
        split=split if split is not None else scene_dir.parent.name,
        scene_id=int(scene_dir.name) if scene_dir.name.isdigit() else 0,
        path=scene_dir,
        cameras=cameras,
        gt=gt,
    )


def derive_targets(dataset: BopDataset, split: str = "test", min_visib_fract: float = 0.0) -> list[Target]:
    """One target per (scene, image, object) of ``split``'s ground truth, inst_count = instance count.

    Instances whose visib_fract is known and below ``min_visib_fract`` are not counted.
    """
    out = []
    for scene_id in dataset.scene_ids(split):
        scene = dataset.scene(split, scene_id)
        for im_id in scene.im_ids:
            counts: dict[int, int] = {}
            for g in scene.gt.get(im_id, []):
                if g.visib_fract is not None and g.visib_fract < min_visib_fract:
                    continue
                counts[g.obj_id] = counts.get(g.obj_id, 0) + 1
            out.extend(Target(scene_id, im_id, o, n) for o, n in sorted(counts.items()))
    return out


# --------------------------------------------------------------------------- writer


def write_camera_json(root: str | Path, camera: Camera, depth_scale: float = 1.0) -> Path:
    """<root>/camera.json with fx, fy, cx, cy, width, height, depth_scale."""
    K = camera.K
    content = {
        "cx": float(K[0, 2]), "cy": float(K[1, 2]), "depth_scale": float(depth_scale),
        "fx": float(K[0, 0]), "fy": float(K[1, 1]), "height": camera.height, "width": camera.width,
    }
    return write_json_atomic(Path(root) / "camera.json", content)


def write_models_info(models_dir: str | Path, infos: dict[int, dict]) -> Path:
    """<models_dir>/models_info.json from {obj_id: entry} (e.g. ObjectModel.models_info_entry())."""
    return write_json_atomic(Path(models_dir) / "models_info.json", {int(k): v for k, v in infos.items()})


def write_targets(root: str | Path, targets: Sequence[Target], name: str = TARGETS_FILE) -> Path:
    content = [t.to_json() for t in sorted(targets, key=lambda t: (t.scene_id, t.im_id, t.obj_id))]
    return write_json_atomic(Path(root) / name, content)


def write_scene_gt(path: str | Path, gt: dict[int, list[GtInstance]]) -> Path:
    return write_json_atomic(path, {im: [g.to_json() for g in gts] for im, gts in gt.items()})


def write_scene_gt_info(path: str | Path, gt: dict[int, list[GtInstance]]) -> Path:
    """scene_gt_info.json for the images whose instances all carry ``info``."""
    content = {
        im: [g.info.to_json() for g in gts]  # type: ignore[union-attr]
        for im, gts in gt.items()
        if all(g.info is not None for g in gts)
    }
    return write_json_atomic(path, content)


def write_scene_camera(path: str | Path, cameras: dict[int, FrameCamera]) -> Path:
    return write_json_atomic(path, {im: c.to_json() for im, c in cameras.items()})


def depth_to_uint16(depth_mm: np.ndarray, depth_scale: float, where: str = "depth") -> np.ndarray:
    """Depth in mm -> the uint16 values BOP stores (value * depth_scale = mm); raises if it overflows."""
    d = np.nan_to_num(np.asarray(depth_mm, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    q = np.round(d / depth_scale)
    if q.size and (q.max() > 65535 or q.min() < 0):
        raise ValueError(
            f"{where}: depth {d.max():.1f} mm does not fit a uint16 PNG at depth_scale {depth_scale} "
            f"(max {65535 * depth_scale:.0f} mm); use a larger depth_scale"
        )
    return q.astype(np.uint16)


class SceneWriter:
    """Writes (and appends to) one BOP scene folder; resumes from the frames already complete on disk.

    ``add_frame`` writes the frame's images at once (atomically) and keeps its JSON
    entries in memory; ``flush`` rewrites scene_gt_info.json, scene_gt.json and then
    scene_camera.json atomically (every ``flush_every`` frames and on ``close``). A frame
    counts as complete once it is in scene_camera.json, so after a crash the images of
    unflushed frames are simply overwritten when writing resumes.
    """

    def __init__(
        self,
        scene_dir: str | Path,
        rgb_ext: str = ".png",
        depth_scale: float = 1.0,
        flush_every: int = 100,
    ):
        self.scene_dir = Path(scene_dir)
        self.rgb_ext = rgb_ext if rgb_ext.startswith(".") else "." + rgb_ext
        self.depth_scale = float(depth_scale)
        self.flush_every = int(flush_every)
        self.cameras: dict[int, FrameCamera] = {}
        self.gt: dict[int, list[GtInstance]] = {}
        self._unflushed = 0
        if (self.scene_dir / "scene_camera.json").is_file():
            scene = read_scene(self.scene_dir)
            self.cameras = dict(scene.cameras)
            self.gt = {im: scene.gt.get(im, []) for im in scene.cameras}

    @property
    def im_ids(self) -> list[int]:
        """Image ids written so far (complete on disk or pending a flush), sorted."""
        return sorted(self.cameras)

    @property
    def next_im_id(self) -> int:
        return max(self.cameras) + 1 if self.cameras else 0

    def __len__(self) -> int:
        return len(self.cameras)

    def add_frame(
        self,
        rgb: np.ndarray,
        camera: Camera | np.ndarray,
        gts: Sequence[GtInstance],
        im_id: int | None = None,
        depth: np.ndarray | None = None,
        masks: Sequence[np.ndarray] | None = None,
        masks_visib: Sequence[np.ndarray] | None = None,
        depth_scale: float | None = None,
        camera_extra: dict | None = None,
    ) -> int:
        """Write one image (RGB uint8, optional depth in mm and per-instance bool masks); returns its im_id.

        ``camera`` is a Camera or a 3x3 K; ``masks[i]``/``masks_visib[i]`` belong to ``gts[i]``.
        Re-adding an existing im_id replaces it.
        """
        im_id = self.next_im_id if im_id is None else int(im_id)
        gts = list(gts)
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        for name, ms in (("masks", masks), ("masks_visib", masks_visib)):
            if ms is not None and len(ms) != len(gts):
                raise ValueError(f"{name} has {len(ms)} entries for {len(gts)} instances")
        ds = self.depth_scale if depth_scale is None else float(depth_scale)
        K = camera.K if isinstance(camera, Camera) else np.asarray(camera, dtype=np.float64).reshape(3, 3)
        d = self.scene_dir
        save_image_atomic(d / "rgb" / f"{im_id:06d}{self.rgb_ext}", rgb)
        if depth is not None:
            save_image_atomic(d / "depth" / f"{im_id:06d}.png", depth_to_uint16(depth, ds, f"im_id {im_id}"))
        for folder, ms in (("mask", masks), ("mask_visib", masks_visib)):
            for i, m in enumerate(ms or []):
                save_image_atomic(d / folder / f"{im_id:06d}_{i:06d}.png", np.asarray(m).astype(bool))
        self.cameras[im_id] = FrameCamera(K=K, depth_scale=ds, extra=dict(camera_extra or {}))
        self.gt[im_id] = gts
        self._unflushed += 1
        if self._unflushed >= self.flush_every:
            self.flush()
        return im_id

    def flush(self) -> None:
        """Rewrite the scene's JSON files atomically (scene_camera.json last: it marks frames complete)."""
        self.scene_dir.mkdir(parents=True, exist_ok=True)
        if any(g.info is not None for gts in self.gt.values() for g in gts):
            write_scene_gt_info(self.scene_dir / "scene_gt_info.json", self.gt)
        write_scene_gt(self.scene_dir / "scene_gt.json", self.gt)
        write_scene_camera(self.scene_dir / "scene_camera.json", self.cameras)
        self._unflushed = 0

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> SceneWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Flush what was written even on error: those frames' images are complete on disk.
        self.flush()


class BopWriter:
    """Writes a BOP split as scene folders of ``images_per_scene`` images each (BOP's 1000), resumably.

    ``add_frame`` appends frame number n = len(self) to scene n // images_per_scene as
    im_id n % images_per_scene. On construction the complete frames already on disk are
    counted, so a rerun continues where an interrupted one stopped.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train_synt",
        images_per_scene: int = 1000,
        rgb_ext: str = ".png",
        depth_scale: float = 0.1,
        flush_every: int = 100,
    ):
        self.root = Path(root)
        self.split = split
        self.images_per_scene = int(images_per_scene)
        self.rgb_ext = rgb_ext
        self.depth_scale = float(depth_scale)
        self.flush_every = int(flush_every)
        self._writer: SceneWriter | None = None
        self._count = self._count_complete()

    def _count_complete(self) -> int:
        split_dir = self.root / self.split
        if not split_dir.is_dir():
            return 0
        last = -1
        for s in split_dir.iterdir():
            if s.is_dir() and s.name.isdigit() and (s / "scene_camera.json").is_file():
                cams = parse_scene_camera(read_json(s / "scene_camera.json"), s / "scene_camera.json")
                if cams:
                    last = max(last, int(s.name) * self.images_per_scene + max(cams))
        return last + 1

    def __len__(self) -> int:
        """Number of frames written (the global index of the next one)."""
        return self._count

    def scene_writer(self, scene_id: int) -> SceneWriter:
        return SceneWriter(
            self.root / self.split / f"{int(scene_id):06d}",
            rgb_ext=self.rgb_ext, depth_scale=self.depth_scale, flush_every=self.flush_every,
        )

    def add_frame(self, rgb: np.ndarray, camera: Camera | np.ndarray, gts: Sequence[GtInstance], **kwargs) -> tuple[int, int]:
        """Append one frame (arguments as ``SceneWriter.add_frame``); returns (scene_id, im_id)."""
        scene_id, im_id = divmod(self._count, self.images_per_scene)
        target_dir = self.root / self.split / f"{scene_id:06d}"
        if self._writer is None or self._writer.scene_dir != target_dir:
            if self._writer is not None:
                self._writer.close()
            self._writer = self.scene_writer(scene_id)
        self._writer.add_frame(rgb, camera, gts, im_id=im_id, **kwargs)
        self._count += 1
        return scene_id, im_id

    def write_camera(self, camera: Camera, depth_scale: float | None = None) -> Path:
        return write_camera_json(self.root, camera, self.depth_scale if depth_scale is None else depth_scale)

    def write_models_info(self, infos: dict[int, dict], models_dir: str = "models") -> Path:
        return write_models_info(self.root / models_dir, infos)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> BopWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
