"""Shared fixtures: where the real LINEMOD data lives (skip with a reason where it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """../shared/data next to the repo, or $POSEKIT_DATA."""
    env = os.environ.get("POSEKIT_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def lmo_dev() -> Path:
    root = data_root() / "lmo-dev"
    if not (root / "models" / "models_info.json").is_file():
        pytest.skip(f"real LM-O data not found at {root} (set POSEKIT_DATA to the folder holding lmo-dev/)")
    return root


@pytest.fixture(scope="session")
def lm_cat() -> Path:
    root = data_root() / "lm-cat"
    if not root.is_dir():
        pytest.skip(f"real LINEMOD cat frames not found at {root} (set POSEKIT_DATA)")
    return root


@pytest.fixture(scope="session")
def assets() -> Path:
    return REPO / "assets"


@pytest.fixture(scope="session")
def part():
    """The bundled demo part (assets/bracket.stl) as an ObjectModel."""
    from posekit.cad.load import load_model

    return load_model(REPO / "assets" / "bracket.stl")


@pytest.fixture(scope="session")
def tiny_ws(part, tmp_path_factory):
    """A tiny AAE trained on the assets part (tiny preset, about a minute on 2 cores), shared by the suite.

    Its augmentation is what the test images need (random backgrounds, colour jitter, a little box
    jitter and noise); occluders, relighting and blur are left to the full presets.
    """
    from posekit.data.augment import AugmentConfig
    from posekit.methods.aae import PRESETS, train_aae

    ws = tmp_path_factory.mktemp("aae") / "ws"
    aug = AugmentConfig(occlude_p=0.0, relight_p=0.0, scale=(0.95, 1.05), shift=0.02, blur_p=0.0, noise_p=0.2)
    result = train_aae(part, ws, PRESETS["tiny"], device="cpu", progress=False, augment=aug)
    return ws, result


@pytest.fixture(scope="session")
def tpl_ws(tmp_path_factory):
    """Templates of the bracket, built through the CLI (tiny preset: 120 views x 12 turns, 64 px), shared by the
    templates' and the detector's tests."""
    from helpers import PART, posekit_run

    ws = tmp_path_factory.mktemp("templates") / "ws"
    r = posekit_run("train", "templates", "--cad", PART, "--out", ws, "--preset", "tiny", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "built 1440 templates" in r.stdout
    return ws
