"""Choosing what an estimate runs with when the user names only an image and a CAD file.

Each stage is taken from what the user gave, else from the model store (:mod:`posekit.data.store`,
keyed by the part's mesh hash), else made (templates: no training, about half a minute). What was
chosen is recorded as :class:`Choice` lines (printed in one block and written into the JSON); what
cannot be found is returned as :class:`Missing` pieces, each with the command that makes it, so the
caller can name all of them in one message before any long work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from posekit.cad.model import ObjectModel


@dataclass(frozen=True)
class Choice:
    stage: str
    what: str


@dataclass(frozen=True)
class Missing:
    what: str
    how: str


def missing_message(missing: list[Missing]) -> str:
    """One message naming every missing piece and the command that makes each."""
    if len(missing) == 1:
        return f"cannot estimate yet: missing {missing[0].what}: {missing[0].how}"
    lines = [f"cannot estimate yet: {len(missing)} thing(s) missing"]
    lines += [f"  - {m.what}: {m.how}" for m in missing]
    return "\n".join(lines)


def find_coarse(obj: ObjectModel, model: Path | None, method: str) -> tuple[Path | None, Choice | None]:
    """The coarse-stage workspace to load: --model, else the store's (templates first, then the AAE); (None, None)
    when the store has none (templates can then be built, see :func:`build_store_templates`)."""
    from posekit.data import store

    if model is not None:
        return model, Choice("coarse", f"{method if method != 'auto' else 'workspace'} {model} (--model)")
    order = ["templates", "aae"] if method == "auto" else [method]  # regress: only when asked for
    for name in order:
        entry = store.find(obj.mesh_hash, name)
        if entry is not None:
            return entry.path, Choice("coarse", f"{name} ({entry.preset}) from the model store: {entry.path}")
    return None, None


def find_detector(models: list[ObjectModel], detector: Path | None) -> tuple[Path | None, Choice | None]:
    """The detector workspace: --detector, else a stored regressor that covers every part; (None, None) if none."""
    from posekit.data import store

    if detector is not None:
        return detector, Choice("detect", f"regressor {detector} (--detector)")
    found = [e for e in store.entries(method="regress") if all(e.covers(m.mesh_hash) for m in models)]
    if found:
        e = found[0]
        return e.path, Choice("detect", f"regressor ({e.preset}) from the model store: {e.path}")
    return None, None


def find_verifier(obj: ObjectModel, verifier: str | None) -> tuple[Path | None, Choice | None]:
    """The template detector's learned verifier: ``verifier`` (a workspace folder, or "none"), else the model
    store's newest that was trained on this part; (None, None) where there is none."""
    from posekit.data import store

    if verifier is not None:
        if verifier.lower() == "none":
            return None, None
        return Path(verifier), Choice("detect", f"verifier {verifier} (--verifier): one more check of the hits")
    e = store.find(obj.mesh_hash, "verifier")
    if e is None:
        return None, None
    return e.path, Choice("detect", f"verifier ({e.preset}) from the model store: {e.path}: one more check of the "
                          "hits (--verifier none: the rules alone)")


def build_store_templates(obj: ObjectModel, device: str = "auto", preset: str = "default") -> tuple[Path, Choice]:
    """Build the part's templates into the model store now (progress bar on stderr)."""
    from posekit.data import store
    from posekit.methods.templates import build_workspace, get_preset

    out = store.workspace_path("templates", obj.mesh_hash)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    path, _ = build_workspace(obj, out, get_preset(preset), device=device)
    return path, Choice("coarse", f"templates ({preset}) built now in {time.perf_counter() - start:.0f} s and kept "
                        f"in the model store: {path}")


#: the refine choice line of the feature search
FEATURES_SEARCH = "features: search on the pretrained backbone's maps (no training)"


def auto_depth_sweep(refine: str, kind: str | None, iters: int, score: str | None) -> bool:
    """Whether --refine ``refine`` resolved to ``kind`` runs the feature search's depth sweep without --depth-sweep:
    --refine auto on the feature search (the measured best: templates + search + sweep 42.3 % ADD(-S) on lmo-dev
    against 34.7 % for the templates alone and 33.9 % without the sweep), unless --iters 0 (no search to end) or
    --score features (which would keep an iterate before the sweep)."""
    return refine == "auto" and kind == "features" and iters >= 1 and score is None


def with_depth_sweep(choice: Choice) -> Choice:
    """The refine choice's line naming the feature search's depth sweep."""
    return Choice(choice.stage, choice.what.replace("features", "features + depth sweep (9 depths in +-8 %)", 1))


def find_refiner(models: list[ObjectModel], refine: str,
                 refiner_ws: Path | None) -> tuple[str | None, Path | None, Choice, Missing | None]:
    """(kind, workspace, choice, missing): ``features`` needs nothing; ``deepim`` / ``auto`` take --refiner, else a
    stored refiner covering every part; where none is stored ``deepim`` reports it missing and ``auto`` takes the
    feature search, the refinement measured best on real photos (the caller adds its depth sweep:
    :func:`auto_depth_sweep`)."""
    from posekit.data import store

    if refine == "none":
        return None, None, Choice("refine", "none (--refine none)"), None
    if refine == "features":
        return "features", None, Choice("refine", FEATURES_SEARCH), None
    if refiner_ws is not None:
        return "deepim", refiner_ws, Choice("refine", f"deepim {refiner_ws} (--refiner)"), None
    found = [e for e in store.entries(method="refine") if all(e.covers(m.mesh_hash) for m in models)]
    if found:
        e = found[0]
        return "deepim", e.path, Choice("refine", f"deepim ({e.preset}, {e.steps} steps) from the model store: "
                                        f"{e.path}"), None
    names = " ".join(f"--cad {m.source or m.name}" for m in models)
    if refine == "deepim":
        return None, None, Choice("refine", "deepim"), Missing(
            "a refiner for this part", f"`posekit train refine {names}` (or --refiner WORKSPACE)")
    return "features", None, Choice("refine", f"{FEATURES_SEARCH} (--refine auto: no trained refiner in the model store "
                                     "covers this part; the best refinement measured on real photos, docs/estimate.md)"), None


