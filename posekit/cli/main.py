"""The `posekit` command: one Typer app with a sub-command per verb.

Each verb lives in its own module (posekit/cli/<verb>.py) and registers itself
here. Only verbs that work are registered, so `posekit --help` never lists a stub.
"""

from __future__ import annotations

import typer

from posekit import __version__
from posekit.cli._common import run_guarded

app = typer.Typer(
    name="posekit",
    help="6D object pose from one RGB image and the object's CAD model (BOP conventions: R, t model-to-camera, mm).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"posekit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """posekit: render, train, estimate, refine and evaluate 6D poses."""


def _register() -> None:
    from posekit.cli import doctor

    doctor.register(app)
    # Verbs added by later modules register themselves here, one import each.
    for name in ("inspect", "eval", "render", "train", "estimate", "models", "benchmark"):
        try:
            module = __import__(f"posekit.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name == f"posekit.cli.{name}":
                continue
            raise
        module.register(app)


_register()


def main() -> None:  # pragma: no cover - the `posekit` command and `python -m posekit`
    run_guarded(app)
