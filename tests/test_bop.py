"""BOP dataset reading (real LM-O data), writing, resuming and error messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from posekit.data.bop import (
    BopDataset,
    BopWriter,
    GtInfo,
    GtInstance,
    SceneWriter,
    derive_targets,
    symmetry_transforms_from_info,
    write_camera_json,
    write_models_info,
    write_targets,
)
from posekit.errors import BopFormatError
from posekit.geometry.camera import Camera

README_K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def lmo(lmo_dev: Path) -> BopDataset:
    return BopDataset(lmo_dev)


def test_read_lmo_dev_counts_camera_and_gt(lmo: BopDataset, lmo_dev: Path):
    assert lmo.splits() == ["test"]
    assert lmo.scene_ids("test") == [2]
    frames = list(lmo.frames("test"))
    assert len(frames) == 100
    assert len(lmo.targets()) == 717
    assert lmo.obj_ids == [1, 5, 6, 8, 9, 10, 11, 12]
    assert np.array_equal(lmo.camera.K, README_K) and lmo.camera.size == (640, 480)
    for f in frames:
        assert np.array_equal(f.camera.K, README_K) and f.camera.size == (640, 480)
        assert f.depth_scale == 1.0
    # A ground-truth pose equals the JSON numbers, in the JSON's order, with scene_gt_info attached.
    raw_gt = json.loads((lmo_dev / "test/000002/scene_gt.json").read_text())
    raw_info = json.loads((lmo_dev / "test/000002/scene_gt_info.json").read_text())
    key = sorted(raw_gt, key=int)[17]
    frame = lmo.frame("test", 2, int(key))
    assert [g.obj_id for g in frame.gts] == [e["obj_id"] for e in raw_gt[key]]
    for g, e, inf in zip(frame.gts, raw_gt[key], raw_info[key], strict=True):
        assert np.array_equal(g.R.reshape(-1), e["cam_R_m2c"]) and np.array_equal(g.t, e["cam_t_m2c"])
        assert list(g.info.bbox_visib) == inf["bbox_visib"] and g.visib_fract == inf["visib_fract"]
    # Targets, where the file is absent, are derived from scene_gt: every file target is a gt object.
    derived = {(t.scene_id, t.im_id, t.obj_id) for t in derive_targets(lmo)}
    assert {(t.scene_id, t.im_id, t.obj_id) for t in lmo.targets()} <= derived


def test_models_and_symmetries(lmo: BopDataset, lmo_dev: Path):
    import trimesh

    assert lmo.model_path(10).parent.name == "models"
    assert lmo.model_path(10, eval=True).parent.name == "models_eval"
    with pytest.raises(BopFormatError, match="obj_000003.ply"):
        lmo.model_path(3)
    # eggbox (10) has one discrete symmetry: the set of identity + it maps the mesh onto itself.
    Ts = lmo.symmetry_transforms(10)
    assert Ts.shape == (2, 4, 4) and np.array_equal(Ts[0], np.eye(4))
    mesh = trimesh.load(lmo.model_path(10, eval=True), process=False)
    v = np.asarray(mesh.vertices)
    from scipy.spatial import cKDTree

    moved = v @ Ts[1][:3, :3].T + Ts[1][:3, 3]
    dist, _ = cKDTree(v).query(moved)
    assert np.mean(dist) < 0.02 * lmo.models_info[10]["diameter"]
    assert lmo.symmetry_transforms(1).shape == (1, 4, 4)


def test_continuous_symmetry_transforms_fix_the_axis():
    info = {
        "symmetries_continuous": [{"axis": [0, 0, 1], "offset": [10.0, -5.0, 0.0]}],
        "symmetries_discrete": [[1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1]],
    }
    Ts = symmetry_transforms_from_info(info, continuous_steps=12)
    assert Ts.shape == (24, 4, 4) and np.allclose(Ts[0], np.eye(4))
    on_axis = np.array([10.0, -5.0, 37.0, 1.0])
    pure = Ts[:12]  # the continuous samples composed with the identity
    assert np.allclose(pure @ on_axis, on_axis)
    assert len({tuple(np.round(T, 6).ravel()) for T in Ts}) == 24


def test_images_load_lazily_and_bad_image_names_its_path(lmo: BopDataset, tmp_path: Path):
    frames = list(lmo.frames("test"))[:3]
    rgb = frames[0].rgb()
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
    assert frames[0].depth() is None and frames[0].mask(0) is None  # lmo-dev has no depth and no masks
    # Copy a scene of 3 frames and corrupt the second image: reading the scene works, only rgb() fails.
    with SceneWriter(tmp_path / "d" / "test" / "000002") as w:
        for f in frames:
            w.add_frame(f.rgb(), f.camera, f.gts, im_id=f.im_id)
    bad = tmp_path / "d" / "test" / "000002" / "rgb" / f"{frames[1].im_id:06d}.png"
    bad.write_bytes(b"not a png")
    ds = BopDataset(tmp_path / "d")
    got = list(ds.frames("test"))
    assert [f.im_id for f in got] == [f.im_id for f in frames]
    assert got[1].camera.size == (640, 480)  # size from the first image's header: no camera.json here
    with pytest.raises(BopFormatError, match=bad.name):
        got[1].rgb()


def _assert_same_frames(a, b):
    assert (a.scene_id, a.im_id) == (b.scene_id, b.im_id)
    assert np.array_equal(a.camera.K, b.camera.K) and a.camera.size == b.camera.size
    assert a.depth_scale == b.depth_scale
    assert len(a.gts) == len(b.gts)
    for ga, gb in zip(a.gts, b.gts, strict=True):
        assert ga.obj_id == gb.obj_id and np.array_equal(ga.R, gb.R) and np.array_equal(ga.t, gb.t)
        assert ga.info == gb.info


def test_round_trip_lmo_subset(lmo: BopDataset, tmp_path: Path):
    out = tmp_path / "lmo-copy"
    frames = list(lmo.frames("test"))[::25]  # 4 frames
    write_camera_json(out, lmo.camera, lmo.camera_json[1])
    write_models_info(out / "models", lmo.models_info)
    with SceneWriter(out / "test" / "000002", depth_scale=1.0) as w:
        for f in frames:
            w.add_frame(f.rgb(), f.camera, f.gts, im_id=f.im_id)
    keep = {f.im_id for f in frames}
    write_targets(out, [t for t in lmo.targets() if t.im_id in keep])

    back = BopDataset(out)
    assert back.models_info == lmo.models_info
    assert np.array_equal(back.camera.K, lmo.camera.K) and back.camera.size == lmo.camera.size
    got = list(back.frames("test"))
    assert len(got) == len(frames)
    for a, b in zip(frames, got, strict=True):
        _assert_same_frames(a, b)
        assert np.array_equal(a.rgb(), b.rgb())
    assert back.targets() == [t for t in lmo.targets() if t.im_id in keep]
    # The written JSON files are BOP's: string keys of ints, parsable by plain json.
    raw = json.loads((out / "test/000002/scene_gt.json").read_text())
    assert sorted(raw, key=int) == [str(f.im_id) for f in frames]


def test_depth_masks_chunking_and_resume(tmp_path: Path):
    cam = Camera.from_fxfycxcy(500.0, 500.0, 31.5, 23.5, 64, 48)
    rng = np.random.default_rng(0)

    def frame_data(i):
        rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        depth = rng.uniform(300.0, 2000.0, (48, 64)).astype(np.float32)
        depth[:5] = 0.0
        m = rng.random((48, 64)) > 0.5
        gt = GtInstance(obj_id=i % 3 + 1, R=np.eye(3), t=[1.0, 2.0, 500.0 + i],
                        info=GtInfo((1, 2, 3, 4), (1, 2, 3, 3), 12, 11, 9, 0.75))
        return rgb, depth, m, gt

    root = tmp_path / "synt"
    data = [frame_data(i) for i in range(6)]
    w = BopWriter(root, split="train_synt", images_per_scene=4, depth_scale=0.1, flush_every=1000)
    for rgb, depth, m, gt in data[:5]:
        w.add_frame(rgb, cam, [gt], depth=depth, masks=[m], masks_visib=[m & (depth > 0)])
    w.close()
    # A frame added but never flushed (a crash) is not complete: it is not read back, and a resumed
    # writer overwrites it.
    w = BopWriter(root, split="train_synt", images_per_scene=4, depth_scale=0.1, flush_every=1000)
    assert len(w) == 5
    w.add_frame(*data[5][:1], cam, [data[5][3]])
    del w
    w = BopWriter(root, split="train_synt", images_per_scene=4, depth_scale=0.1, flush_every=1000)
    assert len(w) == 5
    assert w.add_frame(data[5][0], cam, [data[5][3]], depth=data[5][1]) == (1, 1)
    w.close()

    ds = BopDataset(root)
    assert ds.scene_ids("train_synt") == [0, 1]
    frames = list(ds.frames("train_synt"))
    assert [(f.scene_id, f.im_id) for f in frames] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    for f, (rgb, depth, m, gt) in zip(frames, data, strict=True):
        assert np.array_equal(f.rgb(), rgb)
        assert f.depth_scale == 0.1
        assert np.max(np.abs(f.depth() - depth)) <= 0.05 + 1e-4  # half a depth step of 0.1 mm
        assert np.all(f.depth()[:5] == 0)
        assert f.gts[0].obj_id == gt.obj_id and np.array_equal(f.gts[0].t, gt.t) and f.gts[0].info == gt.info
        if (f.scene_id, f.im_id) != (1, 1):
            assert np.array_equal(f.mask(0), m) and np.array_equal(f.mask_visib(0), m & (depth > 0))
    assert frames[-1].mask(0) is None


def test_depth_that_overflows_uint16_is_refused(tmp_path: Path):
    cam = Camera.from_fxfycxcy(500.0, 500.0, 7.5, 7.5, 16, 16)
    w = SceneWriter(tmp_path / "s" / "000000", depth_scale=0.1)
    with pytest.raises(ValueError, match="depth_scale"):
        w.add_frame(np.zeros((16, 16, 3), np.uint8), cam, [], depth=np.full((16, 16), 7000.0))


def _copy_scene(lmo_dev: Path, dst: Path) -> Path:
    scene = dst / "test" / "000002"
    scene.mkdir(parents=True)
    for name in ("scene_gt.json", "scene_camera.json", "scene_gt_info.json"):
        shutil.copy(lmo_dev / "test/000002" / name, scene / name)
    return scene


def test_errors_name_file_and_key(lmo_dev: Path, tmp_path: Path):
    scene = _copy_scene(lmo_dev, tmp_path / "broken")
    gt = json.loads((scene / "scene_gt.json").read_text())
    key = sorted(gt, key=int)[5]
    gt[key][0]["cam_R_m2c"] = gt[key][0]["cam_R_m2c"][:8]
    (scene / "scene_gt.json").write_text(json.dumps(gt))
    with pytest.raises(BopFormatError) as exc:
        BopDataset(tmp_path / "broken").scene("test", 2)
    msg = str(exc.value)
    assert str(scene / "scene_gt.json") in msg
    assert f"key '{key}' entry 0: cam_R_m2c has 8 numbers, expected 9" in msg

    gt[key][0]["cam_R_m2c"] = [0.0] * 9
    del gt[key][1]["obj_id"]
    (scene / "scene_gt.json").write_text(json.dumps(gt))
    with pytest.raises(BopFormatError, match=rf"key '{key}' entry 1: missing obj_id"):
        BopDataset(tmp_path / "broken").scene("test", 2)

    (scene / "scene_gt.json").write_text('{"3": [')
    with pytest.raises(BopFormatError, match="scene_gt.json: not valid JSON"):
        BopDataset(tmp_path / "broken").scene("test", 2)

    (scene / "scene_camera.json").unlink()
    with pytest.raises(BopFormatError, match="scene_camera.json: file not found"):
        BopDataset(tmp_path / "broken").scene("test", 2)


def test_gt_info_count_mismatch_is_reported(lmo_dev: Path, tmp_path: Path):
    scene = _copy_scene(lmo_dev, tmp_path / "mismatch")
    info = json.loads((scene / "scene_gt_info.json").read_text())
    key = sorted(info, key=int)[0]
    info[key] = info[key][:-1]
    (scene / "scene_gt_info.json").write_text(json.dumps(info))
    with pytest.raises(BopFormatError, match=rf"scene_gt_info.json: key '{key}' has \d+ entries but scene_gt.json"):
        BopDataset(tmp_path / "mismatch").scene("test", 2)
