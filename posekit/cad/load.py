"""CAD intake: STL (binary/ASCII), PLY and OBJ through trimesh into one typed :class:`ObjectModel`.

CAD files carry no reliable units. ``units="auto"`` treats a model whose bounding-box diagonal is
under 5 units as metres (no real object in this domain is under 5 mm across) and scales it to mm,
with a :class:`UnitsWarning` that says what was decided and why; ``"mm"`` / ``"m"`` force it.
Every failure is a :class:`~posekit.errors.CadError` naming the file and the problem.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from posekit.cad.model import ObjectModel
from posekit.cad.properties import bbox_center, diameter, face_areas, mesh_hash
from posekit.errors import CadError

SUPPORTED_SUFFIXES = (".stl", ".ply", ".obj")
#: Under ``units="auto"``, a bounding-box diagonal below this many units means metres.
AUTO_METRES_BELOW = 5.0


class UnitsWarning(UserWarning):
    """A units decision the user should know about (a model scaled from metres to millimetres)."""


def read_mesh(path: str | Path):
    """Read a mesh file with trimesh (no processing) and check it is a usable triangle mesh.

    STL has no shared vertices, so coincident ones are merged there (otherwise every triangle is
    an island and vertex normals are flat). Raises CadError for a missing, unreadable, empty or
    degenerate file.
    """
    import trimesh

    path = Path(path)
    if not path.exists():
        raise CadError(f"{path}: file not found")
    if not path.is_file():
        raise CadError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise CadError(f"{path}: unsupported mesh format {suffix or '(no extension)'!r} "
                       f"(expected one of {', '.join(SUPPORTED_SUFFIXES)})")
    if path.stat().st_size == 0:
        raise CadError(f"{path}: empty file")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001 - trimesh raises anything from its parsers
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CadError(f"{path}: cannot be read as {suffix[1:].upper()}: {detail}") from None
    if not isinstance(mesh, trimesh.Trimesh):
        raise CadError(f"{path}: not a triangle mesh (trimesh read a {type(mesh).__name__})")
    if len(mesh.faces) == 0:
        raise CadError(f"{path}: no faces (a point cloud or an empty mesh, not a surface)")
    verts = np.asarray(mesh.vertices)
    if not np.isfinite(verts).all():
        bad = int((~np.isfinite(verts).all(axis=1)).sum())
        raise CadError(f"{path}: {bad} vertices have NaN or infinite coordinates")
    faces = np.asarray(mesh.faces)
    if faces.min() < 0 or faces.max() >= len(verts):
        raise CadError(f"{path}: faces index vertices that do not exist")
    if suffix == ".stl":
        mesh.merge_vertices()
    if not (face_areas(mesh.vertices, mesh.faces) > 0).any():
        raise CadError(f"{path}: every face has zero area (degenerate mesh)")
    return mesh


def decide_units(vertices: np.ndarray, units: str, source: str = "model") -> tuple[float, str]:
    """Scale factor to millimetres and a one-line note saying what was decided and why.

    ``auto``: a bounding-box diagonal under 5 units is read as metres (x1000), otherwise as mm.
    """
    if units not in ("auto", "mm", "m"):
        raise CadError(f"{source}: --units must be auto, mm or m, got {units!r}")
    diag = float(np.linalg.norm(vertices.max(axis=0) - vertices.min(axis=0)))
    if units == "mm":
        return 1.0, "millimetres (--units mm)"
    if units == "m":
        return 1000.0, "metres, scaled x1000 to mm (--units m)"
    if diag < AUTO_METRES_BELOW:
        return 1000.0, (f"metres: bounding-box diagonal is {diag:.4g} units (< {AUTO_METRES_BELOW:g}), "
                        f"so scaled x1000 to mm; pass --units mm if it really is that small")
    return 1.0, f"millimetres: bounding-box diagonal is {diag:.4g} units (>= {AUTO_METRES_BELOW:g})"


def _visuals(mesh) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Vertex colours (N,3 float in [0,1]) or UV + texture image, whichever the file carries."""
    visual = mesh.visual
    kind = getattr(visual, "kind", None)
    if kind == "vertex":
        rgba = np.asarray(visual.vertex_colors)
        if len(rgba) == len(mesh.vertices):
            return (rgba[:, :3] / 255.0).astype(np.float32), None, None
    if kind == "texture" and getattr(visual, "uv", None) is not None:
        material = visual.material
        image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
        if image is not None:
            return None, np.asarray(visual.uv, dtype=np.float64), np.asarray(image.convert("RGB"))
    return None, None, None


def load_model(path: str | Path, units: str = "auto", center: bool = False, obj_id: int | None = None,
               symmetries: str | dict = "detect", name: str | None = None) -> ObjectModel:
    """Load a CAD file into an ObjectModel in millimetres.

    Args:
        units: "auto" | "mm" | "m" (see module docstring); a scaling decision is warned about.
        center: move the bounding-box centre to the origin (the units note says so).
        symmetries: "detect" (from the geometry, see posekit.cad.symmetry), "none", or a
            models_info entry (dict) whose symmetries_discrete / symmetries_continuous are used.
    The mesh hash is taken after the units decision and re-centring (see properties.mesh_hash).
    """
    path = Path(path)
    mesh = read_mesh(path)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    scale, note = decide_units(verts, units, str(path))
    if units == "auto" and scale != 1.0:
        warnings.warn(f"{path}: units: {note}", UnitsWarning, stacklevel=2)
    verts = verts * scale
    shift = None
    if center:
        shift = -bbox_center(verts)
        verts = verts + shift
        note += f"; re-centred: moved by {shift.round(3).tolist()} mm (bbox centre to origin)"
    colors, uv, image = _visuals(mesh)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64)
    model = ObjectModel(
        vertices=verts, faces=faces, diameter=diameter(verts), mesh_hash=mesh_hash(verts, faces),
        vertex_colors=colors, vertex_normals=normals, texture_uv=uv, texture_image=image,
        obj_id=obj_id, name=name or path.stem, source=str(path), units_note=note, center_shift=shift,
    )
    if isinstance(symmetries, dict):
        model.symmetries_discrete = [np.asarray(s, dtype=np.float64).reshape(4, 4)
                                     for s in symmetries.get("symmetries_discrete", [])]
        model.symmetries_continuous = [{"axis": np.asarray(s["axis"], dtype=np.float64),
                                        "offset": np.asarray(s["offset"], dtype=np.float64)}
                                       for s in symmetries.get("symmetries_continuous", [])]
    elif symmetries == "detect":
        from posekit.cad.symmetry import detect_symmetries

        found = detect_symmetries(verts, faces, model.diameter)
        model.symmetries_discrete = found.discrete
        model.symmetries_continuous = found.continuous
    elif symmetries != "none":
        raise ValueError(f"symmetries must be 'detect', 'none' or a models_info dict, got {symmetries!r}")
    return model
