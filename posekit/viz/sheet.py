"""Contact sheet of a BOP dataset: sample images with mask outlines and projected 3D bounding boxes.

For a person to check a generated dataset at a glance: each thumbnail shows the RGB image, the outline of every
instance's visible mask (its full mask dashed in a darker shade is too busy at thumbnail size, so only the visible
one is drawn) and the 12 edges of the model's bounding box projected with the ground-truth pose. A box that does
not hug its object, or an outline off its object, shows a pose/mask/camera convention error immediately.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import binary_erosion

from posekit.data.bop import BopDataset, Frame
from posekit.errors import InputError
from posekit.geometry.camera import project_points

#: The 12 edges of ObjectModel.bbox_corners (corner index = 4 * ix + 2 * iy + iz).
BOX_EDGES = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]

PALETTE = [(255, 64, 64), (64, 255, 64), (64, 160, 255), (255, 220, 0), (255, 0, 255), (0, 255, 255),
           (255, 140, 0), (180, 100, 255)]


def bbox_corners_from_info(info: dict) -> np.ndarray:
    """(8, 3) model-frame box corners (mm) from a models_info entry, ordered like ObjectModel.bbox_corners."""
    lo = np.array([info["min_x"], info["min_y"], info["min_z"]], dtype=np.float64)
    hi = lo + np.array([info["size_x"], info["size_y"], info["size_z"]], dtype=np.float64)
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def mask_outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The boundary pixels of a bool mask (mask minus its erosion)."""
    m = np.asarray(mask, dtype=bool)
    return m & ~binary_erosion(m, iterations=max(1, width), border_value=0)


def annotate_frame(frame: Frame, models_info: dict[int, dict], outline_width: int = 2) -> Image.Image:
    """The frame's RGB with each instance's visible-mask outline and projected 3D box drawn in its colour."""
    rgb = frame.rgb().copy()
    for g in range(len(frame.gts)):
        color = np.array(PALETTE[g % len(PALETTE)], dtype=np.uint8)
        m = frame.mask_visib(g)
        if m is not None:
            rgb[mask_outline(m, outline_width)] = color
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    for g, gt in enumerate(frame.gts):
        info = models_info.get(gt.obj_id)
        if info is None:
            continue
        corners = bbox_corners_from_info(info)
        z = corners @ gt.R[2] + gt.t[2]
        if np.any(z <= 1.0):
            continue  # box reaches behind the camera: its projection is meaningless
        uv = project_points(corners, frame.camera.K, gt.R, gt.t)
        for a, b in BOX_EDGES:
            draw.line([tuple(uv[a]), tuple(uv[b])], fill=PALETTE[g % len(PALETTE)], width=1)
        draw.text((float(uv[:, 0].min()), float(uv[:, 1].min()) - 10), str(gt.obj_id), fill=PALETTE[g % len(PALETTE)])
    return img


def pick_frames(dataset: BopDataset, split: str, n: int) -> list[Frame]:
    """``n`` frames spread evenly over the split (all of them if fewer)."""
    keys = [(s, im) for s in dataset.scene_ids(split) for im in dataset.scene(split, s).im_ids]
    if not keys:
        raise InputError(f"{dataset.root / split}: no images to preview")
    pick = np.unique(np.linspace(0, len(keys) - 1, min(n, len(keys))).round().astype(int))
    return [dataset.frame(split, *keys[i]) for i in pick]


def contact_sheet(root: str | Path, out: str | Path, n: int = 16, split: str | None = None, cols: int = 4,
                  thumb_width: int = 320) -> Path:
    """Write a PNG grid of ``n`` annotated frames of the BOP dataset at ``root``; returns the path written.

    ``split`` defaults to train_synt where present, else the first split.
    """
    from posekit.data.jsonio import save_image_atomic

    ds = BopDataset(root)
    splits = ds.splits()
    if not splits:
        raise InputError(f"{ds.root}: no BOP split folders with scenes")
    split = split or ("train_synt" if "train_synt" in splits else splits[0])
    if split not in splits:
        raise InputError(f"{ds.root}: no split {split!r} (found: {', '.join(splits)})")
    frames = pick_frames(ds, split, n)
    infos = ds.models_info
    thumbs = []
    for f in frames:
        img = annotate_frame(f, infos)
        h = max(1, round(img.height * thumb_width / img.width))
        img = img.resize((thumb_width, h), Image.BILINEAR)
        ImageDraw.Draw(img).text((4, 2), f"{f.scene_id:06d}/{f.im_id:06d}", fill=(255, 255, 255))
        thumbs.append(img)
    cols = max(1, min(cols, len(thumbs)))
    rows = (len(thumbs) + cols - 1) // cols
    th = max(t.height for t in thumbs)
    pad = 4
    sheet = Image.new("RGB", (cols * (thumb_width + pad) + pad, rows * (th + pad) + pad), (32, 32, 32))
    for i, t in enumerate(thumbs):
        r, c = divmod(i, cols)
        sheet.paste(t, (pad + c * (thumb_width + pad), pad + r * (th + pad)))
    out = Path(out)
    return save_image_atomic(out, np.asarray(sheet))
