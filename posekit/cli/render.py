"""`posekit render`: synthetic BOP datasets from CAD models (plus `render merge` and `render preview`)."""

from __future__ import annotations

from pathlib import Path

import typer

from posekit.cli._common import CENTER_HELP, guarded, parse_range, parse_size
from posekit.errors import InputError

render_app = typer.Typer(
    help="Render a synthetic BOP dataset (train_synt/) from CAD models, with domain randomisation.",
    invoke_without_command=True,
    no_args_is_help=False,
    add_completion=False,
)


def _load_models(paths: list[Path], units: str, what: str, center: bool = False) -> list:
    from posekit.cad.load import load_model

    models = []
    for i, p in enumerate(paths):
        m = load_model(p, units=units, center=center, obj_id=i + 1 if what == "--cad" else None)
        models.append(m)
    return models


@render_app.callback()
@guarded
def render_command(
    ctx: typer.Context,
    cad: list[Path] = typer.Option(None, "--cad", help="Target CAD file (STL/PLY/OBJ/...); repeat for several "
                                   "objects (obj ids 1..n in order)."),
    out: Path | None = typer.Option(None, "--out", help="Dataset folder to write (or resume)."),
    count: int = typer.Option(1000, "--count", help="Number of images."),
    camera: Path | None = typer.Option(None, "--camera", help="camera.json (BOP: fx, fy, cx, cy, width, height; "
                                       "or cam_K). Default: LINEMOD's field of view."),
    size: str | None = typer.Option(None, "--size", help="Image size WxH (default: the camera's, else 640x480); "
                                    "a camera of another size is scaled."),
    seed: int = typer.Option(0, "--seed", help="Job seed: image i is a pure function of (seed, i)."),
    workers: int = typer.Option(1, "--workers", help="Rendering processes on this machine."),
    shard: str | None = typer.Option(None, "--shard", help="i/n: render only images with index %% n == i "
                                     "(one folder per shard; join with `posekit render merge`)."),
    units: str = typer.Option("auto", "--units", help="CAD units: auto, mm or m."),
    center: bool = typer.Option(False, "--center", help=CENTER_HELP),
    mode: str = typer.Option("random", "--mode", help="random (domain randomisation) or clean (object centred, "
                             "fixed distance, black background, fixed light)."),
    views: str = typer.Option("sphere", "--views", help="Rotations: sphere (uniform over SO(3)) or upper "
                              "(camera in the model's upper hemisphere)."),
    distance: str | None = typer.Option(None, "--distance", help="Camera distance range MIN,MAX in mm "
                                        "(default: from --apparent-size)."),
    apparent_size: str = typer.Option("0.2,0.6", "--apparent-size", help="Object diameter as a fraction of "
                                      "the shorter image side, MIN,MAX (used without --distance)."),
    out_of_frame: float = typer.Option(0.25, "--out-of-frame", help="Up to this fraction of an object's "
                                       "extent may lie outside the image (0 = always fully inside)."),
    objects: str = typer.Option("1,3", "--objects", help="Target instances per image, MIN,MAX."),
    distractors: list[Path] = typer.Option(None, "--distractors", help="Distractor CAD file (not annotated); "
                                           "repeatable."),
    distractors_per_image: str = typer.Option("0,2", "--distractors-per-image", help="MIN,MAX distractor "
                                              "instances per image."),
    primitives: int = typer.Option(2, "--primitives", help="Up to K random primitive shapes per image."),
    occluders: int = typer.Option(1, "--occluders", help="Up to K primitives placed in front of a target."),
    lights: str = typer.Option("1,3", "--lights", help="Point lights per image, MIN,MAX."),
    light_intensity: str = typer.Option("0.5,2.0", "--light-intensity", help="Light intensity range (1.0 = "
                                        "full white on a facing white surface)."),
    light_saturation: float = typer.Option(0.3, "--light-saturation", help="Max light colour saturation "
                                           "(0 = white lights)."),
    ambient: str = typer.Option("0.1,0.5", "--ambient", help="Ambient light range."),
    color_jitter: float = typer.Option(0.15, "--color-jitter", help="Per-instance colour jitter (0 = off)."),
    backgrounds: Path | None = typer.Option(None, "--backgrounds", help="Folder of background images "
                                            "(default: procedural noise, gradients, shapes, textures)."),
    no_background: bool = typer.Option(False, "--no-background", help="Black background."),
    noise: float = typer.Option(4.0, "--noise", help="Max sensor noise std (8-bit levels)."),
    blur: float = typer.Option(1.0, "--blur", help="Max Gaussian blur radius (px)."),
    blur_prob: float = typer.Option(0.3, "--blur-prob", help="Fraction of images blurred."),
    clean_distance: float | None = typer.Option(None, "--clean-distance", help="Distance (mm) of --mode clean "
                                                "(default: 3 diameters)."),
    flush_every: int = typer.Option(50, "--flush-every", help="Rewrite the JSON files every N images."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Write a BOP dataset: train_synt/<scene>/{rgb,depth,mask,mask_visib}, scene_*.json, models/, camera.json.

    Interrupted runs resume with the same command; re-running a finished job does nothing.
    """
    if ctx.invoked_subcommand is not None:
        return
    from posekit.render.backgrounds import ImageBackgrounds
    from posekit.render.dataset import (
        RenderJob,
        check_writable,
        default_camera,
        load_camera,
        parse_shard,
        run_job,
    )
    from posekit.render.scenes import RandomizationConfig

    if not cad:
        raise InputError("posekit render needs at least one --cad FILE (see posekit render --help)")
    if out is None:
        raise InputError("posekit render needs --out DIR")
    if count < 1:
        raise InputError(f"--count must be at least 1 (images to render), got {count}")
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    if units not in ("auto", "mm", "m"):
        raise InputError(f"--units must be auto, mm or m, got {units!r}")
    wh = parse_size(size) if size is not None else None
    cam = load_camera(camera, wh) if camera is not None else default_camera(wh or (640, 480))
    shard_t = parse_shard(shard)
    check_writable(out)  # before the (slow) CAD intake, so a bad --out fails at once
    if backgrounds is not None and no_background:
        raise InputError("--backgrounds and --no-background exclude each other")
    bg = ImageBackgrounds.from_dir(backgrounds) if backgrounds is not None else None
    try:
        config = RandomizationConfig(
            mode=mode, views=views, distance=parse_range(distance, "--distance"),
            apparent_size=parse_range(apparent_size, "--apparent-size"), out_of_frame=out_of_frame,
            objects=parse_range(objects, "--objects", int), distractors=parse_range(distractors_per_image,
                                                                           "--distractors-per-image", int),
            primitives=primitives, occluders=occluders, lights=parse_range(lights, "--lights", int),
            light_intensity=parse_range(light_intensity, "--light-intensity"), light_saturation=light_saturation,
            ambient=parse_range(ambient, "--ambient"), color_jitter=color_jitter,
            background="none" if no_background else ("images" if bg is not None else "procedural"),
            noise=noise, blur=blur, blur_prob=blur_prob, clean_distance=clean_distance,
        )
    except ValueError as exc:
        raise InputError(f"bad randomisation option: {exc}") from None
    targets = _load_models(list(cad), units, "--cad", center)
    extra = _load_models(list(distractors or []), units, "--distractors", center)
    job = RenderJob(targets=targets, camera=cam, count=count, seed=seed, config=config, distractors=extra,
                    backgrounds=bg, shard=shard_t)
    summary = run_job(job, out, workers=workers, flush_every=flush_every, progress=not quiet)
    if summary.rendered == 0 and summary.skipped == summary.total:
        typer.echo(f"{out}: all {summary.total} images already complete; nothing to do")
    else:
        typer.echo(f"{out}: rendered {summary.rendered} images ({summary.images_per_second:.1f} img/s), "
                   f"{summary.skipped} were already complete, {summary.total} in this job")


@render_app.command("merge")
@guarded
def merge_command(
    shards: list[Path] = typer.Argument(..., help="Shard folders of one job (written with --shard i/n)."),
    out: Path = typer.Option(..., "--out", help="Merged dataset folder (may be one of the shards)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Join shard folders into one dataset, byte-identical to an unsharded run."""
    from posekit.render.dataset import completed_indices, merge_shards

    summary = merge_shards(shards, out, progress=not quiet)
    done = len(completed_indices(Path(out)))
    msg = f"{out}: merged {summary.rendered} images from {len(shards)} folders; {done} of {summary.total} complete"
    if done < summary.total:
        msg += " (run the unsharded command on it to render the rest)"
    typer.echo(msg)


@render_app.command("preview")
@guarded
def preview_command(
    dataset: Path = typer.Argument(..., help="BOP dataset folder."),
    out: Path = typer.Option(..., "--out", help="Contact sheet PNG to write."),
    n: int = typer.Option(16, "--n", help="Number of samples."),
    split: str | None = typer.Option(None, "--split", help="Split (default: train_synt, else the first)."),
    cols: int = typer.Option(4, "--cols", help="Thumbnails per row."),
) -> None:
    """A contact sheet of samples with visible-mask outlines and projected 3D bounding boxes."""
    from posekit.viz.sheet import contact_sheet

    if n < 1:
        raise InputError(f"--n must be >= 1, got {n}")
    if out.suffix.lower() != ".png":
        raise InputError(f"{out}: --out must be a .png file")
    path = contact_sheet(dataset, out, n=n, split=split, cols=cols)
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(render_app, name="render")
