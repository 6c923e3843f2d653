"""`posekit estimate`: poses for one image (JSON + overlay) or for a whole BOP dataset (results CSV)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import typer

from posekit.cli._common import CENTER_HELP, guarded, pause_gc_for_startup, startup_done
from posekit.cli._stages import (
    SCORE_MODES,
    NotFound,
    PoseFailed,
    close_stages,
    failed_message,
    image_record,
    load_part,
    not_found_message,
    objects_option,
    open_refiner,
    open_stages,
    write_json_atomic,
    write_overlay,
)
from posekit.errors import InputError

METHODS = ("auto", "templates", "aae", "regress")
REFINERS = ("auto", "none", "deepim", "features")
def _instances_option(text: str | None) -> int | None:
    """--instances: None (the detector's default), a positive count, or 0 for all."""
    if text is None:
        return None
    if text.strip().lower() == "all":
        return 0
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"--instances must be a positive number or all, got {text!r}")
    return n


@guarded
def estimate(
    images: list[Path] | None = typer.Argument(None, help="An RGB image (single-image mode), or several images "
                                               "and folders of them (one process for all: --json-dir / --jsonl, "
                                               "--overlay-dir; docs/estimate.md)."),
    cad: Path | None = typer.Option(None, "--cad", help="The object's CAD file (STL/PLY/OBJ)."),
    units: str = typer.Option("auto", "--units", help="CAD units: mm, m or auto."),
    center: bool = typer.Option(False, "--center", help=CENTER_HELP),
    model: Path | None = typer.Option(None, "--model", help="Coarse-stage workspace: `posekit train templates` (no training) or `posekit train aae`."),
    bbox: list[str] | None = typer.Option(None, "--bbox", help="Detection box x,y,w,h in pixels; repeat it for several instances of the part (estimated and refined as one batch)."),
    camera: Path | None = typer.Option(None, "--camera", help="A camera JSON: K (3x3), cam_K (9 numbers) or fx, fy, cx, "
                                       "cy, with width, height; a `posekit estimate --json` output; or a BOP "
                                       "scene_camera.json."),
    K: str | None = typer.Option(None, "--K", help="Intrinsics fx,fy,cx,cy (instead of --camera)."),
    method: str = typer.Option("auto", "--method", help="Coarse method: templates, aae, regress (the detector's own regressed poses), or auto (what the --model workspace holds)."),
    detector: Path | None = typer.Option(None, "--detector", help="Detector workspace from `posekit train regress`: finds the part when no --bbox is given, pooled with the template detector unless --no-pool (default: one from the model store, else the training-free template detector alone)."),
    det_score: float | None = typer.Option(None, "--det-score", min=0.0, max=1.0, help="Detections below this score are dropped (default: the detector's own: 0.40 on the template match (the two cosines' mean) for the template detector and the pool; 0.5 on a trained detector's own score with --no-pool or --method regress; docs/estimate.md)."),
    instances: str | None = typer.Option(None, "--instances", help="How many instances of the part to find with no --bbox: N (the N best detections above --det-score) or all (every one above it); default 1 for the template detector and the pool, all for a trained detector alone (--no-pool, --method regress)."),
    detections_out: Path | None = typer.Option(None, "--detections-out", help="Write the detections used as a BOP'22 detections JSON (scene_id, image_id, category_id, bbox, score, time)."),
    top_k: int = typer.Option(1, "--top-k", min=1, help="Hypotheses to report (templates / codebook neighbours): the best is the pose, the others are listed as alternatives in the JSON (the hypotheses stage, on by default for found boxes, keeps at least 3)."),
    refine: str = typer.Option("auto", "--refine", help="Refiner: auto (the --refiner, else one from the model store "
                               "that covers the part, else features with its depth sweep, the best measured on real "
                               "photos; in dataset mode: the --refiner, else none), none, deepim, or features (search "
                               "on pretrained features, no training)."),
    refiner_ws: Path | None = typer.Option(None, "--refiner", help="Refiner workspace from `posekit train refine`."),
    iters: int = typer.Option(4, "--iters", min=0, help="Refiner iterations."),
    polish: int = typer.Option(0, "--polish", min=0, help="Gradient steps on the pose through PyTorch3D after refinement: towards the predicted (or --mask) silhouette after --refine deepim, by feature-metric alignment (plus --mask) after --refine features."),
    mask: Path | None = typer.Option(None, "--mask", help="The object's mask (an image of the image's size, object >= 128): the polish's silhouette target (instead of the DeepIM refiner's predicted mask; beside the features after --refine features)."),
    score: str = typer.Option("none", "--score", help="Keep the best refiner iterate (the start included), not the last: none, mask (silhouette vs the refiner's predicted object mask) or edges (outline vs image edges) with --refine deepim, features (masked similarity of the pretrained backbone's maps) with --refine deepim or features."),
    depth_sweep: bool = typer.Option(False, "--depth-sweep", help="After --refine features: move each pose along its viewing ray to the best of 9 depths in +-8 % (refined between them by a parabola), scored by the pretrained features of 256-px crops (a best at an end of the range keeps the depth; lmo-dev, from 10-deg starts: median depth error 21 -> 18 mm; docs/benchmarks.md)."),
    hypotheses: bool | None = typer.Option(None, "--hypotheses/--no-hypotheses", help="Between the coarse stage and refinement: the 3 best views at 7 depths in +-25 % of the box's depth, scored on the photo by the pretrained features under the union of their masks; the best goes on. Default: on for found boxes (a detector's, or a detections file), off for boxes given with --bbox or ground-truth ones, whose size is to be trusted, and behind the regressor (docs/estimate.md)."),
    pool: bool | None = typer.Option(None, "--pool/--no-pool", help="Image mode, with a trained detector (--detector or the store's): pool its boxes with the training-free template detector's candidates, all verified and ranked by the template checks (docs/estimate.md). Default: pooled wherever a trained detector is used, except behind the regressor (--method regress: its poses are the detector's own); --no-pool runs the trained detector alone. Dataset mode's --boxes detector runs it alone."),
    verifier: str | None = typer.Option(None, "--verifier", help="Where the template detector runs (alone or in the pool): a `posekit train verifier` workspace whose probability is one more check in the ranking of its hits, or none. Default: the model store's verifier of the part, where there is one (docs/estimate.md)."),
    renderer: str = typer.Option("auto", "--renderer", help="Refiner renderer: auto, pytorch3d or pyrender."),
    init: Path | None = typer.Option(None, "--init", help="Start refinement from the pose in this JSON (R, t in mm; every pose of a `posekit estimate --json` output) instead of the AAE."),
    overlay: Path | None = typer.Option(None, "--overlay", help="Write the pose over the image (.png/.jpg; .gif: one frame per stage, e.g. each refiner iteration)."),
    strip: Path | None = typer.Option(None, "--strip", help="Write the stages (coarse, each refiner iteration, polish) side by side into this PNG."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the pose(s) as JSON (stdout otherwise)."),
    json_dir: Path | None = typer.Option(None, "--json-dir", help="Several images: write each one's JSON into this "
                                         "folder as <image name>.json (made if its parent exists)."),
    jsonl: Path | None = typer.Option(None, "--jsonl", help="Several images: write one JSON line per image into "
                                      "this file, in place when the run ends (without it or --json-dir: on stdout)."),
    overlay_dir: Path | None = typer.Option(None, "--overlay-dir", help="Several images: write each one's overlay "
                                            "into this folder as <image name>.png."),
    dataset: Path | None = typer.Option(None, "--dataset", help="Dataset mode: a BOP dataset folder."),
    split: str = typer.Option("test", "--split", help="Dataset split."),
    targets: Path | None = typer.Option(None, "--targets", help="Targets file (default: the dataset's test_targets_bop19.json)."),
    boxes: str = typer.Option("gt-visib", "--boxes", help="Boxes: gt-visib, gt-obj, detector (--detector WORKSPACE, else the training-free template detector on --model-dir's templates), or a BOP detections JSON (also for several images: matched by the image id of each file name, --objects ID the part's)."),
    model_dir: Path | None = typer.Option(None, "--model-dir", help="Folder of coarse-stage workspaces (templates or AAE) named obj_XXXXXX (dataset mode)."),
    objects: str | None = typer.Option(None, "--objects", help="Only these object ids (comma-separated)."),
    out: Path | None = typer.Option(None, "--out", help="Dataset mode: BOP results CSV to write."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Estimate 6D poses: rotation from templates (pretrained features) or the AAE codebook, translation from the box,
    optional DeepIM refinement."""
    pause_gc_for_startup()  # on again once the stages are open (open_stages), or when this ends
    try:
        _estimate(**locals())
    finally:
        startup_done()


def _estimate(images, cad, units, center, model, bbox, camera, K, method, detector, det_score, instances,
              detections_out, top_k, refine, refiner_ws, iters, polish, mask, score, depth_sweep, renderer, init,
              overlay, strip, json_out, json_dir, jsonl, overlay_dir, dataset, split, targets, boxes, model_dir,
              objects, out, device, hypotheses=None, pool=None, verifier=None) -> None:
    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if score != "none" and score not in SCORE_MODES:
        raise InputError(f"--score must be none, {', '.join(SCORE_MODES)}, got {score!r}")
    score = None if score == "none" else score
    if refine not in REFINERS:
        raise InputError(f"--refine must be one of {', '.join(REFINERS)}, got {refine!r}")
    if score and (refine == "none" or iters == 0):
        raise InputError("--score chooses among refiner iterations: use it with --refine deepim and --iters >= 1")
    if score and refine in ("deepim", "features") and refine not in SCORE_MODES[score]:
        raise InputError(f"--score {score} goes with --refine {' or '.join(SCORE_MODES[score])}, not --refine {refine}")
    if polish and refine == "none":
        raise InputError("--polish follows a refiner: use it with --refine deepim or --refine features")
    if polish and refine != "features" and iters == 0:
        raise InputError("--polish after --refine deepim works on its last iteration's mask: use --iters >= 1")
    if mask is not None and not polish:
        raise InputError("--mask is the polish's silhouette target: use it with --polish N")
    det_top_k = _instances_option(instances)
    if depth_sweep and refine not in ("features", "auto"):
        raise InputError(f"--depth-sweep is the feature search's last stage: use it with --refine features, not {refine}")
    if depth_sweep and iters == 0:
        raise InputError("--depth-sweep follows the feature search's last iteration: use it with --iters >= 1")
    if depth_sweep and score == "features":
        raise InputError("--score features would keep an iterate before the depth sweep (the search's 128-px score "
                         "does not see a few per cent of depth): use one of them")
    for target in (json_out, overlay, strip, out, detections_out):
        if target is not None and not target.parent.is_dir():
            raise InputError(f"{target.parent}: output folder does not exist")
    if overlay is not None and overlay.suffix.lower() not in (".png", ".jpg", ".jpeg", ".gif"):
        raise InputError(f"--overlay {overlay}: use a .png, .jpg or .gif file name")
    if strip is not None and strip.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise InputError(f"--strip {strip}: use a .png or .jpg file name")
    if dataset is not None:
        if mask is not None or bbox:
            raise InputError("--mask and --bbox are for single-image mode; --dataset takes its boxes from --boxes")
        if json_dir is not None or jsonl is not None or overlay_dir is not None:
            raise InputError("--json-dir, --jsonl and --overlay-dir are for images; --dataset writes --out CSV")
        if pool is True:
            raise InputError("--pool is for images; in dataset mode pool with benchmarks/detect_lmo.py run --detector")
        _dataset_mode(dataset, split, targets, boxes, model_dir, objects, out, top_k, refine, refiner_ws, iters,
                      polish, renderer, device, score, method, detector, det_score, det_top_k, detections_out,
                      depth_sweep=depth_sweep, hypotheses=hypotheses, verifier=verifier)
    elif len(images or []) > 1 or (images and images[0].is_dir()) or any(
            o is not None for o in (json_dir, jsonl, overlay_dir)):
        from posekit.cli.estimate_many import many_mode

        many_mode(images or [], cad, units, model, bbox or [], camera, K, top_k, refine, refiner_ws, iters, polish,
                  renderer, device, score, method, center, detector, det_score, det_top_k, depth_sweep, json_dir,
                  jsonl, overlay_dir, boxes, objects,
                  {"--json": json_out, "--overlay": overlay, "--strip": strip, "--init": init, "--mask": mask,
                   "--detections-out": detections_out}, hypotheses=hypotheses, pool=pool, verifier=verifier)
    else:
        _image_mode(images[0] if images else None, cad, units, model, bbox or [], camera, K, top_k, refine,
                    refiner_ws, iters, polish, renderer, init, overlay, strip, json_out, device, score, mask, method,
                    center, detector, det_score, det_top_k, detections_out, depth_sweep=depth_sweep,
                    hypotheses=hypotheses, pool=pool, verifier=verifier)


def _image_mode(image, cad, units, model, bboxes, camera, K, top_k, refine, refiner_ws, iters, polish, renderer,
                init, overlay, strip, json_out, device, score=None, mask=None, method="auto", center=False,
                detector=None, det_score=0.5, det_top_k=None, detections_out=None, depth_sweep=False,
                hypotheses=None, pool=None, verifier=None) -> None:
    from posekit.data.types import Observation, PoseEstimate
    from posekit.estimate import inputs
    from posekit.estimate.choose import Choice, Missing
    from posekit.estimate.pipeline import Detection, describe

    if image is None:
        raise InputError("give an IMAGE (or --dataset DIR for dataset mode)")
    if cad is None:
        raise InputError("--cad is required: the object's CAD file")
    started = time.perf_counter()
    loaded = inputs.read_image(image)
    rgb = loaded.rgb
    obj = load_part(cad, units, center)
    missing: list[Missing] = []
    cam, cam_source = inputs.find_camera(loaded, image, camera, K)
    if cam is None:
        missing.append(Missing("the camera intrinsics", f"--K fx,fy,cx,cy, --camera camera.json, or a camera.json "
                               f"(fx, fy, cx, cy, width, height) beside the image ({cam_source})"))
    detections = [Detection(1, inputs.parse_bbox(b, cam)) for b in bboxes] if cam is not None else []
    if (bboxes or init is not None) and detector is not None:
        raise InputError("--detector finds the part where no --bbox (or --init) is given: give one or the other")
    if (bboxes or init is not None) and pool is True:
        raise InputError("--pool finds the part where no --bbox (or --init) is given: give one or the other")
    target_mask = inputs.load_mask(mask, cam) if mask is not None and cam is not None else None
    init_est = None
    choices = [Choice("image", loaded.describe())] + ([] if cam is None else [Choice("camera", cam_source)])
    if init is not None:
        poses = inputs.load_poses_json(init)
        if bboxes and len(bboxes) != len(poses):
            raise InputError(f"--init {init} holds {len(poses)} pose(s) but {len(bboxes)} --bbox were given")
        init_est = [PoseEstimate(obj_id=1, R=R0, t=t0, history=[{"stage": "init", "R": R0.tolist(), "t": t0.tolist()}])
                    for R0, t0 in poses]
        choices.append(Choice("coarse", f"none: {len(poses)} pose(s) from --init {init}"))
    estimator = open_stages(obj, cad, model, method, bool(bboxes), init_est, detector, det_score, det_top_k, top_k,
                             refine, refiner_ws, iters, score, polish, renderer, device, depth_sweep, choices, missing,
                             hypotheses=hypotheses, pool=pool, verifier=verifier)
    det_ws = estimator.detector
    obs = Observation(image=rgb, camera=cam, bbox=detections[0].bbox if detections else None, mask=target_mask)
    try:
        found = estimator.run(obs, detections or None, init=init_est)
    finally:
        close_stages(estimator)
    results = found.estimates
    if det_ws is not None and not found.detections:
        raise NotFound(not_found_message(image, obj, estimator))
    if detections_out is not None:
        from posekit.estimate.batch import write_detections

        im_id = inputs.image_id(image)
        write_detections(detections_out, [(0, im_id if im_id is not None else 0, d, results[0].timings.get("detect", 0.0)
                                           if results else 0.0) for d in found.detections])
        typer.echo(f"wrote {detections_out}", err=True)
    run = {**describe(estimator), "command": shlex.join(["posekit", *sys.argv[1:]]), "cad_units": obj.units_note,
           "wall_s": time.perf_counter() - started}
    record = image_record(image, loaded, cad, cam, choices, run, results)
    failed = [(i, e.failed) for i, e in enumerate(results) if e.failed]
    if json_out is not None:
        write_json_atomic(json_out, record)
        if not failed:
            typer.echo(f"wrote {json_out}", err=True)
    else:
        typer.echo(json.dumps(record, indent=2))
    drawn = [e for e in results if not e.failed]
    if overlay is not None and drawn:
        write_overlay(overlay, rgb, cam, obj, drawn, detections=found.detections if det_ws else None)
        if not failed:
            typer.echo(f"wrote {overlay}", err=True)
    if strip is not None and drawn:
        write_overlay(strip, rgb, cam, obj, drawn, strip=True)
        if not failed:
            typer.echo(f"wrote {strip}", err=True)
    if failed:
        raise PoseFailed(failed_message(image, results, failed, json_out))


def _dataset_mode(dataset, split, targets, boxes, model_dir, objects, out, top_k, refine, refiner_ws, iters,
                  polish, renderer, device, score=None, method="auto", detector=None, det_score=0.5, det_top_k=None,
                  detections_out=None, depth_sweep=False, hypotheses=None, verifier=None) -> None:
    from posekit.data.bop import BopDataset
    from posekit.data.results import write_results
    from posekit.estimate.batch import (
        BOX_SOURCES,
        estimate_dataset,
        mean_timings,
        read_detections,
        write_detections,
    )
    from posekit.estimate.methods import hypotheses_scorer, load_coarse, wants_hypotheses
    from posekit.estimate.pipeline import EstimatorConfig, Hypotheses, PoseEstimator

    if out is None:
        raise InputError("--out results.csv is required with --dataset")
    if detector is not None and boxes != "detector":
        raise InputError("--detector is used with --boxes detector")
    regress_only = method == "regress" and model_dir is None and detector is not None
    if model_dir is None and not regress_only:
        raise InputError("--model-dir DIR (templates or AAE workspaces named obj_XXXXXX) is required with --dataset "
                         "(or --method regress with --detector)")
    if detections_out is not None and boxes != "detector":
        raise InputError("--detections-out writes the detector's boxes: use it with --boxes detector")
    ds = BopDataset(dataset)
    wanted = objects_option(objects)
    tgts = ds.targets(targets, split=split) if targets else ds.targets(split=split)
    obj_ids = sorted({t.obj_id for t in tgts if wanted is None or t.obj_id in wanted})
    det_ws = None
    if detector is not None:
        from posekit.methods.regress import load_workspace as load_regressor

        det_ws = load_regressor(detector, device=device)
    models, coarse = {}, {}
    for obj_id in obj_ids:
        if regress_only:
            m = ds.load_model(obj_id)
            if det_ws.covers(m):
                models[obj_id], coarse[obj_id] = m, det_ws.for_model(m)
            elif wanted is not None:
                raise InputError(f"{detector}: the regressor was not trained on object {obj_id}")
            continue
        ws = model_dir / f"obj_{obj_id:06d}"
        if not ws.is_dir():
            if wanted is not None:
                raise InputError(f"{ws}: no workspace for object {obj_id}")
            continue
        models[obj_id] = ds.load_model(obj_id)
        coarse[obj_id] = load_coarse(ws, method, device=device, model=models[obj_id])
    if not coarse:
        raise InputError(f"{model_dir or detector}: no workspace (obj_XXXXXX) for any target object of {dataset}")
    if boxes == "detector" and det_ws is None:  # no trained detector: the training-free one on the templates
        from posekit.methods.detect import TemplateDetector
        from posekit.methods.templates import TemplateWorkspace

        not_templates = [o for o, ws in coarse.items() if not isinstance(ws, TemplateWorkspace)]
        if not_templates:
            raise InputError(f"--boxes detector without --detector finds the parts with their templates, but "
                             f"{model_dir} holds no templates of object(s) {not_templates}: give --detector "
                             "WORKSPACE or a --model-dir of templates")
        ver = None
        if verifier is not None and verifier.lower() != "none":  # dataset mode: only the one given
            from posekit.methods.detect.verifier import load_verifier

            ver = load_verifier(verifier)
        det_ws = TemplateDetector(coarse, models, verifier=ver)
    tgts = [t for t in tgts if t.obj_id in coarse]
    detections = None
    if boxes not in BOX_SOURCES:
        detections = read_detections(boxes)
    # dataset mode runs only what it is told: --refine auto means the --refiner given, if any (no store look-up)
    if refine == "deepim" and refiner_ws is None:
        raise InputError("--refine deepim needs --refiner WORKSPACE (a workspace from `posekit train refine`)")
    if refine in ("none", "features") and refiner_ws is not None:
        raise InputError(f"--refiner is a DeepIM workspace: it does not go with --refine {refine}")
    kind = "features" if refine == "features" else ("deepim" if refiner_ws is not None else None)
    refiner = open_refiner(kind, refiner_ws, list(models.values()), device, renderer, depth_sweep)
    if refiner is None and (score or polish):
        raise InputError("--score and --polish need a refiner: --refiner WORKSPACE")
    if hypotheses is None:
        hypotheses = wants_hypotheses(boxes not in ("gt-visib", "gt-obj"),
                                      any(getattr(ws, "uses_detection_poses", False) for ws in coarse.values()))
    scorer = hypotheses_scorer(hypotheses, refiner, list(models.values()), device, renderer)
    estimator = PoseEstimator(models, coarse=coarse, refiner=refiner, detector=det_ws, scorer=scorer,
                              config=EstimatorConfig(top_k=top_k, refine_iters=iters, polish_steps=polish,
                                                     refine_score=score, det_score=det_score,
                                                     det_top_k=det_top_k or None,
                                                     hypotheses=Hypotheses() if hypotheses else None))
    found: list = []
    try:
        results = estimate_dataset(estimator, ds, tgts, split=split, boxes=boxes, detections=detections, found=found)
    finally:
        close_stages(estimator)
    write_results(out, results)
    if detections_out is not None:
        write_detections(detections_out, found)
        typer.echo(f"wrote {len(found)} detections to {detections_out}", err=True)
    stages = ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in mean_timings(results).items())
    typer.echo(f"wrote {len(results)} estimates for {len(tgts)} targets of objects {sorted(coarse)} to {out}", err=True)
    typer.echo(f"mean time per estimate: {stages}", err=True)
    sys.stderr.flush()


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate)
