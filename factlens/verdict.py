"""Verdicts: what a run lets a reader conclude about each difference from a reference.

:func:`factlens.compare` asks "is the difference real?" (a paired test, Holm across a
localization's metrics) and :func:`factlens.equivalence` asks "is it ruled out that the
difference is as large as a margin?" (two one-sided tests, Holm the same way). A conclusion
needs both: a row that is not significant is *undecided* unless the run also rules out every
difference that matters, and a significant row may still be negligible. The docs' claims tables
were built by reading the two tables side by side; :func:`verdicts` does it row by row, with
the evidence in the same row:

============================  ================================================================
``verdict``                   when
============================  ================================================================
``"lower"`` / ``"higher"``    the difference is significant (compare's Holm p <= alpha), and
                              not ruled out to be as large as the margin
``"lower, negligible"`` /     significant, and also equivalent within the margin: real but
``"higher, negligible"``      smaller than what you called negligible
``"equivalent"``              not significant, and a difference as large as the margin is
                              ruled out (TOST's Holm p <= alpha)
``"undecided"``               neither: the run cannot tell; ``mdd`` says which differences it
                              would probably have found, ``bound`` which it rules out
``"at chance"``               the unedited model is at chance on the metric: no verdict
``"not tested"``              a maximum over layers, or no common seed: neither test applies
============================  ================================================================

"lower" and "higher" are the sign of ``diff`` (localization minus reference), not better or
worse: ``higher_is_better`` says which way is good for the metric.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["verdicts", "combined", "VERDICT_COLUMNS", "VERDICTS", "verdict_text"]

#: Columns of :func:`verdicts`'s table.
VERDICT_COLUMNS = ("localization", "metric", "suite", "test_unit", "value", "reference_value", "diff", "ci_low",
                   "ci_high", "p_holm", "significant", "mdd", "margin", "p_holm_equivalence", "equivalent", "bound",
                   "verdict", "higher_is_better", "n_units", "n_seeds")

#: The values of the ``verdict`` column.
VERDICTS = ("lower", "higher", "lower, negligible", "higher, negligible", "equivalent", "undecided", "at chance",
            "not tested")


def verdicts(runs: str | Path | Sequence[str | Path] | Mapping[str, Any], reference: str = "flu",
             metrics: str | Sequence[str] | None = None, *, margin: float | Mapping[str, float],
             unit: str = "fact", alpha: float = 0.05, seed: int = 0):
    """One verdict per (localization, metric) row of :func:`factlens.compare`, from its paired test
    and the equivalence test of :func:`factlens.equivalence` at ``margin``.

    Args:
        runs, reference, metrics, unit, alpha, seed: As for :func:`factlens.compare` (the run
            folders are read once and both tests see the same results).
        margin: The largest difference you would call negligible, on the metrics' scale (0.1 for
            accuracies), or ``{metric: margin}`` (which also chooses the metrics); fixed before
            looking, as for :func:`factlens.equivalence`.

    Returns:
        A pandas DataFrame with :data:`VERDICT_COLUMNS`: compare's ``value``,
        ``reference_value``, ``diff`` with its 95 % interval ``ci_low``/``ci_high``, ``p_holm``,
        ``significant`` and ``mdd``; the equivalence test's ``margin``, ``p_holm_equivalence``,
        ``equivalent`` and ``bound`` (differences larger than it are ruled out); and ``verdict``,
        one of :data:`VERDICTS` (see the module's table).

    Raises:
        ValueError: As :func:`factlens.compare` and :func:`factlens.equivalence` refuse (a margin
            that is not a number > 0, an unknown reference or metric...).

    Example:
        >>> from factlens.evaluation.result import EvalResult, Metric, SuiteResult
        >>> def ev(v, name="forget_accuracy"):
        ...     m = Metric.from_samples(name, {f"f{i}": x for i, x in enumerate(v)})
        ...     return EvalResult({"standard": SuiteResult("standard", (m,))})
        >>> same = [1] * 90 + [0] * 10
        >>> verdicts({"flu": [ev(same)], "random": [ev(same)]}, margin=0.1).at[0, "verdict"]
        'equivalent'
        >>> verdicts({"flu": [ev(same)], "random": [ev([0] * 100)]}, margin=0.1).at[0, "verdict"]
        'lower'
        >>> verdicts({"flu": [ev([1, 0] * 5)], "random": [ev([0, 1] * 5)]}, margin=0.1).at[0, "verdict"]
        'undecided'
    """
    from factlens.comparison import compare, load_evaluations
    from factlens.tost import equivalence

    evals = load_evaluations(runs)  # read once: both tests on the same results
    # the margin and metrics first (a mapping margin names the metrics; it refuses metrics= beside it)
    eq = equivalence(evals, reference=reference, metrics=metrics, margin=margin, unit=unit, alpha=alpha, seed=seed)
    names = list(margin) if isinstance(margin, Mapping) else metrics
    return combined(compare(evals, reference=reference, metrics=names, unit=unit, alpha=alpha, seed=seed), eq)


def combined(table, eq):
    """The :func:`verdicts` table of a :func:`factlens.compare` table and the :func:`factlens.equivalence`
    table of the same runs, reference, metrics and unit (rows matched by localization, suite and metric)."""
    import pandas as pd

    by_row = {(r["localization"], r["suite"], r["metric"]): r for r in eq.to_dict("records")}
    rows = []
    for r in table.to_dict("records"):
        e = by_row.get((r["localization"], r["suite"], r["metric"]), {})
        row = {k: r.get(k) for k in VERDICT_COLUMNS if k in r}
        row.update(margin=e.get("margin", math.nan), p_holm_equivalence=e.get("p_holm", math.nan),
                   equivalent=bool(e.get("equivalent", False)), bound=e.get("bound", math.nan))
        row["verdict"] = _verdict(r, e)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


def _verdict(r: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    """The verdict of one compare row ``r`` and its equivalence row ``e`` (empty: none)."""
    if r.get("at_chance"):
        return "at chance"
    compared = _finite(r.get("p_holm"))
    if not compared and not e.get("tested", False):
        return "not tested"
    equivalent = bool(e.get("equivalent", False))
    if compared and r.get("significant"):
        direction = "lower" if r["diff"] < 0 else "higher"
        return f"{direction}, negligible" if equivalent else direction
    return "equivalent" if equivalent else "undecided"


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def verdict_text(table, *, reference: str, alpha: float = 0.05) -> str:
    """The :func:`verdicts` table as markdown: the evidence of each row, its verdict, a count of
    the verdicts and the legend."""
    from factlens.runner.report_comparisons import md_escape, number_cell as num, p_cell

    head = ["localization", "metric", "diff [95% CI]", "p (Holm)", "MDD", "margin", "TOST p (Holm)",
            "rules out beyond", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 3) + "---|"]
    for r in table.to_dict("records"):
        diff = num(r["diff"], "+.3f")
        if _finite(r["ci_low"]) and _finite(r["ci_high"]):
            diff += f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        cells = [r["localization"], r["metric"], diff, p_cell(r["p_holm"]), num(r["mdd"], ".2f"),
                 num(r["margin"], "g"), p_cell(r["p_holm_equivalence"]), num(r["bound"], ".3f"),
                 f"**{r['verdict']}**" if r["verdict"] not in ("undecided", "at chance", "not tested") else r["verdict"]]
        lines.append("| " + " | ".join(md_escape(str(c)) for c in cells) + " |")
    counts = table["verdict"].value_counts()
    tally = ", ".join(f"{int(counts[v])} {v}" for v in VERDICTS if v in counts)
    over_seeds = bool(len(table)) and set(table["test_unit"]) == {"seed"}
    unit = (" (the seeds as the unit: each seed's mean paired difference, the exact sign-flip test over the seeds and "
            "the interval that inverts it)" if over_seeds else " (the facts of every seed as the unit)")
    legend = (f"diff = localization − {reference} with its 95 % paired interval and p (Holm) as factlens compare "
              f"gives them{unit} (significant: Holm p ≤ {alpha:g}); TOST p (Holm): the equivalence test of factlens "
              "equivalence at the margin; rules out beyond: the smallest margin the run would have declared "
              "equivalent. Verdict: lower/higher: significant (the sign of diff, not better or worse); "
              "', negligible': significant and also within the margin; equivalent: not significant and a "
              "difference as large as the margin ruled out; undecided: neither (a true difference as large as "
              "the MDD would have been found 4 times in 5; differences beyond 'rules out beyond' are ruled out); "
              "at chance: "
              "the unedited model is at chance on the metric; not tested: a maximum over layers or no common "
              "seed.")
    return "\n".join(lines) + f"\n\n{tally}.\n\n" + legend + "\n"
