"""`posekit inspect`: load a CAD file (or a BOP models folder) and report what posekit makes of it."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import typer

from posekit.cli._common import guarded
from posekit.errors import InputError

_OBJ_NAME = re.compile(r"^obj_(\d+)$")


def _warn_to_stderr(caught: list[warnings.WarningMessage]) -> None:
    from posekit.cad.load import UnitsWarning

    for w in caught:
        if issubclass(w.category, UnitsWarning):
            typer.echo(f"posekit: warning: {w.message}", err=True)


def _load(path: Path, units: str, center: bool, symmetry: bool):
    """Load a model (symmetries detected separately so their scores can be reported)."""
    from posekit.cad.load import load_model
    from posekit.cad.symmetry import detect_symmetries

    m = _OBJ_NAME.match(path.stem)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(path, units=units, center=center, obj_id=int(m.group(1)) if m else None,
                           symmetries="none")
    _warn_to_stderr(caught)
    result = None
    if symmetry:
        result = detect_symmetries(model.vertices, model.faces, model.diameter)
        model.symmetries_discrete = result.discrete
        model.symmetries_continuous = result.continuous
    return model, result


def _write_json_atomic(data: dict, out: Path) -> None:
    """Write JSON via a temp file in the same folder and os.replace (nothing half-written)."""
    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(f"{out}: folder {out.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key(model) -> str:
    return str(model.obj_id) if model.obj_id is not None else model.name


def _report(model, result, seconds: float) -> None:
    """Human-readable report on stdout."""
    v = model.vertices
    lo, hi = v.min(axis=0), v.max(axis=0)
    centre = 0.5 * (lo + hi)
    echo = typer.echo
    echo(f"model:       {model.source}")
    echo(f"units:       {model.units_note}")
    echo(f"size:        {len(v)} vertices, {len(model.faces)} faces")
    echo(f"bbox (mm):   min {np.round(lo, 3).tolist()}  max {np.round(hi, 3).tolist()}  "
         f"size {np.round(hi - lo, 3).tolist()}")
    if model.center_shift is not None:
        echo(f"centre:      re-centred (--center): bbox centre moved by {np.round(model.center_shift, 3).tolist()} mm "
             "to the origin")
    else:
        echo(f"centre:      bbox centre is {np.linalg.norm(centre):.3f} mm from the origin "
             f"at {np.round(centre, 3).tolist()} (--center moves it to the origin)")
    echo(f"diameter:    {model.diameter:.3f} mm")
    echo(f"watertight:  {'yes' if model.to_trimesh().is_watertight else 'no'}")
    if model.vertex_colors is not None:
        appearance = "vertex colours"
    elif model.texture_image is not None:
        h, w = model.texture_image.shape[:2]
        appearance = f"UV texture {w}x{h}"
    else:
        appearance = "none (a plain material is used)"
    echo(f"colours:     {appearance}")
    echo(f"mesh hash:   {model.mesh_hash}")
    if result is None:
        echo("symmetries:  not detected (--no-symmetry)")
    else:
        if not model.is_symmetric:
            rejected = result.best_asymmetric_margin()
            echo(f"symmetries:  none (closest candidate scores {rejected:.4f} of the diameter, "
                 f"threshold {result.threshold})")
        for T in model.symmetries_discrete:
            from scipy.spatial.transform import Rotation

            rv = Rotation.from_matrix(T[:3, :3]).as_rotvec()
            ang = np.rad2deg(np.linalg.norm(rv))
            echo(f"symmetry:    discrete {ang:.1f} deg about {np.round(rv / np.linalg.norm(rv), 3).tolist()}, "
                 f"t = {np.round(T[:3, 3], 2).tolist()} mm")
        for s in model.symmetries_continuous:
            echo(f"symmetry:    continuous about {np.round(s['axis'], 3).tolist()} through "
                 f"{np.round(s['offset'], 2).tolist()} mm")
    echo(f"time:        {seconds:.2f} s")


def inspect(
    path: Path | None = typer.Argument(None, help="Mesh file (.stl binary/ASCII, .ply, .obj).", show_default=False),
    units: str = typer.Option("auto", "--units", help="mm | m | auto (auto: a bbox diagonal under 5 units "
                              "is metres and is scaled to mm, with a warning)."),
    center: bool = typer.Option(False, "--center", help="Move the bounding-box centre to the origin."),
    json_out: Path | None = typer.Option(None, "--json", help="Write a models_info.json-form file: "
                                         "{key: entry} (key = BOP id for obj_XXXXXX files, else the "
                                         "file stem); with --bop-models, the whole models_info.json."),
    bop_models: Path | None = typer.Option(None, "--bop-models", help="A BOP models folder: inspect every "
                                           "obj_XXXXXX.ply and write models_info.json (to --json, else "
                                           "DIR/models_info.json, which must not exist unless --force)."),
    force: bool = typer.Option(False, "--force", help="With --bop-models: replace an existing DIR/models_info.json."),
    no_symmetry: bool = typer.Option(False, "--no-symmetry", help="Skip symmetry detection."),
) -> None:
    """Report what posekit makes of a CAD model: units, size, bbox, centre, diameter, watertightness,
    colours, content hash and rotational symmetries (BOP models_info form)."""
    if (path is None) == (bop_models is None):
        raise InputError("give either a mesh PATH or --bop-models DIR")
    if bop_models is not None:
        _inspect_bop(bop_models, units, center, json_out, force, not no_symmetry)
        return
    t0 = time.perf_counter()
    model, result = _load(path, units, center, not no_symmetry)
    _report(model, result, time.perf_counter() - t0)
    if json_out is not None:
        _write_json_atomic({_key(model): model.models_info_entry()}, json_out)
        typer.echo(f"wrote:       {json_out}")


def _inspect_bop(folder: Path, units: str, center: bool, json_out: Path | None, force: bool,
                 symmetry: bool) -> None:
    from tqdm import tqdm

    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    files = sorted(p for p in folder.glob("obj_*.ply") if _OBJ_NAME.match(p.stem))
    if not files:
        raise InputError(f"{folder}: no obj_XXXXXX.ply files (not a BOP models folder)")
    out = json_out if json_out is not None else folder / "models_info.json"
    if json_out is None and out.exists() and not force:
        raise InputError(f"{out}: already exists (pass --force to replace it, or --json OUT)")
    info: dict[str, dict] = {}
    for p in tqdm(files, desc="inspect", unit="model", disable=None):
        model, _ = _load(p, units, center, symmetry)
        info[_key(model)] = model.models_info_entry()
        syms = len(model.symmetries_discrete) + len(model.symmetries_continuous)
        typer.echo(f"{p.name}: {len(model.faces)} faces, diameter {model.diameter:.3f} mm, "
                   f"{syms} symmetr{'y' if syms == 1 else 'ies'}")
    _write_json_atomic(info, out)
    typer.echo(f"wrote {out} ({len(info)} models)")


def register(app: typer.Typer) -> None:
    app.command("inspect")(guarded(inspect))
