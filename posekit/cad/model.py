"""The typed object model every stage shares: a mesh in millimetres plus what BOP's models_info says of it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class UnitsWarning(UserWarning):
    """A units decision the user should know about (a model scaled from metres to millimetres)."""


@dataclass
class ObjectModel:
    """A rigid object's mesh in millimetres, centred as loaded (or re-centred on request).

    Attributes:
        vertices: (N, 3) float64, mm, model frame.
        faces: (M, 3) int64 vertex indices.
        vertex_colors: (N, 3) float32 in [0, 1], or None (a plain material is used then).
        texture_uv / texture_image: optional UV texture ((N, 2) float, HxWx3 uint8).
        diameter: largest vertex-to-vertex distance, mm.
        symmetries_discrete: list of 4x4 model-frame transforms (translation in mm), identity excluded.
        symmetries_continuous: list of {"axis": [3], "offset": [3] (mm)}, BOP models_info form.
        mesh_hash: content hash of the mesh as loaded (ties trained workspaces to their mesh).
        obj_id: BOP object id where known.
        name: a human name (file stem by default).
        source: the path the mesh was loaded from.
        units_note: what the units decision was and why (for reports).
        center_shift: translation (mm) added to the file's vertices by re-centring, None if not re-centred.
    """

    vertices: np.ndarray
    faces: np.ndarray
    diameter: float
    mesh_hash: str
    vertex_colors: np.ndarray | None = None
    vertex_normals: np.ndarray | None = None
    texture_uv: np.ndarray | None = None
    texture_image: np.ndarray | None = None
    symmetries_discrete: list[np.ndarray] = field(default_factory=list)
    symmetries_continuous: list[dict] = field(default_factory=list)
    obj_id: int | None = None
    name: str = "object"
    source: str | None = None
    units_note: str = ""
    center_shift: np.ndarray | None = None

    @property
    def bbox_min(self) -> np.ndarray:
        return self.vertices.min(axis=0)

    @property
    def bbox_size(self) -> np.ndarray:
        return self.vertices.max(axis=0) - self.vertices.min(axis=0)

    @property
    def bbox_corners(self) -> np.ndarray:
        """(8, 3) corners of the axis-aligned bounding box in the model frame, mm."""
        lo, hi = self.vertices.min(axis=0), self.vertices.max(axis=0)
        return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])

    @property
    def is_symmetric(self) -> bool:
        return bool(self.symmetries_discrete or self.symmetries_continuous)

    def to_trimesh(self):
        """A trimesh.Trimesh of this model (vertex colours attached when present)."""
        import trimesh

        kwargs = {}
        if self.vertex_colors is not None:
            rgba = np.concatenate(
                [np.clip(self.vertex_colors, 0, 1), np.ones((len(self.vertices), 1))], axis=1
            )
            kwargs["vertex_colors"] = (rgba * 255).astype(np.uint8)
        return trimesh.Trimesh(self.vertices, self.faces, process=False, **kwargs)

    def workspace_record(self) -> dict:
        """What a trained workspace records of each part it covers (identity, CAD path, BOP models_info entry)."""
        from pathlib import Path

        return {
            "name": self.name, "obj_id": self.obj_id, "mesh_hash": self.mesh_hash, "diameter": float(self.diameter),
            "centered": self.center_shift is not None,
            "cad": str(Path(self.source).resolve()) if self.source else None,
            "models_info": self.models_info_entry(),
        }

    def models_info_entry(self) -> dict:
        """This model's entry in a BOP models_info.json (diameter, bbox, symmetries)."""
        lo, size = self.bbox_min, self.bbox_size
        entry: dict = {
            "diameter": float(self.diameter),
            "min_x": float(lo[0]), "min_y": float(lo[1]), "min_z": float(lo[2]),
            "size_x": float(size[0]), "size_y": float(size[1]), "size_z": float(size[2]),
        }
        if self.symmetries_discrete:
            entry["symmetries_discrete"] = [
                [float(v) for v in np.asarray(T, dtype=np.float64).reshape(-1)] for T in self.symmetries_discrete
            ]
        if self.symmetries_continuous:
            entry["symmetries_continuous"] = [
                {"axis": [float(v) for v in s["axis"]], "offset": [float(v) for v in s["offset"]]}
                for s in self.symmetries_continuous
            ]
        return entry


def model_index(models, key, what: str = "this stage") -> int:
    """Index in ``models`` of the part named by ``key``: a BOP obj_id (int), a name or a mesh hash; InputError
    naming the known parts otherwise."""
    from posekit.errors import InputError

    for i, m in enumerate(models):
        if (isinstance(key, (int, np.integer)) and m.obj_id == int(key)) or key in (m.name, m.mesh_hash):
            return i
    known = ", ".join(f"{m.name} (obj_id {m.obj_id})" for m in models)
    raise InputError(f"{what} was not made for object {key!r}; it knows {known}")
