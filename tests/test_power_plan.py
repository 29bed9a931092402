"""Power plans: factlens.power.units_needed (the inverse of the MDD) and factlens.plan_units / ``factlens plan``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import factlens
from factlens.evaluation.result import EvalResult, Metric, SuiteResult
from factlens.power import minimum_detectable_difference, units_needed
from factlens.power_plan import PLAN_COLUMNS
from factlens.stats import sign_flip_test

pytestmark = pytest.mark.usefixtures("one_thread")


def _ev(values, name: str = "forget_accuracy", **kw) -> EvalResult:
    m = Metric.from_samples(name, {f"f{i}": float(x) for i, x in enumerate(values)}, **kw)
    return EvalResult({"standard": SuiteResult("standard", (m,))})


# ---------------------------------------------------------------------------------------------
# units_needed


@pytest.mark.parametrize("kw", [dict(sd=0.5), dict(sd=0.3, alpha=0.05 / 4), dict(), dict(sd=0.4, binary=True),
                                dict(sd=0.3, step=1 / 3)])
@pytest.mark.parametrize("difference", [0.3, 0.12])
def test_units_needed_is_where_the_mdd_reaches_the_difference(kw, difference):
    """At the n returned the MDD is at most the difference, one unit fewer it is above it (where the MDD falls
    with n; for these cases it does around the answer)."""
    n = units_needed(difference, **kw)
    assert minimum_detectable_difference(n, **kw) <= difference < minimum_detectable_difference(n - 1, **kw)
    assert units_needed(-difference, **kw) == n  # a difference of either sign


def test_units_needed_without_an_answer():
    assert units_needed(0.01, sd=0.5, max_units=1000) == math.inf
    assert math.isnan(units_needed(0.1, sd=0.0, binary=False))  # continuous, no spread: no MDD to reach
    for bad in (0, 0.0, math.inf, math.nan, True):
        with pytest.raises(ValueError, match="difference must be a finite non-zero number"):
            units_needed(bad)
    with pytest.raises(ValueError, match="max_units must be an integer of at least 2"):
        units_needed(0.1, max_units=1)


def test_a_small_lattice_plan_is_where_compares_mdd_with_the_sizes_reaches_the_difference():
    """Accuracies over a few prompts differ by several lattice sizes, and compare's MDD then also runs
    the sizes simulation, which the plan left out: at the 42 facts it planned for 0.2 (sd 0.45, thirds)
    compare's MDD is above 0.2, so the run it asked for missed the difference more often than 1 in 5.
    Up to SIZES_PLANNED_MAX_N units the plan now searches with the simulation; above, the plan without
    it, shrunk by the simulation's rise at the end of that range."""
    from factlens import power

    kw, sizes = dict(sd=0.45, step=1 / 3), (1 / 3, 2 / 3)
    plain = units_needed(0.2, **kw)
    assert minimum_detectable_difference(plain, sizes=sizes, **kw) > 0.2  # what compare says at the old plan
    n = units_needed(0.2, sizes=sizes, **kw)
    assert n > plain
    assert minimum_detectable_difference(n, sizes=sizes, **kw) <= 0.2 < minimum_detectable_difference(
        n - 1, sizes=sizes, **kw)
    assert units_needed(0.2, sizes=(1 / 3,), **kw) == plain  # one size: the one-step model is the simulation's
    cap = power.SIZES_PLANNED_MAX_N
    beyond = units_needed(0.163, sizes=sizes, **kw)  # without sizes 63 units, with them more than the cap
    rise = minimum_detectable_difference(cap, sizes=sizes, **kw) / minimum_detectable_difference(cap, **kw)
    assert beyond > cap and beyond == max(units_needed(0.163 / rise, **kw), cap + 1)
    assert units_needed(0.12, sizes=sizes, **kw) == units_needed(0.12, **kw) > cap  # not simulated up there


def test_a_plans_search_does_not_keep_its_large_critical_tables():
    """The sign test's critical counts were cached for every n a plan's search tried (up to a million
    0/1 units): ~40 arrays of n + 1 integers, ~180 MB held for the rest of the process. Only the small
    n of compare's rows are kept now (the doubling passes 2, 4, ... 4096 on its way); same answer."""
    from factlens import power

    power._sign_test_critical.cache_clear()
    n = units_needed(0.012, sd=0.3, binary=True)
    assert n > power._CACHED_CRITICAL_N
    assert power._sign_test_critical.cache_info().currsize <= math.log2(power._CACHED_CRITICAL_N) + 1
    assert minimum_detectable_difference(n, sd=0.3, binary=True) <= 0.012 < minimum_detectable_difference(
        n - 1, sd=0.3, binary=True)
    power._sign_test_critical.cache_clear()


def test_the_planned_units_find_the_difference_four_times_in_five():
    """Paired 0/1 outcomes with the pilot's spread: at the planned n, a true difference of the planned size
    is found by the exact sign-flip test in about 80 % of simulated runs (300, 2 binomial SE either way)."""
    sd, delta = 0.6, 0.25
    n = units_needed(delta, sd=sd, binary=True)
    pm = (sd * sd + delta * delta - delta) / 2
    rng = np.random.default_rng(5)
    draws = rng.choice([1.0, -1.0, 0.0], size=(300, n), p=[pm + delta, pm, 1 - 2 * pm - delta])
    found = sum(sign_flip_test(d, n_resamples=999, seed=s) < 0.05 for s, d in enumerate(draws))
    assert abs(found / 300 - 0.8) <= 2 * math.sqrt(0.8 * 0.2 / 300) + 0.01, (n, found)


# ---------------------------------------------------------------------------------------------
# plan_units


def test_a_plan_row_needs_the_units_at_which_its_own_mdd_reaches_the_difference():
    runs = {"flu": [_ev([0, 1] * 8), _ev([0, 0, 1, 1] * 4)], "random": [_ev([1, 1, 0, 1] * 4), _ev([1] * 16)]}
    t = factlens.plan_units(runs, difference=0.2)
    assert tuple(t.columns) == PLAN_COLUMNS and len(t) == 1
    r = t.iloc[0]
    cmp = factlens.compare(runs).iloc[0]
    assert r["mdd"] == cmp["mdd"] and r["n_units"] == cmp["n_units"] == 32 and r["level"] == 0.05 / cmp["n_tests"]
    assert r["binary"] and r["tested"]
    mdd = lambda n: minimum_detectable_difference(n, sd=r["sd"], alpha=r["level"], binary=True)  # noqa: E731
    assert mdd(r["units_needed"]) <= 0.2 < mdd(r["units_needed"] - 1)
    assert mdd(32) == pytest.approx(r["mdd"])  # the plan starts from the row's own test
    # in run terms: 16 facts per seed today, 2 seeds today
    assert r["scale"] == r["units_needed"] / 32
    assert r["seeds_needed"] == math.ceil(r["units_needed"] / 16)
    assert r["facts_needed"] == math.ceil(r["units_needed"] / 2)


def test_a_plan_over_seeds_counts_seeds():
    rng = np.random.default_rng(0)
    runs = {"flu": {s: _ev(rng.random(12) < 0.5) for s in range(7)},
            "random": {s: _ev(rng.random(12) < 0.7) for s in range(7)}}
    r = factlens.plan_units(runs, difference=0.1, unit="seed").iloc[0]
    assert r["test_unit"] == "seed" and r["n_units"] == 7 and not r["binary"]
    assert r["seeds_needed"] == r["units_needed"] and r["facts_needed"] is None
    assert minimum_detectable_difference(int(r["units_needed"]), sd=r["sd"], alpha=r["level"], binary=False) <= 0.1


def test_rows_that_compare_does_not_test_have_no_plan():
    runs = {"flu": [_ev([0, 1] * 8, baseline=0.5, at_chance=True)], "random": [_ev([1] * 16, baseline=0.5,
                                                                                     at_chance=True)]}
    r = factlens.plan_units(runs, difference=0.2).iloc[0]
    assert not r["tested"] and math.isnan(r["units_needed"]) and math.isnan(r["seeds_needed"])


@pytest.mark.parametrize("bad", [0, math.nan, math.inf, "0.1", True])
def test_a_plan_refuses_a_difference_that_is_no_size(bad):
    with pytest.raises(ValueError, match="difference must be a finite non-zero number"):
        factlens.plan_units({"flu": [_ev([0, 1] * 8)], "random": [_ev([1] * 16)]}, difference=bad)


def test_a_plan_refuses_a_power_outside_0_1():
    with pytest.raises(ValueError, match="power must be a number strictly between 0 and 1"):
        factlens.plan_units({"flu": [_ev([0, 1] * 8)], "random": [_ev([1] * 16)]}, difference=0.1, power=1.0)


def test_the_cli_prints_and_writes_a_plan(planted_two_seed_run: Path, tmp_path: Path, capsys):
    from factlens.runner.cli import main

    csv = tmp_path / "plan.csv"
    assert main(["plan", str(planted_two_seed_run), "--difference", "0.1", "--metrics", "forget_accuracy",
                 "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "| random | forget_accuracy | fact |" in out and "Units needed to find a true difference of 0.1" in out
    assert csv.read_text().startswith("localization,metric,")
    assert main(["plan", str(planted_two_seed_run), "--difference", "0", "--metrics", "forget_accuracy"]) == 2
    assert "difference must be a finite non-zero number" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# equivalence plans (margin=)


def _pilot(n_each_way: int, n_same: int) -> dict:
    """One seed of paired 0/1 outcomes: n_each_way facts lost and n_each_way gained, n_same kept (diff 0)."""
    ref = [1] * n_each_way + [0] * n_each_way + [1] * n_same
    loc = [0] * n_each_way + [1] * n_each_way + [1] * n_same
    return {"flu": [_ev(ref)], "random": [_ev(loc)]}


def test_an_equivalence_plan_is_the_one_sided_tests_plan_at_the_tost_level():
    """A verdict that ends undecided may be meant to end equivalent: margin= plans the TOST. Each of its
    one-sided tests (the row's test two-sided at twice the level) must find margin - |assumed| with power
    (1 + power) / 2; equivalence's own bound and family level are in the row."""
    runs = _pilot(4, 32)
    t = factlens.plan_units(runs, margin=0.1)
    assert tuple(t.columns) == PLAN_COLUMNS and len(t) == 1
    r, e = t.iloc[0], factlens.equivalence(runs, margin=0.1).iloc[0]
    assert r["goal"] == "equivalence" and r["margin"] == 0.1 and r["assumed"] == 0 and math.isnan(r["difference"])
    assert r["bound"] == e["bound"] and r["level"] == 0.05 / e["n_tests"] and r["tested"]
    kw = dict(sd=r["sd"], alpha=2 * r["level"], power=0.9, binary=True)
    assert r["units_needed"] == units_needed(0.1, **kw)
    assert minimum_detectable_difference(int(r["units_needed"]), **kw) <= 0.1
    shifted = factlens.plan_units(runs, margin=0.1, assumed=-0.03).iloc[0]  # a true difference: more units
    assert shifted["units_needed"] == units_needed(0.07, **kw) > r["units_needed"]
    assert factlens.plan_units(runs, margin={"forget_accuracy": 0.1}).iloc[0]["units_needed"] == r["units_needed"]
    d = factlens.plan_units(runs, difference=0.1).iloc[0]
    assert d["goal"] == "difference" and math.isnan(d["margin"]) and math.isnan(d["bound"])


def test_an_equivalence_plan_reaches_its_power():
    """At the planned n, runs whose localizations truly do not differ (a fifth of the facts discordant, as
    in the pilot) are declared equivalent within the margin by factlens.equivalence itself at least 4 times
    in 5 (80 simulated runs; measured 0.85 at 100), and at three fifths of it clearly less often."""
    import warnings

    n = int(factlens.plan_units(_pilot(4, 32), margin=0.1).iloc[0]["units_needed"])
    rng = np.random.default_rng(11)

    def declared(k: int, reps: int) -> float:
        hits = 0
        for _ in range(reps):
            u = rng.random(k)
            ref = np.where(u < 0.1, 1, np.where(u < 0.2, 0, 1))
            loc = np.where(u < 0.1, 0, np.where(u < 0.2, 1, 1))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hits += bool(factlens.equivalence({"flu": [_ev(ref)], "x": [_ev(loc)]}, margin=0.1)["equivalent"].iloc[0])
        return hits / reps

    assert declared(n, 80) >= 0.8 - 2 * math.sqrt(0.8 * 0.2 / 80), n
    assert declared(int(0.6 * n), 40) < 0.6, n


def test_an_equivalence_plan_refuses_what_it_cannot_plan():
    runs = _pilot(4, 32)
    with pytest.raises(ValueError, match="give difference= .* or margin= .*, one of them"):
        factlens.plan_units(runs)
    with pytest.raises(ValueError, match="one of them"):
        factlens.plan_units(runs, difference=0.1, margin=0.1)
    with pytest.raises(ValueError, match=r"assumed=0.1 is not inside the margin 0.1 of 'forget_accuracy'"):
        factlens.plan_units(runs, margin=0.1, assumed=0.1)
    with pytest.raises(ValueError, match="assumed must be a finite number"):
        factlens.plan_units(runs, margin=0.1, assumed=math.nan)
    with pytest.raises(ValueError, match="margin is the largest difference you would call negligible"):
        factlens.plan_units(runs, margin=-0.1)


def test_the_cli_plans_equivalence(planted_two_seed_run: Path, capsys):
    from factlens.runner.cli import main

    run = str(planted_two_seed_run)
    assert main(["plan", run, "--margin", "forget_accuracy=0.5"]) == 0
    out = capsys.readouterr().out
    assert "| bound now | margin |" in out and "Units needed to show equivalence to flu within the margin" in out
    assert "if the true difference is 0 " in out
    assert main(["plan", run, "--margin", "0.5", "--assumed", "0.1", "--metrics", "forget_accuracy"]) == 0
    assert "if the true difference is 0.1 " in capsys.readouterr().out
    assert main(["plan", run, "--difference", "0.1", "--assumed", "0.1"]) == 2
    assert "--assumed is the true difference of an equivalence plan" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):  # argparse: one goal
        main(["plan", run, "--difference", "0.1", "--margin", "0.1"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["plan", run, "--margin", "x"]) == 2
    assert "--margin takes a number" in capsys.readouterr().err
