"""`posekit render` from the command line: a killed run resumes to the same dataset; bad input -> one line, exit 2."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trimesh
from typer.testing import CliRunner

from posekit.cli.main import app

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture(scope="module")
def cad(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cad") / "part.ply"
    trimesh.creation.annulus(r_min=10, r_max=30, height=40, sections=24).export(p)
    return p


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _cmd(cad: Path, out: Path, *extra: str) -> list[str]:
    return ["render", "--cad", str(cad), "--units", "mm", "--out", str(out), "--count", "12", "--size", "128x96",
            "--seed", "5", "--quiet", *extra]


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("posekit: error:"), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_killed_run_resumes_to_the_uninterrupted_dataset(tmp_path, cad):
    ref, part = tmp_path / "ref", tmp_path / "part"
    r = runner.invoke(app, _cmd(cad, ref))
    assert r.exit_code == 0, r.output
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "posekit", *_cmd(cad, part, "--flush-every", "2")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cams = part / "train_synt" / "000000" / "scene_camera.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if cams.is_file() and len(json.loads(cams.read_text())) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed midway, not finished
    assert len(json.loads(cams.read_text())) < 12  # JSON valid and partial
    r = runner.invoke(app, _cmd(cad, part))
    assert r.exit_code == 0, r.output
    assert _tree(part) == _tree(ref)
    r = runner.invoke(app, _cmd(cad, part))
    assert r.exit_code == 0 and "nothing to do" in r.output
    # The same job with another seed into the same folder is refused.
    line = _one_error_line(runner.invoke(app, [*_cmd(cad, part)[:-2], "6", "--quiet"]))
    assert "posekit_render_job.json" in line and "seed" in line


def test_merge_and_preview_commands(tmp_path, cad):
    for i in range(2):
        r = runner.invoke(app, [*_cmd(cad, tmp_path / f"s{i}"), "--shard", f"{i}/2", "--count", "4"])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["render", "merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out",
                            str(tmp_path / "m"), "--quiet"])
    assert r.exit_code == 0 and "4 of 4 complete" in r.output, r.output
    r = runner.invoke(app, ["render", "preview", str(tmp_path / "m"), "--out", str(tmp_path / "sheet.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "sheet.png").stat().st_size > 1000


@pytest.mark.parametrize("case", ["bad_cad", "camera_without_K", "zero_size", "unwritable_out", "bad_shard"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, cad, case):
    out = tmp_path / "out"
    args = _cmd(cad, out)
    if case == "bad_cad":
        bad = tmp_path / "broken.stl"
        bad.write_bytes(b"solid nothing\nendsolid\n")
        args = _cmd(bad, out)
        needle = "broken.stl"
    elif case == "camera_without_K":
        cam = tmp_path / "camera.json"
        cam.write_text('{"width": 640, "height": 480}')
        args += ["--camera", str(cam)]
        needle = "camera.json"
    elif case == "zero_size":
        args += ["--size", "0x0"]
        needle = "--size"
    elif case == "unwritable_out":
        blocker = tmp_path / "a_file"
        blocker.write_text("x")
        out = blocker / "sub"
        args = _cmd(cad, out)
        needle = str(out)
    else:
        args += ["--shard", "2/2"]
        needle = "--shard"
    line = _one_error_line(runner.invoke(app, args))
    assert needle in line
    assert not out.exists() or case == "bad_cad"
    if case == "bad_cad":  # nothing half-written: no job claimed, no images
        assert not (out / "train_synt").exists()
