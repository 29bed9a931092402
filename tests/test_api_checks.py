"""Notebook mistakes refused with a message that says what to do, instead of being accepted silently or
failing with an unrelated error: a budget given to a localization that does not use one, a file of the
wrong kind loaded, wrongly typed selection options, one metric name as ``metrics=``, a list in a set
operation of masks. Valid uses are checked to behave as before beside each refusal."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import factlens
from factlens.components import Component, Mask, ModelShape
from factlens.evaluation import plots as P
from factlens.evaluation.result import EvalResult, Metric, SuiteResult
from factlens.localization import localization_mask, localization_scores, mask_from_scores
from factlens.scores import ComponentScores

SHAPE = ModelShape(n_layers=2, n_heads=2, n_kv_heads=2, d_model=8, d_head=4, d_mlp=16)
COMPS = tuple(SHAPE.all_components())  # L0H0 L0H1 L0.mlp L1H0 L1H1 L1.mlp


def _scores() -> ComponentScores:
    return ComponentScores(COMPS, np.array([0.5, -2.0, 1.5, 0.1, 0.0, -0.7]), "random", "uniform", SHAPE)


def _no_warnings(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


# -- param_budget given to a localization that selects by its own rule ---------------------------
def test_flu_and_manual_warn_that_param_budget_is_ignored(planted):
    """``localization_mask("flu", param_budget=100)`` gave a 12,448-parameter mask without a word."""
    m, d = planted.model, planted.dataset
    flu, _ = localization_mask(m, d, "flu", show_progress=False)
    with pytest.warns(UserWarning, match=r"localization 'flu' selects its mask by its own rule \(the components "
                                         r"scoring >= 0\.5\), not by a parameter budget: param_budget=100 is ignored"):
        flu_100, _ = localization_mask(m, d, "flu", param_budget=100, show_progress=False)
    assert flu_100 == flu and flu_100.n_params(m) > 100  # the mask itself is unchanged
    with pytest.warns(UserWarning, match="'manual' selects its mask by its own rule"):
        manual, _ = localization_mask(m, d, "manual", components=["L1.mlp", "L2H1"], param_budget=100)
    assert manual.labels == ["L1.mlp", "L2H1"]


def test_top_mlp_selection_from_scores_warns_that_param_budget_is_ignored(planted):
    scores = localization_scores(planted.model, planted.dataset, "random", seed=0)
    without = mask_from_scores(planted.model, "causal_tracing_top_mlp", scores)
    with pytest.warns(UserWarning, match=r"'causal_tracing_top_mlp' .*\(its top 1 component\(s\) by score\)"):
        with_budget = mask_from_scores(planted.model, "causal_tracing_top_mlp", scores, param_budget=10)
    assert with_budget == without and len(without) == 1


def test_budgets_where_they_are_used_or_documented_as_ignored_do_not_warn(planted):
    """Budgeted localizations use it; the fixed masks ignore it as documented; the runner passes
    ``param_budget=None`` to the unbudgeted ones (``pipeline._mask_and_scores``, ``_run_flu``)."""
    m, d = planted.model, planted.dataset
    budget = Mask(["L1.mlp"]).n_params(m)
    rnd = _no_warnings(lambda: localization_mask(m, d, "random_mlps", param_budget=budget, seed=0)[0])
    assert rnd.n_params(m) == budget
    for name in ("all_mlps", "nonlocalized"):
        mask, scores = _no_warnings(lambda: localization_mask(m, d, name, param_budget=budget))
        assert scores is None and len(mask) > 0
    flu_scores = _no_warnings(lambda: localization_scores(m, d, "flu", seed=0, show_progress=False))
    assert _no_warnings(lambda: mask_from_scores(m, "flu", flu_scores, param_budget=None)).labels == ["L1.mlp"]


# -- loading the wrong kind of file ----------------------------------------------------------------
def test_component_scores_refuse_a_file_of_another_kind(tmp_path):
    """A mask loaded as scores was ``KeyError: 'scores'``."""
    Mask(["L1.mlp"], name="m").save(tmp_path / "mask.json")
    with pytest.raises(ValueError, match=r"not a saved ComponentScores: it needs the keys \['method', 'metric', "
                                         r"'shape', 'scores'\].*got keys \['components', 'name'\]; it looks like a "
                                         r"saved Mask: load it with factlens\.Mask\.load"):
        ComponentScores.load(tmp_path / "mask.json")
    with pytest.raises(ValueError, match="got keys.*'suites'.*load it with EvalResult.load"):
        ComponentScores.from_dict({"task": {}, "meta": {}, "suites": {}})
    with pytest.raises(ValueError, match="got a list; load files saved with ComponentScores.save"):
        ComponentScores.from_dict(["L1.mlp"])
    _scores().save(tmp_path / "scores.json")  # a real file still loads
    assert ComponentScores.load(tmp_path / "scores.json").values.tolist() == _scores().values.tolist()


def test_mask_refuses_a_file_of_another_kind(tmp_path):
    """Scores loaded as a mask were ``KeyError: 'components'``, a plain list of labels a ``TypeError``."""
    _scores().save(tmp_path / "scores.json")
    with pytest.raises(ValueError, match=r"not a saved Mask: it needs a 'components' list of labels .*got keys "
                                         r"\[.*'scores'.*\]; it looks like saved scores: load it with "
                                         r"ComponentScores\.load, then choose with \.to_mask"):
        Mask.load(tmp_path / "scores.json")
    (tmp_path / "labels.json").write_text(json.dumps(["L1.mlp", "L0H1"]))
    with pytest.raises(ValueError, match=r"got a list; for a plain list of labels use Mask\.from_labels\(labels\)"):
        Mask.load(tmp_path / "labels.json")
    with pytest.raises(ValueError, match="got keys .*'suites'.*EvalResult.load"):
        Mask.from_dict({"suites": {}})
    Mask(["L1.mlp", "L0H1"], name="m").save(tmp_path / "mask.json")
    assert Mask.load(tmp_path / "mask.json") == Mask(["L1.mlp", "L0H1"], name="m")


# -- wrongly typed selection options ---------------------------------------------------------------
@pytest.mark.parametrize("options, match", [
    ({"top_k": 2.5}, r"top_k must be a whole number \(an int\), got float 2\.5; write top_k=int\(2\.5\)"),
    ({"top_k": True}, r"top_k must be a whole number \(an int\), got bool True"),  # was taken as 1
    ({"param_budget": "10000"}, r"param_budget must be a whole number .*got str '10000'; write "
                                r"param_budget=int\('10000'\)"),
    ({"param_budget": False}, "param_budget must be a whole number .*got bool False"),
    ({"threshold": "0.5"}, r"threshold must be a number .*got str '0\.5'; write threshold=float\('0\.5'\)"),
    ({"threshold": True}, "threshold must be a number .*got bool True"),
])
def test_to_mask_refuses_wrongly_typed_options(options, match):
    with pytest.raises(TypeError, match=match):
        _scores().to_mask(**options)


def test_to_mask_takes_numpy_numbers_as_before():
    s = _scores()
    assert s.to_mask(top_k=np.int64(2)) == s.to_mask(top_k=2) and s.to_mask(top_k=2).labels == ["L0H1", "L0.mlp"]
    budget = Mask(["L0.mlp"]).n_params(SHAPE)
    assert s.to_mask(param_budget=np.int32(budget)) == s.to_mask(param_budget=budget)
    assert s.to_mask(param_budget=float(budget)) == s.to_mask(param_budget=budget)  # 1e6-style budgets as before
    with pytest.raises(TypeError, match="param_budget must be a whole number"):
        s.to_mask(param_budget=budget + 0.5)
    assert s.to_mask(threshold=np.float32(0.5)) == s.to_mask(threshold=0.5) == s.to_mask(threshold=1 / 2)
    assert s.to_mask(threshold=1).labels == ["L0H1", "L0.mlp"]  # an int threshold is a number too


# -- one metric name as metrics= ---------------------------------------------------------------------
def _eval() -> EvalResult:
    return EvalResult({"standard": SuiteResult("standard", (
        Metric.from_samples("forget_accuracy", {"a": 1.0, "b": 0.0}, higher_is_better=False),
        Metric.from_samples("edit_accuracy", {"a": 1.0, "b": 1.0})))})


@pytest.mark.parametrize("plot", [P.metric_bars, P.spider_plot, P.spider_metrics])
def test_one_metric_name_is_refused_not_split_into_letters(plot):
    """``metric_bars(metrics="forget_accuracy")`` looked for the metrics 'f', 'o', 'r'..."""
    with pytest.raises(TypeError, match=r"metrics must be a list of metric names, got 'forget_accuracy'; "
                                        r"write metrics=\['forget_accuracy'\]"):
        plot({"flu": _eval()}, metrics="forget_accuracy")
    with pytest.raises(TypeError, match="metrics must be a list of metric names"):
        _eval().plot(metrics="forget_accuracy")  # the check they now share


def test_metric_lists_and_tuples_draw_as_before():
    res = {"flu": _eval()}
    assert P.spider_metrics(res, ("edit_accuracy", "forget_accuracy")) == ["edit_accuracy", "forget_accuracy"]
    assert P.spider_metrics(res) == ["forget_accuracy", "edit_accuracy"]
    bars = P.metric_bars(res, metrics=["forget_accuracy"])
    assert [t.name for t in bars.data] == ["flu"] and list(bars.data[0].x) == ["Forget"]
    assert len(P.spider_plot(res, metrics=["forget_accuracy", "edit_accuracy"]).data) == 2


# -- set operations of masks with something else ---------------------------------------------------
@pytest.mark.parametrize("op, other", [("|", ["L0.mlp"]), ("&", {"L0.mlp"}), ("-", "L0.mlp")])
def test_mask_set_operations_refuse_non_masks(op, other):
    """``mask | ["L0.mlp"]`` was ``AttributeError: 'list' object has no attribute 'components'``."""
    mask = Mask(["L1.mlp", "L0H1"], name="m")
    fn = {"|": lambda a, b: a | b, "&": lambda a, b: a & b, "-": lambda a, b: a - b}[op]
    with pytest.raises(TypeError, match=rf"Mask \{op} takes another Mask, got {type(other).__name__} .*wrap "
                                        rf"components or labels as Mask\(\[\.\.\.\]\) first, e\.g\. mask \{op} "
                                        r"Mask\(\['L0\.mlp'\]\)"):
        fn(mask, other)
    assert fn(mask, Mask(["L0.mlp"])) == {"|": Mask(["L1.mlp", "L0H1", "L0.mlp"], name="m"), "&": Mask([], name="m"),
                                          "-": mask}[op]
    assert (mask | Mask([Component("mlp", 0)], name="x")).name == "m"
