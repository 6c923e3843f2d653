"""Feature-similarity refinement: a render-and-compare search over small pose steps, scored on pretrained features.

One iteration, for every instance of an image at once:

1. the zoom window of the current pose (DeepIM's: centred on the projected model origin, 1.4 x the
   projected 3D box, square, ``crop`` pixels) cuts the observed crop;
2. candidates: the current pose, turns of +- ``rot_step`` about the camera's x and y axes through the
   object's origin and about the origin's viewing ray (the in-plane turn), image-plane moves of +-
   ``shift_step`` of the window in x and y (turns of the object about the camera centre that move its
   origin's ray by that much, :mod:`posekit.geometry.warp`), and (``depth_step`` > 0) moves of +-
   ``depth_step`` of the depth along the viewing ray;
3. every candidate is rendered into the window's crop camera (``warp``: the in-plane turns and moves are
   exact homographies of the current pose's render, warped instead) and put through the backbone; its score
   is the per-cell cosine of the stride-8 maps averaged under the *union* of the candidates' masks
   (each candidate's own mask would favour smaller renders: the templates issue's diagnosis);
4. the best candidate becomes the pose; where the current pose is the best, the steps shrink by
   ``shrink``.

Depth is left as the coarse stage gave it by default (``depth_step = 0``; the moves keep the distance from the
camera): a 1 % change of depth moves the outline by about a tenth of a stride-8 cell, too little for these
features to see (measured in the refinement issue: depth search made depth worse). ``run.scores`` holds each iterate's similarity, so
``--score features`` keeps the best-scored iterate.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from posekit.cad.model import ObjectModel, model_index
from posekit.data.types import Observation, RefineRun
from posekit.errors import InputError
from posekit.features.backbone import Backbone, shared_backbone
from posekit.features.similarity import mask_weights, union_similarity
from posekit.geometry.crop import crop_images, crop_intrinsics, crop_mask, zoom_window
from posekit.geometry.rotations import so3_exp
from posekit.geometry.warp import ray_to_ray, ray_turns, rotation_homography, warp_images
from posekit.methods.viewbased import image_tensor
from posekit.render.crops import render_in_crops

SCORES = (None, "features")
RENDERERS = ("auto", "pyrender", "pytorch3d")


@dataclass(frozen=True)
class FeatureFitConfig:
    """crop: window side (pixels) the backbone sees; rot_step (degrees), shift_step (fraction of the window),
    depth_step (fraction of the depth; 0 keeps the coarse depth): the first steps; shrink: step factor when
    no candidate is better; feature: backbone map; max_faces: meshes are decimated to this for rendering;
    polish_feature, polish_faces: the map and the face budget of the gradient polish (PyTorch3D's CPU
    rasteriser costs faces x pixels)."""

    crop: int = 128
    feature: str = "s8"
    rot_step: float = 6.0
    shift_step: float = 0.03
    depth_step: float = 0.0
    shrink: float = 0.5
    window_scale: float = 1.4
    # renders cost llvmpipe about their face count (a 25,000-face driller at 128 px: 21.6 ms at 10,000 faces, 10.5 at
    # 3,000); at the search's 128-px and the sweep's 256-px windows a face of a 3,000-face proxy spans a few pixels:
    # on lmo-dev the search + sweep gave 41.0 % / 0.510 / 0.726 at 3,000 against 40.7 % / 0.511 / 0.728 at 10,000,
    # in 0.85 of the time (docs/benchmarks.md "Feature search: a smaller face budget")
    max_faces: int = 3000
    polish_feature: str = "s8"
    polish_faces: int = 3000
    # a last depth sweep (depth_range > 0): the final pose moved along its viewing ray by depth_samples scales in
    # 1 +- depth_range, rendered in depth_crop-pixel windows and scored by depth_score ("features": depth_feature
    # maps under the union of the masks; "edges": the outline's agreement with the image's gradients)
    depth_range: float = 0.0
    depth_samples: int = 9
    depth_rounds: int = 1  # each further round sweeps one grid step either side of the last round's pick
    depth_crop: int = 256
    depth_feature: str = "s8"
    depth_score: str = "features"
    depth_subgrid: bool = False  # the peak of a parabola through the best scale and its neighbours, not the grid's
    # warp: the search's candidates that are exact image warps of the current pose's render -- its in-plane turns
    # and image-plane moves (turns of the scene about the camera centre: homographies) -- are warped, not
    # rendered, and renders give their colour pass's coverage as the mask (one pass, not two). False renders every
    # candidate, masks from a second pass.
    warp: bool = True
    warp_supersample: int = 2  # the warps' source is rendered at this many times the crop's side, then pooled


#: the feature search with its last depth sweep (``posekit estimate --refine features --depth-sweep``): 9 depths in
#: +-8 % (two to three times the depth noise of a good coarse stage), one round (a second, finer round measured
#: worse on lmo-dev: 41.6 against 43.4 % ADD(-S) from 10-deg starts -- finer than the features resolve), the pick
#: between grid scales (the parabola's vertex: the 2 % grid step is 18-23 mm at LM-O's depths, more than a good
#: start's error; on lmo-dev it lowered the median depth error on all three pose sets measured, e.g. behind the
#: templates 19.5 -> 18.8 mm, ADD(-S) 40.0 -> 42.3 %)
DEPTH_SWEEP = FeatureFitConfig(depth_range=0.08, depth_samples=9, depth_subgrid=True)


def search_config(depth_sweep: bool = False) -> FeatureFitConfig:
    """The feature search's settings: with its last depth sweep (``--depth-sweep``) or without."""
    return DEPTH_SWEEP if depth_sweep else FeatureFitConfig()


@dataclass
class DepthSweep:
    """The depth sweep's outcome: t (B, 3) mm after it, the scores (B, n) of the n scales (n,) of the depth."""

    t: np.ndarray
    scores: np.ndarray
    scales: np.ndarray


def pick_depth(t: np.ndarray, scales: np.ndarray, scores: np.ndarray, subgrid: bool = False) -> np.ndarray:
    """(B, 3): t (B, 3) scaled along its viewing ray by the best-scored of ``scales`` (n,) (scores (B, n), an
    evenly spaced grid), kept where the best is at either end of the range (no located maximum). ``subgrid``:
    the scale at the vertex of the parabola through the best score and its two neighbours (within half a grid
    step of the best, as the best is a local maximum)."""
    best = scores.argmax(1)
    inside = (best > 0) & (best < len(scales) - 1)
    scale = scales[best].astype(np.float64)
    if subgrid and len(scales) >= 3:
        b = np.clip(best, 1, len(scales) - 2)
        rows = np.arange(len(best))
        lo, mid, hi = scores[rows, b - 1], scores[rows, b], scores[rows, b + 1]
        curv = lo - 2 * mid + hi
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(curv < 0, 0.5 * (lo - hi) / curv, 0.0)
        scale = scale + np.clip(off, -0.5, 0.5) * (scales[1] - scales[0])
    return np.where(inside[:, None], t * scale[:, None], t)


def _axis_turns(deg: np.ndarray) -> np.ndarray:
    """(B, 4, 3, 3) camera-frame turns by +-deg[b] about x and y (the out-of-plane turns)."""
    B = len(deg)
    vec = np.zeros((B, 4, 3))
    for a in range(2):
        vec[:, 2 * a, a] = np.radians(deg)
        vec[:, 2 * a + 1, a] = -np.radians(deg)
    return so3_exp(vec)


class FeatureRefiner:
    """Refines poses of the given models by feature similarity; no workspace, no training."""

    def __init__(self, models: Sequence[ObjectModel], device: str | torch.device = "auto",
                 config: FeatureFitConfig | None = None, renderer: str = "auto",
                 backbone: Backbone | None = None) -> None:
        from posekit.data.cad_cache import decimate_cached
        from posekit.train.loop import resolve_device

        if renderer not in RENDERERS:
            raise InputError(f"--renderer must be one of {', '.join(RENDERERS)}, got {renderer!r}")
        self.device = device if isinstance(device, torch.device) else resolve_device(str(device))
        self.config = config or FeatureFitConfig()
        self.models = list(models)
        cap = self.config.max_faces
        # decimated once per part and mesh, kept in the model store: no open3d import on the next call
        self.render_models = [decimate_cached(m, cap) if cap else m for m in self.models]
        self.corners = [m.bbox_corners for m in self.models]
        self.backbone = backbone or shared_backbone(self.device)
        self.renderer_name = ("pytorch3d" if self.device.type == "cuda" else "pyrender") if renderer == "auto" else renderer
        self._renderers: dict[int, object] = {}
        self._soft = None

    def object_index(self, key: int | str) -> int:
        return model_index(self.models, key, "the feature refinement")

    def _get_renderer(self, size: int | None = None):
        """The hard renderer of size x size crops (default: the search's crop), made once per size."""
        S = size or self.config.crop
        if S not in self._renderers:
            if self.renderer_name == "pytorch3d":
                from posekit.render.diff import DiffRenderer

                self._renderers[S] = DiffRenderer(self.render_models, image_size=(S, S), max_faces=None,
                                                  device=self.device, hard=True)
            else:
                from posekit.render.gl import OffscreenRenderer

                self._renderers[S] = OffscreenRenderer(S, S)
        return self._renderers[S]

    def close(self) -> None:
        for r in self._renderers.values():
            if hasattr(r, "close"):
                r.close()
        self._renderers = {}
        self._soft = None

    def _get_soft_renderer(self):
        """A soft DiffRenderer (RGB + silhouette, gradients to the pose) at the crop size, for the polish."""
        if self._soft is None:
            from posekit.render.diff import DiffRenderer

            S = self.config.crop
            self._soft = DiffRenderer(self.models, image_size=(S, S), max_faces=self.config.polish_faces,
                                      device=self.device, hard=False)
        return self._soft

    def polish(self, run: RefineRun, objects: Sequence[int | str], steps: int, lr: float = 0.01,
               mask: np.ndarray | None = None, observation: Observation | None = None):
        """``steps`` feature-metric gradient steps on ``run.final`` (see ``posekit.methods.polish``): the crop
        of the final pose's zoom window through the frozen backbone is the target, the PyTorch3D render's
        maps are pulled onto it. ``mask`` (H, W) in [0, 1], a mask of the object in the whole image, adds the
        silhouette loss against it (what fixes depth). Returns a :class:`~posekit.methods.polish.PolishResult`."""
        from posekit.features.backbone import Backbone
        from posekit.methods.polish import feature_loss, feature_weights, polish, silhouette_loss

        if observation is None:
            raise ValueError("the feature polish needs the observation (the image) it aligns to")
        cfg = self.config
        S = cfg.crop
        R0, t0 = (np.asarray(a, dtype=np.float64) for a in run.final)
        B = len(R0)
        idx = np.array([self.object_index(k) for k in objects], dtype=np.int64)
        K = np.broadcast_to(observation.camera.K, (B, 3, 3)).astype(np.float64)
        img = image_tensor(observation.image).to(self.device)
        win, Kc, f_obs = self._observe(img, idx, R0, t0, K, cfg.polish_feature)
        soft = self._get_soft_renderer()
        with torch.no_grad():
            sil = soft.render(torch.as_tensor(R0), torch.as_tensor(t0), torch.as_tensor(Kc), torch.as_tensor(idx),
                              modes=("silhouette",))["silhouette"]
        weights = feature_weights(sil, Backbone.stride(cfg.polish_feature), tuple(f_obs.shape[-2:]))
        losses = [feature_loss(self.backbone, f_obs, weights, cfg.polish_feature)]
        if mask is not None:
            losses.append(silhouette_loss(crop_mask(mask, win, (S, S)), self.device))
        # depth moves only with a mask: the features alone prefer smaller renders (see the module docstring)
        res = polish(soft, idx, R0, t0, Kc, losses, steps=steps, lr=lr, depth=mask is not None)
        run.windows, run.K_crops = win, Kc
        return res

    def _crops(self, img: torch.Tensor, idx: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray,
               size: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """The zoom windows (B, 4) of poses R, t, their crop intrinsics (B, 3, 3) and the image (1, 3, H, W) cut
        into them at size x size (B, 3, size, size)."""
        win = np.stack([zoom_window(R[b], t[b], self.corners[idx[b]], K[b], 1.0, self.config.window_scale)
                        for b in range(len(R))])
        return (win, *self._cut(img, win, K, size))

    def _cut(self, img: torch.Tensor, win: np.ndarray, K: np.ndarray, size: int) -> tuple[np.ndarray, torch.Tensor]:
        """The crop intrinsics (B, 3, 3) of windows ``win`` (B, 4) and the image (1, 3, H, W) cut into them at size x
        size (B, 3, size, size)."""
        Kc = crop_intrinsics(K, win, (size, size))
        obs = crop_images(img.expand(len(win), -1, -1, -1),
                          torch.as_tensor(win, dtype=torch.float32, device=self.device), (size, size))
        return Kc, obs

    def _union_scores(self, f_obs: torch.Tensor, rgb: torch.Tensor, mask: torch.Tensor, n: int,
                      feature: str) -> torch.Tensor:
        """(B, n) similarity of each instance's observed ``feature`` maps f_obs (B, C, h, w) with its n renders rgb
        (B n, 3, S, S), under the union of their masks (B n, 1, S, S)."""
        f = self.backbone.features(rgb.to(self.device), feature)
        w = mask_weights(mask.to(self.device), Backbone.stride(feature), tuple(f.shape[-2:]))
        return union_similarity(f_obs, f, w, n)

    def _observe(self, img: torch.Tensor, idx: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray,
                 feature: str) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """The zoom windows (B, 4) of poses R, t, their crop intrinsics (B, 3, 3) and the backbone's ``feature``
        maps of the image (1, 3, H, W) cut into them at the crop size."""
        win, Kc, obs = self._crops(img, idx, R, t, K, self.config.crop)
        return win, Kc, self.backbone.features(obs, feature)

    @torch.no_grad()
    def depth_sweep(self, observation: Observation, objects: Sequence[int | str], R, t) -> DepthSweep:
        """Translations t (B, 3) mm moved along their viewing rays to the best-scored of the config's
        ``depth_samples`` scales in 1 +- ``depth_range`` (R (B, 3, 3) kept); what ``refine`` does after its last
        iteration when ``depth_range`` > 0. A best score at either end of the range is no located maximum
        (the score still rises beyond it, or is flat): those instances keep their depth."""
        R, t = np.asarray(R, dtype=np.float64), np.asarray(t, dtype=np.float64)
        idx = np.array([self.object_index(k) for k in objects], dtype=np.int64)
        K = np.broadcast_to(observation.camera.K, (len(t), 3, 3)).astype(np.float64)
        return self._sweep(image_tensor(observation.image).to(self.device), idx, R, t, K)

    def _sweep(self, img: torch.Tensor, idx: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> DepthSweep:
        cfg = self.config
        n, half = cfg.depth_samples, cfg.depth_range
        for _ in range(max(1, cfg.depth_rounds)):
            scales = 1.0 + np.linspace(-half, half, n)
            if len(t) == 0:
                return DepthSweep(t.copy(), np.zeros((0, n)), scales)
            sims = self._depth_scores(img, idx, R, t, K, scales)
            t = pick_depth(t, scales, sims, cfg.depth_subgrid)
            half = 2 * half / (n - 1)
        return DepthSweep(t, sims, scales)

    def _depth_scores(self, img: torch.Tensor, idx: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray,
                      scales: np.ndarray) -> np.ndarray:
        """(B, n) scores of t scaled by each of the n scales, in depth_crop-pixel windows of the pose (R, t)."""
        cfg = self.config
        S, n = cfg.depth_crop, len(scales)
        _, Kc, obs = self._crops(img, idx, R, t, K, S)
        tc = t[:, None] * scales[None, :, None]
        Rc = np.repeat(R[:, None], n, axis=1)
        # rendered, not warped: a change of depth is no homography (a zoom about the origin's projection moved the
        # sweep's picks by 0.9 % of the depth on average, against its 2 % grid; docs/benchmarks.md)
        rgb, mask = self._draw(S, idx, Rc, tc, Kc)
        if cfg.depth_score == "edges":
            from posekit.features.edges import contour_edge_agreement

            return contour_edge_agreement(obs.repeat_interleave(n, dim=0), mask.to(self.device)).reshape(-1, n)
        f_obs = self.backbone.features(obs, cfg.depth_feature)
        return self._union_scores(f_obs, rgb, mask, n, cfg.depth_feature).cpu().numpy()

    @torch.no_grad()
    def score_poses(self, observation: Observation, objects: Sequence[int | str], R, t, size: int | None = None) -> np.ndarray:
        """(B, M) scores of M pose hypotheses per instance, R (B, M, 3, 3), t (B, M, 3) mm: each instance's M poses
        rendered into one square window that holds all their zoom windows (``size`` px, default the search's crop)
        and scored as the search scores its candidates, by the stride-8 cosine under the union of their masks (so a
        smaller render does not win by covering fewer cells)."""
        R, t = np.asarray(R, dtype=np.float64), np.asarray(t, dtype=np.float64)
        B, M = t.shape[:2]
        if B == 0:
            return np.zeros((0, M))
        S = int(size or self.config.crop)
        idx = np.array([self.object_index(k) for k in objects], dtype=np.int64)
        K = np.broadcast_to(observation.camera.K, (B, 3, 3)).astype(np.float64)
        win = np.stack([zoom_window(R[b], t[b], self.corners[idx[b]], K[b], 1.0, self.config.window_scale)
                        for b in range(B)])  # (B, M, 4)
        lo = win[..., :2].min(1)
        hi = (win[..., :2] + win[..., 2:]).max(1)
        side = (hi - lo).max(1)
        centre = 0.5 * (lo + hi)
        box = np.concatenate([centre - 0.5 * side[:, None], np.stack([side, side], 1)], axis=1)  # (B, 4)
        Kc, obs = self._cut(image_tensor(observation.image).to(self.device), box, K, S)
        f_obs = self.backbone.features(obs, self.config.feature)
        rgb, mask = self._draw(S, idx, R, t, Kc)
        return self._union_scores(f_obs, rgb, mask, M, self.config.feature).cpu().numpy()

    # ------------------------------------------------------------------ the search
    def _candidates(self, R: np.ndarray, t: np.ndarray, Kc: np.ndarray, rot: np.ndarray, shift: np.ndarray,
                    depth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, C, 3, 3), (B, C, 3): the current pose first, then the out-of-plane turns (4), the in-plane turns (2),
        the image-plane moves (4) and the depth moves; and the homographies (B, C, 3, 3) that take the current
        pose's render in the crop camera Kc to each candidate's, NaN where there is none (the out-of-plane
        turns and the depth moves: those are rendered)."""
        B = len(R)
        turns = _axis_turns(rot)  # (B, 4, 3, 3) about the camera's x and y axes through the origin
        in_plane = ray_turns(t[:, None], np.stack([np.radians(rot), -np.radians(rot)], axis=1))  # (B, 2, 3, 3)
        S = self.config.crop
        mm = shift * S * t[:, 2] / Kc[:, 0, 0]  # the move in mm at the object's depth
        d = np.zeros((B, 4, 3))
        d[:, 0, 0], d[:, 1, 0], d[:, 2, 1], d[:, 3, 1] = mm, -mm, mm, -mm
        moves = ray_to_ray(t[:, None], t[:, None] + d)  # (B, 4, 3, 3) turns about the camera centre
        Q = np.concatenate([in_plane, moves], axis=1)  # (B, 6, 3, 3): scene turns about the camera centre
        Rc = [R[:, None], turns @ R[:, None], Q @ R[:, None]]
        tc = [t[:, None], np.repeat(t[:, None], 4, axis=1), (Q @ t[:, None, :, None])[..., 0]]
        H = np.full((B, 5, 3, 3), np.nan)
        H[:, 0] = np.eye(3)
        H = [H, rotation_homography(Kc[:, None], Q)]
        if self.config.depth_step > 0:
            Rc.append(np.repeat(R[:, None], 2, axis=1))
            tc.append(t[:, None] * np.stack([1 + depth, 1 - depth], axis=1)[..., None])
            H.append(np.full((B, 2, 3, 3), np.nan))
        return np.concatenate(Rc, axis=1), np.concatenate(tc, axis=1), np.concatenate(H, axis=1)

    def _draw(self, size: int, idx: np.ndarray, Rc: np.ndarray, tc: np.ndarray, Kc: np.ndarray,
              H: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """rgb (B C, 3, S, S) and mask (B C, 1, S, S) of candidates Rc (B, C, 3, 3), tc (B, C, 3) in crop cameras
        Kc (B, 3, 3) of side ``size``, query-major. With ``warp`` on and homographies H (B, C, 3, 3) given, the
        candidates whose H is finite (in every row) are candidate 0's render warped by it; the rest are rendered
        (candidate 0 always)."""
        B, C = Rc.shape[:2]
        warped = np.zeros(C, bool)
        if self.config.warp and H is not None:
            warped = np.isfinite(H).all(axis=(0, 2, 3))
            warped[0] = False
        if not warped.any():
            return render_in_crops(self._get_renderer(size), self.render_models, np.repeat(idx, C), Rc.reshape(-1, 3, 3),
                                   tc.reshape(-1, 3), np.repeat(Kc, C, axis=0), (size, size), coverage=self.config.warp)
        drawn = np.flatnonzero(~warped)[1:]  # candidate 0 is the warps' source, drawn below
        # the source at f times the size, every warp (the identity too) sampled at f x and pooled f x f: bilinear
        # sampling blurs by its sub-pixel offset, which would favour the warped candidates over an unblurred
        # source (measured in the depth sweep); at f x the blur is f times smaller and the same pooling follows
        f = max(1, int(self.config.warp_supersample))
        A = np.array([[f, 0.0, 0.5 * (f - 1)], [0.0, f, 0.5 * (f - 1)], [0.0, 0.0, 1.0]])  # size -> f size pixels
        rgb_s, mask_s = render_in_crops(self._get_renderer(f * size), self.render_models, idx, Rc[:, 0], tc[:, 0],
                                        A @ Kc, (f * size, f * size), coverage=True)
        out = torch.empty(B, C, 4, size, size, device=rgb_s.device)
        if len(drawn):
            rgb_d, mask_d = render_in_crops(self._get_renderer(size), self.render_models, np.repeat(idx, len(drawn)),
                                            Rc[:, drawn].reshape(-1, 3, 3), tc[:, drawn].reshape(-1, 3),
                                            np.repeat(Kc, len(drawn), axis=0), (size, size), coverage=True)
            out[:, drawn] = torch.cat([rgb_d, mask_d], dim=1).to(out.device).view(B, len(drawn), 4, size, size)
        w = np.flatnonzero(warped)
        w = np.concatenate([[0], w])
        src = torch.cat([rgb_s, mask_s], dim=1).repeat_interleave(len(w), dim=0)
        Hf = A @ H[:, w].reshape(-1, 3, 3) @ np.linalg.inv(A)
        Hf[:: len(w)] = np.eye(3)
        warped_imgs = warp_images(src, Hf)
        if f > 1:
            warped_imgs = torch.nn.functional.avg_pool2d(warped_imgs, f)
        out[:, w] = warped_imgs.view(B, len(w), 4, size, size)
        out = out.view(B * C, 4, size, size)
        return out[:, :3], out[:, 3:]

    def _score(self, f_obs: torch.Tensor, idx: np.ndarray, Rc: np.ndarray, tc: np.ndarray,
               Kc: np.ndarray, H: np.ndarray | None = None) -> torch.Tensor:
        """(B, C) masked similarities of the candidates' renders (or warps, see ``_draw``) with the observed maps
        (B, C', h, w)."""
        rgb, mask = self._draw(self.config.crop, idx, Rc, tc, Kc, H)
        return self._union_scores(f_obs, rgb, mask, Rc.shape[1], self.config.feature)

    @torch.no_grad()
    def refine(self, observation: Observation, objects: Sequence[int | str], R, t, iters: int = 4,
               score: str | None = None) -> RefineRun:
        """Refine B poses of objects in one image; R (B, 3, 3), t (B, 3) mm. See the module docstring."""
        if score not in SCORES:
            raise InputError(f"--score for the feature refinement must be none or features, got {score!r}")
        run = RefineRun.start(len(objects), R, t, iters)
        R, t = run.R[0].copy(), run.t[0].copy()
        B = len(R)
        idx = np.array([self.object_index(k) for k in objects], dtype=np.int64)
        if B == 0:
            return run
        cfg = self.config
        img = image_tensor(observation.image).to(self.device)
        K = np.broadcast_to(observation.camera.K, (B, 3, 3)).astype(np.float64)
        rot, shift, depth = (np.full(B, v, dtype=np.float64) for v in (cfg.rot_step, cfg.shift_step, cfg.depth_step))
        scores = np.zeros((iters + 1, B))
        for k in range(1, iters + 2 if score else iters + 1):
            t0 = time.perf_counter()
            win, Kc, f_obs = self._observe(img, idx, R, t, K, cfg.feature)
            last = k > iters
            if last:  # the extra round only scores the last pose
                scores[k - 1] = self._score(f_obs, idx, R[:, None], t[:, None], Kc)[:, 0].cpu().numpy()
                break
            Rc, tc, H = self._candidates(R, t, Kc, rot, shift, depth)
            sims = self._score(f_obs, idx, Rc, tc, Kc, H).cpu().numpy()
            best = sims.argmax(1)
            scores[k - 1] = sims[:, 0]
            stay = best == 0
            rot[stay] *= cfg.shrink
            shift[stay] *= cfg.shrink
            depth[stay] *= cfg.shrink
            R, t = Rc[np.arange(B), best], tc[np.arange(B), best]
            if k == iters and cfg.depth_range > 0:  # the last iterate's depth from the finer sweep
                t_sweep = time.perf_counter()
                swept = self._sweep(img, idx, R, t, K).t
                run.depth_scales = swept[:, 2] / t[:, 2]
                run.depth_time = time.perf_counter() - t_sweep
                t = swept
            run.R[k], run.t[k] = R, t
            run.times.append(time.perf_counter() - t0)
        if score:
            run.scores = scores
        return run
