"""Backgrounds for synthetic images: procedural (noise, gradients, shapes, textures) or the user's own pictures.

Every background is a pure function of the numpy Generator it is given, so an image's background is fixed by
(job seed, image index). Procedural kinds, mixed at random:

- ``noise``: multi-octave value noise (bilinearly upsampled random grids), per-channel, like Perlin clouds;
- ``gradient``: a linear or radial blend of two random colours;
- ``shapes``: random filled rectangles, ellipses and polygons on a plain colour (clutter with hard edges);
- ``texture``: stripes / checkerboards / sinusoidal gratings at a random angle and period.

:class:`ImageBackgrounds` draws a random crop of one of the user's images, resized to the output size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from posekit.errors import InputError

PROCEDURAL_KINDS = ("noise", "gradient", "shapes", "texture")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3)


def value_noise(rng: np.random.Generator, width: int, height: int, octaves: int = 5, persistence: float = 0.55,
                base_cells: int = 3) -> np.ndarray:
    """(H, W, 3) float noise in [0, 1]: octaves of random grids, each twice as fine, bilinearly upsampled."""
    out = np.zeros((height, width, 3), np.float64)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base_cells * 2**o
        gh, gw = max(2, int(np.ceil(cells * height / max(width, height))) + 1), max(2, cells + 1)
        grid = rng.uniform(0.0, 1.0, size=(gh, gw, 3)).astype(np.float32)
        layer = np.stack(
            [np.asarray(Image.fromarray(grid[..., c], mode="F").resize((width, height), Image.BILINEAR))
             for c in range(3)], axis=-1)
        out += amp * layer
        total += amp
        amp *= persistence
    out /= total
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def noise_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    n = value_noise(rng, width, height, octaves=int(rng.integers(2, 7)))
    c0, c1 = _random_color(rng), _random_color(rng)
    if rng.random() < 0.5:  # two-colour clouds rather than rainbow noise
        n = n.mean(axis=-1, keepdims=True)
    return c0 + (c1 - c0) * n


def gradient_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    c0, c1 = _random_color(rng), _random_color(rng)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * np.pi)
        s = xs * np.cos(a) + ys * np.sin(a)
    else:
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        s = np.hypot(xs - cx, ys - cy)
    s = (s - s.min()) / max(s.max() - s.min(), 1e-6)
    return c0 + (c1 - c0) * s[..., None]


def shapes_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    img = Image.new("RGB", (width, height), tuple(int(v) for v in _random_color(rng)))
    draw = ImageDraw.Draw(img)
    scale = max(width, height)
    for _ in range(int(rng.integers(5, 40))):
        kind = int(rng.integers(0, 3))
        color = tuple(int(v) for v in _random_color(rng))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.02, 0.3) * scale
        if kind == 0:
            draw.rectangle([cx - r, cy - r * rng.uniform(0.2, 1.0), cx + r, cy + r * rng.uniform(0.2, 1.0)], fill=color)
        elif kind == 1:
            draw.ellipse([cx - r, cy - r * rng.uniform(0.2, 1.0), cx + r, cy + r * rng.uniform(0.2, 1.0)], fill=color)
        else:
            k = int(rng.integers(3, 8))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = r * rng.uniform(0.3, 1.0, k)
            draw.polygon([(float(cx + a * np.cos(b)), float(cy + a * np.sin(b))) for a, b in zip(rad, ang, strict=True)],
                         fill=color)
    return np.asarray(img, dtype=np.float64)


def texture_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    c0, c1 = _random_color(rng), _random_color(rng)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    a = rng.uniform(0, np.pi)
    u, v = xs * np.cos(a) + ys * np.sin(a), -xs * np.sin(a) + ys * np.cos(a)
    period = rng.uniform(4.0, 0.25 * max(width, height))
    kind = int(rng.integers(0, 3))
    if kind == 0:  # stripes
        s = (np.floor(u / period) % 2).astype(np.float64)
    elif kind == 1:  # checkerboard
        s = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float64)
    else:  # crossed sinusoidal gratings
        s = 0.5 + 0.25 * (np.sin(2 * np.pi * u / period) + np.sin(2 * np.pi * v / (period * rng.uniform(0.5, 2))))
    return c0 + (c1 - c0) * s[..., None]


_GENERATORS = {
    "noise": noise_background,
    "gradient": gradient_background,
    "shapes": shapes_background,
    "texture": texture_background,
}


def procedural_background(rng: np.random.Generator, width: int, height: int, kind: str | None = None) -> np.ndarray:
    """An (H, W, 3) uint8 background of ``kind`` (one of PROCEDURAL_KINDS; random when None)."""
    if kind is None:
        kind = PROCEDURAL_KINDS[int(rng.integers(0, len(PROCEDURAL_KINDS)))]
    if kind not in _GENERATORS:
        raise ValueError(f"unknown background kind {kind!r}; expected one of {PROCEDURAL_KINDS}")
    return np.clip(np.rint(_GENERATORS[kind](rng, width, height)), 0, 255).astype(np.uint8)


@dataclass
class ImageBackgrounds:
    """The user's background pictures (a folder, sorted by name so the choice is reproducible)."""

    root: Path
    files: list[Path]

    @classmethod
    def from_dir(cls, root: str | Path) -> ImageBackgrounds:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: --backgrounds must be a folder of images")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in the --backgrounds folder")
        for p in files:
            try:
                with Image.open(p) as im:
                    im.verify()
            except Exception as exc:  # PIL raises many types for broken files
                raise InputError(f"{p}: not a readable image ({exc})") from None
        return cls(root, files)

    def content_hash(self) -> str:
        """SHA-256 over the images' relative names and bytes (part of the job spec: a changed folder is a new job)."""
        h = hashlib.sha256()
        for p in self.files:
            h.update(str(p.relative_to(self.root)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
        return h.hexdigest()

    def sample(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        """A random crop (25-100 % of the image side, the output's aspect ratio) of a random image, resized."""
        path = self.files[int(rng.integers(0, len(self.files)))]
        with Image.open(path) as im:
            im = im.convert("RGB")
            iw, ih = im.size
            aspect = width / height
            scale = rng.uniform(0.25, 1.0)
            cw = min(iw, ih * aspect) * scale
            ch = cw / aspect
            x0, y0 = rng.uniform(0, iw - cw), rng.uniform(0, ih - ch)
            if rng.random() < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            crop = im.resize((width, height), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
            return np.asarray(crop, dtype=np.uint8).copy()
