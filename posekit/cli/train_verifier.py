"""`posekit train verifier`: a learned verifier of the template detector's hits, for one or more parts.

Registered on the `train` sub-app of ``posekit/cli/train.py`` (``register_verifier(train_app)``). Three steps, each
resumable: scenes of the parts over the user's photos rendered into ``OUT/render`` (``posekit render``'s job), the
template detector's hits on them with their labels into ``OUT/samples`` (per 25 scenes), the head (a minute).
"""

from __future__ import annotations

from pathlib import Path

import typer

from posekit.cli._common import CENTER_HELP, guarded, store_out


def train_verifier_command(
    cad: list[Path] = typer.Option(..., "--cad", help="CAD file of a part (repeat for several: one verifier for "
                                   "all; the other parts are then among each one's hard negatives)."),
    backgrounds: Path = typer.Option(..., "--backgrounds", help="Folder of photos (your workcell without the parts, "
                                     "or any photos): the rendered scenes' backgrounds, and the clutter the "
                                     "verifier learns to reject."),
    out: Path | None = typer.Option(None, "--out", help="Workspace folder (renders, samples, verifier.pt); "
                                    "default: the model store (`posekit models`)."),
    preset: str = typer.Option("cpu", "--preset", help="cpu (300 scenes: about 3 s per scene and part on 2 cores) | "
                               "large (2000 scenes) | tiny (tests)."),
    images: int | None = typer.Option(None, "--images", help="Rendered scenes (default: the preset's)."),
    camera: Path | None = typer.Option(None, "--camera", help="camera.json of your camera (BOP: fx, fy, cx, cy, "
                                       "width, height); default: LINEMOD's field of view at 640x480."),
    units: str = typer.Option("auto", "--units", help="CAD units: mm | m | auto."),
    center: bool = typer.Option(False, "--center", help=CENTER_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the scenes, the jittered boxes and the weights."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Train a verifier of the template detector's hits on renders of the --cad parts over --backgrounds photos.

    `posekit estimate` then uses it wherever the template detector runs (alone or in the pool): its probability is
    one more check in the hits' ranking (docs/estimate.md). A killed run resumes where it stopped: run it again.
    """
    import time

    from posekit.cad.load import load_model
    from posekit.cli._stages import detector_templates
    from posekit.errors import InputError
    from posekit.methods.detect import DetectorConfig, TemplateDetector
    from posekit.methods.detect.verifier import get_preset, train_verifier, with_images
    from posekit.render.backgrounds import ImageBackgrounds
    from posekit.render.dataset import RenderJob, default_camera, load_camera, run_job
    from posekit.render.scenes import RandomizationConfig
    from posekit.train.loop import resolve_device

    # every input checked before the long work, all problems in one message
    problems = [f"--cad {p}: no such file" for p in cad if not p.is_file()]
    if not backgrounds.is_dir():
        problems.append(f"--backgrounds {backgrounds}: no such folder")
    if camera is not None and not camera.is_file():
        problems.append(f"--camera {camera}: no such file")
    if len(set(cad)) != len(cad):
        problems.append("--cad: a file is given twice")
    if problems:
        raise InputError("; ".join(problems))
    chosen = with_images(get_preset(preset), images)
    dev = resolve_device(device)
    bg = ImageBackgrounds.from_dir(backgrounds)
    cam = load_camera(camera) if camera is not None else default_camera((640, 480))
    models = [load_model(p, units=units, center=center, obj_id=i + 1) for i, p in enumerate(cad)]
    out = out or store_out("verifier", [m.mesh_hash for m in models])
    start = time.perf_counter()
    # the template detector of the parts, as `posekit estimate` opens it (templates built now where there are none),
    # ungated and unthinned: every hit it verifies is a sample
    workspaces = {m.obj_id: detector_templates(m, None, str(dev), []) for m in models}
    detector = TemplateDetector(workspaces, {m.obj_id: m for m in models},
                                DetectorConfig(min_score=0.0, box_overlap=1.01, verify_crop=chosen.verify_crop,
                                               verify_map=chosen.verify_map))
    config = RandomizationConfig(views="upper", apparent_size=chosen.apparent_size, objects=chosen.objects,
                                 occluders=chosen.occluders, background="images")
    job = RenderJob(targets=models, camera=cam, count=chosen.images, seed=seed, config=config, backgrounds=bg)
    run_job(job, out / "render", progress=not quiet)
    try:
        _, stats = train_verifier(detector, out / "render", {m.obj_id: m.obj_id for m in models}, out, chosen,
                                  seed=seed, progress=not quiet)
    finally:
        detector.close()
    typer.echo(f"trained {chosen.name} verifier for {len(models)} part(s) on {chosen.images} scenes: "
               f"{stats['samples']} hits ({stats['right']} right), loss {stats['loss']:.3f}, "
               f"{time.perf_counter() - start:.0f} s -> {out}")
    if stats["right"] < 50:
        typer.echo(f"posekit: only {stats['right']} right hits to learn from: render more scenes (--images)", err=True)


def register_verifier(train_app: typer.Typer) -> None:
    """Add `verifier` to the `train` sub-app."""
    train_app.command("verifier")(guarded(train_verifier_command))
