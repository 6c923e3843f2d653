"""CAD intake: formats, units, diameter and symmetries (real LM-O models + synthetic shapes), demo part."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from posekit.cad.load import UnitsWarning, load_model
from posekit.cad.properties import diameter
from posekit.cad.symmetry import detect_symmetries
from posekit.errors import CadError

LMO_IDS = (1, 5, 6, 8, 9, 10, 11, 12)


def _rot_deg(A: np.ndarray, B: np.ndarray) -> float:
    return float(np.rad2deg(Rotation.from_matrix(A[:3, :3].T @ B[:3, :3]).magnitude()))


@pytest.mark.parametrize("fmt", ["stl", "stl_ascii", "ply", "obj"])
def test_formats_load_to_same_geometry(tmp_path, fmt):
    mesh = trimesh.creation.box((30.0, 40.0, 50.0))
    ext = "stl" if fmt.startswith("stl") else fmt
    path = tmp_path / f"box.{ext}"
    data = trimesh.exchange.stl.export_stl_ascii(mesh) if fmt == "stl_ascii" else mesh.export(file_type=fmt)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    model = load_model(path, units="mm", symmetries="none")
    assert len(model.faces) == 12 and len(model.vertices) == 8  # STL's per-face vertices merged
    assert np.allclose(model.bbox_size, [30, 40, 50])
    assert model.diameter == pytest.approx(np.sqrt(30**2 + 40**2 + 50**2), rel=1e-6)


def test_units_auto_scales_metres_with_warning(tmp_path):
    path = tmp_path / "cube.stl"
    path.write_bytes(trimesh.creation.box((0.1, 0.1, 0.1)).export(file_type="stl"))
    with pytest.warns(UnitsWarning, match="metres"):
        model = load_model(path, units="auto", symmetries="none")
    assert np.allclose(model.bbox_size, [100, 100, 100])
    assert load_model(path, units="mm", symmetries="none").bbox_size[0] == pytest.approx(0.1)


def test_center_and_hash(tmp_path):
    mesh = trimesh.creation.box((20.0, 20.0, 20.0))
    mesh.apply_translation((5.0, 0.0, -3.0))
    path = tmp_path / "b.ply"
    path.write_bytes(mesh.export(file_type="ply"))
    a = load_model(path, symmetries="none")
    b = load_model(path, center=True, symmetries="none")
    assert np.allclose(b.center_shift, [-5, 0, 3]) and np.allclose(b.vertices.mean(axis=0), 0, atol=1e-9)
    assert a.mesh_hash == load_model(path, symmetries="none").mesh_hash != b.mesh_hash


@pytest.mark.parametrize("name, content, problem", [
    ("empty.stl", b"", "empty"), ("nofaces.stl", b"solid x\nendsolid x\n", "no faces"),
    ("garbage.ply", b"\x00\x01garbage" * 20, "not a PLY file"), ("part.step", b"ISO-10303-21;", "unsupported"),
], ids=["empty", "no-faces", "garbage", "step"])
def test_bad_files_raise_cad_error(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CadError, match=problem) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_nan_and_degenerate_meshes(tmp_path):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=float)
    nan = tmp_path / "nan.ply"
    nan.write_bytes(trimesh.Trimesh(np.vstack([v, [[np.nan, 0, 0]]]), [[0, 1, 2], [0, 1, 3]],
                                    process=False).export(file_type="ply"))
    with pytest.raises(CadError, match="NaN"):
        load_model(nan)
    flat = tmp_path / "flat.obj"
    flat.write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    with pytest.raises(CadError, match="zero area"):
        load_model(flat)


@pytest.fixture(scope="module")
def lmo_models(lmo_dev):
    """The 8 LM-O models (loaded once) and their models_info.json."""
    info = json.loads((lmo_dev / "models" / "models_info.json").read_text())
    models = {obj: load_model(lmo_dev / "models" / f"obj_{obj:06d}.ply", units="mm", symmetries="none")
              for obj in LMO_IDS}
    return models, info


def test_diameters_match_models_info(lmo_models):
    models, info = lmo_models
    for obj, model in models.items():
        assert model.diameter == pytest.approx(info[str(obj)]["diameter"], rel=1e-3), obj
        assert model.vertex_colors is not None


def test_symmetries_match_models_info(lmo_models):
    """Eggbox and glue: the models_info transform within 2 deg / 2 mm; the six others: none."""
    models, info = lmo_models
    for obj, model in models.items():
        found = detect_symmetries(model.vertices, model.faces, model.diameter)
        expected = [np.asarray(s).reshape(4, 4) for s in info[str(obj)].get("symmetries_discrete", [])]
        assert not found.continuous, obj
        assert len(found.discrete) == len(expected), (obj, [c.score for c in found.candidates][:5])
        for G in expected:
            best = min(found.discrete, key=lambda T, G=G: _rot_deg(G, T))
            assert _rot_deg(G, best) < 2.0, obj
            assert np.linalg.norm(G[:3, 3] - best[:3, 3]) < 2.0, obj


def _placed(mesh: trimesh.Trimesh, seed: int = 3) -> trimesh.Trimesh:
    """A copy in a random pose away from the origin (symmetries must not depend on the frame)."""
    mesh = mesh.copy()
    mesh.apply_transform(trimesh.transformations.random_rotation_matrix(np.random.default_rng(seed).random(3)))
    mesh.apply_translation((12.0, -7.0, 30.0))
    return mesh


def _detect(mesh: trimesh.Trimesh):
    return detect_symmetries(mesh.vertices, mesh.faces, diameter(mesh.vertices), n_samples=10000)


def _maps_onto_itself(mesh: trimesh.Trimesh, T: np.ndarray) -> bool:
    pts, _ = trimesh.sample.sample_surface(mesh, 2000, seed=0)
    moved = pts @ T[:3, :3].T + T[:3, 3]
    _, dist, _ = trimesh.proximity.closest_point(mesh, moved)
    return float(np.quantile(dist, 0.95)) < 0.02 * diameter(mesh.vertices)


def test_box_has_three_flips():
    mesh = _placed(trimesh.creation.box((40.0, 60.0, 100.0)))
    found = _detect(mesh)
    assert not found.continuous and len(found.discrete) == 3
    for T in found.discrete:
        assert abs(np.rad2deg(Rotation.from_matrix(T[:3, :3]).magnitude()) - 180) < 1
        assert _maps_onto_itself(mesh, T)


def test_cylinder_is_continuous_plus_flip():
    mesh = _placed(trimesh.creation.cylinder(radius=30.0, height=100.0, sections=64))
    found = _detect(mesh)
    assert len(found.continuous) == 1 and len(found.discrete) == 1
    axis = found.continuous[0]["axis"]
    R = trimesh.transformations.random_rotation_matrix(np.random.default_rng(3).random(3))[:3, :3]
    assert abs(abs(axis @ R[:, 2]) - 1) < 1e-3  # the cylinder's z axis, moved by the placement
    offset = found.continuous[0]["offset"]
    assert abs(offset @ axis) < 1e-6 and np.linalg.norm(np.cross((offset - [12, -7, 30]), axis)) < 0.5
    flip = found.discrete[0]
    assert abs(np.rad2deg(Rotation.from_matrix(flip[:3, :3]).magnitude()) - 180) < 1
    assert _maps_onto_itself(mesh, flip)


def test_cone_is_continuous_only():
    found = _detect(_placed(trimesh.creation.cone(radius=30.0, height=80.0, sections=64)))
    assert len(found.continuous) == 1 and not found.discrete


def test_l_bracket_has_none():
    a = trimesh.creation.box((80.0, 10.0, 40.0))
    b = trimesh.creation.box((10.0, 60.0, 40.0))
    b.apply_translation((35.0, 25.0, 0.0))
    found = _detect(_placed(trimesh.util.concatenate([a, b])))
    assert not found.discrete and not found.continuous


def test_demo_part(assets):
    path = assets / "bracket.stl"
    model = load_model(path, units="auto", symmetries="detect")
    assert 2000 <= len(model.faces) <= 10000
    assert 80 <= model.diameter <= 150
    assert np.linalg.norm(model.vertices.min(axis=0) + model.vertices.max(axis=0)) < 1.0  # bbox-centred
    assert not model.is_symmetric
    with open(path, "rb") as f:
        assert not f.read(5).lower().startswith(b"solid")  # binary STL


def test_truncated_and_disguised_files_name_the_real_problem(tmp_path, assets):
    import trimesh

    stl = (assets / "bracket.stl").read_bytes()
    cases = {"half.stl": (stl[: len(stl) // 2], "truncated binary STL: its header announces 4686 triangles"),
             "header.stl": (stl[:60], "truncated binary STL: 60 bytes"),
             "photo.stl": ((assets / "bracket_scene.png").read_bytes(), "the file is a PNG image with a .stl name")}
    box = tmp_path / "box.ply"
    trimesh.creation.box((10.0, 10.0, 10.0)).export(box, encoding="ascii")
    cases["half_ascii.ply"] = (box.read_bytes()[: int(0.7 * box.stat().st_size)],
                               "truncated PLY: its header announces 8 vertices and 12 faces")
    trimesh.creation.box((10.0, 10.0, 10.0)).export(box, encoding="binary")
    cases["half_binary.ply"] = (box.read_bytes()[: box.stat().st_size - 60], "truncated PLY")
    for name, (content, problem) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CadError, match=problem):
            load_model(path)


def test_cad_cache_gives_the_same_model_and_follows_the_file(tmp_path, monkeypatch):
    """A cached load equals a fresh one without parsing the file again; a changed file is parsed anew; a units
    warning of the first load is given on every hit."""
    from posekit.cad import load as cad_load
    from posekit.data.cad_cache import load_model_cached

    root = tmp_path / "store"
    path = tmp_path / "part.ply"
    mesh = trimesh.creation.box((0.02, 0.03, 0.05))  # metres: the auto units decision scales and warns
    mesh.visual.vertex_colors = np.tile([200, 30, 30, 255], (len(mesh.vertices), 1))
    path.write_bytes(mesh.export(file_type="ply"))
    with pytest.warns(UnitsWarning, match="metres"):
        first = load_model_cached(path, units="auto", center=True, obj_id=3, root=root)
    with pytest.warns(UnitsWarning):
        fresh = load_model(path, units="auto", center=True, obj_id=3, symmetries="none")
    monkeypatch.setattr(cad_load, "load_model", lambda *a, **k: pytest.fail("a hit parsed the file again"))
    with pytest.warns(UnitsWarning, match="metres"):
        hit = load_model_cached(path, units="auto", center=True, obj_id=3, root=root)
    for m in (first, hit):
        assert m.mesh_hash == fresh.mesh_hash and m.diameter == pytest.approx(fresh.diameter)
        for name in ("vertices", "faces", "vertex_colors", "vertex_normals", "center_shift"):
            assert np.array_equal(getattr(m, name), getattr(fresh, name)), name
        assert (m.obj_id, m.name, m.units_note, m.source) == (3, "part", fresh.units_note, str(path))
    monkeypatch.undo()
    path.write_bytes(trimesh.creation.box((30.0, 30.0, 30.0)).export(file_type="ply"))
    os.utime(path, ns=(time.time_ns() + 10**9,) * 2)  # a new modification time even on a coarse clock
    other = load_model_cached(path, units="auto", center=True, root=root)
    assert other.mesh_hash != fresh.mesh_hash and other.bbox_size[0] == pytest.approx(30.0)


def test_decimated_proxy_is_kept_in_the_store_and_follows_the_mesh(tmp_path, monkeypatch):
    """The rendering proxy of a part over the budget is decimated once: a second call (a new process, a new model
    object of the same mesh) reads it back equal without decimating; other colours or another budget decimate
    anew; a part within the budget is itself."""
    from posekit.cad import decimate as cad_decimate
    from posekit.data.cad_cache import decimate_cached

    root = tmp_path / "store"
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=40.0)  # 5,120 faces
    mesh.visual.vertex_colors = np.tile([200, 30, 30, 255], (len(mesh.vertices), 1))
    path = tmp_path / "ball.ply"
    path.write_bytes(mesh.export(file_type="ply"))
    part = load_model(path, units="mm", obj_id=7)
    first = decimate_cached(part, 1000, root=root)
    assert 900 <= len(first.faces) <= 1000 and len(list((root / "cad").glob("decimated-*.npz"))) == 1
    again = load_model(path, units="mm", obj_id=8)
    monkeypatch.setattr(cad_decimate, "decimate", lambda *a, **k: pytest.fail("a hit decimated again"))
    hit = decimate_cached(again, 1000, root=root)
    for name in ("vertices", "faces", "vertex_colors", "vertex_normals"):
        assert np.array_equal(getattr(hit, name), getattr(first, name)), name
    assert (hit.obj_id, hit.name, hit.mesh_hash, hit.source) == (8, part.name, part.mesh_hash, str(path))
    assert hit.diameter == pytest.approx(part.diameter)
    assert decimate_cached(part, 6000, root=root) is part  # within the budget: no proxy
    monkeypatch.undo()
    import dataclasses

    blue = dataclasses.replace(part, vertex_colors=np.tile([0.1, 0.2, 0.9], (len(part.vertices), 1)))
    assert np.allclose(decimate_cached(blue, 1000, root=root).vertex_colors.mean(0), [0.1, 0.2, 0.9], atol=0.02)
    assert len(decimate_cached(part, 500, root=root).faces) <= 500
    assert len(list((root / "cad").glob("decimated-*.npz"))) == 3
