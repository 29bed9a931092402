"""Localization: score model components for a fact dataset.

``factlens.localize(model, dataset, method=...)`` dispatches to one module per method
(``activation``, ``causal_tracing``, ``attribution``, ``path_patching``, ``probing``, ``flu``,
``controls``: the random and manual baselines) through the typed registry :data:`METHODS`;
``localization_mask`` turns the paper's named localizations (:data:`LOCALIZATIONS`: ``flu``,
``causal_tracing_mlps``, ``random``, ...) into masks at a budget (``localization_scores`` and
``mask_from_scores`` are its two halves: scoring needs no budget).

The verbs are exported as ``factlens.localize`` / ``factlens.localization_mask`` at the top
level; this subpackage keeps its own name, so ``import factlens.localization.activation`` works.
"""

from factlens.localization.registry import (LOCALIZATIONS, METHODS, Localization, ScoringMethod, localization_mask,
                                        localization_scores, localize, mask_from_scores)

__all__ = ["localize", "localization_mask", "localization_scores", "mask_from_scores", "METHODS", "LOCALIZATIONS",
           "ScoringMethod", "Localization"]
