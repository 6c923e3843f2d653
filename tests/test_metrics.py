"""Pose errors against known perturbations, the objects' symmetries, a straightforward reference, and VSD
on rendered depth; BOP matching rules."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial.distance import cdist
from scipy.spatial.transform import Rotation

from posekit.data.bop import BopDataset
from posekit.eval import metrics as M
from posekit.eval.recall import match_group


@pytest.fixture(scope="module")
def lmo(lmo_dev):
    return BopDataset(lmo_dev)


def _points(ds: BopDataset, obj_id: int) -> np.ndarray:
    return np.asarray(trimesh.load(ds.model_path(obj_id, eval=True), process=False).vertices, dtype=np.float64)


def _gt(ds: BopDataset, obj_id: int):
    """A real ground-truth pose of ``obj_id`` and its frame's K."""
    for frame in ds.frames("test"):
        for _, g in frame.gts_of(obj_id):
            return g.R, g.t, frame.camera.K
    raise AssertionError(f"no ground truth for obj {obj_id}")


def test_translation_offset_gives_known_errors(lmo):
    pts = _points(lmo, 1)
    R, t, K = _gt(lmo, 1)
    t_est = t + np.array([0.0, 0.0, 5.0])
    assert M.translation_error(t_est, t) == pytest.approx(5.0, abs=1e-9)
    assert M.add(R, t_est, R, t, pts) == pytest.approx(5.0, abs=1e-9)
    assert M.mssd(R, t_est, R, t, pts) == pytest.approx(5.0, abs=1e-9)
    assert M.rotation_error(R, R) == pytest.approx(0.0, abs=1e-5)
    assert 0.0 < M.adds(R, t_est, R, t, pts) <= 5.0 + 1e-9
    # 5 mm further away: every point moves towards the principal point, by at most a few px.
    assert 0.0 < M.proj2d(R, t_est, R, t, K, pts) < M.mspd(R, t_est, R, t, K, pts) < 5.0


def test_rotation_about_known_axis_gives_known_angle(lmo):
    pts = _points(lmo, 6)
    R, t, K = _gt(lmo, 6)
    for axis in (np.array([0.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0]) / np.sqrt(2)):
        R_est = Rotation.from_rotvec(np.radians(10.0) * axis).as_matrix() @ R
        assert M.rotation_error(R_est, R) == pytest.approx(10.0, abs=1e-6)
        # The same rotation about the object's own centre (model frame): t unchanged, ADD > 0.
        assert M.add(R_est, t, R, t, pts) > 1.0
    assert M.rotation_error(Rotation.from_rotvec([0, np.pi, 0]).as_matrix(), np.eye(3)) == pytest.approx(180.0)


@pytest.mark.parametrize("obj_id", [10, 11])  # eggbox, glue: symmetric in models_info
def test_symmetric_objects_rotated_by_their_symmetry(lmo, obj_id):
    pts = _points(lmo, obj_id)
    syms = lmo.symmetry_transforms(obj_id)
    assert len(syms) == 2
    R, t, K = _gt(lmo, obj_id)
    S = syms[1]
    R_est, t_est = R @ S[:3, :3], R @ S[:3, 3] + t
    diameter = lmo.models_info[obj_id]["diameter"]
    assert M.mssd(R_est, t_est, R, t, pts, syms) == pytest.approx(0.0, abs=1e-9)
    assert M.mspd(R_est, t_est, R, t, K, pts, syms) == pytest.approx(0.0, abs=1e-9)
    assert M.proj2d(R_est, t_est, R, t, K, pts, syms) == pytest.approx(0.0, abs=1e-9)
    # ADD-S is ~0: the symmetric copy of the decimated vertices lies on, not at, the other vertices
    # (vertex spacing ~2 mm); it stays far below the strictest threshold, 0.02 d.
    assert M.adds(R_est, t_est, R, t, pts) < 0.015 * diameter
    assert M.add(R_est, t_est, R, t, pts) > 0.25 * diameter
    assert M.mssd(R_est, t_est, R, t, pts) > 0.4 * diameter  # without the symmetries


def _reference(R_e, t_e, R_g, t_g, K, pts, syms):
    """Straight from the formulas, one pose at a time, all-pairs distances for ADD-S."""
    pe = pts @ R_e.T + t_e
    pg = pts @ R_g.T + t_g
    add = np.linalg.norm(pe - pg, axis=1).mean()
    adds = cdist(pg, pe).min(axis=1).mean()

    def proj(p):
        uvw = p @ K.T
        return uvw[:, :2] / uvw[:, 2:]

    mssd, mspd = np.inf, np.inf
    for S in syms:
        ps = pts @ (R_g @ S[:3, :3]).T + (R_g @ S[:3, 3] + t_g)
        mssd = min(mssd, np.linalg.norm(pe - ps, axis=1).max())
        mspd = min(mspd, np.linalg.norm(proj(pe) - proj(ps), axis=1).max())
    return add, adds, mssd, mspd


@pytest.mark.parametrize("obj_id", [5, 10])
def test_agrees_with_straightforward_reference(lmo, obj_id):
    rng = np.random.default_rng(obj_id)
    pts = _points(lmo, obj_id)[::4]  # a quarter of the vertices keeps the all-pairs reference quick
    syms = lmo.symmetry_transforms(obj_id)
    R_g, t_g, K = _gt(lmo, obj_id)  # a real GT rotation: slightly non-orthonormal, as annotated
    n = 150
    Rd = Rotation.from_rotvec(rng.normal(0.0, 0.2, (n, 3))).as_matrix()
    R_e = Rd @ R_g
    # Half orthonormal (one KD-tree per object serves them) and half as composed (a tree per pose).
    R_e[: n // 2] = np.stack([Rotation.from_matrix(r).as_matrix() for r in R_e[: n // 2]])
    t_e = t_g + rng.normal(0.0, [10.0, 10.0, 40.0], (n, 3))
    got = np.stack([
        M.add(R_e, t_e, R_g, t_g, pts), M.adds(R_e, t_e, R_g, t_g, pts),
        M.mssd(R_e, t_e, R_g, t_g, pts, syms), M.mspd(R_e, t_e, R_g, t_g, K, pts, syms),
    ], axis=1)
    ref = np.array([_reference(R_e[i], t_e[i], R_g, t_g, K, pts, syms) for i in range(n)])
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    # One pose in gives a float out, equal to the batch entry.
    assert M.adds(R_e[0], t_e[0], R_g, t_g, pts) == pytest.approx(got[0, 1], rel=1e-12)


def test_vsd_on_rendered_depth():
    from posekit.eval.vsd import DepthRenderer, vsd

    box = trimesh.creation.box(extents=(100.0, 80.0, 60.0))
    renderer = DepthRenderer(box.vertices, box.faces)
    K = np.array([[572.4, 0.0, 160.0], [0.0, 573.6, 120.0], [0.0, 0.0, 1.0]])
    R = Rotation.from_euler("xyz", [20, -30, 10], degrees=True).as_matrix()
    t = np.array([10.0, -5.0, 600.0])
    # Depth convention: the front face of an axis-aligned box at z=500 is 30 mm nearer (OpenCV camera).
    depth_front = renderer.render(K, np.eye(3), np.array([0.0, 0.0, 500.0]), 320, 240)
    assert depth_front[120, 160] == pytest.approx(470.0, abs=1e-3)
    assert depth_front[0, 0] == 0.0
    depth_test = renderer.render(K, R, t, 320, 240)
    diameter = float(np.linalg.norm([100.0, 80.0, 60.0]))
    assert np.all(vsd(R, t, R, t, depth_test, K, renderer, diameter) == 0.0)
    shifted = vsd(R, t + np.array([15.0, 0.0, 0.0]), R, t, depth_test, K, renderer, diameter)
    assert np.all(shifted > 0.05) and np.all(np.diff(shifted) <= 0)  # looser tau, lower error
    deeper = vsd(R, t + np.array([0.0, 0.0, 30.0]), R, t, depth_test, K, renderer, diameter)
    assert deeper[0] > 0.9 and deeper[-1] < 0.1  # 30 mm = 0.21 d: wrong at tau 0.05, right at 0.5
    # A pose off the image entirely: the union is the GT's visible surface, nothing matches.
    gone = vsd(R, t + np.array([5000.0, 0.0, 0.0]), R, t, depth_test, K, renderer, diameter)
    assert np.all(gone == 1.0)


def test_matching_follows_bop_rules():
    th = np.array([[1.0]])
    valid = np.array([True, True])
    errors = np.array([[[0.2], [0.9]], [[0.5], [3.0]]])  # (est, gt, 1)
    # Estimates are matched in decreasing score, each to its lowest-error free GT below the threshold.
    assert match_group(np.array([0.9, 0.1]), errors, valid, th).tolist() == [[True, False]]
    assert match_group(np.array([0.1, 0.9]), errors, valid, th).tolist() == [[True, True]]
    # An invalid GT is never matched.
    m = match_group(np.array([1.0]), np.array([[[0.1], [0.2]]]), np.array([False, True]), np.array([[1.0], [3.0]]))
    assert m.tolist() == [[False, True], [False, True]]
    # A vector error (5cm 5deg) needs every element below its threshold.
    vec = np.array([[[4.0, 6.0]]])
    assert not match_group(np.array([1.0]), vec, np.array([True]), np.array([[5.0, 5.0]])).any()
    assert match_group(np.array([1.0]), vec, np.array([True]), np.array([[5.0, 7.0]])).all()
    # An error equal to the threshold is not below it.
    assert not match_group(np.array([1.0]), np.array([[[1.0]]]), np.array([True]), th).any()
