"""Detection metrics on a BOP dataset: COCO AP on amodal boxes as BOP scores it, and top-1 recall per target.

**AP.** BOP'22-24 rank 2D detection by COCO's AP@[.5:.95] (bop_toolkit ``scripts/eval_bop22_coco.py`` with
``ann_type=bbox``, ``bbox_type=amodal``) over the images that hold targets. Its ground truth
(``scripts/calc_gt_coco.py``) is every annotated instance whose visible mask has at least one pixel, with the box of
the full (amodal) mask, the visible mask's area, and ``ignore`` for ``visib_fract < 0.1``. bop_toolkit evaluates with
its own fork of pycocotools, which keeps that flag (an ignored instance is neither a miss nor a match; a detection
on it is not a false positive); the released pycocotools overwrites ``ignore`` with ``iscrowd`` and would count
those instances. This module runs the released pycocotools with the fork's rule restored (:class:`_BopCOCOeval`).
Without masks, it takes the box of the full mask as ``bbox_obj`` clipped to the image and the area as
``px_count_visib`` (both from ``scene_gt_info.json``); the AP over all areas does not use the area.

**Recall.** The share of targets (``visib_fract`` at least a bound) whose object's best-scored detection in the
image overlaps the target's amodal box at IoU >= 0.5 (for an object with n instances in the image, its top-n
detections against its n boxes, greedily).
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict

import numpy as np

from posekit.data.bop import BopDataset, Target
from posekit.errors import InputError
from posekit.geometry.boxcrop import box_iou

COCO_STATS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small",
              "AR_medium", "AR_large")


#: detections as :func:`posekit.estimate.batch.read_detections` gives them: {(scene_id, im_id, obj_id): [d, ...]}
#: with ``d.bbox`` [x, y, w, h] and ``d.score``
Detections = dict


def amodal_box(info, width: int, height: int) -> tuple[float, float, float, float]:
    """The full-object box of an annotated instance (``bbox_obj`` of scene_gt_info.json, occluded part included),
    clipped to the image: what detections are scored against, as bop_toolkit scores them."""
    x, y, w, h = (float(v) for v in info.bbox_obj)
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w + 1.0), min(float(height), y + h + 1.0)
    return (x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0))


def ground_truth(dataset: BopDataset, targets: list[Target], split: str = "test") -> dict:
    """{(scene_id, im_id): [(obj_id, amodal box, visib_fract, visible px), ...]} of every annotated instance with
    a visible pixel in the images that hold targets."""
    out: dict[tuple[int, int], list] = {}
    for key in sorted({(t.scene_id, t.im_id) for t in targets}):
        frame = dataset.frame(split, *key)
        rows = []
        for g in frame.gts:
            if g.info is None:
                raise InputError(f"{dataset.root}: scene {key[0]} has no scene_gt_info.json (needed for boxes)")
            px = float(getattr(g.info, "px_count_visib", 0) or 0)
            if px < 1:
                continue
            rows.append((g.obj_id, amodal_box(g.info, frame.camera.width, frame.camera.height),
                         float(g.info.visib_fract or 0.0), px))
        out[key] = rows
    return out


def coco_ap(gt: dict, detections: Detections, obj_ids: list[int] | None = None) -> dict:
    """COCO AP of ``detections`` against ``ground_truth(...)``: the 12 pycocotools figures over all objects, and
    ``per_object`` {obj_id: AP@[.5:.95]}; computed as bop_toolkit's eval_bop22_coco.py does (bbox, amodal)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise InputError("COCO AP needs pycocotools: pip install pycocotools") from None
    keys = sorted(gt)
    image_id = {k: i + 1 for i, k in enumerate(keys)}
    cats = sorted({o for rows in gt.values() for o, *_ in rows} | set(obj_ids or []))
    images = [{"id": image_id[k], "file_name": f"{k[0]:06d}/{k[1]:06d}", "width": 0, "height": 0} for k in keys]
    anns = []
    for k in keys:
        for obj_id, box, visib, px in gt[k]:
            anns.append({"id": len(anns) + 1, "image_id": image_id[k], "category_id": obj_id, "iscrowd": 0,
                         "area": px, "bbox": list(box), "ignore": int(visib < 0.1),
                         "bop_ignore": int(visib < 0.1)})
    dts = [{"image_id": image_id[(s, i)], "category_id": o, "bbox": [float(v) for v in d.bbox], "score": float(d.score)}
           for (s, i, o), ds in detections.items() if (s, i) in image_id for d in ds]
    out: dict = {}

    class _BopCOCOeval(COCOeval):
        """COCOeval that keeps the ground truth's ``ignore`` flag, as bop_toolkit's fork of pycocotools does."""

        def _prepare(self) -> None:
            super()._prepare()
            for gts in self._gts.values():
                for g in gts:
                    g["ignore"] = int(g.get("bop_ignore", 0))

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in cats]}
        coco.createIndex()
        if not dts:
            return {**{s: 0.0 for s in COCO_STATS}, "per_object": {c: 0.0 for c in cats}}
        res = coco.loadRes(dts)
        ev = _BopCOCOeval(coco, res, "bbox")
        ev.params.imgIds = sorted(coco.getImgIds())
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        out.update({s: float(v) for s, v in zip(COCO_STATS, ev.stats, strict=True)})
        # per object: precision (T, R, K, A, M) at all areas, 100 detections
        prec = ev.eval["precision"][:, :, :, 0, -1]
        out["per_object"] = {}
        for ki, c in enumerate(ev.params.catIds):
            p = prec[:, :, ki]
            out["per_object"][c] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    return out


def top1_recall(gt: dict, detections: Detections, min_visib: float = 0.5,
                iou: float = 0.5) -> dict[int, tuple[int, int]]:
    """{obj_id: (found, targets)}: targets with ``visib_fract >= min_visib`` found by their object's best-scored
    detections in their image (top-n for n instances, matched greedily at IoU >= ``iou``)."""
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for (scene_id, im_id), rows in gt.items():
        for obj_id in sorted({o for o, *_ in rows}):
            boxes = [(b, v) for o, b, v, _ in rows if o == obj_id]
            dets = sorted(detections.get((scene_id, im_id, obj_id), []), key=lambda d: -d.score)[: len(boxes)]
            used = [False] * len(dets)
            for box, visib in boxes:
                if visib < min_visib:
                    continue
                out[obj_id][1] += 1
                ious = [box_iou(d.bbox, box) if not used[i] else -1.0 for i, d in enumerate(dets)]
                if ious and max(ious) >= iou:
                    used[int(np.argmax(ious))] = True
                    out[obj_id][0] += 1
    return {o: (v[0], v[1]) for o, v in sorted(out.items())}
