"""Method registry and the paper's named localizations.

Each method lives in its own module and is imported only when used. A method is a function
``fn(model, dataset, **options) -> ComponentScores``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from factlens.components import Mask
from factlens.scores import ComponentScores

__all__ = ["METHODS", "LOCALIZATIONS", "localize", "get_method", "localization_mask"]

# method name -> "module:function" (static table; no mutable module state)
METHODS: dict[str, str] = {
    "activation_patching": "factlens.localize.activation:activation_patching",
    "causal_tracing": "factlens.localize.causal_tracing:causal_tracing",
    "attribution_patching": "factlens.localize.attribution:attribution_patching",
    "path_patching": "factlens.localize.path_patching:path_patching",
    "probing": "factlens.localize.probing:probing",
    "random": "factlens.localize.baselines:random_scores",
    "manual": "factlens.localize.baselines:manual_scores",
}

# The paper's localization names (see localization_mask).
LOCALIZATIONS: tuple[str, ...] = (
    "flu",
    "causal_tracing",
    "causal_tracing_mlps",
    "attribution_patching",
    "attribution_patching_mlps",
    "random",
    "random_mlps",
    "all_mlps",
    "nonlocalized",
)


def get_method(method: str) -> Callable[..., ComponentScores]:
    """The function implementing ``method`` (raises with the list of known methods)."""
    if method not in METHODS:
        raise ValueError(f"unknown localization method {method!r}; known methods: {sorted(METHODS)}")
    mod, fn = METHODS[method].split(":")
    return getattr(importlib.import_module(mod), fn)


def localize(model, dataset, method: str = "attribution_patching", **options: Any) -> ComponentScores:
    """Score every component of ``model`` for the facts in ``dataset``.

    Args:
        model: A ``HookedTransformer`` (left unchanged: no hooks remain, no parameter or
            device changes).
        dataset: A :class:`~factlens.data.FactDataset` (or a list of records).
        method: One of :data:`METHODS`.
        **options: Method options (keyword-only in each method), e.g. ``metric=``,
            ``batch_size=``, ``seed=``.

    Returns:
        The component scores; ``.plot()`` draws them, ``.to_mask(...)`` selects components.

    Example:
        >>> import factlens
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> scores = factlens.localize(p.model, p.dataset, method="activation_patching")
        >>> p.lookup_mlp in scores.top(3) and p.extraction_head in scores.top(3)
        True
    """
    fn = get_method(method)
    return fn(model, dataset, **options)


def localization_mask(
    model,
    dataset,
    localization: str,
    *,
    param_budget: int | None = None,
    seed: int = 0,
    **options: Any,
) -> tuple[Mask, ComponentScores | None]:
    """The mask of one of the paper's named localizations (:data:`LOCALIZATIONS`).

    ``flu`` is probing (sports, relation ``"sport"``) or path patching through the
    extraction heads (other relations); ``*_mlps`` restrict a method to MLP layers;
    ``random``/``random_mlps``/``causal_tracing``/``attribution_patching`` are taken at
    ``param_budget`` (default: the FLU mask's size is the caller's business); ``all_mlps``
    and ``nonlocalized`` ignore the budget.

    Returns:
        The mask and the scores it came from (``None`` for ``all_mlps``/``nonlocalized``).
    """
    if localization not in LOCALIZATIONS and localization not in METHODS:
        raise ValueError(f"unknown localization {localization!r}; known: {list(LOCALIZATIONS)}")
    if localization == "all_mlps":
        return Mask.all_mlps(model), None
    if localization == "nonlocalized":
        return Mask.everything(model), None
    if localization == "flu":
        from factlens.localize.flu import flu_scores

        scores = flu_scores(model, dataset, seed=seed, **options)
        mask = scores.to_mask(threshold=0.5, name="flu")  # FLU scores are 1 for selected MLPs, 0 otherwise
        return mask, scores
    mlps_only = localization.endswith("_mlps")
    method = localization[: -len("_mlps")] if mlps_only else localization
    if method == "random":
        scores = localize(model, dataset, method="random", seed=seed, mlps_only=mlps_only)
    else:
        scores = localize(model, dataset, method=method, **options)
    if mlps_only:
        scores = scores.restrict("mlp")
    scores = _renamed(scores, localization)
    if param_budget is None:
        raise ValueError(f"localization {localization!r} needs param_budget= (e.g. the FLU mask's n_params)")
    return scores.to_mask(param_budget=param_budget, name=localization), scores


def _renamed(scores: ComponentScores, name: str) -> ComponentScores:
    return ComponentScores(scores.components, scores.values, scores.method, scores.metric, scores.shape,
                           dict(scores.extra), name)
