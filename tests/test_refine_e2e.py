"""End to end: a tiny refiner (from scratch, and on the pretrained trunk) trained on the demo part (assets/bracket.stl) moves perturbed poses
towards the truth on freshly rendered images with random backgrounds -- rendering, pairs, network, loss, training,
workspace reload and the iterative update all have to work together for that."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posekit.data.types import Observation
from posekit.geometry.camera import Camera
from posekit.methods.refine.presets import PRESETS


def _add(R, t, R_gt, t_gt, pts):
    """Mean distance (mm) between the model points at two poses, per pose."""
    a = np.einsum("bij,nj->bni", R, pts) + t[:, None]
    b = np.einsum("bij,nj->bni", R_gt, pts) + t_gt[:, None]
    return np.linalg.norm(a - b, axis=-1).mean(-1)


# the from-scratch tiny preset trains for minutes on 2 cores (slow: `pytest -m slow`); the pretrained one in ~20 s
@pytest.mark.parametrize("preset_name", [pytest.param("tiny", marks=pytest.mark.slow), "tiny-pretrained"])
def test_tiny_refiner_reduces_pose_error_on_rendered_images(tmp_path, assets, preset_name):
    from posekit.cad.load import load_model
    from posekit.methods.refine.pairs import SyntheticObserved, perturb_poses, prepare_object, torch_rng
    from posekit.methods.refine.refiner import Refiner
    from posekit.methods.refine.train import train_refiner
    from posekit.render.gl import OffscreenRenderer

    torch.set_num_threads(2)
    torch.manual_seed(0)
    np.random.seed(0)
    model = load_model(assets / "bracket.stl", units="mm", center=True, obj_id=1)
    preset = PRESETS[preset_name]
    train_refiner([model], tmp_path / "ws", preset, device="cpu", progress=False, seed=0, pool=256)
    refiner = Refiner.load(tmp_path / "ws", models=[model], device="cpu", renderer="pyrender")

    # held-out observations: another seed, the preset's pose noise around the truth
    obj = prepare_object(model, preset)
    n = 24
    with OffscreenRenderer(*SyntheticObserved.patch_size_for(preset)) as r:
        obs = SyntheticObserved([obj], preset, r).sample(n, torch.Generator().manual_seed(12345))
    R0, t0 = perturb_poses(obs.R, obs.t, preset, torch_rng(torch.Generator().manual_seed(54321)))
    R2, t2 = np.empty_like(R0), np.empty_like(t0)
    H, W = obs.images.shape[-2:]
    for i in range(n):
        image = (obs.images[i].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        run = refiner.refine(Observation(image=image, camera=Camera(obs.K[i], W, H)), [1], R0[i:i + 1], t0[i:i + 1],
                             iters=2)
        R2[i], t2[i] = run.R[-1, 0], run.t[-1, 0]
    refiner.close()

    pts = obj.points
    add_before = _add(R0, t0, obs.R, obs.t, pts).mean()
    add_after = _add(R2, t2, obs.R, obs.t, pts).mean()
    te_before = np.linalg.norm(t0 - obs.t, axis=1).mean()
    te_after = np.linalg.norm(t2 - obs.t, axis=1).mean()
    print(f"ADD/d {add_before / obj.diameter:.3f} -> {add_after / obj.diameter:.3f}, "
          f"|dt| {te_before:.1f} -> {te_after:.1f} mm")
    assert add_after < 0.8 * add_before
    assert te_after < 0.8 * te_before
