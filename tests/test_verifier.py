"""The learned verifier of the template detector's hits (`posekit train verifier`): trained end to end on renders of
the bracket over photos (tiny preset), saved and loaded with the same probabilities, read by the detector as one
more check of its ``combined`` mean, used by `posekit estimate`, and refused in one line where its input is wrong."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import CAM, PART, REPO, posekit_run


def run_in(store, *args) -> subprocess.CompletedProcess:
    """posekit with the model store at ``store``."""
    return subprocess.run([sys.executable, "-m", "posekit", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, POSEKIT_HOME=str(store)))


@pytest.fixture(scope="module")
def store_with_templates(tpl_ws, part, tmp_path_factory):
    """A model store holding the bracket's tiny templates (what `posekit train verifier` opens the detector on)."""
    from posekit.data.store import workspace_path

    root = tmp_path_factory.mktemp("store")
    shutil.copytree(tpl_ws, workspace_path("templates", part.mesh_hash, root))
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two procedural 'photos' without the part."""
    from PIL import Image

    from posekit.render.backgrounds import procedural_background

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for i in range(2):
        Image.fromarray(procedural_background(rng, 320, 240)).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def trained(store_with_templates, photos, tmp_path_factory):
    ws = tmp_path_factory.mktemp("verifier") / "ws"
    r = run_in(store_with_templates, "train", "verifier", "--cad", PART, "--backgrounds", photos, "--out", ws,
               "--preset", "tiny", "--images", 4, "--quiet")
    assert r.returncode == 0, r.stderr
    return ws, r


def test_train_verifier_writes_a_workspace_that_loads_and_resumes(trained, store_with_templates, photos, part):
    from posekit.methods.detect.verifier import load_verifier

    ws, r = trained
    assert "trained tiny verifier for 1 part(s) on 4 scenes" in r.stdout
    cfg = json.loads((ws / "config.json").read_text())
    assert cfg["method"] == "verifier" and cfg["objects"][0]["mesh_hash"] == part.mesh_hash
    stats = cfg["training"]
    assert 0 < stats["right"] < stats["samples"]  # right hits and hard negatives both
    assert len(list((ws / "samples").glob("*.npz"))) == 1 and len(list((ws / "render").rglob("rgb/*"))) == 4
    v = load_verifier(ws)
    rng = np.random.default_rng(0)
    maps = [torch_tensor(rng.normal(size=(3, 112, 8, 8))), torch_tensor(rng.normal(size=(3, 112, 8, 8))),
            torch_tensor(rng.uniform(size=(3, 8, 8)))]
    checks = rng.uniform(size=(3, 6))
    p = v.probability(*maps, checks)
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(load_verifier(ws).probability(*maps, checks), p)  # saved and loaded: the same head
    # a second run finds the renders and the samples done and only fits the head again
    again = run_in(store_with_templates, "train", "verifier", "--cad", PART, "--backgrounds", photos, "--out", ws,
                   "--preset", "tiny", "--images", 4, "--quiet")
    assert again.returncode == 0, again.stderr
    assert json.loads((ws / "config.json").read_text())["training"]["samples"] == stats["samples"]


def torch_tensor(a):
    import torch

    return torch.as_tensor(a, dtype=torch.float32)


def test_the_detector_reads_the_verifier_as_one_more_check(trained, tpl_ws, part):
    from PIL import Image

    from posekit.methods.detect import TemplateDetector
    from posekit.methods.detect.verifier import load_verifier
    from posekit.methods.templates import load_workspace

    ws, _ = trained
    image = np.asarray(Image.open(REPO / "assets" / "bracket_scene.png").convert("RGB"))
    det = TemplateDetector({1: load_workspace(tpl_ws, model=part)}, {1: part}, verifier=load_verifier(ws))
    try:
        hits, _ = det.find(image, CAM, least=0.0)
    finally:
        det.close()
    assert hits
    for h in hits:
        assert 0.0 <= h.scores["verifier"] <= 1.0
        # the bracket has no colours: the rules' two cosines and the verifier, in one mean
        mean = (h.scores["cosine"] + h.scores["rendered"] + h.scores["verifier"]) / 3
        assert h.scores["combined"] == pytest.approx(mean, abs=1e-6)
        assert h.score == pytest.approx(mean, abs=1e-6)


def test_estimate_names_the_verifier_it_uses(trained, store_with_templates, tmp_path):
    ws, _ = trained
    out = tmp_path / "pose.json"
    r = run_in(store_with_templates, "estimate", REPO / "assets" / "bracket_scene.png", "--cad", PART, "--verifier",
               ws, "--refine", "none", "--no-hypotheses", "--json", out)
    assert r.returncode == 0, r.stderr
    assert f"verifier {ws} (--verifier)" in r.stderr and out.is_file()
    r = run_in(store_with_templates, "estimate", REPO / "assets" / "bracket_scene.png", "--cad", PART, "--verifier",
               "none", "--refine", "none", "--no-hypotheses", "--json", out)
    assert r.returncode == 0, r.stderr
    assert "verifier" not in r.stderr


def test_bad_inputs_are_named_together_in_one_line(store_with_templates, trained, tmp_path):
    r = posekit_run("train", "verifier", "--cad", tmp_path / "nope.stl", "--backgrounds", tmp_path / "none",
                    "--out", tmp_path / "ws")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    line = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(line) == 1 and "nope.stl: no such file" in line[0] and "none: no such folder" in line[0]
    assert not (tmp_path / "ws").exists()
    not_verifier = tmp_path / "other"
    not_verifier.mkdir()
    (not_verifier / "config.json").write_text(json.dumps({"method": "templates"}))
    r = run_in(store_with_templates, "estimate", REPO / "assets" / "bracket_scene.png", "--cad", PART, "--verifier",
               not_verifier, "--refine", "none")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "not a verifier workspace" in r.stderr
    # a verifier where no template detector runs (a box is given) would do nothing: refused, not ignored
    r = run_in(store_with_templates, "estimate", REPO / "assets" / "bracket_scene.png", "--cad", PART, "--verifier",
               trained[0], "--bbox", "303,147,173,104", "--refine", "none")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "leave --verifier out" in r.stderr
