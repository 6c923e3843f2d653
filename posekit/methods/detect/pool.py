"""Pooled detection (issue 27, item 2): a trained detector's boxes and the template detector's candidates in one
pool, every one verified and ranked by the template detector's checks.

The two fail on different parts (lmo-dev: the templates are strong on ape, cat and duck, the trained detector on
duck, holepuncher and can; docs/benchmarks.md), so neither's top box is the pool's by default. The trained detector
(``posekit train regress``) proposes at a low score; each of its boxes becomes a window of the part's templates
(:meth:`TemplateDetector.verify_boxes`), gets the same rendered checks as the template detector's own candidates
and keeps its box and its score (``detector``). One ranking (the template detector's ``config.score``), one gate
(its ``passes``) and one thinning (its ``box_overlap``) then hold for the whole pool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from posekit.cad.model import ObjectModel
from posekit.errors import InputError
from posekit.geometry.boxcrop import box_iou
from posekit.geometry.camera import Camera
from posekit.methods.detect.templates import TemplateDetector, TemplateHit, thin


@dataclass(frozen=True)
class PoolConfig:
    """What the trained detector adds to the pool."""

    trained_score: float = 0.05  # its boxes down to this score join (its own default threshold is 0.5)
    trained_top_k: int = 5  # at most this many per part and scale
    # the trained detector runs on the photo at these multiples of its input size (its preset's training size,
    # 320 x 240 for `cpu`): at 1 it finds the large parts, at 2 (a 640 x 480 photo at its own size) the small ones
    # (lmo-dev: driller 23 against 3 %, ape 43 against 74 %); the pool takes the boxes of both
    # (docs/benchmarks.md, "Pool")
    scales: tuple[float, ...] = (1.0, 2.0)
    # "templates": the pool ranked by the template detector's score alone; "fused": the trained detector's score
    # at each hit (its best box of the part that passed the gate at IoU >= 0.5 with the hit, 0 where none) is one
    # more check beside the template detector's (a mean over them all)
    rank: str = "templates"
    # "given": a trained box is kept as the detector drew it (the visible part); "template": the verified
    # template pose's projected box (the whole part, as the template detector's own hits)
    box: str = "given"

    def __post_init__(self) -> None:
        if self.rank not in ("templates", "fused"):
            raise InputError(f"pool rank must be templates or fused, got {self.rank!r}")
        if self.box not in ("given", "template"):
            raise InputError(f"pool box must be given or template, got {self.box!r}")
        if not self.scales or any(not 0.1 <= f <= 8 for f in self.scales):
            raise InputError(f"pool scales must be one or more factors in [0.1, 8], got {self.scales!r}")


class PooledDetector:
    """The template detector and a trained detector (anything with ``label_of(model)`` and ``detect(image,
    camera, score_thresh, top_k, labels)``, e.g. a `posekit train regress` workspace) as one detect stage."""

    def __init__(self, trained, templates: TemplateDetector, config: PoolConfig | None = None) -> None:
        self.trained = trained
        self.templates = templates
        self.config = config or PoolConfig()
        # the trained detector's label of each part the templates know (refused here if it was not trained on it)
        self._trained_label = {o: trained.label_of(m) for o, m in templates.models.items()}
        self.last_times: dict[str, float] = {}

    @property
    def default_score(self) -> float:
        return self.templates.default_score

    def passes(self, hit: TemplateHit, thresh: float | None = None) -> bool:
        """Whether a hit is a detection: the template detector's gate (every hit of the pool is verified by it)."""
        return self.templates.passes(hit, thresh)

    def label_of(self, model: ObjectModel) -> int:
        """The pool's id of a part: the template detector's."""
        return self.templates.label_of(model)

    def check_mesh(self, model: ObjectModel) -> None:
        """Refuses a part the pool's templates do not hold (the trained detector's parts were checked when the
        pool was made)."""
        self.templates.check_mesh(model)

    def find(self, image: np.ndarray, camera: Camera, obj_ids: list[int] | None = None,
             top_k: int | None = None, least: float | None = None) -> tuple[list[TemplateHit], dict[str, float]]:
        """Every hit of the pool for the given parts (default: all) that passes the template detector's gate at
        ``least`` (default its ``min_score``), thinned as it thins its own, best first per part (at most ``top_k``
        each); the seconds per stage."""
        obj_ids = list(self.templates.workspaces) if obj_ids is None else list(obj_ids)
        own, times = self.templates.find(image, camera, obj_ids, least=least)
        verified, more = self.trained_hits(image, camera, obj_ids)
        return self.merge(own, verified, obj_ids, top_k, least), {**times, **more}

    def trained_hits(self, image: np.ndarray, camera: Camera,
                     obj_ids: list[int]) -> tuple[list[TemplateHit], dict[str, float]]:
        """The trained detector's boxes of the given parts at each of ``scales`` (score >= ``trained_score``, at
        most ``trained_top_k`` each), verified by the templates; neither gated nor thinned. The seconds per stage."""
        t0 = time.perf_counter()
        dets = self.trained_boxes(image, camera, obj_ids)
        times = {"trained": time.perf_counter() - t0}
        out: list[TemplateHit] = []
        for o in obj_ids:
            t1 = time.perf_counter()
            mine = [d for d in dets if d.obj_id == o]
            out += self.templates.verify_boxes(image, camera, o, [d.bbox for d in mine], [d.score for d in mine],
                                               keep_boxes=self.config.box == "given")
            times[f"pool_{o}"] = time.perf_counter() - t1
        return out, times

    def trained_boxes(self, image: np.ndarray, camera: Camera, obj_ids: list[int]) -> list:
        """The trained detector's own detections of the given parts at each of ``scales`` (score >=
        ``trained_score``, at most ``trained_top_k`` per part and scale), with the pool's object ids."""
        labels = {self._trained_label[o]: o for o in obj_ids}
        return [d for f in self.config.scales
                for d in self.trained.detect(image, camera, score_thresh=self.config.trained_score,
                                             top_k=self.config.trained_top_k, labels=labels, scale=f)]

    def merge(self, own: list[TemplateHit], verified: list[TemplateHit], obj_ids: list[int],
              top_k: int | None = None, least: float | None = None) -> list[TemplateHit]:
        """One pool per part: the template detector's hits (already gated) and the verified ones that pass its
        gate at ``least``, ranked by its score, thinned by its ``box_overlap``, at most ``top_k`` each."""
        out: list[TemplateHit] = []
        for o in obj_ids:
            theirs = [h for h in verified if h.obj_id == o and self.templates.passes(h, least)]
            pool = [h for h in own if h.obj_id == o] + theirs
            if self.config.rank == "fused":
                for h in pool:
                    h.score = self._fused(h, theirs)
            pool.sort(key=lambda h: -h.score)
            kept = thin(pool, self.templates.config.box_overlap)
            out.extend(kept[:top_k] if top_k else kept)
        return out

    def _fused(self, hit: TemplateHit, theirs: list[TemplateHit]) -> float:
        """The hit's template score and the trained detector's score at it, as a mean of all the checks (the
        template score is itself a mean of ``checks`` of them)."""
        at = max((v.scores["detector"] for v in theirs if box_iou(v.bbox, hit.bbox) >= 0.5), default=0.0)
        hit.scores["detector_at"] = float(at)
        n = self.templates.checks(hit.obj_id)
        value = (n * hit.scores[self.templates.config.score] + at) / (n + 1)
        hit.scores["fused"] = float(value)
        return float(value)

    def detect(self, image: np.ndarray, camera: Camera, score_thresh: float | None = None, top_k: int | None = None,
               labels: dict[int, int] | None = None) -> list[TemplateHit]:
        """The detect stage's call, as :meth:`TemplateDetector.detect`: hits that pass the template detector's
        gate at ``score_thresh`` (default its ``min_score``), at most ``top_k`` per part; ``labels`` maps the pool's
        ids to the caller's object ids (parts not in it are not searched). Each hit carries the best template's
        pose (a trained detector's regressed pose is not kept)."""
        mapping = labels or {o: o for o in self.templates.workspaces}
        least = self.templates.config.min_score if score_thresh is None else float(score_thresh)
        hits, self.last_times = self.find(image, camera, list(mapping), top_k, least=least)
        for h in hits:
            h.obj_id = mapping[h.obj_id]
        return hits

    def close(self) -> None:
        self.templates.close()
