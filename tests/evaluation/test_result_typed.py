"""EvalResult as a typed result (issue 12, section 3): ``from_dict`` is the exact inverse of
``to_dict``/``save``, typed accessors, clear errors for damaged dicts, and ``EvalResult.plot()``."""

from __future__ import annotations

import json
import math

import plotly.graph_objects as go
import pytest

from factlens.evaluation.plots import HEADLINE_METRICS, metric_label
from factlens.evaluation.result import EvalResult, Metric, SuiteResult
from factlens.strict_json import strict_loads


def _result() -> EvalResult:
    forget = Metric.from_samples("forget_accuracy", {f"f{i}": float(i < 3) for i in range(12)}, baseline=1.0,
                                 higher_is_better=False)
    maintain = Metric.from_samples("maintain_accuracy", {f"m{i}": float(i != 0) for i in range(10)}, baseline=0.9)
    kl = Metric.from_samples("kl_divergence", {f"chunk:{i}": 0.01 * (i + 1) for i in range(6)},
                             weights={f"chunk:{i}": 8.0 for i in range(6)}, unit="tokens", higher_is_better=False)
    count = Metric("mask_params", 1234.0, 1, unit="params")  # no interval: a property of the mask
    std = SuiteResult("standard", (forget, maintain),
                      per_fact=tuple({"record_id": f"f{i}", "correct": i < 3} for i in range(12)), seconds=1.5)
    side = SuiteResult("side_effects", (kl, Metric("next_token_loss", float("nan"), 48, "tokens")),
                       extra={"per_layer": [0.1, 0.2], "note": "toy"}, seconds=0.25)
    mech = SuiteResult("mechanisms", (count,), extra={"mechanisms": {"lookup": ["L1.mlp"]}})
    return EvalResult({"standard": std, "side_effects": side, "mechanisms": mech}, {"name": "toy", "n_forget": 12},
                      {"model": "planted", "seconds": {"standard": 1.5}})


def test_from_dict_is_the_inverse_of_to_dict_and_save(tmp_path):
    res = _result()
    d = res.to_dict()
    back = EvalResult.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == json.loads(json.dumps(d))  # every field, incl. samples, per_fact and extra
    assert back.suites.keys() == res.suites.keys() and back.task == res.task and back.meta == res.meta
    for name, s in res.suites.items():
        b = back[name]
        assert (b.per_fact, b.extra, b.seconds) == (s.per_fact, s.extra, s.seconds)
        for m, mb in zip(s.metrics, b.metrics):
            assert (mb.ci_low, mb.ci_high, mb.ci_method, mb.samples) == (m.ci_low, m.ci_high, m.ci_method, m.samples)
            if not math.isnan(m.value):
                assert mb == m
    assert math.isnan(back["side_effects"]["next_token_loss"].value)  # NaN -> null -> NaN
    assert back["standard"]["forget_accuracy"].ci_method == "wilson"
    assert back["side_effects"]["kl_divergence"].ci_method == "bootstrap"
    path = tmp_path / "eval.json"
    res.save(path)
    assert EvalResult.load(path).to_dict() == back.to_dict()


def test_save_writes_standard_json_and_undefined_values_load_as_nan_or_none(tmp_path):
    """Per-fact rows and suite extras may hold NaN (a fact without an edit target, a layer whose
    probe had no target); save wrote the token NaN, which strict JSON parsers reject."""
    nan = float("nan")
    m = Metric.from_samples("edit_accuracy", {"f0": 1.0, "f1": nan, "f2": 0.0})
    res = EvalResult({"standard": SuiteResult("standard", (m, Metric("kl", nan, 0)),
                                              per_fact=({"record_id": "f1", "target_wins": nan},),
                                              extra={"target": [0.5, nan], "best": float("inf")})})
    path = tmp_path / "eval.json"
    res.save(path)
    d = strict_loads(path.read_text())
    s = d["suites"]["standard"]
    assert s["per_fact"] == [{"record_id": "f1", "target_wins": None}]
    assert s["extra"] == {"target": [0.5, None], "best": None}
    back = EvalResult.load(path)["standard"]
    assert math.isnan(back["kl"].value) and back["edit_accuracy"].value == m.value and back["edit_accuracy"].n == 2


def test_metric_dict_saved_before_intervals_loads():
    old = {"name": "forget_accuracy", "value": 0.25, "n": 8, "unit": "facts", "baseline": 1.0, "at_chance": False,
           "higher_is_better": False, "stderr": 0.1}
    m = Metric.from_dict(old)
    assert (m.value, m.n, m.ci_low, m.ci_high, m.ci_method, m.samples) == (0.25, 8, None, None, None, None)


def test_typed_accessors():
    s = _result()["standard"]
    assert s.get("forget_accuracy") is s["forget_accuracy"] and s.get("nosuch") is None
    assert "maintain_accuracy" in s and "nosuch" not in s
    with pytest.raises(KeyError, match="has no metric 'nosuch'"):
        s["nosuch"]


@pytest.mark.parametrize("bad, match", [
    ({}, "needs a 'suites' mapping"),
    ([], "needs a 'suites' mapping"),
    ({"suites": {"standard": {"metrics": []}}}, "suite 'standard': .*needs 'suite'"),
    ({"suites": {"standard": {"suite": "standard", "metrics": [{"name": "forget_accuracy", "value": 0.1}]}}},
     r"suite 'standard': .*metric 'forget_accuracy' lacks \['n'\]"),
    # values of the wrong type went into to_frame() and plots without a word
    ({"suites": {"standard": {"suite": "standard", "metrics": [{"name": "forget_accuracy", "value": 0.5, "n": "abc"}]}}},
     r"suite 'standard': metric 'forget_accuracy': \['n'\] must be numbers"),
    ({"suites": {"standard": {"suite": "standard", "metrics": [{"name": "forget_prob", "value": "0.5x", "n": 8}]}}},
     r"suite 'standard': metric 'forget_prob': \['value'\] must be numbers"),
    ({"suites": {"standard": {"suite": "standard", "metrics": [{"name": "forget_prob", "value": 0.5, "n": -1}]}}},
     r"metric 'forget_prob': \['n'\] must be numbers \(n >= 0\)"),
])
def test_damaged_dicts_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        EvalResult.from_dict(bad)


def test_plot_one_panel_per_suite_with_intervals():
    res = _result()
    fig = res.plot()
    assert isinstance(fig, go.Figure)
    # headline metrics only: the mechanisms suite (a parameter count) has none, so two panels
    assert [a.text for a in fig.layout.annotations] == ["standard", "side_effects"]
    bars = {(t.name, t.xaxis): t for t in fig.data}
    edited = bars[("edited", "x")]
    assert list(edited.x) == [metric_label("forget_accuracy"), metric_label("maintain_accuracy")]
    f = res["standard"]["forget_accuracy"]
    assert edited.y[0] == pytest.approx(f.value)
    assert edited.error_y.array[0] == pytest.approx(f.ci_high - f.value)
    assert edited.error_y.arrayminus[0] == pytest.approx(f.value - f.ci_low)
    assert list(bars[("original", "x")].y) == [1.0, 0.9]
    assert ("original", "x2") not in bars  # no baseline in the side-effects panel: no grey bars
    assert list(bars[("edited", "x2")].x) == [metric_label("kl_divergence")]
    assert [t.name for t in fig.data if t.showlegend] == ["original", "edited"]  # one legend entry each


def test_plot_options():
    res = _result()
    fig = res.plot(metrics=["maintain_accuracy", "mechanisms.mask_params"], show_baseline=False, title="t")
    assert fig.layout.title.text == "t" and [t.name for t in fig.data] == ["edited", "edited"]
    assert list(fig.data[0].x) == [metric_label("maintain_accuracy")]
    assert fig.data[1].y == (1234.0,) and math.isnan(fig.data[1].error_y.array[0])  # no interval: no error bar
    with pytest.raises(ValueError, match=r"no metric \['nosuch'\]"):
        res.plot(metrics=["forget_accuracy", "nosuch"])
    with pytest.raises(ValueError, match="pass metrics="):
        EvalResult({"mechanisms": res["mechanisms"]}).plot()
    with pytest.raises(TypeError):
        res.plot(["forget_accuracy"])  # options are keyword-only
    with pytest.raises(TypeError, match="list of metric names"):
        res.plot(metrics="forget_accuracy")
    assert set(HEADLINE_METRICS) >= {"forget_accuracy", "maintain_accuracy", "kl_divergence"}


def test_save_leaves_a_foreign_file_alone_and_replaces_its_own(tmp_path):
    """EvalResult.save wrote over any file (a user's notes were replaced by JSON)."""
    res = EvalResult({"standard": SuiteResult("standard", (Metric.from_samples("forget_accuracy", {"a": 1.0, "b": 0.0}),))},
                     task={"name": "t"})
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    with pytest.raises(ValueError, match="is not a saved EvalResult factlens wrote; it is left alone"):
        res.save(notes)
    assert notes.read_text() == '{"mine": 1}'
    out = tmp_path / "eval.json"
    res.save(out)
    again = EvalResult({"standard": SuiteResult("standard", (Metric.from_samples("forget_accuracy", {"a": 0.0}),))})
    again.save(out)  # an earlier saved evaluation is replaced
    assert EvalResult.load(out).to_dict() == again.to_dict()
    res.save(out)
    assert EvalResult.load(out).task == {"name": "t"}


@pytest.mark.parametrize("field, value, match", [
    ("at_chance", "false", r"'at_chance' must be true or false, got 'false'"),  # loaded as truthy: "at chance"
    ("higher_is_better", "true", r"'higher_is_better' must be true or false, got 'true'"),
    ("at_chance", 0, r"'at_chance' must be true or false, got 0"),
    ("at_chance", None, r"'at_chance' must be true or false, got None"),
    ("n", 2.5, r"'n' must be a whole number .*got 2.5"),
    ("n", None, r"'n' must be a whole number .*got None"),
])
def test_metric_dict_with_a_flag_or_count_of_the_wrong_type_is_refused(field, value, match):
    """Audit (t8_save_paths.py): a hand-edited file's at_chance "false" loaded as a truthy string, n 2.5 as a count."""
    d = {"name": "forget_accuracy", "value": 0.5, "n": 3, "at_chance": False, field: value}
    with pytest.raises(ValueError, match="metric 'forget_accuracy': " + match):
        Metric.from_dict(d)
    with pytest.raises(ValueError, match="suite 'standard': metric 'forget_accuracy': " + match):
        EvalResult.from_dict({"suites": {"standard": {"suite": "standard", "metrics": [d]}}})


def test_metric_dict_flags_and_counts_of_the_right_type_load():
    import numpy as np

    m = Metric.from_dict({"name": "x", "value": 0.5, "n": 3.0, "at_chance": True, "higher_is_better": False})
    assert m.n == 3 and type(m.n) is int and m.at_chance is True and m.higher_is_better is False
    assert Metric.from_dict({"name": "x", "value": 0.5, "n": np.int64(4), "at_chance": np.bool_(True)}).at_chance


@pytest.mark.parametrize("text", [
    '{"task": "my notes, not an eval"}',
    '{"task": {"name": "mine"}, "notes": [1, 2]}',
    '{"task": {"name": "mine"}, "meta": {}, "suites": "none yet"}',
    '{"task": {"name": "mine"}, "meta": {}, "suites": {"standard": 3}}',
    '{"task": {"name": "mine"}, "meta": {}, "suites": {}',  # not JSON
])
def test_save_leaves_a_file_that_only_opens_like_an_evaluation_alone(tmp_path, text):
    """Audit (t8_save_paths.py): any JSON whose first key was "task" counted as a saved evaluation
    and was overwritten (a user's {"task": "my notes"} was replaced)."""
    notes = tmp_path / "notes.json"
    notes.write_text(text)
    with pytest.raises(ValueError, match="is not a saved EvalResult factlens wrote; it is left alone"):
        _result().save(notes)
    assert notes.read_text() == text


def test_save_replaces_evaluations_saved_by_every_version(tmp_path):
    """What EvalResult.save wrote before strict_dumps (json.dumps, indent=1), a task description
    longer than the 4,096 characters check_output reads, and a task of None are recognized."""
    from factlens.strict_json import json_default

    res = _result()
    long_task = EvalResult(res.suites, {"name": "t", "description": "x" * 10_000}, {"model": "planted"})
    for i, old in enumerate((res, long_task, EvalResult(res.suites, None, None))):
        path = tmp_path / f"old{i}.json"
        path.write_text(json.dumps(old.to_dict(), indent=1, default=json_default))
        again = EvalResult({"standard": res["standard"]}, {"name": "new"})
        again.save(path)
        assert EvalResult.load(path).to_dict() == again.to_dict()
        long_task.save(path)  # its own current save too
        assert EvalResult.load(path).task == long_task.task
