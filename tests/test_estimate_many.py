"""`posekit estimate` over many photos in one process, and what a templates-only estimate imports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from helpers import PART, REPO
from helpers import posekit_run as _posekit

SCENE = REPO / "assets" / "bracket_scene.png"
CAMERA = REPO / "assets" / "camera.json"
BOX = "303,147,173,104"  # the bundled example's part (assets/bracket_scene_gt.json)


def _photos(folder, names, bad=None):
    """Copies of the bundled example under ``names``, and ``bad`` a file of bytes no image reader takes."""
    folder.mkdir()
    for name in names:
        shutil.copy(SCENE, folder / name)
    if bad is not None:
        (folder / bad).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    return folder


def test_many_photos_write_one_result_each_and_skip_a_corrupt_one(tpl_ws, tmp_path):
    """A folder of photos, a corrupt one in the middle: a JSON and an overlay per good photo (the same pose as the
    same image gives alone), one stderr line naming the bad one, exit status 1."""
    photos = _photos(tmp_path / "photos", ["a.png", "c.png"], bad="b.png")
    out, overlays = tmp_path / "poses", tmp_path / "overlays"
    r = _posekit("estimate", photos, "--cad", PART, "--model", tpl_ws, "--camera", CAMERA, "--bbox", BOX,
                 "--refine", "none", "--json-dir", out, "--overlay-dir", overlays)
    assert r.returncode == 1, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "c.json"]
    assert sorted(p.name for p in overlays.iterdir()) == ["a.png", "c.png"]
    skipped = [ln for ln in r.stderr.splitlines() if "b.png" in ln and "posekit: skipped" in ln]
    assert len(skipped) == 1 and "not a readable image" in skipped[0], r.stderr
    assert "Traceback" not in r.stderr and r.stderr.rstrip().splitlines()[-1].startswith("posekit: error: 1 of 3 images")
    a, c = (json.loads((out / f"{n}.json").read_text()) for n in "ac")
    assert a["image"].endswith("a.png") and a["chosen"]["camera"] == str(CAMERA)
    assert a["poses"][0]["R"] == c["poses"][0]["R"] and a["poses"][0]["t"] == c["poses"][0]["t"]
    assert a["run"]["coarse"]["objects"]["1"]["workspace"] == str(tpl_ws)
    # the one-image command gives the same pose
    alone = tmp_path / "alone.json"
    r1 = _posekit("estimate", photos / "a.png", "--cad", PART, "--model", tpl_ws, "--camera", CAMERA, "--bbox", BOX,
                  "--refine", "none", "--json", alone)
    assert r1.returncode == 0, r1.stderr
    assert json.loads(alone.read_text())["poses"][0]["R"] == a["poses"][0]["R"]


def test_many_photos_take_each_ones_boxes_from_a_detections_file_into_json_lines(tpl_ws, tmp_path):
    """--boxes FILE gives each photo its own boxes (by the image id of its name); --jsonl writes a line per photo;
    a photo with no box there is named and skipped."""
    photos = _photos(tmp_path / "photos", ["000001.png", "000002.png", "000003.png"])
    x, y, w, h = (int(v) for v in BOX.split(","))
    dets = [{"scene_id": 0, "image_id": i, "category_id": 9, "bbox": [x + 2 * i, y, w, h], "score": 0.9}
            for i in (1, 3)]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    lines = tmp_path / "poses.jsonl"
    r = _posekit("estimate", *sorted(photos.iterdir()), "--cad", PART, "--model", tpl_ws, "--K",
                 "572.4114,573.57043,325.2611,242.04899", "--boxes", tmp_path / "dets.json", "--refine", "none",
                 "--jsonl", lines)
    assert r.returncode == 1, r.stderr
    records = [json.loads(ln) for ln in lines.read_text().splitlines()]
    assert [rec["image"].rsplit("/", 1)[-1] for rec in records] == ["000001.png", "000003.png"]
    assert [rec["poses"][0]["history"][0]["bbox"][0] for rec in records] == [x + 2, x + 6]
    assert any("000002.png: no box of object 9 for image 2" in ln for ln in r.stderr.splitlines()), r.stderr


def test_many_photos_refuse_an_output_folder_they_cannot_write_before_any_work(tpl_ws, tmp_path):
    """An output folder under a file, or under a missing folder: one error line, exit 2, nothing written."""
    photos = _photos(tmp_path / "photos", ["a.png", "b.png"])
    (tmp_path / "file").write_text("")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for option, target in (("--json-dir", tmp_path / "file" / "poses"), ("--jsonl", tmp_path / "no" / "poses.jsonl"),
                           ("--overlay-dir", tmp_path / "no" / "overlays")):
        r = _posekit("estimate", photos, "--cad", PART, "--model", tpl_ws, "--camera", CAMERA, "--bbox", BOX,
                     "--refine", "none", option, target)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("posekit: error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert option in r.stderr and r.stdout == ""
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_many_photos_check_every_camera_and_name_before_any_work(tpl_ws, tmp_path):
    """A photo with no camera, or two photos that would write the same JSON name: refused before any work."""
    photos = _photos(tmp_path / "photos", ["a.png"])
    other = _photos(tmp_path / "other", ["a.png"])
    r = _posekit("estimate", photos, other / "a.png", "--cad", PART, "--model", tpl_ws, "--bbox", BOX,
                 "--refine", "none", "--jsonl", tmp_path / "p.jsonl")
    assert r.returncode == 2 and "no camera for 2 of 2 images" in r.stderr, r.stderr
    r = _posekit("estimate", photos, other / "a.png", "--cad", PART, "--model", tpl_ws, "--camera", CAMERA,
                 "--bbox", BOX, "--refine", "none", "--json-dir", tmp_path / "poses")
    assert r.returncode == 2 and "would both write a.json" in r.stderr, r.stderr
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "poses").exists()


def test_a_templates_only_estimate_imports_no_pytorch3d_open3d_or_torchvision(tpl_ws, tmp_path):
    """What a templates-only estimate with a box imports, seen in its own process: no PyTorch3D, open3d or
    torchvision (each costs a second or more at start-up); a top-level import of any of them on the estimate
    path fails this."""
    out = tmp_path / "pose.json"
    args = ["estimate", str(SCENE), "--cad", str(PART), "--model", str(tpl_ws), "--bbox", BOX, "--refine", "none",
            "--json", str(out)]
    code = ("import atexit, json, sys\n"
            "def seen():\n"
            "    heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pytorch3d', 'open3d', 'torchvision'})\n"
            "    print(json.dumps({'heavy': heavy, 'torch': 'torch' in sys.modules}))\n"
            "atexit.register(seen)\n"
            f"sys.argv = ['posekit', *{args!r}]\n"
            "from posekit.cli.main import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0 and out.is_file(), r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["torch"] and seen["heavy"] == [], seen
