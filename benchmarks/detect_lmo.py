"""Finding the part with no box: the training-free template detector on real LM-O images (lmo-dev).

    python benchmarks/detect_lmo.py run --templates TPL_DIR --out RUN.json [--images N] [--objects 1,5,...]
                                        [--config KEY=VALUE,...] [--detector REGRESS_WS [--detector-size WxH]
                                        [--pool KEY=VALUE,...] [--templates-run EARLIER_RUN.json | --trained-only]]
    python benchmarks/detect_lmo.py eval RUN.json [--score cosine|contrast|proposal] [--top K]
                                        [--detections-out DETS.json]
    python benchmarks/detect_lmo.py plot RUN.json[:SCORE][=LABEL] ... --out recall.png [--goal 80]
    python benchmarks/detect_lmo.py crosscheck DETS.json --bop-toolkit BOP_TOOLKIT_DIR [--pycocotools FORK_DIR]
    python benchmarks/detect_lmo.py chain RUN.json --templates TPL_DIR --workdir DIR [--refine] [--no-hypotheses]
    python benchmarks/detect_lmo.py rerank RUN.json --out RERANKED.json [--top 3] [--iters 2]
    python benchmarks/detect_lmo.py speed --templates TPL_DIR --a KEY=VALUE,... --b KEY=VALUE,... [--images 40:44]

``run``: every lmo-dev image (or the first N) through :class:`posekit.methods.detect.TemplateDetector` with the
template workspaces ``TPL_DIR/obj_XXXXXX`` (benchmarks/templates_lmo.py builds them); keeps every verified hit with
all its scores and the seconds per image (maps, each part), resumable image by image. With ``--detector``, the pool
(:class:`posekit.methods.detect.PooledDetector`): the trained detector's boxes (at ``--detector-size``) verified by
the templates beside their own candidates; ``--templates-run`` takes the template half from an earlier run of the
same ``--config`` (it is deterministic) and computes only the trained half; ``--trained-only`` records the trained
detector's own boxes and scores (score ``detector``), nothing verified. ``eval --score detector`` then ranks the
trained detector's boxes alone, ``eval --score combined`` the pool.
``eval``: per object and mean, recall@IoU 0.5 of the top-1 box per target (visib_fract >= 0.5 and >= 0.1; amodal
boxes), the recall of any kept hit (what ranking could reach), and COCO AP@[.5:.95] as bop_toolkit computes it
(:mod:`posekit.eval.detection`); ``--detections-out`` writes the ranked hits as a BOP'22 detections file, e.g. for
bop_toolkit's own ``scripts/eval_bop22_coco.py`` (the cross-check in docs/benchmarks.md).
``plot``: the per-object recall of several runs as grouped bars (each run's pooled recall and AP in the legend).
``speed``: two detector settings timed in one process, alternating image by image (a warm-up pass, then a timed
one): median seconds per part, the ratio of b to a, the image's maps, and one part alone (the can, maps included).
Data from ../shared/data/lmo-dev (or $POSEKIT_DATA/lmo-dev); nothing derived from it enters the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
from _common import lmo_dev, torch_threads  # benchmarks/ is on sys.path

NAMES = {1: "ape", 5: "can", 6: "cat", 8: "driller", 9: "duck", 10: "eggbox", 11: "glue", 12: "holepuncher"}


def parse_config(text: str | None, kind=None):
    from posekit.methods.detect import DetectorConfig

    kind = kind or DetectorConfig
    kw = {}
    types = {f.name: f.type for f in fields(kind)}
    for item in filter(None, (text or "").split(",")):
        key, value = item.split("=", 1)
        if key not in types:
            raise SystemExit(f"unknown detector setting {key!r}; one of {', '.join(types)}")
        if "tuple" in str(types[key]):  # depth_range=300:2000, verify_scales=1:1.41
            kw[key] = tuple(float(v) for v in value.split(":"))
        elif key == "score":
            kw[key] = value
        elif "int" in str(types[key]):
            kw[key] = int(value)
        elif "float" in str(types[key]):
            kw[key] = float(value)
        else:
            kw[key] = value
    return kind(**kw)


def open_parts(args):
    """lmo-dev, the parts of ``--objects``, their models and their template workspaces under ``--templates``
    (torch's threads set as every benchmark sets them)."""
    from posekit.data.bop import BopDataset
    from posekit.methods.templates import load_workspace

    torch_threads()
    ds = BopDataset(lmo_dev())
    objects = [int(o) for o in args.objects.split(",")]
    models = {o: ds.load_model(o) for o in objects}
    wss = {o: load_workspace(Path(args.templates) / f"obj_{o:06d}", model=models[o]) for o in objects}
    return ds, objects, models, wss


def _hit_json(h) -> dict:
    return {"obj_id": h.obj_id, "bbox": [round(v, 2) for v in h.bbox], "scores": h.scores,
            "window": [round(v, 2) for v in h.window], "R": np.asarray(h.R).round(6).tolist(),
            "t": np.asarray(h.t).round(3).tolist()}


def _hit_of(d: dict):
    from posekit.methods.detect import TemplateHit

    return TemplateHit(d["obj_id"], tuple(d["bbox"]), 0.0, np.asarray(d["R"]), np.asarray(d["t"]),
                       tuple(d["window"]), d["scores"])


def cmd_run(args) -> None:
    import torch

    from posekit.methods.detect import TemplateDetector, TemplateHit

    ds, objects, models, wss = open_parts(args)
    config = parse_config(args.config)
    if args.trained_only and (not args.detector or args.templates_run):
        raise SystemExit("--trained-only needs --detector and no --templates-run")
    verifier = None
    if args.verifier:  # a learned verifier: one more check in the template detector's ranking
        from posekit.methods.detect.verifier import load_verifier

        verifier = load_verifier(args.verifier)
    det = TemplateDetector(wss, models, config, verifier=verifier)
    reuse = None
    if args.templates_run:
        # the pool's template half is the template detector's, deterministic for one config: take its hits from
        # an earlier run of the same config (kept ungated and unthinned) and compute only the trained half
        if not args.detector:
            raise SystemExit("--templates-run needs --detector")
        reuse = json.loads(Path(args.templates_run).read_text())
        mine = {f.name: getattr(config, f.name) for f in fields(config)}
        if json.loads(json.dumps(mine)) != reuse["config"] or reuse.get("detector"):
            raise SystemExit(f"{args.templates_run} is a run of another detector config: {reuse['config']}")
        if reuse.get("verifier") != args.verifier:  # the verifier is one of the template detector's checks
            raise SystemExit(f"{args.templates_run} was run with --verifier {reuse.get('verifier')}, not {args.verifier}")
    if args.detector:  # the pool: the trained detector's boxes verified beside the templates' candidates
        from posekit.methods.detect import PoolConfig, PooledDetector
        from posekit.methods.regress import load_workspace as load_regressor

        trained = load_regressor(Path(args.detector), models=list(models.values()))
        if args.detector_size:
            trained.input_size = tuple(int(v) for v in args.detector_size.split("x"))
        det = PooledDetector(trained, det, parse_config(args.pool, PoolConfig))
    out = Path(args.out)
    name = (str(args.detector) + (f"@{args.detector_size}" if args.detector_size else "")
            + (" alone" if args.trained_only else "")) if args.detector else None
    if out.is_file() and json.loads(out.read_text()).get("detector") != name:
        raise SystemExit(f"{out} was run with another --detector (or none): give a new --out")
    run = json.loads(out.read_text()) if out.is_file() else {
        "config": {f.name: getattr(config, f.name) for f in fields(config)}, "objects": objects, "images": {},
        "detector": name, "templates_run": args.templates_run, "verifier": args.verifier,
        "pool": {f.name: getattr(det.config, f.name) for f in fields(det.config)} if args.detector else None,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads()}}
    frames = sorted(ds.frames("test"), key=lambda f: (f.scene_id, f.im_id))
    if reuse is not None:
        frames = [f for f in frames if f"{f.scene_id}/{f.im_id}" in reuse["images"]]
    if args.images:
        frames = frames[: args.images]
    from tqdm import tqdm

    for fr in tqdm(frames, desc="detect", unit="image", file=sys.stderr):
        key = f"{fr.scene_id}/{fr.im_id}"
        if key in run["images"]:
            continue
        start = time.perf_counter()
        image = fr.rgb()
        if args.trained_only:
            hits = [TemplateHit(d.obj_id, d.bbox, d.score, d.R, d.t, (d.bbox[0], d.bbox[1], max(d.bbox[2:])),
                                {"detector": d.score}) for d in det.trained_boxes(image, fr.camera, objects)]
            times = {"trained": time.perf_counter() - start, "total": time.perf_counter() - start}
        elif reuse is None:
            hits, times = det.find(image, fr.camera, objects)
            times["total"] = time.perf_counter() - start
            # the baseline of the same run: the templates' match of one box per part (the coarse stage given a box)
            t0 = time.perf_counter()
            for o in objects:
                box = next((h.bbox for h in hits if h.obj_id == o), (0.0, 0.0, 100.0, 100.0))
                wss[o].estimate(image, fr.camera, [box], o)
            times["match_per_part"] = (time.perf_counter() - t0) / len(objects)
        else:
            before = reuse["images"][key]
            verified, times = det.trained_hits(image, fr.camera, objects)
            own = [_hit_of(h) for h in before["hits"] if h["obj_id"] in objects]
            hits = det.merge(own, verified, objects, least=config.min_score)
            times = {**before["times"], **times,
                     "total": before["times"]["total"] + time.perf_counter() - start}
        run["images"][key] = {"times": times, "hits": [_hit_json(h) for h in hits]}
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(run))
        tmp.replace(out)


def cmd_rerank(args) -> None:
    """The best ``--top`` hits per image and part (by ``--score``, thinned as ``eval`` thins them) refined by the
    feature search (``--iters`` iterations from each hit's pose, ``posekit.methods.featurefit``), each given the
    scores ``refined`` (the search's similarity at its last pose), ``refined_gain`` (that minus the first pose's)
    and the box of the refined pose (``bbox_refined``); the other hits are kept as they were. ``eval --score
    refined`` then ranks the refined hits alone, ``--box refined`` scores their refined boxes."""
    from tqdm import tqdm

    from posekit.data.bop import BopDataset
    from posekit.methods.detect import DetectorConfig
    from posekit.methods.detect.templates import _outline_points, _projected_box, thin
    from posekit.methods.featurefit import FeatureRefiner

    torch_threads()
    ds = BopDataset(lmo_dev())
    run = json.loads(Path(args.run).read_text())
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.is_file() else {**run, "images": {}, "rerank": vars(args)}
    objects = run["objects"]
    models = {o: ds.load_model(o) for o in objects}
    points = {o: _outline_points(models[o]) for o in objects}
    ref = FeatureRefiner(list(models.values()), device="cpu")
    limit = min(float(run["config"].get("box_overlap", 1.0)), DetectorConfig().box_overlap)
    frames = {(f.scene_id, f.im_id): f for f in ds.frames("test")}
    keys = list(run["images"])[: args.images or None]
    try:
        for key in tqdm(keys, desc="rerank", unit="image", file=sys.stderr):
            if key in done["images"]:
                continue
            rec = json.loads(json.dumps(run["images"][key]))
            frame = frames[tuple(int(v) for v in key.split("/"))]
            start = time.perf_counter()
            chosen = []
            for o in objects:
                mine = [_Det(h["bbox"], h["scores"][args.score], h) for h in rec["hits"]
                        if h["obj_id"] == o and args.score in h["scores"]]
                chosen += [d.hit for d in thin(mine, limit)[: args.top]]
            if chosen:
                res = ref.refine(frame.observation(), [h["obj_id"] for h in chosen],
                                 np.stack([np.asarray(h["R"]) for h in chosen]),
                                 np.stack([np.asarray(h["t"]) for h in chosen]), iters=args.iters, score="features")
                R, t = res.final
                for i, h in enumerate(chosen):
                    h["scores"]["refined"] = float(res.scores[-1, i])
                    h["scores"]["refined_gain"] = float(res.scores[-1, i] - res.scores[0, i])
                    box = _projected_box(points[h["obj_id"]], frame.camera, R[i], t[i])
                    h["bbox_refined"] = [round(v, 2) for v in (box or h["bbox"])]
            rec["times"]["rerank"] = time.perf_counter() - start
            done["images"][key] = rec
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(done))
            tmp.replace(out)
    finally:
        ref.close()
    print(f"wrote {out}: {len(done['images'])} images, the best {args.top} hits per part by {args.score} refined "
          f"({args.iters} iterations)")


class _Det:
    def __init__(self, bbox, score, hit: dict | None = None):
        self.bbox, self.score, self.hit = bbox, score, hit


def detections_of(run: dict, score: str, top: int, box: str = "bbox") -> dict:
    """{(scene, image, object): the top hits by ``score``}, thinned as the detector thins them
    (:func:`posekit.methods.detect.templates.thin`) where the run kept every hit (``box_overlap`` > 1)."""
    from posekit.methods.detect import DetectorConfig
    from posekit.methods.detect.templates import thin

    limit = min(float(run["config"].get("box_overlap", 1.0)), DetectorConfig().box_overlap)
    out: dict = {}
    for key, rec in run["images"].items():
        scene_id, im_id = (int(v) for v in key.split("/"))
        for h in rec["hits"]:
            if any(k not in h["scores"] for k in score.split("+")):
                continue  # e.g. --score detector: the trained detector's boxes alone
            value = sum(h["scores"][k] for k in score.split("+"))  # a sum of scores, e.g. combined+figure_ground
            out.setdefault((scene_id, im_id, h["obj_id"]), []).append(_Det(h.get(box, h["bbox"]), value))
    for k, v in out.items():
        out[k] = thin(v, limit)[:top]
    return out


def recall_of(run: dict, score: str, top: int, box: str = "bbox") -> tuple[dict, dict, dict, list, dict]:
    """A run's top-1 recall@IoU 0.5 per object for targets at least half / 10 % visible ({obj: (found, n)}), its
    COCO AP (amodal boxes, as bop_toolkit computes it), the targets, and the ranked detections."""
    from posekit.data.bop import BopDataset
    from posekit.eval.detection import coco_ap, ground_truth, top1_recall

    ds = BopDataset(lmo_dev())
    objects = run["objects"]
    keys = {tuple(int(v) for v in k.split("/")) for k in run["images"]}
    targets = [t for t in ds.targets() if (t.scene_id, t.im_id) in keys and t.obj_id in objects]
    gt = ground_truth(ds, targets)
    gt = {k: [r for r in rows if r[0] in objects] for k, rows in gt.items()}
    dets = detections_of(run, score, top, box)
    return top1_recall(gt, dets, 0.5), top1_recall(gt, dets, 0.1), coco_ap(gt, dets, objects), targets, \
        {"gt": gt, "dets": dets}


def cmd_eval(args) -> None:
    run = json.loads(Path(args.run).read_text())
    objects = run["objects"]
    r50, r10, ap, targets, more = recall_of(run, args.score, args.top, "bbox_refined" if args.box == "refined" else "bbox")
    gt, dets = more["gt"], more["dets"]
    times = [rec["times"]["total"] for rec in run["images"].values()]
    print(f"{len(run['images'])} images, {len(targets)} targets, score {args.score}, top {args.top} per object "
          f"and image; config {run['config']}")
    print("| object | recall@0.5 (visib>=0.5) | (visib>=0.1) | any hit (visib>=0.5) | AP |")
    print("|---|---|---|---|---|")
    for o in objects:
        f5, n5 = r50.get(o, (0, 0))
        f1, n1 = r10.get(o, (0, 0))
        fa, na = _any(gt, run, o, args.score)
        print(f"| {NAMES.get(o, o)} | {f5}/{n5} = {f5 / max(n5, 1):.1%} | {f1 / max(n1, 1):.1%} | "
              f"{fa / max(na, 1):.1%} | {ap['per_object'].get(o, float('nan')):.3f} |")
    F5 = sum(v[0] for v in r50.values()) / max(1, sum(v[1] for v in r50.values()))
    F1 = sum(v[0] for v in r10.values()) / max(1, sum(v[1] for v in r10.values()))
    m5 = np.mean([v[0] / v[1] for v in r50.values() if v[1]])
    print(f"| all targets (mean over objects) | {F5:.1%} ({m5:.1%}) | {F1:.1%} | | AP {ap['AP']:.3f}, AP50 "
          f"{ap['AP50']:.3f}, AP75 {ap['AP75']:.3f} |")
    print(f"time per image: median {np.median(times):.2f} s (all {len(objects)} objects), "
          f"{np.median(times) / len(objects):.2f} s per part; machine {run.get('machine')}")
    parts = {k: np.median([rec["times"][k] for rec in run["images"].values() if k in rec["times"]])
             for k in next(iter(run["images"].values()))["times"]}
    match = parts.get("match_per_part")
    print("median seconds per image by stage: " + ", ".join(
        f"{k} {v:.3f}" + (f" ({v / match:.0f}x the templates' match of a box)" if match else "")
        for k, v in parts.items()))
    if args.detections_out:
        from posekit.estimate.batch import write_detections
        from posekit.estimate.pipeline import Detection

        rows = []
        for (scene_id, im_id, obj_id), ds_ in sorted(dets.items()):
            t = run["images"][f"{scene_id}/{im_id}"]["times"]["total"]
            rows += [(scene_id, im_id, Detection(obj_id, tuple(d.bbox), d.score), t) for d in ds_]
        write_detections(args.detections_out, rows)
        print(f"wrote {args.detections_out}")


def cmd_plot(args) -> None:
    """Per-object top-1 recall@IoU 0.5 (targets at least half visible) of several runs side by side, one bar group
    per object, each run's pooled recall and AP in the legend: RUN.json[:SCORE][=LABEL] ..."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise SystemExit(f"--out {out}: use a .png, .svg or .pdf file name")
    specs = []
    for item in args.runs:
        path_score, _, label = item.partition("=")
        path, _, score = path_score.partition(":")
        if not Path(path).is_file():
            raise SystemExit(f"{path}: no such run file")
        specs.append((path, score or "combined", label or Path(path).stem))
    rows = []
    for path, score, label in specs:
        run = json.loads(Path(path).read_text())
        r50, _, ap, _, _ = recall_of(run, score, args.top)
        total = sum(v[0] for v in r50.values()) / max(1, sum(v[1] for v in r50.values()))
        rows.append((f"{label}: {total:.1%}, AP {ap['AP']:.3f}", {o: f / max(n, 1) for o, (f, n) in r50.items()}))
    objects = sorted({o for _, per in rows for o in per})
    fig, ax = plt.subplots(figsize=(1.1 * len(objects) + 2, 4.2))
    width = 0.8 / len(rows)
    for k, (label, per) in enumerate(rows):
        xs = np.arange(len(objects)) + (k - (len(rows) - 1) / 2) * width
        ax.bar(xs, [100 * per.get(o, 0.0) for o in objects], width, label=label)
    ax.set_xticks(np.arange(len(objects)), [NAMES.get(o, str(o)) for o in objects])
    ax.set_ylabel("top-1 recall@IoU 0.5 (%), visib >= 0.5")
    ax.set_ylim(0, 100)
    if args.goal:
        ax.axhline(args.goal, color="grey", linestyle="--", linewidth=1, label=f"goal {args.goal:g} %")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(args.title or "Finding the part with no box (lmo-dev)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def _any(gt: dict, run: dict, obj_id: int, score: str) -> tuple[int, int]:
    """Targets (visib >= 0.5) of one object that any of its kept hits finds at IoU >= 0.5."""
    from posekit.geometry.boxcrop import box_iou

    found = n = 0
    for (scene_id, im_id), rows in gt.items():
        hits = [h for h in run["images"][f"{scene_id}/{im_id}"]["hits"]
                if h["obj_id"] == obj_id and all(k in h["scores"] for k in score.split("+"))]
        for o, box, visib, _ in rows:
            if o != obj_id or visib < 0.5:
                continue
            n += 1
            found += any(box_iou(h["bbox"], box) >= 0.5 for h in hits)
    return found, n


def cmd_crosscheck(args) -> None:
    """AP of a detections file by posekit.eval.detection and by bop_toolkit's own scripts/eval_bop22_coco.py."""
    import subprocess
    import tempfile

    from posekit.data.bop import BopDataset
    from posekit.estimate.batch import read_detections
    from posekit.eval.detection import coco_ap, ground_truth

    data = lmo_dev()
    ds = BopDataset(data)
    dets = read_detections(args.detections)
    keys = {(s, i) for s, i, _ in dets}
    targets = [t for t in ds.targets() if (t.scene_id, t.im_id) in keys]
    gt = ground_truth(ds, targets)
    ours = coco_ap(gt, dets)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lmo = root / "bop" / "lmo"
        (lmo / "test").mkdir(parents=True)
        for name in ("camera.json", "models", "models_eval"):
            (lmo / name).symlink_to(data / name)
        (lmo / "test_targets_bop19.json").write_text(json.dumps([t.to_json() for t in targets]))
        for scene_id in sorted({s for s, _ in keys}):
            src, dst = data / "test" / f"{scene_id:06d}", lmo / "test" / f"{scene_id:06d}"
            dst.mkdir()
            for name in ("rgb", "scene_gt.json", "scene_gt_info.json", "scene_camera.json"):
                (dst / name).symlink_to(src / name)
            # scene_gt_coco.json as calc_gt_coco.py writes it (amodal), from the boxes posekit's ground truth uses
            images, anns = [], []
            for (s, i), rows in sorted(gt.items()):
                if s != scene_id:
                    continue
                images.append({"id": i, "file_name": f"rgb/{i:06d}.png", "width": 640, "height": 480})
                for obj_id, box, visib, px in rows:
                    anns.append({"id": len(anns), "image_id": i, "category_id": obj_id, "iscrowd": 0, "area": px,
                                 "bbox": list(box), "segmentation": {}, "ignore": visib < 0.1})
            cats = [{"id": o, "name": str(o), "supercategory": "lmo"} for o in sorted(ds.obj_ids)]
            (dst / "scene_gt_coco.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                                "categories": cats}))
        results = root / "results"
        results.mkdir()
        (results / "posekit_lmo-test.json").write_text(Path(args.detections).read_text())
        env = dict(os.environ, BOP_PATH=str(root / "bop"), BOP_RESULTS_PATH=str(results),
                   BOP_EVAL_PATH=str(root / "eval"),
                   PYTHONPATH=os.pathsep.join(filter(None, [args.pycocotools, str(args.bop_toolkit)])))
        subprocess.run([sys.executable, str(Path(args.bop_toolkit) / "scripts" / "eval_bop22_coco.py"),
                        "--result_filenames", "posekit_lmo-test.json", "--ann_type", "bbox", "--bbox_type", "amodal"],
                       env=env, check=True, capture_output=not args.verbose)
        theirs = json.loads((root / "eval" / "posekit_lmo-test" / "scores_bop22_coco_bbox.json").read_text())
    print("| figure | posekit.eval.detection | bop_toolkit eval_bop22_coco.py |")
    print("|---|---|---|")
    for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100"):
        print(f"| {k} | {ours[k]:.4f} | {theirs[k]:.4f} |")


def cmd_chain(args) -> None:
    """The box-free chain against the same chain on gt-obj boxes, over the images of a detection run: templates,
    then optionally --refine features --depth-sweep; ADD(-S), AR_MSSD, AR_MSPD pooled over the same targets."""
    from _common import run_posekit

    from posekit.data.bop import BopDataset
    from posekit.eval.recall import evaluate

    data = lmo_dev()
    ds = BopDataset(data)
    run = json.loads(Path(args.run).read_text())
    keys = {tuple(int(v) for v in k.split("/")) for k in run["images"]}
    targets = [t for t in ds.targets() if (t.scene_id, t.im_id) in keys and t.obj_id in run["objects"]]
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tfile = work / "targets.json"
    tfile.write_text(json.dumps([t.to_json() for t in targets]))
    dets = work / "detections.json"
    args_eval = argparse.Namespace(run=args.run, score=args.score, top=1, detections_out=str(dets), box="hit")
    cmd_eval(args_eval)
    refine = ["--refine", "features", "--depth-sweep"] if args.refine else ["--refine", "none"]
    tag = base = "features_sweep" if args.refine else "templates"
    if args.no_hypotheses:  # the chain as it was before the hypotheses became the default on found boxes
        refine.append("--no-hypotheses")
    else:  # (gt-obj boxes never get them; the cached results of earlier runs, without, keep their names)
        tag += "_hyp"
    rows = []
    for boxes, name in ((str(dets), "own detections"), ("gt-obj", "gt-obj boxes")):
        out = work / (f"results_{tag}_det.csv" if boxes == str(dets) else f"results_{base}_gt.csv")
        if not out.is_file():
            run_posekit("estimate", "--dataset", str(data), "--model-dir", args.templates, "--boxes", boxes,
                        "--targets", str(tfile), "--out", str(out), *refine)
        rep = evaluate(data, out, targets_path=tfile, progress=False)
        ar = rep.ar()
        rows.append(f"| {name} | {100 * rep.metrics['add_s'].recall[-1]:.1f} % | {ar['ar_mssd']:.3f} | "
                    f"{ar['ar_mspd']:.3f} | {(ar['ar_mssd'] + ar['ar_mspd']) / 2:.3f} |")
    print(f"{len(keys)} images, {len(targets)} targets; chain: templates{' + ' + ' '.join(refine) if args.refine else ''}"
          + ("" if args.no_hypotheses else " (hypotheses on the found boxes, the default)"))
    print("| boxes | ADD(-S) 0.1d | AR_MSSD | AR_MSPD | mean |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


def cmd_speed(args) -> None:
    from posekit.methods.detect import TemplateDetector

    ds, objects, models, wss = open_parts(args)
    dets = {"a": TemplateDetector(wss, models, parse_config(args.a)),
            "b": TemplateDetector(wss, models, parse_config(args.b))}
    lo, hi = (int(v) for v in args.images.split(":"))
    frames = sorted(ds.frames("test"), key=lambda f: (f.scene_id, f.im_id))[lo:hi]
    per: dict = {k: [] for k in dets}
    maps: dict = {k: [] for k in dets}
    alone: dict = {k: [] for k in dets}
    for timed in (False, True):
        for fr in frames:
            image = fr.rgb()
            for k, det in dets.items():
                _, times = det.find(image, fr.camera, objects)
                t0 = time.perf_counter()
                det.find(image, fr.camera, objects[:1])
                if timed:
                    alone[k].append(time.perf_counter() - t0)
                    per[k].append(np.mean([v for n, v in times.items() if n.startswith("obj_")]))
                    maps[k].append(times["maps"])
    base = np.median(per["a"])
    print(f"{len(frames)} images x {len(objects)} parts, {os.cpu_count()} cores, torch threads "
          f"{__import__('torch').get_num_threads()}")
    print("| setting | per part (median) | ratio | the image's maps | one part alone, maps included |")
    print("|---|---|---|---|---|")
    for k, text in (("a", args.a), ("b", args.b)):
        print(f"| {text or 'defaults'} | {np.median(per[k]):.3f} s | {np.median(per[k]) / base:.2f} | "
              f"{np.median(maps[k]):.2f} s | {np.median(alone[k]):.2f} s |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--templates", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--images", type=int, default=0)
    r.add_argument("--objects", default="1,5,6,8,9,10,11,12")
    r.add_argument("--config", default="")
    r.add_argument("--detector", help="a `posekit train regress` workspace of the parts: pool its boxes with the "
                   "template detector's candidates (every hit then also has the score 'detector' where it proposed)")
    r.add_argument("--pool", default="", help="the pool's settings (PoolConfig), KEY=VALUE,...: rank=templates|"
                   "fused, box=given|template, trained_score, trained_top_k")
    r.add_argument("--detector-size", help="WxH the trained detector's input is resized to fit (default: its "
                   "preset's training size, e.g. 320x240; 640x480 runs it on lmo-dev's photos at their own size)")
    r.add_argument("--trained-only", action="store_true", help="with --detector: record the trained detector's "
                   "own boxes and scores at the pool's scales (score 'detector'), nothing verified: the trained "
                   "detector alone (one size: --pool scales=1 [--detector-size WxH])")
    r.add_argument("--verifier", help="a `posekit train verifier` workspace: its probability is one more check in "
                   "the template detector's 'combined' score (of its own hits and of the pool's)")
    r.add_argument("--templates-run", help="with --detector: take the template detector's hits from this earlier "
                   "run of the same --config (its images) and compute only the trained detector's verified boxes")
    e = sub.add_parser("eval")
    e.add_argument("run")
    e.add_argument("--score", default="combined", help="a score key of the run's hits, or a sum of them (a+b)")
    e.add_argument("--top", type=int, default=3)
    e.add_argument("--detections-out")
    e.add_argument("--box", default="hit", choices=("hit", "refined"), help="the hits' own boxes, or (a rerank "
                   "run) the refined poses' boxes where a hit has one")
    rr = sub.add_parser("rerank", help="the best hits per part refined by the feature search and re-scored")
    rr.add_argument("run")
    rr.add_argument("--out", required=True)
    rr.add_argument("--top", type=int, default=3)
    rr.add_argument("--iters", type=int, default=2)
    rr.add_argument("--score", default="combined")
    rr.add_argument("--images", type=int, default=0)
    pl = sub.add_parser("plot")
    pl.add_argument("runs", nargs="+", help="RUN.json[:SCORE][=LABEL], e.g. T640.json:detector='trained alone'")
    pl.add_argument("--out", required=True)
    pl.add_argument("--top", type=int, default=3)
    pl.add_argument("--goal", type=float, default=80.0, help="a dashed line at this recall (%%); 0: none")
    pl.add_argument("--title")
    c = sub.add_parser("crosscheck")
    c.add_argument("detections")
    c.add_argument("--bop-toolkit", required=True, help="a bop_toolkit checkout (with pycocotools, pypng, imageio, "
                   "scikit-image installed)")
    c.add_argument("--pycocotools", help="a folder holding bop_toolkit's fork of pycocotools (its eval_coco extra), "
                   "put first on the script's path")
    c.add_argument("--verbose", action="store_true")
    ch = sub.add_parser("chain")
    ch.add_argument("run")
    ch.add_argument("--templates", required=True)
    ch.add_argument("--workdir", required=True)
    ch.add_argument("--score", default="combined")
    ch.add_argument("--refine", action="store_true", help="add --refine features --depth-sweep")
    ch.add_argument("--no-hypotheses", action="store_true", help="trust the found boxes' size (the chain before "
                    "the hypotheses stage became the default on found boxes)")
    sp = sub.add_parser("speed")
    sp.add_argument("--templates", required=True)
    sp.add_argument("--a", default="", help="detector settings of the baseline (KEY=VALUE,...; empty: defaults)")
    sp.add_argument("--b", default="", help="detector settings compared with it")
    sp.add_argument("--images", default="40:44", help="a slice of lmo-dev's images in (scene, image) order")
    sp.add_argument("--objects", default="5,1,6,8,9,10,11,12", help="the parts; the first is also timed alone")
    args = ap.parse_args()
    {"run": cmd_run, "eval": cmd_eval, "crosscheck": cmd_crosscheck, "chain": cmd_chain,
     "speed": cmd_speed, "plot": cmd_plot, "rerank": cmd_rerank}[args.cmd](args)


if __name__ == "__main__":
    main()
