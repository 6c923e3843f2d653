"""Augmented autoencoder (Sundermeyer et al., ECCV 2018): implicit 3D orientation from a codebook of latent codes.

Train with :func:`train_aae` (or ``posekit train aae``); open a trained workspace with
:func:`load_workspace`, crop with :meth:`AaeWorkspace.crop`, encode with
:meth:`AaeWorkspace.encode` and look rotations up with :meth:`AaeWorkspace.lookup`.
"""

from posekit.geometry.boxcrop import crop_boxes, mask_box, square_window, turned_crops
from posekit.methods.aae.codebook import (
    AaeWorkspace,
    Codebook,
    build_codebook,
    load_workspace,
    rebuild_codebook,
)
from posekit.methods.aae.network import AugmentedAutoencoder, bootstrapped_l2
from posekit.methods.aae.presets import PRESETS, AaePreset, get_preset
from posekit.methods.aae.train import AaeTrainResult, AaeTrainTask, RenderCache, build_render_cache, train_aae

__all__ = [
    "PRESETS", "AaePreset", "AaeTrainResult", "AaeTrainTask", "AaeWorkspace", "AugmentedAutoencoder", "Codebook",
    "RenderCache", "bootstrapped_l2", "build_codebook", "build_render_cache", "crop_boxes", "get_preset",
    "load_workspace", "mask_box", "rebuild_codebook", "turned_crops", "square_window", "train_aae",
]
