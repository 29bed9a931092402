"""The forest plot of comparison tables (factlens.comparison_plots)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import factlens
from factlens.comparison_plots import difference_plot
from factlens.evaluation.result import EvalResult, Metric, SuiteResult

pytestmark = pytest.mark.usefixtures("one_thread")


def _ev(forget: list[int], maintain: list[int]) -> EvalResult:
    ms = tuple(Metric.from_samples(name, {f"f{i}": float(x) for i, x in enumerate(v)})
               for name, v in (("forget_accuracy", forget), ("maintain_accuracy", maintain)))
    return EvalResult({"standard": SuiteResult("standard", ms)})


@pytest.fixture()
def runs():
    same = [1] * 90 + [0] * 10
    return {"flu": [_ev([0] * 100, same)], "random": [_ev([1] * 60 + [0] * 40, same)]}


def _points(fig) -> dict[str, tuple[str, float, float, float]]:
    """Per row label: (trace name, diff, interval's low end, high end) as drawn."""
    out = {}
    for tr in fig.data:
        if tr.name == "± margin":
            continue
        for x, y, up, down in zip(tr.x, tr.y, tr.error_x.array, tr.error_x.arrayminus):
            out[y] = (tr.name, x, x - down, x + up)
    return out


def test_each_table_kind_is_drawn_with_its_intervals_and_outcomes(runs):
    for table, outcomes in ((factlens.compare(runs), {"significant", "not significant"}),
                            (factlens.equivalence(runs, margin=0.1), {"equivalent", "not shown equivalent"}),
                            (factlens.verdicts(runs, margin=0.1), {"higher", "equivalent"})):
        fig = difference_plot(table)
        drawn = _points(fig)
        assert {name for name, *_ in drawn.values()} == outcomes
        for r in table.to_dict("records"):
            name, x, lo, hi = drawn[f"random · {factlens.evaluation.plots.metric_label(r['metric'])}"]
            assert x == r["diff"] and lo == pytest.approx(r["ci_low"]) and hi == pytest.approx(r["ci_high"])
    margins = [tr for tr in difference_plot(factlens.verdicts(runs, margin=0.1)).data if tr.name == "± margin"]
    assert len(margins) == 1 and sorted(margins[0].x) == [-0.1, -0.1, 0.1, 0.1]
    assert not [tr for tr in difference_plot(factlens.compare(runs)).data if tr.name == "± margin"]


def test_a_table_it_cannot_draw_is_refused():
    import pandas as pd

    with pytest.raises(ValueError, match="has no row"):
        difference_plot(pd.DataFrame(columns=["localization", "metric", "diff", "ci_low", "ci_high"]))
    with pytest.raises(ValueError, match=r"missing \['ci_low', 'ci_high'\]"):
        difference_plot(pd.DataFrame({"localization": ["a"], "metric": ["m"], "diff": [0.1]}))
    t = pd.DataFrame({"localization": ["a"], "metric": ["m"], "diff": [0.1], "ci_low": [math.nan],
                      "ci_high": [math.nan]})
    (name, x, lo, hi), = _points(difference_plot(t)).values()  # no interval: no bar, the point still drawn
    assert name == "difference" and x == 0.1 and np.isnan(lo) and np.isnan(hi)


def test_metrics_of_other_scales_get_panels_of_their_own():
    """A KL divergence (differences of ~0.4) and a loss drawn on the accuracies' axis squeezed every
    accuracy difference to a point: each such metric gets its own panel and axis; accuracies and
    probabilities share one, and every outcome is in the legend once."""
    import pandas as pd

    t = pd.DataFrame({"localization": ["random", "random", "random", "nonlocalized"],
                      "metric": ["forget_accuracy", "forget_probability", "kl_divergence", "kl_divergence"],
                      "value": [0.6, 0.4, 0.45, 0.52], "reference_value": [0.0, 0.1, 0.04, 0.04],
                      "diff": [0.6, 0.3, 0.41, 0.48], "ci_low": [0.4, 0.2, 0.3, 0.35], "ci_high": [0.8, 0.4, 0.5, 0.6],
                      "significant": [True, False, True, True]})
    fig = difference_plot(t)
    axis_of = {y: tr.yaxis for tr in fig.data for y in tr.y}
    assert axis_of["random · " + factlens.evaluation.plots.metric_label("forget_accuracy")] == "y"
    assert axis_of["random · " + factlens.evaluation.plots.metric_label("forget_probability")] == "y"
    kl = factlens.evaluation.plots.metric_label("kl_divergence")
    assert axis_of[f"random · {kl}"] == axis_of[f"nonlocalized · {kl}"] == "y2"
    assert [a.text for a in fig.layout.annotations] == ["accuracies, probabilities and rates", "kl_divergence"]
    assert sorted(tr.name for tr in fig.data if tr.showlegend is not False) == ["not significant", "significant"]
    # one scale: one panel, as before
    one = difference_plot(t.iloc[:2])
    assert {tr.yaxis for tr in one.data} == {"y"} and not one.layout.annotations
