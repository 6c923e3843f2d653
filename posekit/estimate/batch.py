"""Estimate poses over a BOP dataset's targets and write a BOP results CSV for `posekit eval`.

Boxes come from the ground truth (``gt-visib``: scene_gt_info's bbox_visib, what a detector sees;
``gt-obj``: bbox_obj, the full object's box, occluded part included) or from a BOP detections JSON
(a list of {scene_id, image_id, category_id, bbox, score}; the top ``inst_count`` per target are used).
Every estimate of an image gets the image's total time, as BOP's results format asks.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from posekit.data.bop import BopDataset, Target
from posekit.data.types import PoseEstimate
from posekit.errors import InputError
from posekit.estimate.pipeline import Detection, PoseEstimator

BOX_SOURCES = ("gt-visib", "gt-obj", "detector")


def write_detections(path: str | Path, rows: list[tuple[int, int, Detection, float]]) -> Path:
    """A BOP'22 detections JSON (COCO-like: scene_id, image_id, category_id, bbox [x, y, w, h], score, time) of
    (scene_id, im_id, detection, seconds of the image's detection) rows; atomic."""
    from posekit.data.jsonio import write_text_atomic

    out = [{"scene_id": int(s), "image_id": int(i), "category_id": int(d.obj_id),
            "bbox": [round(float(v), 2) for v in d.bbox], "score": round(float(d.score), 5), "time": round(float(t), 4)}
           for s, i, d, t in rows]
    return write_text_atomic(path, json.dumps(out, indent=1) + "\n")


def read_detections(path: str | Path) -> dict[tuple[int, int, int], list[Detection]]:
    """BOP detections JSON -> {(scene_id, im_id, obj_id): detections sorted by score, best first}."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such detections file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(rows, list):
        raise InputError(f"{path}: expected a list of detections")
    out: dict[tuple[int, int, int], list[Detection]] = defaultdict(list)
    for i, r in enumerate(rows):
        try:
            key = (int(r["scene_id"]), int(r["image_id"]), int(r["category_id"]))
            box = tuple(float(v) for v in r["bbox"])
            if len(box) != 4:
                raise ValueError("bbox needs 4 numbers")
            out[key].append(Detection(key[2], box, float(r.get("score", 1.0))))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: detection {i}: {exc}") from None
    for dets in out.values():
        dets.sort(key=lambda d: -d.score)
    return dict(out)


def target_detections(dataset: BopDataset, split: str, target: Target, boxes: str,
                      detections: dict | None) -> list[Detection]:
    """The detections used for one target: at most ``inst_count`` boxes of its object in its image."""
    if detections is not None:
        return detections.get((target.scene_id, target.im_id, target.obj_id), [])[: target.inst_count]
    frame = dataset.frame(split, target.scene_id, target.im_id)
    out = []
    for _, gt in frame.gts_of(target.obj_id):
        if gt.info is None:
            raise InputError(f"{dataset.root}: scene {target.scene_id} has no scene_gt_info.json for --boxes {boxes}")
        box = gt.info.bbox_visib if boxes == "gt-visib" else gt.info.bbox_obj
        if box is None or box[2] <= 0 or box[3] <= 0:
            continue  # invisible instance: no detection (it counts as a miss in eval)
        out.append(Detection(target.obj_id, tuple(float(v) for v in box)))
    return out[: target.inst_count]


def estimate_dataset(estimator: PoseEstimator, dataset: BopDataset, targets: list[Target], split: str = "test",
                     boxes: str = "gt-visib", detections: dict | None = None,
                     progress: bool = True, found: list | None = None) -> list[PoseEstimate]:
    """Run ``estimator`` over every image that has targets; returns estimates with scene/im ids and times.

    ``boxes="detector"`` runs the estimator's detect stage on each image and keeps, per target, its object's top
    ``inst_count`` detections; ``found`` (a list) then receives every (scene_id, im_id, detection, seconds)."""
    by_image: dict[tuple[int, int], list[Target]] = defaultdict(list)
    for t in targets:
        by_image[(t.scene_id, t.im_id)].append(t)
    results: list[PoseEstimate] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(targets), desc="estimate", unit="target", file=sys.stderr, dynamic_ncols=True)
    for (scene_id, im_id), tgts in sorted(by_image.items()):
        frame = dataset.frame(split, scene_id, im_id)
        start = time.perf_counter()
        obs = None
        if boxes == "detector":
            obs = frame.observation()
            seen = estimator.detect(obs)
            t_det = time.perf_counter() - start
            if found is not None:
                found.extend((scene_id, im_id, d, t_det) for d in seen)
            dets = [d for t in tgts for d in [d for d in seen if d.obj_id == t.obj_id][: t.inst_count]]
        else:
            dets = [d for t in tgts for d in target_detections(dataset, split, t, boxes, detections)]
        if dets:
            obs = obs if obs is not None else frame.observation()
            ests = estimator.estimate(obs, dets)
            elapsed = time.perf_counter() - start
            for e in ests:
                e.scene_id, e.im_id, e.time = scene_id, im_id, elapsed
            results.extend(ests)
        if bar is not None:
            bar.update(len(tgts))
    if bar is not None:
        bar.close()
    return results


def mean_timings(estimates: list[PoseEstimate]) -> dict[str, float]:
    """Mean of each per-stage timing over estimates (seconds)."""
    keys = sorted({k for e in estimates for k in e.timings})
    return {k: float(np.mean([e.timings[k] for e in estimates if k in e.timings])) for k in keys}
