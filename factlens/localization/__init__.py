"""Localization: score model components for a fact dataset.

``factlens.localize(model, dataset, method=...)`` dispatches to one module per method
(``activation``, ``causal_tracing``, ``attribution``, ``path_patching``, ``probing``, ``flu``,
``baselines``) through the typed registry :data:`METHODS`; ``localization_mask`` turns the
paper's named localizations (:data:`LOCALIZATIONS`: ``flu``, ``causal_tracing_mlps``,
``random``, ...) into masks at a budget.

The verbs are exported as ``factlens.localize`` / ``factlens.localization_mask`` at the top
level; this subpackage keeps its own name, so ``import factlens.localization.activation`` works.
"""

from factlens.localization.registry import (LOCALIZATIONS, METHODS, Localization, ScoringMethod, localization_mask,
                                        localize)

__all__ = ["localize", "localization_mask", "METHODS", "LOCALIZATIONS", "ScoringMethod", "Localization"]
