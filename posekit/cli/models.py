"""`posekit models`: what the model store holds (by part), and removing from it."""

from __future__ import annotations

from pathlib import Path

import typer

from posekit.cli._common import CENTER_HELP, guarded
from posekit.errors import InputError

models_app = typer.Typer(help="The model store: workspaces kept by mesh hash and method (POSEKIT_HOME moves it).",
                         invoke_without_command=True, add_completion=False)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _selected(cad: Path | None, units: str, method: str | None, center: bool = False):
    from posekit.data.store import entries

    mesh_hash = None
    if cad is not None:
        from posekit.cad.load import load_model

        mesh_hash = load_model(cad, units=units, center=center).mesh_hash
    return entries(mesh_hash, method), mesh_hash


@models_app.callback()
@guarded
def list_models(
    ctx: typer.Context,
    cad: Path | None = typer.Option(None, "--cad", help="Only what is stored for this part."),
    method: str | None = typer.Option(None, "--method", help="Only this method (templates, aae, refine)."),
    units: str = typer.Option("auto", "--units", help="CAD units: mm | m | auto."),
    center: bool = typer.Option(False, "--center", help=CENTER_HELP),
) -> None:
    """List the stored workspaces: method, preset, steps, date, size, and the parts each covers."""
    if ctx.invoked_subcommand is not None:
        return
    from posekit.data.store import store_root

    found, mesh_hash = _selected(cad, units, method, center)
    root = store_root()
    if not found:
        what = f" for {cad} (mesh hash {mesh_hash[:16]})" if cad else ""
        typer.echo(f"no models stored{what} in {root}; `posekit train templates --cad PART` makes one")
        return
    typer.echo(f"store: {root}")
    typer.echo(f"{'method':<10} {'preset':<8} {'steps':>6} {'created':<19} {'size':>9}  parts  (folder)")
    for e in found:
        steps = "-" if e.steps is None else str(e.steps)
        typer.echo(f"{e.method:<10} {e.preset:<8} {steps:>6} {e.created:<19} {_mb(e.size_bytes):>9}  "
                   f"{', '.join(e.names)}  ({e.path.relative_to(root)})")


@models_app.command("rm")
@guarded
def remove_models(
    cad: Path | None = typer.Option(None, "--cad", help="Remove what is stored for this part."),
    method: str | None = typer.Option(None, "--method", help="Only this method."),
    units: str = typer.Option("auto", "--units", help="CAD units: mm | m | auto."),
    center: bool = typer.Option(False, "--center", help=CENTER_HELP),
    all_: bool = typer.Option(False, "--all", help="Remove every stored workspace."),
) -> None:
    """Remove stored workspaces of a part (--cad), of a method (--method), or all of them (--all)."""
    from posekit.data.store import remove

    if cad is None and method is None and not all_:
        raise InputError("say what to remove: --cad PART, --method NAME, or --all")
    found, _ = _selected(cad, units, method, center)
    for e in found:
        remove(e)
        typer.echo(f"removed {e.method} ({e.preset}) for {', '.join(e.names)}: {e.path}")
    if not found:
        typer.echo("nothing stored matches")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
