"""`posekit benchmark`: a whole BOP dataset (LINEMOD, LM-O, ...) in one command, into a report folder."""

from __future__ import annotations

from pathlib import Path

import typer

from posekit.cli._common import guarded
from posekit.errors import InputError

METHODS = ("templates", "aae", "regress")
REFINES = ("none", "features")
BOXES = ("gt-visib", "gt-obj", "detector")


@guarded
def benchmark_command(
    dataset: Path = typer.Option(..., "--dataset", help="BOP dataset folder (models/, models_info.json, test/)."),
    out: Path = typer.Option(..., "--out", help="Report folder (summary.md, eval.json, curves, sheets, results); "
                             "the same command continues a killed run."),
    objects: str | None = typer.Option(None, "--objects", help="Object ids (comma-separated; default: every target "
                                       "object)."),
    method: str = typer.Option("templates", "--method", help="Coarse stage: templates (built into the model store "
                               "when missing: no training), aae or regress (from the store)."),
    boxes: str = typer.Option("gt-visib", "--boxes", help="gt-visib, gt-obj, or detector (no box given: the "
                              "training-free template detector finds each part; --method templates)."),
    refine: str = typer.Option("none", "--refine", help="none or features."),
    iters: int = typer.Option(4, "--iters", min=1, help="Refinement iterations."),
    depth_sweep: bool = typer.Option(False, "--depth-sweep", help="With --refine features: the search's last depth "
                                     "sweep, as `posekit estimate --depth-sweep`."),
    split: str = typer.Option("test", "--split", help="The split holding the scenes (`posekit render` writes train_synt)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Prepare every object (model store, or templates built now), estimate every target, evaluate, and write a
    report: summary.md with the per-object table and the anchors, recall curves, best / median / worst sheets."""
    from posekit.benchmark import BenchmarkSpec, run_benchmark

    for name, value, allowed in (("--method", method, METHODS), ("--refine", refine, REFINES),
                                 ("--boxes", boxes, BOXES)):
        if value not in allowed:
            raise InputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    if boxes == "detector" and method != "templates":
        raise InputError(f"--boxes detector finds the parts with their templates: use it with --method templates, "
                         f"not {method}")
    if depth_sweep and refine != "features":
        raise InputError(f"--depth-sweep is a stage of --refine features, not of --refine {refine}")
    if not (dataset / "models").is_dir():
        raise InputError(f"--dataset {dataset}: not a BOP dataset (no models/ folder)")
    ids: list[int] = []
    if objects:
        try:
            ids = [int(v) for v in objects.split(",")]
        except ValueError:
            raise InputError(f"--objects must be comma-separated object ids, got {objects!r}") from None
    spec = BenchmarkSpec(dataset=str(dataset.resolve()), objects=ids, method=method, boxes=boxes, refine=refine,
                         iters=iters, split=split, depth_sweep=depth_sweep)
    import shlex
    import sys

    summary = run_benchmark(spec, out, device=device, command=shlex.join(["posekit", *sys.argv[1:]]))
    typer.echo(f"wrote {summary}")


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark_command)
