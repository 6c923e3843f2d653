"""One-command batch runs on a BOP dataset (LINEMOD ``lm``, LINEMOD-Occluded ``lmo``, or any BOP folder).

:func:`run_benchmark` prepares each object's coarse stage (the model store's, or templates built into it now),
estimates every target with the chosen boxes, evaluates, and writes a report folder:

    OUT/benchmark.json        what was run (dataset, objects, method, boxes, refine), each object's wall seconds
    OUT/results/obj_XXXXXX.csv  the BOP results of each object (an object already there is not run again)
    OUT/results.csv           all of them, for `posekit eval` and the BOP toolkit
    OUT/eval.json, OUT/recall_curves.png
    OUT/summary.md            the command line, the machine, the per-object table (recalls, median rotation /
                              translation errors, time per target), wall time, the anchors, the pictures
    OUT/sheet_obj_XXXXXX.png  best, median and worst estimates of each object (by ADD(-S) in diameters)

A run is resumable: a killed run is continued by the same command; a different setting into the same OUT is
refused.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from posekit.errors import InputError

ANCHORS = ("Anchors (BOP'19, LM-O, RGB): AAE (Sundermeyer et al.) about 0.15 AR; CosyPose (synthetic PBR training) "
           "about 0.63 AR; Deep-6DPose 65.2 % ADD on LINEMOD with real training images.")


@dataclass(frozen=True)
class BenchmarkSpec:
    dataset: str
    objects: list[int]
    method: str = "templates"
    boxes: str = "gt-visib"
    refine: str = "none"
    iters: int = 4
    split: str = "test"
    depth_sweep: bool = False  # with refine="features": the search's last depth sweep (estimate's --depth-sweep)


def _spec_file(out: Path) -> Path:
    return out / "benchmark.json"


def check_output(out: Path, spec: BenchmarkSpec) -> None:
    """InputError unless ``out`` is new, or holds a run of exactly this spec (which is then continued)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: its parent folder does not exist")
    f = _spec_file(out)
    if f.is_file():
        from dataclasses import MISSING, fields

        # a setting added since that run was written is read as its default
        old_spec = {**{fl.name: fl.default for fl in fields(BenchmarkSpec) if fl.default is not MISSING},
                    **json.loads(f.read_text()).get("spec", {})}
        if old_spec != asdict(spec):
            diff = sorted(k for k in asdict(spec) if old_spec.get(k) != asdict(spec)[k])
            raise InputError(f"--out {out}: holds another benchmark run (differs in: {', '.join(diff)}); choose another "
                             "--out")


def _coarse_for(model, method: str, device: str, progress: bool):
    """The object's coarse stage from the model store; templates are built there when missing."""
    from posekit.data import store
    from posekit.estimate.choose import build_store_templates
    from posekit.estimate.methods import load_coarse

    entry = store.find(model.mesh_hash, method)
    if entry is None:
        if method != "templates":
            raise InputError(f"no {method} workspace in the model store for object {model.obj_id} "
                             f"(`posekit train {method} --cad {model.source}` makes one)")
        path, _ = build_store_templates(model, device=device)
    else:
        path = entry.path
    return path, load_coarse(path, method, device=device, model=model)


def _errors(ds, ests, obj_id: int, split: str) -> list[tuple[float, object, object]]:
    """(ADD(-S) error / diameter, estimate, gt) of each estimate against its image's ground truth."""
    from posekit.eval.metrics import add, adds

    model = ds.load_model(obj_id, eval=True)
    pts = model.vertices[:: max(1, len(model.vertices) // 2000)]
    sym = bool(ds.models_info[obj_id].get("symmetries_discrete") or ds.models_info[obj_id].get("symmetries_continuous"))
    out = []
    for e in ests:
        gts = [g for _, g in ds.frame(split, e.scene_id, e.im_id).gts_of(obj_id)]
        if not gts:
            continue
        fn = adds if sym else add
        err = min(float(fn(e.R, e.t, g.R, g.t, pts)) for g in gts)
        g = min(gts, key=lambda g: np.linalg.norm(g.t - e.t))
        out.append((err / float(model.diameter), e, g))
    return out


def pose_errors(ds, errs, obj_id: int) -> tuple[list[float], list[float]]:
    """Rotation errors (degrees; the least over the object's symmetries) and translation errors (mm) of
    (error, estimate, gt) triples from :func:`_errors`."""
    from posekit.data.bop import symmetry_transforms_from_info
    from posekit.eval.metrics import rotation_error, translation_error

    syms = symmetry_transforms_from_info(ds.models_info[obj_id])[:, :3, :3]
    rot = [float(np.min([rotation_error(e.R, g.R @ S) for S in syms])) for _, e, g in errs]
    return rot, [float(translation_error(e.t, g.t)) for _, e, g in errs]


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def seconds_per_target(ests) -> float:
    """Estimation seconds per target: each image's time (BOP's results give every estimate of an image the image's
    time) counted once per object, since the benchmark estimates each object in a run of its own, over the
    estimates."""
    if not ests:
        return float("nan")
    per_image = {(e.scene_id, e.im_id, e.obj_id): float(e.time) for e in ests}
    return sum(per_image.values()) / len(ests)


def machine() -> str:
    """The machine a run measured its times on: CPU model, cores, torch's threads, the GPU when one is used."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads{gpu}"


def _sheet(ds, obj_id: int, picks, path: Path, split: str) -> Path:
    """Best, median and worst estimates side by side: each a crop of the image with the estimate drawn."""
    from PIL import Image

    from posekit.data.jsonio import save_image_atomic
    from posekit.geometry.camera import project_points
    from posekit.viz.overlay import draw_pose

    model = ds.load_model(obj_id)
    tiles = []
    for label, (err, e, g) in picks:
        frame = ds.frame(split, e.scene_id, e.im_id)
        img = draw_pose(frame.rgb(), frame.camera, model, e.R, e.t)
        uv = project_points(model.bbox_corners, frame.camera.K, g.R, g.t)
        c, half = uv.mean(0), 0.75 * float(np.max(uv.max(0) - uv.min(0))) + 10
        x0, y0 = int(max(0, c[0] - half)), int(max(0, c[1] - half))
        crop = Image.fromarray(img).crop((x0, y0, int(c[0] + half), int(c[1] + half))).resize((200, 200))
        from PIL import ImageDraw

        ImageDraw.Draw(crop).text((4, 4), f"{label}: {err:.2f} d", fill=(255, 255, 0))
        tiles.append(np.asarray(crop))
    return save_image_atomic(path, np.concatenate(tiles, axis=1))


def spec_command(spec: BenchmarkSpec) -> str:
    """The `posekit benchmark` command line that runs ``spec``."""
    objects = f" --objects {','.join(map(str, spec.objects))}" if spec.objects else ""
    return (f"posekit benchmark --dataset {spec.dataset}{objects} --method {spec.method} --boxes {spec.boxes} "
            f"--refine {spec.refine}{f' --iters {spec.iters}' if spec.refine != 'none' else ''}"
            f"{' --depth-sweep' if spec.depth_sweep else ''} --split {spec.split}")


def run_benchmark(spec: BenchmarkSpec, out: str | Path, device: str = "auto", progress: bool = True,
                  command: str | None = None) -> Path:
    """Run ``spec`` into the report folder ``out`` (see the module docstring); returns summary.md. ``command``: the
    command line to print in the summary (default: the one :func:`spec_command` writes)."""
    import time

    started = time.perf_counter()
    from posekit.data.bop import BopDataset
    from posekit.data.jsonio import write_json_atomic, write_text_atomic
    from posekit.data.results import read_results, write_results
    from posekit.estimate.batch import estimate_dataset
    from posekit.estimate.methods import hypotheses_scorer, wants_hypotheses
    from posekit.estimate.pipeline import EstimatorConfig, Hypotheses, PoseEstimator
    from posekit.eval.recall import evaluate
    from posekit.eval.report import plot_curves, write_json

    out = Path(out)
    check_output(out, spec)
    ds = BopDataset(spec.dataset)
    targets = ds.targets(split=spec.split)
    known = sorted({t.obj_id for t in targets})
    objects = spec.objects or known
    unknown = sorted(set(objects) - set(known))
    if unknown:
        raise InputError(f"--objects {', '.join(map(str, unknown))}: no targets of such objects in {ds.root}")
    (out / "results").mkdir(parents=True, exist_ok=True)
    # each object's wall seconds, kept across a resumed run's invocations
    seconds = json.loads(_spec_file(out).read_text()).get("seconds", {}) if _spec_file(out).is_file() else {}
    write_json_atomic(_spec_file(out), {"spec": asdict(spec), "objects": objects, "seconds": seconds})
    all_results = []
    workspaces = {}
    for obj_id in objects:
        res_file = out / "results" / f"obj_{obj_id:06d}.csv"
        if res_file.is_file():  # done in an earlier run of this spec
            all_results += read_results(res_file)[0]
            continue
        t_obj = time.perf_counter()
        model = ds.load_model(obj_id)
        path, coarse = _coarse_for(model, spec.method, device, progress)
        workspaces[obj_id] = str(path)
        refiner = None
        if spec.refine == "features":
            from posekit.methods.featurefit import FeatureRefiner, search_config

            refiner = FeatureRefiner([model], device=device, config=search_config(spec.depth_sweep))
        # the best-scored iterate of the search, but the last one after a depth sweep: the search's 128-px score does
        # not see a few per cent of depth, so it would often hand back the iterate before the sweep
        keep = "features" if refiner is not None and not spec.depth_sweep else None
        detector = None
        if spec.boxes == "detector":  # no box given: the part found by its templates (no training)
            from posekit.methods.detect import TemplateDetector

            detector = TemplateDetector({obj_id: coarse}, {obj_id: model})
        # found boxes: their size is not trusted (the hypotheses stage, as `posekit estimate` runs it behind them)
        hypotheses = Hypotheses() if wants_hypotheses(spec.boxes == "detector", False) else None
        scorer = hypotheses_scorer(hypotheses is not None, refiner, [model], device)
        est = PoseEstimator({obj_id: model}, coarse={obj_id: coarse}, refiner=refiner, detector=detector,
                            scorer=scorer, config=EstimatorConfig(refine_iters=spec.iters, refine_score=keep,
                                                                  hypotheses=hypotheses))
        try:
            res = estimate_dataset(est, ds, [t for t in targets if t.obj_id == obj_id], split=spec.split,
                                   boxes=spec.boxes, progress=progress)
        finally:
            for stage in (refiner, detector, scorer):
                if stage is not None and hasattr(stage, "close"):
                    stage.close()
        if not res:
            raise InputError(f"object {obj_id}: no estimate at all (no boxes of it with --boxes {spec.boxes})")
        write_results(res_file, res)
        seconds[str(obj_id)] = time.perf_counter() - t_obj
        write_json_atomic(_spec_file(out), {"spec": asdict(spec), "objects": objects, "seconds": seconds})
        all_results += res
        print(f"posekit: object {obj_id}: {len(res)} estimates", file=sys.stderr)
    results = write_results(out / "results.csv", all_results)
    report = evaluate(ds.root, results, split=spec.split, progress=progress, objects=set(objects))
    write_json(report, out / "eval.json")
    plot_curves(report, out / "recall_curves.png", dataset_name=ds.root.name)
    adds_per = report.metrics["add_s"].recall_per_object
    lines = [f"# posekit benchmark: {ds.root.name}", "", f"`{command or spec_command(spec)}`", "",
             f"Over {report.n_targets} targets of objects {', '.join(map(str, objects))} "
             f"({report.n_targets_without_estimate} without an estimate); machine: {machine()}.", "",
             "| object | targets | ADD(-S) 0.1d | AR_MSSD | AR_MSPD | median rot. error (deg) | median transl. error (mm) "
             "| s per target | best / median / worst |", "|---|---|---|---|---|---|---|---|---|"]
    rot_all: list[float] = []
    trans_all: list[float] = []
    for obj_id in objects:
        ests = [e for e in all_results if e.obj_id == obj_id]
        errs = sorted(_errors(ds, ests, obj_id, spec.split), key=lambda x: x[0])
        sheet = ""
        if errs:
            picks = [("best", errs[0]), ("median", errs[len(errs) // 2]), ("worst", errs[-1])]
            sheet = f"![](sheet_obj_{obj_id:06d}.png)"
            _sheet(ds, obj_id, picks, out / f"sheet_obj_{obj_id:06d}.png", spec.split)
        ar = report.ar(obj_id)
        rot, trans = pose_errors(ds, errs, obj_id)
        rot_all += rot
        trans_all += trans
        lines.append(f"| {obj_id} | {report.gt_count.get(obj_id, 0)} | {100 * adds_per[obj_id][-1]:.1f} % | "
                     f"{ar['ar_mssd']:.3f} | {ar['ar_mspd']:.3f} | {_median(rot):.1f} | {_median(trans):.1f} | "
                     f"{seconds_per_target(ests):.3f} | {sheet} |")
    ar = report.ar()
    wall = sum(float(v) for k, v in seconds.items() if int(k) in objects)
    lines += [f"| **all** | {report.n_targets} | **{100 * report.metrics['add_s'].recall[-1]:.1f} %** | "
              f"**{ar['ar_mssd']:.3f}** | **{ar['ar_mspd']:.3f}** | **{_median(rot_all):.1f}** | **{_median(trans_all):.1f}** | "
              f"**{seconds_per_target(all_results):.3f}** | |", "",
              f"Wall time: {wall:.0f} s to prepare and estimate the objects (their coarse stage loaded or built, "
              f"every target estimated; summed over the runs that made them) and {time.perf_counter() - started:.0f} s "
              "for this invocation, evaluation and report included.", "",
              "AR values are fractions (BOP'19: MSSD and MSPD averaged over their thresholds; VSD needs depth). "
              "Rotation error: the least over the object's symmetries; translation error: the distance of the "
              "estimated from the true position (mm), against the nearest instance. s per target: the estimation "
              "time of each image (crop, coarse stage, refinement; not the loading) over its targets. Sheets: the "
              "estimate drawn on the image, cropped around the object; the number is its ADD(-S) error in "
              "diameters.", "", ANCHORS, "", "![recall curves](recall_curves.png)", ""]
    return write_text_atomic(out / "summary.md", "\n".join(lines))
