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


def _photo(h=48, w=64, seed=0) -> np.ndarray:
    """A smooth colour picture (gradients and a blob): what a palette or JPEG keeps nearly as it is."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    blob = np.exp(-((x - 0.6 * w) ** 2 + (y - 0.4 * h) ** 2) / (0.05 * w * h))
    rgb = np.stack([255 * x / w, 255 * y / h, 200 * blob + 30], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


@pytest.mark.parametrize("case", ["8-bit grey", "16-bit grey", "16-bit grey, 12-bit data", "16-bit RGB",
                                  "16-bit RGB, 12-bit data", "palette", "RGBA", "CMYK JPEG"])
def test_images_in_every_mode_read_as_the_rgb_they_show(tmp_path, case):
    """Each mode a camera or an editor writes reads as (nearly) the 8-bit RGB it shows: 16-bit samples scaled by
    their depth's range (a 12-bit camera's 0-4095 by 4095), never clipped (16-bit grey used to read almost
    white); palette, alpha and CMYK converted. The reference is the 8-bit picture the file was made from."""
    from helpers import write_png16

    rgb = _photo()
    grey3 = np.repeat(_grey(rgb)[..., None], 3, axis=2)
    path, want, tol = tmp_path / "im.png", rgb, 0
    if case == "8-bit grey":
        Image.fromarray(_grey(rgb)).save(path)
        want = grey3
    elif case == "16-bit grey":
        Image.fromarray(_grey(rgb).astype(np.uint16) * 257).save(path)  # 0-255 -> 0-65535
        want = grey3
    elif case == "16-bit grey, 12-bit data":
        write_png16(path, np.rint(_grey(rgb) / 255.0 * 4095).astype(np.uint16))
        want, tol = grey3, 1
    elif case == "16-bit RGB":
        write_png16(path, rgb.astype(np.uint16) * 257)
    elif case == "16-bit RGB, 12-bit data":
        write_png16(path, np.rint(rgb / 255.0 * 4095).astype(np.uint16))
        tol = 1
    elif case == "palette":
        pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
        pal.save(path)
        want = np.asarray(pal.convert("RGB"))  # the palette's own colours, exactly
        assert np.abs(want.astype(int) - rgb).mean() < 6
    elif case == "RGBA":
        alpha = np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2]).astype(np.uint8)
        Image.fromarray(np.dstack([rgb, alpha])).save(path)
    else:
        path = tmp_path / "im.jpg"
        Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
        tol = 24
    loaded = inputs.read_image(path)
    assert loaded.rgb.shape == rgb.shape and loaded.rgb.dtype == np.uint8
    diff = np.abs(loaded.rgb.astype(int) - want.astype(int))
    assert diff.max() <= tol and diff.mean() <= max(tol / 6, 0), (case, diff.max(), diff.mean())
    if case != "RGBA" and "RGB" in case:
        assert "16-bit RGB" in loaded.converted and ("4095" if "12-bit" in case else "65535") in loaded.converted


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_on_load_and_named_in_the_camera_check(tmp_path, orientation):
    """A picture stored sideways with an EXIF Orientation reads upright (as PIL.ImageOps.exif_transpose shows
    it); a camera for the stored size is refused in one message that names the orientation."""
    from PIL import ImageOps

    stored = _photo(h=64, w=48)  # stored portrait
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "shot.png"
    Image.fromarray(stored).save(path, exif=exif.tobytes())
    loaded = inputs.read_image(path)
    with Image.open(path) as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert np.array_equal(loaded.rgb, upright) and loaded.stored_size == (48, 64)
    assert loaded.orientation == orientation
    turned = orientation >= 5
    assert loaded.size == ((64, 48) if turned else (48, 64))
    if turned:
        assert f"EXIF orientation {orientation} applied (stored 48x64)" in loaded.describe()
        cam_file = tmp_path / "camera.json"  # the stored image's camera, beside it
        cam_file.write_text(json.dumps({"fx": 50, "fy": 50, "cx": 24, "cy": 32, "width": 48, "height": 64}))
        with pytest.raises(InputError, match=f"64x48 after its EXIF orientation {orientation} .stored 48x64. but the "
                                             "camera .* is for 48x64"):
            inputs.find_camera(loaded, path, None, None)


def test_a_directory_or_an_unreadable_file_is_named_as_such(tmp_path):
    import os

    with pytest.raises(InputError, match="is a directory, not an image"):
        inputs.read_image(tmp_path)
    locked = tmp_path / "locked.png"
    Image.fromarray(_photo()).save(locked)
    os.chmod(locked, 0)
    try:
        if os.access(locked, os.R_OK):  # root reads anything: nothing to test here
            pytest.skip("running as a user who can read a mode-000 file")
        with pytest.raises(InputError, match="cannot be read .permission denied."):
            inputs.read_image(locked)
    finally:
        os.chmod(locked, 0o644)


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


K3 = [[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("content", [
    {"K": K3, "width": 640, "height": 480},  # posekit's own form (its --json writes it)
    {"camera": {"K": K3, "width": 640, "height": 480}, "image": "x.png", "poses": []},  # a whole estimate output
    {"K": sum(K3, []), "width": 640, "height": 480},
    {"cam_K": sum(K3, []), "depth_scale": 1.0, "width": 640, "height": 480},  # BOP
    {"fx": 572.4, "fy": 573.6, "cx": 325.3, "cy": 242.0, "width": 640, "height": 480, "depth_scale": 0.1},
])
def test_camera_files_in_every_accepted_form_give_the_same_camera(tmp_path, content):
    p = tmp_path / "cam.json"
    p.write_text(json.dumps(content))
    cam = inputs.camera_from_json(p)
    assert np.allclose(cam.K, K3) and cam.size == (640, 480)


@pytest.mark.parametrize("content, needle", [
    ({"fx": 572.4, "fy": 573.6, "cx": 325.3, "cy": 242.0, "widht": 640, "height": 480},
     r"unknown key\(s\) 'widht'; a camera has K \(3x3 or 9 numbers\) or cam_K \(9 numbers\) or fx, fy, cx, cy, and "
     r"width, height"),
    ({"camera": {"K": K3, "width": 640, "height": 480, "dist": [0, 0]}}, r"cam.json: camera: unknown key\(s\) 'dist'"),
    ({"K": K3, "fx": 500, "fy": 500, "cx": 320, "cy": 240}, "intrinsics given twice"),
    ({"K": [[500, 0, 320], [0, 500, 240], [0, 1, 1]], "width": 640, "height": 480}, "not a camera matrix"),
    ({"K": [[500, 0, 320], [0, 500, 240]], "width": 640, "height": 480}, "must hold 9 finite numbers"),
    # bad numbers
    ({"fx": 50.0, "fy": 50.0, "cx": 32.0, "cy": 24.0, "width": "abc", "height": 48}, "width and height must be integers"),
    ({"cam_K": ["a"] * 9, "width": 64, "height": 48}, "cam_K"),
    ({"fx": float("nan"), "fy": 50.0, "cx": 32.0, "cy": 24.0, "width": 64, "height": 48}, "finite"),
])
def test_camera_files_with_unknown_keys_two_forms_or_bad_numbers_are_refused_naming_the_accepted_ones(tmp_path, content, needle):
    p = tmp_path / "cam.json"
    p.write_text(json.dumps(content))
    with pytest.raises(InputError, match=needle):
        inputs.camera_from_json(p)


@pytest.mark.parametrize("box, needle", [
    ("235,364,1,1", "a side of 1 px is too small .at least 16 px"),
    ("300,200,15,80", "a side of 15 px is too small"),
    ("600,440,100,100", "only 16 % of it lies inside the 640x480 image"),
    ("-60,10,100,100", "only 40 % of it lies inside"),
])
def test_boxes_too_small_or_mostly_outside_are_refused(box, needle):
    cam = Camera.from_fxfycxcy(500, 500, 320, 240, 640, 480)
    with pytest.raises(InputError, match=needle):
        inputs.parse_bbox(box, cam)
    assert inputs.parse_bbox("590,10,100,100", cam) == (590, 10, 100, 100)  # 50 % inside: accepted
    assert inputs.parse_bbox("10,20,16,16", cam) == (10, 20, 16, 16)


def test_implausible_poses_are_named_and_plausible_ones_pass():
    """A pose behind the camera, with the camera inside the part, or so far that the part spans under 8 px is
    not a pose (PoseEstimator.run marks it failed); a part at an ordinary distance is."""
    from posekit.data.types import PoseEstimate
    from posekit.estimate.pipeline import pose_problem

    class Part:
        diameter = 100.0

    cam = Camera.from_fxfycxcy(572.4, 573.6, 325.3, 242.0, 640, 480)

    def problem(t):
        return pose_problem(PoseEstimate(obj_id=1, R=np.eye(3), t=t), Part(), cam)

    assert problem([0, 0, 800]) is None and problem([300, -200, 5000]) is None  # 11 px across: seen
    assert "behind the camera" in problem([0, 0, -500]) and "behind the camera" in problem([10, 10, 0])
    assert "inside the part" in problem([0, 0, 30])
    assert "would span 1.0 px" in problem([-8868, 11952, 56263])  # the pose from a 1x1 box
    assert "not finite" in problem([0, 0, np.nan])


def test_the_pipeline_marks_poses_reliable_by_the_measured_threshold_and_failed_by_depth():
    """PoseEstimator.run: a templates pose scored at or above RELIABLE_SCORE["templates"] is reliable, one below is
    not; one the box puts 60 m away (the part under 8 px) is failed; another method's pose has no threshold."""
    from posekit.data.types import Observation, PoseEstimate
    from posekit.estimate.pipeline import RELIABLE_SCORE, Detection, PoseEstimator

    threshold = RELIABLE_SCORE["templates"]

    class Part:
        diameter, mesh_hash = 100.0, "part"

    class Stub:  # a coarse stage whose scores and depths are given
        def __init__(self, method_name, poses):
            self.method_name, self.poses = method_name, poses

        def check_mesh(self, model):
            pass

        def estimate(self, image, camera, boxes, obj_id, top_k=1, correct_perspective=True):
            return [[PoseEstimate(obj_id, np.eye(3), [0, 0, z], score=s)] for z, s in self.poses[: len(boxes)]]

    cam = Camera.from_fxfycxcy(572.4, 573.6, 325.3, 242.0, 640, 480)
    obs = Observation(np.zeros((480, 640, 3), np.uint8), cam)
    boxes = [Detection(1, (10.0, 10.0, 50.0, 50.0))] * 3
    poses = [(800.0, threshold), (800.0, threshold - 0.01), (60000.0, 0.9)]
    got = PoseEstimator({1: Part()}, coarse={1: Stub("templates", poses)}).run(obs, boxes).estimates
    assert [e.reliable for e in got] == [True, False, False]
    assert [e.failed is None for e in got] == [True, True, False] and "span" in got[2].failed
    (aae,) = PoseEstimator({1: Part()}, coarse={1: Stub("aae", poses)}).run(obs, boxes[:1]).estimates
    assert aae.reliable is None and aae.failed is None
