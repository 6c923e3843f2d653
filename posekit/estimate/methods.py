"""Opening the coarse stage's workspaces by method: what the CLI and the batch runs call."""

from __future__ import annotations

from pathlib import Path

from posekit.cad.model import ObjectModel
from posekit.errors import InputError

COARSE_METHODS = ("templates", "aae", "regress")


def workspace_method(path: str | Path) -> str | None:
    """The method a workspace folder records in its config.json (None where there is none)."""
    from posekit.data.store import workspace_config

    cfg = workspace_config(path)
    method = cfg.get("method") if cfg else None
    return str(method) if method else None


def load_coarse(path: str | Path, method: str = "auto", device: str = "auto", model: ObjectModel | None = None):
    """The coarse-stage workspace at ``path``: ``method`` 'auto' takes what the workspace records."""
    path = Path(path)
    found = workspace_method(path)
    if found is None:
        raise InputError(f"{path}: not a workspace (no config.json; make one with `posekit train templates`, "
                         f"`posekit train aae` or `posekit train regress`)")
    if method != "auto" and method != found:
        raise InputError(f"{path}: a {found} workspace, but --method {method} was asked for")
    if found == "templates":
        from posekit.methods.templates import load_workspace

        return load_workspace(path, device=device, model=model)
    if found == "aae":
        from posekit.methods.aae.codebook import load_workspace

        return load_workspace(path, device=device, model=model)
    if found == "regress":
        from posekit.methods.regress import load_workspace

        ws = load_workspace(path, device=device)
        if model is None:
            raise InputError(f"{path}: a regressor workspace serves one part at a time here; give the part's model")
        return ws.for_model(model)
    raise InputError(f"{path}: a {found} workspace has no coarse stage (use one of {', '.join(COARSE_METHODS)})")


def wants_hypotheses(found_boxes: bool, behind_regressor: bool) -> bool:
    """The hypotheses stage's default, one rule for `posekit estimate` (one image, many images, a dataset) and
    `posekit benchmark`: on for found boxes (a detector's, a detections file), whose size is not to be trusted
    (docs/benchmarks.md: behind the pool on lmo-dev, ADD(-S) 16.1 -> 21.5 %); off for boxes given with --bbox or
    ground-truth ones, and behind the regressor, whose poses are the detector's own."""
    return bool(found_boxes) and not behind_regressor


def hypotheses_scorer(wanted: bool, refiner, models, device: str = "auto", renderer: str = "auto"):
    """The hypotheses stage's scorer when one is wanted and the refiner is not the feature search (which scores
    them itself): a feature search of its own, used only to score. None otherwise."""
    if not wanted or hasattr(refiner, "score_poses"):
        return None
    from posekit.methods.featurefit import FeatureRefiner

    return FeatureRefiner(models, device=device, renderer=renderer)
