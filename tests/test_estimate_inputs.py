"""What `posekit estimate` reads from the user: images, cameras, boxes, initial poses; and its overlays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from posekit.errors import InputError
from posekit.estimate import inputs
from posekit.geometry.camera import Camera


@pytest.fixture()
def image_file(tmp_path):
    path = tmp_path / "im.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(path)
    return path


def test_load_image_and_errors(image_file, tmp_path):
    assert inputs.load_image(image_file).shape == (48, 64, 3)
    with pytest.raises(InputError, match="no such image"):
        inputs.load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"bad\.png: not a readable image"):
        inputs.load_image(bad)


def test_camera_from_bop_camera_json_and_size_check(image_file, tmp_path):
    cam_file = tmp_path / "camera.json"
    cam_file.write_text(json.dumps({"fx": 50.0, "fy": 51.0, "cx": 32.0, "cy": 24.0, "width": 64, "height": 48}))
    image = inputs.load_image(image_file)
    cam = inputs.resolve_camera(image, image_file, cam_file, None)
    assert cam.K[0, 0] == 50.0 and cam.K[1, 1] == 51.0 and cam.size == (64, 48)

    cam_file.write_text(json.dumps({"fx": 50.0, "fy": 51.0, "cx": 32.0, "cy": 24.0, "width": 640, "height": 480}))
    with pytest.raises(InputError, match="image is 64x48 but the camera .* is for 640x480"):
        inputs.resolve_camera(image, image_file, cam_file, None)

    cam_file.write_text(json.dumps({"width": 64, "height": 48}))
    with pytest.raises(InputError, match="missing intrinsics fx, fy, cx, cy"):
        inputs.resolve_camera(image, image_file, cam_file, None)

    # with neither --camera nor --K, a camera.json beside the image is the camera
    if cam_file.parent == image_file.parent:
        with pytest.raises(InputError, match="missing intrinsics fx, fy, cx, cy"):
            inputs.resolve_camera(image, image_file, None, None)
    cam_file.unlink()
    with pytest.raises(InputError, match="missing camera intrinsics"):
        inputs.resolve_camera(image, image_file, None, None)


def test_K_option_and_bbox():
    cam = inputs.camera_from_option("500,500,320,240", 640, 480)
    assert np.allclose(cam.K, [[500, 0, 320], [0, 500, 240], [0, 0, 1]])
    with pytest.raises(InputError, match="--K must be fx,fy,cx,cy"):
        inputs.camera_from_option("500,500,320", 640, 480)
    assert inputs.parse_bbox("10,20,30,40", cam) == (10, 20, 30, 40)
    with pytest.raises(InputError, match="outside"):
        inputs.parse_bbox("700,20,30,40", cam)
    with pytest.raises(InputError, match="positive"):
        inputs.parse_bbox("10,20,0,40", cam)


def test_pose_json(tmp_path):
    p = tmp_path / "pose.json"
    p.write_text(json.dumps({"R": np.eye(3).ravel().tolist(), "t": [1, 2, 300]}))
    ((R, t),) = inputs.load_poses_json(p)
    assert np.allclose(R, np.eye(3)) and np.allclose(t, [1, 2, 300])
    p.write_text(json.dumps({"R": [1, 0, 0]}))
    with pytest.raises(InputError, match="missing key"):
        inputs.load_poses_json(p)


def test_every_pose_of_an_estimate_output_is_read_in_order(tmp_path):
    """A `posekit estimate --json` output with two poses gives two initial poses; a bad entry is named."""
    p = tmp_path / "out.json"
    Rz = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    p.write_text(json.dumps({"poses": [{"R": np.eye(3).tolist(), "t": [1, 2, 300]},
                                       {"R": Rz.tolist(), "t": [-5, 0, 450]}]}))
    (R0, t0), (R1, t1) = inputs.load_poses_json(p)
    assert np.allclose(R0, np.eye(3)) and np.allclose(t0, [1, 2, 300])
    assert np.allclose(R1, Rz) and np.allclose(t1, [-5, 0, 450])
    p.write_text(json.dumps({"poses": [{"R": np.eye(3).tolist(), "t": [1, 2, 300]}, {"R": np.eye(3).tolist()}]}))
    with pytest.raises(InputError, match=r"poses\[1\]: missing key"):
        inputs.load_poses_json(p)


def test_mask_file_is_read_binarised_and_checked(tmp_path):
    from PIL import Image

    from posekit.geometry.camera import Camera

    cam = Camera.from_fxfycxcy(500, 500, 160, 120, 320, 240)
    m = np.zeros((240, 320), np.uint8)
    m[100:140, 50:90] = 255
    m[0, 0] = 100  # below the threshold: background
    p = tmp_path / "mask.png"
    Image.fromarray(m).save(p)
    mask = inputs.load_mask(p, cam)
    assert mask.dtype == np.float32 and mask.sum() == 40 * 40 and mask[120, 70] == 1.0 and mask[0, 0] == 0.0
    Image.fromarray(np.zeros((240, 320), np.uint8)).save(p)
    with pytest.raises(InputError, match="empty"):
        inputs.load_mask(p, cam)
    Image.fromarray(m[:120]).save(p)
    with pytest.raises(InputError, match="mask is 320x120 but the image is 320x240"):
        inputs.load_mask(p, cam)


def test_overlay_contour_follows_the_rendered_silhouette(tmp_path):
    """The contour is drawn on the boundary of the model's silhouette at the pose, nowhere else."""
    import trimesh
    from scipy import ndimage

    from posekit.cad.model import ObjectModel
    from posekit.render.gl import OffscreenRenderer
    from posekit.render.types import RenderObject
    from posekit.viz.overlay import draw_pose, save_frames

    box = trimesh.creation.box((60.0, 40.0, 30.0))
    model = ObjectModel(np.asarray(box.vertices), np.asarray(box.faces), diameter=78.1, mesh_hash="box")
    cam = Camera.from_fxfycxcy(300, 300, 80, 60, 160, 120)
    R, t = np.eye(3), np.array([5.0, -3.0, 400.0])
    with OffscreenRenderer(160, 120) as r:
        mask = r.render(cam, [RenderObject(model, R, t)]).masks[0]
        image = np.zeros((120, 160, 3), np.uint8)
        out = draw_pose(image, cam, model, R, t, renderer=r, color=(255, 220, 0), axes=False)
    drawn = np.all(out == (255, 220, 0), axis=-1)
    assert drawn.sum() > 50
    near_edge = mask & ~ndimage.binary_erosion(mask, iterations=3)
    assert np.all(near_edge[drawn])
    frames_path = tmp_path / "iters.gif"
    save_frames(frames_path, [out, image])
    assert Image.open(frames_path).n_frames == 2


@pytest.mark.parametrize("content, needle", [
    ({"fx": 50.0, "fy": 50.0, "cx": 32.0, "cy": 24.0, "width": "abc", "height": 48}, "width and height must be integers"),
    ({"cam_K": ["a"] * 9, "width": 64, "height": 48}, "cam_K"),
    ({"fx": float("nan"), "fy": 50.0, "cx": 32.0, "cy": 24.0, "width": 64, "height": 48}, "finite"),
])
def test_bad_camera_numbers_are_input_errors(tmp_path, content, needle):
    p = tmp_path / "camera.json"
    p.write_text(json.dumps(content))
    with pytest.raises(InputError, match=needle):
        inputs.camera_from_json(p)


@pytest.mark.parametrize("content", [
    {"R": [[1, 0], [0, 1, 0], [0, 0, 1]], "t": [0, 0, 1]},
    {"poses": [1]},
    {"R": [1, 0, 0, 0, 1, 0, 0, 0, "x"], "t": [0, 0, 1]},
])
def test_bad_pose_files_are_input_errors(tmp_path, content):
    p = tmp_path / "pose.json"
    p.write_text(json.dumps(content))
    with pytest.raises(InputError, match="pose.json"):
        inputs.load_poses_json(p)


def test_nan_box_and_K_are_refused():
    cam = Camera.from_fxfycxcy(500, 500, 320, 240, 640, 480)
    with pytest.raises(InputError, match="finite"):
        inputs.parse_bbox("nan,1,5,5", cam)
    with pytest.raises(InputError, match="finite"):
        inputs.camera_from_option("nan,500,320,240", 640, 480)
