"""`posekit estimate`: poses from a tiny AAE on rendered images, the CLI's outputs, bad input, dataset mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import CAM, K_OPT, PART
from helpers import posekit_run as _posekit
from helpers import rendered_scenes as _scenes
from PIL import Image


def test_aae_estimates_translation_and_rotation_on_rendered_images(part, tiny_ws):
    """The coarse chain (crop -> code -> codebook -> box translation) recovers poses of off-centre objects."""
    from posekit.data.types import Observation
    from posekit.estimate.pipeline import Detection, PoseEstimator
    from posekit.geometry.rotations import geodesic_distance
    from posekit.methods.aae import load_workspace

    ws = load_workspace(tiny_ws[0], model=part)
    est = PoseEstimator({1: part}, coarse={1: ws})
    rot, depth, lateral = [], [], []
    for img, box, R, t in _scenes(part, 16, seed=11):
        (e,) = est.estimate(Observation(img, CAM), [Detection(1, tuple(box))])
        rot.append(np.degrees(geodesic_distance(e.R, R)))
        depth.append(abs(e.t[2] - t[2]) / t[2])
        lateral.append(np.linalg.norm(e.t[:2] - t[:2]))
    rot, depth, lateral = map(np.asarray, (rot, depth, lateral))
    # Depth from the box size: a few per cent; x, y from the box centre: a few mm at 0.5-0.9 m.
    assert np.median(depth) < 0.06, depth
    assert np.median(lateral) < 8.0, lateral
    # The tiny model: most rotations right (the misses are near-180-degree flips of the two plates).
    assert np.mean(rot < 25.0) >= 0.5, rot


def test_cli_writes_json_and_overlay(part, tiny_ws, tmp_path):
    img, box, R, t = _scenes(part, 1, seed=3)[0]
    image = tmp_path / "scene.png"
    Image.fromarray(img).save(image)
    out_json, overlay = tmp_path / "pose.json", tmp_path / "overlay.png"
    r = _posekit("estimate", image, "--cad", PART, "--model", tiny_ws[0], "--K", K_OPT, "--refine", "none",
                 "--bbox", ",".join(str(int(v)) for v in box), "--json", out_json, "--overlay", overlay)
    assert r.returncode == 0, r.stderr
    data = json.loads(out_json.read_text())
    pose = data["poses"][0]
    # what ran, enough to run it again: the coarse workspace by content hash, no refinement, the version
    run = data["run"]
    import posekit

    assert run["posekit"] == posekit.__version__ and run["refine"] is None and run["detect"] is None
    coarse = run["coarse"]["objects"]["1"]
    assert coarse["method"] == "aae" and coarse["workspace"] == str(tiny_ws[0]) and len(coarse["sha256"]) == 16
    assert run["command"].startswith("posekit estimate") and "--refine none" in run["command"]
    assert data["image_read"]["exif_orientation"] == 1 and pose["history"][0]["method"] == "aae"
    # The CLI is a thin layer: it gives exactly the library's pose for the same image, box and camera.
    from posekit.data.types import Observation
    from posekit.estimate.pipeline import Detection, PoseEstimator
    from posekit.methods.aae import load_workspace

    (lib,) = PoseEstimator({1: part}, coarse={1: load_workspace(tiny_ws[0], model=part)}).estimate(
        Observation(np.asarray(Image.open(image).convert("RGB")), CAM), [Detection(1, tuple(float(int(v)) for v in box))])
    assert np.allclose(pose["R"], lib.R, atol=1e-6) and np.allclose(pose["t"], lib.t, atol=1e-4)
    assert pose["t"][2] > 0 and abs(pose["score"] - lib.score) < 1e-5
    assert {"crop", "encode", "lookup", "translation"} <= set(pose["timings_s"])
    assert Image.open(overlay).size == (640, 480)


def _bad(tmp_path, tiny_ws):
    img = tmp_path / "ok.png"
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(img)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((240, 320, 3), np.uint8)).save(small)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"nope")
    cam = tmp_path / "camera.json"
    cam.write_text(json.dumps({"fx": 572.4, "fy": 573.6, "cx": 325.3, "cy": 242.0, "width": 640, "height": 480}))
    (tmp_path / "alone").mkdir()
    lone = tmp_path / "alone" / "ok.png"  # no camera.json beside it
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(lone)
    other = tmp_path / "other.stl"
    import trimesh

    trimesh.creation.box((80.0, 50.0, 30.0)).export(other)
    ws = tiny_ws[0]
    one = tmp_path / "one_pose.json"
    one.write_text(json.dumps({"R": np.eye(3).tolist(), "t": [0, 0, 600]}))
    two = tmp_path / "two_poses.json"
    two.write_text(json.dumps({"poses": [{"R": np.eye(3).tolist(), "t": [0, 0, 600]}] * 2}))
    typo = tmp_path / "typo_camera.json"
    typo.write_text(json.dumps({"fx": 572.4, "fy": 573.6, "cx": 325.3, "cy": 242.0, "widht": 640, "height": 480}))
    return {
        "unreadable image": ([junk, "--cad", PART, "--model", ws, "--K", K_OPT, "--bbox", "1,1,9,9"], "junk.png"),
        # a folder is many photos (docs/estimate.md, "Many photos in one process"): --json is one image's
        "image is a directory": ([tmp_path, "--cad", PART, "--model", ws, "--K", K_OPT, "--bbox", "10,10,50,50"],
                                 "--json is for one image; with several use --json-dir DIR or --jsonl FILE"),
        "box of 1 px": ([img, "--cad", PART, "--model", ws, "--K", K_OPT, "--bbox", "235,364,1,1"],
                        "a side of 1 px is too small"),
        "box mostly outside": ([img, "--cad", PART, "--model", ws, "--K", K_OPT, "--bbox", "600,440,100,100"],
                               "only 16 % of it lies inside"),
        "misspelt camera key": ([img, "--cad", PART, "--model", ws, "--camera", typo, "--bbox", "10,10,50,50"],
                                "unknown key(s) 'widht'"),
        "box outside": ([img, "--cad", PART, "--model", ws, "--K", K_OPT, "--bbox", "700,10,50,50"], "outside"),
        "no intrinsics": ([lone, "--cad", PART, "--model", ws, "--bbox", "10,10,50,50"], "intrinsics"),
        "other image size": ([small, "--cad", PART, "--model", ws, "--camera", cam, "--bbox", "10,10,50,50"],
                             "320x240"),
        "other mesh": ([img, "--cad", other, "--model", ws, "--K", K_OPT, "--bbox", "10,10,50,50"], "mesh hash"),
        "not a workspace": ([img, "--cad", PART, "--model", tmp_path, "--K", K_OPT, "--bbox", "10,10,50,50"],
                            "not a workspace"),
        "unknown score": ([img, "--cad", PART, "--model", ws, "--K", K_OPT, "--bbox", "10,10,50,50", "--score", "best"],
                          "--score must be"),
        "score without refiner": ([img, "--cad", PART, "--model", ws, "--K", K_OPT, "--bbox", "10,10,50,50",
                                   "--score", "edges"], "--refine deepim"),
        "mask without polish": ([img, "--cad", PART, "--init", one, "--refine", "deepim", "--refiner", ws, "--K", K_OPT,
                                 "--mask", img], "--polish N"),
        "mask of another size": ([img, "--cad", PART, "--init", one, "--refine", "deepim", "--refiner", ws,
                                  "--K", K_OPT, "--polish", 2, "--mask", small], "mask is 320x240"),
        "poses and boxes disagree": ([img, "--cad", PART, "--init", two, "--refine", "deepim", "--K", K_OPT,
                                      "--bbox", "10,10,50,50"], "holds 2 pose(s) but 1 --bbox"),
    }


@pytest.mark.parametrize("case", ["unreadable image", "image is a directory", "box of 1 px", "box mostly outside",
                                  "misspelt camera key", "box outside", "no intrinsics", "other image size",
                                  "other mesh", "not a workspace", "unknown score", "score without refiner",
                                  "mask without polish", "mask of another size", "poses and boxes disagree"])
def test_bad_input_one_line_exit_2_nothing_written(case, tiny_ws, tmp_path):
    from typer.testing import CliRunner

    from posekit.cli.main import app

    args, needle = _bad(tmp_path, tiny_ws)[case]
    out = tmp_path / "out.json"
    r = CliRunner().invoke(app, ["estimate", *map(str, args), "--json", str(out)])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()


def test_exif_rotated_photo_and_the_estimate_json_as_camera_round_trip(part, tiny_ws, tmp_path):
    """A photo stored sideways with EXIF Orientation 6 is estimated upright (the chosen-block and the JSON say so)
    and gives the upright photo's pose; the JSON `estimate` writes is itself a camera file: `--camera out.json`
    gives the same camera and pose."""
    img, box, _R, _t = _scenes(part, 1, seed=3)[0]
    upright, turned = tmp_path / "upright.png", tmp_path / "turned.png"
    Image.fromarray(img).save(upright)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    Image.fromarray(np.rot90(img)).save(turned, exif=exif.tobytes())  # stored 480x640
    bbox = ",".join(str(int(v)) for v in box)
    common = ["--cad", PART, "--model", tiny_ws[0], "--bbox", bbox, "--refine", "none"]
    first, second, plain = tmp_path / "first.json", tmp_path / "second.json", tmp_path / "plain.json"
    r = _posekit("estimate", turned, *common, "--K", K_OPT, "--json", first)
    assert r.returncode == 0, r.stderr
    assert "EXIF orientation 6 applied (stored 480x640)" in r.stderr
    a = json.loads(first.read_text())
    assert a["image_read"]["exif_orientation"] == 6 and a["image_read"]["stored_size"] == [480, 640]
    assert _posekit("estimate", upright, *common, "--K", K_OPT, "--json", plain).returncode == 0
    c = json.loads(plain.read_text())
    assert np.allclose(a["poses"][0]["R"], c["poses"][0]["R"]) and np.allclose(a["poses"][0]["t"], c["poses"][0]["t"])
    r = _posekit("estimate", turned, *common, "--camera", first, "--json", second)
    assert r.returncode == 0, r.stderr
    b = json.loads(second.read_text())
    assert b["camera"] == a["camera"] and np.allclose(b["poses"][0]["R"], a["poses"][0]["R"])
    assert np.allclose(b["poses"][0]["t"], a["poses"][0]["t"])


def test_an_implausible_pose_is_reported_failed_exit_1(tmp_path):
    """A pose 400 m away (the 13-cm part would span under a pixel) is not returned as a pose: the JSON marks it
    failed and unreliable, one error line names why, exit 1, no overlay."""
    image = tmp_path / "im.png"
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(image)
    far = tmp_path / "far.json"
    far.write_text(json.dumps({"R": np.eye(3).tolist(), "t": [100.0, -50.0, 400000.0]}))
    out, overlay = tmp_path / "out.json", tmp_path / "overlay.png"
    r = _posekit("estimate", image, "--cad", PART, "--K", K_OPT, "--init", far, "--refine", "features", "--iters", 0,
                 "--json", out, "--overlay", overlay)
    assert r.returncode == 1, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and "pose 1 of 1 failed: implausible depth" in errors[0] and "Traceback" not in r.stderr
    pose = json.loads(out.read_text())["poses"][0]
    assert pose["failed"].startswith("implausible depth") and pose["reliable"] is False
    assert not overlay.exists()


def test_dataset_mode_writes_results_that_eval_reads(tiny_ws, tmp_path):
    data = tmp_path / "synt"
    r = _posekit("render", "--cad", PART, "--out", data, "--count", 3, "--size", "320x240", "--seed", 2, "--quiet")
    assert r.returncode == 0, r.stderr
    models = tmp_path / "models"
    models.mkdir()
    (models / "obj_000001").symlink_to(tiny_ws[0], target_is_directory=True)
    results = tmp_path / "results.csv"
    r = _posekit("estimate", "--dataset", data, "--split", "train_synt", "--model-dir", models, "--boxes", "gt-obj",
                 "--out", results)
    assert r.returncode == 0, r.stderr
    from posekit.data.bop import BopDataset
    from posekit.data.results import read_results

    ests, bad = read_results(results)
    visible = sum(1 for f in BopDataset(data).frames("train_synt") for _, g in f.gts_of(1)
                  if g.info.bbox_obj[2] > 0)
    assert not bad and len(ests) == visible and visible >= 1
    r = _posekit("eval", "--dataset", data, "--split", "train_synt", "--results", results, "--out", tmp_path / "ev")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ev" / "eval.json").is_file()


@pytest.fixture(scope="module")
def short_refiner(part, tmp_path_factory):
    """A refiner workspace trained for a few steps: enough to exercise the refine path, not to be accurate."""
    from posekit.methods.refine.presets import PRESETS
    from posekit.methods.refine.train import train_refiner

    ws = tmp_path_factory.mktemp("refine") / "ws"
    train_refiner([part], ws, PRESETS["tiny"], steps=10, device="cpu", progress=False, seed=0, pool=32)
    return ws


def test_cli_refines_a_given_pose_and_keeps_every_iteration(part, short_refiner, tmp_path):
    """--init pose.json --refine deepim --polish: the JSON holds the pose after each stage with its time; the GIF a frame each."""
    img, box, R, t = _scenes(part, 1, seed=4)[0]
    image = tmp_path / "scene.png"
    Image.fromarray(img).save(image)
    init = tmp_path / "init.json"
    init.write_text(json.dumps({"R": R.tolist(), "t": (t + np.array([8.0, -5.0, 30.0])).tolist()}))
    out_json, gif = tmp_path / "refined.json", tmp_path / "iters.gif"
    r = _posekit("estimate", image, "--cad", PART, "--init", init, "--refine", "deepim", "--refiner", short_refiner,
                 "--iters", 2, "--polish", 3, "--K", K_OPT, "--json", out_json, "--overlay", gif)
    assert r.returncode == 0, r.stderr
    pose = json.loads(out_json.read_text())["poses"][0]
    hist = pose["history"]
    assert [h["stage"] for h in hist] == ["init", "refine_1", "refine_2", "polish"]
    assert np.allclose(hist[0]["t"], t + [8.0, -5.0, 30.0])
    assert all(h["time"] > 0 for h in hist[1:])
    assert np.allclose(pose["t"], hist[-1]["t"]) and np.allclose(pose["R"], hist[-1]["R"])
    assert Image.open(gif).n_frames == 4


def _two_instances(part):
    """One image with two copies of the part (different poses, apart), their poses and their joint mask."""
    from posekit.geometry.rotations import random_rotations
    from posekit.render.backgrounds import procedural_background
    from posekit.render.gl import OffscreenRenderer
    from posekit.render.types import RenderObject

    rng = np.random.default_rng(21)
    Rs = random_rotations(2, rng)
    ts = [np.array([-110.0, 20.0, 700.0]), np.array([120.0, -30.0, 760.0])]
    with OffscreenRenderer(CAM.width, CAM.height) as r:
        res = r.render(CAM, [RenderObject(part, R, t) for R, t in zip(Rs, ts, strict=True)], ambient=0.4)
    visible = res.masks[0] | res.masks[1]
    img = np.where(visible[..., None], res.rgb, procedural_background(rng, CAM.width, CAM.height)).astype(np.uint8)
    return img, list(zip(Rs, ts, strict=True)), visible


def test_cli_refines_several_instances_in_one_batch_and_polishes_towards_a_given_mask(part, short_refiner, tmp_path):
    """Two instances of the part: --init with two poses (a `posekit estimate --json` output) gives two refined
    poses from one batch, both drawn in the overlay; --mask (the true silhouettes) pulls the polished poses
    towards the truth, which the refiner's own predicted mask (a few training steps) cannot."""
    img, truth, visible = _two_instances(part)
    image, mask = tmp_path / "two.png", tmp_path / "mask.png"
    Image.fromarray(img).save(image)
    Image.fromarray((visible * 255).astype(np.uint8)).save(mask)
    offset = np.array([6.0, -4.0, 40.0])
    init = tmp_path / "init.json"
    init.write_text(json.dumps({"poses": [{"R": R.tolist(), "t": (t + offset).tolist()} for R, t in truth]}))
    out_json, overlay = tmp_path / "out.json", tmp_path / "both.png"
    r = _posekit("estimate", image, "--cad", PART, "--init", init, "--refine", "deepim", "--refiner", short_refiner,
                 "--iters", 1, "--polish", 15, "--mask", mask, "--K", K_OPT, "--json", out_json, "--overlay", overlay)
    assert r.returncode == 0, r.stderr
    poses = json.loads(out_json.read_text())["poses"]
    assert len(poses) == 2
    for pose, (_R, t) in zip(poses, truth, strict=True):
        hist = {h["stage"]: h for h in pose["history"]}
        assert list(hist) == ["init", "refine_1", "polish"]
        err_refined = np.linalg.norm(np.asarray(hist["refine_1"]["t"]) - t)
        err_polished = np.linalg.norm(np.asarray(pose["t"]) - t)
        assert err_polished < 0.7 * err_refined, (err_refined, err_polished)
        assert hist["polish"]["loss"] == "silhouette"
        assert hist["polish"]["loss_after"] < 0.7 * hist["polish"]["loss_before"]
    # one batch: both instances share the iteration's time
    assert poses[0]["history"][1]["time"] == poses[1]["history"][1]["time"]
    drawn = np.asarray(Image.open(overlay).convert("RGB")) != img
    for _R, t in truth:
        u, v, _ = CAM.K @ t / t[2]
        assert drawn[int(v) - 60 : int(v) + 60, int(u) - 60 : int(u) + 60].any()


def test_cli_refine_needs_a_refiner_workspace(tmp_path):
    from typer.testing import CliRunner

    from posekit.cli.main import app

    image = tmp_path / "im.png"
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(image)
    init = tmp_path / "init.json"
    init.write_text(json.dumps({"R": np.eye(3).tolist(), "t": [0, 0, 500]}))
    r = CliRunner().invoke(app, ["estimate", str(image), "--cad", str(PART), "--init", str(init), "--refine", "deepim",
                                 "--K", K_OPT])
    assert r.exit_code == 2 and "--refiner WORKSPACE" in r.stderr
