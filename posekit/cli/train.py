"""`posekit train`: make a method's workspace (`train templates`, `train aae`, `train aae-codebook`, `train refine`).

`train` is a Typer sub-app: another method adds its own command with ``@train_app.command("<name>")``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from posekit.cli._common import CENTER_HELP, choose_preset, guarded, recent_loss, saved_preset, store_out
from posekit.errors import InputError

train_app = typer.Typer(
    help="Train a pose method's network (aae: one object; refine: one network for several objects) into a workspace folder.",
    no_args_is_help=True,
    add_completion=False,
)


def _preset_for(name: str | None, workspace: Path, resume: bool, device: str, steps: int | None):
    """The preset to train with: the workspace's own when resuming, else --preset ('auto': paper on CUDA, cpu else)."""
    from posekit.methods.aae.presets import AaePreset, get_preset

    saved = saved_preset(workspace, resume, AaePreset.from_dict)
    return choose_preset(name, device, get_preset, saved, workspace).with_steps(steps)


@train_app.command("aae")
@guarded
def train_aae_command(
    cad: Path = typer.Option(..., "--cad", help="The object's CAD file (STL/PLY/OBJ...)."),
    out: Path | None = typer.Option(None, "--out", help="Workspace folder (config, render cache, checkpoints, "
                                    "codebook); default: the model store (`posekit models`)."),
    preset: str = typer.Option("auto", "--preset", help="paper | cpu | tiny | paper-pretrained | "
                               "cpu-pretrained | tiny-pretrained | auto (paper on CUDA, else cpu); a resumed run keeps "
                               "its own."),
    steps: int | None = typer.Option(None, "--steps", help="Total optimiser steps (default: the preset's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from WORKSPACE/checkpoints/last.pt."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    units: str = typer.Option("auto", "--units", help="CAD units: mm | m | auto."),
    center: bool = typer.Option(False, "--center", help=CENTER_HELP),
    backgrounds: Path | None = typer.Option(None, "--backgrounds", help="Folder of background images mixed with "
                                            "the procedural ones."),
    seed: int = typer.Option(0, "--seed", help="Seed of the render cache, weights and augmentation."),
    codebook: bool = typer.Option(True, "--codebook/--no-codebook", help="Build the codebook when training ends."),
) -> None:
    """Train an augmented autoencoder (Sundermeyer et al. 2018) on renders of --cad; ends with its codebook.

    Several GPUs: torchrun --nproc_per_node=N -m posekit train aae ... (see docs/training.md).
    """
    from posekit.cad.load import load_model
    from posekit.methods.aae.train import train_aae
    from posekit.train.loop import distributed_env, resolve_device

    resolve_device(device)  # a bad --device fails before any work
    model = load_model(cad, units=units, center=center)
    out = out or store_out("aae", model.mesh_hash)
    chosen = _preset_for(preset, out, resume, device, steps)
    result = train_aae(model, out, chosen, resume=resume, device=device, seed=seed, backgrounds=backgrounds,
                       make_codebook=codebook)
    tr = result.train
    if tr.losses and distributed_env()[0] == 0:  # under torchrun, rank 0 reports
        typer.echo(f"trained {chosen.name} preset to step {tr.step} (loss {recent_loss(tr.losses):.4g}, "
                   f"{tr.seconds:.0f} s this run) -> {out}")
    if result.codebook:
        typer.echo(f"codebook: {result.codebook}")


@train_app.command("aae-codebook")
@guarded
def aae_codebook_command(
    workspace: Path = typer.Argument(..., help="A workspace written by `posekit train aae`."),
    cad: Path | None = typer.Option(None, "--cad", help="The CAD file (default: the one recorded in the workspace)."),
    views: int | None = typer.Option(None, "--views", help="View-sphere points (default: the preset's)."),
    inplane: int | None = typer.Option(None, "--inplane", help="In-plane angles per view (default: the preset's)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    units: str = typer.Option("auto", "--units", help="CAD units: mm | m | auto."),
    center: bool = typer.Option(False, "--center", help=CENTER_HELP),
) -> None:
    """(Re)build WORKSPACE/codebook.npz from the last checkpoint: codes of clean views x in-plane rotations."""
    from posekit.cad.load import load_model
    from posekit.data.store import read_workspace_config
    from posekit.methods.aae.codebook import rebuild_codebook

    cfg = read_workspace_config(workspace, "aae", "posekit train aae", "AAE")
    if cad is None:
        try:
            recorded = cfg["object"]["cad"]
        except (KeyError, TypeError) as exc:
            raise InputError(f"{workspace / 'config.json'}: unreadable workspace config ({exc})") from None
        if not recorded:
            raise InputError(f"{workspace / 'config.json'}: records no CAD path; pass --cad")
        cad = Path(recorded)
    if (views is not None and views <= 0) or (inplane is not None and inplane <= 0):
        raise InputError("--views and --inplane must be positive")
    model = load_model(cad, units=units, center=center)
    path = rebuild_codebook(workspace, model, device=device, n_views=views, n_inplane=inplane)
    typer.echo(f"codebook: {path}")


@train_app.command("templates")
@guarded
def train_templates_command(
    cad: Path = typer.Option(..., "--cad", help="The object's CAD file (STL/PLY/OBJ...)."),
    out: Path | None = typer.Option(None, "--out", help="Workspace folder (config.json, templates.npz); "
                                    "default: the model store (`posekit models`)."),
    preset: str = typer.Option("default", "--preset", help="default (full sphere, 4,320 templates) | upper "
                               "(upper hemisphere, 2,160) | tiny (tests)."),
    views: int | None = typer.Option(None, "--views", help="View points on the sphere (default: the preset's)."),
    inplane: int | None = typer.Option(None, "--inplane", help="In-plane turns per view point (default: the preset's)."),
    hemisphere: str | None = typer.Option(None, "--hemisphere", help="full, or upper for parts that always stand "
                                          "on a table and are seen from above (model +z up)."),
    size: int | None = typer.Option(None, "--size", help="Crop side in pixels the backbone sees (multiple of 8)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    units: str = typer.Option("auto", "--units", help="CAD units: mm | m | auto."),
    center: bool = typer.Option(False, "--center", help=CENTER_HELP),
) -> None:
    """Build templates of --cad on the pretrained ImageNet backbone: a coarse stage with no training (about a
    minute on 2 CPU cores)."""
    from posekit.cad.load import load_model
    from posekit.methods.templates import build_workspace, get_preset
    from posekit.methods.templates.workspace import check_output
    from posekit.train.loop import resolve_device

    resolve_device(device)  # a bad --device fails before any work
    chosen = get_preset(preset).with_options(views, inplane, hemisphere, size)
    model = load_model(cad, units=units, center=center)
    out = out or store_out("templates", model.mesh_hash)
    check_output(out, model)
    path, seconds = build_workspace(model, out, chosen, device=device)
    n = chosen.views * chosen.inplane
    typer.echo(f"built {n} templates ({chosen.views} views x {chosen.inplane} in-plane, {chosen.hemisphere} "
               f"sphere, {chosen.image_size} px) in {seconds:.0f} s -> {path}")


def register(app: typer.Typer) -> None:
    from posekit.cli.train_refine import register_refine
    from posekit.cli.train_regress import register_regress
    from posekit.cli.train_verifier import register_verifier

    register_refine(train_app)
    register_regress(train_app)
    register_verifier(train_app)
    app.add_typer(train_app, name="train")
