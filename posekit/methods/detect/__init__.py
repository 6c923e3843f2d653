"""The detect stage: where the part is in a photo.

``templates`` finds the part with no training: its templates (:mod:`posekit.methods.templates`) are
correlated with the photo's pretrained feature maps at several scales, the peaks are aligned and
verified by the full template match, and each kept detection carries the pose of its best template.
"""

from posekit.methods.detect.templates import DetectorConfig, TemplateDetector, TemplateHit

__all__ = ["DetectorConfig", "TemplateDetector", "TemplateHit"]
