"""factlens.stats: intervals, the paired sign-flip test, Holm, power; Metric.from_samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from factlens.evaluation.result import EvalResult, Metric, SuiteResult
from factlens.stats import (bootstrap_interval, bootstrap_mean_interval, hierarchical_bootstrap_interval, holm, max_wilson_interval,
                            minimum_detectable_difference, paired_bootstrap_diff, sign_flip_test, smallest_attainable_p,
                            variance_components, wilson_interval)

N_DATASETS = 200


def _within_binomial(k: int, n: int, p: float) -> bool:
    """``k`` of ``n`` is compatible with rate ``p`` (two-sided binomial test at 0.01)."""
    return binomtest(k, n, p).pvalue > 0.01


# -- intervals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("k,n,expected", [(8, 16, (0.280, 0.720)), (0, 10, (0.000, 0.278)), (10, 10, (0.722, 1.000)),
                                          (3, 20, (0.052, 0.360))])
def test_wilson_matches_textbook(k, n, expected):
    # textbook Wilson: (p + z^2/2n ± z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.95996
    z = 1.959964
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = wilson_interval(k, n)
    assert (round(lo, 3), round(hi, 3)) == expected
    assert lo == pytest.approx(max(c - h, 0.0), abs=1e-6) and hi == pytest.approx(min(c + h, 1.0), abs=1e-6)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(5, 4)
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    rng = np.random.default_rng(1)
    x = rng.normal(0.3, 1.0, 40)
    a, b = bootstrap_mean_interval(x, seed=3), bootstrap_mean_interval(x, seed=3)
    assert a == b and a[0] < x.mean() < a[1]
    assert bootstrap_mean_interval([0.5]) is None  # one unit: nothing to resample
    assert bootstrap_mean_interval([0.2] * 5) == (pytest.approx(0.2), pytest.approx(0.2))
    # coverage over many datasets: close to 95 % (percentile bootstrap is slightly liberal at n = 40)
    hits = sum(lo <= 0.3 <= hi for lo, hi in (bootstrap_mean_interval(rng.normal(0.3, 1.0, 40), seed=s)
                                              for s in range(N_DATASETS)))
    assert 0.88 * N_DATASETS <= hits <= N_DATASETS


def test_weighted_bootstrap_uses_the_weights():
    v, w = [0.0, 1.0] * 20, [1.0, 3.0] * 20  # weighted mean 0.75, unweighted 0.5
    lo, hi = bootstrap_mean_interval(v, weights=w)
    assert 0.5 < lo < 0.75 < hi
    lo_u, hi_u = bootstrap_mean_interval(v)
    assert lo_u < 0.5 < hi_u < 0.75
    with pytest.raises(ValueError, match="weights"):
        bootstrap_mean_interval(v, weights=[1.0])


def test_hierarchical_interval_includes_seed_variance():
    rng = np.random.default_rng(0)
    same = [rng.binomial(1, 0.5, 30).astype(float) for _ in range(3)]
    shifted = [rng.binomial(1, p, 30).astype(float) for p in (0.1, 0.5, 0.9)]  # a strong seed effect
    w_same = np.diff(hierarchical_bootstrap_interval(same))[0]
    w_shift = np.diff(hierarchical_bootstrap_interval(shifted))[0]
    w_pooled = np.diff(bootstrap_mean_interval(np.concatenate(shifted)))[0]
    assert w_shift > 1.5 * w_pooled and w_shift > w_same


def test_hierarchical_interval_resamples_facts_afresh_for_every_draw_of_a_seed():
    """The seeds-then-facts bootstrap has a known variance: (V_seed + mean_g var_g / n_g) / G,
    with V_seed the plug-in variance of the G seed means. When a resample that drew one seed
    k times reused that seed's one resampled mean, the fact term grew by E[k^2] = 2 - 1/G
    (the interval was ~15 % too wide here)."""
    rng = np.random.default_rng(11)
    groups = [rng.normal(0.0, 1.0, 20) for _ in range(3)]
    seed_means = np.array([g.mean() for g in groups])
    fact_var = np.mean([g.var() / len(g) for g in groups])
    sd = np.sqrt((seed_means.var() + fact_var) / len(groups))
    width = np.diff(hierarchical_bootstrap_interval(groups, n_resamples=20000))[0]
    # the statistic is a mean of normal draws, so the 95 % percentile interval is ~3.92 sd wide
    assert width / (2 * 1.959964) == pytest.approx(sd, rel=0.05)


# -- the sign-flip test --------------------------------------------------------------------------
def test_sign_flip_exact_values():
    assert sign_flip_test([1.0] * 6) == pytest.approx(2 / 2 ** 6)
    assert sign_flip_test([1.0] * 6, alternative="greater") == pytest.approx(1 / 2 ** 6)
    assert sign_flip_test([0.0] * 8) == 1.0 and sign_flip_test([]) == 1.0
    assert sign_flip_test([1.0, -1.0, 1.0, -1.0]) == 1.0
    with pytest.raises(ValueError, match="alternative"):
        sign_flip_test([1.0], alternative="bigger")


def test_sign_flip_exact_test_does_not_depend_on_the_scale_of_the_data():
    """Six equal tiny differences (a KL change of 1e-13) are as significant as six equal
    large ones; an absolute tie tolerance of 1e-12 used to call every pattern a tie (p = 1)."""
    for scale in (1e-13, 1e-6, 1.0, 1e6):
        assert sign_flip_test([scale] * 6) == pytest.approx(2 / 2 ** 6), scale
        assert sign_flip_test(scale * np.array([1.0, 2.0, -0.5, 3.0, 1.5, 2.5, 0.7])) == pytest.approx(
            sign_flip_test([1.0, 2.0, -0.5, 3.0, 1.5, 2.5, 0.7])), scale


def test_sign_flip_is_exact_when_few_of_many_units_differ():
    """32 facts of which 5 moved, all the same way: the exact p is 2 / 2**5 whatever the unmoved facts.
    Before, more than 16 units meant 9,999 random sign patterns, so the p-value (and Tarone's smallest
    attainable p, which decides whether a metric counts in the Holm family) carried Monte Carlo noise."""
    d = np.zeros(32)
    d[[3, 9, 14, 20, 27]] = 1.0
    assert sign_flip_test(d) == 2 / 2 ** 5 and sign_flip_test(d, seed=7) == 2 / 2 ** 5
    assert smallest_attainable_p(np.where(d > 0, [-1.0, 1.0] * 16, 0.0)) == 2 / 2 ** 5
    assert sign_flip_test(d, alternative="greater") == 2 ** -5
    w = np.r_[np.full(16, 1 / 16), np.full(16, 1 / 32)]  # weights of two seeds: the same exact enumeration
    mixed = d * np.array([1, -1] * 16)
    assert sign_flip_test(mixed, weights=w) == sign_flip_test(mixed[d != 0], weights=w[d != 0])


def _brute_force_sign_flip(d: np.ndarray) -> float:
    signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
    null, obs, tol = signs @ d, d.sum(), 1e-9 * np.abs(d).sum()
    return min(1.0, 2 * min(np.mean(null >= obs - tol), np.mean(null <= obs + tol)))


def test_sign_flip_counting_equals_enumerating_every_pattern():
    """The exact test counts how many differences of each size keep their sign; on sizes with
    repeats and without, it gives the p-value of enumerating all 2**n patterns."""
    rng = np.random.default_rng(3)
    for trial in range(30):
        n = int(rng.integers(1, 13))
        sizes = rng.choice([0.25, 0.5, 1.0, 0.3], n) if trial % 2 else rng.normal(0.3, 1.0, n)
        d = sizes * rng.choice([-1.0, 1.0], n)
        assert sign_flip_test(d) == pytest.approx(_brute_force_sign_flip(d), abs=1e-12), d


def test_sign_flip_is_exact_for_accuracies_over_three_prompts_at_128_facts():
    """Differences of accuracies over three prompts take the sizes 1/3, 2/3 and 1, but in floats
    ``1/3 - 0`` and ``2/3 - 1/3`` differ in the last bit: one size became two, the exact test's
    terms grew from 24,480 to 2.3 million and it fell back to random patterns (0.00258 for the
    exact 0.00243). Sizes equal up to rounding are one size now; the exact p-value is the
    sign-flip distribution of the integer counts (thirds), summed independently here."""
    from itertools import product

    from scipy.stats import binom

    from factlens.sign_flip import _n_sign_counts

    rng = np.random.default_rng(7)
    levels = np.array([0, 1 / 3, 2 / 3, 1.0])
    x, y = (levels[rng.choice(4, 128, p=p)] for p in ([.1, .2, .3, .4], [.2, .3, .3, .2]))
    d = (x - y)[x != y]
    thirds = np.rint(np.abs(d) * 3).astype(int)
    counts = [int((thirds == k).sum()) for k in (1, 2, 3)]
    assert _n_sign_counts(d) == math.prod(c + 1 for c in counts)
    obs = int(np.rint((d * 3).sum()))
    pmf = [binom.pmf(np.arange(c + 1), c, 0.5) for c in counts]
    greater = less = 0.0  # P(sum of k * (2 * j - c) over the three sizes >= / <= obs), j ~ Bin(c, 1/2)
    for js in product(*(range(c + 1) for c in counts)):
        stat = sum(k * (2 * j - c) for k, j, c in zip((1, 2, 3), js, counts))
        pr = pmf[0][js[0]] * pmf[1][js[1]] * pmf[2][js[2]]
        greater += pr * (stat >= obs)
        less += pr * (stat <= obs)
    assert sign_flip_test(x - y) == pytest.approx(min(1.0, 2 * min(greater, less)), rel=1e-9)


def test_sign_flip_is_exact_and_symmetric_for_many_zero_one_outcomes():
    """40 facts of 0/1 outcomes, 28 better and 12 worse: the exact two-sided sign test, whichever
    evaluation is subtracted. Before, more than 16 differing facts drew 9,999 random sign patterns:
    the p-value carried Monte Carlo error and x - y and y - x gave different p-values."""
    from scipy.stats import binom

    d = np.r_[np.ones(28), -np.ones(12), np.zeros(8)]
    expected = 2 * binom.sf(27, 40, 0.5)
    assert sign_flip_test(d) == pytest.approx(expected, rel=1e-12)
    assert sign_flip_test(-d) == sign_flip_test(d) == sign_flip_test(d, seed=5)
    # three seeds of 16 facts, each seed weighted once: still one size, still exact
    w = np.full(48, 1 / 16)
    assert sign_flip_test(d, weights=w) == pytest.approx(expected, rel=1e-12)
    # accuracies over four prompts per fact (sizes 1/4, 1/2, 3/4, 1): 60 facts, exact and symmetric
    rng = np.random.default_rng(0)
    acc = rng.integers(-4, 5, 60) / 4 + 0.0
    assert sign_flip_test(acc) == sign_flip_test(-acc)
    assert sign_flip_test(acc) == pytest.approx(sign_flip_test(acc, exact_max_n=0, n_resamples=50000, seed=1), abs=0.01)


def test_sign_flip_random_patterns_give_one_p_value_whichever_side_is_subtracted():
    """40 continuous differences (too many sizes to enumerate): x - y and y - x drew other random
    sign patterns, so a comparison against FLU and the same one against random printed different
    p-values (0.0020 and 0.0042 for one pair of a stored run). The orientation is canonical now."""
    d = np.random.default_rng(11).normal(0.15, 1.0, 40)
    w = np.random.default_rng(12).uniform(0.5, 1.5, 40)
    assert sign_flip_test(d) == sign_flip_test(-d)
    assert sign_flip_test(d, weights=w) == sign_flip_test(-d, weights=w)
    assert sign_flip_test(d, alternative="greater") == sign_flip_test(-d, alternative="less")
    assert sign_flip_test(d, alternative="less") == sign_flip_test(-d, alternative="greater")
    assert sign_flip_test(d[::-1]) == sign_flip_test(d)  # and whatever order the units come in


def test_sign_flip_exact_test_of_thousands_of_zero_one_outcomes():
    """3 seeds x 1,000 facts of 0/1 outcomes: comb(3000, k) does not fit a float (it overflowed)."""
    from scipy.stats import binom

    d = np.r_[np.ones(1600), -np.ones(1400)]
    assert sign_flip_test(d) == pytest.approx(2 * binom.sf(1599, 3000, 0.5), rel=1e-9)
    d = np.r_[np.ones(530), -np.ones(470)]
    assert sign_flip_test(d) == pytest.approx(2 * binom.sf(529, 1000, 0.5), rel=1e-9)


def test_sign_flip_exact_and_random_paths_agree():
    d = np.random.default_rng(4).normal(0.4, 1.0, 14)
    exact = sign_flip_test(d)
    sampled = sign_flip_test(d, exact_max_n=0, n_resamples=20000, seed=1)
    assert abs(exact - sampled) < 0.02


@pytest.mark.parametrize("n", [12, 40])  # 12: exact enumeration, 40: scipy permutation_test
def test_sign_flip_rejects_a_planted_effect(n):
    rng = np.random.default_rng(n)
    p = [sign_flip_test(rng.normal(1.0, 1.0, n), n_resamples=999, seed=s) for s in range(20)]
    assert np.mean(np.array(p) < 0.05) >= 0.8


@pytest.mark.parametrize("n", [12, 40])
def test_sign_flip_keeps_the_nominal_rate_under_the_null(n):
    rng = np.random.default_rng(100 + n)
    rejections = sum(sign_flip_test(rng.normal(0.0, 1.0, n), n_resamples=999, seed=s) < 0.05
                     for s in range(N_DATASETS))
    assert _within_binomial(rejections, N_DATASETS, 0.05) or rejections < 0.05 * N_DATASETS


def test_paired_bootstrap_diff_single_and_several_seeds():
    d, ci = paired_bootstrap_diff([1, 1, 1, 0, 1, 1, 1, 1], [0, 0, 1, 0, 0, 0, 0, 1])
    assert d == pytest.approx(0.625) and ci[0] > 0
    d2, ci2 = paired_bootstrap_diff([[1, 1, 0, 1], [1, 1, 1, 1]], [[0, 0, 0, 1], [0, 1, 0, 0]])
    assert d2 == pytest.approx(np.mean([0.5, 0.75])) and ci2[0] <= d2 <= ci2[1]
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap_diff([1, 0], [1])


# -- multiple testing, power, variance split ---------------------------------------------------
def test_holm_matches_the_step_down_definition():
    p = [0.01, 0.04, 0.03, float("nan")]
    adj = holm(p)
    assert adj[:3].tolist() == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adj[3])


def test_holm_equals_statsmodels_and_leaves_the_garbage_collector_alone(monkeypatch):
    # statsmodels' multipletests(method="holm") runs gc.collect() at every call: 0.2 s each in a
    # small process, ~0.5 s in the test run's, where the Tarone simulation below took 190 s
    import gc

    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    cases = [rng.uniform(0, 1, n) ** 3 for n in (1, 2, 5, 17, 60)]
    cases += [np.array([0.01, 0.01, 0.02, 0.5, 0.5]), np.array([0.3, 0.9, 0.6]), np.array([1e-9, 0.2, 0.2, 0.2])]
    for p in cases:
        assert holm(p) == pytest.approx(multipletests(p, method="holm")[1], rel=1e-12, abs=0)
    collected = []
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(a) or 0)
    holm([0.01, 0.04, 0.03])
    assert collected == []


def test_minimum_detectable_difference_has_the_stated_power():
    """At the MDD, the sign-flip test rejects about 80 % of the time (simulation)."""
    n, sd = 20, 1.0
    mdd = minimum_detectable_difference(n, sd=sd)
    rng = np.random.default_rng(7)
    rejections = sum(sign_flip_test(rng.normal(mdd, sd, n), exact_max_n=0, n_resamples=999, seed=s) < 0.05
                     for s in range(N_DATASETS))
    assert _within_binomial(rejections, N_DATASETS, 0.8)


@pytest.mark.parametrize("n,m", [(16, 7), (32, 28)])
def test_minimum_detectable_difference_has_the_stated_power_at_holm_levels(n, m):
    """At the small levels of the main job's Holm families (0.05 / 7 headline tests at 16
    held-out facts, 0.05 / 28 tests at 32 facts) the t-test approximation inside the MDD
    still gives about 80 % power for the sign-flip test."""
    alpha = 0.05 / m
    mdd = minimum_detectable_difference(n, sd=1.0, alpha=alpha)
    rng = np.random.default_rng(5)
    rejections = sum(sign_flip_test(rng.normal(mdd, 1.0, n), seed=s) < alpha for s in range(300))
    assert _within_binomial(rejections, 300, 0.8), rejections


@pytest.mark.parametrize("n, m", [(96, 19), (96, 1), (64, 12), (200, 40), (32, 19)])
def test_minimum_detectable_difference_is_positive_at_every_level(n, m):
    """statsmodels' solver returned the negative root of the symmetric two-sided power equation
    at some (n, level) pairs (-0.402 at 96 units and 0.05/19: a three-seed run of 32 facts), and
    the mdd became max(-0.402 * sd, 0) = 0, "no difference larger than 0.00". The normal
    approximation (z_{1 - a/2} + z_power) / sqrt(n) is within a few percent of the t-test's d."""
    from scipy.stats import norm

    from factlens.stats import minimum_detectable_difference

    alpha = 0.05 / m
    d = minimum_detectable_difference(n, sd=1.0, alpha=alpha, binary=False)
    approx = (norm.ppf(1 - alpha / 2) + norm.ppf(0.8)) / math.sqrt(n)
    assert approx <= d <= 1.08 * approx


def test_minimum_detectable_difference_without_spread():
    """Binary flips all in one direction: at the MDD the exact test rejects ~80 % of the time."""
    n = 12
    mdd = minimum_detectable_difference(n)
    rng = np.random.default_rng(8)
    rejections = sum(sign_flip_test(rng.binomial(1, mdd, n).astype(float)) < 0.05 for _ in range(N_DATASETS))
    assert _within_binomial(rejections, N_DATASETS, 0.8)
    assert minimum_detectable_difference(5, sd=0.5) == math.inf  # 2 * 2**-5 > 0.05: nothing can be significant


@pytest.mark.parametrize("n,m", [(6, 1), (8, 4)])
def test_minimum_detectable_difference_has_the_stated_power_for_few_units(n, m):
    """Near the smallest n at which anything can be significant, the exact test's few
    attainable p-values cost power: the t-test's MDD gave it ~0.6 at n = 6 (0.05) and
    n = 8 (0.05 / 4); the MDD now comes from the exact test's own power."""
    alpha = 0.05 / m
    mdd = minimum_detectable_difference(n, sd=1.0, alpha=alpha)
    rng = np.random.default_rng(21)  # other draws than the MDD's own simulation
    rejections = sum(sign_flip_test(rng.normal(mdd, 1.0, n)) < alpha for _ in range(300))
    assert _within_binomial(rejections, 300, 0.8), (mdd, rejections)


# 4,000 exact sign-flip tests: about 4 s
def test_minimum_detectable_difference_has_the_stated_power_just_above_12_units_at_holm_levels():
    """Audit: for n > 12 the MDD was the t-test's, but at small levels the exact test's few attainable
    p-values still cost power: at 13 facts and 0.05 / 28 the t-test's 1.383 was found 74 % of the time.
    The exact test's own power (enumerated up to 16 units) gives 1.448, found about 80 % of the time."""
    n, alpha, reps = 13, 0.05 / 28, 4000
    mdd = minimum_detectable_difference(n, sd=1.0, alpha=alpha)
    rng = np.random.default_rng(31)  # other draws than the MDD's own simulation
    rejections = sum(sign_flip_test(d) <= alpha for d in rng.normal(mdd, 1.0, (reps, n)))
    assert rejections >= 0.775 * reps, (mdd, rejections / reps)  # 0.751 before with these draws, 0.806 now (se 0.007)


def test_minimum_detectable_difference_above_16_units_is_the_exact_tests_within_its_noise():
    """Above 16 units the t-test's effect is scaled by ``1 + 0.13 / sqrt(M)`` (``M`` the sign patterns in
    the exact test's rejection region); at 17 units the exact test's own effect, enumerated on the same
    seeded datasets as below 17, is within 0.5 % of it at 0.05 / 28 (the t-test's alone was 1.2 % below).
    At the other levels of n = 13-20 the two agree within the simulation's noise (about 0.7 %)."""
    from factlens.power import _enumerated_sign_flip_effect

    exact = _enumerated_sign_flip_effect(17, 0.05 / 28, 0.8)  # 2**17 sign patterns, 2,000 datasets: about 3 s
    assert minimum_detectable_difference(17, sd=1.0, alpha=0.05 / 28) == pytest.approx(exact, rel=0.005)
    # the enumeration is the bisection of the simulated power (the same datasets) where both run
    assert _enumerated_sign_flip_effect(11, 0.05, 0.8) == pytest.approx(minimum_detectable_difference(11, sd=1.0),
                                                                        rel=1e-3)


def test_minimum_detectable_difference_of_0_1_outcomes_is_at_least_the_exact_tests():
    """16 facts with 0/1 outcomes of which one differed: the spread of that one fact's
    difference promised 0.19, but the exact test needs 6 facts changed one way (at 0.19
    about 3 change: power 0.07). The 0/1 floor gives 0.449, whose power is 0.8."""
    n = 16
    d = np.zeros(n)
    d[0] = 1.0
    sd = float(d.std(ddof=1))
    assert minimum_detectable_difference(n, sd=sd) < 0.2  # what the t-test alone says
    mdd = minimum_detectable_difference(n, sd=sd, binary=True)
    assert mdd == pytest.approx(minimum_detectable_difference(n)) and mdd > 0.44
    rng = np.random.default_rng(9)
    rejections = sum(sign_flip_test(rng.binomial(1, mdd, n).astype(float)) < 0.05 for _ in range(N_DATASETS))
    assert _within_binomial(rejections, N_DATASETS, 0.8)
    # many differing facts, both ways: the spread decides, above the floor and above the t-test's value
    big = minimum_detectable_difference(n, sd=0.9, binary=True)
    assert big > minimum_detectable_difference(n, sd=0.9) and big > mdd


@pytest.mark.parametrize("n,sd,m", [(32, 0.5, 1), (32, 0.7, 1), (48, 0.5, 9)])
def test_minimum_detectable_difference_of_0_1_outcomes_has_the_stated_power(n, sd, m):
    """Paired 0/1 outcomes differ by -1, 0 or +1: there the sign-flip test is the sign test on the facts
    that differ, with less power than the t-test. The t-based MDD (0.256 at n = 32, s = 0.5) was found
    about 70 % of the time; the exact trinomial power gives 0.280, found about 80 % of the time."""
    alpha = 0.05 / m
    mdd = minimum_detectable_difference(n, sd=sd, alpha=alpha, binary=True)
    pm = max(0.0, (sd * sd + mdd * mdd - mdd) / 2)
    rng = np.random.default_rng(11)
    draws = rng.choice([1.0, -1.0, 0.0], size=(300, n), p=[pm + mdd, pm, 1 - 2 * pm - mdd])
    rejections = sum(sign_flip_test(d, n_resamples=999, seed=s) < alpha for s, d in enumerate(draws))
    assert _within_binomial(rejections, 300, 0.8), (mdd, rejections)
    t_based = minimum_detectable_difference(n, sd=sd, alpha=alpha)
    assert mdd > t_based * 1.04


def _trinomial_power_by_every_outcome(n: int, sd: float, alpha: float, delta: float) -> float:
    """The 0/1 model's power by its definition: the probability of every (units that differ, of them +1)
    outcome times whether the sign test rejects it, summed over all (n + 1)**2 of them."""
    from scipy.stats import binom

    pm = min(max(0.0, (sd * sd + delta * delta - delta) / 2), (1 - delta) / 2)
    q = min(1.0, 2 * pm + delta)
    if q <= 0:
        return 0.0
    total = 0.0
    for d in range(1, n + 1):
        k = np.arange(d + 1)
        rejects = np.minimum(1.0, 2 * binom.cdf(np.minimum(k, d - k), d, 0.5)) <= alpha
        total += binom.pmf(d, n, q) * float((binom.pmf(k, d, min(1.0, (pm + delta) / q)) * rejects).sum())
    return total


@pytest.mark.parametrize("n", [6, 9, 16, 33, 96])
@pytest.mark.parametrize("sd,m", [(0.2, 1), (0.5, 1), (0.5, 28), (0.9, 4)])
def test_the_0_1_models_power_sums_the_two_tails_of_the_rejection_region(n, sd, m):
    """The 0/1 model's MDD sums its power over the two tails of the sign test's rejection region per number of
    differing units, O(n) (it summed the probability of every (differing, +1) outcome, O(n**2): two thirds of a
    three-folder ``factlens compare``): the two sums agree at the MDD and around it."""
    from factlens.power import _binary_sign_test_effect

    alpha = 0.05 / m
    mdd = _binary_sign_test_effect(n, sd, alpha, 0.8)
    if not np.isfinite(mdd):
        assert _trinomial_power_by_every_outcome(n, sd, alpha, 1.0) < 0.8
        return
    assert _trinomial_power_by_every_outcome(n, sd, alpha, mdd) >= 0.8 - 1e-12
    below = mdd - 2 ** -30
    assert _trinomial_power_by_every_outcome(n, sd, alpha, below) < 0.8


@pytest.mark.parametrize("n,m", [(32, 1), (64, 9)])
def test_minimum_detectable_difference_of_accuracies_over_three_prompts_has_the_stated_power(n, m):
    """A fact's accuracy over 3 paraphrases moves in thirds: few sizes and many ties, as 0/1 outcomes.
    Only 0/1 data got the exact test's power; for thirds the t-test's MDD (0.085 at n = 32, sd 1/6)
    was found 71 % of the time. With ``step`` it is 0.093, found about 80 % of the time, and the
    comparison passes the step it sees in the differences."""
    from factlens.power import lattice_step

    alpha, sd = 0.05 / m, 1 / 6
    mdd = minimum_detectable_difference(n, sd=sd, alpha=alpha, step=1 / 3)
    assert mdd > minimum_detectable_difference(n, sd=sd, alpha=alpha) * 1.04
    d3 = mdd * 3
    pm = max(0.0, ((3 * sd) ** 2 + d3 * d3 - d3) / 2)
    rng = np.random.default_rng(12)
    draws = rng.choice([1 / 3, -1 / 3, 0.0], size=(N_DATASETS, n), p=[pm + d3, pm, 1 - 2 * pm - d3])
    rejections = sum(sign_flip_test(d) < alpha for d in draws)
    assert _within_binomial(rejections, N_DATASETS, 0.8), (mdd, rejections)
    assert lattice_step(draws[0]) == pytest.approx(1 / 3)


def test_minimum_detectable_difference_of_differences_spanning_several_steps_has_the_stated_power():
    """Three prompts per fact whose outcomes move together (per-fact rates vary): differences of 1/3, 2/3
    and 1 are all common, the one-step trinomial is clipped and the t-test's MDD stood (0.177 at n = 32,
    found about 74 % of the time); with the sizes seen, about 80 %."""
    from scipy.optimize import brentq

    rng = np.random.default_rng(7)
    n = 32

    def draw(size, shift):  # a fact's rate p ~ Beta(2, 1); the edit lowers it by shift: E[diff] = -(s - s^3 / 3)
        p = rng.beta(2, 1, size=(size, n))
        return rng.binomial(3, np.clip(p - shift, 0, 1)) / 3 - rng.binomial(3, p) / 3

    pilot = draw(400, 0.19)  # the law's spread and sizes (a run estimates them from its one row of facts)
    sd = float(pilot.std())
    sizes = tuple(np.round(np.abs(pilot[pilot != 0])[:2000] * 3) / 3)
    plain = minimum_detectable_difference(n, sd=sd, step=1 / 3)
    mdd = minimum_detectable_difference(n, sd=sd, step=1 / 3, sizes=sizes)
    assert mdd > plain * 1.03 and len(set(sizes)) > 1
    shift = brentq(lambda s: s - s ** 3 / 3 - mdd, 0.0, 1.0)  # the edit whose true mean difference is the MDD
    rejections = sum(sign_flip_test(d) < 0.05 for d in draw(N_DATASETS, shift))
    assert _within_binomial(rejections, N_DATASETS, 0.8), (mdd, rejections)


def test_compare_gives_accuracies_over_a_few_prompts_the_lattice_mdd():
    from factlens.evaluation.result import EvalResult, Metric, SuiteResult
    from factlens.stats import minimum_detectable_difference as mdd

    ids = [f"f{i}" for i in range(32)]
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 4, 32) / 3
    loc = np.clip(ref + rng.choice([-1 / 3, 0, 0, 1 / 3], 32), 0, 1)
    ev = lambda v: EvalResult({"standard": SuiteResult("standard", (  # noqa: E731
        Metric.from_samples("paraphrase_accuracy", dict(zip(ids, v))),))})
    import factlens

    row = factlens.compare({"flu": [ev(ref)], "x": [ev(loc)]}, reference="flu").iloc[0]
    sd = float(np.std(loc - ref, ddof=1))
    assert row["mdd"] == pytest.approx(mdd(32, sd=sd, step=1 / 3)) and row["mdd"] > mdd(32, sd=sd)


def test_variance_components_separates_seed_from_facts():
    rng = np.random.default_rng(3)
    no_seed = variance_components([rng.binomial(1, 0.5, 40) for _ in range(5)])
    seed = variance_components([rng.binomial(1, p, 40) for p in (0.1, 0.3, 0.5, 0.7, 0.9)])
    assert no_seed["seed_share"] < 0.5 < seed["seed_share"]
    assert math.isnan(variance_components([[0, 1, 1]])["seed_share"])


# -- metrics built from per-unit samples -----------------------------------------------------
def test_metric_from_samples_picks_the_interval():
    acc = Metric.from_samples("forget_accuracy", {f"f{i}": float(i < 8) for i in range(16)})
    assert acc.ci_method == "wilson" and (round(acc.ci_low, 3), round(acc.ci_high, 3)) == (0.28, 0.72)
    prob = Metric.from_samples("forget_prob", {"a": 0.1, "b": 0.4, "c": 0.3, "d": float("nan")})
    assert prob.ci_method == "bootstrap" and prob.n == 3 and prob.ci_low <= prob.value <= prob.ci_high
    assert set(prob.samples) == {"a", "b", "c"}
    tok = Metric.from_samples("kl", {"chunk:0": 0.1, "chunk:1": 0.3}, weights={"chunk:0": 1, "chunk:1": 3},
                              unit="tokens")
    assert tok.value == pytest.approx(0.25) and tok.n == 4
    with pytest.raises(ValueError, match="no unit has a value"):
        Metric.from_samples("x", {"a": float("nan")})


def test_results_without_intervals_still_load(tmp_path):
    old = {"task": {}, "meta": {}, "suites": {"standard": {"suite": "standard", "per_fact": [], "extra": {},
                                                          "seconds": 1.0, "metrics": [
        {"name": "forget_accuracy", "value": 0.5, "n": 16, "unit": "facts", "baseline": 1.0, "at_chance": False,
         "higher_is_better": False, "stderr": 0.1}]}}}
    r = EvalResult.from_dict(old)
    m = r.metric("forget_accuracy")
    assert m.value == 0.5 and m.ci_low is None and m.samples is None
    frame = r.to_frame()
    assert {"value", "n", "ci_low", "ci_high"} <= set(frame.columns) and "samples" not in frame.columns
    new = EvalResult({"standard": SuiteResult("standard", (Metric.from_samples("a", {"x": 1.0, "y": 0.0}),))})
    new.save(tmp_path / "r.json")
    back = EvalResult.load(tmp_path / "r.json").metric("a")
    assert back.samples == {"x": 1.0, "y": 0.0} and back.ci_low == new.metric("a").ci_low


def test_holm_counts_one_test_once():
    """p-values marked as the same test (``same=``) form one hypothesis of the family."""
    assert holm([0.01, 0.01, 0.04], same=["a", "a", "b"]).tolist() == pytest.approx([0.02, 0.02, 0.04])
    assert holm([0.01, 0.01, 0.04]).tolist() == pytest.approx([0.03, 0.03, 0.04])  # three tests without keys
    adj = holm([0.01, float("nan"), 0.01], same=["a", "a", "a"])
    assert adj[0] == adj[2] == pytest.approx(0.01) and math.isnan(adj[1])
    # one test's p-values agree; should rounding ever part them, the larger one counts
    assert holm([0.01, 0.0101, 0.04], same=["a", "a", "b"]).tolist() == pytest.approx([0.0202, 0.0202, 0.04])
    with pytest.raises(ValueError, match="one key per p-value"):
        holm([0.01, 0.02], same=["a"])


def test_paired_test_key_identifies_the_same_test():
    from factlens.stats import paired_test_key, sign_flip_test

    x, y = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0]), np.array([0.0, 0.0, 0.0, 1.0, 1.0, float("nan")])
    f = [f"f{i}" for i in range(6)]
    assert paired_test_key(x, y, ids=f) == paired_test_key(1 - x, 1 - y, ids=f)  # a metric and its complement
    assert sign_flip_test(x - y) == sign_flip_test((1 - x) - (1 - y))
    assert paired_test_key(x, y, ids=f) != paired_test_key(x[::-1], y[::-1], ids=f)  # other outcome per unit
    assert paired_test_key(x, y, ids=f) != paired_test_key(x + 0.5, y + 0.5, ids=f)  # same differences, other outcomes
    two = ["a", "b"]
    assert paired_test_key([0.0, 1.0], [1.0, 1.0], ids=two) == paired_test_key([-0.0, 1.0], [1.0, 1.0], ids=two)
    assert (paired_test_key([1.0, 1.0], [0.0, 0.0], [0.5, 0.5], ids=two)
            != paired_test_key([1.0, 1.0], [0.0, 0.0], [0.25, 0.75], ids=two))
    # a complement stored in floating point (CounterFact's edit_prob = 1 - forget_prob, ~1e-16 off) is the same
    # test: compared bit for bit, it was a second test in Holm (n_tests 7 instead of 6 on the CounterFact run)
    rng = np.random.default_rng(0)
    p, q = rng.random(6), rng.random(6)
    ep, eq = np.nextafter(1.0 - p, 2.0), np.nextafter(1.0 - q, -1.0)  # one unit in the last place off
    assert not np.array_equal(1.0 - ep, p)  # the stored values are not exact complements
    assert paired_test_key(p, q, ids=f) == paired_test_key(ep, eq, ids=f)
    assert paired_test_key(p, q, ids=f) != paired_test_key(p + 1e-9, q, ids=f)  # other outcomes stay apart
    with pytest.raises(ValueError, match="one entry per unit"):
        paired_test_key([1.0, 0.0], [1.0], ids=two)
    with pytest.raises(ValueError, match="each unit once"):
        paired_test_key([1.0, 0.0], [1.0, 1.0], ids=["a", "a"])


def test_paired_test_key_tells_apart_two_metrics_of_tiny_probabilities():
    """Rounded to 12 decimals, every probability below 5e-13 was 0: two unrelated metrics on the same facts
    (a true answer's probability after unlearning, in two formats) were one test, and Holm counted one."""
    from factlens.stats import holm, paired_test_key, sign_flip_test

    rng = np.random.default_rng(1)
    f = [f"f{i}" for i in range(12)]
    a, b = rng.random(12) * 1e-13, rng.random(12) * 1e-13  # two formats' probabilities on the edited model
    ref_a, ref_b = rng.random(12) * 1e-14, rng.random(12) * 1e-14
    ka, kb = paired_test_key(a, ref_a, ids=f), paired_test_key(b, ref_b, ids=f)
    assert sign_flip_test(a - ref_a) != sign_flip_test(b - ref_b)  # two tests, two p-values
    assert ka != kb
    assert holm([0.01, 0.02], same=[ka, kb]).tolist() == pytest.approx([0.02, 0.02])  # counted twice
    # a tiny probability's complement stored in floating point is still the same test
    assert ka == paired_test_key(np.nextafter(1.0 - a, 2.0), 1.0 - ref_a, ids=f)
    assert ka == paired_test_key(a * (1 + 1e-14), ref_a, ids=f)  # agreement to 12 significant digits
    inf = paired_test_key([np.inf, 1.0], [0.0, 1.0], ids=["a", "b"])
    assert inf == paired_test_key([np.inf, 1.0], [0.0, 1.0], ids=["a", "b"])  # inf - inf is NaN: compared as equal


def test_paired_test_key_tells_apart_equal_outcomes_on_different_units():
    """The key compared only the ordered values, so metrics on DIFFERENT facts whose 0/1
    patterns coincide (edit accuracy on the forget facts, maintain accuracy on the maintain
    facts) were one test in Holm/Tarone: anti-conservative."""
    from factlens.stats import paired_test_key

    x, y = [0.0] * 7 + [1.0], [1.0] * 8
    forget, maintain = [f"forget{i}" for i in range(8)], [f"maintain{i}" for i in range(8)]
    assert paired_test_key(x, y, ids=forget) != paired_test_key(x, y, ids=maintain)
    # the same units in another order are the same test
    assert paired_test_key(x, y, ids=forget) == paired_test_key(x[::-1], y[::-1], ids=forget[::-1])
    seeds = [(s, k) for s in (0, 1) for k in forget[:4]]  # pooled seeds: (seed, unit) ids
    assert paired_test_key(x, y, ids=seeds) != paired_test_key(x, y, ids=[(s + 1, k) for s, k in seeds])


# -- Tarone's modification of Holm ----------------------------------------------------------------
def test_smallest_attainable_p_is_the_all_alike_pattern():
    from factlens.stats import smallest_attainable_p

    for k in range(1, 8):  # k differing 0/1 facts among 12: 2 / 2**k
        d = np.array([1.0] * k + [0.0] * (12 - k))
        assert smallest_attainable_p(d) == pytest.approx(min(1.0, 2 / 2 ** k))
        assert smallest_attainable_p(-d) == smallest_attainable_p(d) <= sign_flip_test(d * np.where(np.arange(12) % 2, 1, -1))
    assert smallest_attainable_p([0.0, 0.0]) == 1.0


def test_tarone_holm_leaves_out_tests_that_cannot_reach_the_level():
    from factlens.stats import tarone_holm

    # one real effect (p = 0.004) beside four metrics whose differences are all zero and two with 3 differing facts
    p = [0.004, 1.0, 1.0, 1.0, 1.0, 0.25, 0.5]
    smallest = [2 / 2 ** 12, 1.0, 1.0, 1.0, 1.0, 0.25, 0.25]
    assert holm(p)[0] == pytest.approx(0.028)  # plain Holm: 7 tests, 0.004 x 7
    r = tarone_holm(p, smallest)
    adj, ok = r.adjusted, r.testable
    assert r.k == 1 and ok.tolist() == [True] + [False] * 6 and adj[0] == pytest.approx(0.004) and np.isnan(adj[1:]).all()
    # same= still merges identical tests; NaN p-values stay out
    r = tarone_holm([0.01, 0.01, 0.02, float("nan")], [1e-4, 1e-4, 1e-3, 1e-4], same=["a", "a", "b", "c"])
    adj, ok = r.adjusted, r.testable
    assert adj[:3].tolist() == pytest.approx([0.02, 0.02, 0.02]) and not ok[3]
    # step-down: K is recomputed over the tests not yet rejected, so a test that cannot reach the
    # first step's level (smallest p 0.0156 > 0.05 / 4) is tested once the others are rejected
    p = [0.001, 0.002, 0.02, 0.5, 1.0]
    smallest = [1e-5, 1e-5, 0.0156, 1e-5, 1.0]
    r = tarone_holm(p, smallest)
    adj, ok = r.adjusted, r.testable
    assert r.k == 4 and adj[:4].tolist() == pytest.approx([0.004, 0.006, 0.04, 0.5]) and ok.tolist() == [True] * 4 + [False]
    assert holm(p)[2] == pytest.approx(0.06)  # plain Holm: 3 tests left at that step
    # the procedure stops at the first test it cannot reject: nothing after it is significant
    adj = tarone_holm([0.001, 0.03, 0.031], [1e-6, 1e-6, 1e-6]).adjusted
    assert adj.tolist() == pytest.approx([0.003, 0.06, 0.06])
    with pytest.raises(ValueError, match="one value per p-value"):
        tarone_holm([0.01, 0.02], [0.01])


def test_tarone_holm_freezes_k_at_the_first_test_it_cannot_reject():
    """Audit c10: K was recomputed over the later tests after the procedure had stopped, so two tests that
    cannot reach 0.05 / 2 (smallest p 0.03, 0.03125) read testable [False, True], which flipped with their
    order, and a test after the stop got its adjusted p at a K the procedure never reached."""
    from factlens.stats import tarone_holm

    for p, smallest in [([0.03125, 0.03125], [0.03125, 0.03125]), ([0.03, 0.04], [0.03, 0.03125]),
                        ([0.04, 0.03], [0.03125, 0.03])]:
        r = tarone_holm(p, smallest)
        assert r.k == 2 and r.testable.tolist() == [False, False] and np.isnan(r.adjusted).all(), (p, r)
    # rejected at K = 2, then stopped at K = 2 (smallest p 0.03 > 0.025): the last test faces 0.05 / 2 too,
    # which it cannot reach (it read testable, with K = 1 over itself alone)
    r = tarone_holm([0.001, 0.03, 0.04], [1e-5, 0.03, 0.03])
    assert r.testable.tolist() == [True, False, False] and r.adjusted[0] == pytest.approx(0.002)
    assert np.isnan(r.adjusted[1:]).all()
    # one that can reach 0.05 / 2 stays testable, its adjusted p Holm's running maximum (not significant)
    r = tarone_holm([0.001, 0.03, 0.04], [1e-5, 0.03, 0.01])
    assert r.testable.tolist() == [True, False, True]
    assert r.adjusted[[0, 2]].tolist() == pytest.approx([0.002, 0.06]) and np.isnan(r.adjusted[1])


# 600 families of up to 5 tests, every intersection: about 2 s
def test_tarone_holm_is_closed_testing_and_its_flags_do_not_depend_on_the_order():
    """The decisions are those of closed testing with Tarone's test of every intersection (as before the
    fix), and ``testable`` and ``adjusted`` do not depend on the order of the tests, ties included."""
    import itertools

    from factlens.multiple_testing import _tarone_k
    from factlens.stats import tarone_holm

    def closed(p, lo):  # reject j iff every intersection containing j has a test below alpha / K
        subsets = [s for r in range(1, len(p) + 1) for s in itertools.combinations(range(len(p)), r)]
        level = {s: 0.05 / _tarone_k(lo[list(s)], 0.05) for s in subsets}
        return [all(any(lo[i] <= level[s] and p[i] <= level[s] for i in s) for s in subsets if j in s)
                for j in range(len(p))]

    rng = np.random.default_rng(5)
    for family in range(600):
        m = int(rng.integers(1, 6))
        lo = rng.choice([1e-5, 0.004, 0.008, 0.0156, 0.03125, 0.0625, 1.0], m)
        tied = rng.choice([0.005, 0.01, 0.02, 0.03125, 0.04], m)  # every other family: many ties
        p = np.maximum(lo, tied if family % 2 else rng.random(m) ** 2 * 0.2)
        r = tarone_holm(p, lo)
        assert (np.nan_to_num(r.adjusted, nan=2.0) <= 0.05).tolist() == closed(p, lo), (p, lo)
        order = rng.permutation(m)
        shuffled = tarone_holm(p[order], lo[order])
        assert shuffled.testable.tolist() == r.testable[order].tolist(), (p, lo)
        np.testing.assert_array_equal(shuffled.adjusted, r.adjusted[order])


# 400 simulated families: about 1 s
def test_tarone_holm_keeps_the_family_wise_error_under_the_null():
    """Many discrete tests on few facts under the null: the family-wise error rate stays at most alpha,
    and more is rejected than with plain Holm (the all-zero and few-difference tests no longer count)."""
    from factlens.stats import smallest_attainable_p, tarone_holm

    rng = np.random.default_rng(7)
    fwer_tarone = fwer_holm = 0
    for _ in range(N_DATASETS):
        ds = []
        for k in (0, 0, 0, 2, 4, 5, 10, 12):  # metrics differing on k of 12 facts, signs at random (the null)
            ds.append(np.r_[rng.choice([-1.0, 1.0], k), np.zeros(12 - k)])
        p = [sign_flip_test(d) for d in ds]
        adj = tarone_holm(p, [smallest_attainable_p(d) for d in ds]).adjusted
        rejected_t, rejected_h = np.nan_to_num(adj, nan=1.0) <= 0.05, holm(p) <= 0.05
        assert not (rejected_h & ~rejected_t).any()  # Tarone rejects whatever Holm rejects
        fwer_tarone += bool(rejected_t.any())
        fwer_holm += bool(rejected_h.any())
    assert fwer_tarone <= 0.05 * N_DATASETS or _within_binomial(fwer_tarone, N_DATASETS, 0.05)
    assert fwer_tarone >= fwer_holm
    # with a real effect on one metric (each of 12 facts moves up with probability 0.9) beside six
    # metrics that differ on at most 4 facts, Tarone finds it clearly more often than Holm over 7 tests
    found_t = found_h = 0
    for _ in range(N_DATASETS):
        ds = [rng.choice([-1.0, 1.0], 12, p=[0.1, 0.9])] + [np.r_[rng.choice([-1.0, 1.0], k), np.zeros(12 - k)]
                                                              for k in (0, 0, 1, 2, 3, 4)]
        p = [sign_flip_test(d) for d in ds]
        adj = tarone_holm(p, [smallest_attainable_p(d) for d in ds]).adjusted
        found_t += bool(adj[0] <= 0.05)
        found_h += bool(holm(p)[0] <= 0.05)
    assert found_t > found_h + 0.1 * N_DATASETS, (found_t, found_h)


# -- token-weighted metrics (text chunks weighted by their tokens) ------------------------------
def test_token_weights_are_kept_saved_and_old_results_load_as_equal_weights(tmp_path):
    """Metric.from_samples weighted the mean but dropped the weights, so every paired or
    multi-seed statistic of a token-weighted metric was a plain chunk mean."""
    tok = Metric.from_samples("next_token_accuracy", {"chunk:0": 0.5, "chunk:1": 0.9, "chunk:2": float("nan")},
                              weights={"chunk:0": 10, "chunk:1": 500, "chunk:2": 7}, unit="tokens")
    assert tok.weights == {"chunk:0": 10.0, "chunk:1": 500.0}  # the units with a value
    r = EvalResult({"side_effects": SuiteResult("side_effects", (tok,))})
    r.save(tmp_path / "r.json")
    assert EvalResult.load(tmp_path / "r.json").metric("next_token_accuracy").weights == tok.weights
    d = tok.to_dict()
    del d["weights"]  # saved before weights were kept
    assert Metric.from_dict(d).weights is None
    assert Metric.from_samples("forget_accuracy", {"a": 1.0, "b": 0.0}).weights is None
    with pytest.raises(ValueError, match="weights lack 1 of the 2 units"):
        Metric.from_samples("kl", {"chunk:0": 0.1, "chunk:1": 0.2}, weights={"chunk:0": 3})
    with pytest.raises(ValueError, match=">= 0 with a positive sum"):
        Metric.from_samples("kl", {"chunk:0": 0.1, "chunk:1": 0.2}, weights={"chunk:0": -1, "chunk:1": 2})


def test_stderr_of_a_token_weighted_metric_is_the_weighted_means():
    from factlens.stats import weighted_mean_se

    rng = np.random.default_rng(0)
    v, w = rng.uniform(0.3, 0.9, 40), np.where(rng.uniform(size=40) < 0.25, 1000.0, 10.0)  # a few long chunks
    tok = Metric.from_samples("next_token_accuracy", {f"chunk:{i}": x for i, x in enumerate(v)},
                              weights={f"chunk:{i}": x for i, x in enumerate(w)}, unit="tokens")
    # linearization of the ratio sum(w v) / sum(w), checked against a large bootstrap of it
    i = rng.integers(0, 40, (100_000, 40))
    boot_sd = float(((w[i] * v[i]).sum(1) / w[i].sum(1)).std())
    assert tok.stderr == pytest.approx(weighted_mean_se_(v, w))
    assert tok.stderr == pytest.approx(boot_sd, rel=0.05)
    assert tok.stderr > 1.5 * float(v.std(ddof=1) / math.sqrt(40))  # the plain chunk se it used to be
    assert weighted_mean_se(v) == pytest.approx(float(v.std(ddof=1) / math.sqrt(40)))


def test_weighted_paired_difference_and_intervals():
    """Paired difference of token-weighted values: sum(w (x - y)) / sum(w), and intervals
    (one seed, several seeds) that contain their point estimates."""
    x, y, w = np.array([0.5] * 7 + [0.9]), np.array([0.6] * 8), np.array([10.0] * 7 + [500.0])
    d, ci = paired_bootstrap_diff(x, y, weights=w)
    assert d == pytest.approx(float((w * x).sum() / w.sum() - 0.6)) and ci[0] <= d <= ci[1]
    unweighted, _ = paired_bootstrap_diff(x, y)
    assert unweighted == pytest.approx(-0.05)  # what it reported before: the opposite sign
    d2, ci2 = paired_bootstrap_diff([x, x + 0.01], [y, y], weights=[w, w])
    assert d2 == pytest.approx(d + 0.005) and ci2[0] <= d2 <= ci2[1]
    groups = [x, x + 0.01]
    m = float(np.mean([(w * g).sum() / w.sum() for g in groups]))
    lo, hi = hierarchical_bootstrap_interval(groups, weights=[w, w])
    assert lo <= m <= hi
    assert not hierarchical_bootstrap_interval(groups)[1] >= m  # the plain chunk means miss it
    vc = variance_components(groups, weights=[w, w])
    assert vc["var_facts"] == pytest.approx(np.mean([(weighted_mean_se_(g, w)) ** 2 for g in groups]))
    with pytest.raises(ValueError, match="one entry per unit"):
        hierarchical_bootstrap_interval(groups, weights=[w])


def weighted_mean_se_(v, w):
    """Independent: linearized standard error of sum(w v) / sum(w)."""
    m = (w * v).sum() / w.sum()
    return math.sqrt(len(v) / (len(v) - 1) * ((w * (v - m)) ** 2).sum()) / w.sum()


def test_random_sign_flip_p_does_not_depend_on_the_order_of_the_units():
    """With more than 16 differing units the Monte-Carlo p-value depended on the order of
    the units (the same 40 differences gave 0.2956 and 0.2880)."""
    rng = np.random.default_rng(4)
    d, w = rng.normal(0.3, 1, 40), rng.integers(1, 50, 40).astype(float)
    perm = rng.permutation(40)
    assert sign_flip_test(d) == sign_flip_test(d[perm])
    assert sign_flip_test(d, weights=w) == sign_flip_test(d[perm], weights=w[perm])


def test_minimum_detectable_difference_without_spread_uses_the_0_1_model_only_for_0_1_outcomes():
    """16 equal continuous differences (p = 3e-5) got the 0/1 binomial MDD 0.449; without a
    spread a continuous metric has no scale for a detectable difference: NaN."""
    assert sign_flip_test([0.2] * 16) < 1e-4
    assert math.isnan(minimum_detectable_difference(16, sd=0.0, binary=False))
    assert math.isnan(minimum_detectable_difference(16, binary=False))
    floor = minimum_detectable_difference(16, sd=0.0, binary=True)
    assert floor == pytest.approx(0.449, abs=1e-3) == minimum_detectable_difference(16)  # unknown: the 0/1 model
    assert minimum_detectable_difference(16, sd=0.5, binary=False) == minimum_detectable_difference(16, sd=0.5)
    assert minimum_detectable_difference(5, sd=0.0, binary=False) == math.inf  # nothing can be significant


def test_max_wilson_interval_covers_the_best_of_close_layers():
    """The best of 12 layers chosen on the same 32 facts (true accuracies 0.6 at every layer, correlated
    outcomes): the interval of the maximum covers the true best at >= 95 %; the percentile bootstrap of
    the maximum that probes used before covered it about a third of the time (a statistical test with
    a fixed seed)."""
    rng = np.random.default_rng(0)
    n, layers, hits, boot_hits = 32, 12, 0, 0
    for _ in range(N_DATASETS):
        shared = rng.uniform(size=(n, 1)) < 0.6
        own = rng.uniform(size=(n, layers)) < 0.6
        h = np.where(rng.uniform(size=(n, layers)) < 0.5, shared, own).astype(float)  # each layer P(hit) = 0.6
        lo, hi = max_wilson_interval(h.sum(0), n)
        hits += lo <= 0.6 <= hi
        b = bootstrap_interval(n, lambda i: h[i].mean(-2).max(-1), n_resamples=500)
        boot_hits += b[0] <= 0.6 <= b[1]
    assert hits / N_DATASETS >= 0.95
    assert boot_hits / N_DATASETS < 0.6
    with pytest.raises(ValueError):
        max_wilson_interval([], 8)


def test_sign_flip_test_refuses_negative_weights():
    """A negative weight used to drop its unit silently (only weights > 0 were kept)."""
    with pytest.raises(ValueError, match="weights must be >= 0"):
        sign_flip_test([0.5, 0.2, -0.1], weights=[1.0, -1.0, 1.0])
    assert sign_flip_test([0.5, 0.2, -0.1], weights=[1.0, 0.0, 1.0]) == sign_flip_test([0.5, -0.1])


def test_a_token_weighted_mean_of_identical_zeros_is_not_a_proportion():
    """A KL of exactly 0 on every text chunk in two seeds: the Wilson interval of "0 of 6 chunks" gave
    [0.00, 0.39]; one seed gives the bootstrap's [0, 0], and so do several now."""
    from factlens.stats import mean_interval

    assert mean_interval([[0.0] * 3, [0.0] * 3], weights=[[40, 55, 61]] * 2) == (0.0, 0.0)
    assert mean_interval([[0.0] * 3, [0.0] * 3])[1] > 0.3  # unweighted 0/1 outcomes keep the count's interval


def test_paired_difference_of_0_1_outcomes_covers_the_truth_where_few_facts_differ():
    """The percentile bootstrap of paired 0/1 differences covered a true difference of -0.05 in about
    55 % of datasets of 16 facts (zero width whenever no fact differed); the score interval keeps
    its 95 %. A statistical test with a fixed seed."""
    from factlens.stats import paired_diff

    rng = np.random.default_rng(7)
    n, p_x, covered_boot, covered = 16, 0.95, 0, 0
    for _ in range(N_DATASETS):
        x = (rng.uniform(size=n) < p_x).astype(float)
        y = np.ones(n)
        _, boot = paired_bootstrap_diff(x, y, n_resamples=500)
        _, ci = paired_diff(x, y, n_resamples=500)
        covered_boot += boot[0] <= p_x - 1 <= boot[1]
        covered += ci[0] <= p_x - 1 <= ci[1]
    assert covered_boot / N_DATASETS < 0.75  # the interval compare reported until 2026-12-03
    assert covered / N_DATASETS >= 0.93
    _, ci = paired_diff([1] * 16, [1] * 16)  # nothing differs: not [0, 0]
    assert ci[0] < -0.15 and ci[1] > 0.15


def test_paired_proportion_interval_reproduces_the_textbook_and_keeps_continuous_data_bootstrapped():
    from factlens.stats import paired_diff, paired_proportion_diff_interval

    # Fagerland, Lydersen and Laake (2017), ch. 8: the table (59, 6, 16, 80) -> -0.0621 [-0.1186, -0.0046]
    x = [1] * 59 + [1] * 6 + [0] * 16 + [0] * 80
    y = [1] * 59 + [0] * 6 + [1] * 16 + [0] * 80
    assert [round(v, 4) for v in paired_proportion_diff_interval(x, y)] == [-0.1186, -0.0046]
    cont = ([0.2, 0.5, 0.9, 0.4], [0.1, 0.5, 0.7, 0.4])
    assert paired_diff(*cont) == paired_bootstrap_diff(*cont)
    with pytest.raises(ValueError, match="0/1 outcomes"):
        paired_proportion_diff_interval([0.5, 1], [1, 1])


def test_sign_flip_test_refuses_infinite_differences():
    """An infinite difference made every pattern's statistic infinite: p = 0, 'significant'."""
    with pytest.raises(ValueError, match="infinite"):
        sign_flip_test([np.inf, 1, 1, 1, 1, 1])


def test_units_of_weight_zero_leave_the_bootstrap():
    """A unit of weight 0 is not in the weighted mean; resampled alone it made 0/0, and the interval
    (nan, nan) with several seeds or None with one."""
    vals, w = [0.1, 0.2, 0.3, 0.9, 0.5], [0, 0, 0, 0, 1]
    lo, hi = hierarchical_bootstrap_interval([vals, vals], weights=[w, w])
    assert (lo, hi) == (0.5, 0.5)
    vals, w = [0.1, 0.2, 0.3, 0.9, 0.5, 0.7], [0, 0, 1, 0, 1, 2]
    kept = bootstrap_mean_interval([0.3, 0.5, 0.7], weights=[1, 1, 2])
    assert bootstrap_mean_interval(vals, weights=w) == kept and kept is not None and not math.isnan(kept[0])


def test_a_metric_that_can_be_negative_is_never_read_as_a_proportion():
    """A selective recovery (-1 ... 1) whose facts all happened to score 0 got a Wilson interval pinned
    at 0 ("0.000 [0.00, 0.19]"), and compare gave it Newcombe's interval and the binomial MDD floor."""
    import factlens
    from factlens.evaluation.result import EvalResult, Metric, SuiteResult
    from factlens.stats import paired_diff

    zeros = {f"f{i}": 0.0 for i in range(16)}
    m = Metric.from_samples("relearn_selective_recovery", zeros, proportion=False)
    assert m.ci_method == "bootstrap" and (m.ci_low, m.ci_high) == (0.0, 0.0)
    assert Metric.from_samples("forget_accuracy", zeros).ci_method == "wilson"  # an accuracy stays one

    def ev(values):
        s = SuiteResult("relearning", (Metric.from_samples("relearn_selective_recovery", values, proportion=False),))
        return EvalResult({"relearning": s})

    ones = dict(zeros, **{f"f{i}": 1.0 for i in range(4)})
    row = factlens.compare({"a": [ev(ones)], "b": [ev(zeros)]}, reference="b").iloc[0]
    d, boot = paired_diff([list(ones.values())], [list(zeros.values())], proportion=False)
    assert (row["ci_low"], row["ci_high"]) == boot and boot != paired_diff([list(ones.values())],
                                                                          [list(zeros.values())])[1]


def test_a_stored_difference_metric_of_an_older_folder_is_not_read_as_a_proportion():
    """Folders written before proportion=False stored an all-0/1 selective or forget recovery as
    "wilson"; compare read it as a proportion (Newcombe interval, binomial MDD) though the metric is
    a difference (-1 ... 1). Its name says what it is; an accuracy stored the same way stays one."""
    import dataclasses

    import factlens
    from factlens.comparison import declared_continuous
    from factlens.evaluation.result import EvalResult, Metric, SuiteResult
    from factlens.stats import paired_diff

    zeros = {f"f{i}": 0.0 for i in range(16)}
    ones = dict(zeros, **{f"f{i}": 1.0 for i in range(4)})

    def old(name, values):  # as an older version stored it: the proportion's interval and method
        return dataclasses.replace(Metric.from_samples(name, values, proportion=False), ci_method="wilson")

    assert declared_continuous(old("relearn_selective_recovery", ones))
    assert declared_continuous(old("quant_nf4_forget_recovery", zeros))
    assert not declared_continuous(Metric.from_samples("relearn_forget_accuracy", ones))

    def ev(values):
        return EvalResult({"relearning": SuiteResult("relearning", (old("relearn_selective_recovery", values),))})

    row = factlens.compare({"a": [ev(ones)], "b": [ev(zeros)]}, reference="b").iloc[0]
    _, boot = paired_diff([list(ones.values())], [list(zeros.values())], proportion=False)
    assert (row["ci_low"], row["ci_high"]) == boot


@pytest.mark.parametrize("kw, match", [(dict(alpha=0.0), "alpha must be a number strictly between 0 and 1"),
                                       (dict(alpha=-0.1), "alpha"), (dict(power=1.2), "power must be"),
                                       (dict(power=0.0), "power must be"), (dict(sd=-1.0), "sd .* must be >= 0")])
def test_minimum_detectable_difference_refuses_bad_inputs(kw, match):
    """``alpha=0`` divided by zero, ``power=1.2`` failed in the root finder, ``power=0`` returned the
    same value as ``power=1`` and ``sd=-1`` was read as "no spread"."""
    from factlens.stats import minimum_detectable_difference

    with pytest.raises(ValueError, match=match):
        minimum_detectable_difference(16, **{"sd": 0.5, **kw})
    assert math.isnan(minimum_detectable_difference(16, sd=float("nan"), binary=False))  # no spread measured


def test_the_sizes_power_model_tests_each_distinct_dataset_once_with_the_same_answer():
    """``_sizes_effect`` reuses the p-value of a simulated dataset it has tested (most repeat: the report of
    a two-seed planted run spent 86 of 124 s on 225,000 tests); the effect equals the one computed by testing
    every dataset, as it was before."""
    from factlens import power
    from factlens.sign_flip import sign_flip_test

    def every_dataset(n, sd, sizes, alpha, pw, n_sim=600):
        S = np.asarray(sizes, dtype=float)
        m1, m2 = float(S.mean()), float((S * S).mean())
        rng = np.random.default_rng(12345)
        u = rng.random((n_sim, n))
        drawn = S[rng.integers(0, len(S), (n_sim, n))]

        def achieved(delta):
            bias = delta / m1
            pm = min(max(0.0, ((sd * sd + delta * delta) / m2 - bias) / 2), (1 - bias) / 2)
            d = np.where(u < pm + bias, drawn, np.where(u < 2 * pm + bias, -drawn, 0.0))
            return float(np.mean([sign_flip_test(row) <= alpha for row in d]))

        if achieved(m1) < pw:
            return float("inf")
        lo, hi = 0.0, m1
        for _ in range(14):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if achieved(mid) >= pw else (mid, hi)
        return hi

    for args in ((24, 0.4, (1 / 3, 2 / 3), 0.05, 0.8), (32, 0.3, (1 / 3, 2 / 3, 1.0), 0.05 / 9, 0.8)):
        power._sizes_effect.cache_clear()
        assert power._sizes_effect(*args) == every_dataset(*args)


# -- paired 0/1 intervals and the seed/fact variance split against hand formulas ----------------
def _newcombe_paired(a: int, b: int, c: int, d: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's (1998) method 10 for ``p1 - p2`` of the paired table (a: both 1, b: x only, c: y only,
    d: neither), written out from the paper with scipy's normal quantile: Wilson limits of each margin,
    combined with ``phi = (ad - bc) / sqrt(margins)``, ``ad - bc`` shrunk by ``n / 2`` when positive
    (none of factlens' code)."""
    from scipy.stats import norm

    n, z = a + b + c + d, norm.ppf(1 - (1 - confidence) / 2)

    def wilson(k):
        p = k / n
        centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)

    p1, p2 = (a + b) / n, (a + c) / n
    (l1, u1), (l2, u2) = wilson(a + b), wilson(a + c)
    den = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0 if den == 0 else (max(a * d - b * c - n / 2, 0) if a * d > b * c else a * d - b * c) / math.sqrt(den)
    lo = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    hi = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return max(-1.0, p1 - p2 - lo), min(1.0, p1 - p2 + hi)


def _table(x, y) -> tuple[int, int, int, int]:
    x, y = np.asarray(x), np.asarray(y)
    return (int(((x == 1) & (y == 1)).sum()), int(((x == 1) & (y == 0)).sum()),
            int(((x == 0) & (y == 1)).sum()), int(((x == 0) & (y == 0)).sum()))


def test_paired_proportion_interval_of_a_negatively_correlated_table_is_newcombes():
    """A table with ad < bc (1, 7, 6, 2: ad - bc = -40) takes the unshrunk negative correlation, which
    widens the interval; the textbook example (ad > bc) never reaches that branch. Newcombe's method
    written out independently gives [-0.3444, 0.4476]; with the correlation set to 0 it would be
    [-0.2563, 0.3642]."""
    from factlens.stats import paired_proportion_diff_interval

    a, b, c, d = 1, 7, 6, 2
    x = [1] * a + [1] * b + [0] * c + [0] * d
    y = [1] * a + [0] * b + [1] * c + [0] * d
    want = _newcombe_paired(a, b, c, d)
    assert [round(v, 4) for v in want] == [-0.3444, 0.4476]
    assert paired_proportion_diff_interval(x, y) == pytest.approx(want, abs=1e-12)
    assert paired_proportion_diff_interval(x, y, confidence=0.9) == pytest.approx(
        _newcombe_paired(a, b, c, d, 0.9), abs=1e-12)


def test_paired_diff_of_0_1_outcomes_over_seeds_is_the_hull_of_pooled_newcombe_and_bootstrap():
    """With several seeds paired_diff reports the hull of the pooled Newcombe interval (ignores the
    seed variance) and the seeds-then-facts bootstrap (misses what few differing facts leave open).
    A strong seed effect makes the bootstrap side win (3 seeds x 32 facts: about [-0.42, 0.45]
    against Newcombe's [-0.16, 0.12]); one differing fact of 32 makes Newcombe's side win."""
    from factlens.stats import paired_diff

    rng = np.random.default_rng(1)
    cases = [([(rng.uniform(size=32) < p).astype(float) for p in (0.2, 0.5, 0.9)],
              [(rng.uniform(size=32) < 0.5).astype(float) for _ in range(3)]),
             ([np.ones(16), np.ones(16)], [np.ones(16), np.r_[0.0, np.ones(15)]])]
    for i, (x, y) in enumerate(cases):
        pooled = _newcombe_paired(*_table(np.concatenate(x), np.concatenate(y)))
        _, boot = paired_bootstrap_diff(x, y)
        d, ci = paired_diff(x, y)
        assert d == pytest.approx(np.mean([a.mean() - b.mean() for a, b in zip(x, y)]))
        assert ci == pytest.approx((min(boot[0], pooled[0]), max(boot[1], pooled[1])), abs=1e-12)
        if i == 0:  # the seed spread widens the interval beyond the pooled count's
            assert ci[1] - ci[0] > 2 * (pooled[1] - pooled[0])
        else:  # one differing fact: the bootstrap alone is too narrow
            assert ci == pytest.approx(pooled, abs=1e-12) and ci[0] < boot[0]


@pytest.mark.parametrize("groups,var_facts,var_seed", [
    # per-seed variances (ddof=1) 1/3, 0, 0 over 4 facts: var_facts = mean(1/12, 0, 0) = 1/36; seed means
    # 0.5, 1, 0 spread var = 1/4 (ddof=1), of which 1/36 is fact sampling: var_seed = 1/4 - 1/36 = 2/9
    ([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]], 1 / 36, 2 / 9),
    # unequal sizes, equal means: var_facts = mean(1/2 / 2, 1/2 / 2, 1/3 / 4) = 7/36, var_seed = max(0 - 7/36, 0)
    ([[0, 1], [1, 0], [0, 1, 1, 0]], 7 / 36, 0.0),
])
def test_variance_components_are_the_method_of_moments_split(groups, var_facts, var_seed):
    vc = variance_components(groups)
    assert vc["var_facts"] == pytest.approx(var_facts, abs=1e-12)
    assert vc["var_seed"] == pytest.approx(var_seed, abs=1e-12)
    assert vc["seed_share"] == pytest.approx(var_seed / (var_seed + var_facts), abs=1e-12)
    assert vc["n_seeds"] == len(groups)


def test_the_memoized_sign_flip_test_is_the_test_bit_for_bit():
    """The power simulation memoizes null distributions by the sizes' counts (datasets of other signs
    share one); every p-value must be the plain test's, exactly, and the memo must be reused."""
    from factlens.sign_flip import memoized_sign_flip_test, sign_flip_test

    rng = np.random.default_rng(3)
    sizes = np.array([1 / 3, 2 / 3, 1.0])
    memo: dict = {}
    rows = [np.sort(np.where(rng.random(24) < 0.6, sizes[rng.integers(0, 3, 24)] * rng.choice([-1, 1], 24), 0.0))
            for _ in range(300)]
    rows += [np.zeros(5), np.array([0.5, -0.25, 0.125]), rng.normal(size=20)]  # no difference; few; Monte Carlo
    assert [memoized_sign_flip_test(r, memo) for r in rows] == [sign_flip_test(r) for r in rows]
    assert 0 < len(memo) < 300
