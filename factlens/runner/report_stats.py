"""Intervals and significance marks for the run report (Table 1 and the Comparisons section).

Table 1 cells average one or several metrics (e.g. the three sports phrasings) over seeds.
A cell's 95 % interval is the metric's own (Wilson / bootstrap, see
:class:`~factlens.evaluation.result.Metric`) when the cell is one metric of one seed, and
otherwise a bootstrap over the cell's per-fact values (the mean over the cell's metrics of
each fact's value), resampling seeds and then facts; a token-weighted metric's chunks count
by their tokens there and in the test (:func:`cell_weights`). A cell is marked when it differs from
the reference localization's cell: paired sign-flip permutation test over facts on the
same per-fact values, Holm-corrected across the cells of the row (cells that are the same
test on the same per-fact values, or their complements, count once), ``p <= 0.05``; cells at
chance are never marked. The Comparisons section is :func:`factlens.compare` against each
reference unit (:func:`report_references`: FLU and random by default).
Its tables, and the choice of reference units, are in :mod:`factlens.runner.report_comparisons`
(split from here to keep this module small).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from factlens.evaluation.plots import HEADLINE_METRICS
from factlens.evaluation.result import EvalResult, Metric
from factlens.runner.report_comparisons import (DEFAULT_REFERENCES, compare_text, comparisons_html,
                                                comparisons_markdown, no_comparison_reason, report_references)
from factlens.runner.report_comparisons import md_escape  # noqa: F401 - importable from here, as before the split

__all__ = ["annotate_table1", "cell_interval", "cell_text", "params_edited", "seed_pooled", "compare_text", "comparisons_html",
           "comparisons_markdown", "run_eval", "report_references", "no_comparison_reason", "table1_legend",
           "run_metric", "TABLE1_LEGEND", "DEFAULT_REFERENCES", "HEADLINE_METRICS"]

#: Legend of Table 1's intervals (HTML and markdown).
_TABLE1_INTERVALS = ("[a, b]: 95 % confidence interval (Wilson score interval for an accuracy of one metric and seed, "
                     "and on the pooled count where every fact of every seed is 0 or 1 alike; otherwise a percentile "
                     "bootstrap over facts, resampling seeds then facts with several seeds; the "
                     "original row: the same for its baseline accuracies). ± s: a cell without per-fact values, "
                     "mean ± standard deviation over seeds (not an interval); a bare number: one seed and no interval. ")
#: Legend of Table 1's significance marks, promised only when they were computed (:func:`table1_legend`).
_TABLE1_MARKS = ("\\* the difference from {ref} is significant: paired sign-flip permutation test over facts "
                 "(exact when at most 16 facts differ or the differences take few values, e.g. 0/1 outcomes), Holm-corrected across the columns of the row that can reach "
                 "significance (columns with the same per-fact outcomes count once; Tarone), p ≤ 0.05. With "
                 "several seeds the test pools the seeds' facts: it holds for these trained edits, not for another "
                 "training seed (the interval includes the seed-to-seed variance, the test does not).")
#: Legend of the Table 1 marks (HTML and markdown), with ``{ref}`` the reference unit.
TABLE1_LEGEND = _TABLE1_INTERVALS + _TABLE1_MARKS


def table1_legend(units: Sequence[str], reference: str | None, *, unmarked: Sequence[str] = ()) -> str:
    """:data:`TABLE1_LEGEND` for ``reference``; without marks (one unit, no reference) it says why
    instead of promising marks that are not there, and so for the rows of ``unmarked``
    (:func:`seed_mismatch`), whose cells are never tested: their missing marks read as "not
    significant" while ``compare`` found differences on the common seeds."""
    reason = no_comparison_reason(units, [reference] if reference else [])
    if reason:
        return _TABLE1_INTERVALS + f"No \\* marks: {reason}."
    out = _TABLE1_INTERVALS + _TABLE1_MARKS.format(ref=reference)
    if unmarked:
        out += (f" No marks for {', '.join(unmarked)}: their finished seeds differ from {reference}'s, and a test on "
                "the common seeds would sit beside values over all of them (the Comparisons section compares them on "
                "the common seeds; finish the run for marks).")
    return out


def seed_mismatch(runs: Sequence[dict], reference: str | None) -> list[str]:
    """The units whose finished seeds are not the reference's (Table 1 tests none of their cells)."""
    seeds: dict[str, set] = {}
    for r in runs:
        seeds.setdefault(r["localization"], set()).add(r["seed"])
    if not reference or reference not in seeds:
        return []
    return [u for u, s in seeds.items() if u != reference and s != seeds[reference]]


# HEADLINE_METRICS (imported above) are the metrics shown first in the Comparisons section (the
# full table follows in a collapsed block); EvalResult.plot draws the same ones.


def run_eval(run: Mapping[str, Any]) -> EvalResult:
    """The typed evaluation of a run record.

    :func:`~factlens.runner.report.load_run_dir` has already read it into an
    :class:`~factlens.evaluation.result.EvalResult`; a record read straight from its JSON file
    (``"eval"`` still a dict) is read here. A record without an evaluation gives an empty result.
    """
    ev = run.get("eval")
    if isinstance(ev, EvalResult):
        return ev
    return EvalResult.from_dict(ev) if ev else EvalResult({})


def params_edited(runs: Sequence[dict], fmt) -> dict[str, str]:
    """Per unit, the parameters its edits trained: one number, or ``lo–hi`` when seeds differ.

    Each seed localizes on its own facts, so masks (and their sizes) can differ between seeds;
    the table used to show the last seed's count only.
    """
    counts: dict[str, list[int]] = {}
    for r in runs:
        counts.setdefault(r["localization"], []).append(int(r["n_params"]))
    return {u: fmt(min(c)) if min(c) == max(c) else f"{fmt(min(c))}–{fmt(max(c))}" for u, c in counts.items()}


def unequal_budget_note(runs: Sequence[dict]) -> str | None:
    """A warning for the comparisons when the budgeted localizations had a budget of their own
    (``--param-budget``) beside FLU, whose mask keeps its size: then "against flu" is not at an
    equal budget, which nothing in the tables said. ``None`` when the budgets are FLU's."""
    flu = {r["seed"]: int(r["n_params"]) for r in runs if r["localization"] == "flu"}
    own = sorted({(r["seed"], r["param_budget"]) for r in runs
                  if r.get("budgeted") and r.get("budget_source") == "config" and r["seed"] in flu
                  and r["param_budget"] != flu[r["seed"]]})
    if not own:
        return None
    sizes = "; ".join(f"seed {s}: flu {flu[s]:,} parameters, the budgeted localizations {b:,}" for s, b in own)
    return (f"Unequal budgets ({sizes}): the budget was set with --param-budget, and flu keeps its own size, so "
            "differences from flu mix the localization with the number of parameters edited. Rerun without "
            "--param-budget for an equal budget.")


def seed_pooled(results: Sequence[EvalResult]) -> EvalResult:
    """One result per localization for the report's plots: every metric's mean over the seeds.

    One seed: the result itself. Several: each metric's ``value`` (and ``baseline``) is the
    mean over the seeds that have it, with the interval Table 1 uses (a hierarchical
    bootstrap, seeds then units, token-weighted where the metric is), flagged at chance when
    any seed is; per-unit samples are left out, and ``extra`` (probe curves) is the first
    seed's; ``n`` counts the units of every seed. The plots used to draw the first seed alone
    beside Table 1's means. A maximum over
    layers (:attr:`~factlens.evaluation.result.Metric.selected`) gets no interval over seeds:
    a valid one needs each seed's per-layer counts, which are not kept.
    """
    from dataclasses import replace as _replace

    from factlens.comparison import declared_continuous
    from factlens.evaluation.result import SuiteResult
    from factlens.stats import identical_binary, mean_interval

    if len(results) == 1:
        return results[0]
    suites = {}
    # every suite and metric of any seed, in first-seen order (those the first seed lacked vanished from the plots)
    names = list(dict.fromkeys(s for r in results for s in r.suites))
    for name in names:
        first = next(r.suites[name] for r in results if name in r.suites)
        metrics = []
        templates = {}
        for r in results:
            for m in (r.suites[name].metrics if name in r.suites else ()):
                templates.setdefault(m.name, m)
        for m0 in templates.values():
            ms = [m for m in (r.suites[name].get(m0.name) if name in r.suites else None for r in results) if m]
            vals = [m.value for m in ms if m.value is not None and not math.isnan(m.value)]
            base = [m.baseline for m in ms if m.baseline is not None and not math.isnan(m.baseline)]
            groups = [[v for v in m.samples.values() if v is not None] for m in ms if m.samples]
            ws = [[(m.weights or {}).get(k, 1.0) for k, v in m.samples.items() if v is not None] for m in ms if m.samples]
            weighted = any(m.weights is not None for m in ms)
            proportion = not any(declared_continuous(m) for m in ms)  # a -1 ... 1 recovery is no count of ones
            # a maximum over layers has no pooled interval: a bootstrap of each seed's facts at its chosen layer
            # ignores the choice (it covered the true best 1 time in 3 where one seed's "wilson-max" covers 99 %)
            ci = (mean_interval(groups, weights=ws if weighted else None, proportion=proportion)
                  if len(groups) == len(ms) > 1 and all(groups) and not any(m.selected for m in ms) else None)
            method = (next((m.ci_method for m in ms if m.selected), None) if not ci  # still marked a maximum
                      else "wilson" if not weighted and proportion and identical_binary(groups) else "bootstrap")
            metrics.append(_replace(m0, value=float(np.mean(vals)) if vals else float("nan"),
                                    baseline=float(np.mean(base)) if base else None,
                                    at_chance=any(m.at_chance for m in ms), stderr=None,
                                    n=sum(int(m.n or 0) for m in ms),  # the units of all seeds (hover: n=96, not 32)
                                    ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None,
                                    ci_method=method, samples=None, weights=None))
        suites[name] = SuiteResult(name, tuple(metrics), (), _pooled_extra([r.suites[name] for r in results
                                                                            if name in r.suites]), first.seconds)
    return EvalResult(suites)


def _pooled_extra(suites: Sequence[Any]) -> dict[str, Any]:
    """The first seed's ``extra``, with ``maintain_collapse`` collapsed when any seed's attack collapsed
    its model, as ``compare`` marks a unit ◊ for any paired seed (the plots read the first seed's alone
    and missed a collapse at seed 1). ``n_seeds_collapsed`` / ``n_seeds`` say how many."""
    extra = suites[0].extra or {}
    from factlens.evaluation.relearning_collapse import collapsed

    hit = [collapsed(s) for s in suites]
    if not any(hit) or hit[0]:
        return extra
    return {**extra, "maintain_collapse": {"collapsed": True, "n_seeds_collapsed": sum(hit), "n_seeds": len(hit)}}


def _first_per_seed(runs: Sequence[dict], suite: str, names: Sequence[str]) -> list[dict]:
    """The first run of each seed that has one of ``names`` in ``suite`` (the unedited model's cell
    took the first run of each seed, which may lack it: a mean over two seeds beside one seed's interval)."""
    firsts: dict[Any, dict] = {}
    for r in runs:
        if any(run_metric(r, suite, n) is not None for n in names):
            firsts.setdefault(r["seed"], r)
    return list(firsts.values())


def run_metric(run: Mapping[str, Any], suite: str, name: str) -> Metric | None:
    """The metric ``name`` of ``suite`` in a run record, or ``None`` when the run has none."""
    s = run_eval(run).suites.get(suite)
    return None if s is None else s.get(name)


def cell_names(runs: Sequence[Mapping[str, Any]], suite: str, names: Sequence[str]) -> tuple[str, ...]:
    """The metrics a cell of several (the phrasings) averages: those at chance in no run of
    ``runs``, or all of them where each is at chance in some run.

    A format flagged at one seed is left out at every seed, as :func:`factlens.compare` leaves
    it untested over seeds: dropped per run, the three-seed main job's Phrasings cells averaged
    three phrasings at two seeds and two at the third, a mean of neither."""
    flagged = {n for r in runs for n in names if (m := run_metric(r, suite, n)) is not None and m.at_chance}
    return tuple(n for n in names if n not in flagged) or tuple(names)


def _cell_metrics(run: Mapping[str, Any], suite: str, names: Sequence[str]) -> list[Metric]:
    """The metrics of one run among ``names`` (chosen for the cell's runs by :func:`cell_names`)."""
    return [m for m in (run_metric(run, suite, n) for n in names) if m is not None]


def cell_samples(runs: Sequence[dict], suite: str, names: Sequence[str], transform: str | None) -> dict[Any, dict]:
    """``{seed: {unit id: value}}``: per fact, the mean over the cell's metrics (after ``transform``)."""
    out: dict[Any, dict] = {}
    for r in runs:
        acc: dict[str, list[float]] = {}
        for m in _cell_metrics(r, suite, names):
            for k, v in (m.samples or {}).items():
                if v is not None and not math.isnan(v):
                    acc.setdefault(k, []).append(1.0 - v if transform == "one_minus" else v)
        if acc:
            out[r["seed"]] = {k: float(np.mean(v)) for k, v in acc.items()}
    return out


def cell_weights(runs: Sequence[dict], suite: str, names: Sequence[str]) -> dict[Any, dict]:
    """``{seed: {unit id: weight}}`` of the cell's weighted units (see :func:`cell_samples`).

    A unit's weight is the metric's own (tokens per text chunk for the token-weighted
    side-effect metrics, :attr:`~factlens.evaluation.result.Metric.weights`), averaged over
    the cell's metrics that weight it; units of unweighted metrics are absent (weight 1).
    The cell's mean over its units with these weights is then the value the metric reports.
    """
    out: dict[Any, dict] = {}
    for r in runs:
        acc: dict[str, list[float]] = {}
        for m in _cell_metrics(r, suite, names):
            for k, v in (m.samples or {}).items():
                if m.weights is not None and v is not None and not math.isnan(v):
                    acc.setdefault(k, []).append(float(m.weights[k]))
        out[r["seed"]] = {k: float(np.mean(w)) for k, w in acc.items()}
    return out


def _own_ci(runs: Sequence[dict], suite: str, names: Sequence[str],
            transform: str | None) -> tuple[float, float] | None:
    """The metric's own interval when a cell is one metric of one seed."""
    if len(runs) != 1:
        return None
    ms = _cell_metrics(runs[0], suite, names)
    if len(ms) != 1 or ms[0].ci_low is None or ms[0].ci_high is None:
        return None
    lo, hi = ms[0].ci_low, ms[0].ci_high
    return (1.0 - hi, 1.0 - lo) if transform == "one_minus" else (lo, hi)


def _baseline_ci(runs: Sequence[dict], suite: str, names: Sequence[str],
                 transform: str | None) -> tuple[float, float] | None:
    """The original row's interval (``runs``: one per seed) of a one-metric cell of 0/1 outcomes.

    One seed: the Wilson interval of the baseline accuracy ``k / n``. Several: the
    hierarchical bootstrap (seeds, then facts) of the seeds' baseline outcomes, ``k`` ones
    and ``n - k`` zeros each (a mean of 0/1 values depends on the counts only; the baseline
    keeps no per-fact values). ``None`` for cells of several metrics or non-0/1 metrics.
    """
    from factlens.stats import mean_interval, wilson_interval

    counts = []
    for r in runs:
        ms = _cell_metrics(r, suite, names)
        if len(ms) > 1:
            return None
        if not ms:
            continue
        b, n = ms[0].baseline, ms[0].n
        # a "wilson" metric whose baseline lies outside [0, 1] is a difference that happened to be 0/1 in the
        # edited model (a recovery, after - before; folders written before proportion=False): no count of ones
        if b is None or not n or ms[0].ci_method != "wilson" or math.isnan(b) or not 0.0 <= b <= 1.0:
            return None
        counts.append((int(round(b * n)), int(n)))
    if not counts:
        return None
    ci = (wilson_interval(*counts[0]) if len(counts) == 1
          else mean_interval([[1.0] * k + [0.0] * (n - k) for k, n in counts]))
    if ci is None:
        return None
    lo, hi = ci
    return (1.0 - hi, 1.0 - lo) if transform == "one_minus" else (lo, hi)


def _cell_ci(runs: Sequence[dict], col: tuple, baseline: bool) -> tuple[float, float] | None:
    from factlens.stats import mean_interval

    _, _, suite, names, transform = col
    names = cell_names(runs, suite, names)
    if baseline:
        return _baseline_ci(runs, suite, names, transform)
    own = _own_ci(runs, suite, names, transform)
    if own is not None:
        return own
    if any(m.selected for r in runs for m in _cell_metrics(r, suite, names)):
        return None  # a maximum over layers of several seeds: see seed_pooled
    vals, ws = cell_samples(runs, suite, names, transform), cell_weights(runs, suite, names)
    if len(vals) < len({r["seed"] for r in runs if _cell_metrics(r, suite, names)}):
        return None  # a seed without per-fact values (an older run file) is in the mean, so not in an interval
    groups = [list(v.values()) for v in vals.values()]
    weights = [[ws[seed].get(k, 1.0) for k in v] for seed, v in vals.items()]
    weighted = any(ws.values())  # unweighted cells: plain means, as before weights were kept
    from factlens.comparison import declared_continuous

    proportion = not any(declared_continuous(m) for r in runs for m in _cell_metrics(r, suite, names))
    return mean_interval(groups, weights=weights if weighted else None, proportion=proportion) if groups else None


def cell_interval(runs: Sequence[dict], suite: str, metric: str, *, baseline: bool) -> tuple[float, float] | None:
    """The 95 % interval of one metric's cell (``runs``: one localization's runs, or the first run
    of each seed for the unedited model), as Table 1's cells have it."""
    return _cell_ci(runs, ("", "", suite, (metric,), None), baseline)


def _cell_test(runs: Sequence[dict], ref_runs: Sequence[dict], col: tuple) -> tuple[float, Any, float]:
    """Sign-flip p-value of a cell against the reference's cell on the same (seed, fact) units,
    the test's :func:`~factlens.stats.paired_test_key` (cells that are one test count once in Holm)
    and its smallest attainable p-value (Tarone's selection, :func:`~factlens.stats.tarone_holm`)."""
    from factlens.stats import paired_test_key, sign_flip_test, smallest_attainable_p

    _, _, suite, names, transform = col
    names = cell_names([*runs, *ref_runs], suite, names)  # one set of formats on both sides
    a, b = cell_samples(runs, suite, names, transform), cell_samples(ref_runs, suite, names, transform)
    wa, wb = cell_weights(runs, suite, names), cell_weights(ref_runs, suite, names)
    x, y, w, units = [], [], [], []
    seeds = [s for s in a if s in b]
    # as factlens.compare refuses: a mark from a test on the shared facts (or seeds: a seed one side has not
    # finished) would sit beside a value over all of them
    if set(a) != set(b) or any(set(a[s]) != set(b[s]) for s in seeds):
        return float("nan"), None, float("nan")
    for s in seeds:
        ids = list(a[s])
        units += [(s, k) for k in ids]
        x += [a[s][k] for k in ids]
        y += [b[s][k] for k in ids]
        uw = np.array([_pair_weight(wa[s].get(k), wb[s].get(k), k, suite, names) for k in ids])
        w += list(uw / uw.sum())  # each seed counts once, its units by their weights (tokens per chunk)
    if not x:
        return float("nan"), None, float("nan")
    d = np.subtract(x, y)
    return sign_flip_test(d, weights=w), paired_test_key(x, y, w, ids=units), smallest_attainable_p(d, weights=w)


def _pair_weight(a: float | None, b: float | None, unit: str, suite: str, names: Sequence[str]) -> float:
    """A paired unit's weight: its own, which both sides share (the rule of ``comparison._pair_weights``)."""
    if a is not None and b is not None and not math.isclose(a, b, rel_tol=1e-9):
        raise ValueError(f"Table 1, {suite}.{'/'.join(names)}: the localization and the reference weight {unit} "
                         f"differently ({a:g} vs {b:g}); a weighted paired test needs the same units with the same "
                         "weights (one model and text settings)")
    return next((x for x in (a, b) if x is not None), 1.0)


def annotate_table1(runs: Sequence[dict], cols: Sequence[tuple], rows: list[dict], *, reference: str = "flu") -> bool:
    """Add ``ci_low``/``ci_high`` and ``significant`` to the cells of :func:`table1_rows` (in place).

    Returns:
        Whether significance marks were computed (``reference`` is among the localizations).
    """
    from factlens.stats import tarone_holm

    by_loc: dict[str, list[dict]] = {}
    for r in runs:
        by_loc.setdefault(r["localization"], []).append(r)
    marked = reference in by_loc
    for row in rows:
        base = row["name"] == "original"
        sub = by_loc.get(row["name"], [])
        ps: list[tuple[int, float, Any, float]] = []
        for j, (col, cell) in enumerate(zip(cols, row["cells"])):
            if cell is None:
                continue
            if base:  # the unedited model: the first run of each seed that has the column (as its value's)
                sub = _first_per_seed(runs, col[2], col[3])
            ci = _cell_ci(sub, col, base)
            cell["ci_low"], cell["ci_high"] = ci if ci else (None, None)
            cell["significant"] = False
            if marked and not base and row["name"] != reference and not cell.get("at_chance"):
                p, key, smallest = _cell_test(sub, by_loc[reference], col)
                if not math.isnan(p):
                    ps.append((j, p, key, smallest))
        res = tarone_holm([t[1] for t in ps], [t[3] for t in ps], same=[t[2] for t in ps])
        for (j, *_), p, t in zip(ps, res.adjusted, res.testable):
            row["cells"][j]["significant"] = bool(t and p <= 0.05)
    return marked


def cell_text(cell: dict | None) -> str:
    """``value [ci_low, ci_high]`` (plus ``*`` when significant, `` ± sd`` over seeds without CI)."""
    if cell is None or cell.get("mean") is None or math.isnan(cell["mean"]):
        return "–"
    s = f"{cell['mean']:.3f}"
    if cell.get("ci_low") is not None and cell.get("ci_high") is not None:
        s += f" [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}]"
    elif cell.get("std") is not None:
        s += f" ± {cell['std']:.3f}"
    if cell.get("significant"):
        s += " *"
    return s
