"""The detect stage: where the part is in a photo.

``templates`` finds the part with no training: its templates (:mod:`posekit.methods.templates`) are
correlated with the photo's pretrained feature maps at several scales, the peaks are aligned and
verified by the full template match, and each kept detection carries the pose of its best template.
``pool`` adds a trained detector's boxes to the template detector's candidates, all verified and ranked alike.
``verifier`` is a learned check of the hits (`posekit train verifier`), one more in the template detector's mean.
"""

from posekit.methods.detect.pool import PoolConfig, PooledDetector
from posekit.methods.detect.templates import DetectorConfig, TemplateDetector, TemplateHit

__all__ = ["DetectorConfig", "PoolConfig", "PooledDetector", "TemplateDetector", "TemplateHit"]
