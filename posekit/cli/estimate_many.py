"""`posekit estimate` over many photos in one process: the part, its templates, the backbone and the refiner's
renderer are opened once and every image goes through the same :class:`~posekit.estimate.pipeline.PoseEstimator`.

Everything that can be checked before the long work is checked first (the images exist, each has a camera, the
outputs can be written, the boxes parse, the CAD loads); an image that then fails (unreadable, its camera does not
fit it, the part not found, an implausible pose) is named on stderr in one line and the others go on. Exit status:
0 when every image gave a pose, 1 when any did not (the rest are written), 2 for bad input found before any work
(nothing written).
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import typer

from posekit.cli._stages import (
    NotFound,
    close_stages,
    failed_message,
    image_record,
    load_part,
    not_found_message,
    objects_option,
    open_stages,
    write_json_atomic,
    write_overlay,
)
from posekit.errors import InputError, PosekitError


class ImagesFailed(PosekitError):
    """Some images of a many-photo run gave no pose (each named on stderr above): exit code 1."""

    exit_code = 1


#: single-image options and what to use instead with several images
ONE_IMAGE_ONLY = {"--json": "--json-dir DIR or --jsonl FILE", "--overlay": "--overlay-dir DIR",
                  "--strip": None, "--init": None, "--mask": None, "--detections-out": None}


def check_out_dir(path: Path, option: str) -> None:
    """InputError unless ``path`` is a folder that can be written into, or can be made (its parent exists and can
    be written into): tried with a temporary file, so a read-only folder is found before any work."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: not a folder ({option} DIR)")
    where = path if path.is_dir() else path.parent
    if where.exists() and not where.is_dir():
        raise InputError(f"{where}: not a folder, so {path} cannot be one ({option})")
    if not where.is_dir():
        raise InputError(f"{where}: output folder does not exist ({option})")
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as exc:
        raise InputError(f"{where}: cannot write there ({option}: {exc.strerror or type(exc).__name__})") from None


def _check_names(paths: list[Path], option: str, suffix: str) -> None:
    """InputError when two images would write the same file name (their stems) into ``option``'s folder."""
    seen: dict[str, Path] = {}
    for p in paths:
        other = seen.setdefault(p.stem, p)
        if other != p:
            raise InputError(f"{other} and {p} would both write {p.stem}{suffix} into {option}: give images of "
                             "distinct names, or use --jsonl FILE")


def _check_cameras(paths: list[Path], camera: Path | None, K: str | None) -> str:
    """Each image's camera is there (--K, --camera, a camera.json beside it or an entry of its scene's
    scene_camera.json), and each camera file used parses, before any work (its fit to an image's size is
    checked when the image is read). Returns the chosen-block's camera line."""
    from posekit.estimate import inputs

    if K is not None and camera is None:
        inputs.camera_from_option(K, 1, 1)
    files: set[Path] = set()
    lacking: list[str] = []
    for p in paths:
        kind, where, source = inputs.camera_source(p, camera, K)
        if kind is None:
            lacking.append(f"{p} ({source})")
        elif kind == "file" and where not in files:
            inputs.camera_from_json(where, 1, 1)  # the form of the file; the size is the image's where it has none
            files.add(where)
        elif kind == "scene":
            inputs.scene_camera_entry(where, p, 1, 1)  # the image's entry is there
    if lacking:
        raise InputError(f"no camera for {len(lacking)} of {len(paths)} images, e.g. {lacking[0]}: give --K "
                         "fx,fy,cx,cy or --camera FILE for all, or a camera.json beside them")
    if K is not None:
        return "--K, for every image"
    if camera is not None:
        return f"{camera}, for every image"
    return "per image: its camera.json beside it, else its scene's scene_camera.json"


class BoxFile:
    """The boxes of one part in a BOP detections JSON, found for each photo by the image id of its name (000123.png:
    image 123; in a BOP folder scene/rgb/ also by the scene id), best first, at most ``top_k`` (None: all) of
    score ``least`` or more."""

    def __init__(self, path: Path, objects: str | None, top_k: int | None, least: float | None) -> None:
        from posekit.estimate.batch import read_detections

        self.path = path
        found = read_detections(path)
        cats = sorted({k[2] for k in found})
        wanted = objects_option(objects)
        if wanted is not None and len(wanted) != 1:
            raise InputError(f"--objects: name one object id, the part's in {path} (got {sorted(wanted)})")
        if wanted is None and len(cats) > 1:
            raise InputError(f"{path}: holds boxes of objects {cats}: name the part's with --objects ID")
        self.obj_id = next(iter(wanted)) if wanted else (cats[0] if cats else 0)
        self.top_k, self.least = top_k, least
        self.by_image: dict[int, dict[int, list]] = {}
        for (scene, im, obj), dets in found.items():
            if obj == self.obj_id:
                self.by_image.setdefault(im, {})[scene] = dets

    def check_names(self, paths: list[Path]) -> None:
        from posekit.estimate.inputs import image_id

        for p in paths:
            if image_id(p) is None:
                raise InputError(f"--boxes {self.path}: {p} has no image id in its name (000123.png is image 123)")

    def describe(self) -> str:
        n = "all" if not self.top_k else f"the best {self.top_k}"
        return f"{self.path}: {n} of object {self.obj_id}'s boxes per image, matched by the image id of its name"

    def boxes(self, image_path: Path) -> list:
        """The image's detections (as the part's, object 1 of image mode); InputError when it has none."""
        from posekit.estimate.inputs import image_id
        from posekit.estimate.pipeline import Detection

        im_id = image_id(image_path)
        scenes = self.by_image.get(im_id, {})
        folder = image_path.parent.parent.name
        if folder.isdigit() and int(folder) in scenes:
            scenes = {int(folder): scenes[int(folder)]}
        if len(scenes) > 1:
            raise InputError(f"{image_path}: {self.path} has boxes of image {im_id} in scenes {sorted(scenes)}; "
                             "put the photos in BOP folders (SCENE/rgb/) or give one scene's boxes")
        dets = [d for d in next(iter(scenes.values()), []) if self.least is None or d.score >= self.least]
        dets = dets[: self.top_k] if self.top_k else dets
        if not dets:
            raise InputError(f"{image_path}: no box of object {self.obj_id} for image {im_id} in {self.path}"
                             + (f" scored {self.least:.2f} or more" if self.least is not None else ""))
        return [Detection(1, d.bbox, d.score) for d in dets]


class _Lines:
    """Where the JSON lines go: a file (written next to it and moved into place when the run ends, so it is never
    half-written) or stdout (as they come)."""

    def __init__(self, fh) -> None:
        self.fh = fh

    def write(self, record: dict) -> None:
        if self.fh is None:
            typer.echo(json.dumps(record))
        else:
            self.fh.write((json.dumps(record) + "\n").encode("utf-8"))


def many_mode(images, cad, units, model, bboxes, camera, K, top_k, refine, refiner_ws, iters, polish, renderer,
              device, score, method, center, detector, det_score, det_top_k, depth_sweep, json_dir, jsonl,
              overlay_dir, boxes, objects, one_image_options: dict, hypotheses: bool | None = None, pool: bool | None = None,
              verifier: str | None = None) -> None:
    """Estimate the part's pose in every image of ``images`` (files and folders) with stages opened once."""
    from posekit.data.jsonio import atomic_write
    from posekit.estimate import inputs
    from posekit.estimate.choose import Choice
    from posekit.estimate.pipeline import describe

    for name, value in one_image_options.items():
        if value is not None:
            instead = ONE_IMAGE_ONLY[name]
            raise InputError(f"{name} is for one image" + (f"; with several use {instead}" if instead else ""))
    if not images:
        raise InputError("give the IMAGES (files or folders) to estimate, or --dataset DIR for dataset mode")
    if cad is None:
        raise InputError("--cad is required: the object's CAD file")
    if json_dir is not None and jsonl is not None:
        raise InputError("give --json-dir DIR (a JSON file per image) or --jsonl FILE (a line per image), not both")
    paths = inputs.image_paths(images)
    for out, option in ((json_dir, "--json-dir"), (overlay_dir, "--overlay-dir")):
        if out is not None:
            check_out_dir(out, option)
            _check_names(paths, option, ".json" if option == "--json-dir" else ".png")
    if jsonl is not None:
        if jsonl.is_dir():
            raise InputError(f"{jsonl}: is a folder; --jsonl takes a file name")
        if not jsonl.parent.is_dir():
            raise InputError(f"{jsonl.parent}: output folder does not exist (--jsonl)")
        check_out_dir(jsonl.parent, "--jsonl")
    for b in bboxes:
        inputs.bbox_numbers(b)
    box_file = None
    if boxes not in (None, "gt-visib"):
        if boxes in ("gt-obj", "detector"):
            raise InputError(f"--boxes {boxes} is for --dataset mode; with images --boxes takes a BOP detections JSON")
        if bboxes:
            raise InputError("give --bbox (the same boxes in every image) or --boxes FILE, not both")
        top = None if det_top_k == 0 else (det_top_k or 1)  # --instances: 1 by default, 0 (all) for all
        box_file = BoxFile(Path(boxes), objects, top, det_score)
        box_file.check_names(paths)
    elif objects is not None:
        raise InputError("--objects picks the part's boxes of a --boxes FILE (or objects in --dataset mode)")
    if (bboxes or box_file is not None) and detector is not None:
        raise InputError("--detector finds the part where no --bbox (or --boxes FILE) is given: give one or the other")
    if (bboxes or box_file is not None) and pool is True:
        raise InputError("--pool finds the part where no --bbox (or --boxes FILE) is given: give one or the other")
    camera_line = _check_cameras(paths, camera, K)
    obj = load_part(cad, units, center)
    first = f"{paths[0]}" + (f" ... {paths[-1]}" if len(paths) > 1 else "")
    choices = [Choice("images", f"{len(paths)}: {first}"), Choice("camera", camera_line)]
    if box_file is not None:
        choices.append(Choice("boxes", box_file.describe()))
    estimator = open_stages(obj, cad, model, method, bool(bboxes) or box_file is not None, None, detector, det_score,
                             det_top_k, top_k, refine, refiner_ws, iters, score, polish, renderer, device,
                             depth_sweep, choices, [], hypotheses=hypotheses, pool=pool,
                             boxes_file=box_file is not None, verifier=verifier)
    run = {**describe(estimator), "command": shlex.join(["posekit", *sys.argv[1:]]), "cad_units": obj.units_note}
    for out in (json_dir, overlay_dir):
        if out is not None:
            out.mkdir(exist_ok=True)

    def estimate_all(fh) -> tuple[int, list[str]]:
        return _run_all(paths, estimator, obj, cad, camera, K, bboxes, box_file, choices, run, json_dir,
                        overlay_dir, _Lines(fh))

    started = time.perf_counter()
    try:
        if jsonl is not None:
            result = []
            atomic_write(jsonl, lambda fh: result.append(estimate_all(fh)))
            written, failed = result[0]
        else:
            written, failed = estimate_all(None)
    finally:
        close_stages(estimator)
    wall = time.perf_counter() - started
    where = str(json_dir or jsonl or "stdout") + (f", overlays to {overlay_dir}" if overlay_dir is not None else "")
    typer.echo(f"posekit: {len(paths) - len(failed)} of {len(paths)} images estimated in {wall:.1f} s "
               f"({len(paths) / max(wall, 1e-9):.2f} images/s); {written} result(s) written to {where}", err=True)
    if failed:
        raise ImagesFailed(f"{len(failed)} of {len(paths)} images gave no pose (each named above), e.g. {failed[0]}")


def _run_all(paths, estimator, obj, cad, camera, K, bboxes, box_file, choices, run, json_dir, overlay_dir,
             lines: _Lines) -> tuple[int, list[str]]:
    """Every image through the estimator, a progress bar on stderr; (results written, failed images' paths)."""
    from tqdm import tqdm

    from posekit.data.types import Observation
    from posekit.estimate import inputs
    from posekit.estimate.choose import Choice
    from posekit.estimate.pipeline import Detection

    written, failed = 0, []
    bar = tqdm(total=len(paths), desc="estimate", unit="image", file=sys.stderr, dynamic_ncols=True)
    try:
        for path in paths:
            start = time.perf_counter()
            try:
                loaded = inputs.read_image(path)
                cam, source = inputs.find_camera(loaded, path, camera, K)
                if cam is None:
                    raise InputError(f"no camera ({source})")
                if bboxes:
                    dets = [Detection(1, inputs.parse_bbox(b, cam)) for b in bboxes]
                else:
                    dets = box_file.boxes(path) if box_file is not None else None
                obs = Observation(image=loaded.rgb, camera=cam, bbox=dets[0].bbox if dets else None)
                found = estimator.run(obs, dets)
                if estimator.detector is not None and not found.detections:
                    raise NotFound(not_found_message(path, obj, estimator))
            except PosekitError as exc:
                message = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
                tqdm.write(f"posekit: skipped: {message}", file=sys.stderr)
                failed.append(str(path))
                bar.update(1)
                continue
            results = found.estimates
            chosen = [Choice("image", loaded.describe()), Choice("camera", source)] + choices[2:]
            record = image_record(path, loaded, cad, cam, chosen, {**run, "wall_s": time.perf_counter() - start},
                             results)
            out = None
            if json_dir is not None:
                out = json_dir / f"{path.stem}.json"
                write_json_atomic(out, record)
            else:
                lines.write(record)
            written += 1
            drawn = [e for e in results if not e.failed]
            if overlay_dir is not None and drawn:
                write_overlay(overlay_dir / f"{path.stem}.png", loaded.rgb, cam, obj, drawn,
                               detections=found.detections if estimator.detector is not None else None)
            bad = [(i, e.failed) for i, e in enumerate(results) if e.failed]
            if bad:
                tqdm.write(f"posekit: failed: {failed_message(path, results, bad, out)}", file=sys.stderr)
                failed.append(str(path))
            bar.update(1)
    finally:
        bar.close()
    return written, failed
