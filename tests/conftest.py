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
