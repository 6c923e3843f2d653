"""Reading what a user hands to `posekit estimate`: an image, a camera, a box, an initial pose.

Every failure is an :class:`InputError` whose message names the file or option and the problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posekit.errors import InputError
from posekit.geometry.camera import Camera

#: EXIF Orientation tag values and the transposition that makes the image upright (what
#: ``PIL.ImageOps.exif_transpose`` applies; done here on the converted array so 16-bit data is read first)
_EXIF_ORIENTATION = 0x0112
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
            7: "TRANSVERSE", 8: "ROTATE_90"}
#: the sample depths a camera's data can have; high-depth images are scaled by the smallest that holds their maximum
_DEPTHS = (8, 10, 12, 14, 16, 24, 32)


@dataclass(frozen=True)
class LoadedImage:
    """An image as posekit uses it: ``rgb`` (H, W, 3) uint8, upright; the file's PIL ``mode``, its ``stored_size``
    (w, h) before the EXIF orientation, the ``orientation`` tag (1: none) and ``converted``, how its samples became
    8-bit RGB (empty for plain 8-bit RGB)."""

    rgb: np.ndarray
    mode: str
    stored_size: tuple[int, int]
    orientation: int = 1
    converted: str = ""

    @property
    def size(self) -> tuple[int, int]:
        return (self.rgb.shape[1], self.rgb.shape[0])

    def describe(self) -> str:
        """One line for the chosen-block: size, mode, conversion, orientation."""
        w, h = self.size
        parts = [f"{w}x{h} {self.mode}"]
        if self.converted:
            parts.append(self.converted)
        if self.orientation != 1:
            sw, sh = self.stored_size
            parts.append(f"EXIF orientation {self.orientation} applied (stored {sw}x{sh})")
        return ", ".join(parts)

    def record(self) -> dict:
        """JSON-ready: what was read and how it was turned into the RGB the estimate used."""
        return {"mode": self.mode, "stored_size": list(self.stored_size), "size": list(self.size),
                "exif_orientation": self.orientation, "converted": self.converted or "none (8-bit RGB)"}


def _depth_scale(values: np.ndarray) -> tuple[float, int]:
    """(divisor, bits) for high-depth samples: the full range of the smallest sample depth (8, 10, 12, 14, 16, ...
    bits) that holds the image's maximum. A 16-bit file from a 12-bit camera (maximum <= 4095) is scaled by 4095,
    one whose data fills 16 bits by 65535: never clipped, and not stretched to the image's own maximum (a dark
    picture stays dark)."""
    top = float(values.max()) if values.size else 0.0
    for bits in _DEPTHS:
        if top < 2 ** bits:
            return float(2 ** bits - 1), bits
    return top, 0


def _to_uint8(values: np.ndarray) -> tuple[np.ndarray, str]:
    """High-depth samples (any shape) as uint8 by :func:`_depth_scale`; floats in [0, 1] are taken as such."""
    a = np.asarray(values, dtype=np.float64)
    a = np.where(np.isfinite(a), np.maximum(a, 0.0), 0.0)
    if values.dtype.kind == "f" and (a.max() if a.size else 0.0) <= 1.0:
        div, how = 1.0, "floating point in [0, 1]"
    else:
        div, bits = _depth_scale(a)
        how = f"{bits}-bit data (maximum {a.max():.0f}) scaled by {div:.0f}" if bits else f"scaled by its maximum {div:.0f}"
    return np.clip(np.rint(a / max(div, 1e-12) * 255.0), 0, 255).astype(np.uint8), how


def _png16_rgb(im) -> np.ndarray | None:
    """The 16-bit samples (H, W, C) of a 16-bit RGB / RGBA PNG, which Pillow's own reading cuts to their high byte
    (rawmode ``RGB;16B``): the same compressed data is read a second time through the little-endian unpacker,
    which takes the low byte. None where the image is not such a PNG (or this Pillow cannot)."""
    from PIL import Image

    tile = getattr(im, "tile", None)
    if im.format != "PNG" or not tile or len(tile) != 1 or tile[0].args not in ("RGB;16B", "RGBA;16B"):
        return None
    try:
        with Image.open(im.filename) as low_im:
            t = low_im.tile[0]
            low_im.tile = [t._replace(args=t.args.replace(";16B", ";16L"))]
            low = np.asarray(low_im)
        high = np.asarray(im)
    except Exception:  # noqa: BLE001 - Pillow internals: fall back to its own (high-byte) reading
        return None
    return (high.astype(np.uint16) << 8) | low.astype(np.uint16)


def _as_rgb(im) -> tuple[np.ndarray, str]:
    """The image's samples as (H, W, 3) uint8 and how they were converted (empty: plain 8-bit RGB)."""
    mode = im.mode
    wide = _png16_rgb(im)
    if wide is not None:
        rgb, how = _to_uint8(wide[..., :3])
        return rgb, f"16-bit {'RGBA, alpha dropped' if wide.shape[-1] == 4 else 'RGB'}: {how}"
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float grey: Pillow's convert would clip at 255
        grey, how = _to_uint8(np.asarray(im))
        return np.repeat(grey[..., None], 3, axis=2), f"grey ({mode}): {how}"
    if mode == "RGB":
        return np.asarray(im), ""
    what = {"L": "8-bit grey", "LA": "8-bit grey, alpha dropped", "1": "1-bit", "P": "palette", "PA": "palette, alpha dropped",
            "RGBA": "alpha dropped", "RGBX": "padding dropped", "CMYK": "CMYK converted", "YCbCr": "YCbCr converted"}
    return np.asarray(im.convert("RGB")), what.get(mode, f"{mode} converted")


def read_image(path: str | Path) -> LoadedImage:
    """Read an image as a camera writes it (any format and mode PIL reads: 8/16-bit grey, 16-bit RGB PNG, palette,
    RGBA, CMYK JPEG, ...) as upright 8-bit RGB: high-depth samples scaled by :func:`_depth_scale`, alpha dropped,
    the EXIF orientation applied. InputError naming the file when it is missing, a directory or unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    if not path.exists():
        raise InputError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            stored = im.size
            mode = im.mode
            rgb, how = _as_rgb(im)
            orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except PermissionError:
        raise InputError(f"{path}: cannot be read (permission denied)") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    if orientation in _UPRIGHT:
        rgb = np.asarray(Image.fromarray(rgb).transpose(getattr(Image.Transpose, _UPRIGHT[orientation])))
    else:
        orientation = 1
    return LoadedImage(rgb=np.ascontiguousarray(rgb), mode=mode, stored_size=stored, orientation=orientation,
                       converted=how)


def load_image(path: str | Path) -> np.ndarray:
    """An image file as upright (H, W, 3) uint8 RGB (:func:`read_image`)."""
    return read_image(path).rgb


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


#: the keys a camera file may hold: intrinsics in one of three forms, the image size, and BOP's other camera keys
#: (read and ignored: depth_scale, the extrinsics cam_R_w2c / cam_t_w2c, elev, mode)
CAMERA_FORMS = ("K (3x3 or 9 numbers)", "cam_K (9 numbers)", "fx, fy, cx, cy")
CAMERA_KEYS = ("K", "cam_K", "fx", "fy", "cx", "cy", "width", "height")
CAMERA_IGNORED = ("depth_scale", "cam_R_w2c", "cam_t_w2c", "elev", "mode")


def camera_from_dict(data: dict, where: str, width: int | None = None, height: int | None = None) -> Camera:
    """A camera from a JSON object in any of posekit's accepted forms (``CAMERA_FORMS``: posekit's own ``K`` 3x3,
    BOP's ``cam_K``, or ``fx, fy, cx, cy``) with ``width`` / ``height``, or nested as ``{"camera": {...}}`` (what
    `posekit estimate --json` writes, whose other keys are its record). Unknown keys are an error listing the
    accepted ones. width/height default to the object's, else to the image's (passed by the caller)."""
    if isinstance(data.get("camera"), dict):
        data, where = data["camera"], f"{where}: camera"
    unknown = sorted(k for k in data if k not in CAMERA_KEYS + CAMERA_IGNORED)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; a camera has {' or '.join(CAMERA_FORMS)}"
                         f", and width, height (BOP's {', '.join(CAMERA_IGNORED)} are accepted)")
    given = [f for f, keys in (("K", ("K",)), ("cam_K", ("cam_K",)), ("fx, fy, cx, cy", ("fx", "fy", "cx", "cy")))
             if any(k in data for k in keys)]
    if len(given) > 1:
        raise InputError(f"{where}: intrinsics given twice ({' and '.join(given)}): keep one")
    if given == ["K"] or given == ["cam_K"]:
        key = given[0]
        K = _finite(data[key], 9, f"{where}: key {key!r} must hold 9 finite numbers (3x3)").reshape(3, 3)
        if not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
            raise InputError(f"{where}: key {key!r} is not a camera matrix (its last row must be 0, 0, 1)")
    else:
        missing = [k for k in ("fx", "fy", "cx", "cy") if k not in data]
        if missing:
            raise InputError(f"{where}: missing intrinsics {', '.join(missing)} (a camera has {' or '.join(CAMERA_FORMS)})")
        fx, fy, cx, cy = _finite([data[k] for k in ("fx", "fy", "cx", "cy")], 4,
                                 f"{where}: fx, fy, cx, cy must be finite numbers")
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    try:
        w = int(data.get("width", width or 0))
        h = int(data.get("height", height or 0))
    except (TypeError, ValueError):
        raise InputError(f"{where}: width and height must be integers") from None
    if w <= 0 or h <= 0:
        raise InputError(f"{where}: no image size (width, height) in the file and none given")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"{where}: focal lengths must be positive")
    return Camera(K, w, h)


def camera_from_json(path: str | Path, width: int | None = None, height: int | None = None) -> Camera:
    """A camera from a JSON file (:func:`camera_from_dict`: ``K`` 3x3, ``cam_K`` or ``fx, fy, cx, cy``, with width
    and height; also a `posekit estimate --json` output, whose ``camera`` it reads)."""
    path = Path(path)
    data = _read_json_object(path, "camera", f"with {' or '.join(CAMERA_FORMS)}")
    return camera_from_dict(data, str(path), width, height)


def camera_from_option(text: str, width: int, height: int) -> Camera:
    """A camera from `--K fx,fy,cx,cy` and the image size."""
    fx, fy, cx, cy = _finite(text.split(","), 4, f"--K must be fx,fy,cx,cy (4 finite numbers), got {text!r}")
    if fx <= 0 or fy <= 0:
        raise InputError(f"--K focal lengths must be positive, got {text!r}")
    return Camera.from_fxfycxcy(fx, fy, cx, cy, width, height)


#: the file endings read from a folder of photos (other files in it are left alone)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def image_paths(args) -> list[Path]:
    """The images that IMAGE arguments name, in order: a file as given (read later: an unreadable one is that
    image's problem), a folder as its files ending in ``IMAGE_SUFFIXES``, sorted by name. InputError naming the
    path for one that does not exist or a folder with no image in it, before any work."""
    out: list[Path] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise InputError(f"{path}: a folder with no image in it ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise InputError(f"{path}: no such image file")
    return out


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


def check_camera_fits(cam: Camera, image_path: str | Path, width: int, height: int, source: str,
                      orientation: str = "") -> None:
    """InputError unless the image (upright: ``orientation`` says how when its EXIF orientation turned it) has the
    camera's size and the principal point lies inside it."""
    if (cam.width, cam.height) != (width, height):
        raise InputError(f"{image_path}: image is {width}x{height}{f' after {orientation}' if orientation else ''} "
                         f"but the camera ({source}) is for {cam.width}x{cam.height} images")
    cx, cy = cam.K[0, 2], cam.K[1, 2]
    if not (0 <= cx <= width and 0 <= cy <= height):
        raise InputError(f"{image_path}: the camera's principal point ({cx:g}, {cy:g}) from {source} lies outside "
                         f"the {width}x{height} image: it is not this image's camera")


def find_camera(image: np.ndarray | LoadedImage, image_path: str | Path, camera: str | Path | None,
                K: str | None) -> tuple[Camera | None, str]:
    """The image's camera and where it came from: --camera (camera.json, a cam_K file, or a BOP
    scene_camera.json), --K, else camera.json beside the image, else the BOP scene_camera.json of the image's
    scene folder (scene/rgb/000123.png -> scene/scene_camera.json). (None, what was looked for) when none. The
    camera's size is checked against the upright image (a :class:`LoadedImage`'s EXIF orientation applied, and
    named in the message)."""
    orientation = ""
    if isinstance(image, LoadedImage):
        if image.orientation != 1:
            sw, sh = image.stored_size
            orientation = f"its EXIF orientation {image.orientation} (stored {sw}x{sh})"
        image = image.rgb
    h, w = image.shape[:2]
    image_path = Path(image_path)
    kind, where, source = camera_source(image_path, camera, K)
    if kind == "K":
        cam = camera_from_option(K, w, h)
    elif kind == "scene":
        cam = scene_camera_entry(where, image_path, w, h)
    elif kind == "file":
        cam = camera_from_json(where, w, h)
    else:
        return None, source
    check_camera_fits(cam, image_path, w, h, source, orientation)
    return cam, source


def camera_source(image_path: str | Path, camera: str | Path | None,
                  K: str | None) -> tuple[str | None, Path | None, str]:
    """Where :func:`find_camera` takes an image's camera from, without reading the image: (kind, file, description)
    with kind ``"K"`` (--K), ``"scene"`` (a BOP scene_camera.json, entry by the image's id), ``"file"`` (a camera
    JSON), or None (file None, the description says what was looked for)."""
    image_path = Path(image_path)
    if camera is not None and K is not None:
        raise InputError("give either --camera or --K, not both")
    if K is not None:
        return "K", None, "--K"
    if camera is not None:
        camera = Path(camera)
        if camera.is_file() and _is_scene_camera(camera):
            return "scene", camera, f"{camera} (image {image_id(image_path)})"
        return "file", camera, str(camera)
    beside = image_path.parent / "camera.json"
    scene = image_path.parent.parent / "scene_camera.json"
    if beside.is_file():
        return "file", beside, f"{beside} (beside the image)"
    if scene.is_file() and image_id(image_path) is not None:
        return "scene", scene, f"{scene} (image {image_id(image_path)})"
    return None, None, f"no --camera / --K, no {beside}, no {scene}"


def resolve_camera(image: np.ndarray | LoadedImage, image_path: str | Path, camera: str | Path | None, K: str | None) -> Camera:
    """The camera for an image (:func:`find_camera`); InputError when there is none."""
    cam, source = find_camera(image, image_path, camera, K)
    if cam is None:
        raise InputError(f"missing camera intrinsics ({source}): give --camera camera.json or --K fx,fy,cx,cy")
    return cam


#: the least side of a --bbox (pixels): two cells of the backbone's stride-8 map at the image's own resolution. Below
#: it the crop (resized up to the templates' size) holds almost no detail of the part, and the box-derived depth
#: (inversely proportional to the box's size) is off by 6 % or more for each pixel the box is off.
MIN_BOX_SIDE = 16
#: the least part of a --bbox's area that must lie inside the image
MIN_BOX_INSIDE = 0.5


def bbox_numbers(text: str) -> tuple[float, float, float, float]:
    """`x,y,w,h` as numbers, whatever the image: finite, each side at least ``MIN_BOX_SIDE`` pixels. InputError
    otherwise (what :func:`parse_bbox` checks before the box's place in the image)."""
    x, y, w, h = _finite(text.split(","), 4, f"--bbox must be x,y,w,h (4 finite numbers), got {text!r}")
    if w <= 0 or h <= 0:
        raise InputError(f"--bbox {text}: width and height must be positive")
    if min(w, h) < MIN_BOX_SIDE:
        raise InputError(f"--bbox {text}: a side of {min(w, h):g} px is too small (at least {MIN_BOX_SIDE} px: two "
                         "cells of the 8-px feature map; a pose from less is not to be trusted)")
    return (float(x), float(y), float(w), float(h))


def parse_bbox(text: str, camera: Camera) -> tuple[float, float, float, float]:
    """`x,y,w,h` in pixels: finite, each side at least ``MIN_BOX_SIDE`` pixels, at least ``MIN_BOX_INSIDE`` of its
    area inside the image. InputError otherwise, before any work."""
    x, y, w, h = bbox_numbers(text)
    if x >= camera.width or y >= camera.height or x + w <= 0 or y + h <= 0:
        raise InputError(f"--bbox {text} lies outside the {camera.width}x{camera.height} image")
    inside = (max(0.0, min(x + w, camera.width) - max(x, 0.0)) * max(0.0, min(y + h, camera.height) - max(y, 0.0)))
    if inside < MIN_BOX_INSIDE * w * h:
        raise InputError(f"--bbox {text}: only {100 * inside / (w * h):.0f} % of it lies inside the "
                         f"{camera.width}x{camera.height} image (at least {100 * MIN_BOX_INSIDE:.0f} % needed)")
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
