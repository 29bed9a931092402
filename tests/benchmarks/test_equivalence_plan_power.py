"""benchmarks/equivalence_plan_power.py: its simulated runs are what it says, and it reports a plan and shares."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_simulated_runs_have_the_stated_spread_and_no_true_difference(load_benchmark):
    bench = load_benchmark("equivalence_plan_power")
    rng = np.random.default_rng(0)
    facts = bench.fact_runs(4000, rng)
    ref = np.array([v for v in facts["flu"][0].suites["standard"].metrics[0].samples.values()])
    loc = np.array([v for v in facts["random"][0].suites["standard"].metrics[0].samples.values()])
    d = loc - ref
    assert abs((d != 0).mean() - 0.2) < 0.02 and abs(d.mean()) < 0.02  # a fifth discordant, half each way
    seeds = bench.seed_runs(1000, rng)
    means = [np.mean(list(seeds["random"][s].suites["standard"].metrics[0].samples.values())) - 0.5 for s in range(1000)]
    assert abs(np.std(means) - 0.08) < 0.006 and abs(np.mean(means)) < 0.01


def test_a_small_check_reports_its_plan_and_shares(load_benchmark, capsys):
    bench = load_benchmark("equivalence_plan_power")
    out = bench.check("seed", reps=2, seed=1, pilot=8)
    assert out["unit"] == "seed" and out["planned"] >= 2 and len(out["declared_equivalent"]) == 3
    assert all(0 <= v <= 1 for v in out["declared_equivalent"].values())


def test_the_pilots_have_exactly_the_true_spread(load_benchmark):
    bench = load_benchmark("equivalence_plan_power")
    rng = np.random.default_rng(3)
    f = bench.fact_runs(400, rng, exact=True)
    d = np.array(list(f["random"][0].suites["standard"].metrics[0].samples.values())) - np.array(
        list(f["flu"][0].suites["standard"].metrics[0].samples.values()))
    assert (d == 1).sum() == (d == -1).sum() == 40
    s = bench.seed_runs(30, rng, exact=True)
    means = [np.mean(list(s["random"][k].suites["standard"].metrics[0].samples.values())) - 0.5 for k in range(30)]
    assert np.mean(means) == pytest.approx(0, abs=1e-12) and np.std(means, ddof=1) == pytest.approx(0.08)
