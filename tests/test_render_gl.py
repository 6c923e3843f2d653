"""pyrender OffscreenRenderer: camera convention, depth, colours, masks, crops (synthetic boxes, exact answers)."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from posekit.cad.model import ObjectModel
from posekit.geometry.camera import Camera, project_points
from posekit.render.gl import OffscreenRenderer
from posekit.render.types import Light, RenderObject

W, H = 160, 120
CAM = Camera.from_fxfycxcy(500.0, 510.0, 80.3, 60.7, W, H)


def box_model(extents, color=None, center=(0.0, 0.0, 0.0)) -> ObjectModel:
    m = trimesh.creation.box(extents)
    v = np.asarray(m.vertices) + np.asarray(center)
    vc = None if color is None else np.tile(np.asarray(color, dtype=np.float32), (len(v), 1))
    return ObjectModel(v, np.asarray(m.faces), diameter=float(np.linalg.norm(extents)), mesh_hash="box",
                       vertex_colors=vc)


def marker_model() -> ObjectModel:
    """A grey box with a red marker cube at +x and a green one at +y (to catch flipped axes)."""
    parts = [
        (trimesh.creation.box((40, 40, 40)), (0.5, 0.5, 0.5)),
        (trimesh.creation.box((12, 12, 12)).apply_translation((32, 0, 0)), (1.0, 0.0, 0.0)),
        (trimesh.creation.box((12, 12, 12)).apply_translation((0, 32, 0)), (0.0, 1.0, 0.0)),
    ]
    verts, faces, cols, off = [], [], [], 0
    for mesh, c in parts:
        verts.append(mesh.vertices)
        faces.append(mesh.faces + off)
        cols.append(np.tile(c, (len(mesh.vertices), 1)))
        off += len(mesh.vertices)
    v = np.concatenate(verts)
    return ObjectModel(v, np.concatenate(faces), diameter=100.0, mesh_hash="marker",
                       vertex_colors=np.concatenate(cols).astype(np.float32))


@pytest.fixture(scope="module")
def renderer():
    with OffscreenRenderer(W, H) as r:
        yield r


def test_silhouette_edges_match_projection_subpixel(renderer):
    """Pixel centres inside the projected front face are exactly the mask (a half-pixel cx/cy slip fails)."""
    model = box_model((40, 30, 10))
    t = np.array([1.1, -2.3, 600.0])
    res = renderer.render(CAM, [RenderObject(model, np.eye(3), t)])
    lo, hi = project_points(np.array([[-20, -15, -5], [20, 15, -5]]), CAM.K, np.eye(3), t)
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    expected = (u >= lo[0]) & (u <= hi[0]) & (v >= lo[1]) & (v <= hi[1])
    near_edge = (np.minimum(np.abs(u - lo[0]), np.abs(u - hi[0])) < 0.02) | (
        np.minimum(np.abs(v - lo[1]), np.abs(v - hi[1])) < 0.02)
    assert expected.sum() > 500
    assert not np.any((res.masks[0] != expected) & ~near_edge)


def test_small_far_box_centroid_is_projected_centre(renderer):
    """Centroid of a small distant box's mask lies within 0.5 px of its projected centre, at off-grid positions."""
    model = box_model((30, 30, 30))
    for t in ([13.7, -9.1, 1500.0], [-40.2, 22.6, 1800.0]):
        res = renderer.render(CAM, [RenderObject(model, np.eye(3), np.array(t))])
        ys, xs = np.nonzero(res.masks[0])
        centre = project_points(np.zeros((1, 3)), CAM.K, np.eye(3), np.array(t))[0]
        assert np.hypot(xs.mean() - centre[0], ys.mean() - centre[1]) < 0.5


def test_marker_at_plus_x_appears_at_its_projection(renderer):
    model = marker_model()
    R = Rotation.from_euler("xyz", [25, -30, 40], degrees=True).as_matrix()
    t = np.array([5.0, -3.0, 500.0])
    res = renderer.render(CAM, [RenderObject(model, R, t)], ambient=1.0, lights=[])
    rgb = res.rgb.astype(int)
    for channel, pos in ((0, (32, 0, 0)), (1, (0, 32, 0))):
        others = [c for c in range(3) if c != channel]
        sel = (rgb[..., channel] > 150) & (rgb[..., others].max(axis=-1) < 60)
        assert sel.sum() > 20
        ys, xs = np.nonzero(sel)
        corners = np.array(pos, dtype=float) + 6.0 * np.array(
            [[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
        uv = project_points(corners, CAM.K, R, t)  # the marker's visible pixels lie within its projected cube
        assert uv[:, 0].min() <= xs.min() and xs.max() <= uv[:, 0].max() + 1
        assert uv[:, 1].min() <= ys.min() and ys.max() <= uv[:, 1].max() + 1
    # identity pose: the +x marker is to the right of the centre, the +y marker below it
    res = renderer.render(CAM, [RenderObject(model, np.eye(3), np.array([0.0, 0.0, 500.0]))], ambient=1.0, lights=[])
    red = (res.rgb[..., 0] > 150) & (res.rgb[..., 1] < 60)
    green = (res.rgb[..., 1] > 150) & (res.rgb[..., 0] < 60)
    assert np.nonzero(red)[1].mean() > CAM.K[0, 2] + 20
    assert np.nonzero(green)[0].mean() > CAM.K[1, 2] + 20


def test_depth_is_camera_z_of_a_tilted_face(renderer):
    model = box_model((80, 80, 10))
    R = Rotation.from_euler("y", 35, degrees=True).as_matrix()
    t = np.array([0.0, 0.0, 700.0])
    res = renderer.render(CAM, [RenderObject(model, R, t)])
    n = R @ np.array([0.0, 0.0, -1.0])  # front face normal (towards the camera), camera frame
    p0 = R @ np.array([0.0, 0.0, -5.0]) + t
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    rays = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3) @ np.linalg.inv(CAM.K).T
    z = (n @ p0) / (rays @ n)  # rays have z = 1, so the ray parameter is the depth
    hit_model = (rays * z[:, None] - t) @ R  # the hit point in the model frame
    inner = (np.abs(hit_model[:, :2]).max(axis=1) < 38.0).reshape(H, W)  # on the front face, off its edges
    assert inner.sum() > 1000
    err = np.abs(res.depth[inner] - z.reshape(H, W)[inner])
    assert np.median(err) < 0.02 and err.max() < 0.1
    assert res.depth.dtype == np.float32 and np.all(res.depth[~(res.masks[0])] == 0)


def test_vertex_colours_and_colour_override(renderer):
    colour = (0.8, 0.3, 0.1)
    model = box_model((60, 60, 60), color=colour)
    obj = RenderObject(model, np.eye(3), np.array([0.0, 0.0, 600.0]))
    # ambient 1.0 and no lights: the linear light is exactly 1, so the stored sRGB colour comes out unchanged
    res = renderer.render(CAM, [obj], lights=[], ambient=1.0)
    inner = res.masks[0]
    assert np.allclose(res.rgb[inner].mean(axis=0), 255 * np.array(colour), atol=3)
    over = RenderObject(model, np.eye(3), np.array([0.0, 0.0, 600.0]), color=(0.1, 0.2, 0.9))
    res = renderer.render(CAM, [over], lights=[], ambient=1.0, bg_color=(0.0, 1.0, 0.0))
    assert np.allclose(res.rgb[res.masks[0]].mean(axis=0), [25.5, 51, 229.5], atol=3)
    assert np.all(res.rgb[~res.masks[0]] == [0, 255, 0])


def test_headlight_and_directional_light_side(renderer):
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=40)
    model = ObjectModel(np.asarray(sphere.vertices), np.asarray(sphere.faces), 80.0, "sphere")
    obj = RenderObject(model, np.eye(3), np.array([0.0, 0.0, 600.0]))
    lit = renderer.render(CAM, [obj], lights=[Light("directional", direction=(1.0, 0.0, 0.0))], ambient=0.0)
    m = lit.masks[0]
    cx = int(round(CAM.K[0, 2]))
    lum = lit.rgb.astype(float).mean(axis=-1)
    left, right = lum[:, :cx][m[:, :cx]].mean(), lum[:, cx:][m[:, cx:]].mean()
    assert left > right + 40  # light shines towards +x: it hits the faces turned to -x (image left)
    head = renderer.render(CAM, [obj])  # default headlight: the centre faces the light, the rim does not
    lum = head.rgb.astype(float).mean(axis=-1)
    cy = int(round(CAM.K[1, 2]))
    assert lum[cy, cx] > lum[m].min() + 40
    spot = renderer.render(CAM, [obj], lights=[Light("spot", intensity=0.5)], ambient=0.1)
    assert spot.rgb[m].mean() > 0


def test_two_overlapping_objects_masks(renderer):
    near = box_model((40, 40, 40), color=(1.0, 0.0, 0.0))
    far = box_model((60, 60, 20), color=(0.0, 0.0, 1.0))
    objs = [RenderObject(far, np.eye(3), np.array([20.0, 5.0, 800.0])),
            RenderObject(near, np.eye(3), np.array([-5.0, 0.0, 600.0]))]
    res = renderer.render(CAM, objs)
    alone = [renderer.render(CAM, [o]) for o in objs]
    for i in range(2):
        assert (res.masks[i] == alone[i].masks[0]).mean() > 0.999
    assert np.array_equal(res.masks_visib[1], res.masks[1])  # the near box is fully visible
    occluded = res.masks[0] & res.masks[1]
    assert occluded.sum() > 100 and not np.any(res.masks_visib[0] & occluded)
    assert (res.masks_visib[0] == (res.masks[0] & ~res.masks[1])).mean() > 0.999
    assert np.array_equal(res.labels == 2, res.masks_visib[1])
    both = res.depth > 0
    assert np.allclose(res.depth[occluded], alone[1].depth[occluded], atol=0.1)
    assert np.array_equal(both, res.masks[0] | res.masks[1]) or (both != (res.masks[0] | res.masks[1])).sum() < 10
    assert 0.0 < res.visib_fract()[0] < 1.0 and res.visib_fract()[1] == 1.0
    # the same model twice in one scene gets two nodes, and renders are cached (no new nodes)
    twice = [RenderObject(near, np.eye(3), np.array([-30.0, 0.0, 600.0])),
             RenderObject(near, np.eye(3), np.array([30.0, 0.0, 600.0]))]
    res2 = renderer.render(CAM, twice)
    assert all(m.sum() > 100 for m in res2.masks_visib)
    n_nodes = len(renderer._scene.mesh_nodes)
    renderer.render(CAM, twice)
    renderer.render(CAM, objs)
    assert len(renderer._scene.mesh_nodes) == n_nodes


def test_render_crop_equals_region_of_full_render(renderer):
    model = marker_model()
    R = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
    obj = RenderObject(model, R, np.array([0.0, 0.0, 450.0]))
    full = renderer.render(CAM, [obj])
    x0, y0, w, h = 40, 25, 80, 64
    crop = renderer.render_crop(CAM, (x0, y0, w, h), (w, h), [obj])
    region = (slice(y0, y0 + h), slice(x0, x0 + w))
    assert crop.rgb.shape == (h, w, 3)
    assert (crop.masks[0] == full.masks[0][region]).mean() > 0.998
    both = crop.masks[0] & full.masks[0][region]
    assert np.median(np.abs(crop.depth[both] - full.depth[region][both])) < 0.05
    assert np.abs(crop.rgb.astype(int) - full.rgb[region].astype(int)).mean() < 2.0
    # a 2x zoom: 2x2-averaged crop mask equals the full-frame region up to edge interpolation
    zoom = renderer.render_crop(CAM, (x0, y0, w, h), (2 * w, 2 * h), [obj])
    assert zoom.rgb.shape == (2 * h, 2 * w, 3)
    down = zoom.masks[0].reshape(h, 2, w, 2).mean(axis=(1, 3))
    ref = full.masks[0][region].astype(float)
    assert np.abs(down - ref).mean() < 0.02
    inter, union = np.minimum(down, ref).sum(), np.maximum(down, ref).sum()
    assert inter / union > 0.95
    # and back to the full size afterwards (the renderer resizes)
    again = renderer.render(CAM, [obj])
    assert np.array_equal(again.masks[0], full.masks[0])


def test_empty_scene_and_closed_renderer():
    r = OffscreenRenderer(32, 24)
    res = r.render(Camera.from_fxfycxcy(30, 30, 16, 12, 32, 24), [], bg_color=(255, 0, 0))
    assert res.rgb.shape == (24, 32, 3) and np.all(res.rgb == [255, 0, 0]) and np.all(res.depth == 0)
    r.close()
    with pytest.raises(RuntimeError):
        r.render(Camera.from_fxfycxcy(30, 30, 16, 12, 32, 24), [])


def test_closing_one_renderer_keeps_another_alive(renderer):
    model = box_model((40, 40, 40))
    obj = RenderObject(model, np.eye(3), np.array([0.0, 0.0, 500.0]))
    before = renderer.render(CAM, [obj])
    other = OffscreenRenderer(64, 48)
    other.render(Camera.from_fxfycxcy(60, 60, 32, 24, 64, 48), [obj])
    other.close()
    after = renderer.render(CAM, [obj])
    assert np.array_equal(before.masks[0], after.masks[0])


def test_uv_texture_orientation(renderer):
    """UVs in the trimesh/OBJ convention (v = 0 at the image's bottom row): the texture's top row shows at
    the plane's top; decimation's texture baking reads the same texels."""
    from posekit.cad.decimate import texture_to_vertex_colors

    v = np.array([[-20, -20, 0], [20, -20, 0], [20, 20, 0], [-20, 20, 0]], dtype=float)
    uv = np.stack([(v[:, 0] + 20) / 40, (20 - v[:, 1]) / 40], axis=1)  # model -y (image up) -> v = 1
    tex = np.zeros((6, 6, 3), np.uint8)  # 6 px rows: not 4-byte aligned as RGB
    tex[:3] = [255, 0, 0]  # top half red
    tex[3:] = [0, 0, 255]  # bottom half blue
    plane = ObjectModel(v, np.array([[0, 1, 2], [0, 2, 3]]), 56.6, "plane", texture_uv=uv, texture_image=tex)
    res = renderer.render(CAM, [RenderObject(plane, np.eye(3), np.array([0.0, 0.0, 300.0]))], lights=[], ambient=1.0)
    ys, xs = np.nonzero(res.masks[0])
    quarter = (ys.max() - ys.min()) // 4
    top = res.rgb[ys.min() + quarter, int(xs.mean())].astype(int)
    bottom = res.rgb[ys.max() - quarter, int(xs.mean())].astype(int)
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    baked = texture_to_vertex_colors(plane)
    assert np.allclose(baked[0], [1, 0, 0]) and np.allclose(baked[3], [0, 0, 1])
