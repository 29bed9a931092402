"""Equivalence tests: which differences from a reference does a run *rule out*?

:func:`factlens.compare` answers "is this difference real?"; a row that is not significant
only says the run could not tell, and its ``mdd`` says how large a difference the test would
probably have found. Neither lets a reader conclude "the FLU and a random mask of its size
transfer equally well". That is an equivalence claim, and it has its own test: two one-sided
tests (TOST; Schuirmann 1987, *J. Pharmacokinet. Biopharm.* 15: 657-680). Given a margin
``δ`` the reader would call negligible, the hypothesis "the localizations differ by ``δ`` or
more" is rejected at level ``α`` when the paired ``1 - 2α`` interval of the difference lies
inside ``(-δ, δ)``. :func:`equivalence` does this for every (localization, metric) row of
:func:`~factlens.compare`, on the same paired units and with the same intervals (Newcombe's for
0/1 outcomes, with several seeds its hull with the bootstrap over seeds then facts; a paired
bootstrap otherwise: :func:`factlens.stats.paired_diff`), and reports

* ``p_tost`` — the TOST p-value: the largest ``α`` at which the interval still crosses a
  margin, i.e. ``(1 - c) / 2`` for the largest confidence ``c`` whose interval lies inside
  ``(-δ, δ)``, found by bisection on ``c`` (the intervals at different confidences come
  from the same seeded resamples and nest, so the search is exact up to its tolerance, 1e-6);
  1.0 when the difference itself is ``δ`` or more away from 0 (TOST's p is then at least 0.5);
* ``p_holm`` and ``equivalent`` — Holm's correction across the localization's rows (rows
  that are the same per-fact outcome, or its complement, count once: one margin, one claim);
  ``equivalent`` = ``p_holm <= alpha``;
* ``bound`` — the smallest margin that the run would have declared equivalent at the level
  of Holm's first step (``alpha / n_tests``): the largest absolute end of the paired
  ``1 - 2 alpha / n_tests`` interval. Differences larger than ``bound`` are ruled out at the
  family's level whatever the margin; it is the direct answer to "no difference larger than
  what?", which the ``mdd`` of :func:`~factlens.compare` (a power statement about the test)
  does not give.

Rows that :func:`~factlens.compare` never tests are never declared equivalent either: a
format where the unedited model is at chance (both sides at chance "agree" about nothing),
a maximum over layers chosen on the same facts (no valid paired interval), and a pair of
localizations without a common seed (``tested`` false, ``p_tost`` NaN).

The margin is the reader's choice and must be made before looking: one number for every
compared metric (pass ``metrics=`` to choose them; a margin of 0.1 suits accuracies, not a
KL divergence) or a mapping ``metric -> margin``. Statistics: docs/statistics.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["equivalence", "EQUIVALENCE_COLUMNS"]

#: Columns of :func:`equivalence`'s table.
EQUIVALENCE_COLUMNS = ("localization", "metric", "suite", "unit", "test_unit", "value", "reference_value", "diff", "margin",
                       "ci_low", "ci_high", "p_tost", "p_holm", "equivalent", "tested", "at_chance", "bound",
                       "n_facts", "n_units", "n_seeds", "n_tests")

#: Bisection tolerance on the confidence level (p_tost is found to half of it).
_TOL = 1e-6


MarginOf = Callable[[tuple[str, str]], "float | None"]


def _margins(margin: float | Mapping[str, float], metrics: str | Sequence[str] | None
             ) -> tuple[MarginOf, tuple[str, ...] | None]:
    """The margin of a ``(suite, metric)`` key (``None``: not compared) and the metric names to load."""
    def checked(name: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"margin{'' if name == '' else f' of {name!r}'} is the largest difference you would "
                             f"call negligible, a number > 0 on the metric's own scale (e.g. 0.1 for an "
                             f"accuracy), got {v!r}")
        return float(v)

    if isinstance(margin, Mapping):
        if not margin:
            raise ValueError("margin is an empty mapping: give one margin per metric to test, "
                             "e.g. {'forget_accuracy': 0.1}, or one number for every metric")
        if metrics is not None:
            raise ValueError("give the metrics either as margin's keys or as metrics=, not both")
        table = {str(k): checked(str(k), v) for k, v in margin.items()}

        def of(key: tuple[str, str]) -> float | None:
            return table.get(f"{key[0]}.{key[1]}", table.get(key[1]))
        return of, tuple(table)
    value = checked("", margin)
    return (lambda key: value), (None if metrics is None else ((metrics,) if isinstance(metrics, str)
                                                               else tuple(metrics)))


def _interval_at(pairs, *, weighted: bool, proportion: bool, seed: int) -> Callable[[float], tuple[float, float] | None]:
    from factlens.stats import paired_diff

    def at(confidence: float) -> tuple[float, float] | None:
        return paired_diff([p.x for p in pairs], [p.y for p in pairs], weights=[p.w for p in pairs] if weighted else None,
                           confidence=confidence, seed=seed, proportion=proportion)[1]
    return at


def _tost_p(diff: float, margin: float, interval_at: Callable[[float], tuple[float, float] | None]) -> float:
    """TOST p-value by bisection on the confidence of the paired interval (see the module docstring)."""
    def inside(c: float) -> bool:
        ci = interval_at(c)
        return ci is not None and -margin < ci[0] and ci[1] < margin

    if not abs(diff) < margin:
        return 1.0
    lo, hi = 0.0, 1.0 - _TOL
    if inside(hi):
        return (1.0 - hi) / 2
    if not inside(lo + _TOL):
        return 0.5
    lo = lo + _TOL
    while hi - lo > _TOL:  # inside(lo) and not inside(hi): intervals nest as the confidence grows
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if inside(mid) else (lo, mid)
    return (1.0 - lo) / 2


def _row(loc: str, key: tuple[str, str], lm, rm, margin: float, *, reference: str, seed: int,
         unit: str = "fact") -> tuple[dict, Any]:
    """One row with its ``p_tost``, and what the Holm family needs (``None`` for an untested row)."""
    from factlens.comparison import _unit, _paired_inputs, _value_kind
    from factlens.stats import paired_diff, paired_test_key

    pairs, lm, rm, _ = _paired_inputs(loc, key, lm, rm, reference=reference)
    sides = (*lm.values(), *rm.values())
    first = next(iter(lm.values()))
    row: dict[str, Any] = {
        "localization": loc, "metric": key[1], "suite": key[0], "unit": _unit(first), "margin": margin,
        "value": float(np.mean([m.value for m in lm.values()])), "reference_value": float(np.mean([m.value for m in rm.values()])),
        "at_chance": any(m.at_chance for m in sides), "n_seeds": len(pairs),
        "n_facts": min((int(np.sum(~np.isnan(p.x - p.y))) for p in pairs), default=0),
        "n_units": sum(int(np.sum(~np.isnan(p.x - p.y))) for p in pairs),
        "diff": float("nan"), "ci_low": None, "ci_high": None, "p_tost": float("nan"), "tested": False,
        "test_unit": unit}
    if not pairs or row["at_chance"] or any(m.selected for m in sides):
        return row, None
    if unit == "seed":
        return _seed_row(row, pairs, margin, seed=seed)
    weighted, proportion = _value_kind(lm, rm)
    diff, ci = paired_diff([p.x for p in pairs], [p.y for p in pairs], weights=[p.w for p in pairs] if weighted else None,
                           seed=seed, proportion=proportion)
    if ci is None:  # no interval (a single paired unit): nothing to test
        return {**row, "diff": diff}, None
    at = _interval_at(pairs, weighted=weighted, proportion=proportion, seed=seed)
    xs, ys = np.concatenate([p.x for p in pairs]), np.concatenate([p.y for p in pairs])
    w = np.concatenate([p.w for p in pairs])
    key_ = paired_test_key(xs, ys, w, ids=[(p.seed, k) for p in pairs for k in p.ids])
    return {**row, "diff": diff, "p_tost": _tost_p(diff, margin, at), "tested": True}, (key_, at)


def _seed_row(row: dict, pairs, margin: float, *, seed: int) -> tuple[dict, Any]:
    """:func:`_row` over seeds: each seed's mean paired difference is a unit, and the interval is the
    one that inverts the exact sign-flip test over them (:mod:`factlens.seed_unit`); these intervals
    nest as the confidence grows (one p-value function of the shift), as the bisection needs."""
    from factlens.seed_unit import MIN_SEEDS, seed_means
    from factlens.stats import paired_test_key, sign_flip_interval

    x, y, ids = seed_means(pairs)
    d = x - y
    row = {**row, "diff": float(d.mean()), "n_units": len(d)}
    if len(d) < MIN_SEEDS:
        return row, None

    def at(confidence: float) -> tuple[float, float] | None:
        return sign_flip_interval(d, confidence=confidence, seed=seed)
    return {**row, "p_tost": _tost_p(row["diff"], margin, at), "tested": True}, (paired_test_key(x, y, ids=ids), at)


def _family(rows: list[dict], tests: list, alpha: float) -> None:
    """Holm over one localization's tested rows; each row's interval at the family's level and its ``bound``."""
    from factlens.multiple_testing import _same_test_groups, holm

    fam = [i for i, t in enumerate(tests) if t is not None]
    keys = [tests[i][0] for i in fam]
    p = np.array([rows[i]["p_tost"] for i in fam], dtype=float)
    adjusted = holm(p, alpha=alpha, same=keys) if fam else np.array([])
    m = len(_same_test_groups(p, keys)) if fam else 0
    for r in rows:
        r.update(p_holm=float("nan"), equivalent=False, bound=float("nan"), n_tests=0)
    for i, q in zip(fam, adjusted):
        ci = tests[i][1](1 - 2 * alpha / m)
        rows[i].update(p_holm=float(q), equivalent=bool(q <= alpha), n_tests=m, ci_low=ci[0], ci_high=ci[1],
                       bound=float(max(abs(ci[0]), abs(ci[1]))))


def equivalence(runs: str | Path | Sequence[str | Path] | Mapping[str, Any], reference: str = "flu",
                metrics: str | Sequence[str] | None = None, *, margin: float | Mapping[str, float],
                unit: str = "fact", alpha: float = 0.05, seed: int = 0):
    """Equivalence tests (TOST) of every localization against ``reference``: which differences does the run rule out?

    Args:
        runs: As for :func:`factlens.compare`: a run directory, several with the same facts, or a
            mapping ``localization -> [EvalResult per seed]``.
        reference: The localization compared against.
        metrics: Metric names (``"forget_accuracy"`` or ``"suite.metric"``); ``None``: every
            metric with per-unit samples in both (a margin of one number then applies to all of
            them, whatever their scale: choose them). Not with a mapping ``margin``.
        margin: The largest difference you would call negligible, on the metric's scale
            (``0.1``: ten points of accuracy), or a mapping ``metric -> margin`` (which also
            chooses the metrics). Fixed before looking at the results.
        unit: ``"fact"`` (default): the paired units and intervals of :func:`factlens.compare`;
            ``"seed"``: each seed's mean paired difference is a unit and the interval inverts the
            exact sign-flip test over seeds (as ``compare(..., unit="seed")``): equivalence over
            draws of masks and trainings. Needs 2 seeds both sides have (at 1 - 2 alpha = 0.9, 5
            for a bounded interval).
        alpha: Family-wise level of ``equivalent`` (Holm across a localization's rows).
        seed: Seed of the bootstrap resamples (as :func:`factlens.compare`'s).

    Returns:
        A pandas DataFrame with :data:`EQUIVALENCE_COLUMNS`: ``diff`` (localization minus
        reference, as in :func:`factlens.compare`), ``ci_low``/``ci_high`` (the paired interval at
        confidence ``1 - 2 alpha / n_tests``: inside ``(-margin, margin)`` means equivalent at
        Holm's first step), ``p_tost``, ``p_holm``, ``equivalent``, ``tested`` (false for
        at-chance rows, maxima over layers and pairs without a common seed, which are never
        equivalent), ``bound`` (the smallest margin the run would have declared equivalent:
        differences larger than it are ruled out), ``n_tests`` (distinct tests in the Holm family),
        ``test_unit`` (``unit``; ``n_units`` then counts seeds).

    Raises:
        ValueError: ``margin`` is not a number > 0 (or a non-empty mapping of them); ``alpha``
            is not in (0, 0.5); ``unit`` as for :func:`factlens.compare`; as :func:`factlens.compare` for the runs, the reference and
            unknown metric names; or no row has a margin (the message says why).

    Example:
        >>> from factlens.evaluation.result import EvalResult, Metric, SuiteResult
        >>> def ev(v):
        ...     m = Metric.from_samples("forget_accuracy", {f"f{i}": x for i, x in enumerate(v)})
        ...     return EvalResult({"standard": SuiteResult("standard", (m,))})
        >>> same = [1] * 90 + [0] * 10
        >>> t = equivalence({"flu": [ev(same)], "random": [ev(same)]}, margin=0.1)
        >>> bool(t.at[0, "equivalent"]), round(float(t.at[0, "bound"]), 3)
        (True, 0.027)
        >>> bool(equivalence({"flu": [ev(same)], "random": [ev(same)]}, margin=0.02).at[0, "equivalent"])
        False
    """
    import pandas as pd

    from factlens.comparison import NothingToCompare, _metric_index, _metric_names, _wanted, _with_reference
    from factlens.seed_unit import check_unit, too_few_seeds

    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 0.5:
        raise ValueError(f"alpha is a level between 0 and 0.5 (the interval is at 1 - 2 alpha), got {alpha!r}")
    check_unit(unit)
    margin_of, names = _margins(margin, metrics)
    evals = _with_reference(runs, reference)
    if unit == "seed" and (why := too_few_seeds(evals, reference)):
        raise ValueError(why)
    names = _metric_names(names, evals)
    ref = _metric_index(evals[reference])
    rows: list[dict] = []
    for loc, res in evals.items():
        if loc == reference:
            continue
        idx = _metric_index(res)
        keys = [k for k in idx if k in ref and _wanted(k, names) and margin_of(k) is not None
                and (names is not None or any(m.samples for m in idx[k].values()))]
        done = [_row(loc, k, idx[k], ref[k], margin_of(k), reference=reference, seed=seed, unit=unit) for k in keys]
        loc_rows = [r for r, _ in done]
        _family(loc_rows, [t for _, t in done], alpha)
        rows += loc_rows
    if not rows:
        others = sorted(loc for loc in evals if loc != reference)
        raise NothingToCompare(f"no metric to test: {reference!r} and {others or 'no other localization'} share none "
                               f"of {list(names) if names else 'the metrics with per-unit values'}")
    return pd.DataFrame(rows, columns=list(EQUIVALENCE_COLUMNS))
