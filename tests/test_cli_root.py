"""The `posekit` command itself: version, help, doctor."""

from __future__ import annotations

import subprocess
import sys

from posekit import __version__


def _posekit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "posekit", *args], capture_output=True, text=True, timeout=300)


def test_version():
    r = _posekit("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"posekit {__version__}"


def test_help_lists_working_verbs_only():
    r = _posekit("--help")
    assert r.returncode == 0
    assert "doctor" in r.stdout
    # Every listed verb must answer --help with exit 0 (no stubs behind the listing).
    import typer.main

    from posekit.cli.main import app

    group = typer.main.get_command(app)
    for name in group.list_commands(None):
        sub = _posekit(name, "--help")
        assert sub.returncode == 0, (name, sub.stderr)


def test_doctor_passes_here():
    """The machine posekit is developed and tested on has every dependency and headless EGL."""
    r = _posekit("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("torch", "pytorch3d", "pyrender", "open3d", "opengl"):
        assert any(line.startswith("ok") and f" {name} " in line + " " for line in r.stdout.splitlines()), name


def test_doctor_reports_a_broken_renderer(monkeypatch):
    """A failing check prints a fix hint and exits 1."""
    from typer.testing import CliRunner

    from posekit.cli import doctor
    from posekit.cli.main import app

    monkeypatch.setattr(doctor, "check_rendering", lambda: doctor.Check("opengl", False, "no EGL", "install EGL"))
    r = CliRunner().invoke(app, ["doctor"])
    assert r.exit_code == 1
    assert "fix: opengl: install EGL" in r.output


def test_train_preset_help_names_every_preset_of_its_table():
    """`posekit train X --help` is where users pick a preset: each method's table must be listed there in full."""
    import typer.main

    from posekit.cli.main import app
    from posekit.methods.aae.presets import PRESETS as AAE
    from posekit.methods.refine.presets import PRESETS as REFINE
    from posekit.methods.regress.presets import PRESETS as REGRESS

    train = typer.main.get_command(app).commands["train"]
    for verb, table in (("aae", AAE), ("refine", REFINE), ("regress", REGRESS)):
        (param,) = [p for p in train.commands[verb].params if p.name == "preset"]
        listed = {w.strip(",;()") for w in param.help.replace("|", " ").split()}
        missing = [name for name in table if name not in listed]
        assert not missing, (verb, missing, param.help)
