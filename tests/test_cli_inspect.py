"""`posekit inspect`: report, --json round trip, --bop-models, bad input (exit 2, one stderr line)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import trimesh
from typer.testing import CliRunner

from posekit.cad.load import load_model
from posekit.cli.main import app


def _run(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_report_and_json_round_trip(tmp_path, assets):
    out = tmp_path / "info.json"
    code, stdout, _ = _run("inspect", str(assets / "bracket.stl"), "--json", str(out))
    assert code == 0, stdout
    assert "4686 faces" in stdout and "symmetries:  none" in stdout and "diameter:" in stdout
    info = json.loads(out.read_text())
    (key, entry), = info.items()
    assert key == "bracket"
    model = load_model(assets / "bracket.stl", symmetries=entry)
    assert entry["diameter"] == pytest.approx(model.diameter)
    assert [entry["size_x"], entry["size_y"], entry["size_z"]] == pytest.approx(model.bbox_size.tolist())
    assert "symmetries_discrete" not in entry


def test_units_warning_and_center(tmp_path):
    mesh = trimesh.creation.box((0.1, 0.05, 0.02))
    mesh.apply_translation((0.2, 0.0, 0.0))
    path = tmp_path / "small.stl"
    path.write_bytes(mesh.export(file_type="stl"))
    code, stdout, stderr = _run("inspect", str(path), "--center", "--no-symmetry")
    assert code == 0
    assert "metres" in stderr and str(path) in stderr and stderr.count("\n") == 1
    assert "re-centred" in stdout and "[-200.0, " in stdout and "size [100.0, 50.0, 20.0]" in stdout


def test_json_symmetric_entry(tmp_path):
    path = tmp_path / "obj_000007.ply"
    path.write_bytes(trimesh.creation.box((40.0, 60.0, 100.0)).export(file_type="ply"))
    out = tmp_path / "o.json"
    code, stdout, _ = _run("inspect", str(path), "--json", str(out))
    assert code == 0, stdout
    entry = json.loads(out.read_text())["7"]
    flips = [np.asarray(s).reshape(4, 4) for s in entry["symmetries_discrete"]]
    assert len(flips) == 3 and all(np.allclose(T @ T, np.eye(4), atol=1e-6) for T in flips)
    assert load_model(path, symmetries=entry).symmetries_discrete[0].shape == (4, 4)


def test_bop_models_folder(tmp_path, lmo_dev):
    """Two LM-O models (eggbox symmetric, ape not) copied into a tmp BOP models folder."""
    folder = tmp_path / "models"
    folder.mkdir()
    for obj in (1, 10):
        shutil.copy(lmo_dev / "models" / f"obj_{obj:06d}.ply", folder)
    code, stdout, stderr = _run("inspect", "--bop-models", str(folder))
    assert code == 0, stderr
    info = json.loads((folder / "models_info.json").read_text())
    ref = json.loads((lmo_dev / "models" / "models_info.json").read_text())
    assert sorted(info) == ["1", "10"]
    for k in info:
        assert info[k]["diameter"] == pytest.approx(ref[k]["diameter"], rel=1e-3)
    assert "symmetries_discrete" not in info["1"] and len(info["10"]["symmetries_discrete"]) == 1
    # An existing models_info.json is not replaced without --force.
    code, _, stderr = _run("inspect", "--bop-models", str(folder), "--no-symmetry")
    assert code == 2 and "already exists" in stderr
    assert len(json.loads((folder / "models_info.json").read_text())["10"]["symmetries_discrete"]) == 1
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def _bad_inputs(tmp_path):
    nan = tmp_path / "nan.obj"
    nan.write_text("v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n")
    flat = tmp_path / "flat.ply"
    flat.write_bytes(trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 1, 2]], process=False)
                     .export(file_type="ply"))
    cloud = tmp_path / "cloud.ply"
    cloud.write_bytes(trimesh.PointCloud(np.random.default_rng(0).random((50, 3))).export(file_type="ply"))
    garbage = tmp_path / "garbage.obj"
    garbage.write_bytes(bytes(range(256)) * 4)
    empty = tmp_path / "empty.stl"
    empty.write_bytes(b"")
    return {"missing": tmp_path / "missing.stl", "empty": empty, "garbage": garbage, "cloud": cloud,
            "nan": nan, "flat": flat, "folder": tmp_path}


@pytest.mark.parametrize("case", ["missing", "empty", "garbage", "cloud", "nan", "flat", "folder"])
def test_bad_input_exits_2_with_one_line(tmp_path, case):
    path = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out.json"
    code, stdout, stderr = _run("inspect", str(path), "--json", str(out))
    assert code == 2, (stdout, stderr)
    assert stderr.count("\n") == 1 and str(path) in stderr and "Traceback" not in stderr + stdout
    assert not out.exists()


def test_bop_models_not_a_models_folder(tmp_path):
    code, _, stderr = _run("inspect", "--bop-models", str(tmp_path))
    assert code == 2 and "obj_XXXXXX.ply" in stderr and stderr.count("\n") == 1
