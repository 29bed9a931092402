"""factlens.compare: paired comparisons of localizations (synthetic, planted model, a planted run dir)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import factlens
from factlens.comparison import COMPARE_COLUMNS, load_evaluations, variance_split
from factlens.evaluation.result import EvalResult, Metric, SuiteResult

pytestmark = pytest.mark.usefixtures("one_thread")


def _result(values: dict[str, list[float]], *, at_chance: tuple[str, ...] = (), ids: list[str] | None = None):
    """An EvalResult whose metrics have the given per-fact values."""
    ms = []
    for name, v in values.items():
        keys = ids or [f"fact{i}" for i in range(len(v))]
        m = Metric.from_samples(name, dict(zip(keys, map(float, v))), at_chance=name in at_chance)
        ms.append(m)
    return EvalResult({"standard": SuiteResult("standard", tuple(ms))})


def _synthetic(seed: int, shift: float, n: int = 32) -> EvalResult:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, n)
    return _result({"forget_accuracy": (rng.uniform(size=n) < np.clip(base - shift, 0, 1)).astype(float),
                    "forget_prob": np.clip(base - shift + rng.normal(0, 0.05, n), 0, 1)})


# -- synthetic ---------------------------------------------------------------------------------
def test_a_planted_difference_is_significant_and_a_copy_is_not():
    ref = _synthetic(0, 0.0)
    strong = _synthetic(0, 0.5)  # the same facts, answers pushed down by 0.5
    t = factlens.compare({"flu": [ref], "strong": [strong], "copy": [ref]}, reference="flu")
    assert list(t.columns) == list(COMPARE_COLUMNS)
    assert set(t["localization"]) == {"strong", "copy"}  # no row for the reference itself
    s = t[t["localization"] == "strong"].set_index("metric")
    assert s.loc["forget_prob", "significant"] and s.loc["forget_prob", "diff"] < -0.3
    assert s.loc["forget_prob", "ci_high"] < 0 and s.loc["forget_prob", "p_holm"] >= s.loc["forget_prob", "p_value"]
    c = t[t["localization"] == "copy"]
    assert not c["significant"].any() and (c["p_value"] == 1.0).all() and (c["diff"] == 0).all()
    assert (c["n_facts"] == 32).all() and (c["n_seeds"] == 1).all()
    # no unit differs: the 0/1 metric's MDD is the binomial model's; the continuous one has no scale
    c = c.set_index("metric")
    assert c.loc["forget_accuracy", "mdd"] > 0 and math.isnan(c.loc["forget_prob", "mdd"])


def test_comparing_a_localization_with_itself_marks_nothing():
    runs = [_synthetic(s, 0.2) for s in range(3)]
    t = factlens.compare({"a": runs, "b": runs}, reference="a")
    assert len(t) == 2 and not t["significant"].any() and (t["diff"] == 0).all()


def test_at_chance_metrics_are_kept_but_never_significant():
    ref = _result({"mcq_forget_error": [0.0] * 20, "forget_accuracy": [0.0] * 20})
    loc = _result({"mcq_forget_error": [1.0] * 20, "forget_accuracy": [1.0] * 20}, at_chance=("mcq_forget_error",))
    t = factlens.compare({"flu": [ref], "x": [loc]}).set_index("metric")
    assert t.loc["mcq_forget_error", "p_value"] < 1e-3 and not t.loc["mcq_forget_error", "significant"]
    assert t.loc["mcq_forget_error", "at_chance"] and math.isnan(t.loc["mcq_forget_error", "p_holm"])
    assert t.loc["forget_accuracy", "significant"]
    # the at-chance row is outside the Holm family: no family-level MDD, one test in the family
    assert math.isnan(t.loc["mcq_forget_error", "mdd"]) and t.loc["mcq_forget_error", "n_tests"] == 0
    assert math.isnan(t.loc["mcq_forget_error", "mdd_unadjusted"])  # never tested: no power to state either
    assert t.loc["forget_accuracy", "n_tests"] == 1
    assert t.loc["forget_accuracy", "mdd"] == t.loc["forget_accuracy", "mdd_unadjusted"]  # one test: nothing to correct


def test_pairs_on_fact_ids_not_positions():
    ids = [f"f{i}" for i in range(10)]
    ref = _result({"forget_accuracy": [1, 0] * 5}, ids=ids)
    same_shuffled = _result({"forget_accuracy": [0, 1] * 5}, ids=ids[1::2] + ids[::2])
    t = factlens.compare({"flu": [ref], "x": [same_shuffled]})
    assert t.loc[0, "diff"] == 0 and t.loc[0, "p_value"] == 1.0


def test_several_seeds_aggregate_and_variance_split():
    ref = [_synthetic(s, 0.0) for s in range(3)]
    loc = [_synthetic(s, 0.3) for s in range(3)]
    t = factlens.compare({"flu": ref, "x": loc}, reference="flu", metrics=["forget_prob"])
    row = t.iloc[0]
    assert row["n_seeds"] == 3 and row["n_facts"] == 32 and row["significant"]
    assert row["value"] == pytest.approx(np.mean([r.metric("forget_prob").value for r in loc]))
    assert row["value_ci_low"] < row["value"] < row["value_ci_high"]
    vs = variance_split({"flu": ref, "x": loc}, metrics=["forget_prob"])
    assert len(vs) == 2 and (vs["n_seeds"] == 3).all() and vs["seed_share"].between(0, 1).all()
    # the method-of-moments split by hand: fact sampling = mean over seeds of var (ddof=1) / n; seed =
    # the spread (ddof=1) of the seed means beyond it
    groups = [np.array(list(r.metric("forget_prob").samples.values())) for r in loc]
    var_facts = np.mean([g.var(ddof=1) / len(g) for g in groups])
    var_seed = max(np.var([g.mean() for g in groups], ddof=1) - var_facts, 0.0)
    row = vs.set_index("localization").loc["x"]
    assert row["var_facts"] == pytest.approx(var_facts) and row["var_seed"] == pytest.approx(var_seed)
    assert variance_split({"flu": ref[:1]}).empty


def test_bad_input_says_what_to_do():
    ref = _synthetic(0, 0.0)
    with pytest.raises(ValueError, match="reference 'random' is not among the localizations"):
        factlens.compare({"flu": [ref]}, reference="random")
    with pytest.raises(TypeError, match="list of EvalResult"):
        factlens.compare({"flu": [{"suites": {}}]})
    with pytest.raises(ValueError, match=r"no metric named \['nosuch'\]"):
        factlens.compare({"flu": [ref], "x": [ref]}, metrics=["nosuch"])
    with pytest.raises(FileNotFoundError, match="not a factlens run directory"):
        factlens.compare("/nonexistent/run")


@pytest.mark.parametrize("alpha", [5, 50, 0, -0.1, 1.0, True, "0.05"])
def test_a_level_outside_0_1_is_refused_up_front(alpha):
    """alpha=5 (meaning 5 %) failed inside scipy's root finder, 0 divided by zero, and 1.0 marked rows
    significant at level 1."""
    ref = _synthetic(0, 0.0)
    with pytest.raises(ValueError, match="alpha is a level between 0 and 1"):
        factlens.compare({"flu": [ref], "x": [_synthetic(1, 0.5)]}, alpha=alpha)


# -- the planted model: localizations of known different effect -----------------------------------
def test_planted_model_lookup_edit_differs_from_an_edit_downstream_of_the_lookup():
    """Editing the planted lookup MLP (layer 1) changes the facts; editing the layer-3 MLP, which
    only sees the already-extracted attribute at the final position, cannot edit per fact."""
    from factlens import EditConfig, Mask
    from factlens.data import sports_facts
    from factlens.tasks import sports_athlete_editing
    from factlens.testing import planted_fact_model

    p = planted_fact_model()
    task = sports_athlete_editing(p.dataset, n_forget=16, seed=0)
    cfg = EditConfig.fast(lr=1e-2, n_sft_chunks=8)
    evals = {}
    for name, mask in {"lookup": Mask([p.lookup_mlp]), "late_mlp": Mask.from_labels(["L3.mlp"])}.items():
        e = factlens.edit(p.model, mask, task, config=cfg, show_progress=False)
        evals[name] = [factlens.evaluate(e.model, task, original=p.model, suites=["standard"], show_progress=False)]
    t = factlens.compare(evals, reference="lookup", metrics=["forget_accuracy", "forget_prob"]).set_index("metric")
    assert t["significant"].all() and (t["diff"] > 0).all()  # the late MLP forgets less
    same = factlens.compare({"lookup": evals["lookup"], "again": evals["lookup"]}, reference="lookup")
    assert not same["significant"].any()


# -- a planted run directory, through the CLI ---------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from factlens.runner.cli import main

    out = tmp_path_factory.mktemp("compare") / "planted"
    assert main(["run", "planted", "--model", "planted", "--out", str(out), "--no-progress",
                 "--localizations", "flu,random", "--suites", "standard,side_effects"]) == 0
    return out


def test_run_dir_compare_cli_and_report(run_dir: Path, tmp_path: Path, capsys):
    from factlens.runner.cli import main
    from factlens.runner.report import build_report
    from factlens.runner.report_markdown import markdown_summary

    t = factlens.compare(run_dir)
    assert set(t["localization"]) == {"random"}
    assert set(t["metric"]) >= {"forget_accuracy", "maintain_accuracy", "kl_divergence"}
    assert t["p_value"].between(0, 1).all() and (t["n_facts"] > 0).all()
    evals = load_evaluations(run_dir)
    assert all(m.samples and m.ci_low is not None for m in evals["flu"][0]["standard"].metrics)
    csv = tmp_path / "cmp.csv"
    assert main(["compare", str(run_dir), "--reference", "random", "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "| flu | forget_accuracy |" in out and "sign-flip" in out
    assert csv.read_text().splitlines()[0].startswith("localization,metric,suite")
    assert main(["compare", str(run_dir), "--reference", "nosuch"]) == 2
    md = markdown_summary(run_dir)
    assert "## Comparisons" in md and "### Against flu" in md and "### Against random" in md
    flu_row = next(l for l in md.splitlines() if l.startswith("| flu |"))
    assert "[" in flu_row and "]" in flu_row  # value [ci_low, ci_high]
    html = build_report(run_dir)
    assert "<h2>Comparisons</h2>" in html and "Holm" in html


def test_several_run_dirs_with_the_same_facts_are_compared_as_one(run_dir: Path, tmp_path: Path, capsys):
    """A second folder (here all_mlps; in practice ROME's one-MLP folder) joins the first one's units."""
    from factlens.runner.cli import main

    def run(out, *extra):
        assert main(["run", "planted", "--model", "planted", "--out", str(out), "--no-progress", "--no-report",
                     "--suites", "standard", *extra]) == 0
        return out

    other = run(tmp_path / "other", "--localizations", "all_mlps")
    t = factlens.compare([run_dir, other], reference="flu", metrics=["forget_accuracy"])
    assert set(t["localization"]) == {"random", "all_mlps"} and (t["n_facts"] == 16).all()
    with pytest.raises(ValueError, match="holds only 'all_mlps': nothing to compare it with"):
        factlens.compare(other, reference="all_mlps")  # one folder alone has nothing to compare all_mlps with
    # the command says so (it printed "No metric with per-fact values to compare against", exit 0)
    assert main(["compare", str(other), "--reference", "all_mlps"]) == 2
    assert "holds only 'all_mlps': nothing to compare it with" in capsys.readouterr().err
    assert main(["compare", str(run_dir), str(other), "--metrics", "forget_accuracy"]) == 0
    assert "| all_mlps | forget_accuracy |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="is in both"):
        load_evaluations([run_dir, run_dir])
    # budgeted units of another budget are compared, with a warning (a ROME folder's one MLP is a legitimate pairing)
    budget = run(tmp_path / "budget", "--localizations", "random_mlps", "--param-budget", "20000")
    with pytest.warns(UserWarning, match=r"different parameter budgets \(.* vs 20,000\)"):
        assert "random_mlps" in load_evaluations([run_dir, budget])
    import warnings

    from factlens import RunFolder

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # renamed: a budget sweep compares its budgets on purpose, unwarned
        assert "random_mlps_20k" in load_evaluations([run_dir, RunFolder(budget, rename={"random_mlps": "random_mlps_20k"})])
    fewer = run(tmp_path / "fewer", "--localizations", "all_mlps", "--forget-size", "8")
    with pytest.raises(ValueError, match="different facts"):
        load_evaluations([run_dir, fewer])
    assert main(["compare", str(run_dir), str(fewer)]) == 2


def test_run_dirs_whose_edits_were_trained_with_other_settings_are_named(run_dir: Path, tmp_path: Path):
    """Two folders whose fine-tuning used another learning rate were merged without a word (one folder
    holding both files is refused): the units' difference could be the settings', not the localization's."""
    import warnings

    from factlens.runner.cli import main

    def run(out, *extra):
        assert main(["run", "planted", "--model", "planted", "--out", str(out), "--no-progress", "--no-report",
                     "--suites", "standard", "--localizations", "all_mlps", *extra]) == 0
        return out

    same = run(tmp_path / "same")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same settings: nothing to say
        assert "all_mlps" in load_evaluations([run_dir, same])
    faster = run(tmp_path / "faster", "--edit", "lr=0.05")
    with pytest.warns(UserWarning, match=r"trained 'finetune' with different settings \(lr: .* vs 0\.05\)"):
        assert "all_mlps" in load_evaluations([run_dir, faster])


def test_one_localization_of_two_folders_is_compared_under_a_new_name(run_dir: Path, tmp_path: Path, capsys):
    """The FLU run again with other edit settings in a second folder could not be compared with the
    first folder's FLU: both units are ``flu`` and the merge refused them ("pass each unit once"), so
    the comparison needed a hand-built mapping that skipped the folders' checks. A RunFolder (CLI:
    --rename) names one folder's units apart; a typo in it is refused, and units of other seeds may
    share a new name (pooled draws)."""
    import warnings

    from factlens import RunFolder
    from factlens.runner.cli import main

    def run(out, *extra):
        assert main(["run", "planted", "--model", "planted", "--out", str(out), "--no-progress", "--no-report",
                     "--suites", "standard", "--localizations", "flu", *extra]) == 0
        return out

    faster = run(tmp_path / "faster", "--edit", "lr=0.05")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the edit settings differ: warned, then the collision refused
        with pytest.raises(ValueError, match=r"name one folder's units apart: RunFolder\('.*faster', "
                                             r"rename=\{'flu': 'other_name'\}\), CLI: --rename .*faster flu=other_name"):
            load_evaluations([run_dir, faster])
    renamed = RunFolder(faster, rename={"flu": "flu_fast"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # renamed on purpose: its other settings are not warned about
        evals = load_evaluations([run_dir, renamed])
    assert set(evals) == {"flu", "random", "flu_fast"}
    alone = load_evaluations(faster)["flu"][0].suites["standard"]
    assert evals["flu_fast"][0].suites["standard"].metrics == alone.metrics
    assert evals["flu"][0].suites["standard"].metrics == load_evaluations(run_dir)["flu"][0].suites["standard"].metrics
    table = factlens.compare([run_dir, renamed], metrics="forget_accuracy")
    assert set(table.localization) == {"random", "flu_fast"}
    row = table.set_index("localization").loc["flu_fast"]
    assert row["value"] == pytest.approx(load_evaluations(faster)["flu"][0].metric("forget_accuracy").value)

    with pytest.raises(ValueError, match=r"faster holds no finished unit 'random' to rename; its units are \['flu'\]"):
        load_evaluations([run_dir, RunFolder(faster, rename={"random": "x"})])
    with pytest.raises(ValueError, match="give each unit a non-empty new name"):
        RunFolder(faster, rename={"flu": " "})

    other_seed = run(tmp_path / "seed1", "--seeds", "1")  # two draws pooled under one name
    pooled = load_evaluations([run_dir, RunFolder(faster, rename={"flu": "variant"}),
                               RunFolder(other_seed, rename={"flu": "variant"})])
    assert sorted(pooled["variant"]) == [0, 1] and sorted(pooled["flu"]) == [0]

    capsys.readouterr()
    assert main(["compare", str(run_dir), str(faster), "--metrics", "forget_accuracy",
                 "--rename", str(faster), "flu=flu_fast"]) == 0
    assert "flu_fast" in capsys.readouterr().out
    assert main(["compare", str(run_dir), str(faster), "--rename", str(tmp_path / "elsewhere"), "flu=x"]) == 2
    assert "not one of the folders given" in capsys.readouterr().err
    assert main(["compare", str(run_dir), str(faster), "--rename", str(faster), "flu"]) == 2
    assert "takes UNIT=NAME[,UNIT=NAME], e.g. flu=flu_40, got 'flu'" in capsys.readouterr().err
    assert main(["plan", str(run_dir), str(faster), "--rename", str(faster), "flu=flu_fast", "--difference", "0.5",
                 "--metrics", "forget_accuracy"]) == 0
    assert "flu_fast" in capsys.readouterr().out


def test_run_dirs_measured_with_different_settings_are_not_merged(run_dir: Path, tmp_path: Path):
    """Same facts, but other text chunks: side-effect units are keyed by position, so chunk 3 of one
    folder is not chunk 3 of the other. Merging them paired unrelated numbers without a word."""
    from factlens.runner.cli import main

    other = tmp_path / "chunks"
    assert main(["run", "planted", "--model", "planted", "--out", str(other), "--no-progress", "--no-report",
                 "--suites", "standard,side_effects", "--localizations", "all_mlps", "--eval", "text.seq_len=8"]) == 0
    with pytest.raises(ValueError, match=r"measured seed 0 differently \(eval\.text\.seq_len: 16 vs 8\)"):
        load_evaluations([run_dir, other])
    # batch sizes change no result: such folders still merge
    same = tmp_path / "batch"
    assert main(["run", "planted", "--model", "planted", "--out", str(same), "--no-progress", "--no-report",
                 "--suites", "standard", "--localizations", "all_mlps", "--eval", "text.batch_size=2"]) == 0
    assert set(load_evaluations([run_dir, same])) >= {"flu", "all_mlps"}


def test_settings_of_a_suite_one_folder_did_not_run_do_not_stop_a_merge(run_dir: Path, tmp_path: Path):
    """A folder's unused suite settings decide none of its numbers: a fine-tuning folder with side
    effects and MMLU could not be merged with a ROME folder without them (``--mmlu-source`` is refused
    where side effects do not run), nor with one whose soft-prompt steps differ but ran no soft prompts."""
    from factlens.runner.cli import main

    other = tmp_path / "soft"
    assert main(["run", "planted", "--model", "planted", "--out", str(other), "--no-progress", "--no-report",
                 "--suites", "standard", "--localizations", "all_mlps", "--eval", "soft_prompts.steps=3",
                 "--eval", "side_effects.n_mmlu=5"]) == 0
    assert set(load_evaluations([run_dir, other])) == {"flu", "random", "all_mlps"}
    # nor with one whose general text differs but ran no suite that reads it ("eval.text.n_chunks: 2 vs 4")
    plain = tmp_path / "plain"
    assert main(["run", "planted", "--model", "planted", "--out", str(plain), "--no-progress", "--no-report",
                 "--suites", "standard", "--localizations", "nonlocalized", "--eval", "text.n_chunks=3"]) == 0
    assert set(load_evaluations([run_dir, plain])) == {"flu", "random", "nonlocalized"}


def test_the_comparison_module_is_not_shadowed_by_the_verb():
    # ``factlens.compare`` is the function; the module has its own name, so both import styles work
    import factlens
    import factlens.comparison as mod

    assert callable(factlens.compare) and mod.compare is factlens.compare
    assert hasattr(mod, "variance_split")


@pytest.mark.slow  # 150 comparisons: about 30 s
def test_mdd_is_what_the_holm_corrected_test_detects():
    """A true difference of ``mdd`` is marked significant (after Holm) ~80 % of the time (simulation).

    One metric carries the effect, three others none, so the Holm family has four tests and
    ``mdd`` is computed at 0.05 / 4. Planting that difference (paired differences with
    standard deviation 1), ``significant`` must come out at the stated power of 0.8; the
    reported ``mdd`` estimates it from each dataset's spread, and ``mdd_unadjusted`` (0.05
    before the correction) is clearly smaller: a non-significant Holm result rules out less.
    """
    from scipy.stats import binomtest

    from factlens.stats import minimum_detectable_difference

    n, rng = 16, np.random.default_rng(11)
    planted = minimum_detectable_difference(n, sd=1.0, alpha=0.05 / 4)
    rows = []
    for _ in range(150):
        base = {name: rng.normal(0, 1, n) for name in ("a", "b", "c", "d")}
        # the other three differ by noise of mean 0 (with no difference at all they would be untestable
        # and Tarone's selection would leave them out of the family)
        loc = {k: v + rng.normal(planted if k == "a" else 0.0, 1, n) for k, v in base.items()}
        rows.append(factlens.compare({"flu": [_result(base)], "x": [_result(loc)]}).set_index("metric").loc["a"])
    assert {r["n_tests"] for r in rows} == {4}
    assert np.median([r["mdd"] for r in rows]) == pytest.approx(planted, rel=0.1)
    assert np.median([r["mdd_unadjusted"] for r in rows]) < 0.85 * planted
    found = sum(bool(r["significant"]) for r in rows)
    assert binomtest(found, len(rows), 0.8).pvalue > 0.01, found


def test_metrics_that_cannot_reach_significance_leave_the_holm_family():
    """Metrics whose paired differences are all zero (the forget accuracy of two edits that both
    forget everything) or differ on too few facts used to count in Holm's family and made every
    other metric stricter (Tarone's modification leaves them out); they are never significant."""
    n = 12
    ref = {"effect": [0.0] * n, "zero_a": [0.0] * n, "zero_b": [1.0] * n, "few": [0.0] * n}
    loc = {"effect": [1.0] * 9 + [0.0] * 3, "zero_a": [0.0] * n, "zero_b": [1.0] * n, "few": [1.0] * 3 + [0.0] * 9}
    t = factlens.compare({"flu": [_result(ref)], "x": [_result(loc)]}).set_index("metric")
    p = t.loc["effect", "p_value"]
    assert p == pytest.approx(2 / 2 ** 9)
    assert t.loc["effect", "p_holm"] == pytest.approx(p) and t.loc["effect", "testable"]  # alone in its family
    assert t.loc["effect", "n_tests"] == 1
    for name in ("zero_a", "zero_b", "few"):  # 0, 0 and 3 differing facts: p >= 0.25 whatever the signs
        assert not t.loc[name, "testable"] and not t.loc[name, "significant"] and math.isnan(t.loc[name, "p_holm"])
    from factlens.runner.report_stats import compare_text

    text = compare_text(t.reset_index()[list(COMPARE_COLUMNS)], reference="flu")
    assert "| x | few |" in text and "n.t." in text and "Tarone" in text


def test_metrics_that_are_one_test_count_once_in_holm():
    """CounterFact's paraphrase forget error and edit accuracy are the same per-fact outcome,
    and a forget error is the complement of a forget accuracy: such metrics are one test of the
    Holm family (before, each counted, and the correction was stricter than the distinct
    hypotheses need)."""
    rng = np.random.default_rng(3)
    ref_acc = (rng.uniform(size=24) < 0.8).astype(float)
    loc_acc = ref_acc.copy()
    loc_acc[:10] = 0.0  # the localization forgets more
    maintain = (rng.uniform(size=24) < 0.5).astype(float)
    ref = _result({"forget_accuracy": ref_acc, "forget_error": 1 - ref_acc, "edit_accuracy": 1 - ref_acc,
                   "maintain_accuracy": maintain})
    loc = _result({"forget_accuracy": loc_acc, "forget_error": 1 - loc_acc, "edit_accuracy": 1 - loc_acc,
                   "maintain_accuracy": 1 - maintain})
    t = factlens.compare({"flu": [ref], "x": [loc]}).set_index("metric")
    assert (t["n_tests"] == 2).all()
    p = t.loc["forget_accuracy", "p_value"]
    assert t.loc[["forget_accuracy", "forget_error", "edit_accuracy"], "p_value"].tolist() == [p, p, p]
    p_m = t.loc["maintain_accuracy", "p_value"]
    assert p < p_m
    assert t.loc[["forget_accuracy", "forget_error", "edit_accuracy"], "p_holm"].tolist() == pytest.approx([2 * p] * 3)
    from factlens.stats import minimum_detectable_difference

    assert t.loc["maintain_accuracy", "mdd"] == pytest.approx(
        minimum_detectable_difference(24, sd=float(np.std((1 - maintain) - maintain, ddof=1)), alpha=0.025,
                                      binary=True))


def test_table1_cells_that_are_one_test_count_once():
    """Table 1's Holm family over a row's cells counts cells with the same per-fact outcomes once."""
    from factlens.runner.report_stats import annotate_table1

    n = 7  # exact sign-flip test: all 7 facts moved, p = 2 / 2**7 = 0.0156
    ref = _result({"forget_accuracy": [1.0] * n, "edit_accuracy": [0.0] * n, "forget_error": [0.0] * n,
                   "maintain_accuracy": [1.0] * n})
    loc = _result({"forget_accuracy": [0.0] * n, "edit_accuracy": [1.0] * n, "forget_error": [1.0] * n,
                   "maintain_accuracy": [1.0] * n})
    runs = [{"seed": 0, "localization": "flu", "eval": ref}, {"seed": 0, "localization": "x", "eval": loc}]
    cols = [("Standard", "Forget", "standard", ("forget_accuracy",), "one_minus"),
            ("Standard", "Edit", "standard", ("edit_accuracy",), None),
            ("Standard", "Forget error", "standard", ("forget_error",), None),
            ("Standard", "Maintain", "standard", ("maintain_accuracy",), None)]
    rows = [{"name": "x", "cells": [{"mean": 1.0} for _ in cols]}]
    assert annotate_table1(runs, cols, rows, reference="flu")
    # two distinct tests (p = 0.0156 and 1): Holm 0.031, significant; counting the first
    # three times (four tests) would give 0.0625 and no mark
    assert [c["significant"] for c in rows[0]["cells"]] == [True, True, True, False]


def test_compare_marks_rows_whose_attack_collapsed_a_model():
    """A relearned accuracy on a model that the attack collapsed onto one answer is partly that
    answer, not recovered facts (seed 1 of the 32-player Sports-Unlearning run): compare said nothing."""
    from factlens.evaluation.result import EvalResult, Metric, SuiteResult
    from factlens.runner.report_stats import compare_text

    def ev(after, collapsed):
        ms = (Metric.from_samples("relearn_forget_accuracy", {f"f{i}": x for i, x in enumerate(after)}),
              Metric.from_samples("relearn_forget_accuracy_before", {f"f{i}": 0.0 for i in range(len(after))}))
        suite = SuiteResult("relearning", ms, extra={"maintain_collapse": {"collapsed": collapsed}})
        return EvalResult({"relearning": suite})

    t = factlens.compare({"flu": [ev([1] * 12, True)], "random": [ev([0] * 12, False)]}, reference="flu")
    row = t.set_index("metric").loc["relearn_forget_accuracy"]
    assert bool(row["collapsed"]) and bool(row["significant"])  # reported, still tested
    assert not bool(t.set_index("metric").loc["relearn_forget_accuracy_before", "collapsed"])
    assert "yes ◊" in compare_text(t, reference="flu")
    calm = factlens.compare({"flu": [ev([1] * 12, False)], "random": [ev([0] * 12, False)]}, reference="flu")
    assert not calm["collapsed"].any() and "◊ |" not in compare_text(calm, reference="flu")


# -- token-weighted metrics ----------------------------------------------------------------------
_TOKENS = np.array([10.0] * 7 + [500.0])  # one long chunk, as in real text


def _token_result(values) -> EvalResult:
    """A side-effects result built as side_effects._token_metric builds it (weights = tokens per chunk)."""
    ids = [f"chunk:{i}" for i in range(len(values))]
    m = Metric.from_samples("next_token_accuracy", dict(zip(ids, map(float, values))), unit="tokens",
                            weights=dict(zip(ids, _TOKENS)))
    return EvalResult({"side_effects": SuiteResult("side_effects", (m,))})


def test_token_weighted_metrics_compare_their_weighted_means():
    """diff, its interval and p were the plain chunk mean's while value and reference_value are
    token-weighted: diff was -0.05 where value - reference_value is +0.25."""
    import itertools

    loc, ref = np.array([0.5] * 7 + [0.9]), np.array([0.6] * 8)
    row = factlens.compare({"loc": [_token_result(loc)], "flu": [_token_result(ref)]}, reference="flu").iloc[0]
    assert row["diff"] == pytest.approx(row["value"] - row["reference_value"]) and row["diff"] > 0.25
    assert row["ci_low"] <= row["diff"] <= row["ci_high"]
    wd = _TOKENS * (loc - ref)  # exact weighted sign-flip p over all 2**8 patterns
    null = np.array([abs(np.dot(s, wd)) for s in itertools.product([1, -1], repeat=8)])
    assert row["p_value"] == pytest.approx(float(np.mean(null >= abs(wd.sum()) - 1e-12)))
    # several seeds: the value interval is the hierarchical bootstrap of the weighted mean
    runs = {"loc": [_token_result(loc + 0.01 * s) for s in range(2)], "flu": [_token_result(ref + 0.01 * s)
                                                                           for s in range(2)]}
    row2 = factlens.compare(runs, reference="flu").iloc[0]
    assert row2["value_ci_low"] <= row2["value"] <= row2["value_ci_high"]
    assert row2["diff"] == pytest.approx(row2["value"] - row2["reference_value"])
    vs = variance_split(runs).set_index("localization")
    w = _TOKENS
    se2 = np.mean([(w ** 2 * (g - (w * g).sum() / w.sum()) ** 2).sum() * 8 / 7 / w.sum() ** 2
                   for g in (loc, loc + 0.01)])
    assert vs.loc["loc", "var_facts"] == pytest.approx(se2)


def test_sides_that_weight_the_same_units_differently_are_refused():
    a = _token_result([0.5] * 8)
    ids = [f"chunk:{i}" for i in range(8)]
    other = Metric.from_samples("next_token_accuracy", dict(zip(ids, [0.6] * 8)), unit="tokens",
                                weights=dict(zip(ids, _TOKENS + 1)))
    b = EvalResult({"side_effects": SuiteResult("side_effects", (other,))})
    with pytest.raises(ValueError, match=r"weight the same units differently \(chunk:0: 10 vs 11\)"):
        factlens.compare({"loc": [a], "flu": [b]}, reference="flu")
    # a side saved before weights were kept takes the other side's (the units' own weights)
    old = EvalResult({"side_effects": SuiteResult("side_effects", (replace(other, weights=None),))})
    row = factlens.compare({"loc": [a], "flu": [old]}, reference="flu").iloc[0]
    assert row["diff"] == pytest.approx(-0.1)


def test_in_memory_results_with_other_text_or_mmlu_settings_are_refused():
    """Chunks and MMLU questions are keyed by position: results evaluated with other text or MMLU
    settings have units of the same names that are other chunks and questions (run folders were
    checked; mappings of EvalResults were paired without a word)."""
    from factlens.evaluation import EvalConfig

    a, b = _synthetic(0, 0.0), _synthetic(1, 0.3)
    cfg = EvalConfig()
    a.meta["config"] = cfg.to_dict()
    b.meta["config"] = cfg.replace(text=cfg.text.replace(seq_len=32)).to_dict()
    assert len(factlens.compare({"flu": [a], "loc": [b]}, reference="flu")) == 2  # neither read the text
    ids = [f"chunk:{i}" for i in range(4)]
    reads = lambda r, v: EvalResult({**r.suites, "side_effects": SuiteResult("side_effects", (  # noqa: E731
        Metric.from_samples("kl_divergence", dict(zip(ids, v)), unit="tokens"),))}, meta=r.meta)
    with pytest.raises(ValueError, match=r"measured seed 0 differently \(eval\.text\.seq_len: 64 vs 32\)"):
        factlens.compare({"flu": [reads(a, [0.1] * 4)], "loc": [reads(b, [0.2] * 4)]}, reference="flu")
    b.meta["config"] = cfg.replace(side_effects=cfg.side_effects.replace(n_mmlu=5)).to_dict()
    assert len(factlens.compare({"flu": [a], "loc": [b]}, reference="flu")) == 2  # neither ran side effects
    c, d = _token_result([0.5] * 8), _token_result([0.4] * 8)
    c.meta["config"], d.meta["config"] = a.meta["config"], b.meta["config"]
    with pytest.raises(ValueError, match=r"eval\.side_effects\.n_mmlu: 57 vs 5"):
        factlens.compare({"flu": [c], "loc": [d]}, reference="flu")
    b.meta["config"] = cfg.replace(batch_size=3).to_dict()  # batch sizes change no result
    assert len(factlens.compare({"flu": [a], "loc": [b]}, reference="flu")) == 2


def test_metrics_on_different_facts_are_separate_tests_even_with_equal_outcomes():
    """Audit repro_3: edit accuracy (forget facts) and maintain accuracy (maintain facts) with
    the same 0/1 pattern were merged into one test, so the family had 3 tests where there are
    4, and all four rows were significant; Holm over the 4 distinct tests marks none."""
    from statsmodels.stats.multitest import multipletests

    from factlens.stats import sign_flip_test, smallest_attainable_p, tarone_holm

    forget, maintain, facts = ([f"{p}{i}" for i in range(n)] for p, n in (("forget", 8), ("maintain", 8), ("f", 16)))
    moved, kept = [0.0] * 7 + [1.0], [1.0] * 8
    c = ([0.52, 0.66, 0.59, 0.62, 0.42, 0.52, 0.71, 0.85, 0.3, 0.85, 0.82, 0.71, 0.6, 0.49, 0.84, 0.94],
         [0.81, 0.71, 0.52, 0.21, 0.45, 0.58, 0.19, 0.53, 0.54, 0.59, 0.21, 0.32, 0.36, 0.22, 0.8, 0.35])
    d = ([0.58, 0.65, 0.58, 0.42, 0.53, 0.61, 0.5, 0.48, 0.8, 0.36, 0.48, 0.14, 0.66, 0.72, 0.66, 0.73],
         [0.54, 0.52, 0.54, 0.4, 0.69, 0.38, 0.16, 0.62, 0.82, 0.26, 0.43, 0.31, 0.37, 0.46, 0.2, 0.39])

    def ev(i: int) -> EvalResult:
        a = (moved, kept)[i]
        return EvalResult({"standard": SuiteResult("standard", (
            Metric.from_samples("edit_accuracy", dict(zip(forget, a))),
            Metric.from_samples("maintain_accuracy", dict(zip(maintain, a))),
            Metric.from_samples("forget_probability", dict(zip(facts, c[i]))),
            Metric.from_samples("edit_probability", dict(zip(facts, d[i])))))})

    t = factlens.compare({"loc": [ev(0)], "flu": [ev(1)]}, reference="flu")
    assert (t["n_tests"] == 4).all()
    diffs = [np.subtract(moved, kept)] * 2 + [np.subtract(*x) for x in (c, d)]
    p = [sign_flip_test(x) for x in diffs]
    assert t["p_value"].tolist() == pytest.approx(p)
    # four distinct tests: Tarone-Holm (what compare runs) and plain Holm both mark none
    res = tarone_holm(p, [smallest_attainable_p(x) for x in diffs])
    assert t["p_holm"].tolist() == pytest.approx(res.adjusted.tolist(), nan_ok=True)
    assert not (multipletests(p, method="holm")[1] < 0.05).any() and not t["significant"].any()


def test_results_on_different_facts_are_refused_not_paired_on_their_intersection():
    """Audit repro_4: a mapping of EvalResults on different facts was paired on the common
    facts without a word (value 0.333, reference 0.5, yet diff -1 over 6 facts)."""
    loc = _result({"forget_accuracy": [float(i < 4) for i in range(12)]}, ids=[f"f{i}" for i in range(12)])
    ref = _result({"forget_accuracy": [1.0] * 6 + [0.0] * 6}, ids=[f"f{i}" for i in range(6, 12)]
                  + [f"g{i}" for i in range(6)])
    with pytest.raises(ValueError, match=r"'loc' vs 'flu', standard\.forget_accuracy, seed 0: the localization has "
                                         r"values for 12 facts, the reference for 12, 6 of them common.*same facts"):
        factlens.compare({"loc": [loc], "flu": [ref]}, reference="flu")
    sub = _result({"forget_accuracy": [1.0] * 6}, ids=[f"f{i}" for i in range(6)])  # a subset is refused too
    with pytest.raises(ValueError, match="values for 12 facts, the reference for 6"):
        factlens.compare({"loc": [loc], "flu": [sub]}, reference="flu")


def test_a_nan_unit_value_is_no_value_as_none_is():
    """Audit c12: a NaN per-fact value counted as a value in the same-facts check, so a NaN on one side was
    paired (dropped from the test) and ``diff`` (0.400) was no longer ``value - reference_value`` (0.463).
    It is refused as ``None`` is; a NaN on both sides leaves the unit out, as ``None`` on both sides does."""
    ids = [f"f{i}" for i in range(8)]
    ref = Metric.from_samples("forget_prob", {k: (0.0 if k == "f0" else 0.5) for k in ids})
    ev = lambda m: EvalResult({"standard": SuiteResult("standard", (m,))})  # noqa: E731
    for missing in (None, float("nan")):
        loc = Metric("forget_prob", 0.9, 7, samples={**{k: 0.9 for k in ids}, "f0": missing})
        with pytest.raises(ValueError, match="values for 7 facts, the reference for 8, 7 of them common.*same facts"):
            factlens.compare({"flu": [ev(ref)], "loc": [ev(loc)]})
    rows = []
    for missing in (None, float("nan")):
        both = [Metric("forget_prob", v, 7, samples={**{k: v + 0.01 * i for i, k in enumerate(ids)}, "f0": missing})
                for v in (0.5, 0.9)]
        rows.append(factlens.compare({"flu": [ev(both[0])], "loc": [ev(both[1])]}).iloc[0])
    assert rows[0]["n_facts"] == rows[1]["n_facts"] == 7
    cols = ["diff", "ci_low", "ci_high", "p_value"]
    assert rows[1][cols].tolist() == rows[0][cols].tolist()


def test_mdd_of_a_continuous_metric_without_spread_is_not_the_0_1_floor():
    """All 16 paired differences 0.25 (p = 3e-5): compare reported the 0/1 floor 0.449 as MDD."""
    base = np.arange(16) / 32  # exact in binary: every difference is exactly 0.25, sd 0
    t = factlens.compare({"flu": [_result({"forget_prob": base})], "x": [_result({"forget_prob": base + 0.25})]})
    row = t.iloc[0]
    assert row["p_value"] < 1e-4 and row["significant"]
    assert math.isnan(row["mdd"]) and math.isnan(row["mdd_unadjusted"])
    acc = factlens.compare({"flu": [_result({"forget_accuracy": [1.0] * 16})],
                            "x": [_result({"forget_accuracy": [1.0] * 16})]}).iloc[0]  # 0/1, no unit differed
    assert acc["mdd_unadjusted"] == pytest.approx(0.449, abs=1e-3)


def test_a_token_weighted_metric_of_0_1_chunks_is_no_0_1_outcome_for_its_mdd():
    """Every chunk's next-token accuracy 0 on both sides took the binomial MDD (0.80) while the same row's
    interval was the bootstrap's; chunks of 0.2 gave NaN. A token-weighted mean is continuous: NaN both."""
    def ev(v):
        ids = [f"chunk:{i}" for i in range(8)]
        m = Metric.from_samples("next_token_accuracy", {k: v for k in ids}, unit="tokens",
                                weights={k: 10.0 + i for i, k in enumerate(ids)})
        return EvalResult({"side_effects": SuiteResult("side_effects", (m,))})

    for v in (0.0, 0.2):
        row = factlens.compare({"flu": [ev(v)], "random": [ev(v)]}, reference="flu").iloc[0]
        assert math.isnan(row["mdd_unadjusted"]), v


def test_metric_names_are_names_not_substrings_and_unknown_ones_are_refused():
    """``metrics="relearn_forget_accuracy"`` (a string) also selected ``forget_accuracy``
    (substring of it), and a misspelt name gave an empty table without a word."""
    def res(shift):
        return _result({"forget_accuracy": [1.0 - shift] * 8, "relearn_forget_accuracy": [0.5] * 8})

    runs = {"flu": [res(0.0)], "random": [res(1.0)]}
    one = factlens.compare(runs, reference="flu", metrics="relearn_forget_accuracy")
    assert list(one["metric"]) == ["relearn_forget_accuracy"]
    assert list(factlens.compare(runs, reference="flu", metrics=["standard.forget_accuracy"])["metric"]) == \
        ["forget_accuracy"]
    with pytest.raises(ValueError, match=r"no metric named \['forget_acuracy'\].*forget_accuracy"):
        factlens.compare(runs, reference="flu", metrics=["forget_acuracy"])
    with pytest.raises(ValueError, match="no metric named"):
        factlens.comparison.variance_split(runs, metrics="forget_acuracy")


def test_maxima_over_layers_are_compared_but_not_tested_as_paired_facts():
    """A probe's best-layer accuracy keeps each side's outcomes at its own best layer: a
    sign-flip test over those facts pairs different layers and ignores the choice of layer
    (it used to be tested and could enter the Holm family). Its row keeps value and diff,
    has no p-value or interval, and leaves the family to the other metrics."""
    from factlens.evaluation.probes import _fact_metric

    rng = np.random.default_rng(0)
    ids = [f"fact{i}" for i in range(32)]

    def ev(hits, shift):
        m = _fact_metric("probe_true_accuracy_max", ids, hits, "max", None, False)
        assert m.ci_method == "wilson-max" and m.selected
        other = Metric.from_samples("forget_accuracy", dict(zip(ids, (rng.uniform(size=32) < shift).astype(float))))
        return EvalResult({"probes": SuiteResult("probes", (m,)), "standard": SuiteResult("standard", (other,))})

    ref_hits = np.zeros((32, 6), bool)
    ref_hits[:4, 0] = True
    loc_hits = np.zeros((32, 6), bool)
    loc_hits[:, 5] = True  # all facts at its best layer, another layer than the reference's
    t = factlens.compare({"flu": [ev(ref_hits, 0.0)], "x": [ev(loc_hits, 0.9)]}, reference="flu").set_index("metric")
    row = t.loc["probe_true_accuracy_max"]
    assert row["value"] == 1.0 and row["reference_value"] == 0.125 and row["diff"] == pytest.approx(0.875)
    assert math.isnan(row["p_value"]) and math.isnan(row["p_holm"]) and not row["testable"] and not row["significant"]
    assert row["ci_low"] is None or math.isnan(row["ci_low"])
    assert t.loc["forget_accuracy", "testable"] and t.loc["forget_accuracy", "n_tests"] == 1
    from factlens.runner.report_stats import compare_text

    text = compare_text(t.reset_index(), reference="flu")  # untested: "n.t." (it read "no", as a tested row)
    line = next(x for x in text.splitlines() if "probe_true_accuracy_max" in x)
    assert line.split("|")[8].strip() == "n.t." and "not tested at all" in text


def test_mdd_with_seeds_of_different_sizes_is_that_of_the_test_that_weighs_seeds_equally():
    """The sign-flip test weighs each seed once, so a seed of 8 facts weighs as much as one of 32;
    the MDD is that of the same weighted mean (it used the pooled sd of all 40 differences, as if
    every fact counted the same: smaller than what the test can detect)."""
    from factlens.stats import minimum_detectable_difference, weighted_mean_se

    rng = np.random.default_rng(3)
    n = {0: 32, 1: 8}
    ref, loc, diffs, weights = {}, {}, [], []
    for seed, k in n.items():
        y = rng.uniform(0.2, 0.8, k)
        d = rng.normal(0.0, 0.05 if seed == 0 else 0.3, k)  # the small seed is the noisy one
        ids = [f"s{seed}f{i}" for i in range(k)]
        ref[seed] = EvalResult({"standard": SuiteResult("standard", (Metric.from_samples("forget_prob", dict(zip(ids, y))),))})
        loc[seed] = EvalResult({"standard": SuiteResult("standard", (Metric.from_samples("forget_prob", dict(zip(ids, y + d))),))})
        diffs += list(d)
        weights += [1 / k] * k
    row = factlens.compare({"flu": ref, "x": loc}, reference="flu").iloc[0]
    sd = weighted_mean_se(diffs, weights=weights) * math.sqrt(40)
    assert row["mdd_unadjusted"] == pytest.approx(minimum_detectable_difference(40, sd=sd, binary=False))
    assert row["mdd_unadjusted"] > 1.5 * minimum_detectable_difference(40, sd=float(np.std(diffs, ddof=1)), binary=False)


def test_a_value_with_identical_outcomes_over_seeds_has_the_pooled_wilson_interval():
    """Every fact edited in both seeds: the bootstrap over seeds and facts gave [1.00, 1.00], a
    95 % interval of no width; it is the Wilson interval of 32 of 32 (one seed's is [0.81, 1])."""
    from factlens.stats import wilson_interval

    runs = {"flu": [_result({"edit_accuracy": [1] * 16}), _result({"edit_accuracy": [1] * 16})],
            "x": [_result({"edit_accuracy": [1] * 16}), _result({"edit_accuracy": [1] * 15 + [0]})]}
    t = factlens.compare(runs, reference="flu").iloc[0]
    assert t["value_ci_low"] < t["value"] < t["value_ci_high"]  # 31 of 32: the bootstrap, as before
    from factlens.runner.report_stats import seed_pooled

    m = seed_pooled(runs["flu"])["standard"]["edit_accuracy"]
    assert (m.ci_low, m.ci_high) == pytest.approx(wilson_interval(32, 32)) and m.ci_method == "wilson"
    assert seed_pooled(runs["x"])["standard"]["edit_accuracy"].ci_method == "bootstrap"
    d = factlens.compare({"x": runs["flu"], "flu": runs["x"]}, reference="flu").iloc[0]
    assert (d["value_ci_low"], d["value_ci_high"]) == pytest.approx(wilson_interval(32, 32))
    # the paired difference of 0/1 outcomes: the bootstrap's [0, 0.06] (one fact moved) widened to the
    # pooled score interval, which allows the one fact to be chance either way
    from factlens.stats import paired_proportion_diff_interval

    score = paired_proportion_diff_interval([1] * 32, [1] * 31 + [0])
    assert d["ci_low"] == pytest.approx(score[0]) and d["ci_low"] < 0 < d["ci_high"]


def test_value_and_reference_value_count_the_seeds_the_difference_is_taken_on():
    """The reference has seeds 0 and 1, the other side only seed 0 (its own folder, or a run in progress):
    the values were means over each side's own seeds (1.0 vs 0.5) beside a diff over seed 0 alone (0.0)."""
    def ev(vals):
        m = Metric.from_samples("forget_accuracy", {f"f{i}": float(v) for i, v in enumerate(vals)},
                                higher_is_better=False)
        return EvalResult({"standard": SuiteResult("standard", (m,))})

    t = factlens.compare({"flu": {0: ev([1] * 16), 1: ev([0] * 16)}, "rome": {0: ev([1] * 16)}}, reference="flu")
    r = t.iloc[0]
    assert (r["value"], r["reference_value"], r["diff"], r["n_seeds"]) == (1.0, 1.0, 0.0, 1)


def test_equal_continuous_differences_have_no_mdd_and_a_p_at_the_level_is_significant(monkeypatch):
    """Six differences of exactly 0.1 have an sd of ~3e-17 in floating point, which gave an MDD of
    3e-17 ('0.00') instead of NaN (no scale); and a Holm p of exactly 0.05 was not significant
    though the test rejects at p <= alpha."""
    t = factlens.compare({"flu": [_result({"forget_prob": [0.1] * 6})], "x": [_result({"forget_prob": [0.2] * 6})]},
                         reference="flu").iloc[0]
    assert t["p_value"] == pytest.approx(2 / 64) and math.isnan(t["mdd"]) and math.isnan(t["mdd_unadjusted"])
    from factlens import stats

    monkeypatch.setattr(stats, "sign_flip_test", lambda d, **kw: 0.05)
    t = factlens.compare({"flu": [_synthetic(0, 0.0)], "x": [_synthetic(1, 0.3)]}, reference="flu",
                         metrics=["forget_prob"]).iloc[0]
    assert t["p_holm"] == 0.05 and bool(t["significant"])


def test_seeds_with_different_numbers_of_facts_show_their_total_not_a_rounded_mean():
    """Seeds of 6 and 10 facts were shown as "8 facts × 2 seeds" (a rounded mean): the row now
    has ``n_units`` (16) and the table says "16 facts over 2 seeds"."""
    from factlens.runner.report_stats import compare_text

    rng = np.random.default_rng(5)
    ref, loc = {}, {}
    for seed, k in {0: 6, 1: 10}.items():
        ids = [f"s{seed}f{i}" for i in range(k)]
        y = rng.uniform(0.2, 0.8, k)
        ref[seed] = _result({"forget_prob": y}, ids=ids)
        loc[seed] = _result({"forget_prob": y + rng.normal(0.0, 0.1, k)}, ids=ids)
    t = factlens.compare({"flu": ref, "x": loc}, reference="flu")
    row = t.iloc[0]
    assert row["n_units"] == 16 and row["n_seeds"] == 2
    text = compare_text(t, reference="flu")
    assert "16 facts over 2 seeds" in text and "8 facts × 2 seeds" not in text
    equal = factlens.compare({"flu": [_synthetic(0, 0.0), _synthetic(1, 0.0)],
                              "x": [_synthetic(0, 0.2), _synthetic(1, 0.2)]}, reference="flu")
    assert (equal["n_units"] == 64).all() and "32 facts × 2 seeds" in compare_text(equal, reference="flu")


def test_attack_training_batches_are_compared_forward_pass_sizes_are_not():
    """Every setting called ``batch_size`` was left out of the settings two folders must share, the
    relearning attack's facts per step too: folders whose attacks trained differently were paired.
    Only the forward-pass sizes are left out now, and an older folder's relearning chunks per step
    (then ``text.batch_size``) are read from where it took them."""
    from factlens.comparison import _check_same_setup, _setup
    from factlens.evaluation import EvalConfig

    def rec(cfg: EvalConfig, **drop):
        table = cfg.to_dict()
        for section, key in drop.items():  # a record written before the field existed
            table[section].pop(key)
        ev = EvalResult({"relearning": SuiteResult("relearning", ())}, meta={"config": table})
        return _setup({"model": "m", "eval": ev})

    base = EvalConfig()
    same = rec(base.replace(batch_size=4, text=base.text.replace(batch_size=1)))
    _check_same_setup("a", rec(base), "b", same, 0, fix="")  # forward-pass sizes: merged
    with pytest.raises(ValueError, match=r"eval\.relearning\.batch_size: 8 vs 2"):
        _check_same_setup("a", rec(base), "b", rec(base.replace(relearning=base.relearning.replace(batch_size=2))),
                          0, fix="")
    old = rec(base.replace(text=base.text.replace(batch_size=2)), relearning="text_batch_size")
    assert old["eval.relearning.text_batch_size"] == 2  # it trained on text.batch_size = 2 chunks per step
    with pytest.raises(ValueError, match=r"eval\.relearning\.text_batch_size: 4 vs 2"):
        _check_same_setup("a", rec(base), "b", old, 0, fix="")


def test_an_untestable_rows_mdd_is_at_the_level_it_would_face_once_testable():
    """Both sides forget every fact: the row cannot reach the level (p = 1), so it is not in
    Tarone's count K = 3 of the three continuous rows. Its mdd was computed at alpha / 3, but a
    difference that large would make it testable and face alpha / 4: the power at the reported
    mdd was 0.63, not 0.8 (0.51 for 0.57 at 16 facts)."""
    from factlens.stats import minimum_detectable_difference

    rng = np.random.default_rng(0)
    ids = [f"f{i}" for i in range(16)]
    ref = {f"m{j}": rng.uniform(size=16) for j in range(3)}
    loc = {k: v + rng.normal(0, 0.3, 16) for k, v in ref.items()}
    ref["forget_accuracy"] = loc["forget_accuracy"] = np.zeros(16)
    ev = lambda cols: EvalResult({"standard": SuiteResult("standard", tuple(  # noqa: E731
        Metric.from_samples(k, dict(zip(ids, v))) for k, v in cols.items()))})
    t = factlens.compare({"flu": [ev(ref)], "x": [ev(loc)]}, reference="flu").set_index("metric")
    assert t["testable"].tolist() == [True, True, True, False] and (t["n_tests"] == 3).all()
    row = t.loc["forget_accuracy"]
    assert row["mdd"] == pytest.approx(minimum_detectable_difference(16, alpha=0.05 / 4, binary=True))
    assert row["mdd"] > minimum_detectable_difference(16, alpha=0.05 / 3, binary=True)
    assert t.loc["m0", "mdd"] == pytest.approx(minimum_detectable_difference(
        16, sd=float(np.std(loc["m0"] - ref["m0"], ddof=1)), alpha=0.05 / 3))  # testable rows: alpha / K


def test_an_untestable_rows_mdd_is_not_stricter_than_the_level_it_would_face():
    """Tarone's K often stays put when one more test becomes testable: a lone row where both sides
    forget every fact would be alone in its family at 0.05 (mdd 0.449 at 16 facts), but was given
    the level 0.05 / 2 (0.512), understating what the run could detect."""
    from factlens.stats import minimum_detectable_difference

    ids = [f"f{i}" for i in range(16)]
    ev = lambda: EvalResult({"standard": SuiteResult("standard", (  # noqa: E731
        Metric.from_samples("forget_accuracy", dict.fromkeys(ids, 0.0)),))})
    row = factlens.compare({"flu": [ev()], "x": [ev()]}, reference="flu").iloc[0]
    assert not row["testable"] and row["n_tests"] == 1
    assert row["mdd"] == pytest.approx(minimum_detectable_difference(16, alpha=0.05, binary=True))
    assert row["mdd"] == pytest.approx(0.449, abs=1e-3)


def test_a_seed_with_missing_units_counts_once_in_the_test_as_in_the_difference():
    """Seed 0's eight facts are 0.3 lower, seed 1's two remaining facts 0.3 higher: each seed
    counting once, the difference is 0 and so is the evidence (p = 1). The test normalized each
    seed's weights before its NaN units were dropped, so seed 1 counted a quarter as much as in
    ``diff``, and the test found seed 0's effect (p = 0.109)."""
    from factlens.stats import sign_flip_test

    rng = np.random.default_rng(0)

    def ev(values, s):
        m = Metric("p_true", float(np.nanmean(values)), len(values),
                   samples={f"s{s}f{i}": float(v) for i, v in enumerate(values)})
        return EvalResult({"standard": SuiteResult("standard", (m,))})

    x0 = rng.uniform(size=8)
    x1 = rng.uniform(size=8)
    y0, y1 = x0 + 0.3, x1 - 0.3
    x1[:6] = y1[:6] = np.nan  # hand-built metrics with missing units (stored runs drop NaN); a NaN on one
    # side only is refused as a unit without a value is (test_a_nan_unit_value_is_no_value_as_none_is)
    row = factlens.compare({"flu": [ev(y0, 0), ev(y1, 1)], "x": [ev(x0, 0), ev(x1, 1)]}, reference="flu").iloc[0]
    assert row["diff"] == pytest.approx(0.0, abs=1e-12)
    d = np.r_[x0 - y0, x1[6:] - y1[6:]]
    assert row["p_value"] == pytest.approx(sign_flip_test(d, weights=np.r_[[1 / 8] * 8, [1 / 2] * 2])) == 1.0


def test_folders_pair_when_only_text_settings_their_suites_do_not_read_differ():
    """The linear lens reads the text's source alone: folders that ran it (and no other text
    reader) with other ``text.n_chunks`` were refused as measured differently; another source
    still is."""
    from factlens.comparison import _check_same_setup, _setup
    from factlens.evaluation import EvalConfig

    def rec(cfg: EvalConfig, suite: str = "linear_lens"):
        ev = EvalResult({suite: SuiteResult(suite, ())}, meta={"config": cfg.to_dict()})
        return _setup({"model": "m", "eval": ev})

    base = EvalConfig()
    _check_same_setup("a", rec(base), "b", rec(base.replace(text=base.text.replace(n_chunks=3, seq_len=8))), 0, fix="")
    with pytest.raises(ValueError, match=r"eval\.text\.source: None vs 'x\.txt'"):
        _check_same_setup("a", rec(base), "b", rec(base.replace(text=base.text.replace(source="x.txt"))), 0, fix="")
    with pytest.raises(ValueError, match=r"eval\.text\.n_chunks: 16 vs 3"):  # a suite that reads the chunks
        _check_same_setup("a", rec(base, "relearning"), "b",
                          rec(base.replace(text=base.text.replace(n_chunks=3)), "relearning"), 0, fix="")


def test_units_of_one_folder_with_other_facts_are_named_in_the_refusal(run_dir: Path, tmp_path: Path):
    """The message named the folder twice ("…/run and …/run hold different facts")."""
    import json
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    f = copy / "runs" / "seed0" / "random.json"
    rec = json.loads(f.read_text())
    for m in rec["eval"]["suites"]["standard"]["metrics"]:
        if m["name"].startswith("forget_") and m["samples"]:
            k = sorted(m["samples"])[0]
            m["samples"]["renamed"] = m["samples"].pop(k)
    f.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"\(flu\) and .*\(random\) hold different facts for seed 0 .*facts in one "
                                         r"only: \[.*'renamed'"):
        factlens.compare(copy)


def test_sides_without_a_common_seed_have_no_difference_not_one_across_seeds():
    """``flu`` ran seed 0 and ``rome`` seed 1 (two folders of other --seeds): the row's diff was
    rome(seed 1) - flu(seed 0), a difference of two trainings and two fact samples shown as the
    localization's effect; with no seed in common there is no difference to show."""
    def ev(vals):
        m = Metric.from_samples("forget_accuracy", {f"f{i}": float(v) for i, v in enumerate(vals)})
        return EvalResult({"standard": SuiteResult("standard", (m,))})

    t = factlens.compare({"flu": {0: ev([1] * 16)}, "rome": {1: ev([0] * 16)}}, reference="flu")
    r = t.iloc[0]
    assert (r["value"], r["reference_value"], r["n_seeds"]) == (0.0, 1.0, 0)
    assert math.isnan(r["diff"]) and math.isnan(r["p_value"]) and not r["significant"]
    # a metric without per-fact samples, on a common seed, still shows its (unpaired) difference
    one = Metric("retain_kl", 0.25, 1, higher_is_better=False)
    two = Metric("retain_kl", 0.75, 1, higher_is_better=False)
    t = factlens.compare({"flu": {0: EvalResult({"s": SuiteResult("s", (one,))})},
                          "rome": {0: EvalResult({"s": SuiteResult("s", (two,))})}}, reference="flu",
                         metrics=["retain_kl"])
    assert t.iloc[0]["diff"] == pytest.approx(0.5)


def test_the_multiple_choice_examples_part_folders_only_where_multiple_choice_was_scored():
    """A folder resumed after mcq_shots existed holds units recorded with and without it; the
    resume was accepted (no suite scored multiple choice) and the report then refused the folder
    as made with different settings (eval.mcq_shots: 'dataset' vs 'fixed')."""
    from factlens.comparison import _setup
    from factlens.evaluation.result import EvalResult, Metric, SuiteResult

    def rec(config, suite="standard"):
        m = Metric.from_samples("forget_accuracy", {"a": 1.0, "b": 0.0})
        return {"model": "m", "eval": EvalResult({suite: SuiteResult(suite, (m,))}, meta={"config": config})}

    old, new = {"n_shots": 2}, {"n_shots": 2, "mcq_shots": "fixed"}
    assert _setup(rec(old)) == _setup(rec(new))
    assert _setup(rec(old, "formats"))["eval.mcq_shots"] == "dataset" != _setup(rec(new, "formats"))["eval.mcq_shots"]


def test_a_unit_infinite_on_both_sides_is_refused_not_dropped():
    """``inf - inf`` is NaN: the unit left the difference, its interval and the test while ``value`` and
    ``reference_value`` (both inf) still counted it, so ``diff`` covered 6 of 7 units without a word."""
    inf = float("inf")

    def ev(values):
        m = Metric.from_samples("kl", {f"f{i}": v for i, v in enumerate(values)})
        return EvalResult({"s": SuiteResult("s", (m,))})

    with pytest.raises(ValueError, match=r"1 unit\(s\) have an infinite value \(e.g. \['f2'\]\)"):
        factlens.compare({"flu": [ev([0.1, 0.2, inf, 0.4, 0.5, 0.6, 0.7])],
                          "x": [ev([0.2, 0.3, inf, 0.5, 0.6, 0.7, 0.8])]})
    finite = factlens.compare({"flu": [ev([0.1, 0.2, 0.3, 0.4])], "x": [ev([0.2, 0.3, 0.4, 0.5])]})
    assert finite.iloc[0]["diff"] == pytest.approx(0.1) and finite.iloc[0]["n_facts"] == 4


def test_the_mdd_of_a_continuous_metric_with_0_1_values_is_the_sign_tests():
    """A selective recovery (declared continuous) whose facts scored 0 or 1 took the t-model's MDD:
    0.189 with one of 16 facts differing, where the exact sign-flip test had power 0.06 at that size
    and the same outcomes as an accuracy gave 0.449."""
    def ev(name, values, proportion):
        m = Metric.from_samples(name, {f"f{i}": float(v) for i, v in enumerate(values)}, proportion=proportion)
        return EvalResult({"relearning": SuiteResult("relearning", (m,))})

    for k in (1, 3, 5):
        a, b = [1.0] * k + [0.0] * (16 - k), [0.0] * 16
        mdd = {name: factlens.compare({"x": [ev(name, a, p)], "ref": [ev(name, b, p)]}, reference="ref")
               .iloc[0]["mdd_unadjusted"] for name, p in (("relearn_selective_recovery", False),
                                                          ("relearn_forget_accuracy", True))}
        assert mdd["relearn_selective_recovery"] == pytest.approx(mdd["relearn_forget_accuracy"]), k
        if k == 1:
            assert mdd["relearn_selective_recovery"] == pytest.approx(0.449, abs=1e-3)


def test_in_memory_results_compare_their_input_files_by_content(tmp_path: Path):
    """Results evaluated outside a run folder compared their text file by the path string: the same file
    under two spellings was refused, and a file changed between two evaluations (other chunks under the
    same unit names) was paired without a word. evaluate now records each input file's sha256."""
    from factlens.evaluation import EvalConfig, evaluate
    from factlens.files import file_sha256
    from factlens.data import sports_facts
    from factlens.tasks import sports_athlete_editing
    from factlens.testing import tiny_model

    model, task = tiny_model(), sports_athlete_editing(sports_facts(), 4, seed=0)
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on the mat and looked at the sun. " * 40)

    def ev(source: str) -> EvalResult:
        cfg = EvalConfig(text={"n_chunks": 2, "seq_len": 16, "source": source})
        return evaluate(model, task, original=model, suites=["side_effects"], config=cfg, show_progress=False)

    a = ev(str(text))
    assert a.meta["inputs"]["eval.text.source"]["sha256"] == file_sha256(text)
    b = ev(str(tmp_path / "." / "text.txt"))  # the same file, spelled otherwise: one setting
    assert len(factlens.compare({"flu": [a], "loc": [b]}, reference="flu")) > 0
    text.write_text("A dog ran in the park under the rain until night. " * 40)
    c = ev(str(text))  # the same path, other text: other chunks under the same names
    with pytest.raises(ValueError, match=r"measured seed 0 differently \(eval\.text\.source: "):
        factlens.compare({"flu": [a], "loc": [c]}, reference="flu")
