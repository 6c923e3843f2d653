"""The model store and `posekit estimate IMAGE --cad PART` with what it finds: camera beside the image, models by
mesh hash, one message for everything missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import CAM, PART, rendered_scenes
from PIL import Image


def _run(home, *args, cwd=None):
    env = dict(os.environ, POSEKIT_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "posekit", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A fresh store holding the bracket's tiny templates, made by `train templates` without --out."""
    home = tmp_path_factory.mktemp("store")
    r = _run(home, "train", "templates", "--cad", PART, "--preset", "tiny")
    assert r.returncode == 0, r.stderr
    return home


def _scene(part, folder, seed=8):
    img, box, R, t = rendered_scenes(part, 1, seed=seed)[0]
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / "000042.png"
    Image.fromarray(img).save(image)
    return image, box, R, t


def test_estimate_with_the_camera_beside_the_image_and_templates_from_the_store(part, home, tmp_path):
    from posekit.geometry.rotations import geodesic_distance

    image, box, R, t = _scene(part, tmp_path / "shots")
    K = CAM.K
    (image.parent / "camera.json").write_text(json.dumps({"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2],
                                                          "width": 640, "height": 480}))
    out = tmp_path / "pose.json"
    r = _run(home, "estimate", image, "--cad", PART, "--bbox", ",".join(str(int(v)) for v in box), "--json", out)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert "beside the image" in data["chosen"]["camera"] and "model store" in data["chosen"]["coarse"]
    # no trained refiner stored: --refine auto runs the feature search with its depth sweep (the measured best)
    assert data["chosen"]["refine"].startswith("features + depth sweep") and "--refine auto" in data["chosen"]["refine"]
    assert data["run"]["refine"]["kind"] == "features" and data["run"]["refine"]["depth_sweep"] is True
    assert "posekit: camera" in r.stderr and "posekit: coarse" in r.stderr  # the block of choices
    pose = data["poses"][0]
    # the store's tiny templates (1,440, 64 px): measured 9 deg and 1 % depth on this image
    assert np.degrees(geodesic_distance(np.asarray(pose["R"]), R)) < 25.0
    assert abs(pose["t"][2] - t[2]) / t[2] < 0.06


def test_bop_scene_camera_is_found_by_image_id_and_a_foreign_camera_is_refused(part, home, tmp_path):
    scene = tmp_path / "000002"
    image, box, R, t = _scene(part, scene / "rgb")
    K = CAM.K.reshape(-1).tolist()
    (scene / "scene_camera.json").write_text(json.dumps({"41": {"cam_K": [1] * 9}, "42": {"cam_K": K}}))
    out = tmp_path / "pose.json"
    bbox = ",".join(str(int(v)) for v in box)
    r = _run(home, "estimate", image, "--cad", PART, "--bbox", bbox, "--json", out)
    assert r.returncode == 0, r.stderr
    assert "scene_camera.json (image 42)" in json.loads(out.read_text())["chosen"]["camera"]
    out.unlink()
    # a principal point outside the image: not this image's camera (was accepted, giving a pose)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((240, 320, 3), np.uint8)).save(small)
    r = _run(home, "estimate", small, "--cad", PART, "--bbox", "10,10,50,50", "--K", "572.4,573.6,325.3,242.0",
             "--json", out)
    assert r.returncode == 2 and "principal point" in r.stderr and r.stderr.count("\n") == 1
    assert not out.exists()


def test_everything_missing_is_named_in_one_message(home, tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(image)
    out = tmp_path / "pose.json"
    r = _run(home, "estimate", image, "--cad", PART, "--refine", "deepim", "--json", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    # no box is missing any more: without --bbox the part's templates find it
    assert "2 thing(s) missing" in r.stderr
    for needle in ("camera", "posekit train refine --cad"):
        assert needle in r.stderr, r.stderr
    assert not out.exists()


def test_models_lists_and_removes_by_part(home, tmp_path):
    import shutil

    h = tmp_path / "home"
    shutil.copytree(home, h)
    r = _run(h, "models", "--cad", PART)
    assert r.returncode == 0 and "templates" in r.stdout and "bracket" in r.stdout and "MB" in r.stdout
    r = _run(h, "models", "rm")
    assert r.returncode == 2 and "--cad" in r.stderr
    r = _run(h, "models", "rm", "--cad", PART)
    assert r.returncode == 0 and "removed templates" in r.stdout
    assert "no models stored" in _run(h, "models").stdout


def test_templates_are_built_into_the_store_on_first_use(part, tmp_path, monkeypatch):
    from posekit.data import store
    from posekit.estimate.choose import build_store_templates, find_coarse

    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path))
    assert find_coarse(part, None, "auto") == (None, None)
    path, choice = build_store_templates(part, device="cpu", preset="tiny")
    assert path == store.workspace_path("templates", part.mesh_hash) and "built now" in choice.what
    found, choice = find_coarse(part, None, "auto")
    assert found == path and "model store" in choice.what
