"""`posekit eval`: score a BOP results CSV against a BOP dataset (LINEMOD and BOP 2019 metrics)."""

from __future__ import annotations

from pathlib import Path

import typer

from posekit.cli._common import guarded


@guarded
def eval_command(
    dataset: Path = typer.Option(..., "--dataset", help="BOP dataset folder (camera.json, models/, <split>/)."),
    results: Path = typer.Option(..., "--results", help="BOP results CSV: scene_id,im_id,obj_id,score,R,t,time."),
    split: str = typer.Option("test", "--split", help="Split folder holding the scenes."),
    targets: Path | None = typer.Option(
        None, "--targets", help="Targets JSON (default: <dataset>/test_targets_bop19.json, else derived from the GT)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for eval.json and recall_curves.png (default: JSON next to the results file)."
    ),
    skip_bad_rows: bool = typer.Option(
        False, "--skip-bad-rows", help="Skip malformed result rows (counted and reported) instead of stopping."
    ),
    no_vsd: bool = typer.Option(False, "--no-vsd", help="Do not compute VSD even where depth images exist."),
    adds_all: bool = typer.Option(
        False, "--adds-all", help="Also compute ADD-S for objects without symmetries (an extra ADD-S summary; slower)."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    objects: str | None = typer.Option(None, "--objects", help="Only the targets of these object ids "
                                       "(comma-separated); means are over these objects."),
) -> None:
    """Per-object recall table (ADD(-S), Proj2D, 5cm 5deg, BOP'19 AR_MSSD/AR_MSPD/AR_VSD), a JSON report and plots."""
    from posekit.errors import InputError
    from posekit.eval.recall import evaluate
    from posekit.eval.report import format_table, plot_curves, write_json

    # outputs are checked before the work, not after it
    if out is not None:
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out}: exists and is not a folder (eval writes eval.json and recall_curves.png "
                             "into it)")
        if not out.parent.is_dir():
            raise InputError(f"--out {out}: its parent folder {out.parent} does not exist")
    elif not Path(results).parent.is_dir():
        raise InputError(f"{results}: no such folder")
    wanted = None
    if objects:
        try:
            wanted = {int(v) for v in objects.split(",")}
        except ValueError:
            raise InputError(f"--objects must be comma-separated object ids, got {objects!r}") from None
    report = evaluate(dataset, results, split=split, targets_path=targets, skip_bad_rows=skip_bad_rows,
                      vsd="off" if no_vsd else "auto", adds_all=adds_all, progress=not quiet, objects=wanted)
    name = Path(dataset).resolve().name
    typer.echo(format_table(report, dataset_name=name))
    if out is not None:
        json_path = write_json(report, Path(out) / "eval.json")
        png_path = plot_curves(report, Path(out) / "recall_curves.png", dataset_name=name)
        typer.echo(f"\nwrote {json_path} and {png_path}")
    else:
        json_path = write_json(report, Path(results).with_suffix(".eval.json"))
        typer.echo(f"\nwrote {json_path}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
