"""`posekit train refine`: train one DeepIM-style refiner for one or more CAD models into a workspace.

Registered on the `train` sub-app of ``posekit/cli/train.py`` (``register_refine(train_app)``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from posekit.cli._common import CENTER_HELP, choose_preset, guarded, recent_loss, saved_preset, store_out


def _preset(name: str, out: Path, resume: bool, device: str):
    """--preset, 'auto' = paper on CUDA else cpu; a resumed workspace keeps its own preset."""
    from posekit.methods.refine.presets import RefinePreset, get_preset
    from posekit.methods.refine.train import CONFIG_NAME, read_config

    def read(ws: Path) -> dict | None:  # a refiner's workspace, or one line saying what it is
        return read_config(ws) if (ws / CONFIG_NAME).is_file() else None

    return choose_preset(name, device, get_preset, saved_preset(out, resume, RefinePreset.from_json, read), out)


def train_refine_command(
    cad: list[Path] = typer.Option(..., "--cad", help="CAD file of an object (repeat for several objects: one "
                                   "network for all)."),
    out: Path | None = typer.Option(None, "--out", help="Workspace folder (config.json, checkpoints, curves); "
                                    "default: the model store (`posekit models`)."),
    preset: str = typer.Option("auto", "--preset", help="cpu | cpu-hr | cpu-pretrained | cpu-pretrained-corr | paper | "
                               "paper-pretrained | tiny | tiny-pretrained | auto (paper on CUDA, else cpu); "
                               "a resumed run keeps its own."),
    steps: int | None = typer.Option(None, "--steps", help="Total optimiser steps (default: the preset's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from WORKSPACE/checkpoints/last.pt."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    units: str = typer.Option("auto", "--units", help="CAD units: mm | m | auto."),
    center: bool = typer.Option(False, "--center", help=CENTER_HELP),
    data: Path | None = typer.Option(None, "--data", help="Train on a BOP dataset with masks (e.g. `posekit render` "
                                     "output) instead of patches rendered on the fly; needs obj_XXXXXX CAD names."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights and the training stream."),
    pool: int | None = typer.Option(None, "--pool", min=1, help="Render this many observed patches once and reuse "
                                    "them (fresh initial poses each time): about 2x faster on CPU, less variety."),
    init_from: Path | None = typer.Option(None, "--init-from", help="Start from the weights of another refiner "
                                          "workspace (same network shape; fresh optimiser and schedule): fine-tuning."),
    backgrounds: Path | None = typer.Option(None, "--backgrounds", help="Folder of photos (e.g. your workcell "
                                            "without the objects): half of the observed backgrounds are random "
                                            "crops of them, the rest procedural. A resumed run keeps its folder."),
) -> None:
    """Train a DeepIM-style refiner (Li et al. 2018) on domain-randomised renders of the --cad objects.

    Several GPUs: torchrun --nproc_per_node=N -m posekit train refine ...
    """
    import re

    from posekit.cad.load import load_model
    from posekit.methods.refine.train import train_refiner
    from posekit.train.loop import distributed_env, resolve_device

    resolve_device(device)
    models = []
    for path in cad:
        match = re.search(r"obj_0*(\d+)", path.stem)
        models.append(load_model(path, units=units, center=center, obj_id=int(match.group(1)) if match else None))
    out = out or store_out("refine", [m.mesh_hash for m in models])
    chosen = _preset(preset, out, resume, device)
    result = train_refiner(models, out, chosen, steps=steps, resume=resume, device=device, data=data, seed=seed,
                           pool=pool, init_from=init_from, backgrounds=backgrounds)
    tr = result.train
    if tr.losses and distributed_env()[0] == 0:  # under torchrun, rank 0 reports
        typer.echo(f"trained {chosen.name} refiner for {len(models)} object(s) to step {tr.step} "
                   f"(loss {recent_loss(tr.losses):.4g}, {tr.seconds:.0f} s this run) -> {out}")


def register_refine(train_app: typer.Typer) -> None:
    """Add `refine` to the `train` sub-app."""
    train_app.command("refine")(guarded(train_refine_command))
