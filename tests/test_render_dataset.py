"""posekit.render: view spheres, scene sampling, backgrounds, and the resumable / sharded BOP dataset writer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.ndimage import binary_dilation

from posekit.cad.model import ObjectModel
from posekit.data.bop import BopDataset
from posekit.errors import InputError
from posekit.geometry.camera import project_points
from posekit.render.backgrounds import PROCEDURAL_KINDS, ImageBackgrounds, procedural_background
from posekit.render.dataset import (
    RenderJob,
    default_camera,
    load_camera,
    merge_shards,
    run_job,
)
from posekit.render.scenes import RandomizationConfig, image_rng, sample_scene
from posekit.render.views import fibonacci_sphere, render_clean_views, view_sphere_rotations


def _model(mesh: trimesh.Trimesh, name: str, offset=(0.0, 0.0, 0.0)) -> ObjectModel:
    v = np.asarray(mesh.vertices, dtype=np.float64) + np.asarray(offset)
    rng = np.random.default_rng(0)
    return ObjectModel(vertices=v, faces=np.asarray(mesh.faces, dtype=np.int64),
                       diameter=float(np.linalg.norm(v.max(0) - v.min(0))), mesh_hash=name, name=name,
                       vertex_colors=rng.uniform(0.2, 1.0, (len(v), 3)).astype(np.float32))


@pytest.fixture(scope="module")
def models() -> list[ObjectModel]:
    # An off-centre CAD frame: poses must still refer to the model frame, placement to the bbox centre.
    return [_model(trimesh.creation.box((60, 40, 20)), "box", offset=(30, -10, 5)),
            _model(trimesh.creation.cylinder(15, 70, sections=16), "cyl")]


def _tree_bytes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- views


def test_view_sphere_cameras_look_at_object_from_fibonacci_points():
    Rs = view_sphere_rotations(50, 4)
    assert Rs.shape == (200, 3, 3)
    assert np.allclose(Rs @ Rs.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(Rs), 1.0)
    t = np.array([0.0, 0.0, 500.0])
    cams = -np.einsum("nji,j->ni", Rs, t) / 500.0  # camera centres in the model frame, unit distance
    assert np.allclose(cams[::4], fibonacci_sphere(50), atol=1e-9)
    assert np.allclose(cams[1::4], cams[::4], atol=1e-9)  # in-plane turns keep the view point
    upper = view_sphere_rotations(30, 2, hemisphere=True)
    assert np.all(-np.einsum("nji,j->ni", upper, t)[:, 2] >= 0)
    assert view_sphere_rotations(2562, 36).shape == (92232, 3, 3)  # the AAE codebook size


def test_render_clean_views_centres_the_object_on_black(models):
    Rs = view_sphere_rotations(3, 1)
    views = render_clean_views(models[1], Rs, size=(64, 64), distance=400.0)
    assert views.rgb.shape == (3, 64, 64, 3) and views.mask.shape == (3, 64, 64)
    for i in range(3):
        ys, xs = np.nonzero(views.mask[i])
        assert len(xs) > 50
        assert abs(xs.mean() - 31.5) < 4 and abs(ys.mean() - 31.5) < 4  # centred (cylinder bbox centre = origin)
        near = binary_dilation(views.mask[i], iterations=1)  # anti-aliased edge pixels may be partly lit
        assert views.rgb[i][~near].max() == 0  # black background
        d = views.depth[i][views.mask[i]]
        assert 400 - models[1].diameter / 2 - 1 < d.min() and d.max() < 400 + models[1].diameter / 2 + 1


# --------------------------------------------------------------------------- sampling


def test_scene_sampling_is_a_pure_function_of_seed_and_index(models):
    cam = default_camera((128, 96))
    cfg = RandomizationConfig()
    a = sample_scene(cfg, models, [], cam, image_rng(7, 3), 3)
    b = sample_scene(cfg, models, [], cam, image_rng(7, 3), 3)
    c = sample_scene(cfg, models, [], cam, image_rng(7, 4), 4)
    assert len(a.objects) == len(b.objects)
    for oa, ob in zip(a.objects, b.objects, strict=True):
        assert np.array_equal(oa.R, ob.R) and np.array_equal(oa.t, ob.t) and oa.color == ob.color
    assert a.bg_seed == b.bg_seed and a.bg_seed != c.bg_seed


def test_rotations_are_uniform_or_upper_hemisphere_and_objects_land_in_frame(models):
    cam = default_camera((160, 120))
    cfg = RandomizationConfig(objects=(1, 1), primitives=0, occluders=0, out_of_frame=0.0)
    Rs, inside = [], 0
    for i in range(600):
        s = sample_scene(cfg, models[:1], [], cam, image_rng(1, i), i)
        o = s.targets[0]
        Rs.append(o.R)
        centre = o.R @ (models[0].bbox_min + models[0].bbox_size / 2) + o.t
        uv = project_points(centre[None], cam.K)[0]
        inside += 0 <= uv[0] <= 159 and 0 <= uv[1] <= 119
        lo, hi = (cam.K[0, 0] * models[0].diameter / (f * 120) for f in (0.6, 0.2))
        assert lo * 0.99 <= np.linalg.norm(centre) <= hi * 1.2
    assert inside == 600
    # Haar measure on SO(3): E[R] = 0.
    assert np.abs(np.mean(Rs, axis=0)).max() < 0.08
    up = RandomizationConfig(objects=(1, 1), primitives=0, occluders=0, views="upper")
    b = models[0].bbox_min + models[0].bbox_size / 2
    for i in range(200):
        o = sample_scene(up, models[:1], [], cam, image_rng(2, i), i).targets[0]
        cam_in_model = -o.R.T @ o.t
        assert (cam_in_model - b)[2] >= -1e-6


def test_procedural_backgrounds_are_deterministic_and_varied():
    for kind in PROCEDURAL_KINDS:
        a = procedural_background(np.random.default_rng(5), 64, 48, kind)
        b = procedural_background(np.random.default_rng(5), 64, 48, kind)
        assert a.shape == (48, 64, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
        assert a.std() > 1.0, kind


def test_image_backgrounds_crop_user_images(tmp_path):
    from PIL import Image

    with pytest.raises(InputError, match="no images"):
        ImageBackgrounds.from_dir(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 80, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="b.jpg"):
        ImageBackgrounds.from_dir(tmp_path)
    (tmp_path / "b.jpg").unlink()
    bg = ImageBackgrounds.from_dir(tmp_path)
    img = bg.sample(np.random.default_rng(1), 32, 24)
    assert img.shape == (24, 32, 3) and img.dtype == np.uint8


def test_load_camera_requires_K_and_scales_to_size(tmp_path):
    p = tmp_path / "camera.json"
    p.write_text('{"width": 640, "height": 480}')
    with pytest.raises(InputError, match="camera.json.*K"):
        load_camera(p)
    p.write_text('{"fx": 572.0, "fy": 573.0, "cx": 325.0, "cy": 242.0, "width": 640, "height": 480}')
    assert load_camera(p).size == (640, 480)
    half = load_camera(p, (320, 240))
    assert half.K[0, 0] == pytest.approx(286.0) and half.K[0, 2] == pytest.approx((325.0 + 0.5) / 2 - 0.5)


# --------------------------------------------------------------------------- dataset


def _job(models, count=8, seed=3, **cfg) -> RenderJob:
    return RenderJob(targets=models, camera=default_camera((128, 96)), count=count, seed=seed,
                     config=RandomizationConfig(**cfg))


def test_dataset_reads_back_with_consistent_masks_poses_and_info(tmp_path, models):
    out = tmp_path / "ds"
    s = run_job(_job(models, count=6, objects=(2, 3), out_of_frame=0.5), out, progress=False)
    assert s.rendered == 6
    ds = BopDataset(out)
    assert ds.obj_ids == [1, 2]
    assert ds.models_info[1]["diameter"] == pytest.approx(models[0].diameter)
    n_gt = 0
    for f in ds.frames("train_synt"):
        assert f.rgb().shape == (96, 128, 3)
        depth = f.depth()
        for g, gt in enumerate(f.gts):
            n_gt += 1
            m, mv = f.mask(g), f.mask_visib(g)
            assert not (mv & ~m).any()
            info = gt.info
            assert info.px_count_visib == mv.sum() and info.px_count_all >= m.sum()
            assert info.visib_fract == pytest.approx(mv.sum() / info.px_count_all)
            model = models[gt.obj_id - 1]
            # The pose explains the mask: projected vertices span bbox_obj (which may extend out of frame).
            uv = project_points(model.vertices, f.camera.K, gt.R, gt.t)
            x, y, w, h = info.bbox_obj
            assert abs(uv[:, 0].min() - x) < 1.5 and abs(uv[:, 0].max() - (x + w - 1)) < 1.5
            assert abs(uv[:, 1].min() - y) < 1.5 and abs(uv[:, 1].max() - (y + h - 1)) < 1.5
            if mv.any():
                z = depth[mv]
                assert np.all(np.abs(z - gt.t[2] - (gt.R @ model.vertices.mean(0))[2]) < model.diameter)
    assert n_gt >= 12


def test_interrupted_run_resumes_to_the_same_bytes_and_refuses_other_jobs(tmp_path, models):
    ref, part = tmp_path / "ref", tmp_path / "part"
    run_job(_job(models), ref, progress=False)

    def stop(rec, seen=[]):  # noqa: B006 - a counter across calls
        seen.append(rec)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(_job(models), part, progress=False, flush_every=2, on_frame=stop)
    again = run_job(_job(models), part, progress=False)
    assert again.skipped == 5 and again.rendered == 3
    assert _tree_bytes(part) == _tree_bytes(ref)
    before = _tree_bytes(part)
    assert run_job(_job(models), part, progress=False).rendered == 0  # a finished job does nothing
    assert _tree_bytes(part) == before
    with pytest.raises(InputError, match="posekit_render_job.json.*differs in: seed"):
        run_job(_job(models, seed=4), part, progress=False)


def test_shards_merge_to_the_unsharded_run_and_workers_do_not_change_bytes(tmp_path, models):
    ref = tmp_path / "ref"
    run_job(_job(models, count=7), ref, workers=2, progress=False)
    shards = []
    for i in range(3):
        job = _job(models, count=7)
        job.shard = (i, 3)
        run_job(job, tmp_path / f"s{i}", progress=False)
        shards.append(tmp_path / f"s{i}")
    merge_shards(shards, tmp_path / "merged", progress=False)
    assert _tree_bytes(tmp_path / "merged") == _tree_bytes(ref)
    # A merged folder is the unsharded job: its command finds nothing left to do.
    assert run_job(_job(models, count=7), tmp_path / "merged", progress=False).rendered == 0


def test_contact_sheet_draws_samples(tmp_path, models):
    from PIL import Image

    from posekit.viz.sheet import contact_sheet

    run_job(_job(models, count=3), tmp_path / "ds", progress=False)
    path = contact_sheet(tmp_path / "ds", tmp_path / "sheet.png", n=3, cols=2, thumb_width=100)
    with Image.open(path) as im:
        assert im.size[0] == 2 * 104 + 4 and im.size[1] > 2 * 75
