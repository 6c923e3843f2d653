"""Reading what a user hands to `posekit estimate`: an image, a camera, a box, an initial pose.

Every failure is an :class:`InputError` whose message names the file or option and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from posekit.errors import InputError
from posekit.geometry.camera import Camera


def load_image(path: str | Path) -> np.ndarray:
    """Read an RGB image (any format PIL reads) as (H, W, 3) uint8."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__})") from None


def _finite(values, n: int, message: str) -> np.ndarray:
    """``values`` as n finite float64 numbers (nested lists flattened); InputError(message) otherwise."""
    try:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(message) from None
    if a.size != n or not np.all(np.isfinite(a)):
        raise InputError(message)
    return a


def _read_json_object(path: Path, what: str, expected: str) -> dict:
    """A JSON object from ``path``; InputError naming the file when it is missing, not JSON or not an object."""
    if not path.is_file():
        raise InputError(f"{path}: no such {what} file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object {expected}")
    return data


def camera_from_json(path: str | Path, width: int | None = None, height: int | None = None) -> Camera:
    """A camera from a BOP camera.json (fx, fy, cx, cy, width, height) or a file holding cam_K (9 numbers).

    width/height default to the file's, else to the image's (passed by the caller).
    """
    path = Path(path)
    data = _read_json_object(path, "camera", "with fx, fy, cx, cy (or cam_K)")
    if "cam_K" in data:
        K = _finite(data["cam_K"], 9, f"{path}: key 'cam_K' must hold 9 finite numbers").reshape(3, 3)
    else:
        missing = [k for k in ("fx", "fy", "cx", "cy") if k not in data]
        if missing:
            raise InputError(f"{path}: missing intrinsics {', '.join(missing)} (need fx, fy, cx, cy or cam_K)")
        fx, fy, cx, cy = _finite([data[k] for k in ("fx", "fy", "cx", "cy")], 4,
                                 f"{path}: fx, fy, cx, cy must be finite numbers")
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    try:
        w = int(data.get("width", width or 0))
        h = int(data.get("height", height or 0))
    except (TypeError, ValueError):
        raise InputError(f"{path}: width and height must be integers") from None
    if w <= 0 or h <= 0:
        raise InputError(f"{path}: no image size (width, height) in the file and none given")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"{path}: focal lengths must be positive")
    return Camera(K, w, h)


def camera_from_option(text: str, width: int, height: int) -> Camera:
    """A camera from `--K fx,fy,cx,cy` and the image size."""
    fx, fy, cx, cy = _finite(text.split(","), 4, f"--K must be fx,fy,cx,cy (4 finite numbers), got {text!r}")
    if fx <= 0 or fy <= 0:
        raise InputError(f"--K focal lengths must be positive, got {text!r}")
    return Camera.from_fxfycxcy(fx, fy, cx, cy, width, height)


def image_id(image_path: str | Path) -> int | None:
    """The BOP image id a file name gives (000123.png -> 123), or None."""
    try:
        return int(Path(image_path).stem)
    except ValueError:
        return None


def scene_camera_entry(path: Path, image_path: Path, width: int, height: int) -> Camera:
    """The camera of one image from a BOP scene_camera.json ({"<im_id>": {"cam_K": ...}}), matched by the
    image's file name (000123.png -> 123)."""
    data = _read_json_object(path, "camera", "keyed by image id")
    im_id = image_id(image_path)
    if im_id is None:
        raise InputError(f"{path}: a BOP scene_camera.json, but the image name {Path(image_path).name} is not an "
                         "image id (e.g. 000123.png)")
    entry = data.get(str(im_id))
    if not isinstance(entry, dict) or "cam_K" not in entry:
        raise InputError(f"{path}: no cam_K for image id {im_id}")
    K = _finite(entry["cam_K"], 9, f"{path}: image {im_id}: 'cam_K' must hold 9 finite numbers").reshape(3, 3)
    return Camera(K, width, height)


def _is_scene_camera(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data) and all(str(k).isdigit() for k in data)


def check_camera_fits(cam: Camera, image_path: str | Path, width: int, height: int, source: str) -> None:
    """InputError unless the image has the camera's size and the principal point lies inside it."""
    if (cam.width, cam.height) != (width, height):
        raise InputError(f"{image_path}: image is {width}x{height} but the camera ({source}) is for "
                         f"{cam.width}x{cam.height} images")
    cx, cy = cam.K[0, 2], cam.K[1, 2]
    if not (0 <= cx <= width and 0 <= cy <= height):
        raise InputError(f"{image_path}: the camera's principal point ({cx:g}, {cy:g}) from {source} lies outside "
                         f"the {width}x{height} image: it is not this image's camera")


def find_camera(image: np.ndarray, image_path: str | Path, camera: str | Path | None,
                K: str | None) -> tuple[Camera | None, str]:
    """The image's camera and where it came from: --camera (camera.json, a cam_K file, or a BOP
    scene_camera.json), --K, else camera.json beside the image, else the BOP scene_camera.json of the image's
    scene folder (scene/rgb/000123.png -> scene/scene_camera.json). (None, what was looked for) when none."""
    h, w = image.shape[:2]
    image_path = Path(image_path)
    if camera is not None and K is not None:
        raise InputError("give either --camera or --K, not both")
    if K is not None:
        cam, source = camera_from_option(K, w, h), "--K"
    elif camera is not None:
        camera = Path(camera)
        if camera.is_file() and _is_scene_camera(camera):
            cam, source = scene_camera_entry(camera, image_path, w, h), f"{camera} (image {image_id(image_path)})"
        else:
            cam, source = camera_from_json(camera, w, h), str(camera)
    else:
        beside = image_path.parent / "camera.json"
        scene = image_path.parent.parent / "scene_camera.json"
        if beside.is_file():
            cam, source = camera_from_json(beside, w, h), f"{beside} (beside the image)"
        elif scene.is_file() and image_id(image_path) is not None:
            cam, source = scene_camera_entry(scene, image_path, w, h), f"{scene} (image {image_id(image_path)})"
        else:
            return None, f"no --camera / --K, no {beside}, no {scene}"
    check_camera_fits(cam, image_path, w, h, source)
    return cam, source


def resolve_camera(image: np.ndarray, image_path: str | Path, camera: str | Path | None, K: str | None) -> Camera:
    """The camera for an image (:func:`find_camera`); InputError when there is none."""
    cam, source = find_camera(image, image_path, camera, K)
    if cam is None:
        raise InputError(f"missing camera intrinsics ({source}): give --camera camera.json or --K fx,fy,cx,cy")
    return cam


def parse_bbox(text: str, camera: Camera) -> tuple[float, float, float, float]:
    """`x,y,w,h` in pixels; it must overlap the image and have a positive size."""
    x, y, w, h = _finite(text.split(","), 4, f"--bbox must be x,y,w,h (4 finite numbers), got {text!r}")
    if w <= 0 or h <= 0:
        raise InputError(f"--bbox {text}: width and height must be positive")
    if x >= camera.width or y >= camera.height or x + w <= 0 or y + h <= 0:
        raise InputError(f"--bbox {text} lies outside the {camera.width}x{camera.height} image")
    return (x, y, w, h)


def load_poses_json(path: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Initial poses from JSON: one {"R": 9 numbers or 3x3, "t": 3 numbers (mm)} (also cam_R_m2c / cam_t_m2c),
    or a `posekit estimate --json` output, whose every entry of "poses" is returned in order."""
    path = Path(path)
    data = _read_json_object(path, "pose", "with R and t")
    entries = [data]
    if "poses" in data:  # a `posekit estimate --json` output
        entries = data["poses"]
        if not (isinstance(entries, list) and entries and all(isinstance(e, dict) for e in entries)):
            raise InputError(f"{path}: 'poses' must be a non-empty list of objects with R and t")
    out = []
    for k, e in enumerate(entries):
        where = f"{path}" if len(entries) == 1 and entries[0] is data else f"{path}: poses[{k}]"
        R = e.get("R", e.get("cam_R_m2c"))
        t = e.get("t", e.get("cam_t_m2c"))
        if R is None or t is None:
            raise InputError(f"{where}: missing key 'R' or 't' (or cam_R_m2c / cam_t_m2c)")
        message = f"{where}: R must be 9 finite numbers (or 3x3) and t 3 (mm)"
        out.append((_finite(R, 9, message).reshape(3, 3), _finite(t, 3, message)))
    return out


def load_mask(path: str | Path, camera: Camera) -> np.ndarray:
    """The object's mask from an image file (e.g. a BOP mask_visib PNG), (H, W) float32 in {0, 1}: pixels of grey
    level >= 128 are the object; the mask must have the image's size."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such mask file")
    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable mask image ({exc.__class__.__name__})") from None
    h, w = grey.shape
    if (w, h) != (camera.width, camera.height):
        raise InputError(f"{path}: mask is {w}x{h} but the image is {camera.width}x{camera.height}")
    mask = (grey >= 128).astype(np.float32)
    if not mask.any():
        raise InputError(f"{path}: the mask is empty (no pixel of grey level >= 128)")
    return mask
