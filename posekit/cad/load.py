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

from posekit.cad.model import ObjectModel, UnitsWarning  # noqa: F401  (UnitsWarning: its home for users)
from posekit.cad.properties import bbox_center, diameter, face_areas, mesh_hash
from posekit.errors import CadError

SUPPORTED_SUFFIXES = (".stl", ".ply", ".obj")
#: Under ``units="auto"``, a bounding-box diagonal below this many units means metres.
AUTO_METRES_BELOW = 5.0


_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image", b"%PDF": "a PDF file",
          b"PK\x03\x04": "a ZIP archive", b"\x1f\x8b": "a gzip archive", b"BM": "a BMP image"}


def _not_a_mesh(head: bytes) -> str | None:
    """What the file is, when its first bytes say it is a known non-mesh format."""
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return what
    return None


def _truncation(path: Path, suffix: str) -> str | None:
    """Why a mesh file is short, when its own header says how much it should hold (binary STL, PLY)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4096)
    if suffix == ".stl" and not head.lstrip().lower().startswith(b"solid") and size >= 84:
        n = int(np.frombuffer(head[80:84], dtype="<u4")[0])
        want = 84 + 50 * n
        if size < want:
            return f"truncated binary STL: its header announces {n} triangles ({want} bytes) but the file has {size} bytes"
    if suffix == ".stl" and size < 84 and not head.lstrip().lower().startswith(b"solid"):
        return f"truncated binary STL: {size} bytes, shorter than the 84-byte header"
    if suffix == ".ply":
        if not head.startswith(b"ply"):
            return "not a PLY file (it does not start with 'ply')"
        end = head.find(b"end_header")
        if end < 0:
            return "truncated PLY: no end_header line"
        lines = head[:end].decode("ascii", "replace").splitlines()
        counts = {ln.split()[1]: int(ln.split()[2]) for ln in lines if ln.startswith("element") and len(ln.split()) == 3}
        fmt = next((ln.split()[1] for ln in lines if ln.startswith("format")), "")
        body_start = end + len(b"end_header") + 1
        nv, nf = counts.get("vertex", 0), counts.get("face", 0)
        if fmt == "ascii":
            with open(path, "rb") as f:
                f.seek(body_start)
                rows = sum(1 for ln in f if ln.strip())
            if rows < nv + nf:
                return f"truncated PLY: its header announces {nv} vertices and {nf} faces but the file holds {rows} rows"
        else:
            # the smallest body those counts need: 3 float32 per vertex, a count byte + 3 int32 per face
            if size - body_start < 12 * nv + 13 * nf:
                return (f"truncated PLY: its header announces {nv} vertices and {nf} faces (at least "
                        f"{12 * nv + 13 * nf} bytes) but the body has {size - body_start} bytes")
    return None


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
    with open(path, "rb") as f:
        what = _not_a_mesh(f.read(16))
    if what:
        raise CadError(f"{path}: not a mesh: the file is {what} with a {suffix} name")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001 - trimesh raises anything from its parsers
        why = _truncation(path, suffix)
        if why:
            raise CadError(f"{path}: {why}") from None
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CadError(f"{path}: cannot be read as {suffix[1:].upper()}: {detail}") from None
    if not isinstance(mesh, trimesh.Trimesh):
        raise CadError(f"{path}: not a triangle mesh (trimesh read a {type(mesh).__name__})")
    if len(mesh.faces) == 0:
        why = _truncation(path, suffix)
        raise CadError(f"{path}: {why}" if why else f"{path}: no faces (a point cloud or an empty mesh, not a surface)")
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
