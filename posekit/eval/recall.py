"""Matching of estimates to ground truth, recall per threshold and BOP 2019 average recall (AR).

The procedure follows bop_toolkit (``eval_calc_errors.py``, ``eval_calc_scores.py``,
``pose_matching.py``) for the BOP 2019 localisation task:

* Targets come from ``test_targets_bop19.json``: for each (scene, image, object) ``inst_count``
  instances are to be found. The ``inst_count`` most visible ground-truth instances of the object
  (by ``visib_fract``) are the valid ones; each counts once in the denominator of every recall.
* Per target, only the ``inst_count`` estimates with the highest score are evaluated (a lower-scored
  duplicate is never looked at); estimates of non-targets are ignored.
* For each error and each threshold separately, estimates are matched greedily in decreasing score:
  an estimate takes the not yet matched valid ground truth with the lowest error, provided the error
  is below the threshold (every element below its threshold for a vector error such as 5cm 5deg).
* Recall = matched valid ground truths / valid ground truths. A target with no estimate is a miss.
  AR_X is the mean recall over X's thresholds (for VSD over all tau x theta pairs).

Errors are normalised before thresholding as in bop_toolkit: ADD, ADD-S and MSSD by the object
diameter, MSPD by 640 / image width, translation in cm for 5cm 5deg.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posekit.errors import InputError
from posekit.eval import metrics as M

# ------------------------------------------------------------------------------------------ settings

#: ADD(-S) thresholds as fractions of the diameter (LINEMOD reports 0.1; 0.02 and 0.05 are stricter).
ADD_THRESHOLDS = (0.02, 0.05, 0.1)
#: 2D projection threshold (px), Brachmann et al. 2016.
PROJ_THRESHOLDS = (5.0,)
#: BOP 2019 MSSD thresholds (fractions of the diameter) and MSPD thresholds (px at 640 px width).
MSSD_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.51, 0.05), 2))
MSPD_THRESHOLDS = tuple(float(v) for v in range(5, 51, 5))
#: BOP 2019 VSD correctness thresholds (the tau values are in posekit.eval.vsd).
VSD_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.51, 0.05), 2))
#: Threshold sweeps for the recall-versus-threshold curves of the report plot.
CURVE_THRESHOLDS = {
    "add_s": tuple(np.round(np.linspace(0.0, 0.2, 41), 4)),   # x diameter
    "proj": tuple(np.round(np.linspace(0.0, 20.0, 41), 4)),   # px
    "mspd": tuple(np.round(np.linspace(0.0, 50.0, 51), 4)),   # px at 640 px width
}
#: Samples of a continuous symmetry, as bop_toolkit's get_symmetry_transformations with BOP'19's
#: max_sym_disc_step = 0.01: ceil(pi / 0.01) = 315 steps (1.14 deg apart), so a perfect pose of a
#: symmetric object never scores worse than sampling allows.
CONTINUOUS_SYMMETRY_STEPS = int(np.ceil(np.pi / 0.01))


@dataclass(frozen=True)
class MetricDef:
    """A recall summary: which error(s) it thresholds and at which values (in normalised units)."""

    name: str
    label: str
    thresholds: tuple[tuple[float, ...], ...]
    unit: str


def metric_defs(with_vsd: bool, with_adds_all: bool = False) -> list[MetricDef]:
    """The recall summaries posekit reports, in table order ("adds" = ADD-S of every object, on request)."""
    defs = [
        MetricDef("add_s", "ADD(-S)", tuple((t,) for t in ADD_THRESHOLDS), "x diameter"),
        MetricDef("add", "ADD", tuple((t,) for t in ADD_THRESHOLDS), "x diameter"),
    ]
    if with_adds_all:
        defs.append(MetricDef("adds", "ADD-S", tuple((t,) for t in ADD_THRESHOLDS), "x diameter"))
    defs += [
        MetricDef("proj", "Proj2D", tuple((t,) for t in PROJ_THRESHOLDS), "px"),
        MetricDef("5cm5deg", "5cm 5deg", ((5.0, 5.0),), "deg, cm"),
        MetricDef("mssd", "MSSD", tuple((t,) for t in MSSD_THRESHOLDS), "x diameter"),
        MetricDef("mspd", "MSPD", tuple((t,) for t in MSPD_THRESHOLDS), "px at 640 px width"),
    ]
    if with_vsd:
        from posekit.eval.vsd import VSD_TAUS

        defs.append(MetricDef("vsd", "VSD", tuple((tau, th) for tau in VSD_TAUS for th in VSD_THRESHOLDS),
                              "tau x diameter, theta"))
    return defs


# -------------------------------------------------------------------------------------------- matching


def match_group(scores: np.ndarray, errors: np.ndarray, valid: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Greedy BOP matching in one (image, object) group, for every threshold at once.

    Args:
        scores: (E,) estimate scores (already the top ``inst_count`` of the target).
        errors: (E, G, k) error vector of every estimate against every ground truth.
        valid: (G,) which ground truths may be matched.
        thresholds: (T, k) correctness thresholds, one row per threshold.

    Returns:
        (T, G) bool: which ground truths are matched at each threshold.
    """
    E, G, k = errors.shape
    T = len(thresholds)
    matched = np.zeros((T, G), dtype=bool)
    if E == 0 or G == 0 or not valid.any():
        return matched
    if E == 1 and k == 1:
        # One estimate and a scalar error: it takes the first valid GT of lowest error, if below threshold.
        err = np.where(valid, errors[0, :, 0], np.inf)
        best = int(np.argmin(err))
        matched[:, best] = err[best] < thresholds[:, 0]
        return matched
    order = np.argsort(-scores, kind="stable")
    for ti, th in enumerate(thresholds):
        taken = ~valid.copy()
        for e in order:
            best_gt, best = -1, th
            for g in range(G):
                if not taken[g] and np.all(errors[e, g] < best):
                    best_gt, best = g, errors[e, g]
            if best_gt >= 0:
                taken[best_gt] = True
                matched[ti, best_gt] = True
    return matched


# ---------------------------------------------------------------------------------------- records


@dataclass
class TargetErrors:
    """The errors of one target's evaluated estimates against its ground truths (all in raw units)."""

    scene_id: int
    im_id: int
    obj_id: int
    inst_count: int
    gt_ids: list[int]               # indices into the image's scene_gt list
    valid: np.ndarray               # (G,) bool
    scores: np.ndarray              # (E,)
    errors: dict[str, np.ndarray]   # name -> (E, G) or (E, G, k)
    image_width: int
    symmetric: bool = False         # ADD(-S) takes ADD-S for objects with symmetries


@dataclass
class MetricResult:
    """Recall of one summary at each of its thresholds, over all targets and per object."""

    name: str
    label: str
    unit: str
    thresholds: list[list[float]]
    recall: list[float]
    recall_per_object: dict[int, list[float]]

    @property
    def mean_recall(self) -> float:
        return float(np.mean(self.recall)) if self.recall else float("nan")

    def object_mean(self, obj_id: int) -> float:
        r = self.recall_per_object.get(obj_id, [])
        return float(np.mean(r)) if r else float("nan")


@dataclass
class EvalReport:
    """Everything ``posekit eval`` reports: settings, counts, recalls, AR values, per-target errors."""

    settings: dict
    obj_ids: list[int]
    symmetric: dict[int, bool]
    gt_count: dict[int, int]
    n_targets: int
    n_estimates: int
    n_estimates_evaluated: int
    n_estimates_ignored: int
    n_targets_without_estimate: int
    n_bad_rows: int
    bad_rows: list[str]
    vsd_available: bool
    vsd_note: str
    metrics: dict[str, MetricResult]
    curves: dict[str, MetricResult]
    per_target: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def ar(self, obj_id: int | None = None) -> dict[str, float | None]:
        """AR_MSSD, AR_MSPD, AR_VSD (None without depth) and their mean AR (None without VSD)."""
        def one(name: str) -> float | None:
            if name not in self.metrics:
                return None
            m = self.metrics[name]
            return m.mean_recall if obj_id is None else m.object_mean(obj_id)

        out = {"ar_mssd": one("mssd"), "ar_mspd": one("mspd"), "ar_vsd": one("vsd")}
        parts = [out["ar_mssd"], out["ar_mspd"], out["ar_vsd"]]
        out["ar"] = float(np.mean(parts)) if all(p is not None for p in parts) else None
        return out


# ------------------------------------------------------------------------------------------ errors


def _valid_gts(gts: list, obj_id: int, inst_count: int) -> tuple[list[int], np.ndarray]:
    """Indices of ``obj_id``'s instances and which are valid: the ``inst_count`` most visible ones."""
    ids = [i for i, g in enumerate(gts) if g.obj_id == obj_id]
    visib = [gts[i].visib_fract if gts[i].visib_fract is not None else 1.0 for i in ids]
    order = sorted(range(len(ids)), key=lambda j: visib[j], reverse=True)
    valid = np.zeros(len(ids), dtype=bool)
    valid[order[:inst_count]] = True
    return ids, valid


def _load_points(dataset, obj_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (mm) and faces of the evaluation model (models_eval/ where present, as BOP does)."""
    try:
        model = dataset.load_model(obj_id, eval=True)
        return np.asarray(model.vertices, dtype=np.float64), np.asarray(model.faces)
    except ImportError:  # posekit.cad.load not available: read the PLY directly
        import trimesh

        mesh = trimesh.load(dataset.model_path(obj_id, eval=True), process=False, force="mesh")
        return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces)


def compute_object_errors(pairs: list[tuple], pts: np.ndarray, syms: np.ndarray, with_adds: bool,
                          workers: int = -1) -> dict[str, np.ndarray]:
    """Errors of (R_est, t_est, R_gt, t_gt, K) pairs of one object, batched per camera matrix.

    ADD-S (the costliest error: a nearest-neighbour query per model point) is computed only when
    ``with_adds``, else left NaN. For an object without symmetries ``syms`` is the identity alone,
    so Proj2D and MSPD share one projection either way.
    """
    n = len(pairs)
    out = {k: np.empty(n) for k in ("add", "adds", "re", "te", "proj", "mssd", "mspd")}
    if n == 0:
        return out
    R_est = np.stack([p[0] for p in pairs])
    t_est = np.stack([p[1] for p in pairs])
    R_gt = np.stack([p[2] for p in pairs])
    t_gt = np.stack([p[3] for p in pairs])
    out["add"][:] = M.add(R_est, t_est, R_gt, t_gt, pts)
    out["adds"][:] = M.adds(R_est, t_est, R_gt, t_gt, pts, workers=workers) if with_adds else np.nan
    out["re"][:] = M.rotation_error(R_est, R_gt)
    out["te"][:] = M.translation_error(t_est, t_gt)
    out["mssd"][:] = M.mssd(R_est, t_est, R_gt, t_gt, pts, syms)
    Ks = np.stack([np.asarray(p[4], dtype=np.float64) for p in pairs])
    _, inverse = np.unique(Ks.reshape(n, 9), axis=0, return_inverse=True)
    for group in np.unique(inverse):
        sel = np.flatnonzero(inverse.reshape(-1) == group)
        K = Ks[sel[0]]
        out["mspd"][sel], out["proj"][sel] = M.mspd_and_proj2d(
            R_est[sel], t_est[sel], R_gt[sel], t_gt[sel], K, pts, syms)
    return out


def _normalised(te: TargetErrors, name: str, diameter: float) -> np.ndarray:
    """(E, G, k) errors of one summary in its threshold units."""
    e = te.errors
    if name == "add_s":
        v = (e["adds"] if te.symmetric else e["add"]) / diameter
    elif name in ("add", "adds", "mssd"):
        v = e[name] / diameter
    elif name == "proj":
        v = e["proj"]
    elif name == "mspd":
        v = e["mspd"] * (640.0 / te.image_width)
    elif name == "5cm5deg":
        return np.stack([e["re"], e["te"] / 10.0], axis=-1)
    else:
        raise KeyError(name)
    return v[..., None]


def _recall(targets: list[TargetErrors], name: str, thresholds: np.ndarray, diameters: dict[int, float],
            obj_ids: list[int], gt_count: dict[int, int], vsd_taus: tuple = ()) -> tuple[list[float], dict]:
    """Recall at each threshold row, over all targets and per object."""
    T = len(thresholds)
    hits = {o: np.zeros(T) for o in obj_ids}
    for te in targets:
        if name == "vsd":
            # One matching per (tau, theta): errors of tau against theta.
            tau_index = {tau: i for i, tau in enumerate(vsd_taus)}
            m = np.zeros((T, len(te.gt_ids)), dtype=bool)
            for ti, (tau, th) in enumerate(thresholds):
                errs = te.errors["vsd"][:, :, tau_index[float(tau)]][..., None]
                m[ti] = match_group(te.scores, errs, te.valid, np.array([[th]]))[0]
        else:
            errs = _normalised(te, name, diameters[te.obj_id])
            m = match_group(te.scores, errs, te.valid, np.asarray(thresholds, dtype=np.float64))
        hits[te.obj_id] += (m & te.valid[None]).sum(axis=1)
    total = sum(gt_count.values())
    overall = [float(sum(hits[o][i] for o in obj_ids) / total) if total else float("nan") for i in range(T)]
    per_object = {o: [float(h / gt_count[o]) if gt_count[o] else float("nan") for h in hits[o]] for o in obj_ids}
    return overall, per_object


# ---------------------------------------------------------------------------------------- pipeline


def evaluate(dataset_root: str | Path, results_path: str | Path, split: str = "test",
             targets_path: str | Path | None = None, skip_bad_rows: bool = False, vsd: str = "auto",
             adds_all: bool = False, progress: bool = True, objects: set[int] | None = None) -> EvalReport:
    """Evaluate a BOP results CSV against a BOP dataset's ground truth (see the module docstring).

    ``vsd``: "auto" computes VSD when every target image has a depth image (else reports it as not
    available), "off" never computes it. ADD-S is computed for objects with symmetries (ADD(-S) uses
    it there); ``adds_all`` computes it for every object and adds an "ADD-S" summary. Raises BopFormatError/InputError for bad input files.
    """
    from tqdm import tqdm

    from posekit.data.bop import BopDataset, symmetry_transforms_from_info
    from posekit.data.results import read_results

    clock = {"start": time.perf_counter()}
    ds = BopDataset(dataset_root)
    targets = ds.targets(targets_path, split=split)
    if objects:
        unknown = sorted(set(objects) - {t.obj_id for t in targets})
        if unknown:
            raise InputError(f"--objects {', '.join(map(str, unknown))}: no targets of such objects in {ds.root}")
        targets = [t for t in targets if t.obj_id in objects]
    estimates, bad = read_results(results_path, skip_bad_rows=skip_bad_rows)
    if not estimates:
        raise InputError(f"{results_path}: holds no estimates (an empty results file is not a result of zero)")
    clock["read"] = time.perf_counter()

    by_key: dict[tuple[int, int, int], list] = defaultdict(list)
    for est in estimates:
        by_key[(int(est.scene_id), int(est.im_id), int(est.obj_id))].append(est)
    target_keys = {(t.scene_id, t.im_id, t.obj_id) for t in targets}
    n_ignored = sum(len(v) for k, v in by_key.items() if k not in target_keys)

    # Per target: the valid GTs and the top inst_count estimates; pairs to evaluate grouped by object.
    records: list[TargetErrors] = []
    pairs_by_obj: dict[int, list[tuple]] = defaultdict(list)
    pair_slots: dict[int, list[tuple[int, int, int]]] = defaultdict(list)  # (record, est, gt)
    frames = {}
    gt_count: dict[int, int] = defaultdict(int)
    for t in targets:
        fkey = (t.scene_id, t.im_id)
        if fkey not in frames:
            frames[fkey] = ds.frame(split, t.scene_id, t.im_id)
        frame = frames[fkey]
        gt_ids, valid = _valid_gts(frame.gts, t.obj_id, t.inst_count)
        ests = sorted(by_key.get((t.scene_id, t.im_id, t.obj_id), []), key=lambda e: e.score, reverse=True)
        ests = ests[: t.inst_count]
        rec = TargetErrors(t.scene_id, t.im_id, t.obj_id, t.inst_count, gt_ids, valid,
                           np.array([e.score for e in ests], dtype=np.float64), {}, frame.camera.width)
        gt_count[t.obj_id] += int(valid.sum())
        ri = len(records)
        records.append(rec)
        for ei, est in enumerate(ests):
            for gi, g in enumerate(gt_ids):
                gt = frame.gts[g]
                pairs_by_obj[t.obj_id].append((est.R, est.t, gt.R, gt.t, frame.camera.K))
                pair_slots[t.obj_id].append((ri, ei, gi))

    obj_ids = sorted({t.obj_id for t in targets})
    missing = [o for o in obj_ids if o not in ds.models_info]
    if missing:
        from posekit.errors import BopFormatError

        raise BopFormatError(f"{ds.root / 'models' / 'models_info.json'}: no entry for obj_id {missing[0]} of the targets")
    diameters = {o: float(ds.models_info[o]["diameter"]) for o in obj_ids}
    syms = {o: symmetry_transforms_from_info(ds.models_info[o], CONTINUOUS_SYMMETRY_STEPS) for o in obj_ids}
    symmetric = {o: len(syms[o]) > 1 for o in obj_ids}

    # VSD needs a depth image for every target image.
    with_depth = [f.depth_path is not None for f in frames.values()]
    if vsd == "off":
        vsd_on, vsd_note = False, "not computed (--no-vsd)"
    elif frames and all(with_depth):
        vsd_on, vsd_note = True, "computed from the test depth images"
    else:
        vsd_on = False
        vsd_note = (f"n/a: {sum(not d for d in with_depth)} of {len(with_depth)} target images have no depth image "
                    "(VSD compares rendered model depth with the test depth)")

    for rec in records:
        E, G = len(rec.scores), len(rec.gt_ids)
        for k in ("add", "adds", "re", "te", "proj", "mssd", "mspd"):
            rec.errors[k] = np.full((E, G), np.inf)
        if vsd_on:
            from posekit.eval.vsd import VSD_TAUS

            rec.errors["vsd"] = np.ones((E, G, len(VSD_TAUS)))

    clock["prepare"] = time.perf_counter()
    bar = tqdm(obj_ids, desc="eval", unit="object", file=sys.stderr, disable=not progress)
    for o in bar:
        bar.set_postfix_str(f"obj {o}: {len(pairs_by_obj[o])} poses")
        if not pairs_by_obj[o]:
            continue
        pts, faces = _load_points(ds, o)
        errs = compute_object_errors(pairs_by_obj[o], pts, syms[o], with_adds=symmetric[o] or adds_all)
        for j, (ri, ei, gi) in enumerate(pair_slots[o]):
            for k, v in errs.items():
                records[ri].errors[k][ei, gi] = v[j]
        if vsd_on:
            _vsd_object(o, pts, faces, diameters[o], pairs_by_obj[o], pair_slots[o], records, frames)
    clock["errors"] = time.perf_counter()

    for rec in records:
        rec.symmetric = symmetric[rec.obj_id]

    metrics: dict[str, MetricResult] = {}
    vsd_taus = ()
    if vsd_on:
        from posekit.eval.vsd import VSD_TAUS as vsd_taus
    for d in metric_defs(vsd_on, adds_all):
        th = np.asarray(d.thresholds, dtype=np.float64)
        overall, per_obj = _recall(records, d.name, th, diameters, obj_ids, gt_count, vsd_taus)
        metrics[d.name] = MetricResult(d.name, d.label, d.unit, [list(map(float, r)) for r in d.thresholds],
                                       overall, per_obj)
    curves: dict[str, MetricResult] = {}
    for name, ths in CURVE_THRESHOLDS.items():
        th = np.asarray(ths, dtype=np.float64)[:, None]
        overall, per_obj = _recall(records, name, th, diameters, obj_ids, gt_count)
        label = {"add_s": "ADD(-S)", "proj": "Proj2D", "mspd": "MSPD"}[name]
        unit = {"add_s": "x diameter", "proj": "px", "mspd": "px at 640 px width"}[name]
        curves[name] = MetricResult(name, label, unit, [[float(v)] for v in ths], overall, per_obj)
    clock["recall"] = time.perf_counter()

    per_target = []
    for rec in records:
        entry = {"scene_id": rec.scene_id, "im_id": rec.im_id, "obj_id": rec.obj_id, "inst_count": rec.inst_count,
                 "n_gt": len(rec.gt_ids), "n_estimates": len(rec.scores)}
        if len(rec.scores) and len(rec.gt_ids):
            g = int(np.flatnonzero(rec.valid)[0]) if rec.valid.any() else 0
            entry["top_estimate_errors"] = {
                "gt_idx": rec.gt_ids[g],
                **{k: float(rec.errors[k][0, g]) for k in ("add", "adds", "re", "te", "proj", "mssd", "mspd")},
            }
        per_target.append(entry)

    settings = {
        "dataset": str(Path(dataset_root)),
        "results": str(Path(results_path)),
        "split": split,
        "targets": str(Path(targets_path)) if targets_path is not None else "test_targets_bop19.json (or derived from scene_gt)",
        "model_points": "models_eval/ vertices where present (as BOP), else models/",
        "continuous_symmetry_steps": CONTINUOUS_SYMMETRY_STEPS,
        "matching": "BOP 2019: top inst_count estimates by score per target, greedy per error and threshold",
        "add_s_rule": "ADD-S for objects with symmetries in models_info, ADD otherwise",
        "adds_all_objects": adds_all,
        "proj_rule": "mean 2D distance; min over symmetries for symmetric objects",
        "vsd": {"delta_mm": 15.0, "taus": "0.05..0.5 x diameter", "thresholds": "0.05..0.5"} if vsd_on else None,
        "skip_bad_rows": skip_bad_rows,
    }
    return EvalReport(
        settings=settings,
        obj_ids=obj_ids,
        symmetric=symmetric,
        gt_count=dict(gt_count),
        n_targets=len(targets),
        n_estimates=len(estimates),
        n_estimates_evaluated=int(sum(len(r.scores) for r in records)),
        n_estimates_ignored=n_ignored,
        n_targets_without_estimate=int(sum(1 for r in records if len(r.scores) == 0)),
        n_bad_rows=len(bad),
        bad_rows=[str(b) for b in bad[:20]],
        vsd_available=vsd_on,
        vsd_note=vsd_note,
        metrics=metrics,
        curves=curves,
        per_target=per_target,
        seconds={
            "read": clock["read"] - clock["start"],
            "prepare": clock["prepare"] - clock["read"],
            "errors": clock["errors"] - clock["prepare"],
            "recall": clock["recall"] - clock["errors"],
            "total": clock["recall"] - clock["start"],
        },
    )


def _vsd_object(obj_id: int, pts: np.ndarray, faces: np.ndarray, diameter: float, pairs: list[tuple],
                slots: list[tuple[int, int, int]], records: list[TargetErrors], frames: dict) -> None:
    """VSD of one object's pairs against each frame's test depth (GT renders cached per instance)."""
    from posekit.eval.vsd import DepthRenderer
    from posekit.eval.vsd import vsd as vsd_error

    renderer = DepthRenderer(pts, faces)
    depth_cache: dict[tuple[int, int], np.ndarray] = {}
    gt_cache: dict[tuple[int, int, int], np.ndarray] = {}
    for (R_est, t_est, R_gt, t_gt, K), (ri, ei, gi) in zip(pairs, slots, strict=True):
        rec = records[ri]
        fkey = (rec.scene_id, rec.im_id)
        frame = frames[fkey]
        if fkey not in depth_cache:
            depth_cache[fkey] = frame.depth()
        depth = depth_cache[fkey]
        gkey = (rec.scene_id, rec.im_id, rec.gt_ids[gi])
        if gkey not in gt_cache:
            gt_cache[gkey] = renderer.render(K, R_gt, t_gt, depth.shape[1], depth.shape[0])
        rec.errors["vsd"][ei, gi] = vsd_error(R_est, t_est, R_gt, t_gt, depth, K, renderer, diameter,
                                              depth_gt=gt_cache[gkey])
