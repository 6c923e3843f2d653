"""Atomic writes of JSON, text and images, and JSON reads that fail with the file's name.

Every write goes to a temporary file in the destination folder and is then moved
over the destination with ``os.replace``, so a crash never leaves a half-written
file: a reader sees either the old content or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from posekit.errors import BopFormatError

_IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temp file next to ``path``, then move it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _int_key(key: Any) -> tuple[int, Any]:
    try:
        return (0, int(key))
    except (TypeError, ValueError):
        return (1, str(key))


def bop_json_dumps(content: Any) -> str:
    """BOP's JSON layout: a top-level dict has one key per line (keys sorted numerically), values inline.

    Keys are written as strings; values are written by ``json.dumps`` (floats as
    their shortest exact repr, so reading back gives the same numbers).
    """
    if isinstance(content, dict):
        items = sorted(content.items(), key=lambda kv: _int_key(kv[0]))
        lines = [f"  {json.dumps(str(k))}: {json.dumps(_plain(v), sort_keys=True)}" for k, v in items]
        return "{\n" + ",\n".join(lines) + "\n}\n" if lines else "{}\n"
    if isinstance(content, list):
        lines = [f"  {json.dumps(_plain(v), sort_keys=True)}" for v in content]
        return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"
    return json.dumps(_plain(content), sort_keys=True) + "\n"


def _plain(value: Any) -> Any:
    """numpy scalars/arrays to plain Python numbers/lists, recursively (json cannot write numpy)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json_atomic(path: str | Path, content: Any) -> Path:
    """Write ``content`` to ``path`` in BOP's JSON layout, atomically."""
    return write_text_atomic(path, bop_json_dumps(content))


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing or unparsable file raises BopFormatError naming it."""
    path = Path(path)
    if not path.is_file():
        raise BopFormatError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise BopFormatError(f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BopFormatError(f"{path}: cannot be read ({exc})") from None


def save_image_atomic(path: str | Path, image: np.ndarray, jpeg_quality: int = 95) -> Path:
    """Save an image array atomically; the format follows the extension (.png, .jpg, .tif).

    uint8 (H, W) / (H, W, 3) / (H, W, 4) and uint16 (H, W) arrays are written as they are
    (uint16 PNG for depth); bool masks become uint8 0/255.
    """
    from PIL import Image

    path = Path(path)
    fmt = _IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported image extension {path.suffix!r}")
    arr = np.asarray(image)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        if arr.ndim != 2:
            raise ValueError(f"{path}: uint16 images must be (H, W), got {arr.shape}")
        img = Image.fromarray(arr)
    elif arr.dtype == np.uint8:
        img = Image.fromarray(arr)
    else:
        raise ValueError(f"{path}: image dtype must be uint8, uint16 or bool, got {arr.dtype}")
    kwargs: dict[str, Any] = {"quality": jpeg_quality} if fmt == "JPEG" else {}
    return atomic_write(path, lambda f: img.save(f, format=fmt, **kwargs))
