"""CAD intake: load STL/PLY/OBJ into an :class:`ObjectModel` (mm, diameter, symmetries, hash)."""

from posekit.cad.model import ObjectModel

__all__ = ["ObjectModel"]
