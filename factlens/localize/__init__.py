"""Localization: score model components for a fact dataset.

``factlens.localize(model, dataset, method=...)`` dispatches to one module per method
(``activation``, ``causal_tracing``, ``attribution``, ``path_patching``, ``probing``,
``baselines``) through :data:`METHODS`; ``localization_mask`` turns the paper's named
localizations (``flu``, ``causal_tracing_mlps``, ``random``, ...) into masks at a budget.
"""

from factlens.localize.registry import LOCALIZATIONS, METHODS, localization_mask, localize

__all__ = ["localize", "localization_mask", "METHODS", "LOCALIZATIONS"]
