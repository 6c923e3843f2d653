"""The refiner pieces: the loss is symmetry-aware, the polish step improves a silhouette fit, a workspace trains,
reloads and refuses the wrong mesh or an accidental overwrite."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from posekit.cad.model import ObjectModel
from posekit.cad.properties import diameter, mesh_hash
from posekit.errors import InputError
from posekit.geometry.rotations import random_rotations, so3_exp
from posekit.geometry.update import target_update
from posekit.methods.refine.loss import pad_symmetries, point_matching_loss
from posekit.methods.refine.presets import PRESETS


def _bracket() -> ObjectModel:
    """An asymmetric L-bracket with a boss (mm), the assets/bracket.stl stand-in when it is absent."""
    import trimesh

    parts = [
        trimesh.creation.box((90, 20, 14)).apply_translation((0, 0, 0)),
        trimesh.creation.box((18, 60, 14)).apply_translation((36, 30, 0)),
        trimesh.creation.cylinder(radius=9, height=30).apply_translation((-32, 0, 18)),
    ]
    mesh = trimesh.util.concatenate(parts)
    v = np.asarray(mesh.vertices, dtype=np.float64)
    v = v - 0.5 * (v.min(0) + v.max(0))
    f = np.asarray(mesh.faces, dtype=np.int64)
    return ObjectModel(vertices=v, faces=f, diameter=diameter(v), mesh_hash=mesh_hash(v, f), name="bracket",
                       obj_id=1)


@pytest.fixture(scope="module")
def bracket(assets) -> ObjectModel:
    path = assets / "bracket.stl"
    if path.is_file():
        from posekit.cad.load import load_model

        m = load_model(path, units="mm", center=True, obj_id=1)
        if not m.is_symmetric:
            return m
    return _bracket()


def _add(R, t, R_gt, t_gt, pts, d):
    """Mean distance of model points (ADD) over the diameter, per pose."""
    a = np.einsum("bij,nj->bni", R, pts) + t[:, None]
    b = np.einsum("bij,nj->bni", R_gt, pts) + t_gt[:, None]
    return np.linalg.norm(a - b, axis=-1).mean(-1) / d


def test_point_loss_is_zero_at_symmetric_truth_and_positive_otherwise():
    rng = np.random.default_rng(0)
    pts = torch.as_tensor(rng.normal(size=(1, 100, 3)) * 50.0)
    R_src = torch.as_tensor(random_rotations(1, 1))
    t_src = torch.tensor([[10.0, -5.0, 700.0]], dtype=torch.float64)
    R_gt = torch.as_tensor(so3_exp(np.array([[0.1, 0.2, -0.1]]))) @ R_src
    t_gt = torch.tensor([[0.0, 0.0, 650.0]], dtype=torch.float64)
    K = torch.tensor([[[572.0, 0, 320], [0, 572.0, 240], [0, 0, 1]]], dtype=torch.float64)
    unit = torch.tensor([64.0], dtype=torch.float64)
    flip = np.eye(4)
    flip[:3, :3] = so3_exp(np.array([0.0, 0.0, np.pi]))
    syms = pad_symmetries([np.stack([np.eye(4), flip])], dtype=torch.float64)
    d = torch.tensor([100.0], dtype=torch.float64)
    # predicting the update to the *flipped* truth costs nothing: the object is symmetric
    R_flip = R_gt @ torch.as_tensor(flip[:3, :3])
    dR, v = target_update(R_src, t_src, R_flip, t_gt, K, unit)
    loss, best, _ = point_matching_loss(dR, v, R_src, t_src, R_gt, t_gt, K, unit, pts, d, syms)
    assert float(loss) < 1e-9 and int(best) == 1
    # without the symmetry it is a large error
    loss1, _, _ = point_matching_loss(dR, v, R_src, t_src, R_gt, t_gt, K, unit, pts, d, syms[:, :1])
    assert float(loss1) > 0.1


def test_polish_improves_silhouette_fit(bracket):
    from posekit.methods.polish import polish
    from posekit.render.diff import DiffRenderer

    torch.set_num_threads(2)
    K = np.array([[[160.0, 0, 31.5], [0, 160.0, 31.5], [0, 0, 1]]])
    R_gt = random_rotations(1, 3)
    t_gt = np.array([[0.0, 0.0, 400.0]])
    dr = DiffRenderer([bracket], image_size=(64, 64), max_faces=500, device="cpu")
    target = dr.render(torch.as_tensor(R_gt), torch.as_tensor(t_gt), torch.as_tensor(K), modes=("silhouette",))
    target = (target["silhouette"] > 0.5).float().numpy()
    t0 = t_gt + np.array([[6.0, -4.0, 25.0]])
    res = polish(dr, [0], R_gt, t0, K, target, steps=15, lr=0.01)
    assert res.loss_after[0] < 0.7 * res.loss_before[0]
    assert np.linalg.norm(res.t[0] - t_gt[0]) < np.linalg.norm(t0[0] - t_gt[0])


def test_load_rejects_non_workspace_and_wrong_mesh(tmp_path, bracket):
    from posekit.methods.refine.refiner import Refiner
    from posekit.methods.refine.train import train_refiner

    torch.set_num_threads(2)
    with pytest.raises(InputError, match="not a refiner workspace"):
        Refiner.load(tmp_path, models=[bracket])
    ws = tmp_path / "ws"
    res = train_refiner([bracket], ws, dataclasses.replace(PRESETS["tiny"], steps=2, batch_size=2), device="cpu",
                        progress=False, pool=2)
    assert res.train.step == 2 and (ws / "checkpoints" / "last.pt").is_file() and (ws / "curves.png").is_file()
    ref = Refiner.load(ws, models=[bracket], device="cpu")
    assert ref.object_index(1) == 0 and ref.object_index("bracket") == 0
    other = dataclasses.replace(bracket, mesh_hash="0" * 16)
    with pytest.raises(InputError, match="mesh hash"):
        Refiner.load(ws, models=[other])
    with pytest.raises(InputError, match="already there"):
        train_refiner([bracket], ws, dataclasses.replace(PRESETS["tiny"], steps=4), device="cpu", progress=False)


def test_cli_train_refine_pool_resume_and_bad_input(tmp_path, assets):
    """`posekit train refine`: a pooled run writes a workspace, --resume continues the step count, and bad
    input (missing CAD, a pool of 0) is one stderr line, exit 2, no workspace left behind."""
    import subprocess
    import sys

    from posekit.train.checkpoint import load_checkpoint

    cad = assets / "bracket.stl"
    ws = tmp_path / "ws"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "posekit", "train", "refine", *args], capture_output=True,
                              text=True, timeout=600)

    base = ["--cad", str(cad), "--out", str(ws), "--preset", "tiny", "--device", "cpu", "--pool", "8"]
    first = run(*base, "--steps", "3")
    assert first.returncode == 0, first.stderr
    assert (ws / "config.json").is_file() and load_checkpoint(ws / "checkpoints" / "last.pt")["step"] == 3
    again = run(*base, "--steps", "5")
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = run(*base, "--steps", "5", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(ws / "checkpoints" / "last.pt")["step"] == 5

    missing = run("--cad", str(tmp_path / "nope.ply"), "--out", str(tmp_path / "ws2"), "--device", "cpu")
    assert missing.returncode == 2 and "nope.ply" in missing.stderr
    assert missing.stderr.strip().count("\n") == 0 and not (tmp_path / "ws2").exists()
    zero = run("--cad", str(cad), "--out", str(tmp_path / "ws3"), "--pool", "0")
    assert zero.returncode == 2 and not (tmp_path / "ws3").exists()
    # --init-from: a workspace whose network has another shape, or no workspace at all -> one line, nothing written
    shape = run("--cad", str(cad), "--out", str(tmp_path / "ws4"), "--preset", "cpu", "--device", "cpu",
                "--init-from", str(ws))
    assert shape.returncode == 2 and "differs" in shape.stderr and "widths" in shape.stderr
    assert shape.stderr.strip().count("\n") == 0 and not (tmp_path / "ws4").exists()
    nows = run(*base[:2], "--out", str(tmp_path / "ws5"), "--init-from", str(tmp_path / "nothing"))
    assert nows.returncode == 2 and "not a refiner workspace" in nows.stderr and not (tmp_path / "ws5").exists()


def test_fine_tuning_starts_from_the_given_weights(tmp_path, bracket):
    """`--init-from`: the new run starts at the other workspace's weights (one step later they are still
    within the optimiser's reach of them, far from a fresh initialisation) and records where it started."""
    import json

    from posekit.methods.refine.train import train_refiner
    from posekit.train.checkpoint import load_checkpoint

    tiny = PRESETS["tiny"]
    kw = dict(device="cpu", progress=False, pool=4, threads=1)
    train_refiner([bracket], tmp_path / "a", tiny, steps=2, seed=0, **kw)
    train_refiner([bracket], tmp_path / "b", tiny, steps=1, seed=5, init_from=tmp_path / "a", **kw)
    train_refiner([bracket], tmp_path / "c", tiny, steps=1, seed=5, **kw)
    w = {k: load_checkpoint(tmp_path / k / "checkpoints" / "last.pt")["model"] for k in "abc"}

    def dist(x, y):
        return max(float((x[n] - y[n]).abs().max()) for n in x if x[n].is_floating_point())

    assert dist(w["b"], w["a"]) < 0.01 < dist(w["c"], w["a"])
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["init_from"] == str((tmp_path / "a").resolve())


def test_pretrained_trunk_preset_trains_resumes_and_keeps_its_imagenet_weights(tmp_path, bracket):
    """The refiner on the shared pretrained trunk: the trunk is frozen (its weights equal the ImageNet ones after
    training), the head learns, a workspace resumes and reloads, and an untrained head leaves poses in place."""
    from posekit.data.types import Observation
    from posekit.features.backbone import Backbone
    from posekit.geometry.camera import Camera
    from posekit.methods.refine.network import PretrainedRefineNet, build_network
    from posekit.methods.refine.refiner import Refiner
    from posekit.methods.refine.train import train_refiner

    torch.set_num_threads(2)
    preset = dataclasses.replace(PRESETS["tiny-pretrained"], batch_size=2)
    fresh = build_network(preset)
    assert isinstance(fresh, PretrainedRefineNet)
    x = torch.rand(2, 7, 64, 64)
    out = fresh(x)
    assert torch.allclose(out.rot6d, torch.tensor([1.0, 0, 0, 0, 1, 0]).expand(2, 6), atol=0.05)
    assert out.v.abs().max() < 0.05 and out.mask_logits.shape == (2, 1, 16, 16)
    ws = tmp_path / "ws"
    kw = dict(device="cpu", progress=False, pool=2)
    train_refiner([bracket], ws, preset, steps=2, **kw)
    res = train_refiner([bracket], ws, preset, steps=3, resume=True, **kw)
    assert res.train.step == 3
    ref = Refiner.load(ws, models=[bracket], device="cpu")
    imagenet = Backbone(freeze=None).truncate("s16").state_dict()
    trained = ref.net.trunk.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in imagenet.items())
    assert not torch.equal(ref.net.fuse8[0].weight, fresh.fuse8[0].weight)
    K = np.array([[300.0, 0, 79.5], [0, 300.0, 59.5], [0, 0, 1]])
    image = np.full((120, 160, 3), 90, np.uint8)
    run = ref.refine(Observation(image=image, camera=Camera(K, 160, 120)), [1], np.eye(3)[None],
                     np.array([[0.0, 0.0, 500.0]]), iters=1)
    assert run.R.shape == (2, 1, 3, 3) and np.isfinite(run.t).all()
    ref.close()


def test_cpu_weights_fine_tune_the_cpu_hr_preset():
    """`--preset cpu-hr --init-from CPU_WS`: the cpu network's weights load into the 128-px network unchanged
    (the last feature map is pooled to a fixed grid) and give its outputs at the larger crop."""
    from posekit.methods.refine.network import RefineNet

    cpu, hr = PRESETS["cpu"], PRESETS["cpu-hr"]
    assert hr.crop_size == (128, 128) and hr.widths == cpu.widths
    torch.manual_seed(0)
    small, big = RefineNet(cpu), RefineNet(hr)
    big.load_state_dict(small.state_dict())  # strict: every tensor has the same shape
    out = big(torch.rand(2, 7, 128, 128))
    assert out.rot6d.shape == (2, 6) and out.v.shape == (2, 3) and out.mask_logits.shape == (2, 1, 32, 32)


def test_refiner_of_several_objects_loads_with_a_subset(tmp_path, bracket):
    """One refiner for several objects serves an image of any one of them (`posekit estimate --cad one.ply`)."""
    import trimesh

    from posekit.cad.properties import diameter, mesh_hash
    from posekit.methods.refine.refiner import Refiner
    from posekit.methods.refine.train import train_refiner

    def shape(mesh, name, obj_id):
        v, f = np.asarray(mesh.vertices, float), np.asarray(mesh.faces, np.int64)
        return ObjectModel(vertices=v, faces=f, diameter=diameter(v), mesh_hash=mesh_hash(v, f), name=name, obj_id=obj_id)

    box = shape(trimesh.creation.box((60.0, 40.0, 20.0)), "box", 7)
    cone = shape(trimesh.creation.cone(30.0, 80.0), "cone", 9)
    ws = tmp_path / "ws"
    train_refiner([dataclasses.replace(bracket, obj_id=3), box], ws,
                  dataclasses.replace(PRESETS["tiny"], steps=1, batch_size=2), device="cpu", progress=False, pool=2)
    ref = Refiner.load(ws, models=[box], device="cpu")
    assert len(ref.objects) == 1 and ref.object_index(7) == 0 and ref.object_index("box") == 0
    run = ref.refine(_observation_of(box), [7], np.eye(3)[None], np.array([[0.0, 0.0, 400.0]]), iters=1)
    assert run.R.shape == (2, 1, 3, 3) and np.isfinite(run.t).all()
    with pytest.raises(InputError, match="not trained on cone"):
        Refiner.load(ws, models=[box, cone])
    ref.close()


def _observation_of(model: ObjectModel):
    from posekit.data.types import Observation
    from posekit.geometry.camera import Camera

    K = np.array([[500.0, 0, 160], [0, 500.0, 120], [0, 0, 1]])
    return Observation(np.full((240, 320, 3), 90, np.uint8), Camera(K, 320, 240))


def test_scored_run_keeps_the_best_iterate_per_detection():
    """`--score`: each detection keeps the iterate whose silhouette agreed best (the start included); unscored
    runs keep the last iteration."""
    from posekit.data.types import RefineRun

    R = np.stack([random_rotations(2, k) for k in range(3)])  # (iters + 1, B, 3, 3)
    t = np.arange(18, dtype=float).reshape(3, 2, 3) + 100.0
    run = RefineRun(R=R, t=t)
    Rf, tf = run.final
    assert np.array_equal(run.best, [2, 2]) and np.array_equal(Rf, R[2]) and np.array_equal(tf, t[2])
    run.scores = np.array([[0.9, 0.1], [0.5, 0.3], [0.2, 0.4]])
    Rf, tf = run.final
    assert np.array_equal(run.best, [0, 2])
    assert np.array_equal(Rf[0], R[0, 0]) and np.array_equal(tf[1], t[2, 1])


def test_refine_with_scores_rates_every_iterate(tmp_path, bracket):
    """refine(score=...) rates the start and each iteration in [0, 1] and the estimator reports the kept one."""
    from posekit.data.types import PoseEstimate
    from posekit.estimate.pipeline import EstimatorConfig, PoseEstimator
    from posekit.methods.refine.refiner import Refiner
    from posekit.methods.refine.train import train_refiner

    ws = tmp_path / "ws"
    train_refiner([bracket], ws, dataclasses.replace(PRESETS["tiny"], steps=1, batch_size=2), device="cpu",
                  progress=False, pool=2)
    ref = Refiner.load(ws, models=[bracket], device="cpu")
    obs = _observation_of(bracket)
    R0, t0 = np.eye(3)[None], np.array([[0.0, 0.0, 400.0]])
    for mode in ("mask", "edges", "features"):
        run = ref.refine(obs, [1], R0, t0, iters=2, score=mode)
        low = -1 if mode == "features" else 0  # a cosine; mask IoU and edge agreement are shares
        assert run.scores.shape == (3, 1) and ((run.scores >= low) & (run.scores <= 1)).all(), mode
    with pytest.raises(InputError, match="--score"):
        ref.refine(obs, [1], R0, t0, iters=2, score="best")
    est = PoseEstimator({1: bracket}, refiner=ref, config=EstimatorConfig(refine_iters=2, refine_score="mask"))
    out = est.refine(obs, [PoseEstimate(obj_id=1, R=R0[0], t=t0[0])])[0]
    kept = out.history[-1]
    assert kept["stage"] == "refine_kept" and 0 <= kept["iteration"] <= 2
    assert np.allclose(np.asarray(kept["t"]), out.t) and np.allclose(np.asarray(kept["R"]).reshape(3, 3), out.R)
    ref.close()


def test_edge_score_prefers_the_true_outline(bracket):
    """The `--score edges` rating: the outline at the true pose lies on the image's edges; outlines shifted by a
    tenth of the diameter, turned by 15 deg or moved 15 % in depth score lower (rendered image, textured
    background)."""
    from posekit.features.edges import contour_edge_agreement
    from posekit.geometry.camera import Camera
    from posekit.render.gl import OffscreenRenderer
    from posekit.render.types import RenderObject

    cam = Camera(np.array([[300.0, 0, 63.5], [0, 300.0, 63.5], [0, 0, 1]]), 128, 128)
    R = random_rotations(1, 7)[0]
    t = np.array([0.0, 0.0, 4.0 * bracket.diameter])
    rng = np.random.default_rng(0)
    bg = np.kron(rng.uniform(0.2, 0.8, (16, 16, 3)), np.ones((8, 8, 1)))  # blocky texture: edges everywhere
    poses = {"truth": (R, t), "shift": (R, t + np.array([0.1 * bracket.diameter, 0, 0])),
             "turn": (so3_exp(np.deg2rad(15.0) * np.array([[0.0, 0.6, 0.8]]))[0] @ R, t),
             "depth": (R, t * np.array([1, 1, 1.15]))}
    with OffscreenRenderer(128, 128) as r:
        res = r.render(cam, [RenderObject(bracket, R, t, color=(0.9, 0.6, 0.3))], with_masks=False)
        fg = (res.labels > 0)[..., None]
        image = np.where(fg, res.rgb / 255.0, bg)
        masks = [r.render(cam, [RenderObject(bracket, Rp, tp)], with_masks=False).labels > 0 for Rp, tp in poses.values()]
    obs = torch.as_tensor(image, dtype=torch.float32).permute(2, 0, 1)[None].expand(len(poses), -1, -1, -1)
    score = dict(zip(poses, contour_edge_agreement(obs, torch.as_tensor(np.stack(masks))[:, None].float()), strict=True))
    print(score)
    assert score["truth"] > 0.5
    for k in ("shift", "turn", "depth"):
        assert score[k] < score["truth"] - 0.1, k


def test_feature_score_prefers_the_true_pose(bracket):
    """The `--score features` rating of DeepIM iterates: renders at the true pose agree with the observed image more
    than renders shifted by a tenth of the diameter, turned by 15 deg, or 10 % farther / nearer (rendered image,
    textured background; margins measured 0.03-0.05 for 10 % in depth)."""
    from posekit.geometry.camera import Camera
    from posekit.methods.refine.refiner import feature_agreement
    from posekit.render.gl import OffscreenRenderer
    from posekit.render.types import RenderObject

    cam = Camera(np.array([[300.0, 0, 63.5], [0, 300.0, 63.5], [0, 0, 1]]), 128, 128)
    R = random_rotations(1, 7)[0]
    t = np.array([0.0, 0.0, 3.0 * bracket.diameter])
    rng = np.random.default_rng(0)
    bg = np.kron(rng.uniform(0.2, 0.8, (16, 16, 3)), np.ones((8, 8, 1)))
    poses = {"truth": (R, t), "shift": (R, t + np.array([0.1 * bracket.diameter, 0, 0])),
             "turn": (so3_exp(np.deg2rad(15.0) * np.array([[0.0, 0.6, 0.8]]))[0] @ R, t),
             "farther": (R, t * 1.1), "nearer": (R, t * 0.9)}
    with OffscreenRenderer(128, 128) as r:
        res = r.render(cam, [RenderObject(bracket, R, t, color=(0.9, 0.6, 0.3))], with_masks=False)
        image = np.where((res.labels > 0)[..., None], res.rgb / 255.0, bg)
        renders = [r.render(cam, [RenderObject(bracket, Rp, tp)], with_masks=False) for Rp, tp in poses.values()]
    rgb = torch.stack([torch.from_numpy(x.rgb).permute(2, 0, 1).float() / 255.0 for x in renders])
    masks = torch.stack([torch.from_numpy(x.labels > 0)[None].float() for x in renders])
    obs = torch.as_tensor(image, dtype=torch.float32).permute(2, 0, 1)[None]
    score = dict(zip(poses, feature_agreement(obs, rgb, masks, len(poses))[0], strict=True))
    print(score)
    for k in ("shift", "turn", "farther", "nearer"):
        assert score[k] < score["truth"] - 0.02, k


def test_photo_backgrounds_fill_the_share_given(tmp_path):
    """`--backgrounds`: with background_image_p=1 every observed background is a crop of the user's photos, with
    0 none is (here a single flat-coloured photo, so a crop of it is that colour everywhere)."""
    from PIL import Image

    from posekit.methods.refine.pairs import SyntheticObserved

    colour = np.array([230, 20, 150], np.uint8)
    Image.fromarray(np.broadcast_to(colour, (120, 160, 3)).copy()).save(tmp_path / "cell.png")
    base = dataclasses.replace(PRESETS["tiny"], dark_bg_p=0.0)
    photos = SyntheticObserved.load_photos(tmp_path, base)
    target = torch.as_tensor(colour / 255.0, dtype=torch.float32).view(1, 3, 1, 1)
    for p, expect in ((1.0, True), (0.0, False)):
        src = SyntheticObserved([], dataclasses.replace(base, background_image_p=p), None, backgrounds=photos)
        bg = src.backgrounds_for(6, torch.Generator().manual_seed(1))
        is_photo = ((bg - target).abs().amax(dim=(1, 2, 3)) < 0.01).tolist()
        assert is_photo == [expect] * 6


def test_cli_train_refine_backgrounds_recorded_and_checked(tmp_path, assets):
    """`posekit train refine --backgrounds DIR` records the folder in config.json (a resumed run keeps it); a
    folder without images is one stderr line, exit 2, and no workspace."""
    import json
    import subprocess
    import sys

    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(photos / f"{k}.jpg")
    (tmp_path / "empty").mkdir()
    ws = tmp_path / "ws"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "posekit", "train", "refine", "--cad", str(assets / "bracket.stl"),
                               "--preset", "tiny", "--device", "cpu", "--pool", "4", *args],
                              capture_output=True, text=True, timeout=600)

    empty = run("--out", str(tmp_path / "ws2"), "--backgrounds", str(tmp_path / "empty"), "--steps", "1")
    assert empty.returncode == 2 and "no background images" in empty.stderr
    assert empty.stderr.strip().count("\n") == 0 and not (tmp_path / "ws2").exists()
    first = run("--out", str(ws), "--backgrounds", str(photos), "--steps", "1")
    assert first.returncode == 0, first.stderr
    resumed = run("--out", str(ws), "--steps", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    cfg = json.loads((ws / "config.json").read_text())
    assert cfg["backgrounds"] == {"folder": str(photos.resolve()), "images": 2}


def test_both_refiner_renderers_draw_the_same_crops(bracket):
    """`--renderer pyrender` (the CPU's) and `--renderer pytorch3d` (CUDA's) must show the network the same
    object in the same zoom crop: silhouettes agree (a flipped axis or a wrong crop K would not), shading
    correlates (its brightness differs; training jitters the rendering's gain and gamma for that)."""
    from posekit.geometry.crop import crop_intrinsics
    from posekit.methods.refine.pairs import prepare_object, zoom_windows
    from posekit.render.crops import render_in_crops
    from posekit.render.diff import DiffRenderer
    from posekit.render.gl import OffscreenRenderer

    preset = PRESETS["cpu"]
    obj = prepare_object(bracket, preset)
    B, idx = 6, np.zeros(6, np.int64)
    R = random_rotations(B, 0)
    t = np.stack([np.linspace(-80, 80, B), np.linspace(40, -40, B), np.linspace(450, 900, B)], axis=1)
    K = np.tile(np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1]]), (B, 1, 1))
    Kc = crop_intrinsics(torch.as_tensor(K), torch.as_tensor(zoom_windows([obj], idx, R, t, K, preset)),
                         preset.crop_size).numpy()
    with OffscreenRenderer(*preset.crop_size) as r:
        rgb_gl, m_gl = render_in_crops(r, [obj.render_model], idx, R, t, Kc, preset.crop_size)
    diff = DiffRenderer([obj.render_model], image_size=preset.crop_size, max_faces=None, device="cpu", hard=True)
    f32 = (lambda a: torch.as_tensor(a, dtype=torch.float32))  # noqa: E731
    rgb_p3, m_p3 = render_in_crops(diff, [obj.render_model], idx, f32(R), f32(t), f32(Kc), preset.crop_size)
    a, b = m_gl[:, 0] > 0.5, m_p3[:, 0] > 0.5
    iou = ((a & b).sum((1, 2)) / (a | b).sum((1, 2))).numpy()
    assert (iou > 0.97).all(), iou
    for i in range(B):
        inside = (a & b)[i]
        corr = np.corrcoef(rgb_gl[i].mean(0)[inside].numpy(), rgb_p3[i].mean(0)[inside].numpy())[0, 1]
        assert corr > 0.6, (i, corr)


@pytest.mark.slow
def test_torchrun_processes_train_and_resume_one_workspace(tmp_path, assets):
    """`torchrun --nproc_per_node=2 -m posekit train refine`: the several-GPU path, run on the CPU through Gloo.
    Two ranks train one workspace (rank 0 writes it and reports once), and a resumed run continues it."""
    import subprocess
    import sys

    from posekit.train.checkpoint import load_checkpoint

    ws = tmp_path / "ws"

    def torchrun(*extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "posekit",
               "train", "refine", "--cad", str(assets / "bracket.stl"), "--out", str(ws), "--preset", "tiny",
               "--pool", "32", "--device", "cpu", *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600)

    r = torchrun("--steps", "12")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("trained tiny refiner") == 1, r.stdout
    state = load_checkpoint(ws / "checkpoints" / "last.pt")
    assert state["step"] == 12 and state["config"]["world_size"] == 2
    r = torchrun("--steps", "20", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stderr and r.stdout.count("to step 20") == 1, (r.stdout, r.stderr[-2000:])
    state = load_checkpoint(ws / "checkpoints" / "last.pt")
    assert state["step"] == 20 and len(state["history"]["loss"]) == 20


def test_corr_combine_sees_the_photo_only_through_cosines_and_old_workspaces_keep_concat():
    """`cpu-pretrained-corr`: the local correlation finds a known shift of a map, ignores the maps' strength (a real
    photo's texture against a flat render), its network starts near "no update"; a workspace config written before
    the option existed (no "combine") loads as the concatenating head it was trained with."""
    from posekit.features.similarity import local_correlation
    from posekit.methods.refine.network import CORR_RADIUS, PretrainedRefineNet, build_network
    from posekit.methods.refine.presets import RefinePreset

    torch.manual_seed(0)
    a = torch.randn(2, 8, 9, 10)
    b = torch.roll(a, shifts=(1, -2), dims=(2, 3))  # b[y + 1, x - 2] = a[y, x]
    r = 3
    c = local_correlation(a, b, r)
    assert c.shape == (2, 49, 9, 10)
    k = (1 + r) * (2 * r + 1) + (-2 + r)
    inner = c[:, :, 1:8, 2:8]  # cells whose shifted neighbour is inside the map (not wrapped by roll)
    assert torch.allclose(inner[:, k], torch.ones_like(inner[:, k]), atol=1e-5)
    assert (inner.argmax(1) == k).all()
    assert torch.allclose(local_correlation(5.0 * a, 0.2 * b, r), c, atol=1e-5)
    assert c[:, 0, 0, 0].abs().max() == 0  # (dy, dx) = (-3, -3) from the corner lies outside: 0
    preset = PRESETS["cpu-pretrained-corr"]
    assert preset.combine == "corr" and PRESETS["cpu-pretrained"].combine == "concat"
    net = build_network(dataclasses.replace(preset, crop_size=(64, 64)))
    assert isinstance(net, PretrainedRefineNet) and set(CORR_RADIUS) == {"s8", "s16"}
    out = net(torch.rand(2, 7, 64, 64))
    assert torch.allclose(out.rot6d, torch.tensor([1.0, 0, 0, 0, 1, 0]).expand(2, 6), atol=0.05)
    assert out.v.abs().max() < 0.05
    old = PRESETS["cpu-pretrained"].to_json()
    del old["combine"]
    assert RefinePreset.from_json(old).combine == "concat"
    assert RefinePreset.from_json(preset.to_json()) == preset
    with pytest.raises(ValueError, match="combine"):
        build_network(dataclasses.replace(preset, combine="sum"))


def test_edge_score_with_spread_forgives_a_pixel_or_two_but_not_a_wrong_outline(bracket):
    """The detector's outline check (``spread=2``): an outline 2 px off the part's real one scores about as the
    true one (without spread it loses); an outline shifted by a tenth of the diameter still scores lower."""
    from posekit.features.edges import contour_edge_agreement
    from posekit.geometry.camera import Camera
    from posekit.render.gl import OffscreenRenderer
    from posekit.render.types import RenderObject

    cam = Camera(np.array([[300.0, 0, 63.5], [0, 300.0, 63.5], [0, 0, 1]]), 128, 128)
    R = random_rotations(1, 7)[0]
    t = np.array([0.0, 0.0, 4.0 * bracket.diameter])
    rng = np.random.default_rng(0)
    bg = np.kron(rng.uniform(0.2, 0.8, (16, 16, 3)), np.ones((8, 8, 1)))
    px = t[2] / cam.K[0, 0]  # mm per pixel at the part's depth
    poses = {"truth": t, "2px": t + np.array([2.0 * px, 0, 0]), "far": t + np.array([0.1 * bracket.diameter, 0, 0])}
    with OffscreenRenderer(128, 128) as r:
        res = r.render(cam, [RenderObject(bracket, R, t, color=(0.9, 0.6, 0.3))], with_masks=False)
        image = np.where((res.labels > 0)[..., None], res.rgb / 255.0, bg)
        masks = [r.render(cam, [RenderObject(bracket, R, tp)], with_masks=False).labels > 0 for tp in poses.values()]
    obs = torch.as_tensor(image, dtype=torch.float32).permute(2, 0, 1)[None].expand(len(poses), -1, -1, -1)
    m = torch.as_tensor(np.stack(masks))[:, None].float()
    plain = dict(zip(poses, contour_edge_agreement(obs, m), strict=True))
    spread = dict(zip(poses, contour_edge_agreement(obs, m, spread=2), strict=True))
    assert spread["2px"] > spread["truth"] - 0.05, spread
    assert plain["2px"] < plain["truth"] - 0.1, plain
    assert spread["far"] < spread["truth"] - 0.1, spread


def test_colour_agreement_tells_the_parts_colours_from_others_under_any_shading():
    """The detector's colour check: the same colours darker (shading, exposure) agree; another hue does not; the
    mask decides which pixels count."""
    from posekit.features.colour import colour_agreement

    rng = np.random.default_rng(3)
    part = np.zeros((64, 64, 3))
    part[:, :32] = (0.9, 0.75, 0.1)  # yellow half
    part[:, 32:] = (0.2, 0.2, 0.2)  # dark grey half
    part = part + rng.normal(0, 0.02, part.shape)
    darker = part * 0.6
    other = part[..., [2, 0, 1]]  # the yellow becomes blue-ish
    t = lambda a: torch.as_tensor(np.clip(a, 0, 1), dtype=torch.float32).permute(2, 0, 1)[None]  # noqa: E731
    mask = torch.ones(1, 1, 64, 64)
    assert colour_agreement(t(part), t(part), mask)[0] > 0.99
    assert colour_agreement(t(darker), t(part), mask)[0] > 0.8
    assert colour_agreement(t(other), t(part), mask)[0] < 0.6
    half = torch.zeros(1, 1, 64, 64)
    half[..., :32] = 1  # only the yellow half counts: a photo grey there disagrees
    grey_there = part.copy()
    grey_there[:, :32] = 0.5
    assert colour_agreement(t(grey_there), t(part), half)[0] < 0.1
