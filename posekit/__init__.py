"""posekit: 6D pose of a rigid object from one RGB image and its CAD model.

Conventions (docs/conventions.md): BOP model-to-camera poses (R 3x3, t in mm),
OpenCV camera (x right, y down, z forward), intrinsics K 3x3.
"""

__version__ = "0.1.0"
