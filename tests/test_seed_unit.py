"""Comparisons with the seed as the unit (factlens.compare(..., unit="seed"), factlens.seed_unit) and
the interval that inverts the sign-flip test (factlens.stats.sign_flip_interval)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import factlens
from factlens.comparison import COMPARE_COLUMNS
from factlens.evaluation.result import EvalResult, Metric, SuiteResult
from factlens.stats import bootstrap_mean_interval, sign_flip_interval, sign_flip_test

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# sign_flip_interval


def test_the_interval_holds_the_shifts_the_test_does_not_reject():
    """On a grid of shifts, inside the interval the test's p-value is above 0.05 and outside it is
    at most 0.05 (the bisection's premise that p falls away from the mean), and 0 lies outside exactly
    when the test rejects the data themselves."""
    rng = np.random.default_rng(3)
    for n in (6, 7, 9, 12):
        for _ in range(4):
            d = rng.normal(0.2, 0.3, n)
            lo, hi = sign_flip_interval(d)
            assert lo < d.mean() < hi
            tol = 1e-6 * (d.max() - d.min())
            for delta in np.linspace(d.min() - 0.1, d.max() + 0.1, 121):
                if abs(delta - lo) < tol or abs(delta - hi) < tol:
                    continue
                assert (sign_flip_test(d - delta) > 0.05) == (lo < delta < hi), (n, delta, lo, hi)
            assert (lo < 0 < hi) == (sign_flip_test(d) > 0.05)


def test_the_interval_covers_as_claimed_where_a_bootstrap_of_few_seeds_does_not():
    """As a statistical test (fixed seed): over 400 sets of 7 normal differences the interval covers the
    true mean at least 95 % of the time (within 2 standard errors); the percentile bootstrap of the
    same seven values covers visibly less, which is why factlens does not use it over seeds."""
    rng = np.random.default_rng(0)
    reps, ours, boot = 400, 0, 0
    for _ in range(reps):
        d = rng.normal(0.3, 0.2, 7)
        lo, hi = sign_flip_interval(d)
        ours += lo <= 0.3 <= hi
        blo, bhi = bootstrap_mean_interval(d, n_resamples=2000, seed=1)
        boot += blo <= 0.3 <= bhi
    se = np.sqrt(0.95 * 0.05 / reps)
    assert ours / reps >= 0.95 - 2 * se
    assert boot / reps < 0.92 < ours / reps


def test_the_interval_of_few_equal_or_missing_differences():
    assert sign_flip_interval([0.1, 0.2, 0.3, 0.4, 0.5]) == (float("-inf"), float("inf"))  # 2/2**5 > 0.05
    assert sign_flip_interval([0.2]) is None and sign_flip_interval([]) is None
    assert sign_flip_interval([0.25] * 8) == (0.25, 0.25)
    with_nan = sign_flip_interval([0.1, np.nan, 0.3, 0.2, 0.4, 0.25, 0.35, 0.15])
    assert with_nan == pytest.approx(sign_flip_interval([0.1, 0.3, 0.2, 0.4, 0.25, 0.35, 0.15]))
    lo90, hi90 = sign_flip_interval([0.1, 0.3, 0.2, 0.4, 0.25, 0.35, 0.15], confidence=0.9)
    lo95, hi95 = sign_flip_interval([0.1, 0.3, 0.2, 0.4, 0.25, 0.35, 0.15])
    assert lo95 <= lo90 < hi90 <= hi95


@pytest.mark.parametrize("confidence", [0, 1, 1.5, True, "0.95"])
def test_the_interval_refuses_a_coverage_outside_0_1(confidence):
    with pytest.raises(ValueError, match="coverage between 0 and 1"):
        sign_flip_interval([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], confidence=confidence)


def test_the_interval_refuses_infinite_differences():
    with pytest.raises(ValueError, match="infinite"):
        sign_flip_interval([0.1, 0.2, np.inf, 0.4, 0.5, 0.6])


# ---------------------------------------------------------------------------------------------
# compare(..., unit="seed")


def _ev(values: dict[str, list[float]], *, at_chance: bool = False) -> EvalResult:
    ms = tuple(Metric.from_samples(name, {f"f{i}": float(x) for i, x in enumerate(v)}, at_chance=at_chance)
               for name, v in values.items())
    return EvalResult({"standard": SuiteResult("standard", ms)})


def _seeds(accuracies: list[float], n_facts: int = 20, name: str = "edit_accuracy") -> list[EvalResult]:
    """One result per seed whose 0/1 outcomes over ``n_facts`` facts have the given accuracy."""
    out = []
    for a in accuracies:
        k = int(round(a * n_facts))
        out.append(_ev({name: [1.0] * k + [0.0] * (n_facts - k)}))
    return out


def test_seeds_as_units_test_the_per_seed_differences():
    """The per-seed mean differences are the units: the exact sign-flip test and its interval over them,
    the same diff as pairing facts, one row per metric with the same columns."""
    flu = [0.95, 1.0, 0.9, 1.0, 0.95, 1.0, 0.9, 1.0]
    rnd = [0.5, 0.95, 0.3, 0.6, 0.85, 0.4, 0.7, 0.55]
    runs = {"flu": _seeds(flu), "random": _seeds(rnd)}
    t = factlens.compare(runs, unit="seed")
    facts = factlens.compare(runs)
    assert list(t.columns) == list(COMPARE_COLUMNS) and len(t) == 1
    r = t.iloc[0]
    d = np.array(rnd) - np.array(flu)
    assert r["test_unit"] == "seed" and facts.at[0, "test_unit"] == "fact"
    assert r["diff"] == pytest.approx(d.mean()) == pytest.approx(facts.at[0, "diff"])
    assert r["p_value"] == pytest.approx(sign_flip_test(d)) == pytest.approx(2 / 2 ** 8)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(sign_flip_interval(d))
    assert r["n_units"] == r["n_seeds"] == 8 and r["n_facts"] == 20 and r["unit"] == "facts"
    assert bool(r["significant"]) and r["n_tests"] == 1
    assert r["mdd"] == pytest.approx(factlens.stats.minimum_detectable_difference(8, sd=d.std(ddof=1), binary=False))
    assert facts.at[0, "p_value"] < r["p_value"]  # pooling 160 facts conditions on these eight draws


def test_a_localization_compared_with_itself_over_seeds_shows_nothing():
    acc = [0.5, 0.9, 0.7, 0.6, 0.8, 0.75, 0.65]
    t = factlens.compare({"flu": _seeds(acc), "copy": _seeds(acc)}, unit="seed")
    r = t.iloc[0]
    assert r["diff"] == 0 and r["p_value"] == 1.0 and not r["significant"]
    assert (r["ci_low"], r["ci_high"]) == (0.0, 0.0)


def test_a_difference_of_one_seed_in_seven_is_not_significant_over_seeds():
    """Where one draw of seven carries the whole difference, pooled facts call it significant and the
    seeds do not: the case the option exists for."""
    flu, rnd = [1.0] * 7, [1.0] * 6 + [0.2]
    runs = {"flu": _seeds(flu, n_facts=40), "random": _seeds(rnd, n_facts=40)}
    assert factlens.compare(runs).at[0, "significant"]
    seeds = factlens.compare(runs, unit="seed").iloc[0]
    assert not seeds["significant"] and seeds["p_value"] == 1.0
    assert seeds["ci_high"] == pytest.approx(0.0, abs=1e-9)


def test_complementary_metrics_are_one_test_over_seeds():
    flu, rnd = [0.9, 1.0, 0.95, 0.85, 1.0, 0.9], [0.5, 0.6, 0.4, 0.7, 0.55, 0.45]

    def ev(a: float) -> EvalResult:
        k = int(round(a * 20))
        x = [1.0] * k + [0.0] * (20 - k)
        return _ev({"edit_accuracy": x, "forget_accuracy": [1 - v for v in x]})

    t = factlens.compare({"flu": [ev(a) for a in flu], "random": [ev(a) for a in rnd]}, unit="seed")
    assert list(t["n_tests"]) == [1, 1]
    assert list(t["p_holm"]) == pytest.approx(list(t["p_value"]))


def test_rows_at_chance_or_paired_at_one_seed_are_not_tested_over_seeds():
    flu = [_ev({"mcq_accuracy": [1.0, 0.0] * 5}, at_chance=True) for _ in range(6)]
    rnd = [_ev({"mcq_accuracy": [0.0, 0.0] * 5}, at_chance=True) for _ in range(6)]
    r = factlens.compare({"flu": flu, "random": rnd}, unit="seed").iloc[0]
    assert r["at_chance"] and not r["significant"] and r["mdd"] != r["mdd"]
    one = {"flu": {0: _seeds([1.0])[0], 1: _seeds([1.0])[0]}, "random": {0: _seeds([0.5])[0], 1: _seeds([0.6])[0]},
           "late": {1: _seeds([0.2])[0]}}
    t = factlens.compare(one, unit="seed").set_index("localization")
    assert np.isnan(t.at["late", "p_value"]) and np.isnan(t.at["late", "ci_low"])  # None in a float column
    assert t.at["late", "n_seeds"] == 1 and t.at["late", "diff"] == pytest.approx(-0.8)
    assert t.at["random", "ci_low"] == float("-inf")  # two seeds: no sign pattern reaches 0.05


def test_token_weighted_seeds_take_their_weighted_means():
    """A seed's unit is the difference of the two sides' values there (chunks weighted by tokens)."""
    def ev(vals: list[float]) -> EvalResult:
        m = Metric.from_samples("text_accuracy", {f"chunk:{i}": v for i, v in enumerate(vals)},
                                weights={f"chunk:{i}": w for i, w in enumerate([10, 30, 60])})
        return EvalResult({"general": SuiteResult("general", (m,))})

    a = [ev([0.5, 0.6, 0.7]), ev([0.4, 0.5, 0.9])]
    b = [ev([0.5, 0.5, 0.5]), ev([0.5, 0.5, 0.5])]
    r = factlens.compare({"flu": b, "other": a}, unit="seed").iloc[0]
    per_seed = [(0.05 + 0.18 + 0.42) - 0.5, (0.04 + 0.15 + 0.54) - 0.5]
    assert r["diff"] == pytest.approx(np.mean(per_seed))
    assert r["value"] - r["reference_value"] == pytest.approx(r["diff"])


def test_seeds_as_units_refuse_one_seed_and_an_unknown_unit():
    runs = {"flu": _seeds([1.0]), "random": _seeds([0.5])}
    with pytest.raises(ValueError, match="at least 2 seeds"):
        factlens.compare(runs, unit="seed")
    with pytest.raises(ValueError, match="unit is 'fact'"):
        factlens.compare(runs, unit="seeds")


def test_the_cli_compares_over_seeds(planted_two_seed_run: Path, capsys):
    from factlens.runner.cli import main

    assert main(["compare", str(planted_two_seed_run), "--unit", "seed", "--metrics", "forget_accuracy"]) == 0
    out = capsys.readouterr().out
    assert "Seeds are the unit" in out and "| random | forget_accuracy |" in out and "2 seeds (≥" in out
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main(["compare", str(planted_two_seed_run), "--unit", "draws"])
    assert "invalid choice: 'draws'" in capsys.readouterr().err
    assert main(["compare", str(planted_two_seed_run), "--metrics", "forget_accuracy"]) == 0
    assert "Seeds are the unit" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# equivalence(..., unit="seed")


def test_equivalence_over_seeds_inverts_the_sign_flip_interval():
    """TOST over seeds: equivalent exactly when the 90 % interval that inverts the sign-flip test over
    the per-seed differences lies inside the margin; the interval and bound are that interval's."""
    flu = [0.90, 0.95, 0.85, 0.90, 1.0, 0.95, 0.90, 0.85, 0.95, 0.90]
    rnd = [0.95, 0.90, 0.85, 0.95, 0.95, 0.95, 0.85, 0.90, 0.90, 0.90]
    runs = {"flu": _seeds(flu), "random": _seeds(rnd)}
    d = np.array(rnd) - np.array(flu)
    lo, hi = sign_flip_interval(d, confidence=0.9)
    for margin, expected in ((max(-lo, hi) + 0.005, True), (max(-lo, hi) - 0.005, False)):
        r = factlens.equivalence(runs, margin=margin, unit="seed").iloc[0]
        assert r["test_unit"] == "seed" and r["n_units"] == 10 and r["tested"]
        assert bool(r["equivalent"]) is expected
        assert r["diff"] == pytest.approx(d.mean())
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi))
        assert r["bound"] == pytest.approx(max(-lo, hi))
    facts = factlens.equivalence(runs, margin=0.1).iloc[0]
    assert facts["test_unit"] == "fact" and facts["n_units"] == 200


def test_equivalence_over_four_seeds_is_never_reached():
    """At 1 - 2 * 0.05 the sign-flip interval needs 5 seeds to be bounded: four identical-looking draws
    rule nothing out over seeds."""
    acc = [0.9, 0.95, 0.85, 0.9]
    r = factlens.equivalence({"flu": _seeds(acc), "random": _seeds([a + 0.05 for a in acc])}, margin=0.5,
                             unit="seed").iloc[0]
    assert r["tested"] and not r["equivalent"] and r["bound"] == float("inf")
    with pytest.raises(ValueError, match="unit is 'fact'"):
        factlens.equivalence({"flu": _seeds(acc), "random": _seeds(acc)}, margin=0.1, unit="draw")
    with pytest.raises(ValueError, match="at least 2 seeds"):
        factlens.equivalence({"flu": _seeds([1.0]), "random": _seeds([1.0])}, margin=0.1, unit="seed")


def test_the_cli_tests_equivalence_over_seeds(planted_two_seed_run: Path, capsys):
    from factlens.runner.cli import main

    assert main(["equivalence", str(planted_two_seed_run), "--unit", "seed", "--margin", "0.5",
                 "--metrics", "forget_accuracy"]) == 0
    out = capsys.readouterr().out
    assert "inverts the exact sign-flip test over the seeds" in out and "2 seeds (≥" in out


def test_planted_lookup_edit_beats_a_downstream_edit_over_six_seeds():
    """The planted model (tests/test_comparison.py's localizations of known different effect), six task
    seeds, each its own forget set and training: over the seeds the lookup-MLP edit forgets more than the
    layer-3 MLP's (exact p = 2/2**6, one metric), and the lookup edit against itself shows nothing."""
    from factlens import EditConfig, Mask
    from factlens.tasks import sports_athlete_editing
    from factlens.testing import planted_fact_model

    p = planted_fact_model()
    cfg = EditConfig.fast(lr=1e-2, n_sft_chunks=8)
    evals: dict[str, list] = {"lookup": [], "late_mlp": []}
    for s in range(6):
        task = sports_athlete_editing(p.dataset, n_forget=16, seed=s)
        for name, mask in {"lookup": Mask([p.lookup_mlp]), "late_mlp": Mask.from_labels(["L3.mlp"])}.items():
            e = factlens.edit(p.model, mask, task, config=cfg, show_progress=False)
            evals[name].append(factlens.evaluate(e.model, task, original=p.model, suites=["standard"],
                                                 show_progress=False))
    r = factlens.compare(evals, reference="lookup", metrics=["forget_accuracy"], unit="seed").iloc[0]
    assert r["significant"] and r["diff"] > 0 and r["ci_low"] > 0 and r["p_value"] == pytest.approx(2 / 2 ** 6)
    same = factlens.compare({"lookup": evals["lookup"], "again": evals["lookup"]}, reference="lookup", unit="seed")
    assert not same["significant"].any() and (same["diff"] == 0).all()
