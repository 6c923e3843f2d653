"""A training-free detector from the part's templates (CNOS-like, on the backbone's stride-8 maps).

Three steps per image, all on the frozen ImageNet backbone that the templates were built with:

1. **Proposals.** The photo is resized so that a crop of side ``c`` pixels becomes the templates' 96-px crop,
   for a geometric series of crop sides ``c`` (the part's tight box is ``c / 1.2``); at each size a subset of the
   templates (``proposal_views`` view points x ``proposal_inplane`` turns) is correlated with the photo's
   cell-normalised s8 map by the masked cosine, written as one convolution, and each template's response is
   standardised over the photo (``proposal_norm``). A (template, size) pair counts only
   where the depth it implies (the part's size, the template's box, the camera's focal length) lies in
   ``depth_range``. Local maxima over all templates and sizes, best first, thinned by window overlap, are the
   candidates.
2. **Alignment.** Each candidate window is moved and scaled by a few per cent (a small grid of shifts and
   scales, ``align_rounds`` rounds of halving steps) to where the full template set matches it best.
3. **Verification.** The aligned window's best template gives the pose (rotation of the template, translation
   from the window, as the templates' coarse stage does) and the box (the model's projection in that pose);
   that pose is rendered into the window and checked against the photo four ways: the template's masked
   cosine (``cosine``), the render's s16 cosine under its mask (``rendered``), the share of its outline on the
   photo's edges (``edges``) and the agreement of the colours under its mask (``colour``, when the model has
   colours). The default score (``combined``) is the mean of the four for a part with colours (true parts and
   look-alike clutter score alike on any one of them, less often on all), of the two cosines (``match``) for a
   part without (lmo-dev, docs/benchmarks.md "Template detector: four checks"). A hit is a
   detection only where ``match`` reaches ``min_score`` and ``edges`` reaches ``min_edges``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from posekit.cad.model import ObjectModel
from posekit.errors import InputError
from posekit.features.similarity import cell_normalise, similarity_matrix
from posekit.geometry.boxcrop import box_iou, crop_windows, square_window
from posekit.geometry.camera import Camera, project_points
from posekit.methods.templates.workspace import TemplateWorkspace
from posekit.methods.viewbased import image_tensor, poses_from_entries

SCORES = ("combined", "match", "cosine", "rendered", "edges", "colour", "contrast", "sharpness", "proposal",
          "verifier")


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of the template detector (see the module docstring); one table, chosen on lmo-dev for reasons."""

    proposal_views: int = 30
    proposal_inplane: int = 6
    proposal_rank: int = 48  # the proposal templates' correlation as this many basis convolutions (0: exact)
    depth_range: tuple[float, float] = (300.0, 2000.0)  # mm: a table-top or bin-picking camera's working range
    min_crop: float = 48.0  # smallest crop side searched (px): the part's box about 40 px, 5 feature cells
    scale_step: float = 2.0 ** 0.5  # ratio of consecutive crop sides
    candidates: int = 15  # proposals verified per part and image
    nms_iou: float = 0.5  # proposal windows overlapping more than this are one
    align_top: int = 3  # best verified candidates aligned by crops of the photo
    align_rounds: int = 1
    align_shift: float = 1.0 / 12.0  # first alignment step, share of the window (one feature cell)
    align_scale: float = 2.0 ** (1.0 / 6.0)
    verify_scales: tuple[float, ...] = (1.0,)  # each candidate's window also verified at these sizes (same centre)
    # each proposal template's response standardised over the photo ("none": raw cosines): a template that matches
    # everywhere (a plain face, a long edge, a marker board's squares) then stands out less than one that matches
    # one place. lmo-dev images 25-100 (not used to choose): top-1 recall 51.6 -> 56.5 %, glue 7 -> 19 % on all; rendered
    # bracket scenes (grey part among grey primitives) lose: 10 -> 6 of 14 (docs/benchmarks.md "proposals")
    proposal_norm: str = "zscore"
    ring: int = 3  # cells: the distance of the eight windows the "sharpness" score compares a peak with
    verify_crop: int = 128  # crop side (px) of the rendered hypothesis' check (0: none, and no "combined" score)
    # only the candidates whose best template matches best (after alignment) get the rendered checks, the rest are
    # dropped: on lmo-dev the checks' pick lies among the cosine's best 8 of 15 as often as among all 15 (52.3 and
    # 52.6 % of the targets found), at about half the checks' time (docs/benchmarks.md "Template detector: speed")
    verify_top: int = 8
    verify_map: str = "s16"
    score: str = "combined"
    # below, on the mean of the two cosines (the "match" score), a hit is no detection: on lmo-dev (all 100 images)
    # it keeps 84 % of the right top-1 hits, 23 % of the wrong and 33 % where the part is absent; the four checks'
    # mean ranks better but separates worse (docs/benchmarks.md "Template detector: four checks")
    min_score: float = 0.40
    # nor is a hit whose outline runs along almost no image gradient: a plain shaded wall's best hits put 5-19 % of
    # the bracket's outline on edges (half of them under 15 %), a piece of a bracket matched at too small a scale
    # 24 %; on lmo-dev's photos 95 % of the top-1 hits (right, wrong and absent alike) put 38 % or more
    min_edges: float = 0.15
    box_overlap: float = 0.6  # verified boxes of one part sharing more than this of the smaller one are one part

    def __post_init__(self) -> None:
        lo, hi = self.depth_range
        if not 0 < lo < hi:
            raise InputError(f"depth range must be 0 < near < far (mm), got {lo:g}, {hi:g}")
        if self.score not in SCORES:
            raise InputError(f"detector score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.verify_crop <= 0 and self.score in ("combined", "match", "rendered", "edges", "colour"):
            raise InputError(f"detector score {self.score!r} needs the rendered checks (verify_crop > 0)")


@dataclass(frozen=True)
class Proposal:
    """A peak of the proposal correlation: score, pyramid level of its image map, top-left cell (i, j) there."""

    score: float
    level: int
    i: int
    j: int


@dataclass
class TemplateHit:
    """One verified detection: BOP box [x, y, w, h] (the model's projection in ``R``, ``t``), score, the pose of
    the best template, the aligned crop window (x0, y0, side) and the scores behind the ranking."""

    obj_id: int
    bbox: tuple[float, float, float, float]
    score: float
    R: np.ndarray
    t: np.ndarray
    window: tuple[float, float, float]
    scores: dict[str, float] = field(default_factory=dict)
    mask: np.ndarray | None = None  # no mask: the template detector gives boxes and poses


class TemplateDetector:
    """Finds parts in photos with their template workspaces (one per object id) and nothing trained."""

    def __init__(self, workspaces: dict[int, TemplateWorkspace], models: dict[int, ObjectModel],
                 config: DetectorConfig | None = None, verifier=None) -> None:
        if not workspaces:
            raise InputError("the template detector needs the templates of at least one part")
        missing = sorted(set(workspaces) - set(models))
        if missing:
            raise InputError(f"template detector: no object model for object id(s) {missing}")
        self.workspaces = workspaces
        self.models = models
        self.config = config or DetectorConfig()
        # a learned verifier (posekit.methods.detect.verifier, `posekit train verifier`): one more check in the
        # ``combined`` mean; None: the rules alone
        self.verifier = verifier
        if verifier is not None:
            want = (verifier.preset.verify_crop, verifier.preset.verify_map)
            if (self.config.verify_crop, self.config.verify_map) != want:
                raise InputError(f"the verifier reads the rendered check's {want[1]} maps of {want[0]}-px crops; this "
                                 f"detector's are {self.config.verify_map} of {self.config.verify_crop} px")
        for obj_id, ws in workspaces.items():
            ws.check_mesh(models[obj_id])
        first = next(iter(workspaces.values()))
        self.backbone = first.backbone
        self.device = first.device
        self.feature = first.preset.feature
        self.size = first.preset.image_size
        self.pad = first.preset.crop_pad
        for ws in workspaces.values():
            if (ws.preset.image_size, ws.preset.feature, ws.preset.crop_pad) != (self.size, self.feature, self.pad):
                raise InputError("template detector: all parts' templates must share crop size, map and pad "
                                 "(build them with one preset)")
        self.cells = int(first.templates.features.shape[-1])
        self._kernels = {obj_id: self._proposal_kernels(ws) for obj_id, ws in workspaces.items()}
        self._points = {obj_id: _outline_points(m) for obj_id, m in models.items()}
        self.last_times: dict[str, float] = {}
        self._renderer = None
        self._render_models: dict[int, ObjectModel] = {}

    # ------------------------------------------------------------------ set-up
    def _proposal_kernels(self, ws: TemplateWorkspace) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """The proposal templates as a low-rank convolution: (basis (r, C, h, w), coefficients (T, r), indices (T,)
        in the full set). The response of template t is ``sum_k coef[t, k] * (basis_k * map)``: r convolutions
        instead of T (``proposal_rank`` 0: the templates themselves, exact)."""
        p = ws.preset
        views = np.unique(np.linspace(0, p.views - 1, min(self.config.proposal_views, p.views)).round().astype(int))
        turns = np.unique(np.linspace(0, p.inplane, min(self.config.proposal_inplane, p.inplane),
                                      endpoint=False).round().astype(int)) % p.inplane
        idx = (views[:, None] * p.inplane + turns[None, :]).reshape(-1)
        h, w = ws.templates.features.shape[-2:]
        folded = ws.folded[torch.as_tensor(idx, device=ws.folded.device)].float()
        rank = self.config.proposal_rank
        if rank <= 0 or rank >= len(idx):
            return folded.view(len(idx), -1, h, w).contiguous(), torch.eye(len(idx), device=folded.device), idx
        U, S, Vh = torch.linalg.svd(folded, full_matrices=False)
        return Vh[:rank].reshape(rank, -1, h, w).contiguous(), (U[:, :rank] * S[:rank]).contiguous(), idx

    def check_mesh(self, model: ObjectModel) -> None:
        for ws in self.workspaces.values():
            if ws.mesh_hash == model.mesh_hash:
                return
        raise InputError(f"the template detector holds no templates of {model.source or model.name} "
                         f"(mesh hash {model.mesh_hash})")

    # ------------------------------------------------------------------ detect
    def side(self, level: int) -> float:
        """The crop side (px) of a pyramid level: ``min_crop * scale_step ** level``."""
        return self.config.min_crop * self.config.scale_step ** level

    def levels(self, obj_id: int, camera: Camera) -> list[int]:
        """The pyramid levels searched for a part: the crop sides that the depth range allows, from ``min_crop``
        up to the image's larger side."""
        sides = self._depth_times_side(obj_id, camera)
        near, far = self.config.depth_range
        lo = max(self.config.min_crop, float(sides.min()) / far)
        hi = min(float(max(camera.width, camera.height)), float(sides.max()) / near)
        if lo > hi:
            return []
        step = math.log(self.config.scale_step)
        k0 = math.floor(math.log(lo / self.config.min_crop) / step + 1e-9)
        k1 = math.ceil(math.log(hi / self.config.min_crop) / step - 1e-9)
        return list(range(max(k0, 0), k1 + 1))

    @torch.no_grad()
    def _image_maps(self, image: torch.Tensor, levels: list[int]) -> dict[int, torch.Tensor]:
        """Cell-normalised s8 maps of the image resized so that a crop of each level's side becomes the template
        size, zero-padded by a quarter window (windows may reach past the border)."""
        out = {}
        for k in sorted(set(levels)):
            scale = self.size / self.side(k)
            x = F.interpolate(image, scale_factor=scale, mode="bilinear", antialias=scale < 1, align_corners=False,
                              recompute_scale_factor=False)
            q = cell_normalise(self.backbone.features(x.to(self.device), self.feature))
            out[k] = F.pad(q, (self._pad_cells,) * 4)
        return out

    def _depth_times_side(self, obj_id: int, camera: Camera, idx: np.ndarray | None = None) -> np.ndarray:
        """Per template: the crop side (px) times the depth (mm) at which the part fills it, for this camera."""
        e = self.workspaces[obj_id].templates.entries
        f_obs = 0.5 * (camera.K[0, 0] + camera.K[1, 1])
        f_r = 0.5 * (e.K[0, 0] + e.K[1, 1])
        b = e.box_size if idx is None else e.box_size[idx]
        return self.pad * b * e.distance * f_obs / f_r

    @torch.no_grad()
    def propose(self, obj_id: int, camera: Camera, maps: dict[int, torch.Tensor]) -> list[Proposal]:
        """Candidate windows of one part, best first, thinned by overlap."""
        basis, coef, idx = self._kernels[obj_id]
        depth_times_side = self._depth_times_side(obj_id, camera, idx)
        near, far = self.config.depth_range
        cands: list[Proposal] = []
        for k in self.levels(obj_id, camera):
            q = maps[k]
            z = depth_times_side / self.side(k)
            ok = torch.as_tensor((z >= near) & (z <= far), device=q.device)
            if not bool(ok.any()):
                continue
            r = F.conv2d(q, basis)[0]  # (r, h', w'): cell (i, j) is the window's top-left cell
            resp = torch.einsum("tk,khw->thw", coef[ok], r)  # (T', h', w')
            if self.config.proposal_norm == "zscore":
                # each template against its own response over this photo: a template that matches everything
                # (a plain face, a long edge) stands out less than one that matches one place
                flat = resp.flatten(1)
                resp = (resp - flat.mean(1)[:, None, None]) / flat.std(1).clamp_min(1e-6)[:, None, None]
            best, _ = resp.max(0)
            peaks = best == F.max_pool2d(best[None, None], 3, 1, 1)[0, 0]
            vals = best[peaks]
            ys, xs = torch.nonzero(peaks, as_tuple=True)
            order = vals.argsort(descending=True)[: 4 * self.config.candidates]
            for o in order.tolist():
                cands.append(Proposal(float(vals[o]), k, int(ys[o]), int(xs[o])))
        cands.sort(key=lambda p: -p.score)
        kept: list[Proposal] = []
        for p in cands:
            w = self.window(p.level, p.i, p.j)
            if all(_window_iou(w, self.window(k.level, k.i, k.j)) <= self.config.nms_iou for k in kept):
                kept.append(p)
                if len(kept) >= self.config.candidates:
                    break
        return kept

    @property
    def _pad_cells(self) -> int:
        return self.cells // 4  # windows may reach a quarter of their side past the image border

    def window(self, level: int, i: int, j: int) -> np.ndarray:
        """(x0, y0, side) in image pixels of the window whose top-left cell is (i, j) in the padded map of a level."""
        side = self.side(level)
        step = side / self.cells
        return np.array([(j - self._pad_cells) * step, (i - self._pad_cells) * step, side])

    def _map_windows(self, maps: dict[int, torch.Tensor], p: Proposal) -> tuple[torch.Tensor, np.ndarray]:
        """The candidate's neighbourhood read from the image maps: windows one cell around its centre at its own
        level and the levels next to it (where computed); (maps (M, C, h, w), windows (M, 3), (level, i, j) of each)."""
        n = self.cells
        x0, y0, side = self.window(p.level, p.i, p.j)
        cx, cy = x0 + side / 2, y0 + side / 2
        feats, wins, cells = [], [], []
        for k in (p.level - 1, p.level, p.level + 1):
            q = maps.get(k)
            if q is None:
                continue
            c = self.side(k)
            i0 = round((cy - c / 2) / (c / n)) + self._pad_cells
            j0 = round((cx - c / 2) / (c / n)) + self._pad_cells
            H, W = q.shape[-2:]
            for i in (i0 - 1, i0, i0 + 1):
                for j in (j0 - 1, j0, j0 + 1):
                    if 0 <= i <= H - n and 0 <= j <= W - n:
                        feats.append(q[0, :, i : i + n, j : j + n])
                        wins.append(self.window(k, i, j))
                        cells.append((k, i, j))
        return torch.stack(feats), np.asarray(wins), cells

    @torch.no_grad()
    def _match_windows(self, ws: TemplateWorkspace, image: torch.Tensor, windows: np.ndarray) -> torch.Tensor:
        """(B, N) masked similarities of the crops at windows (B, 3) = (x0, y0, side) with all templates."""
        boxes = _square_boxes(windows)
        crops = crop_windows(image.expand(len(windows), -1, -1, -1), boxes, self.size)
        q = self.backbone.features(crops.to(self.device), self.feature)
        return similarity_matrix(q, ws.folded)

    @torch.no_grad()
    def verify(self, obj_id: int, maps: dict[int, torch.Tensor], props: list[Proposal]
               ) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        """Each proposal's best window in its neighbourhood of the maps, matched with the full template set:
        (windows (B, 3), similarities (B, N), sharpness (B,): the best template's cosine there minus its mean
        cosine over the eight windows ``ring`` cells away)."""
        ws = self.workspaces[obj_id]
        n, r = self.cells, self.config.ring
        basis, coef, _ = self._kernels[obj_id]
        groups = [self._map_windows(maps, p) for p in props]
        feats = torch.cat([g[0] for g in groups])
        # the best window of each neighbourhood by the proposal templates, then that window against all templates
        pre = (feats.flatten(1) @ basis.flatten(1).T) @ coef.T
        picks, start = [], 0
        for f, _, _ in groups:
            picks.append(start + int(pre[start : start + len(f)].max(1).values.argmax()))
            start += len(f)
        sims_all = similarity_matrix(feats[picks], ws.folded)
        best_w, best_s, sharp = [], [], []
        start = 0
        for g, (f, w, cells) in enumerate(groups):
            k = picks[g] - start
            start += len(f)
            s = sims_all[g : g + 1]
            v, t = s.max(1)
            best_w.append(w[k])
            best_s.append(s[0])
            level, i, j = cells[k]
            q = maps[level]
            H, W = q.shape[-2:]
            ring = [q[0, :, i + di : i + di + n, j + dj : j + dj + n] for di in (-r, 0, r) for dj in (-r, 0, r)
                    if (di, dj) != (0, 0) and 0 <= i + di <= H - n and 0 <= j + dj <= W - n]
            if ring:
                around = similarity_matrix(torch.stack(ring), ws.folded[int(t[0]) : int(t[0]) + 1])
                sharp.append(float(v[0]) - float(around.mean()))
            else:
                sharp.append(0.0)
        return np.stack(best_w), torch.stack(best_s), np.asarray(sharp)

    @torch.no_grad()
    def align(self, obj_id: int, image: torch.Tensor, windows: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """Windows (B, 3) moved by crops of the photo to where the full template set matches best (a grid of
        shifts and scales, halved each round); returns them with their (B, N) similarities."""
        ws = self.workspaces[obj_id]
        cfg = self.config
        best_w = np.asarray(windows, dtype=np.float64).reshape(-1, 3).copy()
        sims = self._match_windows(ws, image, best_w)
        best_v = sims.max(1).values
        shift, scale = cfg.align_shift, math.log(cfg.align_scale)
        offs = [(dx, dy, ds) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for ds in (-1, 0, 1) if (dx, dy, ds) != (0, 0, 0)]
        for _ in range(cfg.align_rounds):
            trial = []
            for w in best_w:
                cx, cy, c = w[0] + w[2] / 2, w[1] + w[2] / 2, w[2]
                for dx, dy, ds in offs:
                    c2 = c * math.exp(ds * scale)
                    trial.append((cx + dx * shift * c - c2 / 2, cy + dy * shift * c - c2 / 2, c2))
            trial = np.asarray(trial)
            tsims = self._match_windows(ws, image, trial).view(len(best_w), len(offs), -1)
            tbest, targ = tsims.max(2).values.max(1)
            for i in range(len(best_w)):
                if float(tbest[i]) > float(best_v[i]):
                    best_w[i] = trial[i * len(offs) + int(targ[i])]
                    best_v[i] = tbest[i]
                    sims[i] = tsims[i, int(targ[i])]
            shift, scale = shift / 2, scale / 2
        return best_w, sims

    @torch.no_grad()
    def verify_maps(self, obj_id: int, image: torch.Tensor, camera: Camera, windows: np.ndarray, R: np.ndarray,
                    t: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Each pose hypothesis rendered into its window (``verify_crop`` px, one colour pass, its alpha coverage
        the mask) and the backbone's ``verify_map`` of the photo's crop and of the render: (photo maps, render maps,
        mask share per cell, photo crops, renders, render masks): what the rendered checks and the verifier read."""
        from posekit.data.cad_cache import decimate_cached
        from posekit.features.similarity import mask_weights
        from posekit.geometry.camera import crop_K
        from posekit.render.crops import render_in_crops

        S = self.config.verify_crop
        if self._renderer is None:
            from posekit.render.gl import OffscreenRenderer

            self._renderer = OffscreenRenderer(S, S)
        if obj_id not in self._render_models:  # decimated once per part and mesh, kept in the model store
            cap = self.workspaces[obj_id].preset.crop_spec.render_max_faces
            part = self.models[obj_id]
            self._render_models[obj_id] = decimate_cached(part, cap) if cap else part
        model = self._render_models[obj_id]
        boxes = _square_boxes(windows)
        Kc = np.stack([crop_K(camera.K, b, (S, S)) for b in boxes])
        # one colour pass per hypothesis, its alpha coverage the mask (as the feature search scores its renders):
        # 0.94x the two-pass time per part, the same top-1 recall on lmo-dev's first 24 images (docs/benchmarks.md)
        rgb, mask = render_in_crops(self._renderer, [model], np.zeros(len(boxes), int), R, t, Kc, (S, S), coverage=True)
        crops = crop_windows(image.expand(len(boxes), -1, -1, -1), boxes, S)
        name = self.config.verify_map
        fa = self.backbone.features(crops.to(self.device), name)
        fb = self.backbone.features(rgb.to(self.device), name)
        w = mask_weights(mask.to(self.device), int(name[1:]), tuple(fa.shape[-2:]))
        return fa, fb, w, crops, rgb, mask

    @torch.no_grad()
    def _render_checks(self, obj_id: int, image: torch.Tensor, camera: Camera, windows: np.ndarray,
                       R: np.ndarray, t: np.ndarray, checks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each pose hypothesis rendered into its window and compared with the photo there: ``rendered`` (B,), the
        masked similarity on the backbone's deeper ``verify_map`` (s16: 112 channels of 16-px cells, more about
        the part's parts than its edges), under the render's mask; ``edges``, the share of its outline that runs
        along the photo's gradients (within 2 px); ``colour``, the agreement of the colours under its mask; with a
        learned verifier, ``verifier``, its probability that the hit is right (it also reads ``checks``, the
        scores computed before)."""
        from posekit.features.colour import colour_agreement
        from posekit.features.edges import contour_edge_agreement
        from posekit.features.similarity import paired_similarity

        fa, fb, w, crops, rgb, mask = self.verify_maps(obj_id, image, camera, windows, R, t)
        out = {"rendered": paired_similarity(fa, fb, w).cpu().numpy(),
               "edges": contour_edge_agreement(crops, mask, spread=2)}
        if _has_colours(self.models[obj_id]):
            out["colour"] = colour_agreement(crops, rgb, mask)
        if self.verifier is not None:
            from posekit.methods.detect.verifier import check_vector

            rows = [check_vector({k: float(v[i]) for k, v in {**checks, **out}.items()}) for i in range(len(windows))]
            out["verifier"] = self.verifier.probability(fa, fb, w, np.asarray(rows))
        return out

    def close(self) -> None:
        """Release the renderer of the hypotheses' check (if one was opened)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def _hits(self, obj_id: int, camera: Camera, windows: np.ndarray, sims: torch.Tensor,
              extra: dict[str, np.ndarray], image: torch.Tensor,
              boxes_given: np.ndarray | None = None) -> list[TemplateHit]:
        """Detections from matched windows: the best template's pose, its projected box (or the given one), the
        scores."""
        ws = self.workspaces[obj_id]
        vals, idx = sims.max(1)
        mean = sims.mean(1)
        side = windows[:, 2] / self.pad
        boxes = np.stack([windows[:, 0] + windows[:, 2] / 2 - side / 2, windows[:, 1] + windows[:, 2] / 2 - side / 2,
                          side, side], axis=1)
        poses = poses_from_entries(ws.templates.entries, boxes, camera, idx.cpu().numpy()[:, None],
                                   vals.cpu().numpy()[:, None], obj_id)
        ests = [p[0] for p in poses]
        if self.config.verify_crop > 0:
            cos = vals.cpu().numpy()
            before = {"cosine": cos, "contrast": cos - mean.cpu().numpy()}
            extra = {**extra, **self._render_checks(obj_id, image, camera, windows, np.stack([e.R for e in ests]),
                                                    np.stack([e.t for e in ests]), before)}
            # the two cosines: what tells a part from no part best (the gate of min_score)
            extra["match"] = 0.5 * (cos + extra["rendered"])
            checks = {"cosine": cos, **extra}
            extra["combined"] = np.mean([checks[k] for k in self._combined(obj_id)], axis=0)
        hits = []
        for i, est in enumerate(ests):
            scores = {"cosine": float(vals[i]), "contrast": float(vals[i] - mean[i]),
                      **{k: float(v[i]) for k, v in extra.items()}}
            if boxes_given is not None:
                box = tuple(float(v) for v in boxes_given[i])
            else:
                box = _projected_box(self._points[obj_id], camera, est.R, est.t)
                if box is None:
                    continue
            if self.config.score not in scores:
                raise InputError(f"detector score {self.config.score!r} is not computed here (a part without "
                                 "colours has no 'colour', a box given from outside no 'sharpness')")
            rank = scores[self.config.score]
            hits.append(TemplateHit(obj_id, box, rank, est.R, est.t,
                                    tuple(float(v) for v in windows[i]), scores))
        hits.sort(key=lambda h: -h.score)
        return hits

    def detect_object(self, obj_id: int, image: torch.Tensor, camera: Camera,
                      maps: dict[int, torch.Tensor], least: float | None = None) -> list[TemplateHit]:
        """Verified detections of one part that pass the gate at ``least`` (default ``min_score``), best first,
        thinned by box overlap."""
        props = self.propose(obj_id, camera, maps)
        if not props:
            return []
        windows, sims, sharp = self.verify(obj_id, maps, props)
        extra = {"proposal": np.array([p.score for p in props]), "sharpness": sharp,
                 "cosine_map": sims.max(1).values.cpu().numpy()}
        if self.config.align_top > 0:
            order = sims.max(1).values.argsort(descending=True)[: self.config.align_top].cpu().numpy()
            aw, asims = self.align(obj_id, image, windows[order])
            windows = windows.copy()
            windows[order] = aw
            sims = sims.clone()
            sims[torch.as_tensor(order)] = asims
        top = self.config.verify_top
        if self.config.verify_crop > 0 and 0 < top < len(windows):
            keep = sims.max(1).values.argsort(descending=True)[:top].cpu().numpy()
            windows, sims = windows[keep], sims[torch.as_tensor(keep)]
            extra = {k: v[keep] for k, v in extra.items()}
        grown = [s for s in self.config.verify_scales if s != 1.0]
        if grown:
            base = windows
            more = np.concatenate([_rescaled(base, f) for f in grown])
            windows = np.concatenate([base, more])
            sims = torch.cat([sims, self._match_windows(self.workspaces[obj_id], image, more)])
            extra = {k: np.tile(v, 1 + len(grown)) for k, v in extra.items()}
        hits = self._hits(obj_id, camera, windows, sims, extra, image)
        return thin([h for h in hits if self.passes(h, least)], self.config.box_overlap)

    def find(self, image: np.ndarray, camera: Camera, obj_ids: list[int] | None = None,
             top_k: int | None = None, least: float | None = None) -> tuple[list[TemplateHit], dict[str, float]]:
        """Every verified hit of the given parts (default: all) in one image that passes the gate at ``least``
        (default ``min_score``), best first per part (at most ``top_k`` each), and the seconds spent on the image
        maps and on each part."""
        obj_ids = list(self.workspaces) if obj_ids is None else list(obj_ids)
        unknown = [o for o in obj_ids if o not in self.workspaces]
        if unknown:
            raise InputError(f"template detector: no templates of object id(s) {unknown}")
        if image.shape[0] != camera.height or image.shape[1] != camera.width:
            raise InputError(f"image is {image.shape[1]}x{image.shape[0]} but the camera is "
                             f"{camera.width}x{camera.height}")
        t0 = time.perf_counter()
        img = image_tensor(image)
        levels: set[int] = set()
        for o in obj_ids:
            own = self.levels(o, camera)
            levels |= set(own)
            # verification reads the levels next to each part's range too (none below min_crop, none a step past
            # the image's larger side)
            big = float(max(camera.width, camera.height)) * self.config.scale_step
            levels |= {k for k in (own[0] - 1, own[-1] + 1) if k >= 0 and self.side(k) <= big} if own else set()
        maps = self._image_maps(img, sorted(levels))
        times = {"maps": time.perf_counter() - t0}
        out: list[TemplateHit] = []
        for o in obj_ids:
            t1 = time.perf_counter()
            hits = self.detect_object(o, img, camera, maps, least)
            out.extend(hits[:top_k] if top_k else hits)
            times[f"obj_{o}"] = time.perf_counter() - t1
        return out, times

    @torch.no_grad()
    def verify_boxes(self, image: np.ndarray, camera: Camera, obj_id: int, boxes, scores,
                     keep_boxes: bool = True) -> list[TemplateHit]:
        """Hits from boxes found elsewhere (a trained detector's, BOP [x, y, w, h]): each box's square window
        (``crop_pad`` times its larger side, as the coarse stage crops) matched with all templates, the best
        template's pose rendered and checked as the detector's own candidates are; the box is kept as given (or,
        without ``keep_boxes``, replaced by the best template pose's projected box) and its score is recorded as
        ``detector`` (and ``proposal``). Best first; neither gated nor thinned."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if not len(b):
            return []
        img = image_tensor(image)
        windows = square_window(b, self.pad)[:, :3]
        sims = self._match_windows(self.workspaces[obj_id], img, windows)
        given = np.asarray(scores, dtype=np.float64)
        extra = {"detector": given, "proposal": given, "cosine_map": sims.max(1).values.cpu().numpy()}
        return self._hits(obj_id, camera, windows, sims, extra, img, boxes_given=b if keep_boxes else None)

    def passes(self, hit: TemplateHit, thresh: float | None = None) -> bool:
        """Whether a hit is a detection: its gate score (``match``) reaches ``thresh`` (default ``min_score``)
        and, where the outline was checked, its outline lies on the photo's edges for at least ``min_edges``."""
        least = self.config.min_score if thresh is None else float(thresh)
        return _gate(hit) >= least and hit.scores.get("edges", 1.0) >= self.config.min_edges

    def _combined(self, obj_id: int) -> tuple[str, ...]:
        """The checks whose mean is a part's ``combined`` score: :func:`_combined_checks`, and the learned
        verifier's probability as one more where there is one (lmo-dev: the rules and the head fail on different
        hits, docs/benchmarks.md "A learned verifier")."""
        return _combined_checks(self.models[obj_id]) + (("verifier",) if self.verifier is not None else ())

    def checks(self, obj_id: int) -> int:
        """How many checks the ranking score (``config.score``) of a part's hits averages: those of ``combined``
        (:func:`_combined_checks`), two for ``match``, else one."""
        if self.config.score == "combined" and self.config.verify_crop > 0:
            return len(self._combined(obj_id))
        return 2 if self.config.score == "match" else 1

    @property
    def default_score(self) -> float:
        """The least score a detection needs when the caller names no threshold."""
        return self.config.min_score

    def label_of(self, model: ObjectModel) -> int:
        """The detector's id of a part (the object id its templates were given under)."""
        for obj_id, ws in self.workspaces.items():
            if ws.mesh_hash == model.mesh_hash:
                return obj_id
        self.check_mesh(model)
        raise AssertionError("unreachable")

    def detect(self, image: np.ndarray, camera: Camera, score_thresh: float | None = None, top_k: int | None = None,
               labels: dict[int, int] | None = None) -> list[TemplateHit]:
        """The detect stage's call (as the trained detector's): hits that pass the gate (``match`` at least
        ``score_thresh``, default ``config.min_score``, and ``edges`` at least ``config.min_edges``), ranked by
        ``config.score``, at most ``top_k`` per part (counted after the gate), best first per part; ``labels`` maps
        this detector's ids to the caller's object ids (parts not in it are not searched)."""
        mapping = labels or {o: o for o in self.workspaces}
        thresh = self.config.min_score if score_thresh is None else float(score_thresh)
        hits, self.last_times = self.find(image, camera, list(mapping), top_k, least=thresh)
        for h in hits:
            h.obj_id = mapping[h.obj_id]
        return hits


def _has_colours(model: ObjectModel) -> bool:
    """Whether the part has colours of its own (vertex colours or a texture), which its renders then show."""
    return model.vertex_colors is not None or model.texture_image is not None


def _combined_checks(model: ObjectModel) -> tuple[str, ...]:
    """The checks whose mean is a part's ``combined`` score. With colours of its own, four, each right where the
    others fail: the template's match, the rendered hypothesis' deeper match, its outline on the photo's edges and
    its colours (lmo-dev: the outline helps only beside the colours, docs/benchmarks.md "Template detector: four
    checks"). Without (a plain grey STL says nothing about the painted part in the photo), the two cosines."""
    if _has_colours(model):
        return ("cosine", "rendered", "edges", "colour")
    return ("cosine", "rendered")


def _gate(hit: TemplateHit) -> float:
    """The score that decides whether a hit is a detection at all (``min_score``): the two cosines' mean where
    the rendered check ran, else the ranking score."""
    return hit.scores.get("match", hit.score)


def _outline_points(model: ObjectModel, n: int = 2000) -> np.ndarray:
    """At most n of the model's vertices (mm), evenly taken: enough for its projected box."""
    v = np.asarray(model.vertices, dtype=np.float64)
    if len(v) > n:
        v = v[np.linspace(0, len(v) - 1, n).round().astype(int)]
    return v


def _projected_box(points: np.ndarray, camera: Camera, R: np.ndarray, t: np.ndarray):
    """BOP box [x, y, w, h] of the points projected in pose (R, t), clipped to the image; None when the part
    would lie behind the camera or wholly outside the image."""
    if float(t[2]) <= 0:
        return None
    cam = points @ np.asarray(R).T + np.asarray(t).reshape(1, 3)
    if float(cam[:, 2].min()) <= 0:
        return None
    uv = project_points(cam, camera.K)
    x0 = max(0.0, float(uv[:, 0].min()))
    y0 = max(0.0, float(uv[:, 1].min()))
    x1 = min(float(camera.width), float(uv[:, 0].max()) + 1.0)
    y1 = min(float(camera.height), float(uv[:, 1].max()) + 1.0)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def thin(hits: list, overlap: float) -> list:
    """One detection per part: hits (anything with ``bbox`` and ``score``) best first, dropping a box that shares
    more than ``overlap`` of the smaller one's area with a better one (a piece of the part matched at a smaller
    scale, or the part matched with its surroundings, is the same part)."""
    kept: list = []
    for h in sorted(hits, key=lambda h: -h.score):
        if all(box_overlap(h.bbox, k.bbox) <= overlap for k in kept):
            kept.append(h)
    return kept


def box_overlap(a, b) -> float:
    """Intersection of two BOP boxes over the smaller one's area."""
    inter = box_iou(a, b)
    if inter <= 0:
        return 0.0
    area_a, area_b = float(a[2]) * float(a[3]), float(b[2]) * float(b[3])
    # from IoU = I / (A + B - I): I = IoU (A + B) / (1 + IoU)
    return inter * (area_a + area_b) / (1.0 + inter) / max(min(area_a, area_b), 1e-9)


def _rescaled(windows: np.ndarray, factor: float) -> np.ndarray:
    """Square windows (B, 3) = (x0, y0, side) scaled by ``factor`` about their centres."""
    c = windows[:, 2] * factor
    return np.stack([windows[:, 0] + windows[:, 2] / 2 - c / 2, windows[:, 1] + windows[:, 2] / 2 - c / 2, c], 1)


def _square_boxes(windows: np.ndarray) -> np.ndarray:
    """BOP boxes (B, 4) of square windows (B, 3) = (x0, y0, side)."""
    w = np.asarray(windows, dtype=np.float64).reshape(-1, 3)
    return np.concatenate([w, w[:, 2:3]], axis=1)


def _window_iou(a: np.ndarray, b: np.ndarray) -> float:
    return box_iou(*_square_boxes(np.stack([a, b])))
