"""Batched, seeded image augmentation in torch for training on synthetic renders (the AAE's "augmented" inputs).

Everything works on a batch (B, C, S, S) of float images in [0, 1] on any device and draws its
randomness from one ``torch.Generator``, so a run is reproducible and a resumed run continues the
same stream. The pipeline of :class:`Augmenter` (after Sundermeyer et al., ECCV 2018, Sec. 3.3):

1. **lighting**: the clean render is re-shaded from its camera-frame normals (stored with the
   render cache) with a random light direction, ambient / diffuse balance and a specular lobe —
   "shading jitter" on one cached render per rotation, rather than several renders per rotation;
2. **box jitter**: the crop window is shifted and scaled at random (``affine_grid`` +
   ``grid_sample``), as a detector's box would be off;
3. **background**: composited through the (resampled) mask: procedural colours, gradients, value
   noise, random shapes and stripes, or crops of the user's own images;
4. **occluders**: random convex polygons and ellipses, plain or textured, covering up to ~30 %;
5. **colour**: brightness, contrast, saturation, hue rotation, per-channel gain;
6. **blur** (Gaussian, per-sample sigma) and **noise** (Gaussian, per-sample sigma).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------- random helpers


def _u(gen: torch.Generator, *shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """Uniform numbers in [lo, hi) of ``shape`` on the generator's device."""
    return torch.rand(*shape, generator=gen, device=gen.device) * (hi - lo) + lo


def _coin(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    """(n,) booleans, each True with probability p."""
    return torch.rand(n, generator=gen, device=gen.device) < p


def _pixel_grid(size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, S) x and y coordinates of pixel centres in [-1, 1] (align_corners=False convention)."""
    c = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return xx, yy


# --------------------------------------------------------------------------- backgrounds


def value_noise(n: int, size: int, gen: torch.Generator, octaves: int = 4, base: int = 3) -> torch.Tensor:
    """(n, 3, S, S) multi-octave value noise in [0, 1]: random grids, each twice as fine, bilinearly upsampled."""
    out = torch.zeros(n, 3, size, size, device=gen.device)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base * 2**o + 1
        grid = _u(gen, n, 3, cells, cells)
        out += amp * F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
        total += amp
        amp *= 0.55
    out /= total
    lo = out.amin(dim=(1, 2, 3), keepdim=True)
    hi = out.amax(dim=(1, 2, 3), keepdim=True)
    return (out - lo) / (hi - lo).clamp_min(1e-6)


def _gradient(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3, S, S) linear blends of two random colours along a random direction."""
    xx, yy = _pixel_grid(size, gen.device)
    a = _u(gen, n, 1, 1, hi=2 * math.pi)
    t = (torch.cos(a) * xx + torch.sin(a) * yy) * 0.5 + 0.5  # (n, S, S)
    c0, c1 = _u(gen, n, 3, 1, 1), _u(gen, n, 3, 1, 1)
    return c0 + (c1 - c0) * t.unsqueeze(1).clamp(0, 1)


def _stripes(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3, S, S) sinusoidal gratings / stripes of two colours at a random angle and period."""
    xx, yy = _pixel_grid(size, gen.device)
    a = _u(gen, n, 1, 1, hi=math.pi)
    freq = _u(gen, n, 1, 1, lo=2.0, hi=12.0)
    phase = _u(gen, n, 1, 1, hi=2 * math.pi)
    s = torch.sin((torch.cos(a) * xx + torch.sin(a) * yy) * freq * math.pi + phase)
    hard = _coin(gen, n, 0.5).view(n, 1, 1)
    t = torch.where(hard, (s > 0).float(), s * 0.5 + 0.5)
    c0, c1 = _u(gen, n, 3, 1, 1), _u(gen, n, 3, 1, 1)
    return c0 + (c1 - c0) * t.unsqueeze(1)


def _ellipse_masks(n: int, size: int, gen: torch.Generator, radius: tuple[float, float],
                   centre: float = 1.0) -> torch.Tensor:
    """(n, 1, S, S) filled ellipses: random centre in [-centre, centre]², radii in ``radius`` (units of S/2)."""
    xx, yy = _pixel_grid(size, gen.device)
    cx, cy = _u(gen, n, 1, 1, lo=-centre, hi=centre), _u(gen, n, 1, 1, lo=-centre, hi=centre)
    rx, ry = _u(gen, n, 1, 1, lo=radius[0], hi=radius[1]), _u(gen, n, 1, 1, lo=radius[0], hi=radius[1])
    a = _u(gen, n, 1, 1, hi=math.pi)
    dx, dy = xx - cx, yy - cy
    u = (torch.cos(a) * dx + torch.sin(a) * dy) / rx
    v = (-torch.sin(a) * dx + torch.cos(a) * dy) / ry
    return (u * u + v * v <= 1.0).float().unsqueeze(1)


def _polygon_masks(n: int, size: int, gen: torch.Generator, radius: tuple[float, float], corners: int = 5,
                   centre: float = 1.0) -> torch.Tensor:
    """(n, 1, S, S) filled random convex polygons (corners at sorted random angles, inside = left of every edge)."""
    xx, yy = _pixel_grid(size, gen.device)
    cx, cy = _u(gen, n, 1, lo=-centre, hi=centre), _u(gen, n, 1, lo=-centre, hi=centre)
    ang, _ = torch.sort(_u(gen, n, corners, hi=2 * math.pi), dim=1)
    r = _u(gen, n, corners, lo=radius[0], hi=radius[1])
    px, py = cx + r * torch.cos(ang), cy + r * torch.sin(ang)  # (n, k), counter-clockwise in (x, y)
    qx, qy = torch.roll(px, -1, dims=1), torch.roll(py, -1, dims=1)
    # cross((q - p), (pixel - p)) >= 0 for all edges of a counter-clockwise convex polygon
    ex, ey = (qx - px)[..., None, None], (qy - py)[..., None, None]
    cross = ex * (yy - py[..., None, None]) - ey * (xx - px[..., None, None])
    return (cross >= 0).all(dim=1, keepdim=True).float()


def _shapes(n: int, size: int, gen: torch.Generator, count: int = 6) -> torch.Tensor:
    """(n, 3, S, S) random ellipses and polygons of random colours on a plain colour (clutter with hard edges)."""
    out = _u(gen, n, 3, 1, 1).expand(n, 3, size, size).clone()
    for i in range(count):
        m = (_ellipse_masks if i % 2 else _polygon_masks)(n, size, gen, (0.1, 0.6))
        out = out * (1 - m) + _u(gen, n, 3, 1, 1) * m
    return out


BACKGROUND_KINDS = ("plain", "gradient", "noise", "shapes", "stripes")


def _plain(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    return _u(gen, n, 3, 1, 1).expand(n, 3, size, size)


def _noise(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Value noise, half of it as two-colour clouds rather than rainbow noise."""
    noise = value_noise(n, size, gen)
    grey = _coin(gen, n, 0.5).view(n, 1, 1, 1)
    c0, c1 = _u(gen, n, 3, 1, 1), _u(gen, n, 3, 1, 1)
    return torch.where(grey, c0 + (c1 - c0) * noise.mean(1, keepdim=True), noise)


_MAKERS = (_plain, _gradient, _noise, _shapes, _stripes)


def procedural_backgrounds(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3, S, S) backgrounds in [0, 1], each of a random kind among :data:`BACKGROUND_KINDS`.

    Each kind is made only for the samples that drew it (one batched call per kind).
    """
    kind = torch.randint(0, len(BACKGROUND_KINDS), (n,), generator=gen, device=gen.device)
    out = torch.empty(n, 3, size, size, device=gen.device)
    for k, make in enumerate(_MAKERS):
        idx = (kind == k).nonzero(as_tuple=True)[0]
        if len(idx):
            out[idx] = make(len(idx), size, gen)
    return out


def load_background_images(folder: str | Path, size: int, limit: int = 2000) -> torch.Tensor:
    """(M, 3, 2S, 2S) float pool of the user's images (png/jpg) resized to 2S for random crops; InputError if none."""
    import numpy as np
    from PIL import Image

    from posekit.errors import InputError

    folder = Path(folder)
    suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes)[:limit] if folder.is_dir() else []
    if not files:
        raise InputError(f"{folder}: no background images (.png/.jpg) found there")
    imgs = []
    for p in files:
        try:
            im = Image.open(p).convert("RGB").resize((2 * size, 2 * size), Image.BILINEAR)
        except OSError as exc:
            raise InputError(f"{p}: unreadable background image ({exc})") from None
        imgs.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    return torch.stack(imgs).float() / 255.0


def image_backgrounds(pool: torch.Tensor, n: int, size: int, gen: torch.Generator,
                      scale: tuple[float, float] = (0.5, 1.0)) -> torch.Tensor:
    """(n, 3, S, S) random crops (``scale`` x the side, random place, random flip) of images in ``pool``."""
    idx = torch.randint(0, pool.shape[0], (n,), generator=gen, device=gen.device)
    src = pool[idx.to(pool.device)].to(gen.device)  # move the n drawn photos, not the whole pool, every call
    s = _u(gen, n, lo=scale[0], hi=scale[1])
    tx, ty = _u(gen, n, lo=-1.0, hi=1.0) * (1 - s), _u(gen, n, lo=-1.0, hi=1.0) * (1 - s)
    flip = torch.where(_coin(gen, n, 0.5), -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=gen.device)
    theta[:, 0, 0], theta[:, 1, 1] = s * flip, s
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta, (n, 3, size, size), align_corners=False)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)


# --------------------------------------------------------------------------- photometric


def relight(rgb: torch.Tensor, mask: torch.Tensor, normals: torch.Tensor, gen: torch.Generator,
            strength: float = 1.0) -> torch.Tensor:
    """Re-shade rendered objects for a random light, using their camera-frame normals.

    The clean renders are lit by a head light (light along the optical axis), so their shading is
    about ``a0 + d0 * max(n · v, 0)`` with v = (0, 0, -1). Each sample gets a new light direction
    l (within ~80° of the viewing direction), an ambient share a and a specular lobe; pixels are
    multiplied by (a + (1 - a) max(n · l, 0)) / (a0 + (1 - a0) max(n · v, 0)) (clamped) and a
    highlight is added. Where the normal is unknown (zero) the pixel is left alone.
    """
    n = rgb.shape[0]
    theta = _u(gen, n, hi=1.4 * strength)
    phi = _u(gen, n, hi=2 * math.pi)
    light = torch.stack([torch.sin(theta) * torch.cos(phi), torch.sin(theta) * torch.sin(phi), -torch.cos(theta)], 1)
    amb = _u(gen, n, lo=0.15, hi=0.6).view(n, 1, 1, 1)
    lam = (normals * light.view(n, 3, 1, 1)).sum(1, keepdim=True).clamp_min(0.0)
    clean = (-normals[:, 2:3]).clamp_min(0.0)
    a0 = 0.4
    gain = (amb + (1 - amb) * lam) / (a0 + (1 - a0) * clean)
    half = light + torch.tensor([0.0, 0.0, -1.0], device=rgb.device)
    half = half / half.norm(dim=1, keepdim=True).clamp_min(1e-6)
    spec_pow = _u(gen, n, lo=8.0, hi=64.0).view(n, 1, 1, 1)
    spec_amt = _u(gen, n, hi=0.35 * strength).view(n, 1, 1, 1)
    spec = spec_amt * (normals * half.view(n, 3, 1, 1)).sum(1, keepdim=True).clamp_min(0.0) ** spec_pow
    known = (normals.abs().sum(1, keepdim=True) > 0.5).float() * mask
    out = rgb * gain.clamp(0.25, 2.0) + spec
    return (known * out + (1 - known) * rgb).clamp(0.0, 1.0)


def color_jitter(img: torch.Tensor, gen: torch.Generator, brightness: float = 0.25, contrast: float = 0.4,
                 saturation: float = 0.5, hue: float = 0.08, channel_gain: float = 0.15) -> torch.Tensor:
    """Per-sample brightness (add), contrast (about the mean), saturation (about grey), hue rotation, channel gain."""
    n = img.shape[0]
    x = img + _u(gen, n, 1, 1, 1, lo=-brightness, hi=brightness)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * _u(gen, n, 1, 1, 1, lo=1 - contrast, hi=1 + contrast) + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * _u(gen, n, 1, 1, 1, lo=1 - saturation, hi=1 + saturation) + grey
    # Hue: rotate the chroma plane about the grey axis (Rodrigues' rotation about (1, 1, 1)/sqrt 3).
    a = _u(gen, n, lo=-hue, hi=hue) * 2 * math.pi
    c, s = torch.cos(a), torch.sin(a)
    k = 1.0 / 3.0
    r3 = math.sqrt(k)
    M = torch.stack([
        torch.stack([c + (1 - c) * k, (1 - c) * k - r3 * s, (1 - c) * k + r3 * s], -1),
        torch.stack([(1 - c) * k + r3 * s, c + (1 - c) * k, (1 - c) * k - r3 * s], -1),
        torch.stack([(1 - c) * k - r3 * s, (1 - c) * k + r3 * s, c + (1 - c) * k], -1),
    ], 1)  # (n, 3, 3)
    x = torch.einsum("nij,njhw->nihw", M, x)
    x = x * _u(gen, n, 3, 1, 1, lo=1 - channel_gain, hi=1 + channel_gain)
    return x.clamp(0.0, 1.0)


def gaussian_blur(img: torch.Tensor, sigma: torch.Tensor, max_radius: int | None = None) -> torch.Tensor:
    """Blur each sample with its own Gaussian ``sigma`` (n,) in pixels (0 = unchanged); one grouped conv per axis."""
    n, c, h, w = img.shape
    r = max_radius if max_radius is not None else max(1, int(math.ceil(3 * float(sigma.max()))))
    x = torch.arange(-r, r + 1, device=img.device, dtype=img.dtype)
    s = sigma.to(img.dtype).clamp_min(1e-3).view(n, 1)
    k = torch.exp(-0.5 * (x.view(1, -1) / s) ** 2)
    k = k / k.sum(1, keepdim=True)  # (n, 2r+1); sigma -> 0 gives a delta
    k = k.repeat_interleave(c, dim=0)  # (n*c, 2r+1)
    flat = F.pad(img.reshape(1, n * c, h, w), (r, r, r, r), mode="replicate")
    flat = F.conv2d(flat, k.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(flat, k.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)


# --------------------------------------------------------------------------- geometric


def jitter_theta(n: int, gen: torch.Generator, shift: float, scale: tuple[float, float]) -> torch.Tensor:
    """(n, 2, 3) affine_grid matrices: a crop window whose size is multiplied by s in ``scale`` and whose centre
    moves by up to ``shift`` of the window size in x and y (s > 1 shows more around the object)."""
    s = _u(gen, n, lo=scale[0], hi=scale[1])
    t = _u(gen, n, 2, lo=-2 * shift, hi=2 * shift)  # normalised units: the window spans 2
    theta = torch.zeros(n, 2, 3, device=gen.device)
    theta[:, 0, 0], theta[:, 1, 1] = s, s
    theta[:, :, 2] = t
    return theta


def warp(img: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``img`` through ``theta`` (zeros outside), bilinear, align_corners=False."""
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------- pipeline


@dataclass
class AugmentConfig:
    """Probabilities and ranges of :class:`Augmenter` (defaults follow the AAE paper's spirit)."""

    shift: float = 0.08  # max crop-centre offset, fraction of the crop size
    scale: tuple[float, float] = (0.85, 1.2)  # crop size multiplier
    relight_p: float = 0.9
    background_image_p: float = 0.5  # share of image backgrounds where a pool is given
    occlude_p: float = 0.5
    occlude_area: tuple[float, float] = (0.03, 0.30)  # fraction of the crop an occluder covers
    brightness: float = 0.25
    contrast: float = 0.4
    saturation: float = 0.5
    hue: float = 0.08
    channel_gain: float = 0.15
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # pixels at 64 px crops; scaled with the crop size
    noise_p: float = 0.5
    noise_sigma: float = 0.04


class Augmenter:
    """Turn clean object crops into training inputs; see the module docstring for the steps."""

    def __init__(self, config: AugmentConfig | None = None, backgrounds: torch.Tensor | None = None) -> None:
        self.config = config or AugmentConfig()
        self.backgrounds = backgrounds

    def occluders(self, n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask (n,1,S,S), texture (n,3,S,S)): one random polygon or ellipse per sample near the crop centre."""
        cfg = self.config
        area = _u(gen, n, 1, 1, lo=cfg.occlude_area[0], hi=cfg.occlude_area[1])
        # A shape of "radius" r (units of S/2) covers about pi r^2 / 4 of the crop.
        r = torch.sqrt(area * 4.0 / math.pi)
        ell = _ellipse_masks(n, size, gen, (1.0, 1.0), centre=0.7)
        poly = _polygon_masks(n, size, gen, (1.0, 1.0), centre=0.7)
        # Shapes were drawn with unit radius; shrink them about their own centre by resampling.
        theta = torch.zeros(n, 2, 3, device=gen.device)
        theta[:, 0, 0], theta[:, 1, 1] = 1.0 / r.view(n), 1.0 / r.view(n)
        theta[:, :, 2] = _u(gen, n, 2, lo=-0.6, hi=0.6) / r.view(n, 1)
        shape = torch.where(_coin(gen, n, 0.5).view(n, 1, 1, 1), ell, poly)
        mask = (warp(shape, theta) > 0.5).float()
        texture = _plain(n, size, gen).clone()
        textured = _coin(gen, n, 0.5).nonzero(as_tuple=True)[0]
        if len(textured):
            texture[textured] = procedural_backgrounds(len(textured), size, gen)
        return mask, texture

    def __call__(self, rgb: torch.Tensor, mask: torch.Tensor, normals: torch.Tensor | None,
                 gen: torch.Generator) -> torch.Tensor:
        """Augment clean crops ``rgb`` (n,3,S,S) in [0,1] with object ``mask`` (n,1,S,S) and camera-frame
        ``normals`` (n,3,S,S) or None; returns (n,3,S,S) in [0,1] on the same device."""
        cfg = self.config
        n, _, size, _ = rgb.shape
        x = rgb
        if normals is not None and cfg.relight_p > 0:
            lit = relight(x, mask, normals, gen)
            x = torch.where(_coin(gen, n, cfg.relight_p).view(n, 1, 1, 1), lit, x)
        theta = jitter_theta(n, gen, cfg.shift, cfg.scale)
        x, m = warp(x, theta), warp(mask, theta)
        bg = procedural_backgrounds(n, size, gen)
        if self.backgrounds is not None and len(self.backgrounds):
            use = _coin(gen, n, cfg.background_image_p).view(n, 1, 1, 1)
            bg = torch.where(use, image_backgrounds(self.backgrounds, n, size, gen), bg)
        x = m * x + (1 - m) * bg
        if cfg.occlude_p > 0:
            om, tex = self.occluders(n, size, gen)
            om = om * _coin(gen, n, cfg.occlude_p).view(n, 1, 1, 1).float()
            x = om * tex + (1 - om) * x
        x = color_jitter(x, gen, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, cfg.channel_gain)
        if cfg.blur_p > 0:
            k = size / 64.0
            sigma = _u(gen, n, lo=cfg.blur_sigma[0] * k, hi=cfg.blur_sigma[1] * k) * _coin(gen, n, cfg.blur_p)
            x = gaussian_blur(x, sigma, max_radius=max(1, int(math.ceil(3 * cfg.blur_sigma[1] * k))))
        if cfg.noise_p > 0:
            sd = _u(gen, n, 1, 1, 1, hi=cfg.noise_sigma) * _coin(gen, n, cfg.noise_p).view(n, 1, 1, 1)
            x = x + sd * torch.randn(x.shape, generator=gen, device=gen.device)
        return x.clamp(0.0, 1.0)
