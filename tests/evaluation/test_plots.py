"""Plots of evaluation results, on small synthetic EvalResults."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from factlens.evaluation.plots import metric_bars, metric_label, probe_curves, relearning_bars, spider_plot
from factlens.evaluation.result import EvalResult, Metric, SuiteResult


def _result(shift: float = 0.0) -> EvalResult:
    std = SuiteResult("standard", (
        Metric("forget_accuracy", 0.1 + shift, 8, baseline=1.0, higher_is_better=False, stderr=0.05),
        Metric("edit_accuracy", 0.8 - shift, 8, baseline=0.0),
        Metric("maintain_accuracy", 0.95, 20, baseline=1.0),
    ))
    fmts = SuiteResult("formats", (
        Metric("mcq_forget_error", 0.4 + shift, 8, baseline=0.0),
        Metric("mcq_edit_accuracy", 0.3, 8, baseline=0.0, at_chance=True),
        Metric("neighborhood_maintain_accuracy", 0.9, 8, baseline=0.95),
    ))
    side = SuiteResult("side_effects", (Metric("next_token_loss", 3.2, 512, "tokens", higher_is_better=False),
                                        Metric("mmlu_accuracy", 0.3, 57, "questions", baseline=0.32)))
    rel = SuiteResult("relearning", (
        Metric("relearn_forget_accuracy", 0.5 + shift, 4, baseline=1.0, higher_is_better=False, stderr=0.2),
        Metric("relearn_forget_accuracy_before", 0.1, 4, baseline=1.0, higher_is_better=False),
    ))
    soft = SuiteResult("soft_prompts", (Metric("soft_prompt_forget_accuracy", 0.25, 4, higher_is_better=False),))
    probes = SuiteResult("probes", (
        Metric("probe_true_accuracy_max", 0.9, 8, higher_is_better=False),
        Metric("probe_target_accuracy_max", 0.2, 8),
    ), extra={"layers": [0, 1, 2, 3], "true": [0.3, 0.4, 0.9, 0.8], "target": [0.3, 0.2, 0.1, None],
              "maintain_cv": [0.3, 0.5, 1.0, 1.0], "chance": 0.34,
              "baseline": {"true": [0.3, 0.4, 1.0, 1.0], "target": [0.3, 0.3, 0.0, 0.0], "maintain_cv": [0.3, 0.5, 1.0, 1.0]}})
    return EvalResult({s.suite: s for s in (std, fmts, side, rel, soft, probes)}, {"name": "toy"})


@pytest.fixture(scope="module")
def results():
    return {"flu": _result(0.0), "all_mlps": _result(0.2)}


def test_spider_plot(results):
    fig = spider_plot(results)
    assert isinstance(fig, go.Figure) and len(fig.data) == 2
    theta = list(fig.data[0].theta)
    assert "1 - Forget" in theta and "MMLU" in theta and "Text Loss" not in theta  # loss is not in [0, 1]
    # lower-is-better metrics are flipped: 1 - 0.1
    assert fig.data[0].r[theta.index("1 - Forget")] == pytest.approx(0.9)
    assert len(spider_plot(results["flu"], metrics=["forget_accuracy", "maintain_accuracy", "edit_accuracy"]).data) == 1
    with pytest.raises(ValueError, match="none of the metrics"):
        spider_plot(results, metrics=["no_such_metric"])


def test_metric_bars(results):
    fig = metric_bars(results)
    assert isinstance(fig, go.Figure) and len(fig.data) == 3  # original + two localizations
    assert fig.data[0].name == "original"
    assert {"Forget", "Edit", "Maintain", "MCQ Forget Error", "MCQ Edit", "Neighborhood", "MMLU"} <= set(fig.data[1].x)
    fig2 = metric_bars(results, ["forget_accuracy"], show_baseline=False)
    assert len(fig2.data) == 2


def test_probe_curves(results):
    fig = probe_curves(results["flu"])
    names = [t.name for t in fig.data]
    assert isinstance(fig, go.Figure) and "true answer" in names and "edit target" in names
    assert probe_curves(results["flu"]["probes"]).data  # a SuiteResult works too
    assert len(probe_curves(results).data) == 4  # true + target per localization
    with pytest.raises(ValueError, match="probes"):
        probe_curves({"x": EvalResult({"standard": results["flu"]["standard"]})})


def test_relearning_bars(results):
    fig = relearning_bars(results)
    assert isinstance(fig, go.Figure) and len(fig.data) == 2
    assert list(fig.data[1].y) == pytest.approx([0.5, 0.7])
    with pytest.raises(ValueError, match="relearn"):
        relearning_bars({"x": EvalResult({"standard": results["flu"]["standard"]})})


def test_metric_label_and_bad_input():
    assert metric_label("forget_accuracy") == "Forget"
    assert metric_label("paraphrase_edit_accuracy") == "Paraphrase Edit"
    assert metric_label("zero_shot_maintain_accuracy") == "Zero-Shot Maintain"
    assert metric_label("something_new") == "Something New"
    with pytest.raises(TypeError):
        metric_bars([1, 2])


def test_roundtrip_results_plot(tmp_path, results):
    path = tmp_path / "r.json"
    results["flu"].save(path)
    assert spider_plot({"flu": EvalResult.load(path)}).data


def test_spider_plot_names_the_axes_at_chance(results):
    """Table 1 greys at-chance cells and the bars say "(at chance)"; the spider drew them as any axis."""
    fig = spider_plot(results, metrics=["forget_accuracy", "mcq_edit_accuracy", "mcq_forget_error"])
    theta = list(fig.data[0].theta)
    assert any(t.endswith("(at chance)") and "MCQ" in t for t in theta)
    assert sum(t.endswith("(at chance)") for t in theta[:-1]) == 1  # only the metric flagged at chance


def _interval(fig, loc: str, label: str) -> tuple[float, float]:
    """The (low, high) ends of ``loc``'s interval segment on the spider axis ``label``, read from the figure."""
    trace = next(t for t in fig.data if t.name == f"{loc} 95 % interval")
    rs = [r for r, th in zip(trace.r, trace.theta) if th == label]
    assert len(rs) == 2
    return rs[0], rs[1]


def test_spider_plot_draws_each_metrics_interval_with_flipped_ends_where_lower_is_better():
    """The issue asked that "the spider and bar plots get error bars"; the spider drew none."""
    def res(shift: float) -> EvalResult:
        std = SuiteResult("standard", (
            Metric("forget_accuracy", 0.1 + shift, 8, higher_is_better=False, ci_low=0.02 + shift, ci_high=0.3 + shift),
            Metric("edit_accuracy", 0.8, 8, ci_low=0.6, ci_high=0.9),
            Metric("maintain_accuracy", 0.95, 20)))  # no interval: no segment
        return EvalResult({"standard": std})

    locs = [f"loc{i}" for i in range(6)]
    fig = spider_plot({loc: res(0.01 * i) for i, loc in enumerate(locs)})
    assert _interval(fig, "loc0", "Edit") == pytest.approx((0.6, 0.9))
    assert _interval(fig, "loc0", "1 - Forget") == pytest.approx((1 - 0.3, 1 - 0.02))  # 1 - x: the ends swap
    assert _interval(fig, "loc5", "1 - Forget") == pytest.approx((1 - 0.35, 1 - 0.07))
    seg = next(t for t in fig.data if t.name == "loc0 95 % interval")
    assert "Maintain" not in seg.theta and "loc0, 1 - Forget: 0.900 [0.700, 0.980]" in seg.text
    # readable with six localizations: one legend entry each, the segment in its area's legend group
    assert [t.name for t in fig.data if t.showlegend is not False] == locs
    assert {t.legendgroup for t in fig.data} == set(locs)


def test_relearning_bars_say_at_chance():
    """Audit (confirm_chance_robustness.py, run15): metric_bars and the spider flag a metric at chance;
    the relearning bars did not."""
    rel = lambda c: EvalResult({"relearning": SuiteResult("relearning", (  # noqa: E731
        Metric("relearn_forget_accuracy", 0.5, 4, baseline=1.0, higher_is_better=False, at_chance=c),))})
    fig = relearning_bars({"flu": rel(True), "random": rel(False)})
    assert list(fig.data[1].text) == ["(at chance)", ""]


def test_probe_curves_chance_line_is_the_forget_facts_bar_not_the_training_majority():
    """Audit (t4_probe_plot.py): the curves are accuracies on the forget facts, whose chance bar is
    extra["forget_chance"]; the line was drawn at extra["chance"], the training facts' majority share."""
    def probes(**chances) -> SuiteResult:
        return SuiteResult("probes", (Metric("probe_true_accuracy_max", 0.9, 8, higher_is_better=False),),
                           extra={"layers": [0, 1], "true": [0.3, 0.9], "target": [0.1, 0.2], **chances})

    def line(fig) -> list[float]:
        return [s.y0 for s in fig.layout.shapes]

    assert line(probe_curves(probes(chance=0.8, forget_chance=0.25))) == [0.25]
    assert line(probe_curves({"a": probes(chance=0.8, forget_chance=0.25),
                              "b": probes(chance=0.7, forget_chance=0.25)})) == [0.25]
    assert line(probe_curves(probes(chance=0.8))) == [0.8]  # a folder saved before forget_chance was recorded
    assert line(probe_curves(probes())) == []


def test_relearning_bars_mark_a_collapsed_unit():
    """Audit s49 (d_collapse.py): compare marks a unit whose attack collapsed the model ◊; the relearning
    bars drew its relearned accuracy as recovery, with no mark and no legend."""
    def rel(at_chance: bool, collapsed: bool) -> EvalResult:
        m = Metric("relearn_forget_accuracy", 0.5, 8, baseline=1.0, higher_is_better=False, at_chance=at_chance)
        return EvalResult({"relearning": SuiteResult("relearning", (m,), extra={
            "maintain_collapse": {"collapsed": collapsed}})})

    fig = relearning_bars({"flu": rel(False, True), "random": rel(False, False), "rome": rel(True, True)})
    assert list(fig.data[1].text) == ["◊ collapsed", "", "(at chance) ◊ collapsed"]
    assert list(fig.data[0].text) == ["", "", "(at chance)"]  # before the attack: not marked
    assert any("◊" in a.text for a in fig.layout.annotations)
    plain = relearning_bars({"random": rel(False, False)})
    assert not any("◊" in (a.text or "") for a in plain.layout.annotations)


def _relearned(before_attack: float, unedited_mmlu: float) -> EvalResult:
    rel = SuiteResult("relearning", (
        Metric("relearn_forget_accuracy", 0.5, 4, baseline=1.0, higher_is_better=False),
        Metric("relearn_maintain_accuracy", 0.7, 20, baseline=before_attack),
    ))
    side = SuiteResult("side_effects", (Metric("mmlu_accuracy", 0.3, 57, "questions", baseline=unedited_mmlu),))
    return EvalResult({"relearning": rel, "side_effects": side})


def test_metric_bars_draw_no_original_where_the_baseline_is_not_one_unedited_value():
    """Review (session 50): the grey "original" bar took the first localization's baseline — for
    relearn_maintain_accuracy that is the FLU-edited model before the attack (0.95 here), and where
    the unedited model was scored on each localization's own data, the FLU's value stood for all."""
    res = {"flu": _relearned(0.95, 0.32), "random": _relearned(0.60, 0.40)}
    fig = metric_bars(res, ["relearn_forget_accuracy", "relearn_maintain_accuracy", "mmlu_accuracy"])
    assert fig.data[0].name == "original"
    assert list(fig.data[0].y) == [1.0, None, None]  # only the shared unedited value is drawn
    same = metric_bars({"flu": _relearned(0.95, 0.32), "random": _relearned(0.60, 0.32)}, ["mmlu_accuracy"])
    assert list(same.data[0].y) == [0.32]


def test_suite_bars_label_a_before_the_attack_baseline_so():
    from factlens.evaluation.plots import suite_bars

    fig = suite_bars(_relearned(0.95, 0.32), ["relearn_forget_accuracy", "relearn_maintain_accuracy"])
    bars = {t.name: list(t.y) for t in fig.data}
    assert bars["original"] == [1.0, None]
    assert bars["before the attack"] == [None, 0.95]
