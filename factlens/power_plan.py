"""Power plans: how many facts or seeds a run needs to find a difference of a given size.

A comparison that ends "undecided" (:func:`factlens.compare`: not significant, ``mdd`` larger
than the difference that matters) raises the next question: how much larger must the run be?
:func:`plan_units` answers it for every row of the same comparison. It takes what the row's test
measured in the pilot (the spread of the paired differences, whether they are 0/1 outcomes, the
level of the row's Holm family) and finds the fewest paired units at which the row's minimum
detectable difference reaches the ``difference`` you name (:func:`factlens.power.units_needed`):
the facts pooled over seeds (``unit="fact"``) or the seeds (``unit="seed"``, each seed's mean
difference one unit, over mask draws and trainings).

What it assumes, so read it as a plan rather than a promise: the pilot's spread is the true one
(with few units it is itself uncertain, so plan with a margin), new units are like the old (the
same task and kind of facts), and the Holm family stays the same metrics. Statistics:
docs/statistics.md, "Planning".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["plan_units", "PLAN_COLUMNS", "plan_text"]

#: Columns of :func:`plan_units`'s table.
PLAN_COLUMNS = ("localization", "metric", "suite", "test_unit", "diff", "mdd", "level", "sd", "binary",
                "difference", "n_units", "units_needed", "scale", "n_seeds", "n_facts", "seeds_needed",
                "facts_needed", "tested")


def plan_units(runs: str | Path | Sequence[str | Path] | Mapping[str, Any], reference: str = "flu",
               metrics: str | Sequence[str] | None = None, *, difference: float, unit: str = "fact",
               alpha: float = 0.05, power: float = 0.8, seed: int = 0):
    """Per row of ``compare(runs, reference, metrics, unit=unit)``: the units needed to find a true
    difference of ``difference`` with probability ``power`` at that row's Holm level.

    Args:
        runs, reference, metrics, unit, alpha, seed: As for :func:`factlens.compare` (the pilot).
        difference: The smallest true difference worth finding, on the metrics' scale (0.1 for
            accuracies); fixed before looking, like an equivalence margin. One number for every
            metric: choose the metrics with ``metrics=``.
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
        maximum over layers, nothing paired) have ``tested`` false and NaN plans.

    Raises:
        ValueError: ``difference`` is not a finite non-zero number or ``power`` not in (0, 1);
            and whatever :func:`factlens.compare` refuses.

    Example:
        >>> from factlens.evaluation.result import EvalResult, Metric, SuiteResult
        >>> def ev(v):
        ...     m = Metric.from_samples("forget_accuracy", {f"f{i}": x for i, x in enumerate(v)})
        ...     return EvalResult({"standard": SuiteResult("standard", (m,))})
        >>> t = plan_units({"flu": [ev([0, 1] * 8)], "random": [ev([1, 1, 0, 1] * 4)]}, difference=0.2)
        >>> int(t.at[0, "n_units"]), int(t.at[0, "units_needed"]), round(float(t.at[0, "mdd"]), 3)
        (16, 47, 0.449)
    """
    import pandas as pd

    from factlens.comparison import compared_rows
    from factlens.power import _check_power_inputs, units_needed

    if isinstance(difference, bool) or not isinstance(difference, (int, float)) or not (
            math.isfinite(difference) and difference != 0):
        raise ValueError(f"difference must be a finite non-zero number (the smallest true difference worth finding, "
                         f"on the metrics' scale, e.g. 0.1 for accuracies), got {difference!r}")
    _check_power_inputs(alpha=alpha, power=power, sd=None)
    out = []
    for row, test, level in compared_rows(runs, reference, metrics, unit=unit, alpha=alpha, seed=seed):
        tested = test is not None and not row["at_chance"] and not math.isnan(level)
        plan: dict[str, Any] = {k: row.get(k) for k in ("localization", "metric", "suite", "test_unit", "diff",
                                                         "mdd", "n_units", "n_seeds", "n_facts")}
        plan.update(difference=abs(float(difference)), tested=tested, level=level if tested else float("nan"),
                    sd=test.sd if test is not None else float("nan"),
                    binary=bool(test.binary) if test is not None else None)
        need = (units_needed(difference, sd=test.sd, alpha=level, power=power, binary=test.binary, step=test.step,
                             sizes=test.sizes) if tested else float("nan"))
        plan.update(units_needed=need, **_in_run_terms(need, row))
        out.append(plan)
    return pd.DataFrame(out, columns=list(PLAN_COLUMNS))


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
    """The :func:`plan_units` table as markdown, with its legend."""
    from factlens.runner.report_comparisons import md_escape, number_cell as num

    head = ["localization", "metric", "unit", "diff now", "mdd now", "n now", "needed", "×", "seeds", "facts/seed"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for r in table.to_dict("records"):
        cells = [r["localization"], r["metric"], r["test_unit"], num(r["diff"], "+.3f"), num(r["mdd"]),
                 str(r["n_units"]), num(r["units_needed"], ".0f"), num(r["scale"], ".1f"),
                 num(r["seeds_needed"], ".0f"), num(r["facts_needed"], ".0f")]
        lines.append("| " + " | ".join(md_escape(str(c)) for c in cells) + " |")
    d = float(table["difference"].iloc[0]) if len(table) else float("nan")
    legend = (f"Units needed to find a true difference of {d:g} from {reference} with power 0.8 at each row's Holm "
              "level (that of its mdd now), if the paired differences keep the spread seen here; '×' is needed / now; "
              "'seeds' the seeds at today's facts per seed (with seeds as the unit, the seeds themselves), "
              "'facts/seed' the facts per seed at today's seeds. ∞: more than a million units; –: not tested "
              "(at chance, a maximum over layers, nothing paired). A plan, not a promise: the spread of a small "
              "pilot is itself uncertain (docs/statistics.md, Planning).")
    return "\n".join(lines) + "\n\n" + legend + "\n"
