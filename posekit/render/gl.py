"""Offscreen OpenGL rendering with pyrender (EGL): RGB, depth (mm) and per-object masks.

Camera convention (the one place it is converted): posekit poses are OpenCV (x right, y down,
z forward); pyrender's camera looks down -z with y up. The pyrender camera sits at the identity
and every object node gets the pose ``F @ [R | t]`` with ``F = diag(1, -1, -1)`` (the OpenCV ->
OpenGL camera-frame flip), so scene coordinates are OpenGL camera coordinates. Lights are
placed the same way (position ``F p``, shining along ``F d``).

Intrinsics: pyrender's ``IntrinsicsCamera`` maps a point to the *window* coordinate
``fx X/Z + cx`` where pixel ``i`` spans ``[i, i+1]`` (centre ``i + 0.5``), while OpenCV puts the
centre of pixel ``i`` at ``i``. So we pass ``cx + 0.5, cy + 0.5``; tests/test_render_gl.py checks
the silhouette against ``project_points`` to sub-pixel accuracy.

Colours: vertex colours and ``RenderObject.color`` are sRGB in [0, 1]; pyrender's shader lights in
linear space and applies gamma 1/2.2 at the end, so colours are linearised (``c ** 2.2``) on the
way in. A white-lit surface (total linear light 1.0) therefore shows its model colour unchanged.
``ambient`` is linear light added to every surface.

Meshes are uploaded once per ``ObjectModel`` (cached by object identity, LRU-bounded) and kept in
one persistent scene; a render only moves nodes and toggles visibility, so re-rendering the same
model does not re-upload it (so do not edit a model's arrays in place between renders: pass a new
``ObjectModel``, or call ``clear_cache``).

Passes: RGB comes from pyrender's 4x-multisampled colour pass (anti-aliased edges); depth and the
label map from a SEG pass (multisampling off, so each value is sampled at the pixel centre, the
same sampling as ``project_points`` and PyTorch3D); each object's full silhouette, when there are
several, from one more SEG pass with only that object. Triangles are drawn two-sided.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from posekit.cad.model import ObjectModel
from posekit.geometry.camera import Camera
from posekit.render.egl import import_pyrender
from posekit.render.types import LIGHT_REFERENCE_DISTANCE_MM, Light, RenderObject, RenderResult

#: OpenCV camera frame -> OpenGL camera frame.
CV_TO_GL = np.diag([1.0, -1.0, -1.0])

DEFAULT_GREY = (0.7, 0.7, 0.7)

#: Renderers whose GL context is alive (see ``OffscreenRenderer.close``).
_LIVE: weakref.WeakSet = weakref.WeakSet()
GAMMA = 2.2


def pose_cv_to_gl(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 pyrender node pose of an object at model-to-camera (R, t) in OpenCV coordinates."""
    T = np.eye(4)
    T[:3, :3] = CV_TO_GL @ np.asarray(R, dtype=np.float64).reshape(3, 3)
    T[:3, 3] = CV_TO_GL @ np.asarray(t, dtype=np.float64).reshape(3)
    return T


def _light_pose(position, direction) -> np.ndarray:
    """pyrender light node pose: at ``position``, shining along ``direction`` (both OpenCV camera frame)."""
    d = CV_TO_GL @ np.asarray(direction, dtype=np.float64).reshape(3)
    n = np.linalg.norm(d)
    d = d / n if n > 0 else np.array([0.0, 0.0, -1.0])
    z = -d  # pyrender lights shine along their node's -z
    helper = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2] = x, y, z
    T[:3, 3] = CV_TO_GL @ np.asarray(position, dtype=np.float64).reshape(3)
    return T


def srgb_to_linear(c) -> np.ndarray:
    """The inverse of pyrender's output gamma (a plain power 2.2)."""
    return np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0) ** GAMMA


def _ambient_rgb(ambient) -> np.ndarray:
    a = np.asarray(ambient, dtype=np.float64).reshape(-1)
    return np.repeat(a, 3) if a.size == 1 else a[:3]


def default_lights(objects: Sequence[RenderObject], ambient) -> list[Light]:
    """A headlight (point light at the camera centre) scaled so that, with the ambient, a white
    surface facing the camera at the objects' mean distance receives linear light 1.0."""
    z = float(np.mean([o.t[2] for o in objects])) if objects else LIGHT_REFERENCE_DISTANCE_MM
    z = max(z, 1.0)
    strength = max(0.0, 1.0 - float(np.mean(_ambient_rgb(ambient))))
    return [Light("point", intensity=strength * (z / LIGHT_REFERENCE_DISTANCE_MM) ** 2)]


def _two_sided(faces: np.ndarray) -> np.ndarray:
    """Each triangle twice, once per winding. pyrender always culls back faces in its SEG passes (which
    give our depth and masks), so with one copy an open or inconsistently wound mesh would get holes;
    with both, back-face culling keeps exactly one copy facing the camera in every pass."""
    f = np.asarray(faces, dtype=np.uint32)
    return np.concatenate([f, f[:, ::-1]], axis=0)


def _seg_color(i: int) -> np.ndarray:
    """The SEG-pass colour (0-255 RGB) of label ``i`` (1-based), decodable up to 2^24 - 1."""
    return np.array([i & 255, (i >> 8) & 255, (i >> 16) & 255], dtype=np.float64)


class OffscreenRenderer:
    """One EGL context and one persistent pyrender scene, reused for every render.

    Args:
        width, height: default image size (a render at another size resizes the framebuffer).
        znear, zfar: clipping planes in mm.
        max_cached_models: how many models stay uploaded (least recently used are dropped).
    """

    def __init__(self, width: int, height: int, znear: float = 10.0, zfar: float = 10000.0,
                 max_cached_models: int = 64) -> None:
        self._pr = import_pyrender()
        self.width, self.height = int(width), int(height)
        self.znear, self.zfar = float(znear), float(zfar)
        self.max_cached_models = int(max_cached_models)
        self._renderer = self._pr.OffscreenRenderer(self.width, self.height)
        self._scene = self._pr.Scene(bg_color=[0.0, 0.0, 0.0, 1.0], ambient_light=[0.3, 0.3, 0.3])
        self._camera = self._pr.IntrinsicsCamera(1.0, 1.0, 0.0, 0.0, znear=self.znear, zfar=self.zfar)
        self._scene.add(self._camera, pose=np.eye(4))
        # (id(model), look) -> {"model": model (keeps the id alive), "nodes": [...]}
        self._pool: OrderedDict[tuple[int, str], dict] = OrderedDict()
        self._light_nodes: list = []
        self._normals: dict[int, np.ndarray] = {}
        _LIVE.add(self)

    # -- context management -------------------------------------------------------------
    def close(self) -> None:
        """Release the GL context (the renderer is unusable afterwards).

        pyrender's own ``delete`` calls ``eglTerminate`` on the (process-wide, shared) EGL display,
        which would kill every other live renderer's context; we terminate only when this is the
        last live renderer and otherwise destroy just our context.
        """
        r = getattr(self, "_renderer", None)
        if r is None:
            return
        self._renderer = None
        self._pool.clear()
        _LIVE.discard(self)
        platform = r._platform
        if _LIVE and hasattr(platform, "_egl_context") and platform._egl_context is not None:
            from OpenGL.EGL import eglDestroyContext

            platform.make_current()
            r._renderer.delete()
            eglDestroyContext(platform._egl_display, platform._egl_context)
            platform._egl_context = None
            platform._egl_display = None
            r._renderer = None
            r._platform = None
        else:
            r.delete()

    def __enter__(self) -> OffscreenRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; explicit close() is preferred
        try:
            self.close()
        except Exception:
            pass

    # -- mesh cache -------------------------------------------------------------------
    def _vertex_normals(self, model: ObjectModel) -> np.ndarray:
        if model.vertex_normals is not None and len(model.vertex_normals) == len(model.vertices):
            return np.asarray(model.vertex_normals, dtype=np.float32)
        key = id(model)
        if key not in self._normals:
            import trimesh

            mesh = trimesh.Trimesh(model.vertices, model.faces, process=False)
            self._normals[key] = np.asarray(mesh.vertex_normals, dtype=np.float32)
        return self._normals[key]

    def _make_node(self, model: ObjectModel, look: str):
        """A hidden scene node of ``model``; ``look`` is "vertex" (vertex colours), "texture" (UV texture,
        sRGB, linearised by pyrender's shader) or "plain" (material colour only)."""
        pr = self._pr
        material = pr.MetallicRoughnessMaterial(
            baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=0.8, alphaMode="OPAQUE"
        )
        color_0 = texcoord_0 = None
        if look == "vertex":
            rgb = srgb_to_linear(model.vertex_colors[:, :3])
            color_0 = np.concatenate([rgb, np.ones((len(rgb), 1))], axis=1).astype(np.float32)
        elif look == "texture":
            texcoord_0 = np.asarray(model.texture_uv, dtype=np.float32)
            img = np.asarray(model.texture_image)
            if img.dtype != np.uint8:
                img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
            # RGBA: 4-byte texels keep rows 4-byte aligned (pyrender leaves GL_UNPACK_ALIGNMENT at 4)
            rgba = np.concatenate([img[..., :3], np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=-1)
            material.baseColorTexture = pr.Texture(source=np.ascontiguousarray(rgba), source_channels="RGBA")
        prim = pr.Primitive(
            positions=np.asarray(model.vertices, dtype=np.float32),
            normals=self._vertex_normals(model),
            texcoord_0=texcoord_0,
            indices=_two_sided(model.faces),
            color_0=color_0,
            material=material,
            mode=pr.constants.GLTF.TRIANGLES,
        )
        mesh = pr.Mesh([prim], is_visible=False)
        return self._scene.add(mesh, pose=np.eye(4))

    def _evict(self) -> None:
        while len(self._pool) > self.max_cached_models:
            _, entry = self._pool.popitem(last=False)
            for node in entry["nodes"]:
                self._scene.remove_node(node)  # buffers are freed at the next render
            self._normals.pop(id(entry["model"]), None)

    def _acquire(self, obj: RenderObject, used: dict[tuple[int, str], int]):
        """A scene node for ``obj``: the n-th node of its model within this render (created on demand)."""
        m = obj.model
        if obj.color is not None:
            look = "plain"
        elif m.vertex_colors is not None:
            look = "vertex"
        elif m.texture_uv is not None and m.texture_image is not None:
            look = "texture"
        else:
            look = "plain"
        key = (id(m), look)
        entry = self._pool.get(key)
        if entry is None:
            entry = {"model": obj.model, "nodes": []}
            self._pool[key] = entry
        self._pool.move_to_end(key)
        k = used.get(key, 0)
        used[key] = k + 1
        if k == len(entry["nodes"]):
            entry["nodes"].append(self._make_node(m, look))
        node = entry["nodes"][k]
        mat = node.mesh.primitives[0].material
        if look != "plain":
            base = (1.0, 1.0, 1.0)
        else:
            base = tuple(srgb_to_linear(obj.color if obj.color is not None else DEFAULT_GREY)[:3])
        mat.baseColorFactor = [*base, 1.0]
        mat.metallicFactor = float(obj.metallic)
        mat.roughnessFactor = float(obj.roughness)
        self._scene.set_pose(node, pose_cv_to_gl(obj.R, obj.t))
        node.mesh.is_visible = True
        return node

    def clear_cache(self) -> None:
        """Drop every uploaded mesh."""
        for entry in self._pool.values():
            for node in entry["nodes"]:
                self._scene.remove_node(node)
        self._pool.clear()
        self._normals.clear()

    # -- rendering --------------------------------------------------------------------
    def _set_lights(self, lights: Sequence[Light]) -> None:
        pr = self._pr
        for node in self._light_nodes:
            self._scene.remove_node(node)
        self._light_nodes = []
        ref2 = LIGHT_REFERENCE_DISTANCE_MM ** 2
        for L in lights:
            color = np.asarray(L.color, dtype=np.float64)[:3]
            # pyrender's diffuse term is albedo / pi: intensity pi lights a facing white surface to 1.0.
            if L.kind == "directional":
                light = pr.DirectionalLight(color=color, intensity=np.pi * L.intensity)
            elif L.kind == "point":
                light = pr.PointLight(color=color, intensity=np.pi * ref2 * L.intensity)
            else:
                light = pr.SpotLight(color=color, intensity=np.pi * ref2 * L.intensity,
                                     innerConeAngle=L.inner_cone, outerConeAngle=L.outer_cone)
            self._light_nodes.append(self._scene.add(light, pose=_light_pose(L.position, L.direction)))

    def _set_camera(self, camera: Camera) -> None:
        if (camera.width, camera.height) != (self._renderer.viewport_width, self._renderer.viewport_height):
            self._renderer.viewport_width = camera.width
            self._renderer.viewport_height = camera.height
        K = camera.K
        c = self._camera
        c.fx, c.fy = float(K[0, 0]), float(K[1, 1])
        c.cx, c.cy = float(K[0, 2]) + 0.5, float(K[1, 2]) + 0.5  # OpenCV pixel centres -> GL window coords
        c.znear, c.zfar = self.znear, self.zfar

    def _prepare(self, camera: Camera, objects: Sequence[RenderObject], lights, ambient, bg_color,
                 bg_alpha: float = 1.0) -> list:
        """Camera, visible nodes (returned, in the order of ``objects``), background, ambient and lights of one render."""
        if self._renderer is None:
            raise RuntimeError("OffscreenRenderer is closed")
        objects = list(objects)
        self._set_camera(camera)
        for entry in self._pool.values():
            for node in entry["nodes"]:
                node.mesh.is_visible = False
        used: dict[tuple[int, str], int] = {}
        nodes = [self._acquire(o, used) for o in objects]
        self._evict()
        bg = np.asarray(bg_color, dtype=np.float64)[:3]
        if bg.max() > 1.0:
            bg = bg / 255.0
        self._scene.bg_color = np.array([*bg, bg_alpha])
        self._scene.ambient_light = srgb_to_linear(np.ones(3)) * _ambient_rgb(ambient)
        self._set_lights(default_lights(objects, ambient) if lights is None else lights)
        return nodes

    def render_coverage(self, camera: Camera, objects: Sequence[RenderObject], lights: Sequence[Light] | None = None,
                        ambient: float | tuple = 0.3) -> tuple[np.ndarray, np.ndarray]:
        """RGB (H, W, 3) uint8 on black and the objects' coverage (H, W) float32 in [0, 1] from **one**
        multisampled colour pass (its alpha channel over a transparent background): no depth, no labels, edges
        fractional. The cheap render for render-and-compare scoring, which pools the mask over feature cells
        anyway (``render`` adds a second, SEG pass for labels and depth)."""
        pr = self._pr
        self._prepare(camera, objects, lights, ambient, (0, 0, 0), bg_alpha=0.0)
        rgba, _ = self._renderer.render(self._scene, flags=pr.RenderFlags.RGBA)
        rgba = np.asarray(rgba)
        return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8), rgba[..., 3].astype(np.float32) / 255.0

    def render(self, camera: Camera, objects: Sequence[RenderObject], lights: Sequence[Light] | None = None,
               ambient: float | tuple = 0.3, bg_color=(0, 0, 0), with_masks: bool = True) -> RenderResult:
        """Render ``objects`` seen by ``camera``.

        Args:
            lights: None -> :func:`default_lights` (a headlight at the camera).
            ambient: linear ambient light, scalar or RGB.
            bg_color: RGB background, floats in [0, 1] (values > 1 are read as 0-255).
            with_masks: also compute per-object full and visible masks (one more pass per object
                when there are several). The label map is always filled.
        """
        pr = self._pr
        nodes = self._prepare(camera, objects, lights, ambient, bg_color)
        flags = pr.RenderFlags.NONE  # faces are two-sided (see _two_sided): culling drops the hidden copy
        rgb, _ = self._renderer.render(self._scene, flags=flags)
        rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
        # Depth and labels come from SEG passes: they rasterise with multisampling off, so every
        # value is sampled at the pixel centre (the MSAA colour pass's depth is one sub-sample,
        # about 0.13 px off-centre, which biases depth on slanted surfaces).
        nodes_map = {node: _seg_color(i + 1) for i, node in enumerate(nodes)}
        seg, depth = self._renderer.render(self._scene, flags=pr.RenderFlags.SEG | flags, seg_node_map=nodes_map)
        seg = seg.astype(np.int32)
        labels = seg[..., 0] | (seg[..., 1] << 8) | (seg[..., 2] << 16)
        result = RenderResult(rgb=rgb, depth=np.asarray(depth, dtype=np.float32), labels=labels, camera=camera)
        if not with_masks:
            return result
        result.masks_visib = [labels == i + 1 for i in range(len(nodes))]
        if len(nodes) == 1:
            result.masks = [result.masks_visib[0].copy()]
        else:
            for node in nodes:  # each object alone: SEG skips nodes missing from the map
                _, d = self._renderer.render(self._scene, flags=pr.RenderFlags.SEG | flags,
                                             seg_node_map={node: _seg_color(1)})
                result.masks.append(np.asarray(d) > 0)
        return result

    def render_crop(self, camera: Camera, box_xywh, out_size: tuple[int, int], objects: Sequence[RenderObject],
                    **kw) -> RenderResult:
        """Render straight into the window ``box_xywh`` of ``camera`` resized to ``out_size`` (W, H),
        using the crop's intrinsics (``camera.crop``): no full frame, no resampling."""
        return self.render(camera.crop(box_xywh, out_size), objects, **kw)
