"""Renderers: pyrender offscreen (gl), PyTorch3D differentiable (diff), scene sampling and domain randomisation."""
