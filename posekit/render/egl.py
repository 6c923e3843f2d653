"""Headless OpenGL set-up: pyrender must see PYOPENGL_PLATFORM before it is imported.

EGL runs on Mesa's software rasteriser on CPU machines and on the GPU driver where
there is one. A user's own PYOPENGL_PLATFORM (e.g. osmesa) is respected.
"""

from __future__ import annotations

import os


def import_pyrender():
    """Import pyrender with PYOPENGL_PLATFORM defaulting to 'egl' (headless)."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    import pyrender

    return pyrender
