"""`posekit train regress`: train one detector + pose regressor (Deep-6DPose style) for one or more CAD models.

Registered on the `train` sub-app of ``posekit/cli/train.py`` (``register_regress(train_app)``).
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

from posekit.cli._common import (
    CENTER_HELP,
    choose_preset,
    guarded,
    parse_range,
    recent_loss,
    saved_preset,
    store_out,
)


def train_regress_command(
    cad: list[Path] = typer.Option(..., "--cad", help="CAD file of an object (repeat for several objects: one "
                                   "network for all; obj_XXXXXX names give BOP object ids)."),
    out: Path | None = typer.Option(None, "--out", help="Workspace folder (config.json, checkpoints, curves); "
                                    "default: the model store (`posekit models`)."),
    preset: str = typer.Option("auto", "--preset", help="cpu | paper | tiny | auto (paper on CUDA, else cpu); a "
                               "resumed run keeps its own."),
    steps: int | None = typer.Option(None, "--steps", help="Total optimiser steps (default: the preset's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from WORKSPACE/checkpoints/last.pt."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    units: str = typer.Option("auto", "--units", help="CAD units: mm | m | auto."),
    center: bool = typer.Option(False, "--center", help=CENTER_HELP),
    data: list[Path] | None = typer.Option(None, "--data", help="Train on BOP folders with visible masks (e.g. "
                                           "`posekit render` output or real images) instead of rendering on the fly."),
    backgrounds: Path | None = typer.Option(None, "--backgrounds", help="Folder of photos put behind the rendered "
                                            "scenes (e.g. your workcell without the parts)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights and of the rendered images."),
    apparent_size: str | None = typer.Option(None, "--apparent-size", help="MIN,MAX: the parts' diameter as a "
                                             "fraction of the shorter side of the rendered training images "
                                             "(default: the preset's; cpu 0.15,0.5). Make it cover how large the "
                                             "parts look at the size the detector runs at (docs/training.md)."),
) -> None:
    """Train Mask R-CNN (torchvision) on the pretrained EfficientNet-Lite0 FPN with Deep-6DPose's pose branch, on
    domain-randomised renders of the --cad objects. Several GPUs: torchrun --nproc_per_node=N -m posekit train regress."""

    from posekit.cad.load import load_model
    from posekit.errors import InputError
    from posekit.methods.regress.presets import RegressPreset, get_preset
    from posekit.methods.regress.train import train_regress
    from posekit.render.backgrounds import ImageBackgrounds
    from posekit.train.loop import distributed_env, resolve_device

    resolve_device(device)
    sizes = parse_range(apparent_size, "--apparent-size")
    if sizes is not None and not 0 < sizes[0] <= sizes[1] <= 2:
        raise InputError(f"--apparent-size must be MIN,MAX with 0 < MIN <= MAX <= 2, got {apparent_size!r}")
    if backgrounds is not None:
        ImageBackgrounds.from_dir(backgrounds)  # a bad folder fails before any work
    for d in data or []:
        if not d.is_dir():
            raise InputError(f"--data {d}: no such folder")
    if data and sizes is not None:
        raise InputError("--apparent-size sets how large the parts are rendered; --data reads images instead: give "
                         "one or the other")
    models = []
    for path in cad:
        match = re.search(r"obj_0*(\d+)", path.stem)
        models.append(load_model(path, units=units, center=center, obj_id=int(match.group(1)) if match else None))
    out = out or store_out("regress", [m.mesh_hash for m in models])
    saved = saved_preset(out, resume, RegressPreset.from_dict)
    if saved is not None and sizes is not None and tuple(saved.apparent_size) != sizes:
        raise InputError(f"{out} was trained with --apparent-size {','.join(f'{v:g}' for v in saved.apparent_size)}; "
                         "a resumed run draws the images the killed one would have: resume it with that (or none)")
    chosen = choose_preset(preset, device, get_preset, saved, out).with_steps(steps).with_apparent_size(sizes)
    result = train_regress(models, out, chosen, resume=resume, device=device, seed=seed, data=data or None,
                           backgrounds=backgrounds)
    if result.losses and distributed_env()[0] == 0:
        typer.echo(f"trained {chosen.name} regressor for {len(models)} object(s) to step {result.step} "
                   f"(loss {recent_loss(result.losses):.4g}, {result.seconds:.0f} s this run) -> {out}")


def register_regress(train_app: typer.Typer) -> None:
    """Add `regress` to the `train` sub-app."""
    train_app.command("regress")(guarded(train_regress_command))
