"""Refinement by pretrained features, with no training (``--refine features``).

:class:`FeatureRefiner` renders candidate poses around the current one, scores each render against the
image by the masked stride-8 similarity of the shared ImageNet backbone (the templates' measure), moves
to the best and shrinks its steps where none is better.
"""

from posekit.methods.featurefit.refiner import (
    DEPTH_SWEEP,
    DepthSweep,
    FeatureFitConfig,
    FeatureRefiner,
    search_config,
)

__all__ = ["DEPTH_SWEEP", "DepthSweep", "FeatureFitConfig", "FeatureRefiner", "search_config"]
