"""Paired comparisons of localizations: which differences from a reference are real?

Every localization of a run is evaluated on the same facts (same task seed), so two
localizations can be compared fact by fact: the per-unit values that each
:class:`~factlens.evaluation.result.Metric` keeps in ``samples`` (keyed by the fact's
``record.id``, ``"chunk:<i>"`` for general text, ``"question:<i>"`` for MMLU) are paired on
their ids. For each localization and metric, :func:`compare` reports

* ``diff`` — the mean paired difference localization minus reference (mean over seeds of
  the per-seed means), with a 95 % interval (``ci_low``, ``ci_high``): for 0/1 outcomes on
  both sides Newcombe's paired-proportion score interval (with several seeds its hull with the
  bootstrap below), otherwise a paired bootstrap over facts, or with several seeds over seeds
  and then facts within each drawn seed (:func:`factlens.stats.paired_diff`); for a
  token-weighted metric (``Metric.weights``: tokens per text chunk) the per-seed means, the
  bootstrap and the test below weigh each chunk by its tokens, so ``diff`` is
  ``value - reference_value`` on the same units; ``value`` and ``reference_value`` (and
  ``n_seeds``) count only the seeds both sides have (folders run with other ``--seeds``, or
  a run still in progress);
* ``p_value`` — a paired sign-flip permutation test over the paired units (exact when at
  most 16 units differ), ``p_holm`` — Holm-corrected across the metrics of one localization that can
  reach significance at all (``testable``: Tarone's modification,
  :func:`factlens.stats.tarone_holm`; a metric whose paired differences are all zero, or
  differ on too few facts, is left out rather than making every other metric stricter), and
  ``significant`` = ``p_holm <= 0.05``; metrics flagged ``at_chance`` (the unedited model is
  not above chance in that format) are kept but never significant and stay out of the
  Holm family, and so are maxima over layers (``Metric.selected``: a probe's best layer,
  chosen on the same facts; each side's samples are its outcomes at its own best layer, so
  a paired test over them would ignore the choice): their rows keep ``diff`` without an
  interval or p-value (compare the ``_last`` metrics, or one fixed layer, to test);
* ``mdd`` — the minimum detectable difference at this ``n`` and power 0.8
  (:func:`factlens.stats.minimum_detectable_difference`) at the level that ``significant``
  needs whatever the other metrics show: ``alpha / n_tests``, Holm's first step over the
  ``n_tests`` tests of the localization's family that can reach the level (Tarone's count; a raw p-value below it always
  survives the correction; metrics that are the same per-fact outcome, or its complement,
  are one test). So "not significant" reads as "no difference larger than ``mdd``".
  A row that is not testable gets its ``mdd`` at the level it would face once testable
  (Tarone's ``K`` of the family with it in: ``n_tests`` or one more).
  ``mdd_unadjusted`` is the same at ``alpha`` itself (one planned comparison, no
  correction); it is smaller, and reading a non-significant Holm result against it
  overstates what the run rules out. At-chance rows are never tested: their ``mdd`` is NaN.

With several seeds the sign-flip test pools all (seed, unit) pairs, each seed weighted
equally; it conditions on the trained edits, while the bootstrap interval of ``diff`` also
includes the seed-to-seed variance (:func:`variance_split` shows how the variance divides).
Statistics: docs/statistics.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

# the loading and its checks (_setup and _check_same_setup are read from here too)
from factlens.compare_inputs import RunFolder, _check_same_setup, _setup, load_evaluations  # noqa: F401

__all__ = ["compare", "variance_split", "load_evaluations", "COMPARE_COLUMNS", "NothingToCompare"]


class NothingToCompare(ValueError):
    """:func:`compare` has no row: only the reference is given, or no metric (of ``metrics=``, or with
    per-unit samples) is in both it and another localization. A ``ValueError``; a caller that shows
    "nothing to compare" instead (a report of a ``--suites mechanisms`` run) catches this subclass."""


#: Columns of :func:`compare`'s table.
COMPARE_COLUMNS = ("localization", "metric", "suite", "unit", "test_unit", "value", "value_ci_low", "value_ci_high",
                   "reference_value", "diff", "ci_low", "ci_high", "p_value", "p_holm", "significant", "testable",
                   "at_chance",
                   "collapsed", "higher_is_better", "n_facts", "n_units", "n_seeds", "n_tests", "mdd", "mdd_unadjusted")

_UNITS = {"chunk": "chunks", "question": "questions"}


def _metric_index(results: Mapping[Any, Any]) -> dict[tuple[str, str], dict[Any, Any]]:
    """``{(suite, metric): {seed: Metric}}`` of one localization."""
    idx: dict[tuple[str, str], dict[Any, Any]] = {}
    for seed, ev in results.items():
        for s in ev.suites.values():
            for m in s.metrics:
                idx.setdefault((s.suite, m.name), {})[seed] = m
    return idx


def _collapsed_seeds(results: Mapping[Any, Any]) -> dict[str, set[Any]]:
    """Per suite, the seeds whose attack collapsed the model (``extra["maintain_collapse"]``).

    The relearning suite sets it when, after the attack, the maintain accuracy is not above (by
    2 standard errors) the expected agreement of the model's answers with the true ones, nor
    above uniform chance (``relearning_collapse.collapse_check``): the model answers (nearly)
    regardless of the fact, whether the attack or already the edit made it so, and its relearned
    forget accuracy partly counts that answer, not recovered facts.
    """
    from factlens.evaluation.relearning_collapse import collapsed

    out: dict[str, set[Any]] = {}
    for seed, ev in results.items():
        for name, s in ev.suites.items():
            if collapsed(s):
                out.setdefault(name, set()).add(seed)
    return out


def _wanted(key: tuple[str, str], metrics: Sequence[str] | None) -> bool:
    return metrics is None or key[1] in metrics or f"{key[0]}.{key[1]}" in metrics


def _metric_names(metrics: str | Sequence[str] | None, evals: Mapping[str, Any]) -> tuple[str, ...] | None:
    """``metrics`` as a tuple of names (one name may be given as a string), each checked to exist.

    A string used to be searched as a sequence (``"forget_accuracy" in "relearn_forget_accuracy"``
    is true), and a name matching no metric gave an empty table without a word.

    Raises:
        ValueError: A name matches no metric of any localization (the message lists them).
    """
    if metrics is None:
        return None
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    keys = {k for res in evals.values() for k in _metric_index(res)}
    known = {k[1] for k in keys} | {f"{k[0]}.{k[1]}" for k in keys}
    unknown = [m for m in names if m not in known]
    if unknown:
        raise ValueError(f"no metric named {unknown} in these results; metrics: {sorted({k[1] for k in keys})} "
                         "(or suite.metric)")
    return names


@dataclass(frozen=True)
class _Paired:
    """One seed's paired units of a metric: ids, localization and reference values, the units' weights."""

    seed: Any
    ids: list[str]
    x: np.ndarray
    y: np.ndarray
    w: np.ndarray  # tokens per text chunk for token-weighted metrics; ones otherwise


def _pairs(loc: Mapping[Any, Any], ref: Mapping[Any, Any], where: str) -> list[_Paired]:
    """Per common seed, the paired (localization, reference) values with their weights.

    Both sides must hold values for the same units (``where`` names the comparison in the
    error): evaluations of the same task, forget set and seed do (a unit without a value is
    one without, e.g., an edit target, on either side). Pairing different unit sets on their
    intersection would mix two fact sets in one row (``value`` over one set, ``diff`` over
    another); directories with different facts are refused by :func:`load_evaluations`,
    and so is this for any input.
    """
    out = []
    for seed in sorted(set(loc) & set(ref), key=str):
        a, b = loc[seed].samples or {}, ref[seed].samples or {}
        ids = [k for k in a if k in b and _valued(a[k]) and _valued(b[k])]
        na, nb = sum(map(_valued, a.values())), sum(map(_valued, b.values()))
        if a and b and not len(ids) == na == nb:
            unit = _unit(loc[seed])
            raise ValueError(f"{where}, seed {seed}: the localization has values for {na} {unit}, the reference "
                             f"for {nb}, {len(ids)} of them common: a paired comparison needs both evaluated on "
                             "the same facts; pass evaluations of the same task, forget set and seed for every "
                             "localization (compare results on other facts separately)")
        if ids:
            w = _pair_weights(loc[seed], ref[seed], ids, f"{where}, seed {seed}")
            x, y = np.array([a[k] for k in ids], float), np.array([b[k] for k in ids], float)
            _check_finite(ids, x, y, f"{where}, seed {seed}")
            out.append(_Paired(seed, ids, x, y, w))
    return out


def _check_finite(ids: Sequence[str], x: np.ndarray, y: np.ndarray, where: str) -> None:
    """Refuse infinite unit values: a unit infinite on both sides gave ``inf - inf = NaN``, which the
    interval and the test dropped while ``value`` and ``reference_value`` still counted it (the
    difference then covered fewer units than the values, without a word)."""
    bad = [k for k, u, v in zip(ids, x, y) if not (np.isfinite(u) and np.isfinite(v))]
    if bad:
        raise ValueError(f"{where}: {len(bad)} unit(s) have an infinite value (e.g. {bad[:3]}), whose paired "
                         "difference is undefined; compare a bounded form of the metric (a probability rather "
                         "than a log-probability), or leave those units out of the evaluation")


def _valued(v: Any) -> bool:
    """A unit has a value: neither ``None`` nor NaN (both mean "no value"; a NaN counted as one was paired)."""
    return v is not None and v == v


def _unit_weights(m, ids: Sequence[str], where: str) -> np.ndarray | None:
    if m.weights is None:
        return None
    missing = [k for k in ids if k not in m.weights]
    if missing:
        raise ValueError(f"{where}: the metric's weights lack {len(missing)} of its units (e.g. {missing[:3]}); "
                         "the result is damaged, re-evaluate it")
    return np.array([m.weights[k] for k in ids], float)


def _pair_weights(lm, rm, ids: Sequence[str], where: str) -> np.ndarray:
    """The weights of paired units: the units' own (tokens per chunk), which both sides must agree on.

    A weight belongs to the unit (a chunk's token count), not to the localization, so both
    sides carry the same weights and the weighted paired difference is the difference of the
    two weighted means. A side without weights (an unweighted metric, or a result saved
    before weights were kept) takes the other side's; both without: equal weights. Sides
    with different weights (another tokenizer) are refused: no single weighting then makes
    the paired difference the difference of the two reported values.
    """
    wa, wb = _unit_weights(lm, ids, where), _unit_weights(rm, ids, where)
    if wa is not None and wb is not None and not np.allclose(wa, wb, rtol=1e-9, atol=0.0):
        k = next(i for i, (p, q) in enumerate(zip(wa, wb)) if not np.isclose(p, q, rtol=1e-9, atol=0.0))
        raise ValueError(f"{where}: the two sides weight the same units differently ({ids[k]}: {wa[k]:g} vs "
                         f"{wb[k]:g}); a weighted paired comparison needs the same units with the same weights "
                         "(same model, tokenizer and text settings): compare evaluations of one run")
    w = wa if wa is not None else wb
    return np.ones(len(ids)) if w is None else w


def _unit_values(m) -> tuple[list[float], list[float]]:
    """A metric's per-unit values and weights (1 without weights), units without a value left out."""
    ks = [k for k, v in (m.samples or {}).items() if _valued(v)]
    return [m.samples[k] for k in ks], [1.0 if m.weights is None else m.weights.get(k, 1.0) for k in ks]


def _unit(m) -> str:
    first = next(iter(m.samples or {}), "")
    return _UNITS.get(first.split(":", 1)[0], "facts") if ":" in first else "facts"


@dataclass(frozen=True)
class _PairedTest:
    """What a row's Holm family needs: paired units, spread of the differences, which test it is."""

    n: int
    sd: float
    binary: bool  # 0/1 outcomes on both sides: the MDD is at least the exact test's for 0/1 data
    key: Any  # factlens.stats.paired_test_key: rows with equal keys are one test
    smallest: float  # factlens.stats.smallest_attainable_p: Tarone's selection of the Holm family
    step: float | None = None  # the differences' lattice (accuracies over a few prompts): see minimum_detectable_difference
    sizes: tuple[float, ...] | None = None  # the non-zero |differences| on that lattice


#: Name endings of factlens's metrics that are differences (after - before, hits - false alarms,
#: -1 ... 1): folders written before they were declared ``proportion=False`` (``c678655``) stored
#: an all-0/1 run of them as a proportion ("wilson"); these names say what they are.
DIFFERENCE_METRICS = ("_selective_recovery", "_forget_recovery")


def declared_continuous(m: Any) -> bool:
    """A metric built with ``Metric.from_samples(..., proportion=False)`` (values that can lie
    outside [0, 1]): its values are all 0 or 1 and yet it took the bootstrap interval, which an
    unweighted 0/1 metric only takes when so declared; or one of factlens's difference metrics
    (:data:`DIFFERENCE_METRICS`) stored by an older version. Its comparisons are then not those of
    proportions (no Newcombe interval, no binomial MDD), whatever values a run happened to give."""
    from factlens.stats import is_binary

    if m.weights is not None or not m.samples:
        return False
    if m.ci_method == "wilson" and str(m.name).endswith(DIFFERENCE_METRICS):
        return True
    if m.ci_method != "bootstrap":
        return False
    return is_binary(np.array([v for v in m.samples.values() if v == v], dtype=float))


def _paired_inputs(loc: str, key: tuple[str, str], lm: Mapping[Any, Any], rm: Mapping[Any, Any], *,
                  reference: str) -> tuple[list[_Paired], Mapping[Any, Any], Mapping[Any, Any], set[Any]]:
    """A row's paired units per common seed (:func:`_pairs`), the two sides' metrics restricted to the
    seeds the difference is taken on (``value`` and ``reference_value`` are over those: folders run
    with other ``--seeds``), and those seeds (every seed both sides have when none is paired)."""
    pairs = _pairs(lm, rm, f"{loc!r} vs {reference!r}, {key[0]}.{key[1]}")
    common = {p.seed for p in pairs} or set(lm) & set(rm)
    if common:
        lm, rm = ({s: m for s, m in side.items() if s in common} for side in (lm, rm))
    return pairs, lm, rm, common


def _value_kind(lm: Mapping[Any, Any], rm: Mapping[Any, Any]) -> tuple[bool, bool]:
    """Whether a row's metric is token-weighted (``Metric.weights``) and whether its values are
    proportions (none :func:`declared_continuous`): what the intervals and tests of the row depend on."""
    sides = (*lm.values(), *rm.values())
    return any(m.weights is not None for m in sides), not any(declared_continuous(m) for m in sides)


@dataclass(frozen=True)
class _RowValues:
    """What a row's test starts from, whatever its unit (facts, or seeds: :mod:`factlens.seed_unit`)."""

    row: dict[str, Any]  # localization, metric, value and its interval, reference_value, flags, n_seeds
    pairs: list[_Paired]
    weighted: bool  # _value_kind
    proportion: bool
    tested: bool  # False: nothing paired, or a maximum over layers; ``row`` is then complete


def _values_row(loc: str, key: tuple[str, str], lm: Mapping[Any, Any], rm: Mapping[Any, Any], seed: int, *,
                reference: str) -> _RowValues:
    """A row's values, whatever the unit of its test: ``value`` and ``reference_value`` over the seeds
    both sides have, ``value``'s interval, the flags; with its paired units and value kind
    (:func:`_value_kind`). A row that is never tested (nothing paired, or a maximum over layers) comes
    complete, without an interval or p-value."""
    from factlens.stats import mean_interval

    pairs, lm, rm, common = _paired_inputs(loc, key, lm, rm, reference=reference)
    first = next(iter(lm.values()))
    at_chance = any(m.at_chance for m in (*lm.values(), *rm.values()))
    row: dict[str, Any] = {
        "localization": loc, "metric": key[1], "suite": key[0], "unit": _unit(first),
        "value": float(np.mean([m.value for m in lm.values()])),
        "reference_value": float(np.mean([m.value for m in rm.values()])),
        "at_chance": at_chance, "higher_is_better": bool(first.higher_is_better), "n_seeds": len(pairs),
        "test_unit": "fact"}
    weighted, proportion = _value_kind(lm, rm)
    units = [_unit_values(m) for m in lm.values()]
    if len(lm) == 1:
        vci = (first.ci_low, first.ci_high)
    elif any(m.selected for m in lm.values()):  # a bootstrap of each seed's facts at its chosen layer ignores the
        vci = None                                # choice (covered the true best 1 time in 3); no valid pooled interval
    else:
        vci = mean_interval([v for v, _ in units], weights=[w for _, w in units] if weighted else None,
                            seed=seed, proportion=proportion)
    row["value_ci_low"], row["value_ci_high"] = (vci if vci else (None, None))
    if not pairs or any(m.selected for m in (*lm.values(), *rm.values())):  # nothing paired, or a maximum over layers
        # no seed in common: a difference would be one of two trainings and fact samples, not of localizations
        diff = row["value"] - row["reference_value"] if common else float("nan")
        return _RowValues({**row, "diff": diff, "ci_low": None, "ci_high": None,
                           "p_value": float("nan"), "n_facts": min((len(p.ids) for p in pairs), default=0),
                           "n_units": sum(len(p.ids) for p in pairs), "mdd_unadjusted": float("nan")},
                          pairs, weighted, proportion, tested=False)
    return _RowValues(row, pairs, weighted, proportion, tested=True)


def _row(loc: str, key: tuple[str, str], lm: Mapping[Any, Any], rm: Mapping[Any, Any], seed: int,
         alpha: float, *, reference: str) -> tuple[dict[str, Any], _PairedTest | None]:
    """One comparison row with facts (chunks, questions) as the paired units, and its test
    (``p_holm``, ``significant``, ``n_tests``, ``mdd`` are filled per localization later)."""
    from factlens.power import lattice_step
    from factlens.stats import (is_binary, minimum_detectable_difference, paired_diff, paired_test_key,
                                sign_flip_test, smallest_attainable_p, weighted_mean_se)

    v = _values_row(loc, key, lm, rm, seed, reference=reference)
    if not v.tested:
        return v.row, None
    row, pairs, weighted, proportion = v.row, v.pairs, v.weighted, v.proportion
    xs, ys = np.concatenate([p.x for p in pairs]), np.concatenate([p.y for p in pairs])
    d = xs - ys
    ok = ~np.isnan(d)
    diff, ci = paired_diff([p.x for p in pairs], [p.y for p in pairs],
                           weights=[p.w for p in pairs] if weighted else None, seed=seed, proportion=proportion)
    # each seed counts once, its units (those with a value on both sides) by their weights: as in
    # ``paired_diff``; normalized before the NaN units were dropped, a seed with few values counted
    # less in the test than in ``diff``
    w = np.concatenate([_seed_weights(p) for p in pairs])
    step, sizes = None, None
    if weighted or not np.allclose(w[ok], w[ok][0] if ok.any() else 1.0):
        # the sd that makes sd / sqrt(n) the standard error of the mean difference the test weighs:
        # tokens per chunk, and each seed counting once (seeds with different numbers of units)
        se = weighted_mean_se(d[ok], weights=w[ok])
        sd = se * float(np.sqrt(ok.sum())) if se is not None else 0.0
    else:
        sd = float(d[ok].std(ddof=1)) if ok.sum() > 1 else 0.0
        step = lattice_step(d[ok])  # unit weights only: the lattice model's test (any metric whose differences lie on one)
        if step is not None:
            nz = np.abs(d[ok][d[ok] != 0])
            sizes = tuple(float(x) for x in np.round(nz / step) * step)  # minimum_detectable_difference sorts them
    sd = _spread(sd, d[ok])
    key = paired_test_key(xs, ys, w, ids=[(p.seed, k) for p in pairs for k in p.ids])
    # a token-weighted mean (a chunk's accuracy) is no 0/1 outcome even where every chunk is 0 or 1, as in
    # ``paired_diff`` and ``mean_interval``: it took the binomial MDD while its CI was the bootstrap's
    binary = proportion and not weighted and is_binary(xs[ok]) and is_binary(ys[ok])
    # differences of -1, 0 and +1 only (some non-zero) make the sign-flip test the sign test whatever the metric:
    # a selective recovery of 0/1 values took the t-model's MDD, 0.19 where the test needs 0.45 (power 0.06 at 0.19)
    binary = binary or (not weighted and bool(np.any(d[ok] != 0)) and bool(np.all(np.isin(d[ok], (-1.0, 0.0, 1.0)))))
    test = _PairedTest(int(ok.sum()), sd, binary, key,
                       smallest_attainable_p(d, weights=w, seed=seed), step, sizes)
    return {**row, "diff": diff, "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
            "p_value": sign_flip_test(d, weights=w, seed=seed), "n_facts": min(int(np.sum(~np.isnan(p.x - p.y))) for p in pairs),
            "n_units": int(ok.sum()),
            "mdd_unadjusted": minimum_detectable_difference(test.n, sd=sd, alpha=alpha, binary=test.binary, step=test.step,
                                                            sizes=test.sizes)}, test


def _spread(sd: float, d: np.ndarray) -> float:
    """``sd`` of the paired differences ``d``, 0 where they are equal up to rounding (sd ~1e-17): no spread."""
    return 0.0 if sd <= 1e-9 * float(np.abs(d).max(initial=0.0)) else sd


def _seed_weights(p) -> np.ndarray:
    """One seed's unit weights for the test, summing to 1 over the units paired on both sides (0
    for the others; all 0 when none is)."""
    w = np.where(np.isnan(p.x - p.y), 0.0, p.w)
    return w / w.sum() if w.sum() > 0 else w


def _holm_family(loc_rows: list[dict[str, Any]], tests: list[_PairedTest | None], alpha: float) -> list[float]:
    """Holm across one localization's testable rows; each row's ``mdd`` at the family's first-step level.

    Rows that are the same test on the same data (the same per-fact values on both sides, or
    their complements: CounterFact's paraphrase forget error and edit accuracy are one
    per-fact outcome) count once. Rows whose smallest attainable p-value is above the level
    they would need (all paired differences zero, or too few differing facts for an exact
    test to reach it) do not count (``testable`` false), as Tarone's modification of Holm's
    step-down allows (:func:`factlens.stats.tarone_holm`): ``m`` is Tarone's ``K`` over the
    distinct tests, at most their number. A raw p-value below ``alpha / m`` survives the
    correction whatever the other p-values are, so a true difference of ``mdd`` is marked
    significant with at least the stated power in a family like this one; one of
    ``mdd_unadjusted`` (the MDD at ``alpha`` itself) need not be. A row that is not testable
    would join the count if it differed by that much, so its ``mdd`` is at ``alpha / K'`` with
    ``K'`` Tarone's ``K`` of the family in which that row can reach any level (at ``alpha / m``
    such a row, e.g. one where both sides forget every fact, claimed 0.8 power where it had
    0.63; at ``alpha / (m + 1)``, as before, it claimed too little where ``K`` does not grow:
    a lone row of 16 facts read 0.512 instead of 0.449).

    Returns each row's level (NaN for rows not tested): the level its ``mdd`` is computed at.
    """
    from factlens.multiple_testing import _same_test_groups, _tarone_k
    from factlens.stats import minimum_detectable_difference, tarone_holm

    levels = [float("nan")] * len(loc_rows)
    for r in loc_rows:
        r["p_holm"], r["significant"], r["testable"], r["n_tests"], r["mdd"] = float("nan"), False, False, 0, float("nan")
        if r["at_chance"]:  # never tested, so no power either (the docs and the mdd column say so)
            r["mdd_unadjusted"] = float("nan")
    fam = [i for i, (r, t) in enumerate(zip(loc_rows, tests))
           if t is not None and not r["at_chance"] and not np.isnan(r["p_value"])]
    keys = [tests[i].key for i in fam]
    res = tarone_holm([loc_rows[i]["p_value"] for i in fam], [tests[i].smallest for i in fam], alpha=alpha, same=keys)
    m = res.k
    groups = _same_test_groups(np.array([loc_rows[i]["p_value"] for i in fam], dtype=float), keys)
    smallest = {g: max(tests[fam[jj]].smallest for jj in members) for g, members in groups.items()}
    group_of = {jj: g for g, members in groups.items() for jj in members}
    for j, (i, p, t) in enumerate(zip(fam, res.adjusted, res.testable)):
        k = m
        if not t:  # Tarone's K with this test able to reach any level: one more, or as often the same K
            k = _tarone_k([0.0 if g == group_of[j] else v for g, v in smallest.items()], alpha)
        level = levels[i] = alpha / max(k, 1)
        loc_rows[i].update(p_holm=float(p), significant=bool(t and p <= alpha), testable=bool(t), n_tests=m,
                           mdd=minimum_detectable_difference(tests[i].n, sd=tests[i].sd, alpha=level,
                                                            binary=tests[i].binary, step=tests[i].step,
                                                            sizes=tests[i].sizes))
    return levels


def compare(runs: str | Path | Sequence[str | Path] | Mapping[str, Any], reference: str = "flu",
            metrics: str | Sequence[str] | None = None, *, unit: str = "fact",
            alpha: float = 0.05, seed: int = 0):
    """Paired comparison of every localization with ``reference``, one row per (localization, metric).

    Args:
        runs: A run directory (``factlens run ... --out DIR``), a list of run directories
            with the same facts (merged: a ROME folder next to a fine-tuning folder), or a
            mapping ``localization -> [EvalResult per seed]`` (see :func:`load_evaluations`).
        reference: The localization compared against (``"flu"``, ``"random"``...).
        metrics: Metric names (``"forget_accuracy"`` or ``"standard.forget_accuracy"``) to
            compare; ``None``: every metric with per-unit samples in both.
        unit: What the test pairs and resamples. ``"fact"`` (default): the facts (text chunks,
            MMLU questions) of every seed, pooled; the p-value holds for the run's trained edits
            and mask draws. ``"seed"``: each seed's mean paired difference is one unit, so the
            test and interval are over seeds, which draw their own facts, masks and trainings
            (:mod:`factlens.seed_unit`: the exact sign-flip test and the interval that inverts
            it); needs at least 2 seeds both sides have, 6 to reach 0.05 at all. The columns
            are the same; ``test_unit`` says which.
        alpha: Level of ``significant`` (after Holm's correction).
        seed: Seed of the bootstrap resamples and of the random sign patterns (large n).

    Returns:
        A pandas DataFrame with :data:`COMPARE_COLUMNS`: ``value`` (mean over seeds) with its
        95 % interval ``value_ci_low``/``value_ci_high`` (Wilson/bootstrap for one seed, seeds
        then facts for several; none for a maximum over layers of several seeds, whose per-layer
        counts are not kept), ``reference_value``, ``diff`` (mean paired difference; NaN when the two share no seed, e.g.
        folders run with other ``--seeds``: a difference across seeds would mix trainings) with
        its paired interval ``ci_low``/``ci_high`` (Newcombe's for 0/1 outcomes, else a bootstrap), ``p_value`` (sign-flip test),
        ``p_holm`` (Holm's step-down over the localization's rows, counting only those that can
        reach the level, Tarone; NaN for untestable rows),
        ``significant``, ``testable`` (the row is in that family: its smallest attainable p
        reaches the level Tarone's selection needs, :func:`factlens.stats.tarone_holm`; rows
        whose paired differences are all zero, or too few, can never be significant and stay
        out, so that they do not make the other rows stricter), ``at_chance``, ``collapsed`` (in a paired seed, after the
        suite's attack the model of either side answers regardless of the fact,
        ``extra["maintain_collapse"]``, whether the attack or the edit caused it: the metric then
        partly counts one answer given to many; reported, not excluded; ``*_before`` rows are not
        marked), ``n_facts`` (paired units per seed: facts,
        or text chunks / MMLU questions, see ``unit``; the smallest seed's when seeds have
        different numbers), ``n_units`` (paired units over all seeds), ``n_seeds``, ``n_tests`` (Tarone's count
        of the localization's distinct tests that can reach the level, the divisor of the
        correction's first step; 0 for untested rows), ``mdd`` (minimum detectable
        difference, power 0.8, at ``alpha / n_tests``: what ``significant`` can find) and
        ``mdd_unadjusted`` (the same at ``alpha``), ``test_unit`` (``unit``). The reference itself has no rows.

    Raises:
        ValueError: ``alpha`` is not a level in (0, 1); ``unit`` is not ``"fact"`` or ``"seed"``, or is
            ``"seed"`` and no localization shares 2 seeds with the reference; ``reference`` is not among the
            localizations; the table would be empty (:class:`NothingToCompare`: only the reference
            is given, or no metric, of ``metrics`` or with per-unit samples, is in both it and
            another localization); or a
            localization and the reference hold values for different units (facts) of a
            metric in a seed (the message names them and the counts), or weight the same
            units differently.

    Example:
        >>> from factlens.evaluation.result import EvalResult, Metric, SuiteResult
        >>> def ev(v):
        ...     m = Metric.from_samples("forget_accuracy", {f"f{i}": x for i, x in enumerate(v)})
        ...     return EvalResult({"standard": SuiteResult("standard", (m,))})
        >>> t = compare({"flu": [ev([0] * 12)], "random": [ev([1] * 11 + [0])]}, reference="flu")
        >>> round(float(t.at[0, "diff"]), 3), round(float(t.at[0, "p_value"]), 4), bool(t.at[0, "significant"])
        (0.917, 0.001, True)
    """
    import pandas as pd

    rows = [r for r, _, _ in compared_rows(runs, reference, metrics, unit=unit, alpha=alpha, seed=seed)]
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


def compared_rows(runs, reference: str, metrics: str | Sequence[str] | None, *, unit: str, alpha: float,
                  seed: int) -> list[tuple[dict[str, Any], _PairedTest | None, float]]:
    """:func:`compare`'s rows, each with its test (``None`` when untested) and the level of its ``mdd``
    (NaN when untested): what a power plan (:func:`factlens.plan_units`) starts from. Same arguments
    and errors as :func:`compare`."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha is a level between 0 and 1 (e.g. 0.05 for 5 %), got {alpha!r}")
    check_unit(unit)
    evals = _with_reference(runs, reference)
    if unit == "seed" and (why := too_few_seeds(evals, reference)):
        raise ValueError(why)
    make_row = seed_row if unit == "seed" else _row
    metrics = _metric_names(metrics, evals)
    ref = _metric_index(evals[reference])
    ref_collapsed = _collapsed_seeds(evals[reference])
    rows = []
    for loc, res in evals.items():
        if loc == reference:
            continue
        idx = _metric_index(res)
        keys = [k for k in idx if k in ref and _wanted(k, metrics)
                and (metrics is not None or any(m.samples for m in idx[k].values()))]
        done = [make_row(loc, k, idx[k], ref[k], seed, alpha, reference=reference) for k in keys]
        loc_rows, tests = [r for r, _ in done], [t for _, t in done]
        loc_collapsed = _collapsed_seeds(res)
        for r, k in zip(loc_rows, keys):  # an attack that collapsed either side's model, in a paired seed
            hit = set(idx[k]) & set(ref[k]) & (loc_collapsed.get(k[0], set()) | ref_collapsed.get(k[0], set()))
            r["collapsed"] = bool(hit) and not k[1].endswith("_before")  # "_before": measured before the attack
        levels = _holm_family(loc_rows, tests, alpha)
        rows += list(zip(loc_rows, tests, levels))
    if not rows:  # an empty table read as "no difference" (it was returned without a word unless metrics= was given)
        raise NothingToCompare(_nothing_compared(runs, evals, reference, metrics))
    return rows


def _with_reference(runs, reference: str) -> dict[str, dict[Any, Any]]:
    """:func:`load_evaluations` of ``runs``, refused when ``reference`` is not among their localizations."""
    evals = load_evaluations(runs)
    if reference not in evals:
        raise ValueError(f"reference {reference!r} is not among the localizations {sorted(evals)}; pass "
                         f"reference=<one of them> (CLI: --reference)")
    return evals


def _nothing_compared(runs, evals: Mapping[str, Any], reference: str, metrics: tuple[str, ...] | None) -> str:
    """Why :func:`compare` has no row: only the reference was given, none of ``metrics`` is in both, or
    the reference shares no metric with per-unit values with any other localization."""
    others = sorted(loc for loc in evals if loc != reference)
    if not others:
        if isinstance(runs, (str, Path, RunFolder)):
            return (f"{runs} holds only {reference!r}: nothing to compare it with; run more localizations into the "
                    "folder (e.g. --localizations flu,random) or compare it with another folder")
        where = "the runs" if isinstance(runs, Mapping) else ", ".join(map(str, runs))
        return f"{where} hold only {reference!r}: nothing to compare it with; add another localization"
    if metrics is not None:
        return f"none of the metrics {list(metrics)} is in both {reference!r} and another localization"
    suites = {loc: sorted({k[0] for k, v in _metric_index(evals[loc]).items() if any(m.samples for m in v.values())})
              for loc in [reference, *others]}
    return (f"no metric with per-unit values (per-fact samples) is in both {reference!r} and {others}: their suites "
            f"with such metrics are {suites}; compare localizations evaluated with the same suites")


from factlens.seed_unit import check_unit, seed_row, too_few_seeds  # noqa: E402 - it builds on _values_row above
from factlens.seed_variance import variance_split  # noqa: E402 - re-exported here, where it was first
