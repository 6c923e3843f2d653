"""Image features learnt on real photos, shared by every method that wants them (no method owns this package).

``backbone``: the ImageNet-pretrained EfficientNet-Lite0 as a feature pyramid (maps by name, ``s2`` ... ``s32``).
``similarity``: the masked per-cell cosine that compares an observed crop's map with a rendered one.
"""
