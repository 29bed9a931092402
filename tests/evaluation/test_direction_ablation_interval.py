"""The interval of direction ablation's forget accuracy with ``folds=1`` (``wilson-max``).

The variant is chosen among those the retain guard leaves eligible, by forget plus guard wins;
until 2026-12-06 the interval was the maximum over *every* variant, so a collapsed variant the
guard excluded (8 of 8 forget wins) gave the chosen variant's 0.25 the interval (0.61, 1.0)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from factlens.evaluation import direction_ablation as da
from factlens.evaluation.attacks import TaskScores
from factlens.evaluation.direction_ablation import DirectionAblationConfig, _selected, run_direction_ablation
from factlens.evaluation.result import Metric
from factlens.stats import max_wilson_interval, wilson_interval

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_interval_holds_a_chosen_variant_with_fewer_forget_wins_than_another():
    """The audit's construction: the chosen variant has 2 of 8 forget wins, another 8 of 8."""
    ids = [str(i) for i in range(8)]
    chosen = {k: float(i < 2) for i, k in enumerate(ids)}
    runs = {("final", 0): TaskScores(forget=dict.fromkeys(ids, 1.0), edit={}, maintain={}),
            ("final", 1): TaskScores(forget=chosen, edit={}, maintain={})}
    m = _selected([Metric.from_samples("ablation_forget_accuracy", chosen)], runs)[0]
    assert m.ci_method == "wilson-max" and m.ci_low <= m.value == 0.25 <= m.ci_high
    assert m.ci_low == pytest.approx(wilson_interval(2, 8, confidence=0.975)[0])  # its own end, Bonferroni level
    assert m.ci_high == pytest.approx(max_wilson_interval([8, 2], 8)[1])
    # when the chosen variant has the most wins, the interval is the maximum's, as before
    best = _selected([Metric.from_samples("ablation_forget_accuracy", dict.fromkeys(ids, 1.0))], runs)[0]
    assert (best.ci_low, best.ci_high) == pytest.approx(max_wilson_interval([8, 2], 8))


def test_a_variant_the_retain_guard_excludes_does_not_set_the_interval(planted, monkeypatch):
    """Layer 0's variant 'recovers' every forget fact but answers no retain guard fact (excluded);
    layer 1's recovers 2 of 8 and reads the guard (chosen). The interval is layer 1's alone."""
    real = da._ablated
    first = sorted(r.id for r in planted.task.forget)[:2]

    def fake(model, task, config, direction, layer, scope):
        r = real(model, task, config, direction, layer, scope)
        return replace(r, forget={k: 1.0 if layer == 0 or k in first else 0.0 for k in r.forget},
                       maintain=dict.fromkeys(r.maintain, 0.0 if layer == 0 else 1.0))

    monkeypatch.setattr(da, "_ablated", fake)
    st = DirectionAblationConfig(folds=1, layers=(0, 1), positions=("final",), random_control=False)
    r = run_direction_ablation(planted.model, planted.task, original=planted.model, direction_ablation_config=st)
    fold = r.extra["folds"][0]
    assert fold["layer"] == 1 and fold["fit_forget_accuracy"]["final"] == [1.0, 0.25]
    m = r["ablation_forget_accuracy"]
    assert m.value == 0.25 and m.ci_method == "wilson-max"
    assert (m.ci_low, m.ci_high) == pytest.approx(wilson_interval(2, 8))  # one eligible variant
    assert m.ci_low <= m.value <= m.ci_high
