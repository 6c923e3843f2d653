"""Regenerate assets/bracket.stl: posekit's own demo part, an industrial angle bracket (mm).

A base plate (with two through-holes modelled as open tubes at one end and a slot-free other end),
an upright plate, a triangular gusset on one side only, a cylindrical boss on the upright and a
chamfer-like step on the plate: distinctive and deliberately NOT rotationally symmetric, so a pose
estimate of it is unique. Built by concatenating trimesh primitives (no boolean backend needed; the
pieces overlap, which rendering and sampling do not mind). Deterministic: same bytes every run.
STL has no colours; renderers use a plain material for it.

    python assets/make_part.py            # writes assets/bracket.stl next to this file
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh


def _box(size, center) -> trimesh.Trimesh:
    m = trimesh.creation.box(extents=size)
    m.apply_translation(center)
    return m


def _cylinder(radius, height, center, axis="z", sections=48) -> trimesh.Trimesh:
    m = trimesh.creation.cylinder(radius=radius, height=height, sections=sections)
    if axis == "x":
        m.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
    elif axis == "y":
        m.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    m.apply_translation(center)
    return m


def _annulus(r_in, r_out, height, center, sections=48) -> trimesh.Trimesh:
    m = trimesh.creation.annulus(r_min=r_in, r_max=r_out, height=height, sections=sections)
    m.apply_translation(center)
    return m


def _gusset(thickness, leg_x, leg_z, origin) -> trimesh.Trimesh:
    """A right-triangle web in the xz plane (legs along +x and +z from ``origin``), ``thickness`` along -y:
    the convex hull of the triangular prism's six corners."""
    tri = np.array([[0.0, 0.0], [leg_x, 0.0], [0.0, leg_z]])
    corners = [(x, -y, z) for x, z in tri for y in (0.0, thickness)]
    return trimesh.convex.convex_hull(np.asarray(corners) + np.asarray(origin))


def make_bracket() -> trimesh.Trimesh:
    """The bracket, centred on its bounding-box centre, in mm (~110 mm across)."""
    parts = [
        # Base plate 90 x 50 x 8, from x=-10 (upright side) to x=80.
        _box((90.0, 50.0, 8.0), (35.0, 0.0, 4.0)),
        # Upright plate 8 x 50 x 60 at the x=-10 end.
        _box((8.0, 50.0, 60.0), (-6.0, 0.0, 38.0)),
        # Two bolt holes in the base plate, shown as rings standing proud by 2 mm, unequal sizes.
        _annulus(4.5, 9.0, 10.0, (45.0, -12.0, 5.0)),
        _annulus(3.0, 6.5, 10.0, (68.0, 12.0, 5.0)),
        # One gusset only (y = +18 side), between plate and upright.
        _gusset(6.0, 40.0, 35.0, (-2.0, 21.0, 8.0)),
        # A boss on the outside of the upright, off-centre, plus a small pin.
        _cylinder(11.0, 14.0, (-17.0, -8.0, 48.0), axis="x"),
        _cylinder(3.0, 10.0, (-28.0, -8.0, 48.0), axis="x", sections=24),
        # A stepped lip along one edge of the plate.
        _box((40.0, 6.0, 5.0), (60.0, -22.0, 10.5)),
    ]
    mesh = trimesh.util.concatenate(parts)
    lo, hi = mesh.bounds
    mesh.apply_translation(-0.5 * (lo + hi))
    # Subdivide long triangles so the part has a few thousand faces (better sampling and shading).
    v, f = trimesh.remesh.subdivide_to_size(mesh.vertices, mesh.faces, max_edge=9.0)
    return trimesh.Trimesh(v, f, process=True)


def main() -> None:
    out = Path(__file__).resolve().parent / "bracket.stl"
    mesh = make_bracket()
    out.write_bytes(trimesh.exchange.stl.export_stl(mesh))
    print(f"wrote {out}: {len(mesh.faces)} faces, extents {np.round(mesh.extents, 1).tolist()} mm")


if __name__ == "__main__":
    main()
