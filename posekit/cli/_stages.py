"""What the estimate command's modes share (one image, many photos, a dataset): opening and closing the stages,
the part, the outputs (JSON, overlay), and the one-line messages."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from posekit.cli._common import startup_done
from posekit.errors import InputError, PosekitError


class NotFound(PosekitError):
    """The detector found nothing: exit code 1 (the input was fine, the part is not seen)."""

    exit_code = 1


class PoseFailed(PosekitError):
    """A pose came out implausible (behind the camera, or too far for the part to be seen): exit code 1."""

    exit_code = 1

SCORE_MODES = {"mask": ("deepim",), "edges": ("deepim",), "features": ("deepim", "features")}  # --score: the refiners it goes with


def objects_option(text: str | None) -> set[int] | None:
    if not text:
        return None
    try:
        return {int(v) for v in text.split(",")}
    except ValueError:
        raise InputError(f"--objects must be comma-separated object ids, got {text!r}") from None


def open_refiner(kind: str | None, path: Path | None, models, device: str, renderer: str, depth_sweep: bool = False):
    """The refinement stage: the DeepIM refiner of a workspace, the training-free feature search (with its last
    depth sweep when ``depth_sweep``), or None."""
    if depth_sweep and kind != "features":
        raise InputError(f"--depth-sweep is the feature search's last stage: use it with --refine features, not {kind or 'none'}")
    if kind == "features":
        from posekit.methods.featurefit import FeatureRefiner, search_config

        return FeatureRefiner(models, device=device, renderer=renderer, config=search_config(depth_sweep))
    if kind != "deepim" or path is None:
        return None
    from posekit.methods.refine.refiner import Refiner

    return Refiner.load(path, models=models, device=device, renderer=renderer)


def write_json_atomic(path: Path, data) -> None:
    from posekit.data.jsonio import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def load_part(cad: Path, units: str, center: bool):
    """The part as image mode uses it, from the CAD cache after the first call (:mod:`posekit.data.cad_cache`). Its
    symmetries are not looked for: no stage of an estimate reads them (the templates record none, a trained refiner
    or detector has its own), and their search costs about 0.4 s of every call."""
    from posekit.data.cad_cache import load_model_cached

    return load_model_cached(cad, units=units, obj_id=1, center=center, symmetries="none")


def image_record(image, loaded, cad, cam, choices, run: dict, results) -> dict:
    """The JSON record of one image's estimate: what `--json` writes (one line of `--jsonl`)."""
    from posekit.estimate.pipeline import estimate_to_json

    return {"image": str(image), "image_read": loaded.record(), "cad": str(cad),
            "camera": {"K": cam.K.tolist(), "width": cam.width, "height": cam.height},
            "chosen": {c.stage: c.what for c in choices}, "run": run,
            "poses": [estimate_to_json(e) for e in results]}


def not_found_message(image, obj, estimator) -> str:
    det_score = estimator.config.det_score
    least = det_score if det_score is not None else getattr(estimator.detector, "default_score", 0.5)
    if hasattr(estimator.detector, "passes"):  # the template detector or the pool: its gate
        return (f"{image}: no {obj.name} found (no candidate's template match reached {least:.2f} with its outline "
                "on the photo's edges; --det-score sets the threshold)")
    return (f"{image}: no {obj.name} found (no detection scored {least:.2f} or more; --det-score sets the "
            "threshold)")


def failed_message(image, results, failed, written) -> str:
    i, why = failed[0]
    where = f" (marked \"failed\" in {written})" if written is not None else ""
    return (f"{image}: pose {i + 1} of {len(results)} failed: {why}{where}"
            + (f"; {len(failed) - 1} more failed" if len(failed) > 1 else ""))


def close_stages(estimator) -> None:
    """Close what an estimator's stages hold open (a refiner's renderers, a detector's)."""
    for stage in {id(s): s for s in (estimator.refiner, estimator.detector, estimator.scorer) if s is not None}.values():
        if hasattr(stage, "close"):
            stage.close()


def open_stages(obj, cad, model, method, boxes_given: bool, init_est, detector, det_score, det_top_k, top_k, refine,
                 refiner_ws, iters, score, polish, renderer, device, depth_sweep, choices: list, missing: list,
                 hypotheses: bool | None = None, pool: bool | None = None, boxes_file: bool = False,
                 verifier: str | None = None):
    """Choose, check and open every stage of an image-mode run once: the detector (where no box and no --init
    pose is given), the coarse stage and the refiner; returns the :class:`PoseEstimator` over them (close it with
    :func:`close_stages`). ``choices`` receives what was chosen, in the order it is printed (printed here, once
    all of it has loaded); ``missing`` holds what the caller already found missing and receives what else is:
    all of it is named in one error before any long work (a build of the part's templates).

    ``pool``: True pools a trained detector's boxes with the template detector's (one is needed), False runs a
    trained detector alone, None (the default) pools wherever a trained detector is found, except where the coarse
    stage is the regressor (``--method regress``, or a regressor as ``--model``), whose poses are the detector's
    own (the pool is measured better than either alone on LM-O, docs/benchmarks.md). ``hypotheses``: None (the
    default) runs them on found boxes (no box given, or ``boxes_file``: a detections file) and not behind the
    regressor; given boxes are trusted. ``verifier``: the template detector's learned verifier (a workspace, or
    "none"); None: the model store's for the part, where there is one."""
    from posekit.estimate.choose import (
        Choice,
        Missing,
        auto_depth_sweep,
        build_store_templates,
        find_coarse,
        find_detector,
        find_refiner,
        missing_message,
        with_depth_sweep,
    )
    from posekit.estimate.methods import hypotheses_scorer, wants_hypotheses
    from posekit.estimate.pipeline import EstimatorConfig, Hypotheses, PoseEstimator

    regress = method == "regress"
    if method == "auto" and model is not None and init_est is None:
        from posekit.estimate.methods import workspace_method

        regress = workspace_method(model) == "regress"
    if pool is True and regress:
        raise InputError("--pool gives the templates' poses with its boxes; the regressor as the coarse stage wants "
                         "the trained detector's own: use one or the other")
    found_boxes = not boxes_given or boxes_file
    if hypotheses is None:
        hypotheses = wants_hypotheses(found_boxes, regress)
    if verifier is not None and verifier.lower() != "none":  # checked before any long work (a build of templates)
        from posekit.methods.detect.verifier import check_workspace

        check_workspace(verifier)
    detector_path, template_detector = None, False
    if not boxes_given and init_est is None:
        detector_path, det_choice = find_detector([obj], detector)
        if detector_path is None:  # no trained detector: find the part with its templates (no training)
            template_detector = True
            det_choice = Choice("detect", "templates: the training-free detector on the part's templates")
            if pool:
                missing.append(Missing("a trained detector to pool with the templates (--pool)",
                                       f"`posekit train regress --cad {cad}` (or --detector WORKSPACE)"))
        elif pool or (pool is None and not regress):
            template_detector = True  # opened below, beside the trained one
            det_choice = Choice("detect", f"pool: {det_choice.what}, and the template detector; all verified "
                                "and ranked by the templates' checks")
        choices.append(det_choice)
    if verifier is not None and verifier.lower() != "none" and not template_detector:
        raise InputError("--verifier checks the template detector's hits, and this run does not use it (a box is "
                         "given, or a trained detector runs alone): leave --verifier out")
    coarse_path, build_templates_now = None, False
    if init_est is None:
        coarse_path, choice = find_coarse(obj, model, method)
        if choice is None and method == "regress" and detector_path is not None:
            coarse_path, choice = detector_path, Choice("coarse", "regress: the detector's regressed poses")
        if choice is not None:
            choices.append(choice)
        elif method == "regress":
            missing.append(Missing("a pose regressor for this part", f"`posekit train regress --cad {cad}` (or "
                                   "--model WORKSPACE)"))
        elif method == "aae":
            missing.append(Missing("an AAE for this part", f"`posekit train aae --cad {cad}` (or --model WORKSPACE)"))
        else:
            build_templates_now = True  # no training needed: made below, once nothing else is missing
    refine_kind, refiner_path, refine_choice, refine_missing = find_refiner([obj], refine, refiner_ws)
    if refine_missing is not None:
        missing.append(refine_missing)
    if missing:
        raise InputError(missing_message(missing))
    if refine_kind is None and (init_est is not None or score or polish):
        what = "--init" if init_est is not None else ("--score" if score else "--polish")
        raise InputError(f"{what} needs a refiner: --refine deepim --refiner WORKSPACE "
                         f"(`posekit train refine --cad {cad}` makes one)")
    det_ws = None
    if detector_path is not None:  # opened (and checked against the part) before any long work
        from posekit.methods.regress import load_workspace as load_regressor

        det_ws = load_regressor(detector_path, device=device, models=[obj])
    if build_templates_now:
        typer.echo("posekit: no coarse model for this part yet: building its templates (no training) ...", err=True)
        coarse_path, choice = build_store_templates(obj, device=device)
        choices.append(choice)
    depth_sweep = depth_sweep or auto_depth_sweep(refine, refine_kind, iters, score)
    if depth_sweep and refine_kind == "features":
        refine_choice = with_depth_sweep(refine_choice)
    if hypotheses and init_est is None:  # printed where it runs: between the coarse stage and refinement
        h = Hypotheses()
        choices.append(Choice("hypotheses", f"the {h.views} best views at {h.depths} depths in +-{h.depth_range:.0%} "
                              "of the box's, scored on the photo"
                              + (" (found boxes: --no-hypotheses trusts their size)" if found_boxes else "")))
    choices.append(refine_choice)
    coarse = {}
    if init_est is None:
        from posekit.estimate.methods import load_coarse

        coarse[1] = load_coarse(coarse_path, method, device=device, model=obj)
    if template_detector:
        templates = open_template_detector(obj, coarse.get(1), device, choices, verifier)
        if det_ws is not None:  # the pool (the default with a trained detector, or --pool)
            from posekit.methods.detect import PooledDetector

            det_ws = PooledDetector(det_ws, templates)
        else:
            det_ws = templates
        if det_top_k is None:
            det_top_k = 1  # its hits beyond the best are mostly look-alikes: more instances only when asked
    if score and refine_kind not in SCORE_MODES[score]:
        raise InputError(f"--score {score} goes with --refine {' or '.join(SCORE_MODES[score])}; the refiner here is {refine_kind}")
    refiner = open_refiner(refine_kind, refiner_path, [obj], device, renderer, depth_sweep)
    for c in choices:  # what this run uses, once all of it has loaded
        typer.echo(f"posekit: {c.stage:<7} {c.what}", err=True)
    scorer = hypotheses_scorer(hypotheses and init_est is None, refiner, [obj], device, renderer)
    config = EstimatorConfig(top_k=top_k, refine_iters=iters, polish_steps=polish, refine_score=score,
                             det_score=det_score, det_top_k=det_top_k or None,
                             hypotheses=Hypotheses() if hypotheses and init_est is None else None)
    estimator = PoseEstimator({1: obj}, coarse=coarse, refiner=refiner, config=config, detector=det_ws, scorer=scorer)
    startup_done()
    return estimator


def detector_templates(obj, coarse, device: str, choices: list):
    """The template workspace the training-free detector searches with: the coarse stage's own when it is
    templates, else the model store's (built now if there are none; the choice is added to ``choices``)."""
    from posekit.estimate.choose import Choice, build_store_templates, find_coarse
    from posekit.methods.templates import TemplateWorkspace, load_workspace

    if isinstance(coarse, TemplateWorkspace):
        return coarse
    path, choice = find_coarse(obj, None, "templates")
    if path is None:
        typer.echo("posekit: no templates of this part yet: building them for the detector (no training) ...",
                   err=True)
        path, choice = build_store_templates(obj, device=device)
    choices.append(Choice("detect", f"templates for the detector: {choice.what}"))
    return load_workspace(path, device=device, model=obj)


def open_template_detector(obj, coarse, device: str, choices: list, verifier: str | None = None):
    """The training-free detector on the part's templates (:func:`detector_templates`), with its learned verifier
    (``verifier``: a workspace, "none", or None: the store's for the part, where there is one)."""
    from posekit.estimate.choose import find_verifier
    from posekit.methods.detect import TemplateDetector

    coarse = detector_templates(obj, coarse, device, choices)
    path, choice = find_verifier(obj, verifier)
    ver = None
    if path is not None:
        from posekit.methods.detect.verifier import load_verifier

        ver = load_verifier(path, device=str(coarse.device))  # where the backbone's maps are
        last = max((i for i, c in enumerate(choices) if c.stage == "detect"), default=len(choices) - 1)
        choices.insert(last + 1, choice)  # printed with the other detect lines
    return TemplateDetector({1: coarse}, {1: obj}, verifier=ver)


def write_overlay(path: Path, rgb, cam, obj, estimates, strip: bool = False, detections=None) -> None:
    """The final poses over the image (.png/.jpg), or one frame per stage with every instance at that stage:
    animated (.gif) or side by side (strip); a detector's boxes and masks under them. The estimates of one batch
    share their stages."""
    import numpy as np

    from posekit.data.jsonio import save_image_atomic
    from posekit.viz.overlay import draw_detections, draw_poses, pose_strip, save_frames

    if detections:
        rgb = draw_detections(rgb, detections)

    if path.suffix.lower() == ".gif" or strip:
        stages = min(len(e.history) for e in estimates)
        if stages == 0:
            frames, labels = [[(e.R, e.t) for e in estimates]], ["final"]
        else:
            frames = [[(np.asarray(e.history[k]["R"]).reshape(3, 3), np.asarray(e.history[k]["t"])) for e in estimates]
                      for k in range(stages)]
            labels = [estimates[0].history[k].get("stage", str(k)) for k in range(stages)]
        save_frames(path, pose_strip(rgb, cam, obj, frames, labels=labels))
    else:
        save_image_atomic(path, draw_poses(rgb, cam, obj, [(e.R, e.t) for e in estimates]))
