"""An edit method that changes a parameter its EditResult does not record is named as the culprit.

The runner caught such a change, but reported it as "the model could not be restored after the
edit", which pointed at factlens's revert instead of the plugin's edit method, and did not say
what the method must do.
"""

from __future__ import annotations

import pytest
import torch

from factlens.editing import EditResult
from factlens.runner import RunConfig, Workspace
from factlens.runner import pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


def _leaky(model, mask, task, *, objective, config, inplace):
    """Halves the mask's MLP output weights (recorded) and scales an attention weight (not recorded)."""
    originals = {}
    with torch.no_grad():
        for c in mask:
            if c.kind == "mlp":
                name = f"blocks.{c.layer}.mlp.W_out"
                originals[name] = model.get_parameter(name).detach().clone()
                model.get_parameter(name).mul_(0.5)
        model.blocks[0].attn.W_Q.mul_(1.5)  # changed, but not in the result's record
    return EditResult.from_originals(model, mask, originals, config=config, objective=objective or task.objective,
                                     task=task)


def test_an_edit_method_changing_a_parameter_it_does_not_record_is_named(monkeypatch):
    from factlens.editing import registry
    from factlens.editing.registry import EditMethod

    monkeypatch.setattr(registry, "EDIT_METHODS", registry.EDIT_METHODS.with_entry(EditMethod("leaky", _leaky, None)))
    cfg = RunConfig(task="planted", model="planted", localizations=("all_mlps",), methods=("leaky",),
                    suites=("standard",), show_progress=False, edit={"steps": 1})
    ws = Workspace()
    plan = pipeline.plan_job(pipeline.PlanJob(cfg.to_dict(), 0, show_progress=False, need_budget=False), ws)
    with pytest.raises(RuntimeError) as err:
        pipeline.run_localization(cfg, 0, "all_mlps+leaky", plan=plan, workspace=ws)
    msg = str(err.value)
    assert "edit method 'leaky' (objective 'inject')" in msg
    assert "does not record: ['blocks.0.attn.W_Q']" in msg
    assert "must record every tensor it changes in its result's deltas" in msg
    assert "model_key" not in ws  # the model is dropped: the next job reloads it


def test_an_evaluation_that_changes_edited_entries_is_repaired_from_the_original(monkeypatch):
    """Session 50: ``EditResult.revert`` now refuses when the edited entries no longer hold the edit's
    values (a later edit not reverted first). The runner must then restore the model from the
    original, as it did when the revert wrote the old values over the change, not fail the unit."""
    import factlens.evaluation as evaluation

    real = evaluation.evaluate

    def evaluate_then_touch(model, *args, **kwargs):
        out = real(model, *args, **kwargs)
        with torch.no_grad():
            model.blocks[0].mlp.W_out.add_(1.0)  # every entry, the edited ones included
        return out

    monkeypatch.setattr(evaluation, "evaluate", evaluate_then_touch)  # run_localization imports it when it runs
    cfg = RunConfig(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",),
                    show_progress=False, edit={"steps": 1})
    ws = Workspace()
    plan = pipeline.plan_job(pipeline.PlanJob(cfg.to_dict(), 0, show_progress=False, need_budget=False), ws)
    rec = pipeline.run_localization(cfg, 0, "all_mlps", plan=plan, workspace=ws)
    assert rec["restore"]["repaired"] is True
