"""The estimation pipeline: detections -> coarse poses (templates or AAE) -> refined poses (DeepIM [+ polish]).

A :class:`PoseEstimator` holds the object models and, per object, a coarse method (any workspace with
``estimate(image, camera, boxes, obj_id, top_k, correct_perspective)`` and ``check_mesh(model)``:
:class:`~posekit.methods.templates.TemplateWorkspace`, :class:`~posekit.methods.aae.AaeWorkspace`); ``estimate`` runs the
stages over one observation and all its detections, batched per object, and returns one
:class:`PoseEstimate` per detection with per-stage timings and, when refined, the pose after each
iteration (``history``). The CLI's single-image and dataset modes are thin loops over it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from posekit.cad.model import ObjectModel
from posekit.data.types import Observation, PoseEstimate
from posekit.errors import InputError


@dataclass(frozen=True)
class Detection:
    """A 2D detection: object id, BOP box [x, y, w, h] (pixels) and the detector's score; a detector that also
    regresses poses (``posekit train regress``) gives the pose (R, t mm) and the visible mask (H, W) bool."""

    obj_id: int
    bbox: tuple[float, float, float, float]
    score: float = 1.0
    pose: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass
class ImageResult:
    """What :meth:`PoseEstimator.run` found in one image: the detections used (the detector's, or those given)
    and the estimates made from them."""

    detections: list[Detection]
    estimates: list[PoseEstimate]


@dataclass(frozen=True)
class Hypotheses:
    """From a box to a pose without trusting the box's size (``--hypotheses``): the coarse stage's best ``views``
    views, each at ``depths`` depths evenly spread over 1 +- ``depth_range`` of the depth its box implies, all
    rendered into one window and scored on the photo by the feature similarity under the union of their masks
    (:meth:`~posekit.methods.featurefit.FeatureRefiner.score_poses`); the best goes on to refinement.
    The defaults: +-25 % holds a box 20 % too small or too large (the template detector's boxes often cover part of
    the part); 7 depths are 8.3 % apart, so the feature search's last depth sweep (+-8 %) reaches the truth from the
    nearest; 3 views because a wrong first view is the other error of a box's match; 256-px windows because stride-8
    maps of 256-px crops are the depth evidence that measured unbiased for the depth sweep (docs/benchmarks.md)."""

    views: int = 3
    depth_range: float = 0.25
    depths: int = 7
    crop: int = 256

    def scales(self) -> np.ndarray:
        return 1.0 + np.linspace(-self.depth_range, self.depth_range, self.depths)


@dataclass
class EstimatorConfig:
    """Settings of the stages (CLI flags map one to one)."""

    top_k: int = 1
    correct_perspective: bool = True
    refine_iters: int = 4
    refine_score: str | None = None  # "mask" | "edges" | "features": keep the best-scored refiner iterate, not the last
    polish_steps: int = 0
    det_score: float | None = None  # detect stage: the least detector score kept (None: the detector's own default)
    det_top_k: int | None = None  # detect stage: at most this many detections per object (None: all)
    hypotheses: Hypotheses | None = None  # between coarse and refine: views x depths scored on the photo (None: off)


class CoarseMethod(Protocol):
    """What the coarse stage needs of a method's workspace."""

    def estimate(self, image: np.ndarray, camera, boxes_xywh, obj_id: int, top_k: int = 1,
                 correct_perspective: bool = True) -> list[list[PoseEstimate]]: ...

    def check_mesh(self, model: ObjectModel) -> None: ...


class PoseEstimator:
    """Detect (a trained regressor), coarse (templates / AAE codebook / regressed poses) and refine (DeepIM or the
    feature search) stages over typed observations.

    Build it once and call :meth:`run` (or :meth:`estimate`) per observation: the models, the coarse workspaces
    (templates with their folded references), the shared backbone and the refiner's renderers stay loaded, so each
    further image costs only its own work -- for templates with a box a few ms to 0.02 s on 2 free cores, against
    about 3-5 s of start-up for a whole `posekit estimate` call (`posekit estimate PHOTOS...` does this loop;
    docs/estimate.md, "Many photos")::

        from posekit.cad.load import load_model
        from posekit.data.types import Observation
        from posekit.estimate.inputs import load_image
        from posekit.methods.featurefit import FeatureRefiner
        from posekit.methods.templates import load_workspace

        part = load_model("part.stl", symmetries="none")       # no stage here reads symmetries
        estimator = PoseEstimator({1: part}, coarse={1: load_workspace("ws_tpl", model=part)},
                                  refiner=FeatureRefiner([part]))  # or refiner=None: templates only
        try:
            for path, box in photos:                             # the same camera, or one per photo
                result = estimator.run(Observation(load_image(path), camera), [Detection(1, box)])
                best = result.estimates[0]                      # R, t (mm), score, reliable, failed, timings
        finally:
            estimator.refiner.close()                           # the refiner's renderers
    """

    def __init__(self, models: dict[int, ObjectModel], coarse: dict[int, CoarseMethod] | None = None, refiner=None,
                 config: EstimatorConfig | None = None, detector=None, scorer=None) -> None:
        self.models = models
        self.coarse_methods = coarse or {}
        self.refiner = refiner
        self.detector = detector
        self.config = config or EstimatorConfig()
        # the hypotheses stage's scorer (``score_poses``): the feature search where it is the refiner
        self.scorer = scorer if scorer is not None else (refiner if hasattr(refiner, "score_poses") else None)
        if self.config.hypotheses is not None and self.scorer is None:
            raise InputError("the hypotheses stage needs a scorer of poses on the photo (the feature search)")
        if detector is not None:
            for m in models.values():
                detector.check_mesh(m)
        for obj_id, ws in self.coarse_methods.items():
            if obj_id in models:
                ws.check_mesh(models[obj_id])

    # ------------------------------------------------------------------ stages
    def detect(self, obs: Observation) -> list[Detection]:
        """The detector's boxes of this estimator's objects, best first per object, with the pose each detection
        implies (the trained regressor's regressed pose, the template detector's best template) and the trained
        detector's masks. The detector is :class:`~posekit.methods.detect.TemplateDetector` (no training), a
        `posekit train regress` workspace or :class:`~posekit.methods.detect.PooledDetector` (the two pooled); all
        have ``label_of(model)``, ``check_mesh(model)`` and ``detect(image, camera, score_thresh, top_k, labels)``."""
        if self.detector is None:
            raise InputError("no detector: give boxes, the part's templates (the training-free detector) or a "
                             "detector workspace from `posekit train regress`")
        labels = {self.detector.label_of(m): obj_id for obj_id, m in self.models.items()}
        thresh = {} if self.config.det_score is None else {"score_thresh": self.config.det_score}
        dets = self.detector.detect(obs.image, obs.camera, top_k=self.config.det_top_k, labels=labels, **thresh)
        return [Detection(d.obj_id, d.bbox, d.score, pose=(d.R, d.t), mask=d.mask) for d in dets]

    def coarse(self, obs: Observation, detections: Sequence[Detection]) -> list[PoseEstimate]:
        """One pose per detection (the method's best view entry) scored by the detection's score times the
        method's similarity; with ``top_k`` > 1 the next hypotheses are kept in the coarse history entry."""
        out: list[PoseEstimate | None] = [None] * len(detections)
        for obj_id in sorted({d.obj_id for d in detections}):
            ws = self.coarse_methods.get(obj_id)
            if ws is None:
                raise InputError(f"no coarse-stage workspace (templates or AAE) for object {obj_id}")
            idx = [i for i, d in enumerate(detections) if d.obj_id == obj_id]
            boxes = np.array([detections[i].bbox for i in idx], dtype=np.float64)
            if getattr(ws, "uses_detection_poses", False) and all(detections[i].pose is not None for i in idx):
                # the regressor's own detections already carry its poses
                hyps = [[PoseEstimate(obj_id=obj_id, R=detections[i].pose[0], t=detections[i].pose[1])] for i in idx]
            else:
                top_k = self.config.top_k
                if self.config.hypotheses is not None:
                    top_k = max(top_k, self.config.hypotheses.views)
                hyps = ws.estimate(obs.image, obs.camera, boxes, obj_id, top_k=top_k,
                                   correct_perspective=self.config.correct_perspective)
            for i, h in zip(idx, hyps, strict=True):
                best = h[0]
                best.score = float(best.score) * float(detections[i].score)
                entry = {"stage": "coarse", "method": getattr(ws, "method_name", type(ws).__name__),
                         "R": best.R.tolist(), "t": best.t.tolist(), "score": best.score,
                         "bbox": [float(v) for v in detections[i].bbox], "detection_score": float(detections[i].score)}
                if len(h) > 1:  # --top-k: the other hypotheses, best first, for the user to inspect
                    entry["alternatives"] = [{"R": a.R.tolist(), "t": a.t.tolist(), "score": float(a.score)}
                                             for a in h[1:]]
                best.history.append(entry)
                out[i] = best
        return [e for e in out if e is not None]

    def hypotheses(self, obs: Observation, estimates: Sequence[PoseEstimate]) -> list[PoseEstimate]:
        """Each coarse estimate replaced by the best-scored of its hypotheses (:class:`Hypotheses`): its coarse
        views (the estimate and the coarse entry's alternatives) times the depth scales, all scored on the photo in
        one batch. The estimate's score becomes the picked view's template score times the detection's."""
        hc = self.config.hypotheses
        if hc is None or not estimates:
            return list(estimates)
        start = time.perf_counter()
        scales = hc.scales()
        Rs, ts, view_scores = [], [], []
        for e in estimates:
            entry = next((h for h in e.history if h.get("stage") == "coarse"), {})
            views = [(e.R, e.t, float(entry.get("score", e.score)))]
            views += [(np.asarray(a["R"]), np.asarray(a["t"]), float(a["score"]) * float(entry.get("detection_score", 1.0)))
                      for a in entry.get("alternatives", [])]
            views = (views * hc.views)[: hc.views]  # fewer alternatives than views: the best repeated
            Rs.append(np.stack([R for R, _, _ in views for _ in scales]))
            ts.append(np.stack([t * s for _, t, _ in views for s in scales]))
            view_scores.append([v for _, _, v in views])
        keys = [self.models[e.obj_id].mesh_hash for e in estimates]
        scores = self.scorer.score_poses(obs, keys, np.stack(Rs), np.stack(ts), size=hc.crop)
        seconds = time.perf_counter() - start
        out = []
        for i, e in enumerate(estimates):
            b = int(scores[i].argmax())
            v, k = divmod(b, len(scales))
            hist = list(e.history) + [{"stage": "hypotheses", "views": hc.views, "scales": scales.tolist(),
                                       "view": v, "scale": float(scales[k]), "score": float(scores[i, b]),
                                       "R": Rs[i][b].tolist(), "t": ts[i][b].tolist(), "time": seconds}]
            out.append(PoseEstimate(obj_id=e.obj_id, R=Rs[i][b], t=ts[i][b], score=view_scores[i][v],
                                    scene_id=e.scene_id, im_id=e.im_id, time=e.time,
                                    timings={**e.timings, "hypotheses": seconds}, history=hist))
        return out

    def refine(self, obs: Observation, estimates: Sequence[PoseEstimate], iters: int | None = None) -> list[PoseEstimate]:
        """Refine all estimates of one image in one batch; keeps the pose after each iteration in ``history``."""
        if self.refiner is None or not estimates:
            return list(estimates)
        iters = self.config.refine_iters if iters is None else iters
        R0 = np.stack([e.R for e in estimates])
        t0 = np.stack([e.t for e in estimates])
        # The refiner knows its objects by mesh hash, which ties them to the meshes it was trained on.
        keys = [self.models[e.obj_id].mesh_hash for e in estimates]
        run = self.refiner.refine(obs, keys, R0, t0, iters=iters, score=self.config.refine_score if iters > 0 else None)
        final_R, final_t = run.final
        polished = None
        if self.config.polish_steps > 0:
            # DeepIM: towards the user's mask where the observation has one, else the refiner's predicted mask;
            # features: towards the image's backbone maps (plus the user's mask where there is one)
            polished = self.refiner.polish(run, keys, steps=self.config.polish_steps, mask=obs.mask, observation=obs)
            final_R, final_t = polished.R, polished.t
        refined = []
        for i, e in enumerate(estimates):
            hist = list(e.history)
            for k in range(1, len(run.R)):
                hist.append({"stage": f"refine_{k}", "R": np.asarray(run.R[k][i]).tolist(),
                             "t": np.asarray(run.t[k][i]).tolist(), "time": float(run.times[k - 1])})
                if run.scores is not None:
                    hist[-1]["score"] = float(run.scores[k, i])
                if k == len(run.R) - 1 and run.depth_scales is not None:  # the feature search's last depth sweep
                    hist[-1]["depth_sweep"] = {"scale": float(run.depth_scales[i]),
                                               "kept": bool(run.depth_scales[i] == 1.0), "time": run.depth_time}
            if run.scores is not None:  # the iterate kept (0 = the pose refinement started from) and its score
                b = int(run.best[i])
                hist.append({"stage": "refine_kept", "iteration": b, "R": np.asarray(run.R[b][i]).tolist(),
                             "t": np.asarray(run.t[b][i]).tolist(), "score": float(run.scores[b, i]),
                             "initial_score": float(run.scores[0, i])})
            timings = dict(e.timings)
            timings["refine"] = float(sum(run.times))
            if run.depth_scales is not None:
                timings["depth_sweep"] = float(run.depth_time)
            if polished is not None:
                hist.append({"stage": "polish", "R": final_R[i].tolist(), "t": final_t[i].tolist(),
                             "time": float(polished.seconds), "loss": polished.kind,
                             "loss_before": float(polished.loss_before[i]), "loss_after": float(polished.loss_after[i])})
                timings["polish"] = float(polished.seconds)
            refined.append(PoseEstimate(obj_id=e.obj_id, R=np.asarray(final_R[i]), t=np.asarray(final_t[i]),
                                        score=e.score, scene_id=e.scene_id, im_id=e.im_id, timings=timings,
                                        history=hist))
        return refined

    def estimate(self, obs: Observation, detections: Sequence[Detection] | None = None,
                 init: Sequence[PoseEstimate] | None = None) -> list[PoseEstimate]:
        """The estimates of :meth:`run`."""
        return self.run(obs, detections, init).estimates

    def run(self, obs: Observation, detections: Sequence[Detection] | None = None,
            init: Sequence[PoseEstimate] | None = None) -> ImageResult:
        """Detect (when no ``detections`` are given and a detector is loaded), coarse (unless ``init`` poses are
        given), then refine (when a refiner is loaded); times each stage. Returns the detections used with the
        estimates."""
        start = time.perf_counter()
        t_detect = 0.0
        if detections is None and init is None:
            detections = self.detect(obs)
            t_detect = time.perf_counter() - start
        detections = list(detections or [])
        estimates = list(init) if init is not None else self.hypotheses(obs, self.coarse(obs, detections))
        if t_detect:
            for e in estimates:
                e.timings["detect"] = t_detect
        t_coarse = time.perf_counter() - start - t_detect
        estimates = self.refine(obs, estimates)
        total = time.perf_counter() - start
        for e in estimates:
            e.timings.setdefault("coarse_total", t_coarse)
            e.timings["total"] = total
            e.time = total
            e.failed = pose_problem(e, self.models[e.obj_id], obs.camera)
            e.reliable = None if e.failed is None else False
            threshold = RELIABLE_SCORE.get(coarse_method(e))
            if e.failed is None and threshold is not None:
                e.reliable = bool(e.score >= threshold)
        return ImageResult(detections=detections, estimates=estimates)


#: the least score of a reliable pose, per coarse method (the score is the coarse stage's: refinement keeps it);
#: below it the JSON marks the pose "reliable": false. Templates: measured on lmo-dev (717 targets, gt-obj boxes,
#: the `upper` templates; `python benchmarks/score.py`): of the poses scored under 0.30 (19 % of them) 64 % have
#: their rotation over 30 degrees off, against 11 % of those above; it marks 12 % of the ADD(-S)-correct poses.
#: The score tells a wrong rotation, not the depth: ADD(-S) < 0.1 d is 22 % below and 37 % above. AAE, regress:
#: not measured (no entry, "reliable": null).
RELIABLE_SCORE: dict[str, float] = {"templates": 0.30}
#: the least span of the part in the image (pixels, its diameter at its depth) for a plausible pose: one cell of
#: the 8-px feature map; a part smaller than that cannot have been seen, whatever the pose's score
MIN_SPAN_PX = 8.0


def coarse_method(e: PoseEstimate) -> str | None:
    """The coarse method that made an estimate (its history's coarse entry), None for --init poses."""
    return next((h.get("method") for h in e.history if h.get("stage") == "coarse"), None)


def pose_problem(e: PoseEstimate, model: ObjectModel, camera) -> str | None:
    """Why the pose is implausible for the part's size, or None: not finite, behind the camera (t_z <= 0), the
    camera inside the part (closer than half its diameter to its origin), or so far that the part would span
    under ``MIN_SPAN_PX`` pixels."""
    if not (np.all(np.isfinite(e.R)) and np.all(np.isfinite(e.t))):
        return "the pose is not finite"
    tz = float(e.t[2])
    if tz <= 0:
        return f"the part would be behind the camera (t_z = {tz:.0f} mm)"
    d = float(model.diameter)
    if float(np.linalg.norm(e.t)) < 0.5 * d:
        return f"the camera would be inside the part ({np.linalg.norm(e.t):.0f} mm from its origin, diameter {d:.0f} mm)"
    span = d * float(camera.K[0, 0]) / tz
    if span < MIN_SPAN_PX:
        return (f"implausible depth: at t_z = {tz:.0f} mm the part ({d:.0f} mm across) would span {span:.1f} px "
                f"(under {MIN_SPAN_PX:g})")
    return None


def _workspace(path) -> dict:
    from posekit.data.store import workspace_digest

    return {"workspace": str(path), "sha256": workspace_digest(path)}


def _template_detector(det, cfg) -> dict:
    from dataclasses import asdict

    return {"kind": "templates", "det_score": cfg.det_score, "default_score": det.default_score,
            "det_top_k": cfg.det_top_k, "config": asdict(det.config),
            "templates": {str(o): _workspace(ws.path) for o, ws in sorted(det.workspaces.items())}}


def describe(estimator: PoseEstimator) -> dict:
    """What an estimator runs, JSON-ready, enough to run it again: each stage with its settings and its workspace
    (path and :func:`~posekit.data.store.workspace_digest`), the feature search's whole config (its depth sweep
    included), the posekit and torch versions, the device and torch's threads."""
    from dataclasses import asdict

    import torch

    import posekit

    cfg = estimator.config
    out: dict = {"posekit": posekit.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    det = estimator.detector
    if det is None:
        out["detect"] = None
    elif hasattr(det, "workspaces"):  # the training-free template detector: its settings and templates
        out["detect"] = _template_detector(det, cfg)
    elif hasattr(det, "trained"):  # the pool of a trained detector and the template detector
        out["detect"] = {**_template_detector(det.templates, cfg), "kind": "pool", "pool": asdict(det.config),
                         "trained": _workspace(det.trained.path)}
    else:
        out["detect"] = {"kind": "regress", **_workspace(det.path), "det_score": cfg.det_score,
                         "det_top_k": cfg.det_top_k}
    coarse = {}
    for obj_id, ws in sorted(estimator.coarse_methods.items()):
        path = getattr(ws, "path", None) or getattr(getattr(ws, "workspace", None), "path", None)
        coarse[str(obj_id)] = {"method": getattr(ws, "method_name", type(ws).__name__),
                               **(_workspace(path) if path is not None else {})}
    out["coarse"] = {"top_k": cfg.top_k, "correct_perspective": cfg.correct_perspective, "objects": coarse}
    out["hypotheses"] = asdict(cfg.hypotheses) if cfg.hypotheses is not None else None
    ref = estimator.refiner
    if ref is None:
        out["refine"] = None
    else:
        from posekit.methods.featurefit import FeatureRefiner

        out["refine"] = {"kind": "features" if isinstance(ref, FeatureRefiner) else "deepim",
                         "iters": cfg.refine_iters, "score": cfg.refine_score, "polish_steps": cfg.polish_steps,
                         "renderer": getattr(ref, "renderer_name", None), "device": str(getattr(ref, "device", ""))}
        if isinstance(ref, FeatureRefiner):
            out["refine"]["depth_sweep"] = ref.config.depth_range > 0 and cfg.refine_iters >= 1
            out["refine"]["config"] = asdict(ref.config)
        elif getattr(ref, "path", None) is not None:
            out["refine"].update(_workspace(ref.path))
    return out


def estimate_to_json(e: PoseEstimate) -> dict:
    """JSON-ready record of an estimate: R (row-major 3x3), t (mm), score, reliable (and failed, why, where the pose
    is implausible), timings, per-iteration history."""
    return {
        "obj_id": e.obj_id,
        "R": e.R.tolist(),
        "t": e.t.tolist(),
        "score": float(e.score),
        "reliable": e.reliable,
        **({"failed": e.failed} if e.failed else {}),
        "time_s": float(e.time),
        "timings_s": {k: float(v) for k, v in e.timings.items()},
        "history": e.history,
    }
