"""Control localizations (the paper's random and manual baselines): random and hand-picked components.

``random_scores`` draws i.i.d. uniform scores, and ``scores.to_mask(param_budget=...)`` takes
components in that random order, skipping any that would overshoot the budget: a random fill
of the budget, not a uniform draw over the sets that fit it. Heads are many and small beside
MLPs, so the mask is mostly heads and may leave part of the budget unused: at Gemma 3 270M's
shape and a one-MLP budget, 0.20 MLPs and 4.9 heads on average, 93 % of the budget used
(two-MLP budget: 0.80 MLPs, 7.5 heads, 96 %; 200 seeds, the localization audit of
2026-12-05), counted without a model::

    s = ModelShape(n_layers=18, n_heads=4, n_kv_heads=1, d_model=640, d_head=256, d_mlp=2048,
                   gated_mlp=True, grouped_kv_params=True)  # Gemma 3 270M
    budget = Mask(frozenset(s.all_mlps()[:1])).n_params(s)
    masks = [random_scores(s, seed=k).to_mask(param_budget=budget) for k in range(200)]
    # mean len(m.mlps()), len(m.heads()), m.n_params(s) / budget over masks

``random_mlps`` draws among MLPs only. ``manual_scores`` gives 1.0 to the
components you name. ``localization_mask(model, data, "random"|"random_mlps", ...)`` in
:mod:`factlens.localization.registry` uses them.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

from factlens.components import Component, ModelShape, resolve_components
from factlens.scores import ComponentScores

__all__ = ["random_scores", "manual_scores"]


def random_scores(model, dataset=None, *, seed: int | None = 0, mlps_only: bool = False) -> ComponentScores:
    """I.i.d. ``Uniform(0, 1)`` scores for every head and MLP (or every MLP).

    Args:
        model: A ``HookedTransformer`` (or its config / :class:`ModelShape`); only its shape is read.
        dataset: Ignored (accepted so that all methods share one signature).
        seed: Seed of the draw (``numpy.random.default_rng``); same seed, same scores. ``None``
            means 0, as for the seeded localizations of the registry (``localization_mask(...,
            "random", seed=None)``): numpy's ``default_rng(None)`` drew a different, unrecorded
            mask on every call of ``localize(model, data, "random", seed=None)``.
        mlps_only: Score only MLP layers.

    Example:
        >>> from factlens.testing import tiny_model
        >>> m = tiny_model()
        >>> s = random_scores(m, seed=1, mlps_only=True)
        >>> len(s), s.method, bool((s.values == random_scores(m, seed=1, mlps_only=True).values).all())
        (2, 'random', True)
    """
    shape = model if isinstance(model, ModelShape) else ModelShape.of(model)
    if mlps_only and shape.attn_only:
        raise ValueError("the model has no MLPs to choose from (attention-only); use mlps_only=False")
    seed = _checked_seed(seed)
    comps = resolve_components(shape, "mlps" if mlps_only else "all")
    values = np.random.default_rng(seed).uniform(size=len(comps))
    name = "random_mlps" if mlps_only else "random"
    return ComponentScores(tuple(comps), values, "random", "uniform", shape,
                           {"seed": seed, "mlps_only": mlps_only}, name)


def _checked_seed(seed) -> int:
    """``seed`` as a plain ``int`` (``None``: 0, see :func:`random_scores`; a numpy integer is recorded
    in ``extra`` as an ``int``, which JSON can write)."""
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 (or None for 0), got {seed!r}")
    return int(seed)


def manual_scores(model, dataset=None, *, components: Sequence[Component | str]) -> ComponentScores:
    """1.0 for the given components, 0.0 for every other head and MLP.

    Neurons (``"L3.N12"``) may be given; they are scored (1.0) in addition to the heads and
    MLPs.

    Args:
        model: A ``HookedTransformer`` (or its config / :class:`ModelShape`).
        dataset: Ignored.
        components: Components or labels (``"L3H2"``, ``"L5.mlp"``, ``"L5.N123"``), or any other
            spelling of :func:`~factlens.components.resolve_components` (``"mlps"``...).

    Example:
        >>> from factlens.testing import tiny_model
        >>> s = manual_scores(tiny_model(), components=["L1.mlp", "L0H2"])
        >>> s.to_mask(threshold=0.5).labels
        ['L0H2', 'L1.mlp']
    """
    shape = model if isinstance(model, ModelShape) else ModelShape.of(model)
    chosen = resolve_components(shape, components, neurons=True)
    comps = resolve_components(shape) + [c for c in chosen if c.kind == "neuron"]
    sel = set(chosen)
    values = np.array([1.0 if c in sel else 0.0 for c in comps])
    # 1 = selected, 0 = not: ranked by value, so that top(k) or a budget never adds unselected ones
    return ComponentScores(tuple(comps), values, "manual", "selected", shape,
                           {"components": [c.label for c in chosen]}, "manual", rank_by="value")
