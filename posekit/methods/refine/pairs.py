"""Training pairs for the refiner: an observed image with its true pose, a perturbed initial pose, and the
zoom-in crops (observed, rendered at the initial pose, rendered mask) the network compares.

Two sources of observed images, both producing an :class:`ObservedBatch` -- a *patch* of a camera
image (its pixels, visible mask, the patch's intrinsics and the true pose), so that everything
after it is the same code as at test time, where the "patch" is the whole photo:

* :class:`SyntheticObserved` renders the patch on the fly with pyrender: the target at a random
  pose and apparent size, optionally another object in front of it, random lights and material,
  composited over procedural backgrounds, random occluders, colour jitter, blur and noise
  (``posekit.data.augment``), i.e. domain randomisation as in ``posekit render``, but only around
  the object, which is all the refiner ever looks at;
* :class:`BopObserved` reads a BOP dataset (e.g. ``posekit render``'s train_synt, or real
  training images) with ``BopDataset``: a random visible instance, its RGB and ``mask_visib``.

:func:`perturb_poses` draws initial poses around the truth with a coarse estimator's errors, and
:func:`make_pairs` builds the network input: the zoom window from the *initial* pose
(``zoom_window``, centred on the projected model origin, ``preset.window_scale`` x the projected
extent), the observed crop (``crop_images``), the rendering at the initial pose straight into
the crop's K (:func:`posekit.render.crops.render_in_crops`), and the labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from posekit.cad.decimate import decimate
from posekit.cad.model import ObjectModel
from posekit.cad.properties import sample_surface
from posekit.data.bop import symmetry_transforms_from_info
from posekit.errors import InputError
from posekit.geometry.camera import Camera
from posekit.geometry.crop import crop_images, crop_intrinsics, zoom_window
from posekit.geometry.rotations import random_rotations, so3_exp
from posekit.methods.refine.presets import RefinePreset
from posekit.render.crops import render_in_crops

#: The observed patch is rendered/cropped this many times the zoom window (room for pose noise).
PATCH_SCALE_RATIO = 1.8

#: LM-O's camera, the default for synthetic observations (any camera works; only perspective matters).
DEFAULT_CAMERA = Camera.from_fxfycxcy(572.4114, 573.57043, 325.2611, 242.04899, 640, 480)


@dataclass
class RefineObject:
    """One object as the refiner uses it: the mesh it renders, its loss points and its symmetries."""

    model: ObjectModel
    render_model: ObjectModel  # decimated proxy for fast rendering
    points: np.ndarray  # (N, 3) mm, surface samples for the point-matching loss
    symmetries: np.ndarray  # (S, 4, 4), identity first

    @property
    def diameter(self) -> float:
        return float(self.model.diameter)

    @property
    def corners(self) -> np.ndarray:
        return self.model.bbox_corners


def prepare_object(model: ObjectModel, preset: RefinePreset, continuous_steps: int = 36) -> RefineObject:
    """Decimate for rendering, sample loss points (fixed seed), expand symmetries."""
    return RefineObject(
        model=model,
        render_model=decimate(model, preset.max_faces) if preset.max_faces else model,
        points=sample_surface(model.vertices, model.faces, preset.n_points, seed=0),
        symmetries=symmetry_transforms_from_info(model.models_info_entry(), continuous_steps),
    )


def torch_rng(gen: torch.Generator) -> np.random.Generator:
    """A numpy Generator seeded from a torch Generator (so one resumable stream drives both)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
    return np.random.default_rng(seed)


def window_size(preset: RefinePreset, ratio: float = 1.0) -> tuple[int, int]:
    W, H = preset.crop_size
    return int(math.ceil(W * ratio)), int(math.ceil(H * ratio))


# --------------------------------------------------------------------------- observed images


@dataclass
class ObservedBatch:
    """Observed image patches with ground truth: images (B, 3, H, W) and visible masks (B, 1, H, W) in [0, 1]
    (torch), the patches' K (B, 3, 3), true poses R (B, 3, 3), t (B, 3) mm and object indices (B,) (numpy)."""

    images: torch.Tensor
    masks: torch.Tensor
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    obj_index: np.ndarray

    def __len__(self) -> int:
        return len(self.obj_index)


def _augment_photometric(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Colour jitter, blur and noise on observed patches (n, 3, H, W)."""
    from posekit.data.augment import color_jitter, gaussian_blur

    n = x.shape[0]
    x = color_jitter(x, gen)
    coin = (torch.rand(n, generator=gen, device=gen.device) < 0.5).float()
    sigma = (0.2 + 1.0 * torch.rand(n, generator=gen, device=gen.device)) * coin * x.shape[-1] / 96.0
    x = gaussian_blur(x, sigma, max_radius=max(1, int(math.ceil(3.6 * x.shape[-1] / 96.0))))
    sd = 0.03 * torch.rand(n, 1, 1, 1, generator=gen, device=gen.device)
    return (x + sd * torch.randn(x.shape, generator=gen, device=gen.device)).clamp(0.0, 1.0)


def _occlude(x: torch.Tensor, mask: torch.Tensor, p: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random polygons/ellipses over patches (n, 3, H, W); the visible mask loses what they cover."""
    from posekit.data.augment import AugmentConfig, Augmenter

    if p <= 0:
        return x, mask
    n, _, H, W = x.shape
    S = max(H, W)
    om, tex = Augmenter(AugmentConfig(occlude_area=(0.02, 0.12))).occluders(n, S, gen)
    om, tex = om[..., :H, :W], tex[..., :H, :W]
    om = om * (torch.rand(n, 1, 1, 1, generator=gen, device=gen.device) < p).float()
    return om * tex + (1 - om) * x, mask * (1 - om)


class SyntheticObserved:
    """Domain-randomised observed patches rendered on the fly (see the module docstring)."""

    #: crop side of a photo background, fraction of the photo loaded at 4x the patch side: 0.15-0.6 of a
    #: 640-px photo is 100-380 px, the extent of LM-O's zoom windows (objects 52-221 px, window 1.4 x 1.8 x that)
    PHOTO_CROP = (0.15, 0.6)

    def __init__(self, objects: list[RefineObject], preset: RefinePreset, renderer,
                 camera: Camera = DEFAULT_CAMERA, apparent_size: tuple[float, float] = (60.0, 240.0),
                 backgrounds: torch.Tensor | None = None) -> None:
        self.objects, self.preset, self.renderer, self.camera = objects, preset, renderer, camera
        self.apparent_size = apparent_size
        self.patch_size = self.patch_size_for(preset)
        self.backgrounds = backgrounds  # (M, 3, 4S, 4S) photos from ``load_photos``

    @classmethod
    def load_photos(cls, folder, preset: RefinePreset) -> torch.Tensor:
        """The user's background photos at 4x the patch side, the scale ``PHOTO_CROP`` is chosen for."""
        from posekit.data.augment import load_background_images

        return load_background_images(folder, 2 * max(cls.patch_size_for(preset)))

    @staticmethod
    def patch_size_for(preset: RefinePreset) -> tuple[int, int]:
        """(W, H) of the observed patches (the zoom crop x PATCH_SCALE_RATIO)."""
        return window_size(preset, PATCH_SCALE_RATIO)

    def _pose(self, obj: RefineObject, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        K = self.camera.K
        R = random_rotations(1, rng)[0]  # uniform on SO(3)
        size = rng.uniform(*self.apparent_size)
        z = K[0, 0] * obj.diameter / size
        u = rng.uniform(0.15, 0.85) * self.camera.width
        v = rng.uniform(0.15, 0.85) * self.camera.height
        t = np.array([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])
        # put the model's bbox centre (not its origin) at the drawn pixel
        centre = 0.5 * (obj.model.vertices.min(0) + obj.model.vertices.max(0))
        return R, t - R @ centre

    def _clutter(self, obj: RefineObject, t: np.ndarray, rng: np.random.Generator) -> list:
        """``preset.clutter`` objects (at most; uniform count) beside and behind the target, as in a real scene
        where the other objects of the set stand around it on the table: drawn from the same objects, at
        random rotations, centred 0.6-1.8 mean radii away in the image plane, 0-60 % of a diameter deeper."""
        from posekit.render.types import RenderObject

        out = []
        for _ in range(int(rng.integers(0, self.preset.clutter + 1)) if self.preset.clutter > 0 else 0):
            other = self.objects[int(rng.integers(len(self.objects)))]
            ang = rng.uniform(0, 2 * np.pi)
            off = rng.uniform(0.6, 1.8) * 0.5 * (obj.diameter + other.diameter)
            dz = rng.uniform(0.0, 0.6) * max(obj.diameter, other.diameter)
            centre = 0.5 * (other.model.vertices.min(0) + other.model.vertices.max(0))
            Ro = random_rotations(1, rng)[0]
            to = t + np.array([np.cos(ang) * off, np.sin(ang) * off, dz]) - Ro @ centre
            out.append(RenderObject(other.render_model, Ro, to, metallic=rng.uniform(0, 0.4),
                                    roughness=rng.uniform(0.3, 1.0)))
        return out

    def backgrounds_for(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """(n, 3, PH, PW) backgrounds: procedural, ``dark_bg_p`` of them dimmed, and ``background_image_p`` of
        them replaced by crops of the user's photos where there are any."""
        from posekit.data.augment import image_backgrounds, procedural_backgrounds

        pre = self.preset
        PW, PH = self.patch_size
        bg = procedural_backgrounds(n, max(PW, PH), gen)[..., :PH, :PW]
        if pre.dark_bg_p > 0:  # a refiner that never saw dark surroundings fails on them (docs/benchmarks.md)
            dark = (torch.rand(n, 1, 1, 1, generator=gen, device=gen.device) < pre.dark_bg_p).float()
            gain = 0.03 + 0.42 * torch.rand(n, 1, 1, 1, generator=gen, device=gen.device)
            bg = bg * (1 - dark + dark * gain)
        if self.backgrounds is not None and len(self.backgrounds) and pre.background_image_p > 0:
            use = torch.rand(n, 1, 1, 1, generator=gen, device=gen.device) < pre.background_image_p
            photo = image_backgrounds(self.backgrounds, n, max(PW, PH), gen, scale=self.PHOTO_CROP)[..., :PH, :PW]
            bg = torch.where(use, photo, bg)
        return bg

    def sample(self, n: int, gen: torch.Generator) -> ObservedBatch:
        from posekit.render.types import Light, RenderObject

        rng = torch_rng(gen)
        pre = self.preset
        PW, PH = self.patch_size
        images, masks, Ks, Rs, ts, idx = [], [], [], [], [], []
        for _ in range(n):
            i = int(rng.integers(len(self.objects)))
            obj = self.objects[i]
            R, t = self._pose(obj, rng)
            box = zoom_window(R, t, obj.corners, self.camera.K, PW / PH, pre.window_scale * PATCH_SCALE_RATIO)
            cam = self.camera.crop(box, (PW, PH))
            plain = obj.model.vertex_colors is None and rng.random() < pre.plain_color_p
            color = tuple(rng.uniform(0.2, 1.0, 3)) if plain else None
            scene = [RenderObject(obj.render_model, R, t, color=color, metallic=rng.uniform(0, 0.4),
                                  roughness=rng.uniform(0.3, 1.0))]
            if rng.random() < pre.distractor_p:  # another object partly in front
                other = self.objects[int(rng.integers(len(self.objects)))]
                Ro = random_rotations(1, rng)[0]
                ang = rng.uniform(0, 2 * np.pi)
                off = rng.uniform(0.5, 1.0) * 0.5 * (obj.diameter + other.diameter)
                to = t + np.array([np.cos(ang) * off, np.sin(ang) * off, -rng.uniform(0.0, 0.5) * obj.diameter])
                scene.append(RenderObject(other.render_model, Ro, to))
            scene += self._clutter(obj, t, rng)
            light_pos = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-0.3, 0.5)]) * t[2]
            dist = np.linalg.norm(light_pos - t) / 1000.0
            light = Light("point", intensity=rng.uniform(0.4, 1.1) * dist**2, position=tuple(light_pos))
            res = self.renderer.render(cam, scene, lights=[light], ambient=rng.uniform(0.1, 0.5), with_masks=False)
            images.append(torch.from_numpy(res.rgb).permute(2, 0, 1).float() / 255.0)
            # labels: 1 + index of the front-most object per pixel, so the target's visible part is label 1
            masks.append(torch.from_numpy(np.stack([res.labels == 1, res.labels > 0])).float())
            Ks.append(cam.K)
            Rs.append(R)
            ts.append(t)
            idx.append(i)
        img = torch.stack(images).to(gen.device)
        m = torch.stack(masks).to(gen.device)
        visib, anything = m[:, :1], m[:, 1:]
        bg = self.backgrounds_for(n, gen)
        img = anything * img + (1 - anything) * bg
        img, visib = _occlude(img, visib, pre.occlude_p, gen)
        img = _augment_photometric(img, gen)
        return ObservedBatch(img, visib, np.stack(Ks), np.stack(Rs), np.stack(ts), np.asarray(idx))


class PooledObserved:
    """A fixed pool of observed patches drawn once from ``source`` and resampled with replacement.

    Each draw still gets fresh initial poses (and so fresh crops and renderings); only the observed
    images repeat. Halves the rendering per step -- for quick trainings (tests, smoke runs).
    """

    def __init__(self, source, pool_size: int, gen: torch.Generator, chunk: int = 32, progress: bool = False) -> None:
        starts = range(0, pool_size, chunk)
        if progress:  # thousands of patches take minutes on a CPU
            import sys

            from tqdm import tqdm

            starts = tqdm(starts, desc="observed pool", unit="chunk", file=sys.stderr, dynamic_ncols=True)
        parts = [source.sample(min(chunk, pool_size - k), gen) for k in starts]
        self.pool = ObservedBatch(
            torch.cat([p.images for p in parts]), torch.cat([p.masks for p in parts]),
            np.concatenate([p.K for p in parts]), np.concatenate([p.R for p in parts]),
            np.concatenate([p.t for p in parts]), np.concatenate([p.obj_index for p in parts]),
        )
        self.patch_size = tuple(self.pool.images.shape[-1:-3:-1])

    def sample(self, n: int, gen: torch.Generator) -> ObservedBatch:
        j = torch.randint(0, len(self.pool), (n,), generator=gen, device=gen.device).cpu().numpy()
        p = self.pool
        jt = torch.as_tensor(j, device=p.images.device)
        return ObservedBatch(p.images[jt], p.masks[jt], p.K[j], p.R[j], p.t[j], p.obj_index[j])


class BopObserved:
    """Observed patches from a BOP dataset with masks (``posekit render`` output or real training data).

    ``obj_ids[i]`` is the BOP id of ``objects[i]``; instances of other objects, or less visible than
    ``min_visib``, are skipped.
    """

    def __init__(self, root, objects: list[RefineObject], obj_ids: list[int], preset: RefinePreset,
                 split: str | None = None, min_visib: float = 0.3) -> None:
        from posekit.data.bop import BopDataset

        self.ds = BopDataset(root)
        self.objects, self.preset = objects, preset
        index_of = {int(o): i for i, o in enumerate(obj_ids)}
        splits = [split] if split else [s for s in self.ds.splits() if s.startswith("train")] or self.ds.splits()
        self.items: list[tuple[str, int, int, int, int]] = []
        for sp in splits:
            for sid in self.ds.scene_ids(sp):
                scene = self.ds.scene(sp, sid)
                for im_id, gts in scene.gt.items():
                    for k, g in enumerate(gts):
                        vf = g.visib_fract
                        if g.obj_id in index_of and (vf is None or vf >= min_visib):
                            self.items.append((sp, sid, im_id, k, index_of[g.obj_id]))
        if not self.items:
            raise InputError(f"{self.ds.root}: no visible instance of objects {sorted(index_of)} to train on")
        self.patch_size = window_size(preset, PATCH_SCALE_RATIO)

    def sample(self, n: int, gen: torch.Generator) -> ObservedBatch:
        rng = torch_rng(gen)
        PW, PH = self.patch_size
        images, Ks, Rs, ts, idx = [], [], [], [], []
        for j in rng.integers(len(self.items), size=n):
            sp, sid, im_id, k, i = self.items[int(j)]
            frame = self.ds.frame(sp, sid, im_id)
            g = frame.gts[k]
            mask = frame.mask_visib(k)
            if mask is None:
                raise InputError(f"{frame.mask_path(k, visib=True)}: missing; the refiner trains on datasets with masks")
            obj = self.objects[i]
            box = zoom_window(g.R, g.t, obj.corners, frame.camera.K, PW / PH, self.preset.window_scale * PATCH_SCALE_RATIO)
            full = torch.cat([torch.from_numpy(frame.rgb()).permute(2, 0, 1).float() / 255.0,
                              torch.from_numpy(mask)[None].float()])
            images.append(crop_images(full[None], box[None], (PW, PH))[0])
            Ks.append(crop_intrinsics(frame.camera.K, box, (PW, PH)))
            Rs.append(g.R)
            ts.append(g.t)
            idx.append(i)
        both = torch.stack(images).to(gen.device)
        img = _augment_photometric(both[:, :3], gen)
        return ObservedBatch(img, both[:, 3:], np.stack(Ks), np.stack(Rs), np.stack(ts), np.asarray(idx))


# --------------------------------------------------------------------------- initial poses and pairs


def perturb_poses(R: np.ndarray, t: np.ndarray, preset: RefinePreset, rng: np.random.Generator):
    """Initial poses around the truth (B, 3, 3), (B, 3): a random camera-frame rotation (axis-angle
    components ~ N(0, rot_noise_deg), angle capped at rot_noise_max_deg), x, y offsets ~ N(0, xy_noise z)
    and a depth offset ~ N(0, z_noise z) -- like a coarse estimate whose depth comes from a 2D box; a share
    ``fine_p`` of them with ``fine_scale`` x that noise."""
    B = len(R)
    # fine_p of the poses get fine_scale x the noise: the iterates a refiner meets after its first steps
    scale = np.where(rng.random(B) < preset.fine_p, preset.fine_scale, 1.0)[:, None] if preset.fine_p > 0 else 1.0
    w = rng.normal(size=(B, 3)) * np.deg2rad(preset.rot_noise_deg)
    ang = np.linalg.norm(w, axis=1, keepdims=True)
    cap = np.deg2rad(preset.rot_noise_max_deg)
    w = np.where(ang > cap, w * cap / np.maximum(ang, 1e-12), w) * scale
    z = t[:, 2:3]
    dt = rng.normal(size=(B, 3)) * np.concatenate([np.full((B, 2), preset.xy_noise), np.full((B, 1), preset.z_noise)], 1) * z
    dt = dt * scale
    t_src = t + dt
    t_src[:, 2] = np.maximum(t_src[:, 2], 0.3 * t[:, 2])
    return so3_exp(w) @ R, t_src


@dataclass
class PairBatch:
    """Network inputs and labels for a batch (torch, on one device; poses float32).

    inputs (B, 7, H, W); visible_mask (B, 1, H, W) of the observed crop (None where unknown);
    R_src/t_src the poses rendered; R_gt/t_gt the truth (None at test time); K (B, 3, 3) of the crop;
    unit (B,) = crop width (the vx, vy unit, see ``update.py``); obj_index (B,); windows (B, 4) in
    the source image's pixels."""

    inputs: torch.Tensor
    visible_mask: torch.Tensor | None
    R_src: torch.Tensor
    t_src: torch.Tensor
    R_gt: torch.Tensor | None
    t_gt: torch.Tensor | None
    K: torch.Tensor
    unit: torch.Tensor
    obj_index: torch.Tensor
    windows: torch.Tensor


def zoom_windows(objects: list[RefineObject], obj_index, R, t, K, preset: RefinePreset) -> np.ndarray:
    """(B, 4) zoom windows (x0, y0, w, h) of the poses (R, t) in images of intrinsics K (B, 3, 3)."""
    W, H = preset.crop_size
    return np.stack([
        zoom_window(np.asarray(Rb, np.float64), np.asarray(tb, np.float64), objects[int(i)].corners,
                    np.asarray(Kb, np.float64), W / H, preset.window_scale)
        for i, Rb, tb, Kb in zip(np.asarray(obj_index), R, t, K, strict=True)
    ])


def _jitter_rendering(rgb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small gain/gamma changes of the rendered crop, so renderers' shading differences do not matter."""
    n = rgb.shape[0]
    gain = 0.85 + 0.3 * torch.rand(n, 1, 1, 1, generator=gen, device=gen.device)
    gamma = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen, device=gen.device)
    return (rgb.clamp(1e-4, 1.0) ** gamma * gain).clamp(0.0, 1.0)


def make_pairs(images: torch.Tensor, K_images: np.ndarray, R_src: np.ndarray, t_src: np.ndarray,
               obj_index: np.ndarray, objects: list[RefineObject], preset: RefinePreset, renderer,
               masks: torch.Tensor | None = None, R_gt: np.ndarray | None = None, t_gt: np.ndarray | None = None,
               gen: torch.Generator | None = None, device: torch.device | str = "cpu") -> PairBatch:
    """Network input at the poses (R_src, t_src) for images (B, 3, H, W) with intrinsics K_images (B, 3, 3).

    The zoom window of each pose crops the image (and its visible mask), the object is rendered at
    that pose into the same crop. ``gen`` given: the rendering is jittered (training only).
    """
    size = tuple(preset.crop_size)
    win = zoom_windows(objects, obj_index, R_src, t_src, K_images, preset)
    Kc = crop_intrinsics(np.asarray(K_images, np.float64), win, size)
    wt = torch.as_tensor(win, dtype=torch.float32)
    obs = crop_images(images, wt.to(images.device), size)
    vis = crop_images(masks, wt.to(masks.device), size) if masks is not None else None
    rgb, rmask = render_in_crops(renderer, [o.render_model for o in objects], obj_index, R_src, t_src, Kc, size)
    rgb, rmask = rgb.to(obs.device), rmask.to(obs.device)
    if gen is not None:
        rgb = _jitter_rendering(rgb.to(gen.device), gen).to(obs.device)
    f = dict(dtype=torch.float32, device=device)
    return PairBatch(
        inputs=torch.cat([obs, rgb, rmask], dim=1).to(**f),
        visible_mask=None if vis is None else vis.to(**f),
        R_src=torch.as_tensor(np.asarray(R_src), **f), t_src=torch.as_tensor(np.asarray(t_src), **f),
        R_gt=None if R_gt is None else torch.as_tensor(np.asarray(R_gt), **f),
        t_gt=None if t_gt is None else torch.as_tensor(np.asarray(t_gt), **f),
        K=torch.as_tensor(Kc, **f), unit=torch.full((len(win),), float(size[0]), **f),
        obj_index=torch.as_tensor(np.asarray(obj_index), dtype=torch.long, device=device),
        windows=wt.to(device),
    )


__all__ = [
    "RefineObject", "prepare_object", "ObservedBatch", "SyntheticObserved", "PooledObserved", "BopObserved", "perturb_poses",
    "PairBatch", "make_pairs", "zoom_windows", "DEFAULT_CAMERA", "torch_rng",
]
