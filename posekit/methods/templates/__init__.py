"""Templates: a training-free coarse stage on the pretrained backbone's features.

Clean centred renders of the part over the view sphere x in-plane turns go through the shared
ImageNet EfficientNet-Lite0 (:mod:`posekit.features.backbone`); a test crop is matched to every
template by the masked per-cell cosine of their stride-8 maps (:mod:`posekit.features.similarity`).
Build with :func:`build_workspace` (``posekit train templates``), open with :func:`load_workspace`.
"""

from posekit.methods.templates.presets import PRESETS, TemplatePreset, get_preset
from posekit.methods.templates.workspace import (
    TemplateSet,
    TemplateWorkspace,
    build_templates,
    build_workspace,
    load_workspace,
)

__all__ = ["PRESETS", "TemplatePreset", "TemplateSet", "TemplateWorkspace", "build_templates", "build_workspace",
           "get_preset", "load_workspace"]
