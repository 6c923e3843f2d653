"""Mesh decimation to a face budget, for renderers whose cost grows with the face count.

PyTorch3D's rasteriser costs about faces x pixels on CPU, so the differentiable renderer works on a
quadric-decimated proxy (open3d ``simplify_quadric_decimation``), keeping vertex colours (open3d
carries them through the edge collapses; a UV texture is first baked into vertex colours).

The returned model is a rendering proxy of the *same object*: it keeps the source's ``diameter``,
symmetries, ``obj_id``, ``name``, ``source`` **and ``mesh_hash``** (so whatever is trained on the
proxy stays tied to the source mesh); ``units_note`` records the decimation. Do not use the proxy's
vertices for metrics (ADD needs the full or BOP ``models_eval`` mesh).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from posekit.cad.model import ObjectModel

DEFAULT_MAX_FACES = 2000


def texture_to_vertex_colors(model: ObjectModel) -> np.ndarray | None:
    """Per-vertex RGB in [0, 1] sampled (nearest texel) from the UV texture, or None without one.

    UVs follow the trimesh / OBJ convention: v = 0 is the image's bottom row.
    """
    if model.texture_uv is None or model.texture_image is None:
        return None
    img = np.asarray(model.texture_image)
    h, w = img.shape[:2]
    uv = np.asarray(model.texture_uv, dtype=np.float64)
    uv = np.where((uv < 0.0) | (uv > 1.0), uv % 1.0, uv)  # repeat-wrap outside [0, 1]; keep 1.0 itself
    cols = np.clip(np.round(uv[:, 0] * (w - 1)).astype(int), 0, w - 1)
    rows = np.clip(np.round((1.0 - uv[:, 1]) * (h - 1)).astype(int), 0, h - 1)
    rgb = img[rows, cols, :3].astype(np.float32)
    return rgb / 255.0 if img.dtype == np.uint8 else rgb


def decimate(model: ObjectModel, max_faces: int = DEFAULT_MAX_FACES) -> ObjectModel:
    """A copy of ``model`` with at most ``max_faces`` triangles (the model itself if it already has).

    Vertex colours are kept (texture baked to vertex colours first); vertex normals are recomputed.
    """
    import open3d as o3d

    if max_faces < 4:
        raise ValueError(f"max_faces must be at least 4, got {max_faces}")
    if len(model.faces) <= max_faces:
        return model
    colors = model.vertex_colors if model.vertex_colors is not None else texture_to_vertex_colors(model)
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(model.vertices, dtype=np.float64)),
        o3d.utility.Vector3iVector(np.asarray(model.faces, dtype=np.int32)),
    )
    if colors is not None:
        mesh.vertex_colors = o3d.utility.Vector3dVector(np.clip(np.asarray(colors, dtype=np.float64)[:, :3], 0, 1))
    out = mesh.simplify_quadric_decimation(target_number_of_triangles=int(max_faces))
    out.remove_degenerate_triangles()
    out.remove_unreferenced_vertices()
    out.compute_vertex_normals()
    vertices = np.asarray(out.vertices, dtype=np.float64)
    faces = np.asarray(out.triangles, dtype=np.int64)
    new_colors = np.asarray(out.vertex_colors, dtype=np.float32) if colors is not None else None
    note = f"decimated {len(model.faces)} -> {len(faces)} faces (open3d quadric); mesh_hash is the source's"
    return dataclasses.replace(
        model,
        vertices=vertices,
        faces=faces,
        vertex_colors=new_colors,
        vertex_normals=np.asarray(out.vertex_normals, dtype=np.float64),
        texture_uv=None,
        texture_image=None,
        symmetries_discrete=list(model.symmetries_discrete),
        symmetries_continuous=list(model.symmetries_continuous),
        units_note=(model.units_note + "; " if model.units_note else "") + note,
    )
