"""Comparisons with the seed as the unit: do two localizations differ over draws?

:func:`factlens.compare` pairs facts within seeds by default (``unit="fact"``): its p-value
pools every seed's facts and holds for the edits those seeds trained, the masks they drew and
the facts they sampled. When a localization is itself a random draw (a random mask at the
FLU's budget, which each seed draws anew) or the question is whether a difference holds for
the next training run, the unit of replication is the seed, which draws its own facts, masks
and training. ``compare(..., unit="seed")`` reduces each seed to the paired mean difference of
its facts (the difference of the two sides' values at that seed; each fact, or text chunk by
its tokens, weighted as in ``unit="fact"``) and tests those per-seed differences:

* ``diff`` — their mean, the same number as with ``unit="fact"``;
* ``ci_low``/``ci_high`` — the 95 % interval that inverts the exact sign-flip test over the
  seeds (:func:`factlens.stats.sign_flip_interval`: exact coverage for differences symmetric
  about their mean, and it excludes 0 exactly when ``p_value`` is at most 0.05); ``(-inf, inf)``
  with fewer than 6 seeds, where no sign pattern reaches the level;
* ``p_value`` — the exact sign-flip test of the per-seed differences (with ``n`` seeds the
  smallest attainable two-sided p is ``2 / 2**n``: 0.016 at 7 seeds, 0.002 at 10);
* ``p_holm``, ``significant``, ``testable``, ``n_tests`` — Holm with Tarone's selection over
  the localization's metrics, as for facts; metrics whose per-seed means agree (or are
  complements) at every seed are one test;
* ``mdd`` — the minimum detectable difference of the exact test at this number of seeds with
  normal per-seed differences of the observed spread (:func:`factlens.stats.minimum_detectable_difference`).

``n_units`` and ``n_seeds`` count the paired seeds, ``n_facts`` the facts of the smallest
seed; ``test_unit`` is ``"seed"``. Rows that ``unit="fact"`` leaves untested (at chance on the
unedited model, maxima over layers, nothing paired) stay untested, and so does a row paired at
one seed only. Statistics: docs/statistics.md, "Seeds as the unit".
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["seed_row", "seed_means", "check_unit", "too_few_seeds", "MIN_SEEDS"]

#: A comparison over seeds needs at least this many seeds that both sides have.
MIN_SEEDS = 2


def seed_row(loc: str, key: tuple[str, str], lm: Mapping[Any, Any], rm: Mapping[Any, Any], seed: int,
             alpha: float, *, reference: str) -> tuple[dict[str, Any], Any]:
    """One :func:`factlens.compare` row with the seeds as the paired units, and its test (a
    ``comparison._PairedTest``, or ``None`` for an untested row)."""
    from factlens.comparison import _PairedTest, _spread, _values_row
    from factlens.stats import (minimum_detectable_difference, paired_test_key, sign_flip_interval, sign_flip_test,
                                smallest_attainable_p)

    v = _values_row(loc, key, lm, rm, seed, reference=reference)
    row = {**v.row, "test_unit": "seed", "n_units": v.row["n_seeds"]}
    if not v.tested:
        return row, None
    x, y, ids = seed_means(v.pairs)
    d = x - y
    row.update(diff=float(d.mean()), n_facts=min(len(p.ids) for p in v.pairs))
    if len(d) < MIN_SEEDS:
        return {**row, "ci_low": None, "ci_high": None, "p_value": float("nan"), "mdd_unadjusted": float("nan")}, None
    sd = _spread(float(d.std(ddof=1)), d)
    test = _PairedTest(len(d), sd, False, paired_test_key(x, y, ids=ids),
                       smallest_attainable_p(d, seed=seed))
    lo, hi = sign_flip_interval(d, seed=seed)
    return {**row, "ci_low": lo, "ci_high": hi, "p_value": sign_flip_test(d, seed=seed),
            "mdd_unadjusted": minimum_detectable_difference(len(d), sd=sd, alpha=alpha, binary=False)}, test


def seed_means(pairs) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Per paired seed (``comparison._Paired``), the two sides' means over its paired units (each unit
    by its weight: tokens per chunk, else equal), and the seeds: the values whose differences are
    the units of a comparison over seeds (:func:`factlens.equivalence` with ``unit="seed"`` too)."""
    from factlens.comparison import _seed_weights

    weights = [_seed_weights(p) for p in pairs]  # each seed's units by their weights, summing to 1
    x = np.array([float(np.sum(w * p.x)) for w, p in zip(weights, pairs)])
    y = np.array([float(np.sum(w * p.y)) for w, p in zip(weights, pairs)])
    return x, y, [p.seed for p in pairs]


def check_unit(unit: str) -> str:
    """``unit`` itself, refused unless ``"fact"`` or ``"seed"``."""
    if unit not in ("fact", "seed"):
        raise ValueError(f"unit is 'fact' (pair the facts of every seed) or 'seed' (each seed's mean difference is one "
                         f"unit: over mask draws and trainings), got {unit!r}")
    return unit


def too_few_seeds(evals: Mapping[str, Mapping[Any, Any]], reference: str) -> str | None:
    """Why ``unit="seed"`` cannot test anything (no localization shares :data:`MIN_SEEDS` seeds with
    the reference), or ``None``."""
    ref = set(evals[reference])
    shared = {loc: sorted(set(res) & ref, key=str) for loc, res in evals.items() if loc != reference}
    if any(len(s) >= MIN_SEEDS for s in shared.values()):
        return None
    return (f"unit='seed' tests the per-seed differences and needs at least {MIN_SEEDS} seeds that a localization "
            f"and {reference!r} both have; the seeds shared are {shared}: run more seeds (--seeds 0,1,2,...; at 95 % "
            "the exact test needs 6 to reach significance at all) or compare facts (unit='fact', the default)")
