"""The suite registry: requirements are checked before any suite runs; suites of one's own plug in."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass

import pytest

import factlens.evaluation
from factlens.components import Mask
from factlens.config import ConfigBase, Overrides
from factlens.evaluation import SUITES, EvalConfig, Suite, SuiteResult, evaluate
from factlens.evaluation.result import Metric
from factlens.registry import load

pytestmark = pytest.mark.usefixtures("one_thread")


def test_missing_inputs_fail_before_any_suite_runs(planted):
    calls = []

    def run_spy(model, task, **kw):
        calls.append(kw)
        return SuiteResult("spy", (Metric("one", 1.0, 1),))

    spy = Suite("spy", run_spy)
    # issue 11 item 7: 'mechanisms' without mask/mechanisms used to fail only after the suites before it had run
    with pytest.raises(ValueError, match="'mechanisms' suite needs mask=..."):
        evaluate(planted.model, planted.task, suites=[spy, "mechanisms"], show_progress=False)
    # it needs both: with one of them the check passed, and run_mechanisms failed after the suites before it
    mask = Mask.from_labels(["L1.mlp"])
    with pytest.raises(ValueError, match="'mechanisms' suite needs mechanisms=..."):
        evaluate(planted.model, planted.task, suites=[spy, "mechanisms"], mask=mask, show_progress=False)
    with pytest.raises(ValueError, match="'mechanisms' suite needs mask=..."):
        evaluate(planted.model, planted.task, suites=[spy, "mechanisms"], mechanisms={"lookup": mask},
                 show_progress=False)
    with pytest.raises(ValueError, match="'update_size' suite needs edit_result"):
        evaluate(planted.model, planted.task, suites=[spy, "update_size"], show_progress=False)
    assert calls == []


def test_a_suite_of_ones_own_gets_only_what_it_declares(planted):
    seen = {}

    def run_spy(model, task, *, original, config, baselines, **inputs):
        seen.update(inputs)
        return SuiteResult("spy", (Metric("one", 1.0, 1),))

    mask = ["L1.mlp"]
    res = evaluate(planted.model, planted.task, suites=[Suite("spy", run_spy, needs=("mask",))], mask=mask,
                   mechanisms={"x": mask}, show_progress=False)
    assert seen == {"mask": mask} and res["spy"]["one"].value == 1.0


def test_unknown_inputs_in_an_entry_are_refused():
    with pytest.raises(ValueError, match="unknown inputs \\['maks'\\]"):
        Suite("bad", lambda *a, **k: None, needs=("maks",))
    assert "quantization" in SUITES and SUITES.get("mechanisms").requires == (("mask",), ("mechanisms",))


# The worked example of docs/extending.md: a suite with settings of its own is one function, one
# frozen config and one entry; EvalConfig gets no new field.
@dataclass(frozen=True)
class ToyConfig(ConfigBase):
    """Settings of the toy suite."""

    n_first: int = 2
    scale: float = 1.0


def run_toy(model, task, *, original, config, baselines):
    settings = config.suite_config(TOY)  # the EvalConfig field for a built-in suite, else other_suites["toy"]
    facts = list(task.forget)[:settings.n_first]
    return SuiteResult("toy", (Metric("n_facts_scaled", settings.scale * len(facts), len(facts)),),
                       extra={"settings": settings.to_dict()})


TOY = Suite("toy", run_toy, config_type=ToyConfig, doc="toy: counts the first forget facts")


def test_a_suite_with_settings_is_one_function_one_config_and_one_entry(planted):
    cfg = EvalConfig(other_suites={"toy": ToyConfig(n_first=1, scale=3.0)})
    res = evaluate(planted.model, planted.task, suites=["standard", TOY], config=cfg, show_progress=False)
    assert res["toy"]["n_facts_scaled"].value == 3.0 and res["toy"].extra["settings"] == {"n_first": 1, "scale": 3.0}
    assert res.meta["config"]["other_suites"] == {"toy": {"n_first": 1, "scale": 3.0}}
    # the settings round-trip through JSON as a table, and a partial table keeps the other defaults
    back = EvalConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.suite_config(TOY) == ToyConfig(n_first=1, scale=3.0)
    assert cfg.override({"other_suites.toy.scale": 0.5}).suite_config(TOY) == ToyConfig(n_first=1, scale=0.5)
    assert EvalConfig(other_suites={"toy": {"scale": 2.0}}).suite_config(TOY) == ToyConfig(scale=2.0)
    assert EvalConfig().suite_config(TOY) == ToyConfig()  # no table: the defaults
    # built-in suites keep their typed fields, read the same way
    assert cfg.suite_config("relearning") is cfg.relearning


def test_settings_of_ones_own_suite_are_checked_before_any_suite_runs(planted):
    calls = []

    def run_spy(model, task, **kw):
        calls.append(kw)
        return SuiteResult("spy", (Metric("one", 1.0, 1),))

    spy = Suite("spy", run_spy)
    bad_field = EvalConfig(other_suites={"toy": {"n_frist": 1}})
    with pytest.raises(ValueError, match=r"unknown ToyConfig fields \['n_frist'\] \(in EvalConfig.other_suites\['toy'\]\); "
                                         r"valid fields: \['n_first', 'scale'\]"):
        evaluate(planted.model, planted.task, suites=[spy, TOY], config=bad_field, show_progress=False)
    misspelt = EvalConfig(other_suites={"tyo": {"n_first": 1}})
    with pytest.raises(ValueError, match=r"settings for \['tyo'\], which is no registered suite .*\['toy'\]"):
        evaluate(planted.model, planted.task, suites=[spy, TOY], config=misspelt, show_progress=False)
    assert calls == []


def test_other_suites_refuses_what_is_no_suite_setting():
    with pytest.raises(ValueError, match=r"the settings of the 'relearning' suite go in EvalConfig.relearning"):
        EvalConfig(other_suites={"relearning": {"steps": 1}})
    with pytest.raises(ValueError, match=r"the 'standard' suite takes no settings; suites with settings: \['direction"):
        EvalConfig.from_dict({"other_suites": {"standard": {}}})
    with pytest.raises(TypeError, match=r"other_suites\['toy'\] must be the suite's config or a table"):
        EvalConfig(other_suites={"toy": 3})
    with pytest.raises(ValueError, match=r"no settings for suite 'toy': it is not registered .* pass its Suite entry"):
        EvalConfig(other_suites={"toy": {}}).suite_config("toy")
    with pytest.raises(ValueError, match=r"no settings for suite 'standard': it takes no settings"):
        EvalConfig().suite_config("standard")
    with pytest.raises(TypeError, match=r"declares settings ToyConfig, but EvalConfig.relearning is a RelearningConfig"):
        EvalConfig().suite_config(Suite("relearning", run_toy, config_type=ToyConfig))


def test_a_registered_suite_needs_no_eval_config_field(monkeypatch):
    """A suite added to SUITES (one module + one entry) is configured like the built-in ones: its
    table is checked when the EvalConfig is built, and the runner's --eval reaches it."""
    monkeypatch.setattr(factlens.evaluation, "SUITES", SUITES.with_entry(TOY))
    assert EvalConfig(other_suites={"toy": {"scale": 2.0}}).suite_config("toy") == ToyConfig(scale=2.0)
    with pytest.raises(ValueError, match=r"unknown ToyConfig fields \['scal'\]"):
        EvalConfig(other_suites={"toy": {"scal": 2.0}})
    eval_overrides = Overrides(EvalConfig, {"other_suites.toy.n_first": 4, "relearning.steps": 1}, label="eval")
    assert eval_overrides.apply(EvalConfig()).suite_config("toy") == ToyConfig(n_first=4)
    # the built-in suites' spelling (--eval relearning.steps=5) said only "unknown field" for a new suite
    with pytest.raises(ValueError, match=r"the settings of \['toy'\] live in other_suites: e\.g\. "
                                         r"--eval other_suites\.toy\.n_first=\.\.\."):
        EvalConfig().override({"toy.n_first": 4})


def test_every_built_in_suite_with_settings_declares_its_field_type():
    """Each EvalConfig suite field is declared by its suite's entry; a suite added to SUITES needs no
    field (its settings are in other_suites), so only the fields are checked (this test refused a
    documented one-entry suite with settings)."""
    declared = {e.name: load(e.config_type) for e in SUITES if e.config_type is not None}
    assert {k: declared.get(k) for k in EvalConfig.suite_fields()} == EvalConfig.suite_fields()
    cfg = EvalConfig()
    fields = EvalConfig.suite_fields()
    assert all(cfg.suite_config(name) is getattr(cfg, name) for name in fields)
    # a built-in suite without a field (logit_lens) reads its table in other_suites, defaults without one
    assert all(cfg.suite_config(name) == cls() for name, cls in declared.items() if name not in fields)
    assert "logit_lens" in declared and "logit_lens" not in fields


def test_a_suite_called_directly_refuses_keywords_it_does_not_take(planted):
    """Every suite ended in ``**_``: a misspelt ``orignal=`` dropped the baseline and
    ``relearning_config=`` was ignored without a word (evaluate passes only what a suite declares)."""
    from factlens.evaluation.relearning import run_relearning
    from factlens.evaluation.standard import run_standard

    for fn in (run_relearning, run_standard):
        with pytest.raises(TypeError, match="orignal"):
            fn(planted.model, planted.task, orignal=planted.model)
    for entry in SUITES:
        params = inspect.signature(load(entry.fn)).parameters
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), entry.name
        assert {"original", "config", "baselines", *entry.needs} <= set(params), entry.name  # what evaluate passes


def test_an_entry_of_ones_own_named_like_a_built_in_is_refused(planted):
    """evaluate(suites=["standard", Suite("standard", mine)]) ran only the user's function and stored its
    numbers as "standard"; in the other order the user's suite was dropped without a word."""
    def mine(model, task, **kw):
        return SuiteResult("standard", (Metric("forget_accuracy", 0.0, 1),))

    fake = Suite("standard", mine)
    for order in (["standard", fake], [fake, "standard"], [fake]):
        with pytest.raises(ValueError, match="'standard'"):
            evaluate(planted.model, planted.task, original=planted.model, suites=order)
    ok = Suite("my_standard", mine)
    assert SUITES.get(ok) is ok and SUITES.get(SUITES.get("standard")) is SUITES.get("standard")
    with pytest.raises(ValueError, match="two different suites are both named 'mine'"):
        evaluate(planted.model, planted.task, suites=[Suite("mine", mine), Suite("mine", lambda m, t, **k: None)])
