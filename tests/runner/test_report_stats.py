"""factlens.runner.report_stats: Table 1's intervals and significance marks (synthetic results)."""

from __future__ import annotations

import numpy as np
import pytest

from factlens.evaluation.result import EvalResult, Metric, SuiteResult
from factlens.runner.report import table1_rows

_TOKENS = np.array([10.0] * 7 + [500.0])  # one long chunk, as in real text


def _token_run(localization: str, seed: int, values) -> dict:
    """A run record whose side-effects result is built as side_effects._token_metric builds it."""
    ids = [f"chunk:{i}" for i in range(len(values))]
    m = Metric.from_samples("next_token_accuracy", dict(zip(ids, map(float, values))), unit="tokens",
                            weights=dict(zip(ids, _TOKENS)))
    return {"localization": localization, "seed": seed,
            "eval": EvalResult({"side_effects": SuiteResult("side_effects", (m,))})}


def _cell(rows: list[dict], name: str, j: int = 0) -> dict:
    return rows[[r["name"] for r in rows].index(name)]["cells"][j]


def test_token_weighted_cells_over_seeds_contain_their_value():
    """The Text-acc cell's interval over two seeds was the plain chunk mean's: [0.50, 0.63]
    around a token-weighted 0.856."""
    loc, ref = np.array([0.5] * 7 + [0.9]), np.array([0.6] * 8)
    runs = [_token_run(name, s, v + 0.01 * s) for s in (0, 1) for name, v in (("flu", ref), ("random", loc))]
    _, rows = table1_rows(runs)
    cell = _cell(rows, "random")
    assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"]


def test_table1_cells_on_different_facts_are_separate_tests():
    """Audit repro_3: Table 1's row family merged the Edit (forget facts) and Maintain
    (maintain facts) cells when their 0/1 patterns coincided, and marked all four cells;
    over the four distinct tests none is significant."""
    from factlens.stats import sign_flip_test, smallest_attainable_p, tarone_holm

    forget, maintain = [f"forget{i}" for i in range(8)], [f"maintain{i}" for i in range(8)]
    facts = [f"f{i}" for i in range(16)]
    moved, kept = [0.0] * 7 + [1.0], [1.0] * 8
    c = ([0.52, 0.66, 0.59, 0.62, 0.42, 0.52, 0.71, 0.85, 0.3, 0.85, 0.82, 0.71, 0.6, 0.49, 0.84, 0.94],
         [0.81, 0.71, 0.52, 0.21, 0.45, 0.58, 0.19, 0.53, 0.54, 0.59, 0.21, 0.32, 0.36, 0.22, 0.8, 0.35])
    d = ([0.58, 0.65, 0.58, 0.42, 0.53, 0.61, 0.5, 0.48, 0.8, 0.36, 0.48, 0.14, 0.66, 0.72, 0.66, 0.73],
         [0.54, 0.52, 0.54, 0.4, 0.69, 0.38, 0.16, 0.62, 0.82, 0.26, 0.43, 0.31, 0.37, 0.46, 0.2, 0.39])

    def run(name: str, i: int) -> dict:
        a = (moved, kept)[i]
        std = SuiteResult("standard", (Metric.from_samples("edit_accuracy", dict(zip(forget, a))),
                                       Metric.from_samples("maintain_accuracy", dict(zip(maintain, a)))))
        fmt = SuiteResult("formats", (Metric.from_samples("mcq_forget_error", dict(zip(facts, c[i]))),
                                      Metric.from_samples("mcq_edit_accuracy", dict(zip(facts, d[i])))))
        return {"localization": name, "seed": 0, "eval": EvalResult({"standard": std, "formats": fmt})}

    cols, rows = table1_rows([run("flu", 1), run("random", 0)])
    marks = [cell["significant"] for cell in rows[[r["name"] for r in rows].index("random")]["cells"]]
    assert [c[3][0] for c in cols] == ["edit_accuracy", "maintain_accuracy", "mcq_forget_error", "mcq_edit_accuracy"]
    diffs = [np.subtract(moved, kept)] * 2 + [np.subtract(*x) for x in (c, d)]
    res = tarone_holm([sign_flip_test(x) for x in diffs], [smallest_attainable_p(x) for x in diffs])
    expect = [bool(t and a < 0.05) for a, t in zip(res.adjusted, res.testable)]  # four distinct tests
    assert marks == expect == [False] * 4


def test_original_row_has_an_interval_with_several_seeds():
    """The unedited model's row had the Wilson interval of its baseline with one seed and
    none with two (audit check9.py); now the seeds-then-facts bootstrap of its outcomes."""
    from factlens.stats import hierarchical_bootstrap_interval, wilson_interval

    ids = [f"f{i}" for i in range(16)]

    def run(loc: str, seed: int, base: float) -> dict:
        m = Metric.from_samples("forget_accuracy", dict(zip(ids, [0.0] * 8 + [1.0] * 8)), baseline=base)
        return {"localization": loc, "seed": seed, "eval": EvalResult({"standard": SuiteResult("standard", (m,))})}

    _, rows = table1_rows([run(loc, 0, 0.875) for loc in ("flu", "random")])
    one = _cell(rows, "original")  # Forget = 1 - accuracy: 2 of 16 forgotten
    lo, hi = wilson_interval(14, 16)
    assert (one["ci_low"], one["ci_high"]) == (pytest.approx(1 - hi), pytest.approx(1 - lo))
    _, rows = table1_rows([run(loc, s, b) for s, b in ((0, 0.875), (1, 0.75)) for loc in ("flu", "random")])
    two = _cell(rows, "original")
    lo, hi = hierarchical_bootstrap_interval([[1.0] * 14 + [0.0] * 2, [1.0] * 12 + [0.0] * 4])
    assert (two["ci_low"], two["ci_high"]) == (pytest.approx(1 - hi), pytest.approx(1 - lo))
    assert two["mean"] == pytest.approx(0.1875) and two["ci_low"] <= two["mean"] <= two["ci_high"]


def test_params_edited_show_every_seeds_count():
    """Seeds localize on their own facts, so a mask's size can differ by seed: the table showed the
    last seed's count alone."""
    from factlens.runner.report_stats import params_edited

    runs = [{"localization": "flu", "n_params": 12448}, {"localization": "flu", "n_params": 12384},
            {"localization": "random", "n_params": 500}, {"localization": "random", "n_params": 500}]
    assert params_edited(runs, lambda n: f"{n:,}") == {"flu": "12,384–12,448", "random": "500"}


def test_plots_pool_the_seeds_as_table1_does():
    """The report's plots drew the first seed alone beside Table 1's means over seeds."""
    from factlens.evaluation.result import EvalResult, Metric, SuiteResult
    from factlens.runner.report_stats import seed_pooled

    def ev(vals, base):
        m = Metric.from_samples("relearn_forget_accuracy", {f"f{i}": float(v) for i, v in enumerate(vals)},
                                baseline=base, higher_is_better=False)
        return EvalResult({"relearning": SuiteResult("relearning", (m,), extra={"note": len(vals)})})

    one, two = ev([1] * 8 + [1] * 8, 1.0), ev([0] * 8 + [1] * 8, 0.5)
    assert seed_pooled([one]) is one
    m = seed_pooled([one, two])["relearning"]["relearn_forget_accuracy"]
    assert m.value == 0.75 and m.baseline == 0.75 and not m.higher_is_better
    assert m.ci_low < 0.75 < m.ci_high and m.ci_method == "bootstrap" and m.samples is None
    assert seed_pooled([one, two])["relearning"].extra == {"note": 16}


def test_intervals_are_printed_to_the_precision_of_their_values():
    """Cells and diffs printed ``0.031 [0.01, 0.16]``: the value to three places, its interval to
    two (a lower end of 0.0056 showed as 0.01, an interval that seemed to miss half its width)."""
    from factlens.runner.report_comparisons import _cells
    from factlens.runner.report_stats import cell_text

    assert cell_text({"mean": 0.03125, "ci_low": 0.0056, "ci_high": 0.1571}) == "0.031 [0.006, 0.157]"
    row = {"localization": "a", "metric": "m", "value": 0.5, "reference_value": 0.4, "diff": 0.1,
           "ci_low": -0.0049, "ci_high": 0.2049, "p_value": 0.2, "p_holm": 0.4, "significant": False,
           "at_chance": False, "n_facts": 16, "unit": "facts", "n_seeds": 1, "mdd": 0.3}
    assert _cells(row)[4] == "+0.100 [-0.005, +0.205]"


def test_all_metrics_n_is_every_runs_not_the_first_localizations():
    """The "All metrics" n column showed the first localization's first seed's n (16 facts) for a
    metric another localization measured on 12: now the range over every (localization, seed)."""
    from factlens.runner.report import metric_matrix

    def run(loc, n):
        m = Metric.from_samples("edit_accuracy", {f"f{i}": 1.0 for i in range(n)})
        return {"localization": loc, "seed": 0, "eval": EvalResult({"standard": SuiteResult("standard", (m,))})}

    _, rows = metric_matrix([run("flu", 16), run("rome", 12)])
    assert rows[0]["n"] == "12–16 facts"
    _, rows = metric_matrix([run("flu", 16), run("rome", 16)])
    assert rows[0]["n"] == "16 facts"


def test_all_metrics_give_each_localization_its_own_unedited_value_where_it_depends_on_the_mask():
    """The lens suites read the unedited model at each mask's layers; the "original" column showed
    the first localization's baseline (FLU's 0.958) beside causal tracing's edit, whose own is 0.833."""
    from factlens.runner.report import _fmt, metric_matrix
    from factlens.runner.report_markdown import all_metrics_markdown

    def run(loc, seed, base):
        outs = {f"f{i}": float(i % 4 == 0) for i in range(16)}
        lens = Metric.from_samples("logit_lens_forget_accuracy", outs, baseline=base)
        std = Metric.from_samples("forget_accuracy", outs, baseline=0.9 + 0.01 * seed)
        return {"localization": loc, "seed": seed, "eval": EvalResult(
            {"logit_lens": SuiteResult("logit_lens", (lens,)), "standard": SuiteResult("standard", (std,))})}

    runs = [run("flu", s, 0.958) for s in (0, 1)] + [run("causal_tracing", s, 0.833) for s in (0, 1)]
    locs, rows = metric_matrix(runs)
    lens, std = (next(r for r in rows if r["metric"] == m) for m in ("logit_lens_forget_accuracy", "forget_accuracy"))
    assert _fmt(lens["original"])[0] == "per localization"
    assert [round(c["own_baseline"], 3) for c in lens["cells"]] == [0.958, 0.833]
    assert "(unedited 0.833)" in _fmt(lens["cells"][locs.index("causal_tracing")])[0]
    # one unedited value per seed: the column keeps it, and the cells carry none
    assert std["original"]["mean"] == pytest.approx(0.905) and all("own_baseline" not in c for c in std["cells"])
    assert "| logit_lens_forget_accuracy | per localization |" in all_metrics_markdown(runs)


def _probe_max(seed: int, rng: np.random.Generator) -> EvalResult:
    """A probe's best-of-12-layers accuracy on 16 facts (true accuracy 0.6 at every layer), as
    probes.py reports it: the facts' outcomes at the chosen layer and the ``wilson-max`` interval."""
    from dataclasses import replace

    from factlens.stats import max_wilson_interval

    hits = (rng.uniform(size=(16, 12)) < 0.6).astype(float)
    best = int(np.argmax(hits.mean(0)))
    m = Metric.from_samples("probe_true_accuracy_max", {f"f{i}": hits[i, best] for i in range(16)}, baseline=0.9)
    lo, hi = max_wilson_interval(hits.sum(0), 16)
    return EvalResult({"probes": SuiteResult("probes", (replace(m, ci_low=lo, ci_high=hi, ci_method="wilson-max"),))})


def test_a_maximum_over_layers_gets_no_interval_over_seeds():
    """With one seed a best-layer accuracy keeps its wilson-max interval; with two, Table 1, the
    "All metrics" table, compare and the plots bootstrapped the facts at each seed's chosen layer,
    which ignores the choice: over 300 draws such intervals held the true best (0.6) 1 time in 3."""
    from factlens.comparison import compare
    from factlens.runner.report_stats import cell_interval, seed_pooled

    rng = np.random.default_rng(1)
    evs = {loc: [_probe_max(s, rng) for s in (0, 1)] for loc in ("flu", "random")}
    runs = [{"localization": loc, "seed": s, "eval": e} for loc, es in evs.items() for s, e in enumerate(es)]
    one = evs["random"][0]["probes"]["probe_true_accuracy_max"]
    assert cell_interval(runs[2:3], "probes", "probe_true_accuracy_max", baseline=False) == (one.ci_low, one.ci_high)
    assert cell_interval(runs[2:], "probes", "probe_true_accuracy_max", baseline=False) is None
    pooled = seed_pooled(evs["random"])["probes"]["probe_true_accuracy_max"]
    assert pooled.ci_low is None and pooled.selected  # still marked a maximum
    row = compare(evs, reference="flu").set_index("localization").loc["random"]
    assert row["value_ci_low"] is None or np.isnan(row["value_ci_low"])
    assert compare({k: v[:1] for k, v in evs.items()}).set_index("localization").loc["random", "value_ci_low"] == one.ci_low


def test_pooled_plots_read_a_difference_metric_as_no_proportion():
    """A selective recovery (-1 ... 1) of zeros on every fact of two seeds: Table 1 gave [0, 0], the
    plots' pooled metric the Wilson interval of 0 ones in 32, [0, 0.107]."""
    from factlens.runner.report_stats import cell_interval, seed_pooled

    def ev() -> EvalResult:
        m = Metric.from_samples("relearn_selective_recovery", {f"f{i}": 0.0 for i in range(16)}, proportion=False,
                                higher_is_better=False)
        return EvalResult({"relearning": SuiteResult("relearning", (m,))})

    evs = [ev(), ev()]
    pooled = seed_pooled(evs)["relearning"]["relearn_selective_recovery"]
    runs = [{"localization": "a", "seed": s, "eval": e} for s, e in enumerate(evs)]
    assert (pooled.ci_low, pooled.ci_high) == cell_interval(runs, "relearning", "relearn_selective_recovery",
                                                            baseline=False) == (0.0, 0.0)
    assert pooled.ci_method == "bootstrap"


def test_table1_marks_no_test_on_facts_the_reference_lacks():
    """The localization's cell holds 16 facts, the reference's 8: the significance mark came from a
    test on the 8 shared facts beside a value over 16 (factlens.compare refuses such folders)."""
    from factlens.runner.report_stats import _cell_test

    ids = [f"f{i}" for i in range(16)]

    def run(loc: str, outcomes: dict) -> dict:
        m = Metric.from_samples("forget_accuracy", outcomes)
        return {"localization": loc, "seed": 0, "eval": EvalResult({"standard": SuiteResult("standard", (m,))})}

    col = ("Standard", "Forget", "standard", ("forget_accuracy",), "one_minus")
    p, key, _ = _cell_test([run("a", {k: 0.0 for k in ids})], [run("flu", {k: 1.0 for k in ids[:8]})], col)
    assert np.isnan(p) and key is None
    p, _, _ = _cell_test([run("a", {k: 0.0 for k in ids})], [run("flu", {k: 1.0 for k in ids})], col)
    assert p < 0.001  # the same facts on both sides: tested


def test_table1_marks_no_test_on_seeds_one_side_lacks():
    """The reference finished seed 0 only, the localization seeds 0 and 1: the mark came from a test on seed
    0 beside the localization's mean over both seeds (the same report's comparisons showed seed 0's value)."""
    from factlens.runner.report_stats import _cell_test

    ids = [f"f{i}" for i in range(16)]

    def run(loc: str, seed: int, outcomes: dict) -> dict:
        m = Metric.from_samples("forget_accuracy", outcomes)
        return {"localization": loc, "seed": seed, "eval": EvalResult({"standard": SuiteResult("standard", (m,))})}

    col = ("Standard", "Forget", "standard", ("forget_accuracy",), "one_minus")
    two = [run("a", 0, {k: 0.0 for k in ids}), run("a", 1, {k: 1.0 for k in ids})]
    for loc, ref in ((two, [run("flu", 0, {k: 1.0 for k in ids})]), ([two[0]], [run("flu", s, {k: 1.0 for k in ids})
                                                                            for s in (0, 1)])):
        p, key, _ = _cell_test(loc, ref, col)
        assert np.isnan(p) and key is None
    p, _, _ = _cell_test(two, [run("flu", s, {k: 1.0 for k in ids}) for s in (0, 1)], col)
    assert p < 0.001  # the same seeds on both sides: tested


def test_the_comparison_legend_names_newcombes_interval_for_0_1_outcomes():
    """The printed legend said every difference interval was a paired bootstrap; 0/1 differences use
    Newcombe's score interval (factlens.stats.paired_diff), as docs/statistics.md says."""
    from factlens.runner.report_comparisons import _legend

    text = _legend("flu")
    assert "Newcombe" in text and "otherwise a paired bootstrap" in text


def test_cells_over_fewer_seeds_say_how_many():
    """With one unit unfinished at seeds 1 and 2, Table 1 put causal tracing's seed-0 value beside
    FLU's mean over three seeds under "means over seeds", with nothing to show it."""
    from factlens.runner.report import _fmt, metric_matrix

    def run(loc, seed):
        m = Metric.from_samples("maintain_accuracy", {f"f{i}": float(i % 3 > 0) for i in range(16)}, baseline=0.9)
        return {"localization": loc, "seed": seed, "eval": EvalResult({"standard": SuiteResult("standard", (m,))})}

    runs = [run("flu", s) for s in (0, 1, 2)] + [run("causal_tracing", 0)]
    _, rows = table1_rows(runs)
    texts = [_fmt(row["cells"][0])[0] for row in rows]  # original, flu, causal_tracing
    assert texts[1].endswith("(3 seeds)") and texts[2].endswith("(1 seed)")
    _, matrix = metric_matrix(runs)
    assert _fmt(matrix[0]["cells"][1])[0].endswith("(1 seed)")
    _, even = table1_rows(runs[:3] + [run("causal_tracing", s) for s in (0, 1, 2)])
    assert not any("seed" in _fmt(c)[0] for row in even for c in row["cells"])


def test_p_values_near_the_level_keep_a_fourth_place():
    from factlens.runner.report_comparisons import p_cell as _p

    assert _p(0.0504) == "0.0504" and _p(0.0496) == "0.0496" and _p(0.2314) == "0.231" and _p(0.0004) == "<0.001"


def test_number_cells_of_every_table_read_missing_and_infinite_values_alike():
    """compare, plan and verdict tables write numbers with one helper: numpy NaN (float32 too) is "–" as
    None is, infinities are signed, numpy integers format."""
    import numpy as np

    from factlens.runner.report_comparisons import number_cell, p_cell

    assert [number_cell(x) for x in (None, np.float32("nan"), float("nan"), "n/a")] == ["–"] * 4
    assert number_cell(float("inf"), ".1f") == "∞" and number_cell(-np.inf) == "−∞"
    assert number_cell(np.int64(46), ".0f") == "46" and number_cell(-0.0626, "+.3f") == "-0.063"
    assert p_cell(np.float64(0.00002)) == "<0.001" and p_cell(None) == "–"


def test_small_mdds_keep_two_significant_digits():
    """MDDs of probabilities and KL (1e-4 .. 2e-3) printed as 0.00 beside diffs of three places, which read as
    ruling out any difference (and as the symptom of two old MDD bugs)."""
    from factlens.runner.report_comparisons import _mdd

    assert [_mdd(x) for x in (0.000069, 0.000685, 0.0123, 0.27, float("nan"), float("inf"))] == \
        ["6.9e-05", "0.00068", "0.01", "0.27", "–", "∞"]


def test_a_cell_whose_seed_lacks_per_fact_values_has_no_interval_and_pooled_n_counts_every_seed():
    """A seed without per-fact values (an older run file) was in the cell's mean but not its interval:
    0.844 over three seeds with the interval of two. And the plots' pooled n was the first seed's."""
    from dataclasses import replace

    from factlens.runner.report_stats import cell_interval, seed_pooled

    def run(seed, vals, samples=True):
        m = Metric.from_samples("maintain_accuracy", {f"f{i}": float(v) for i, v in enumerate(vals)})
        if not samples:
            m = replace(m, samples=None)
        return {"localization": "random", "seed": seed, "eval": EvalResult({"standard": SuiteResult("standard", (m,))})}

    rng = np.random.default_rng(0)
    runs = [run(s, rng.integers(0, 2, 32)) for s in range(3)]
    assert cell_interval(runs, "standard", "maintain_accuracy", baseline=False) is not None
    runs[2] = run(2, rng.integers(0, 2, 32), samples=False)
    assert cell_interval(runs, "standard", "maintain_accuracy", baseline=False) is None
    pooled = seed_pooled([r["eval"] for r in runs[:2]])["standard"]["maintain_accuracy"]
    assert pooled.n == 64


def _forget_run(unit: str, values, seed: int = 0) -> dict:
    """A run record of one unit whose standard suite has a forget accuracy per fact (1 = still known)."""
    m = Metric.from_samples("forget_accuracy", {f"f{i}": float(v) for i, v in enumerate(values)}, baseline=1.0,
                            higher_is_better=False)
    return {"localization": unit, "seed": seed, "eval": EvalResult({"standard": SuiteResult("standard", (m,))})}


def test_units_of_one_objective_are_compared_with_their_flu_unit_as_compare_does():
    """Audit (run9): with ``--objectives graddiff`` (units flu+graddiff, random+graddiff) the report had no
    Comparisons ("No reference localization (flu, random)") and Table 1 no marks, though `factlens compare
    --reference flu+graddiff` compares them."""
    from factlens.comparison import compare
    from factlens.runner.report import table1_reference
    from factlens.runner.report_stats import compare_text, comparisons_markdown, report_references, table1_legend

    runs = [_forget_run("flu+graddiff", [0.0] * 16), _forget_run("random+graddiff", [1.0] * 16),
            _forget_run("all_mlps+graddiff", [0.0] * 16)]
    units = [r["localization"] for r in runs]
    assert report_references(units) == ["flu+graddiff", "random+graddiff"] and table1_reference(runs) == "flu+graddiff"
    _, rows = table1_rows(runs, reference=table1_reference(runs))
    assert _cell(rows, "random+graddiff")["significant"] and not _cell(rows, "all_mlps+graddiff")["significant"]
    assert "the difference from flu+graddiff is significant" in table1_legend(units, "flu+graddiff")
    evals = {r["localization"]: [r["eval"]] for r in runs}
    md = comparisons_markdown(evals)
    assert md.startswith("### Against flu+graddiff\n") and "### Against random+graddiff\n" in md
    assert compare_text(compare(evals, reference="flu+graddiff"), reference="flu+graddiff") in md  # as the CLI's
    assert report_references(["flu", "random", "flu+npo"]) == ["flu", "random"]  # a plain run: as before


def test_the_report_compares_over_seeds_from_six_seeds_on():
    """From 6 shared seeds (where the exact test over seeds can reach 0.05) the Comparisons section adds
    the headline table with the seeds as the unit (markdown and HTML); with 5 it does not."""
    from factlens.comparison import compare
    from factlens.runner.report_stats import compare_text, comparisons_html, comparisons_markdown

    def evals(n_seeds: int) -> dict:
        flu = [_forget_run("flu", [0.0] * (16 - s % 3) + [1.0] * (s % 3), seed=s)["eval"] for s in range(n_seeds)]
        rnd = [_forget_run("random", [1.0] * (6 + s) + [0.0] * (10 - s), seed=s)["eval"] for s in range(n_seeds)]
        return {"flu": flu, "random": rnd}

    six = evals(6)
    md = comparisons_markdown(six)
    seeds = compare(six, reference="flu", metrics=["forget_accuracy"], unit="seed")
    assert "#### Against flu, seeds as the unit\n\n" + compare_text(seeds, reference="flu") in md
    assert "#### Against random, seeds as the unit" in md and "6 seeds (≥ 16 facts each)" in md
    page = comparisons_html(six)
    assert "<h4>Against flu, seeds as the unit</h4>" in page and "Seeds are the unit" in page
    assert "seeds as the unit" not in comparisons_markdown(evals(5)) + comparisons_html(evals(5))


def test_the_reports_comparisons_draw_the_accuracies_differences_with_their_intervals():
    """The HTML Comparisons section shows each reference's headline accuracies as a forest plot (the table's
    differences and intervals, coloured by significance); the markdown stays text."""
    from factlens.comparison import compare
    from factlens.runner.report_stats import comparisons_html, comparisons_markdown

    evals = {"flu": [_forget_run("flu", [0.0] * 16)["eval"]], "random": [_forget_run("random", [1.0] * 12 + [0.0] * 4)["eval"]]}
    page = comparisons_html(evals)
    assert page.count("Accuracies and error rates: difference from") == 2  # against flu and against random
    row = compare(evals, reference="flu", metrics=["forget_accuracy"]).iloc[0]
    assert f'"x":[{row["diff"]}]' in page.replace(" ", "") and '"name":"significant"' in page.replace(" ", "")
    assert "Accuracies and error rates" not in comparisons_markdown(evals)


def test_the_report_says_why_it_compares_nothing_and_promises_no_marks_it_did_not_compute():
    """Audit (run6, run5): a run of flu alone said "No reference localization (flu, random)"; one without a
    reference unit kept Table 1's "* the difference from flu is significant" beside no mark at all."""
    from factlens.runner.report_stats import comparisons_markdown, report_references, table1_legend

    one = comparisons_markdown({"flu": [_forget_run("flu", [0.0] * 16)["eval"]]})
    assert one == "No comparisons: only one unit (flu) in this run: nothing to compare.\n"
    two = {u: [_forget_run(u, [0.0] * 16)["eval"]] for u in ("causal_tracing", "all_mlps")}
    none = comparisons_markdown(two)
    assert "no reference unit in this run" in none and "--reference UNIT with one of causal_tracing, all_mlps" in none
    legend = table1_legend(list(two), None)
    assert "the difference from" not in legend and "No \\* marks: no reference unit" in legend
    assert "No \\* marks: only one unit (flu)" in table1_legend(["flu"], "flu")
    with pytest.raises(ValueError, match="--reference 'flu' is not a unit of this run; its units are causal_tracing"):
        report_references(list(two), ["flu"])


def test_html_comparisons_without_per_fact_metrics_say_so_and_the_spider_gives_no_error():
    """Audit (run14, --suites mechanisms): the HTML showed header-only tables and "all 0 comparisons" where
    the markdown said "No metric with per-fact values"; run13/run14 showed a red "spider plot could not be
    drawn: ValueError" for a normal run."""
    from factlens.runner.report import _eval_plots
    from factlens.runner.report_stats import comparisons_html, comparisons_markdown

    def ev() -> EvalResult:
        return EvalResult({"mechanisms": SuiteResult("mechanisms", (Metric("mlp_share", 0.5, 1, unit="masks"),))})

    evals = {"flu": [ev()], "random": [ev()]}
    page, md = comparisons_html(evals), comparisons_markdown(evals)
    assert "No metric with per-fact values to compare against 'flu'" in md
    assert "No metric with per-fact values to compare against &#x27;flu&#x27;" in page
    assert "all 0 comparisons" not in page and "<table>" not in page
    spider = _eval_plots(evals)["spider"]
    assert "class='err'" not in spider and "No spider-plot metrics" in spider


def test_the_robustness_row_marks_a_metric_at_chance():
    """Audit (confirm_chance_robustness.py, run15): Table 1, All metrics and the plots flag a relearning
    metric at chance; the markdown robustness table printed it as any other value."""
    from factlens.runner.report_markdown import _robustness_row

    at, ok = (Metric.from_samples("relearn_forget_accuracy", {f"f{i}": 1.0 for i in range(8)}, at_chance=c,
                                  higher_is_better=False) for c in (True, False))
    row = lambda m: _robustness_row({"localization": "flu", "seed": 0, "mask_labels": ["L0H0"],  # noqa: E731
                                     "eval": EvalResult({"relearning": SuiteResult("relearning", (m,))})})
    assert row(at).split(" | ")[2] == "1.000 [0.676, 1.000] (n=8) †"
    assert row(ok).split(" | ")[2] == "1.000 [0.676, 1.000] (n=8)"


def test_a_phrasing_flagged_at_one_seed_is_left_out_of_the_cell_at_every_seed():
    """Table 1 left an at-chance phrasing out only at the seed that flagged it: the three-seed job's
    Phrasings cells averaged three phrasings at two seeds and two at the third (FLU edit 0.868, a mean of
    neither set). The cell now averages the phrasings known at every seed, the set compare tests."""
    facts = [f"f{i}" for i in range(8)]
    names = ("zero_shot_edit_accuracy", "professional_edit_accuracy", "sport_played_edit_accuracy")
    values = {"zero_shot_edit_accuracy": 1.0, "professional_edit_accuracy": 0.5, "sport_played_edit_accuracy": 0.0}

    def run(name: str, seed: int) -> dict:
        ms = tuple(Metric.from_samples(n, dict.fromkeys(facts, values[n]),
                                       at_chance=(n == "sport_played_edit_accuracy" and seed == 1)) for n in names)
        return {"localization": name, "seed": seed, "eval": EvalResult({"formats": SuiteResult("formats", ms)})}

    cols, rows = table1_rows([run(loc, s) for s in (0, 1) for loc in ("flu", "random")])
    j = [c[3] for c in cols].index(names)
    cell = _cell(rows, "flu", j)
    assert cell["mean"] == pytest.approx(0.75) and not cell["at_chance"]  # (1.0 + 0.5) / 2 at both seeds
    assert cell["ci_low"] <= 0.75 <= cell["ci_high"]


def test_plots_pool_a_metric_the_first_seed_lacks():
    """seed_pooled looped over the first seed's metrics only: a metric missing there vanished from every plot
    while Table 1 showed it over the seeds that had it."""
    from factlens.runner.report_stats import seed_pooled

    facts = [f"f{i}" for i in range(8)]
    only_acc = EvalResult({"standard": SuiteResult("standard", (
        Metric.from_samples("forget_accuracy", dict.fromkeys(facts, 0.0)),))})
    both = EvalResult({"standard": SuiteResult("standard", (
        Metric.from_samples("forget_accuracy", dict.fromkeys(facts, 0.0)),
        Metric.from_samples("maintain_accuracy", dict.fromkeys(facts, 1.0))))})
    pooled = seed_pooled([only_acc, both])
    assert pooled["standard"]["maintain_accuracy"].value == 1.0


def test_the_original_rows_interval_covers_the_seeds_its_value_does():
    """The original row's interval took the first run of each seed even where that run lacked the column, so a
    mean over two seeds sat beside one seed's Wilson interval ([0.806, 1] for 16/16 instead of 32/32)."""
    facts = [f"f{i}" for i in range(16)]

    def run(name: str, seed: int, with_maintain: bool) -> dict:
        ms = [Metric.from_samples("edit_accuracy", dict.fromkeys(facts, 1.0), baseline=0.0)]
        if with_maintain:
            ms.append(Metric.from_samples("maintain_accuracy", dict.fromkeys(facts, 1.0), baseline=1.0))
        return {"localization": name, "seed": seed, "eval": EvalResult({"standard": SuiteResult("standard", tuple(ms))})}

    runs = [run("flu", 0, False), run("random", 0, True), run("flu", 1, True), run("random", 1, True)]
    cols, rows = table1_rows(runs)
    j = [c[3] for c in cols].index(("maintain_accuracy",))
    cell = _cell(rows, "original", j)
    assert cell["n_seeds"] == 2
    assert cell["ci_low"] == pytest.approx(0.893, abs=1e-3)  # Wilson of 32/32, both seeds' outcomes


def test_a_bar_without_interval_or_standard_error_gets_no_error_bar():
    """A metric without interval or standard error (a maximum over layers pooled over seeds) got an error bar of
    0, which plotly draws as a cap: a zero-width interval."""
    import math

    from factlens.evaluation.plots import _error_bars

    m = Metric(name="probe_true_accuracy_max", value=0.59, n=32)
    bars = _error_bars([m])
    assert math.isnan(bars["array"][0]) and math.isnan(bars["arrayminus"][0])


def test_a_pipe_in_a_name_does_not_shift_a_markdown_row():
    """A plugin localization named "a|b" split its markdown rows into one more column."""
    import factlens
    from factlens.runner.report_stats import compare_text

    facts = [f"f{i}" for i in range(8)]

    def ev(v):
        return EvalResult({"standard": SuiteResult("standard", (
            Metric.from_samples("forget_accuracy", dict.fromkeys(facts, v)),))})

    text = compare_text(factlens.compare({"flu": [ev(0.0)], "a|b": [ev(1.0)]}, reference="flu"), reference="flu")
    head, _, row = text.splitlines()[:3]
    assert row.startswith("| a\\|b |") and row.replace("\\|", "").count("|") == head.count("|")
