"""The suite registry: requirements are checked before any suite runs; suites of one's own plug in."""

from __future__ import annotations

import pytest

from factlens.evaluation import SUITES, Suite, SuiteResult, evaluate
from factlens.evaluation.result import Metric

pytestmark = pytest.mark.usefixtures("one_thread")


def test_missing_inputs_fail_before_any_suite_runs(planted):
    calls = []

    def run_spy(model, task, **kw):
        calls.append(kw)
        return SuiteResult("spy", (Metric("one", 1.0, 1),))

    spy = Suite("spy", run_spy)
    # issue 11 item 7: 'mechanisms' without mask/mechanisms used to fail only after the suites before it had run
    with pytest.raises(ValueError, match="'mechanisms' suite needs mask=... and/or mechanisms=..."):
        evaluate(planted.model, planted.task, suites=[spy, "mechanisms"], show_progress=False)
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
    assert "quantization" in SUITES and SUITES.get("mechanisms").requires == (("mask", "mechanisms"),)
