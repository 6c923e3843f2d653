"""Regenerate assets/bracket_scene.png: an example photo-like image of the bracket, its camera and ground truth.

The bracket (assets/bracket.stl) at a fixed pose, off the image centre, lit by a key light and the
headlight, composited over one of posekit's procedural backgrounds; written beside it:
``camera.json`` (the camera, the form `posekit estimate` finds beside an image) and
``bracket_scene_gt.json`` (the model-to-camera R, t in mm and the object's box). The README's first
command estimates this pose. Deterministic: the same image every run on the same renderer.

    python assets/make_scene.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

HERE = Path(__file__).resolve().parent
FX, FY, CX, CY, W, H = 572.4, 573.6, 325.3, 242.0, 640, 480
R_GT = Rotation.from_euler("xyz", [-115.0, 8.0, 32.0], degrees=True).as_matrix()
T_GT = np.array([40.0, -18.0, 430.0])
BACKGROUND = "texture"


def main() -> None:
    from posekit.cad.load import load_model
    from posekit.geometry.boxcrop import mask_box
    from posekit.geometry.camera import Camera
    from posekit.render.backgrounds import procedural_background
    from posekit.render.gl import OffscreenRenderer
    from posekit.render.types import Light, RenderObject

    part = load_model(HERE / "bracket.stl")
    cam = Camera.from_fxfycxcy(FX, FY, CX, CY, W, H)
    lights = [Light(kind="directional", color=(1.0, 0.97, 0.9), intensity=2.5, position=(0.0, 0.0, 0.0),
                    direction=(0.4, 0.6, 0.7)),
              Light(kind="directional", color=(1.0, 1.0, 1.0), intensity=1.0, position=(0.0, 0.0, 0.0),
                    direction=(0.0, 0.0, 1.0))]
    with OffscreenRenderer(W, H) as r:
        res = r.render(cam, [RenderObject(part, R_GT, T_GT, color=(0.62, 0.64, 0.68), metallic=0.3)],
                       lights=lights, ambient=0.35)
    bg = procedural_background(np.random.default_rng(7), W, H, kind=BACKGROUND)
    m = res.masks[0][..., None]
    img = np.where(m, res.rgb, bg).astype(np.uint8)
    Image.fromarray(img).save(HERE / "bracket_scene.png", optimize=True)
    (HERE / "camera.json").write_text(json.dumps({"fx": FX, "fy": FY, "cx": CX, "cy": CY, "width": W, "height": H},
                                                 indent=1) + "\n")
    box = [int(v) for v in mask_box(res.masks[0])]
    (HERE / "bracket_scene_gt.json").write_text(json.dumps(
        {"R": np.round(R_GT, 9).tolist(), "t": T_GT.tolist(), "bbox": box, "cad": "bracket.stl"}, indent=1) + "\n")
    print(f"wrote {HERE / 'bracket_scene.png'} (box {','.join(map(str, box))}), camera.json, bracket_scene_gt.json")


if __name__ == "__main__":
    main()
