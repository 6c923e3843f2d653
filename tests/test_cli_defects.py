"""Defects a new user hit (the out-of-the-box issue), each pinned by a test: refusals before any work, one-line
warnings, one name per hash, --center wherever a CAD file is read."""

from __future__ import annotations

import json

import numpy as np
import trimesh
from helpers import K_OPT, PART, posekit_run
from PIL import Image


def test_resume_of_a_missing_workspace_is_refused(tmp_path):
    ws = tmp_path / "never_trained"
    r = posekit_run("train", "aae", "--cad", PART, "--out", ws, "--preset", "tiny", "--resume")
    assert r.returncode == 2 and "nothing to resume" in r.stderr and r.stderr.count("\n") == 1
    assert not ws.exists()


def test_resume_of_another_methods_workspace_is_refused_naming_it(tmp_path):
    """`train refine --resume` into a folder whose config.json is not a refiner's: one line naming the file."""
    ws = tmp_path / "aae_ws"
    ws.mkdir()
    (ws / "config.json").write_text(json.dumps({"method": "aae", "preset": {"name": "tiny"}}))
    r = posekit_run("train", "refine", "--cad", PART, "--out", ws, "--preset", "tiny", "--resume")
    assert r.returncode == 2 and "config.json" in r.stderr and "refiner" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and sorted(p.name for p in ws.iterdir()) == ["config.json"]


def test_render_count_0_and_unknown_preset_are_refused_naming_the_choices(tmp_path):
    r = posekit_run("render", "--cad", PART, "--out", tmp_path / "ds", "--count", "0")
    assert r.returncode == 2 and "--count must be at least 1" in r.stderr and not (tmp_path / "ds").exists()
    r = posekit_run("train", "aae", "--cad", PART, "--out", tmp_path / "ws", "--preset", "huge")
    assert r.returncode == 2 and "must be auto or one of" in r.stderr and "cpu" in r.stderr


def test_warnings_are_one_posekit_line_without_source(tmp_path):
    metres = tmp_path / "part_in_metres.stl"
    trimesh.creation.box((0.1, 0.05, 0.03)).export(metres)  # 10 cm in metres: auto scales it, with a warning
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(image)
    # stops at the missing refiner, after loading the CAD (and before any templates are built)
    r = posekit_run("estimate", image, "--cad", metres, "--K", K_OPT, "--bbox", "100,100,80,60", "--refine", "deepim")
    assert r.returncode == 2 and "refiner" in r.stderr, r.stderr
    warns = [ln for ln in r.stderr.splitlines() if "warning" in ln.lower() and not ln.startswith("posekit: error")]
    assert warns and all(ln.startswith("posekit: warning: ") for ln in warns), r.stderr
    assert "warnings.warn" not in r.stderr and ".py:" not in r.stderr


def test_inspect_and_the_render_job_name_the_same_mesh_hash(tmp_path):
    r = posekit_run("inspect", PART)
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("mesh hash:"))
    mesh_hash = line.split()[-1]
    out = tmp_path / "ds"
    r = posekit_run("render", "--cad", PART, "--out", out, "--count", "1", "--size", "160x120", "--quiet")
    assert r.returncode == 0, r.stderr
    job = json.loads((out / "posekit_render_job.json").read_text())
    target = job["spec"]["targets"][0] if "spec" in job else job["targets"][0]
    assert target["mesh_hash"] == mesh_hash and target["render_hash"] != mesh_hash and "hash" not in target


def test_center_is_accepted_wherever_a_cad_is_read_and_recorded(tmp_path):
    off = tmp_path / "off_centre.stl"
    trimesh.creation.box((60.0, 30.0, 20.0)).apply_translation([40.0, 0.0, 0.0]).export(off)
    ws = tmp_path / "tpl"
    r = posekit_run("train", "templates", "--cad", off, "--center", "--out", ws, "--preset", "tiny", "--views", "20",
                    "--inplane", "4")
    assert r.returncode == 0, r.stderr
    assert json.loads((ws / "config.json").read_text())["object"]["centered"] is True
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(image)
    common = ["estimate", image, "--cad", off, "--model", ws, "--K", K_OPT, "--bbox", "300,200,60,40", "--refine", "none"]
    assert posekit_run(*common, "--center").returncode == 0
    r = posekit_run(*common)
    assert r.returncode == 2 and "made with --center: pass it here too" in r.stderr
    for cmd in (["render", "--help"], ["train", "aae", "--help"], ["train", "refine", "--help"], ["models", "--help"]):
        assert "--center" in posekit_run(*cmd).stdout, cmd
