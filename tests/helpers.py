"""What several test modules share: the bundled part, a LINEMOD-like camera, running the CLI, rendered scenes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from posekit.geometry.camera import Camera

REPO = Path(__file__).resolve().parent.parent
PART = REPO / "assets" / "bracket.stl"
CAM = Camera.from_fxfycxcy(572.4, 573.6, 325.3, 242.0, 640, 480)
K_OPT = "572.4,573.6,325.3,242.0"


def posekit_run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "posekit", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def rendered_scenes(part, n: int, seed: int):
    """Images of the part at random rotations and off-centre positions on procedural backgrounds, with boxes."""
    from posekit.geometry.boxcrop import mask_box
    from posekit.geometry.rotations import random_rotations
    from posekit.render.backgrounds import procedural_background
    from posekit.render.gl import OffscreenRenderer
    from posekit.render.types import RenderObject

    rng = np.random.default_rng(seed)
    out = []
    with OffscreenRenderer(CAM.width, CAM.height) as r:
        for R in random_rotations(n, rng):
            z = rng.uniform(550, 850)
            t = np.array([rng.uniform(-0.2, 0.2) * z, rng.uniform(-0.15, 0.15) * z, z])
            res = r.render(CAM, [RenderObject(part, R, t)], ambient=0.4)
            bg = procedural_background(rng, CAM.width, CAM.height)
            m = res.masks[0][..., None]
            img = np.where(m, res.rgb, bg).astype(np.uint8)
            out.append((img, mask_box(res.masks[0]), R, t))
    return out




def write_png16(path, samples: np.ndarray) -> None:
    """A 16-bit PNG of ``samples`` (H, W) grey or (H, W, 3) RGB, uint16; Pillow cannot write 16-bit RGB. Rows use
    the None, Sub and Up filters in turn, so a reader's unfiltering is exercised."""
    import struct
    import zlib

    a = np.asarray(samples, dtype=np.uint16)
    h, w = a.shape[:2]
    bpp = 6 if a.ndim == 3 else 2
    rows, prev = [], np.zeros(w * bpp, np.int64)
    for i in range(h):
        b = np.frombuffer(a[i].astype(">u2").tobytes(), np.uint8).astype(np.int64)
        kind = i % 3
        if kind == 1:
            b_f = b.copy()
            b_f[bpp:] = b[bpp:] - b[:-bpp]
        elif kind == 2:
            b_f = b - prev
        else:
            b_f = b
        rows.append(bytes([kind]) + (b_f % 256).astype(np.uint8).tobytes())
        prev = b

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2 if a.ndim == 3 else 0, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
                           + chunk(b"IEND", b""))
