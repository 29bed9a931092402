"""Power plans: how many facts or seeds a run needs to find a difference of a given size.

A comparison that ends "undecided" (:func:`factlens.compare`: not significant, ``mdd`` larger
than the difference that matters) raises the next question: how much larger must the run be?
:func:`plan_units` answers it for every row of the same comparison. It takes what the row's test
measured in the pilot (the spread of the paired differences, whether they are 0/1 outcomes, the
level of the row's Holm family) and finds the fewest paired units at which the row's minimum
detectable difference reaches the ``difference`` you name (:func:`factlens.power.units_needed`):
the facts pooled over seeds (``unit="fact"``) or the seeds (``unit="seed"``, each seed's mean
difference one unit, over mask draws and trainings).

A verdict that ends "undecided" can also be meant to end "equivalent": with ``margin=``
instead of ``difference=`` the plan is for :func:`factlens.equivalence` (TOST): the fewest units
at which a run declares the two localizations equivalent within the margin with probability
``power``, if they truly differ by ``assumed`` (0 by default). TOST rejects both one-sided
hypotheses "the difference is at least the margin" at the family's level; each is a one-sided
test that must find a shift of ``margin - |assumed|``, so the plan is the units at which the
row's test, two-sided at twice the level (one-sided at the level), finds that shift with power
``(1 + power) / 2`` (then both sides succeed with at least ``power``). In simulations of the
tests themselves this reached 0.85-0.88 at the planned n (docs/statistics.md, Planning).

What it assumes, so read it as a plan rather than a promise: the pilot's spread is the true one
(with few units it is itself uncertain, so plan with a margin), new units are like the old (the
same task and kind of facts), and the Holm family stays the same metrics. Statistics:
docs/statistics.md, "Planning".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["plan_units", "PLAN_COLUMNS", "GOALS", "plan_text"]

#: Columns of :func:`plan_units`'s table.
PLAN_COLUMNS = ("localization", "metric", "suite", "test_unit", "goal", "diff", "mdd", "bound", "level", "sd",
                "binary", "difference", "margin", "assumed", "n_units", "units_needed", "scale", "n_seeds", "n_facts",
                "seeds_needed", "facts_needed", "tested")

#: The values of the ``goal`` column: a plan to find a difference, or to show equivalence.
GOALS = ("difference", "equivalence")


def plan_units(runs: str | Path | Sequence[str | Path] | Mapping[str, Any], reference: str = "flu",
               metrics: str | Sequence[str] | None = None, *, difference: float | None = None,
               margin: float | Mapping[str, float] | None = None, assumed: float = 0.0, unit: str = "fact",
               alpha: float = 0.05, power: float = 0.8, seed: int = 0):
    """Per row of ``compare(runs, reference, metrics, unit=unit)``: the units needed to find a true
    difference of ``difference`` with probability ``power`` at that row's Holm level, or (with
    ``margin``) to show equivalence within ``margin`` with that probability.

    Args:
        runs, reference, metrics, unit, alpha, seed: As for :func:`factlens.compare` (the pilot).
        difference: The smallest true difference worth finding, on the metrics' scale (0.1 for
            accuracies); fixed before looking, like an equivalence margin. One number for every
            metric: choose the metrics with ``metrics=``.
        margin: Instead of ``difference``: the equivalence margin of :func:`factlens.equivalence`
            (one number, or a mapping ``metric -> margin`` that also chooses the metrics); the
            plan is for the TOST at the level of its Holm family's first step.
        assumed: With ``margin``: the true difference the plan assumes (0: the localizations do
            not differ); its size must be below the margin.
        power: The probability of finding it (0.8 by convention).

    Returns:
        A pandas DataFrame with :data:`PLAN_COLUMNS`, one row per compared (localization, metric):
        ``diff`` and ``mdd`` as :func:`~factlens.compare` reports them now, ``level`` (the level
        ``mdd`` is at, ``alpha / n_tests``), ``sd`` (the spread of the paired differences per
        unit) and ``binary`` (0/1 outcomes: the sign test's model), ``n_units`` (now) and
        ``units_needed`` (``inf`` beyond :data:`factlens.power.MAX_PLANNED_UNITS`), ``scale``
        (their ratio), and in the terms a run is asked for: ``seeds_needed`` (with the seeds as
        the unit, the units; with facts, the seeds at today's facts per seed) and
        ``facts_needed`` (with facts, facts per seed at today's seeds; ``None`` with seeds).
        Rows that :func:`~factlens.compare` does not test (at chance on the unedited model, a
        maximum over layers, nothing paired) have ``tested`` false and NaN plans. ``goal`` says
        which plan a row is (:data:`GOALS`); an equivalence plan's row has ``margin``,
        ``assumed``, ``bound`` (the smallest margin the run rules out now, as
        :func:`factlens.equivalence` gives it) and the TOST family's ``level``; a difference
        plan's has ``difference`` (the other columns NaN).

    Raises:
        ValueError: Neither or both of ``difference`` and ``margin``; ``difference`` is not a
            finite non-zero number, ``|assumed|`` not below the margin, or ``power`` not in
            (0, 1); and whatever :func:`factlens.compare` (or :func:`factlens.equivalence`) refuses.

    Example:
        >>> from factlens.evaluation.result import EvalResult, Metric, SuiteResult
        >>> def ev(v):
        ...     m = Metric.from_samples("forget_accuracy", {f"f{i}": x for i, x in enumerate(v)})
        ...     return EvalResult({"standard": SuiteResult("standard", (m,))})
        >>> t = plan_units({"flu": [ev([0, 1] * 8)], "random": [ev([1, 1, 0, 1] * 4)]}, difference=0.2)
        >>> int(t.at[0, "n_units"]), int(t.at[0, "units_needed"]), round(float(t.at[0, "mdd"]), 3)
        (16, 47, 0.449)
        >>> e = plan_units({"flu": [ev([0, 1] * 8)], "random": [ev([0, 1] * 8)]}, margin=0.2)
        >>> e.at[0, "goal"], int(e.at[0, "units_needed"])
        ('equivalence', 38)
    """
    import pandas as pd

    from factlens.comparison import compared_rows
    from factlens.power import _check_power_inputs

    if (difference is None) == (margin is None):
        raise ValueError("give difference= (a plan to find a difference of that size) or margin= (a plan to show "
                         "equivalence within it), one of them")
    if difference is not None and (isinstance(difference, bool) or not isinstance(difference, (int, float)) or not (
            math.isfinite(difference) and difference != 0)):
        raise ValueError(f"difference must be a finite non-zero number (the smallest true difference worth finding, "
                         f"on the metrics' scale, e.g. 0.1 for accuracies), got {difference!r}")
    if isinstance(assumed, bool) or not isinstance(assumed, (int, float)) or not math.isfinite(assumed):
        raise ValueError(f"assumed must be a finite number (the true difference an equivalence plan assumes), "
                         f"got {assumed!r}")
    _check_power_inputs(alpha=alpha, power=power, sd=None)
    equivalent = None
    if margin is not None:
        from factlens.comparison import load_evaluations
        from factlens.tost import _margins, equivalence

        runs = load_evaluations(runs)  # the folders read once, for equivalence and compare (as verdicts does)
        equivalent = {(r["localization"], r["suite"], r["metric"]): r for r in equivalence(
            runs, reference, metrics, margin=margin, unit=unit, alpha=alpha, seed=seed).to_dict("records")}
        metrics = _margins(margin, metrics)[1]  # a mapping chooses the metrics, as equivalence's
    out = []
    for row, test, level in compared_rows(runs, reference, metrics, unit=unit, alpha=alpha, seed=seed):
        tested = test is not None and not row["at_chance"] and not math.isnan(level)
        plan: dict[str, Any] = {k: row.get(k) for k in ("localization", "metric", "suite", "test_unit", "diff",
                                                         "mdd", "n_units", "n_seeds", "n_facts")}
        plan.update(sd=test.sd if test is not None else float("nan"),
                    binary=bool(test.binary) if test is not None else None)
        if equivalent is None:
            plan.update(_difference_plan(difference, test, level, tested, power))
        else:
            plan.update(_equivalence_plan(equivalent.get((row["localization"], row["suite"], row["metric"])), test,
                                          tested, assumed, alpha, power))
        plan.update(**_in_run_terms(plan["units_needed"], row))
        out.append(plan)
    return pd.DataFrame(out, columns=list(PLAN_COLUMNS))


def _difference_plan(difference: float, test, level: float, tested: bool, power: float) -> dict[str, Any]:
    """A row's plan to find ``difference`` at its compare Holm level."""
    from factlens.power import units_needed

    need = (units_needed(difference, sd=test.sd, alpha=level, power=power, binary=test.binary, step=test.step,
                         sizes=test.sizes) if tested else float("nan"))
    return {"goal": "difference", "difference": abs(float(difference)), "margin": float("nan"),
            "assumed": float("nan"), "bound": float("nan"), "tested": tested,
            "level": level if tested else float("nan"), "units_needed": need}


def _equivalence_plan(eq: Mapping[str, Any] | None, test, tested: bool, assumed: float, alpha: float,
                      power: float) -> dict[str, Any]:
    """A row's plan to show equivalence within its margin (``eq``: its :func:`factlens.equivalence`
    row) when the true difference is ``assumed``: each one-sided test of the TOST, at the level of
    the family's first step, must find a shift of ``margin - |assumed|`` with power ``(1 + power) / 2``."""
    from factlens.power import units_needed

    nan = float("nan")
    if eq is None:  # a row equivalence leaves out (no margin for it)
        return {"goal": "equivalence", "difference": nan, "margin": nan, "assumed": float(assumed), "bound": nan,
                "tested": False, "level": nan, "units_needed": nan}
    m = float(eq["margin"])
    if not abs(assumed) < m:
        raise ValueError(f"assumed={assumed!r} is not inside the margin {m:g} of {eq['metric']!r}: a run cannot show "
                         "equivalence within a margin that the true difference reaches; plan with a smaller |assumed| "
                         "or a larger margin")
    tested = tested and bool(eq.get("tested")) and int(eq.get("n_tests") or 0) > 0
    level = alpha / int(eq["n_tests"]) if tested else nan
    need = (units_needed(m - abs(assumed), sd=test.sd, alpha=min(2 * level, 0.5), power=(1 + power) / 2,
                         binary=test.binary, step=test.step, sizes=test.sizes) if tested else nan)
    return {"goal": "equivalence", "difference": nan, "margin": m, "assumed": float(assumed),
            "bound": eq.get("bound", nan), "tested": tested, "level": level, "units_needed": need}


def _in_run_terms(need: float, row: Mapping[str, Any]) -> dict[str, Any]:
    """``scale``, ``seeds_needed`` and ``facts_needed`` of a row that needs ``need`` units."""
    n, n_seeds, n_facts = row["n_units"], row["n_seeds"], row["n_facts"]
    if math.isnan(need) or not n:
        return {"scale": float("nan"), "seeds_needed": float("nan"), "facts_needed": float("nan")}
    if row["test_unit"] == "seed":
        return {"scale": need / n, "seeds_needed": need, "facts_needed": None}
    per_seed = max(n / max(n_seeds, 1), 1.0)  # today's paired facts per seed (NaN-valued facts left out)
    return {"scale": need / n,
            "seeds_needed": math.ceil(need / per_seed) if math.isfinite(need) else need,
            "facts_needed": math.ceil(need / max(n_seeds, 1)) if math.isfinite(need) else need}


def plan_text(table, *, reference: str) -> str:
    """The :func:`plan_units` table as markdown, with its legend (the goal's: a difference to find,
    or equivalence to show)."""
    from factlens.runner.report_comparisons import md_escape, number_cell as num

    equivalence = bool(len(table)) and (table["goal"] == "equivalence").all()
    now = ("bound now", "bound") if equivalence else ("mdd now", "mdd")
    size = ("margin", "margin") if equivalence else None
    head = ["localization", "metric", "unit", "diff now", now[0], *([size[0]] if size else []), "n now", "needed", "×",
            "seeds", "facts/seed"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for r in table.to_dict("records"):
        cells = [r["localization"], r["metric"], r["test_unit"], num(r["diff"], "+.3f"), num(r[now[1]]),
                 *([num(r["margin"], "g")] if size else []), str(r["n_units"]), num(r["units_needed"], ".0f"),
                 num(r["scale"], ".1f"), num(r["seeds_needed"], ".0f"), num(r["facts_needed"], ".0f")]
        lines.append("| " + " | ".join(md_escape(str(c)) for c in cells) + " |")
    common = ("'×' is needed / now; 'seeds' the seeds at today's facts per seed (with seeds as the unit, the seeds "
              "themselves), 'facts/seed' the facts per seed at today's seeds. ∞: more than a million units; –: not "
              "tested (at chance, a maximum over layers, nothing paired). A plan, not a promise: the spread of a "
              "small pilot is itself uncertain (docs/statistics.md, Planning).")
    if equivalence:
        assumed = float(table["assumed"].iloc[0])
        legend = (f"Units needed to show equivalence to {reference} within the margin (factlens equivalence, TOST at "
                  f"the level of each localization's Holm family) with power 0.8, if the true difference is "
                  f"{assumed:g} and the paired differences keep the spread seen here; 'bound now' is the smallest "
                  "margin this run rules out. " + common)
    else:
        d = float(table["difference"].iloc[0]) if len(table) else float("nan")
        legend = (f"Units needed to find a true difference of {d:g} from {reference} with power 0.8 at each row's "
                  "Holm level (that of its mdd now), if the paired differences keep the spread seen here; " + common)
    return "\n".join(lines) + "\n\n" + legend + "\n"
