"""The report's variance split of several-seed runs: per localization and headline metric, how
much of the variance of its mean comes from fact sampling and how much from the training seed
(:func:`factlens.seed_variance.variance_split`).

The issue behind the statistics asks the report to give this split: it says whether more
seeds or more facts would narrow an interval, and which multi-seed intervals to read as
conservative (a small seed share) or as possibly too narrow (a large one with few seeds,
docs/statistics.md). Without it the split was reachable from Python only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from factlens.evaluation.plots import HEADLINE_METRICS

__all__ = ["variance_rows", "variance_html", "variance_markdown", "VARIANCE_LEGEND"]

#: The legend under the variance-split table (HTML and markdown).
VARIANCE_LEGEND = ("var_facts: the sampling variance of one seed's mean over its facts (mean over seeds); var_seed: "
                   "the spread of the seed means beyond it (method of moments, cut at 0); seed share = var_seed / "
                   "(var_seed + var_facts). A large seed share: more seeds narrow the interval more than more facts, "
                   "and with few seeds the interval (seeds, then facts) may be too narrow; a small one: the intervals "
                   "are conservative (docs/statistics.md).")


def variance_rows(path: str | Path) -> list[dict]:
    """The headline metrics' rows of :func:`~factlens.seed_variance.variance_split` for a run
    directory, in the order of :data:`~factlens.evaluation.plots.HEADLINE_METRICS` per
    localization; empty with fewer than two finished seeds."""
    from factlens.seed_variance import variance_split

    table = variance_split(path)
    if table.empty:
        return []
    rank = {m: i for i, m in enumerate(HEADLINE_METRICS)}
    rows = [r for r in table.to_dict("records") if r["metric"] in rank]
    order = {loc: i for i, loc in enumerate(dict.fromkeys(r["localization"] for r in rows))}
    return sorted(rows, key=lambda r: (order[r["localization"]], rank[r["metric"]]))


def _rows_or_why(path: str | Path) -> tuple[list[dict], str | None]:
    """:func:`variance_rows`, or why they could not be read: as the comparisons, the report still
    renders and says so in the section."""
    try:
        return variance_rows(path), None
    except (ValueError, KeyError) as e:
        return [], str(e)


def _cells(r: dict) -> list[str]:
    return [str(r["localization"]), str(r["metric"]), str(r["n_seeds"]), f"{r['var_facts']:.3g}",
            f"{r['var_seed']:.3g}", f"{r['seed_share']:.2f}"]


_HEAD = ["localization", "metric", "seeds", "var_facts", "var_seed", "seed share"]


def variance_html(path: str | Path, references: Sequence[str] | None = None) -> str:
    """The HTML section (heading, table, legend); ``""`` with one seed. ``references`` is unused
    (the signature of the report's comparison sections)."""
    from html import escape

    rows, failed = _rows_or_why(path)
    if failed:
        return f"<p class='err'>variance split failed: {escape(failed)}</p>"
    if not rows:
        return ""
    head = "".join(f"<th>{escape(h)}</th>" for h in _HEAD)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in _cells(r)) + "</tr>" for r in rows)
    return (f"<h3>Variance split: fact sampling and training seed</h3><table><tr>{head}</tr>{body}</table>"
            f"<p class='note'>{escape(VARIANCE_LEGEND)}</p>")


def variance_markdown(path: str | Path, references: Sequence[str] | None = None) -> str:
    """The markdown section; ``""`` with one seed."""
    from factlens.runner.report_stats import md_escape

    rows, failed = _rows_or_why(path)
    if failed:
        return f"> variance split failed: {md_escape(failed)}\n\n"
    if not rows:
        return ""
    out = ["### Variance split: fact sampling and training seed", "", "| " + " | ".join(_HEAD) + " |",
           "|---|---|---:|---:|---:|---:|"]
    out += ["| " + " | ".join(md_escape(c) for c in _cells(r)) + " |" for r in rows]
    return "\n".join(out + ["", VARIANCE_LEGEND, "", ""])
