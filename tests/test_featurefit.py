"""`--refine features`: the training-free search on pretrained features reduces known pose errors on rendered
images, and its CLI combinations are checked before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import CAM, K_OPT, PART, posekit_run, rendered_scenes
from PIL import Image
from scipy.spatial.transform import Rotation


def _perturbed(scenes, seed=0, angle=10.0, shift=(6.0, -6.0, 0.0)):
    rng = np.random.default_rng(seed)
    out = []
    for img, _box, R, t in scenes:
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        out.append((img, Rotation.from_rotvec(axis * np.radians(angle)).as_matrix() @ R, t + np.asarray(shift), R, t))
    return out


def test_feature_search_reduces_rotation_and_shift_errors_without_training(part):
    from posekit.data.types import Observation
    from posekit.geometry.rotations import geodesic_distance
    from posekit.methods.featurefit import FeatureRefiner

    ref = FeatureRefiner([part], device="cpu")
    before, after, lat0, lat1, depth = [], [], [], [], []
    try:
        for img, R0, t0, R, t in _perturbed(rendered_scenes(part, 6, seed=21)):
            run = ref.refine(Observation(img, CAM), [part.mesh_hash], R0[None], t0[None], iters=5, score="features")
            Rf, tf = run.final
            before.append(np.degrees(geodesic_distance(R0, R)))
            after.append(np.degrees(geodesic_distance(Rf[0], R)))
            lat0.append(np.linalg.norm((t0 - t)[:2]))
            lat1.append(np.linalg.norm((tf[0] - t)[:2]))
            depth.append(abs(np.linalg.norm(tf[0]) - np.linalg.norm(t0)))
            assert run.scores.shape == (6, 1) and run.scores[run.best[0], 0] >= run.scores[0, 0]
    finally:
        ref.close()
    # measured: rotation 10 -> 4-6 deg, image-plane offset 8.5 -> about 3 mm; the distance from the camera is left
    # as it was (the moves turn the part about the camera centre)
    assert np.median(after) < 0.75 * np.median(before), (before, after)
    assert np.median(lat1) < 0.75 * np.median(lat0), (lat0, lat1)
    assert max(depth) < 1e-6


def test_feature_polish_pulls_the_render_onto_the_image_through_pytorch3d(part):
    """Gradient steps through PyTorch3D's RGB rendering and the frozen backbone (no training) remove most of a
    known image-plane offset; depth stays where it was without a mask (the features alone prefer smaller renders)."""
    from posekit.data.types import Observation, RefineRun
    from posekit.geometry.rotations import geodesic_distance
    from posekit.methods.featurefit import FeatureRefiner

    ref = FeatureRefiner([part], device="cpu")
    lat0, lat1, rot0, rot1 = [], [], [], []
    try:
        for img, R0, t0, R, t in _perturbed(rendered_scenes(part, 3, seed=21), shift=(6.0, -6.0, 20.0)):
            run = RefineRun.start(1, R0[None], t0[None], 0)
            res = ref.polish(run, [part.mesh_hash], steps=20, lr=0.01, observation=Observation(img, CAM))
            assert res.kind == "features" and res.loss_after[0] <= res.loss_before[0]
            assert abs(res.t[0, 2] - t0[2]) < 1e-6
            lat0.append(np.linalg.norm((t0 - t)[:2]))
            lat1.append(np.linalg.norm((res.t[0] - t)[:2]))
            rot0.append(np.degrees(geodesic_distance(R0, R)))
            rot1.append(np.degrees(geodesic_distance(res.R[0], R)))
    finally:
        ref.close()
    # measured: image-plane offset 8.5 -> 1.0-2.0 mm on two of three, one left where it was; rotation 10 -> 8-10 deg
    assert np.median(lat1) < 0.6 * np.median(lat0), (lat0, lat1)
    assert np.median(rot1) < np.median(rot0) + 2.0, (rot0, rot1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory, part):
    img, box, R, t = rendered_scenes(part, 1, seed=4)[0]
    d = tmp_path_factory.mktemp("featscene")
    image = d / "scene.png"
    Image.fromarray(img).save(image)
    init = d / "init.json"
    R0 = Rotation.from_rotvec([0.1, -0.08, 0.05]).as_matrix() @ R
    init.write_text(json.dumps({"R": R0.tolist(), "t": (t + [5.0, 4.0, 0.0]).tolist()}))
    return image, init, R, t


def test_cli_refine_features_from_a_given_pose_keeps_every_iterate_and_polishes(scene, tmp_path):
    from posekit.geometry.rotations import geodesic_distance

    image, init, R, t = scene
    out = tmp_path / "pose.json"
    r = posekit_run("estimate", image, "--cad", PART, "--K", K_OPT, "--init", init, "--refine", "features",
                    "--iters", "3", "--score", "features", "--polish", "3", "--json", out)
    assert r.returncode == 0, r.stderr
    pose = json.loads(out.read_text())["poses"][0]
    stages = [h["stage"] for h in pose["history"]]
    assert stages == ["init", "refine_1", "refine_2", "refine_3", "refine_kept", "polish"]
    polish = pose["history"][-1]
    assert polish["loss"] == "features" and polish["loss_after"] <= polish["loss_before"]
    R0 = np.asarray(pose["history"][0]["R"])
    kept = np.asarray(pose["history"][-2]["R"])
    assert geodesic_distance(kept, R) <= geodesic_distance(R0, R) + 1e-9


@pytest.mark.parametrize("args, needle", [
    (["--refine", "features", "--score", "mask"], "--score mask goes with --refine deepim"),
    (["--refine", "none", "--polish", "2"], "--polish follows a refiner"),
    (["--refine", "fancy"], "--refine must be one of"),
    (["--refine", "none", "--depth-sweep"], "--depth-sweep is the feature search's last stage"),
    (["--refine", "features", "--iters", "0", "--depth-sweep"], "--depth-sweep follows the feature search's last"),
    (["--refine", "features", "--depth-sweep", "--score", "features"], "--score features would keep an iterate"),
])
def test_cli_refine_features_bad_combinations_one_line(scene, tmp_path, args, needle):
    image, init, _, _ = scene
    out = tmp_path / "pose.json"
    r = posekit_run("estimate", image, "--cad", PART, "--K", K_OPT, "--init", init, *args, "--json", out)
    assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not out.exists()


def test_depth_sweep_finds_a_known_depth_error_and_keeps_depth_where_the_best_is_at_the_range_end(part):
    """The feature search's depth sweep (``depth_range`` > 0) on rendered images over photo-like backgrounds:
    5 % too far -> within 1.5 %; 20 % too far (beyond the +-8 % range, so the best is at an end) -> kept."""
    from posekit.data.types import Observation
    from posekit.methods.featurefit import FeatureFitConfig, FeatureRefiner

    ref = FeatureRefiner([part], device="cpu", config=FeatureFitConfig(depth_range=0.08, depth_samples=9))
    near, kept = [], []
    try:
        for img, _, _, R, t in _perturbed(rendered_scenes(part, 4, seed=5)):
            obs = Observation(img, CAM)
            sw = ref.depth_sweep(obs, [part.mesh_hash], R[None], (t * 1.05)[None])
            assert sw.scores.shape == (1, 9) and np.allclose(sw.t[0] / np.linalg.norm(sw.t[0]), t / np.linalg.norm(t))
            near.append(abs(sw.t[0, 2] / t[2] - 1))
            far = ref.depth_sweep(obs, [part.mesh_hash], R[None], (t * 1.2)[None])
            kept.append(bool(np.allclose(far.t[0], t * 1.2)))
    finally:
        ref.close()
    assert np.median(near) < 0.015, near
    assert all(kept), kept  # measured: 5 % -> 0.8 % (the nearest scale), every 20 % start kept


def test_depth_pick_finds_the_peak_between_grid_scales_and_keeps_an_end():
    """pick_depth with ``subgrid``: scores sampled from a parabola peaking between two grid scales give that
    scale (the grid's pick is off by up to half a step); a best at an end keeps the depth either way."""
    from posekit.methods.featurefit.refiner import pick_depth

    scales = 1.0 + np.linspace(-0.08, 0.08, 9)
    t = np.array([[10.0, -20.0, 800.0], [0.0, 0.0, 1000.0], [5.0, 5.0, 900.0]])
    peaks = np.array([1.013, 0.967, 1.2])  # the last beyond the range: the best is the top end
    scores = -((scales[None] - peaks[:, None]) ** 2)
    grid = pick_depth(t, scales, scores)
    sub = pick_depth(t, scales, scores, subgrid=True)
    assert np.allclose(sub[:2], t[:2] * peaks[:2, None]), sub / t
    assert np.allclose(grid[:2], t[:2] * np.array([[1.02], [0.96]]))
    assert np.allclose(sub[2], t[2]) and np.allclose(grid[2], t[2])


def test_cli_depth_sweep_brings_a_far_start_nearer(scene, tmp_path):
    """`--refine features --depth-sweep` from the true rotation 5 % too far along the viewing ray: the JSON pose's
    depth error is less than half the start's."""
    image, _, R, t = scene
    init = tmp_path / "far.json"
    init.write_text(json.dumps({"R": np.asarray(R).tolist(), "t": (np.asarray(t) * 1.05).tolist()}))
    out = tmp_path / "pose.json"
    r = posekit_run("estimate", image, "--cad", PART, "--K", K_OPT, "--init", init, "--refine", "features",
                    "--iters", "1", "--depth-sweep", "--json", out)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    pose = data["poses"][0]
    tf = np.asarray(pose["t"])
    assert abs(tf[2] - t[2]) < 0.5 * 0.05 * t[2], (tf, t)
    # the JSON says the sweep ran: in the run's settings, the choice line, the last iterate and the timings
    ref = data["run"]["refine"]
    assert ref["kind"] == "features" and ref["depth_sweep"] is True and ref["iters"] == 1
    assert ref["config"]["depth_range"] == 0.08 and ref["config"]["depth_samples"] == 9
    assert data["chosen"]["refine"].startswith("features + depth sweep")
    sweep = pose["history"][-1]["depth_sweep"]
    assert pose["history"][-1]["stage"] == "refine_1" and not sweep["kept"]
    assert np.isclose(sweep["scale"] * 1.05 * t[2], tf[2]) and pose["timings_s"]["depth_sweep"] > 0


def test_hypotheses_stage_recovers_the_depth_behind_a_box_a_fifth_too_small(part, tpl_ws):
    """Behind boxes 20 % smaller than the part's (a found box covering a piece of the part), the box's depth is
    about 25 % too far; the hypotheses stage (views x depths in +-25 % scored on the photo) brings it nearer."""
    from posekit.data.types import Observation
    from posekit.estimate.pipeline import Detection, EstimatorConfig, Hypotheses, PoseEstimator
    from posekit.methods.featurefit import FeatureRefiner
    from posekit.methods.templates import load_workspace

    ws = load_workspace(tpl_ws, model=part)
    scorer = FeatureRefiner([part], device="cpu")
    plain = PoseEstimator({1: part}, coarse={1: ws})
    hyp = PoseEstimator({1: part}, coarse={1: ws}, scorer=scorer, config=EstimatorConfig(hypotheses=Hypotheses()))
    before, after = [], []
    try:
        for img, (x, y, w, h), _R, t in rendered_scenes(part, 6, seed=31):
            small = (x + 0.1 * w, y + 0.1 * h, 0.8 * w, 0.8 * h)
            obs = Observation(img, CAM)
            (e0,) = plain.estimate(obs, [Detection(1, small)])
            (e1,) = hyp.estimate(obs, [Detection(1, small)])
            before.append(e0.t[2] / t[2] - 1)
            after.append(e1.t[2] / t[2] - 1)
            assert e1.history[-1]["stage"] == "hypotheses" and len(e1.history[-1]["scales"]) == 7
    finally:
        scorer.close()
    assert np.median(before) > 0.12, before  # the box's depth: too far
    # measured: depth off by +5 to +35 % (median 26 %) from the boxes, -3 to +10 % (median |.| 7 %) after the stage
    assert np.median(np.abs(after)) < 0.5 * np.median(np.abs(before)), (before, after)
