"""Deep-6DPose-style detection and direct pose regression (Do et al., 2018).

torchvision's Mask R-CNN on an FPN over the shared pretrained EfficientNet-Lite0 (:mod:`posekit.features`),
with Deep-6DPose's pose branch on the RoI features: rotation as an so(3) vector, translation as the projected
centre relative to the box and a box-normalised depth. Train with ``posekit train regress``; open a workspace
with :func:`load_workspace`; :meth:`RegressWorkspace.detect` gives boxes, masks and poses.
"""

from posekit.methods.regress.presets import PRESETS, RegressPreset, get_preset
from posekit.methods.regress.workspace import RegressDetection, RegressWorkspace, load_workspace

__all__ = ["PRESETS", "RegressDetection", "RegressPreset", "RegressWorkspace", "get_preset", "load_workspace"]
