"""The report's Comparisons section: the units it compares against (:func:`report_references`,
FLU and random by default) and the tables of :func:`factlens.compare` against each, as markdown
(:func:`compare_text`, :func:`comparisons_markdown`) and HTML (:func:`comparisons_html`).

Split from :mod:`factlens.runner.report_stats` (Table 1's intervals and marks) to keep it small;
its names stay importable from there.
"""

from __future__ import annotations

import html
import math
from typing import Any, Mapping, Sequence

from factlens.evaluation.plots import HEADLINE_METRICS
from factlens.value_checks import as_float

__all__ = ["DEFAULT_REFERENCES", "report_references", "no_comparison_reason", "md_escape", "compare_text",
           "equivalence_text", "comparisons_markdown", "comparisons_html", "equivalence_markdown", "equivalence_html"]

#: The localizations the report compares against by default (:func:`report_references`).
DEFAULT_REFERENCES: tuple[str, ...] = ("flu", "random")


def report_references(units: Sequence[str], given: Sequence[str] | None = None) -> list[str]:
    """The units the report compares against: ``given`` (``factlens report --reference``), else the
    units named ``flu`` / ``random``, else those whose localization (the part before ``+``) is flu /
    random: a run of ``--objectives graddiff`` (units ``flu+graddiff``, ``random+graddiff``, ...) is
    compared with ``flu+graddiff`` as ``factlens compare --reference flu+graddiff`` does; the report
    had no comparisons and no Table 1 marks there.

    Raises:
        ValueError: A ``given`` reference is not a unit of the run (the message lists them).

    Example:
        >>> report_references(["flu+graddiff", "random+graddiff", "all_mlps+graddiff"])
        ['flu+graddiff', 'random+graddiff']
        >>> report_references(["flu", "random", "flu+npo"]), report_references(["a", "b"], ["b"])
        (['flu', 'random'], ['b'])
    """
    units = list(units)
    if given:
        missing = [r for r in given if r not in units]
        if missing:
            raise ValueError(f"--reference {missing[0]!r} is not a unit of this run; its units are "
                             f"{', '.join(units)}: name one of them")
        return list(dict.fromkeys(given))
    named = [u for u in DEFAULT_REFERENCES if u in units]
    return named or [u for ref in DEFAULT_REFERENCES for u in units if u.split("+")[0] == ref]


def no_comparison_reason(units: Sequence[str], references: Sequence[str]) -> str | None:
    """Why the report compares nothing (one unit only, or no reference unit), else ``None``."""
    units = list(units)
    if len(units) < 2:
        return f"only one unit ({units[0] if units else 'none'}) in this run: nothing to compare"
    if not references:
        return ("no reference unit in this run (none named flu or random, nor flu+… or random+…): pass "
                f"--reference UNIT with one of {', '.join(units)}")
    return None


# ---------------------------------------------------------------------------------------------
# the comparison tables


def number_cell(x: Any, fmt: str = ".3f") -> str:
    """A table cell of a number: ``format(x, fmt)``, "–" for missing/NaN, "∞" for infinity (every
    markdown table of the comparisons, plans and verdicts writes numbers with it)."""
    x = as_float(x)
    if math.isnan(x):
        return "–"
    return "∞" if x == math.inf else "−∞" if x == -math.inf else format(x, fmt)


def p_cell(x: Any) -> str:
    """A table cell of a p value: "<0.001" below, four places near the 0.05 level, else three."""
    x = as_float(x)
    if math.isnan(x):
        return "–"
    if x < 0.001:
        return "<0.001"
    # near the 0.05 level three places can round across it (0.0504 read "0.050" beside "sig. no")
    return f"{x:.4f}" if 0.04 <= x < 0.06 else f"{x:.3f}"


_HEAD = ("localization", "metric", "value", "reference", "diff [95% CI]", "p", "p (Holm)", "sig.", "n", "MDD")


def _cells(r: dict) -> list[str]:
    diff = number_cell(r["diff"], "+.3f")
    if r["ci_low"] is not None and not (isinstance(r["ci_low"], float) and math.isnan(r["ci_low"])):
        diff += f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
    p = r["p_value"]
    untested = p is None or (isinstance(p, float) and math.isnan(p))  # nothing paired, or a maximum over layers
    untestable = not r["at_chance"] and r.get("testable") is False and (r.get("n_tests", 0) > 0 or untested)
    sig = ("yes" if r["significant"] else ("at chance" if r["at_chance"] else "n.t." if untestable else "no")
           ) + (" ◊" if r.get("collapsed") else "")
    return [str(r["localization"]), str(r["metric"]), number_cell(r["value"]), number_cell(r["reference_value"]), diff,
            p_cell(r["p_value"]), p_cell(r["p_holm"]), sig, _n_cell(r), _mdd(r["mdd"])]


def _n_cell(r: dict) -> str:
    """A row's paired units: per seed, or in all when the seeds have different numbers; the seeds
    first where they are the unit (``compare(..., unit="seed")``)."""
    if r.get("test_unit") == "seed":
        return f"{r['n_seeds']} seeds (≥ {r['n_facts']} {r['unit']} each)"
    n = f"{r['n_facts']} {r['unit']}" + (f" × {r['n_seeds']} seeds" if r["n_seeds"] > 1 else "")
    total = r.get("n_units")  # absent in tables written before it existed
    if r["n_seeds"] > 1 and total is not None and total != r["n_facts"] * r["n_seeds"]:  # seeds of different sizes
        n = f"{total} {r['unit']} over {r['n_seeds']} seeds (≥ {r['n_facts']} each)"
    return n


def _mdd(x: Any) -> str:
    """Two decimals, as before, down to 0.01; smaller MDDs (probabilities, KL) to two significant digits:
    they printed as 0.00, which read as "rules out any difference" and as the old MDD bugs' symptom."""
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))) or abs(float(x)) >= 0.01:
        return number_cell(x, ".2f")
    return "0" if float(x) == 0 else format(float(x), ".2g")


def _legend(reference: str) -> str:
    return (f"diff = localization − {reference}, mean paired difference over the same facts, with a 95 % CI: "
            "Newcombe's paired-proportion score interval for 0/1 outcomes (with several seeds, its hull with the "
            "bootstrap over seeds then facts), otherwise a paired bootstrap (seeds, then facts within seed). p: paired sign-flip permutation test over facts (exact when "
            "at most 16 differ or the differences take few values, e.g. 0/1 outcomes); Holm: corrected across the metrics of one localization in this table that can reach significance "
            "(metrics with the same per-fact outcomes, or complementary ones, count once); sig.: Holm p ≤ 0.05 "
            "(metrics at chance on the unedited model are never significant); n.t.: not testable, even the most "
            "extreme signs of these paired differences (all alike) miss the level, so the row is left out of the "
            "Holm family instead of making the others stricter (Tarone), or not tested at all (p –: a maximum over "
            "layers or the best attack variant, which each side chose on the same facts, or no paired facts). "
            "With several seeds p pools the seeds' facts and holds for these trained edits only; the CI also "
            "includes the seed-to-seed variance. "
            "MDD: minimum detectable difference at this "
            "n (power 0.8) at the level Holm needs whatever the other metrics show, 0.05 / the number of the "
            "localization's distinct tests that can reach it (Tarone's K): a true difference as large as the MDD would "
            "have been found 4 times in 5, so a non-significant row speaks against differences larger than the MDD "
            "and says nothing of smaller ones; to rule a difference out at a stated level, use the equivalence "
            "tests (factlens equivalence --margin). ◊: after the "
            "relearning attack the model of one side answers (nearly) regardless of the athlete: its maintain "
            "accuracy is not above, by 2 standard errors, what answers independent of the athlete and distributed "
            "as its own would score (their expected agreement with the true answers), nor above uniform chance "
            "(extra[\"maintain_collapse\"]; the attack or already the edit may have made it so: maintain_before "
            "says which). Every metric measured after the attack is marked: it partly counts one answer given "
            "to many athletes, not recovered facts; relearn_selective_recovery (each held-out "
            "fact's win minus the rate at which the attack gives its answer to its own control facts) nets that "
            "answer out (one answer given to everyone scores 0 on average), so it is the relearning number to "
            "read there, though it is marked too.")


def _seed_legend(reference: str) -> str:
    return (f"Seeds are the unit: each seed's mean paired difference (localization − {reference} on that seed's "
            "facts) is one unit; diff is their mean. p: exact sign-flip test over the seeds, which draw their own "
            "facts, masks and trainings, so it asks whether the difference holds over such draws (with n seeds the "
            "smallest p is 2/2^n: 0.016 at 7, 0.002 at 10); 95 % CI: the shifts that test does not reject (exact "
            "for differences symmetric about their mean; it excludes 0 exactly when p ≤ 0.05; unbounded below 6 "
            "seeds). Holm: corrected across the metrics of one localization in this table that can reach "
            "significance (Tarone; metrics whose per-seed values agree or are complements count once); sig.: "
            "Holm p ≤ 0.05; metrics at chance on the unedited model, maxima over layers and rows paired at one "
            "seed are not tested. MDD: minimum detectable difference of the exact test at this number of seeds "
            "(power 0.8, normal per-seed differences of the observed spread) at the level Holm needs whatever "
            "the other metrics show. ◊: after the relearning attack one side's model answers (nearly) regardless "
            "of the athlete at one of the seeds (see factlens compare without --unit seed).")


def _over_seeds(table) -> bool:
    """A table of ``compare`` / ``equivalence`` with ``unit="seed"`` (its legend describes the seeds' test)."""
    return "test_unit" in table and bool((table["test_unit"] == "seed").any())


def md_escape(x: Any) -> str:
    """``x`` as text for a markdown table cell: a ``|`` in a name (a plugin's localization ``a|b``) split
    the row into one more column and moved every number after it under the wrong header."""
    return str(x).replace("|", "\\|")


def compare_text(table, *, reference: str) -> str:
    """The :func:`factlens.compare` table as markdown (for the terminal and docs)."""
    if table.empty:
        return f"No metric with per-fact values to compare against {reference!r}.\n"
    out = ["| " + " | ".join(_HEAD) + " |", "|---|---|" + "---:|" * (len(_HEAD) - 2)]
    out += ["| " + " | ".join(md_escape(c) for c in _cells(r)) + " |" for r in table.to_dict("records")]
    return "\n".join(out) + "\n\n" + (_seed_legend if _over_seeds(table) else _legend)(reference) + "\n"


_EQ_HEAD = ("localization", "metric", "value", "reference", "diff [CI at Holm's first step]", "margin", "p (TOST)",
            "p (Holm)", "equivalent", "rules out beyond", "n")


def _eq_head(table) -> tuple[str, ...]:
    """The equivalence table's columns, with the report's ``verdict`` (:func:`_equivalence_tables`) where it has one."""
    return _EQ_HEAD + (("verdict",) if "verdict" in getattr(table, "columns", ()) else ())


def _eq_cells(r: dict) -> list[str]:
    diff = number_cell(r["diff"], "+.3f")
    if r["ci_low"] is not None and not (isinstance(r["ci_low"], float) and math.isnan(r["ci_low"])):
        diff += f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
    verdict = "yes" if r["equivalent"] else ("at chance" if r["at_chance"] else "no" if r["tested"] else "not tested")
    return [str(r["localization"]), str(r["metric"]), number_cell(r["value"]), number_cell(r["reference_value"]), diff,
            _mdd(r["margin"]), p_cell(r["p_tost"]), p_cell(r["p_holm"]), verdict, _mdd(r["bound"]), _n_cell(r)] + (
        [str(r["verdict"])] if "verdict" in r else [])


def _eq_legend(table, reference: str, alpha: float) -> str:
    interval = ("the interval that inverts the exact sign-flip test over the seeds, each seed's mean paired "
                "difference one unit" if _over_seeds(table) else "Newcombe's for 0/1 outcomes, with several seeds its hull with the "
                "bootstrap over seeds then facts, otherwise a paired bootstrap")
    return (f"diff = localization − {reference}, mean paired difference over the same facts, with its paired "
            f"interval at confidence 1 − 2·{alpha:g}/n_tests (n_tests: the localization's distinct tests; "
            f"{interval}). p (TOST): two one-sided tests of \"the difference is at least the "
            "margin\" (1.0 when the difference itself is); Holm: corrected across the localization's rows; "
            f"equivalent: Holm p ≤ {alpha:g}, the run rules out a difference as large as the margin. Rules out "
            "beyond: the smallest margin this run would have declared equivalent (the interval's largest "
            "absolute end). Rows at chance on the unedited model, maxima over layers and rows without a "
            "common seed are not tested and never equivalent."
            + (" Verdict: this test read together with factlens compare's paired test of the same metrics "
               "(factlens verdict): lower/higher when the difference is significant (', negligible' when also "
               "equivalent), equivalent, or undecided." if "verdict" in getattr(table, "columns", ()) else ""))


def equivalence_text(table, *, reference: str, alpha: float = 0.05) -> str:
    """The :func:`factlens.equivalence` table as markdown, with its legend."""
    head = _eq_head(table)
    out = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    out += ["| " + " | ".join(md_escape(c) for c in _eq_cells(r)) + " |" for r in table.to_dict("records")]
    return "\n".join(out) + "\n\n" + _eq_legend(table, reference, alpha) + "\n"


#: From this many seeds that a unit shares with the reference, the report adds the headline comparison
#: with the seeds as the unit (``compare(..., unit="seed")``): the fewest at which its exact test can
#: reach 0.05 at all (2 / 2**6 = 0.031).
SEED_TABLE_MIN_SEEDS = 6


def _seed_table(evals, ref: str, names: list[str]):
    """The headline comparison over seeds (:data:`SEED_TABLE_MIN_SEEDS` or more shared seeds), or ``None``."""
    from factlens.comparison import compare

    shared = [len(set(res) & set(evals[ref])) for loc, res in evals.items() if loc != ref]
    if not names or max(shared, default=0) < SEED_TABLE_MIN_SEEDS:
        return None
    return compare(evals, reference=ref, metrics=names, unit="seed")


def _tables(path, references: Sequence[str] | None) -> tuple[list[tuple[str, Any, Any, Any]], str | None]:
    """Per reference (:func:`report_references`; ``None``: the defaults): (reference, headline table,
    table of every metric, headline table over seeds or ``None``: :func:`_seed_table`), Holm within
    each; and why there are none (one unit, no reference unit)."""
    import pandas as pd

    from factlens.comparison import COMPARE_COLUMNS, NothingToCompare, compare, load_evaluations

    evals = load_evaluations(path)
    refs = report_references(list(evals), references)
    reason = no_comparison_reason(list(evals), refs)
    out = []
    for ref in refs if reason is None else ():
        try:
            full = compare(evals, reference=ref)
        except NothingToCompare:  # no metric with per-fact values (--suites mechanisms): compare_text says so
            full = pd.DataFrame(columns=list(COMPARE_COLUMNS))
        names = [m for m in HEADLINE_METRICS if m in set(full["metric"])]
        out.append((ref, compare(evals, reference=ref, metrics=names) if names else full, full,
                    _seed_table(evals, ref, names)))
    return out, reason


def _no_comparison(reason: str | None) -> str:
    return f"No comparisons: {reason}." if reason else "No comparisons."


def comparisons_markdown(path, references: Sequence[str] | None = None) -> str:
    """Markdown of the comparisons against each reference (:func:`report_references`): the headline
    metrics, then every metric in a collapsed ``<details>`` block (as the HTML report has them)."""
    tables, reason = _tables(path, references)
    parts = []
    for ref, head, full, seeds in tables:
        parts.append(f"### Against {ref}\n\n" + compare_text(head, reference=ref))
        if len(full) > len(head):
            parts.append(f"<details><summary>all {len(full)} comparisons against {ref} (Holm across all metrics of "
                         f"a localization)</summary>\n\n" + compare_text(full, reference=ref) + "\n</details>\n")
        if seeds is not None:
            parts.append(f"#### Against {ref}, seeds as the unit\n\n" + compare_text(seeds, reference=ref))
    return "\n".join(parts) if parts else _no_comparison(reason) + "\n"


def comparisons_html(path, references: Sequence[str] | None = None) -> str:
    """HTML of the comparisons against each reference: headline metrics, then every metric (collapsed);
    a reference without per-fact metrics (``--suites mechanisms``) says so, as the markdown does."""
    try:
        tables, reason = _tables(path, references)
    except (ValueError, KeyError) as e:
        return f"<p class='err'>comparison failed: {html.escape(str(e))}</p>"
    if not tables:
        return f"<p class='note'>{html.escape(_no_comparison(reason))}</p>"
    parts = []
    for ref, head, full, seeds in tables:
        parts.append(f"<h3>Against {html.escape(ref)}</h3>")
        if full.empty:
            parts.append(f"<p class='note'>{html.escape(compare_text(full, reference=ref).strip())}</p>")
            continue
        parts.append(_html_table(head) + _difference_figure(head, ref))
        parts.append(f"<details><summary>all {len(full)} comparisons against {html.escape(ref)} (Holm across all "
                     f"metrics of a localization)</summary>{_html_table(full)}</details>"
                     f"<p class='note'>{html.escape(_legend(ref))}</p>")
        if seeds is not None:
            parts.append(f"<h4>Against {html.escape(ref)}, seeds as the unit</h4>{_html_table(seeds)}"
                         f"<p class='note'>{html.escape(_seed_legend(ref))}</p>")
    return "".join(parts)


def _difference_figure(table, ref: str) -> str:
    """The forest plot (:func:`factlens.comparison_plots.difference_plot`) of the table's accuracies and
    error rates, which share one scale (a KL divergence's differences would squash them); empty without any."""
    from factlens.comparison_plots import difference_plot
    from factlens.runner.report_figures import _try_fig

    shared = table[table["metric"].astype(str).str.endswith(("_accuracy", "_error"))]
    if shared.empty:
        return ""
    return _try_fig(lambda: difference_plot(shared, reference=ref, title=f"Accuracies and error rates: difference "
                                                                          f"from {ref} (95 % intervals)"),
                    "difference plot")


def _html_table(t) -> str:
    rows = []
    for r in t.to_dict("records"):
        cells = [html.escape(c) for c in _cells(r)]
        if r["significant"]:
            cells[4] = f"<b>{cells[4]}</b>"
        rows.append((" class='chance'" if r["at_chance"] else "", cells))
    return _html_rows(_HEAD, rows)


def _html_rows(head: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    """An HTML table: ``head``, then per row its ``<tr>`` attributes and its (escaped) cells; the first two
    columns (localization, metric) left-aligned."""
    h = ["<table><tr>" + "".join(f"<th class='l'>{c}</th>" if i < 2 else f"<th>{c}</th>"
                                 for i, c in enumerate(head)) + "</tr>"]
    h += [f"<tr{attrs}>" + "".join(f"<td class='l'>{c}</td>" if i < 2 else f"<td>{c}</td>" for i, c in enumerate(cells))
          + "</tr>" for attrs, cells in rows]
    return "".join(h) + "</table>"


# ---------------------------------------------------------------------------------------------
# the equivalence section (factlens report --equivalence METRIC=MARGIN)


def _equivalence_tables(path, references: Sequence[str] | None,
                        margins: Mapping[str, float]) -> tuple[list[tuple[str, Any]], str | None]:
    """Per reference (:func:`report_references`): the :func:`factlens.equivalence` table of ``margins``
    (metric -> margin), or the reason it has no row (the reference shares none of those metrics); and
    why there is no reference at all (:func:`no_comparison_reason`)."""
    from factlens.comparison import NothingToCompare, compare, load_evaluations
    from factlens.tost import equivalence
    from factlens.verdict import combined

    evals = load_evaluations(path)
    refs = report_references(list(evals), references)
    if (reason := no_comparison_reason(list(evals), refs)) is not None:
        return [], reason
    out: list[tuple[str, Any]] = []
    for ref in refs:
        try:
            eq = equivalence(evals, reference=ref, margin=dict(margins))
        except NothingToCompare as e:
            out.append((ref, str(e)))
            continue
        # and the verdict of each row: this test with compare's of the same metrics (factlens verdict)
        verdict = combined(compare(evals, reference=ref, metrics=list(margins)), eq)
        out.append((ref, eq.merge(verdict[["localization", "suite", "metric", "verdict"]],
                                  on=["localization", "suite", "metric"], how="left")))
    return out, None


def equivalence_markdown(path, references: Sequence[str] | None = None, *, margins: Mapping[str, float]) -> str:
    """``## Equivalence``: the equivalence tests of the margins the reader fixed (``factlens report
    --equivalence maintain_accuracy=0.1``) against each reference, as :func:`equivalence_text`."""
    parts = ["## Equivalence", "", "Margins (fixed by the reader, not by factlens): "
             + ", ".join(f"{k} {v:g}" for k, v in margins.items()) + ".", ""]
    tables, reason = _equivalence_tables(path, references, margins)
    if reason is not None:
        parts.append(f"No equivalence tests: {reason}.\n")
    for ref, t in tables:
        parts.append(f"### Equivalence against {ref}\n\n"
                     + (f"No equivalence tests: {t}.\n" if isinstance(t, str) else equivalence_text(t, reference=ref)))
    return "\n".join(parts) + "\n"


def equivalence_html(path, references: Sequence[str] | None = None, *, margins: Mapping[str, float]) -> str:
    """The HTML of :func:`equivalence_markdown`: one table per reference, with its legend."""
    parts = [f"<p class='note'>Margins (fixed by the reader, not by factlens): "
             f"{html.escape(', '.join(f'{k} {v:g}' for k, v in margins.items()))}.</p>"]
    tables, reason = _equivalence_tables(path, references, margins)
    if reason is not None:
        parts.append(f"<p class='note'>No equivalence tests: {html.escape(reason)}.</p>")
    for ref, t in tables:
        parts.append(f"<h3>Equivalence against {html.escape(ref)}</h3>")
        if isinstance(t, str):
            parts.append(f"<p class='note'>No equivalence tests: {html.escape(t)}.</p>")
            continue
        rows = [("", [html.escape(c) for c in _eq_cells(r)]) for r in t.to_dict("records")]
        parts.append(_html_rows(_eq_head(t), rows) + f"<p class='note'>{html.escape(_eq_legend(t, ref, 0.05))}</p>")
    return "".join(parts)
