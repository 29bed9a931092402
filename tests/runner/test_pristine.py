"""The runner's unedited model without a second weight copy (factlens.runner.pristine): same results, checked restores."""

from __future__ import annotations

import json

import pytest
import torch

from factlens.components import Mask
from factlens.editing import EditConfig, edit
from factlens.runner import RunConfig, Workspace
from factlens.runner import pipeline
from factlens.runner.pristine import OriginalView, PristineCopy, original_tensors
from factlens.testing import planted_fact_model

pytestmark = pytest.mark.usefixtures("one_thread")

SUITES = ("standard", "formats", "side_effects", "relearning", "probes", "soft_prompts", "mechanisms", "quantization",
          "update_size")
VOLATILE = {"timings", "cpu_seconds", "versions", "finished_at", "data", "baseline_cache", "peak_rss_gb"}


def _strip(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    ev = dict(out["eval"])
    ev["meta"] = {k: v for k, v in ev["meta"].items() if k not in ("seconds", "total_seconds")}
    for suite in ev.get("suites", {}).values():  # per-suite wall times
        if isinstance(suite, dict):
            suite.pop("seconds", None)
            suite.get("extra", {}).pop("train_seconds", None)
            for attack in suite.get("extra", {}).get("attacks", []):  # relearning: one entry per attack
                attack.pop("train_seconds", None)
    out["eval"] = ev
    out["edit"] = {k: v for k, v in out["edit"].items() if k != "seconds"}
    if "meta" in out["edit"]:  # the edit's diagnostics include its own timings
        out["edit"]["meta"] = {k: v for k, v in out["edit"]["meta"].items() if "seconds" not in k}
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def _jobs(original: str, fast_layout: bool = True) -> list[dict]:
    cfg = RunConfig(task="planted", model="planted", localizations=("flu", "random", "nonlocalized"), suites=SUITES,
                    show_progress=False, edit={"steps": 2}, eval={"relearning": {"steps": 2}, "soft_prompts": {"steps": 2}})
    ws = Workspace(original=original, fast_layout=fast_layout)
    plan = pipeline.plan_job(pipeline.PlanJob(cfg.to_dict(), 0, show_progress=False), ws)
    return [pipeline.run_localization(cfg, 0, loc, plan=plan, workspace=ws)
            for loc in cfg.localizations]


def test_view_and_copy_give_identical_records():
    """Every number of three planted jobs (all suites) is bit-identical with the view (and the fast weight
    layout, the defaults) and with a deepcopy and the plain layout (the runner before both)."""
    view, copy = _jobs("view"), _jobs("copy", fast_layout=False)
    for a, b in zip(view, copy):
        assert a["restore"]["exact"] and b["restore"]["exact"]
        assert _strip(a) == _strip(b)


def _small_edit(p, **kw):
    return edit(p.model, Mask([p.lookup_mlp]), p.task, config=EditConfig(lr=1e-2, steps=2, batch_size=None,
                n_sft_chunks=4), inplace=True, show_progress=False, **kw)


def test_view_shares_weights_and_shows_the_old_values():
    p = planted_fact_model()
    before = {n: t.detach().clone() for n, t in p.model.named_parameters()}
    ov = OriginalView(p.model)
    shared = {n for n, t in ov.view.named_parameters() if t.data_ptr() == p.model.get_parameter(n).data_ptr()}
    assert shared == set(before)  # no weight copied
    assert not any(t.requires_grad for t in ov.view.parameters())
    res = _small_edit(p)
    ov.show(res)
    for n, t in ov.view.named_parameters():  # the view is the unedited model, bit for bit
        assert torch.equal(t, before[n]), n
    assert ov.changed() == sorted(res.deltas)
    res.revert()
    ov.reset()
    assert ov.changed() == []
    assert all(t.data_ptr() == p.model.get_parameter(n).data_ptr() for n, t in ov.view.named_parameters())


def test_a_change_outside_the_edit_record_is_caught():
    p = planted_fact_model()
    ov = OriginalView(p.model)
    res = _small_edit(p)
    with torch.no_grad():
        p.model.blocks[3].mlp.W_out[0, 0] += 1.0  # not in the edit's record: the view cannot show it as it was
    with pytest.raises(RuntimeError, match="did not record.*blocks.3.mlp.W_out"):
        ov.show(res)
    for pc in (PristineCopy(planted_fact_model().model),):
        with torch.no_grad():
            pc.model.blocks[0].attn.W_Q[0, 0, 0] += 1.0
        assert pc.changed() == ["blocks.0.attn.W_Q"]


def test_sequential_original_tensors():
    from factlens.editing.sequential import edit_sequential

    p = planted_fact_model()
    before = {n: t.detach().clone() for n, t in p.model.named_parameters()}
    task = p.task
    chunks = (task.forget[:4], task.forget[4:])
    seq_task = type(task)(task.name, task.objective, task.forget, task.retain, task.maintain, seed=task.seed,
                          chunks=chunks)
    res = edit_sequential(p.model, Mask([p.lookup_mlp]), seq_task, config=EditConfig(lr=1e-2, steps=2, batch_size=None,
                          n_sft_chunks=4), inplace=True)
    orig = original_tensors(res, p.model)
    assert orig and all(torch.equal(t, before[n]) for n, t in orig.items())


def _one_unit():
    """A one-unit planted run, its workspace and its plan (for the restore tests)."""
    cfg = RunConfig(task="planted", model="planted", localizations=("random",), suites=("standard",),
                    show_progress=False, edit={"steps": 1})
    ws = Workspace()
    return cfg, ws, pipeline.plan_job(pipeline.PlanJob(cfg.to_dict(), 0, show_progress=False), ws)


def test_failed_restore_drops_the_workspace_model(monkeypatch):
    """A job whose model cannot be brought back raises, and the next job reloads the model."""
    cfg, ws, plan = _one_unit()
    real = pipeline._edit

    def leaky(prep, *a, **kw):
        res = real(prep, *a, **kw)
        with torch.no_grad():
            prep.model.blocks[3].mlp.W_out[0, 0] += 1.0
        return res

    monkeypatch.setattr(pipeline, "_edit", leaky)
    with pytest.raises(RuntimeError, match="could not be restored|did not record"):
        pipeline.run_localization(cfg, 0, "random", plan=plan, workspace=ws)
    assert "model_key" not in ws
    monkeypatch.setattr(pipeline, "_edit", real)
    rec = pipeline.run_localization(cfg, 0, "random", plan=plan, workspace=ws)
    assert rec["restore"]["exact"]


def test_a_revert_that_raises_drops_the_workspace_model(monkeypatch):
    """When the revert itself failed (a read of the offloaded record, out of memory, Ctrl-C), the worker
    kept the edited model: its next plan, and the unedited-model numbers it shared with other workers
    through the baseline store, came from the edited weights."""
    cfg, ws, plan = _one_unit()
    real = pipeline._edit

    def unrevertable(prep, *a, **kw):
        res = real(prep, *a, **kw)

        def fail():
            raise OSError("the offloaded record could not be read")
        object.__setattr__(res, "revert", fail)
        return res

    monkeypatch.setattr(pipeline, "_edit", unrevertable)
    with pytest.raises(OSError, match="offloaded record"):
        pipeline.run_localization(cfg, 0, "random", plan=plan, workspace=ws)
    assert "model_key" not in ws  # the edited model is gone; the next job loads a fresh one
    monkeypatch.setattr(pipeline, "_edit", real)
    assert pipeline.run_localization(cfg, 0, "random", plan=plan, workspace=ws)["restore"]["exact"]


def test_workspace_rejects_unknown_original():
    with pytest.raises(ValueError, match="'view'.*'copy'"):
        Workspace(original="clone")


def test_the_workspaces_facts_are_filtered_again_for_another_candidate_rule():
    """The known filter follows ``candidate_score``; the workspace's cached facts were keyed without it, so a
    second run with ``--eval candidate_score=token_mean`` got the first run's facts and recorded criterion."""
    ws = Workspace()
    a = RunConfig(model="planted", task="sports-athlete-editing", forget_size=8, show_progress=False)
    b = RunConfig.from_dict({**a.to_dict(), "eval": {"candidate_score": "token_mean"}})
    model, _, builtin, _ = ws.models(a)
    ds_a, meta_a = ws.dataset(a, model, builtin)
    ds_b, meta_b = ws.dataset(b, model, builtin)
    assert meta_a["known"]["criterion"] == "argmax among candidates"
    assert meta_b["known"]["criterion"] == "argmax among candidates (per-token mean log-probability)"
    assert ws.dataset(b, model, builtin)[0] is ds_b  # the same rule again: the cached facts
