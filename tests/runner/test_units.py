"""Runner units: localization x edit method x objective, each one resumable job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factlens.runner import RunConfig, run_experiment
from factlens.runner.config import split_unit

pytestmark = pytest.mark.usefixtures("one_thread")


def test_units_cross_localizations_methods_and_objectives():
    cfg = RunConfig(task="planted", model="planted", localizations=("flu", "random"), methods=("finetune", "memit"))
    assert cfg.units() == ("flu", "flu+memit", "random", "random+memit")
    un = RunConfig(task="sports-unlearning", model="planted", localizations=("flu",), objectives=("unlearn", "npo", "rmu"))
    assert un.units() == ("flu", "flu+npo", "flu+rmu")
    assert un.split_unit("flu+npo") == ("flu", "finetune", "npo")
    assert split_unit("flu") == ("flu", "finetune", "inject")
    with pytest.raises(ValueError, match="neither an edit method"):
        split_unit("flu+nosuch")


def test_bad_methods_and_objectives_are_refused():
    with pytest.raises(ValueError, match="unknown methods \\['sgd'\\]; known: .*finetune"):
        RunConfig(task="planted", model="planted", methods=("sgd",))
    with pytest.raises(ValueError, match="unknown objectives"):
        RunConfig(task="planted", model="planted", objectives=("forget_harder",))
    with pytest.raises(ValueError, match="does not support objective 'npo'"):
        RunConfig(task="planted", model="planted", methods=("rome",), objectives=("npo",))


def test_each_unit_is_one_job_with_its_method_and_objective(tmp_path):
    cfg = RunConfig(task="planted", model="planted", localizations=("all_mlps",), objectives=("inject", "graddiff"),
                    suites=("standard", "update_size"), out=str(tmp_path / "run"), show_progress=False)
    s = run_experiment(cfg, report=False)
    assert sorted(s.ran) == ["seed0/all_mlps", "seed0/all_mlps+graddiff"]
    recs = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "run" / "runs" / "seed0").glob("*.json")}
    assert recs["all_mlps+graddiff"]["unit"] == {"localization": "all_mlps", "method": "finetune", "objective": "graddiff"}
    assert recs["all_mlps"]["unit"]["objective"] == "inject"
    # the two objectives train differently, and the update-size suite saw each edit
    h0, h1 = (recs[k]["edit"]["history"][-1]["loss_forget"] for k in ("all_mlps", "all_mlps+graddiff"))
    assert h0 != h1
    # the edit's own diagnostics are kept (JSON-safe), e.g. how many prompts each loss saw
    assert all(r["edit"]["meta"]["n_forget_prompts"] > 0 for r in recs.values())
    assert recs["all_mlps+graddiff"]["edit"]["meta"]["n_retain_prompts"] > 0
    for r in recs.values():
        assert "update_size" in r["eval"]["suites"] and r["restore"]["exact"]
    again = run_experiment(cfg, report=False)  # resumable per unit
    assert again.ran == () and len(again.skipped) == 2


def test_adding_an_objective_keeps_the_default_objective_units(tmp_path):
    """A run with the task's default objective resumed with --objectives graddiff records both
    (it used to record objectives=["graddiff"]: the finished default units left the configured
    units that the report lists and checks for completeness)."""
    out = str(tmp_path / "run")
    base = dict(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",), out=out,
                show_progress=False)
    run_experiment(RunConfig(**base), report=False)
    s = run_experiment(RunConfig(**base, objectives=("graddiff",)), report=False)
    assert s.ran == ("seed0/all_mlps+graddiff",)
    stored = json.loads((tmp_path / "run" / "run_config.json").read_text())["config"]
    assert stored["objectives"] == ["inject", "graddiff"]
    s = run_experiment(RunConfig(**base, seeds=(1,)), report=False)  # runs the units asked for
    assert s.ran == ("seed1/all_mlps",)
    stored = json.loads((tmp_path / "run" / "run_config.json").read_text())["config"]
    assert stored["objectives"] == ["inject", "graddiff"] and stored["seeds"] == [0, 1]
    from factlens.runner.report import _units
    assert _units(stored) == ["all_mlps", "all_mlps+graddiff"]


def test_mechanisms_use_the_runs_flu_and_a_resume_adding_flu_keeps_the_plan(tmp_path: Path):
    """A run without a budgeted unit (all_mlps only, or a ROME folder) built the mechanisms' fact-lookup
    MLPs from an FLU of its own, with default options, on the forget facts; a resume adding ``flu``
    then recomputed the plan and overwrote its mechanisms, so the units of one seed were scored
    against different masks (here fact-lookup [L1] before, [L0, L1] after, with the run's
    rule_threshold 0.99). The plan's FLU is now the run's, and a complete plan is kept."""
    from factlens.runner.cli import main

    cfg = tmp_path / "mech.toml"
    cfg.write_text('task = "planted"\nmodel = "planted"\nsuites = ["standard", "mechanisms"]\n'
                   '[edit]\nsteps = 2\n[localize_options.flu]\nrule_threshold = 0.99\n')

    def run(out, locs):
        assert main(["run", "--config", str(cfg), "--no-progress", "--no-report", "--out", str(out),
                     "--localizations", locs]) == 0
        return json.loads((out / "plan" / "seed0.json").read_text())

    lookup = lambda plan: plan["mechanisms"]["masks"]["fact_lookup_mlps"]["components"]  # noqa: E731
    first = run(tmp_path / "a", "all_mlps")
    resumed = run(tmp_path / "a", "flu,all_mlps")
    fresh = run(tmp_path / "b", "flu,all_mlps")
    assert lookup(first) == lookup(resumed) == lookup(fresh) and len(lookup(fresh)) == 2
    assert first == resumed  # not recomputed
    flu = json.loads((tmp_path / "a" / "runs" / "seed0" / "flu.json").read_text())
    assert sorted(flu["mask_labels"]) == ["L0.mlp", "L1.mlp"]


def test_a_failed_resume_leaves_the_folders_settings_and_a_resume_that_cannot_merge_says_why(tmp_path: Path, capsys):
    """A resume whose new method failed before any unit (ROME on a mask it cannot edit) still recorded
    the method in run_config.json, and every later resume was crossed with it: adding npo to the
    fine-tuning units then crashed with a bare ValueError about rome (exit 1). The settings are now
    restored, and a folder that did run rome units refuses npo with a clear error (exit 2)."""
    from factlens.runner.cli import main

    out = tmp_path / "run"
    base = ["run", "planted", "--model", "planted", "--out", str(out), "--suites", "standard", "--no-progress",
            "--no-report", "--edit", "steps=1"]
    assert main([*base, "--localizations", "random"]) == 0
    stored = (out / "run_config.json").read_bytes()
    assert main([*base, "--localizations", "random", "--methods", "rome"]) == 2  # random's mask has several MLPs
    assert (out / "run_config.json").read_bytes() == stored
    assert main([*base, "--localizations", "random", "--objectives", "inject,npo"]) == 0
    assert (out / "runs" / "seed0" / "random+npo.json").exists()

    rome = tmp_path / "rome"
    assert main([*base[:5], str(rome), *base[6:], "--localizations", "causal_tracing_top_mlp", "--methods", "rome"]) == 0
    capsys.readouterr()
    assert main([*base[:5], str(rome), *base[6:], "--localizations", "causal_tracing_top_mlp",
                 "--objectives", "inject,npo"]) == 2
    err = capsys.readouterr().err
    assert "holds units of methods ['rome']" in err and "another --out" in err and "Traceback" not in err


def test_the_plan_wait_of_an_unbudgeted_unit_is_not_evaluate_time(monkeypatch):
    """all_mlps first reads an awaited plan for its mechanisms, which was inside the timed evaluate
    stage: with --workers the wait counted twice (plan_wait and evaluate). A fake clock that jumps
    100 s while the plan is first read shows where the wait lands."""
    import time as real_time

    from factlens.runner import pipeline

    clock = {"offset": 0.0}

    class Clock:
        def __getattr__(self, name):
            return getattr(real_time, name)

        def perf_counter(self):
            return real_time.perf_counter() + clock["offset"]

    cfg = RunConfig(task="planted", model="planted", localizations=("all_mlps",), suites=("standard", "mechanisms"),
                    show_progress=False, edit={"steps": 1})
    ready = pipeline.plan_job(pipeline.PlanJob(cfg.to_dict(), 0, show_progress=False))

    class Awaited(dict):  # the AwaitedPlan protocol: the first read waits
        awaited, waited = True, 0.0

        def get(self, key, default=None):
            if not self.waited:
                clock["offset"] += 100.0
                self.waited = 100.0
            return super().get(key, default)

    monkeypatch.setattr(pipeline, "time", Clock())
    rec = pipeline.run_localization(cfg, 0, "all_mlps", plan=Awaited(ready))
    assert rec["timings"]["plan_wait"] == 100.0 and rec["timings"]["evaluate"] < 100.0


def test_names_a_unit_name_could_not_tell_apart_are_refused(monkeypatch):
    """An edit method registered as "npo" turned the unit "flu+npo" into an npo edit instead of
    fine-tuning on the npo objective, without a word; a "+" in a name split it wrongly."""
    from factlens.editing import registry
    from factlens.editing.registry import EditMethod

    def clash(name):
        monkeypatch.setattr(registry, "EDIT_METHODS", registry.EDIT_METHODS.with_entry(
            EditMethod(name, lambda *a, **k: None, ("inject",))))

    clash("npo")
    with pytest.raises(ValueError, match=r"\['npo'\] name both an edit method and an objective"):
        RunConfig(task="planted", model="planted", objectives=("inject", "npo"))
    monkeypatch.undo()
    clash("my+edit")
    with pytest.raises(ValueError, match=r"names with '\+'.*my\+edit"):
        RunConfig(task="planted", model="planted")


def test_a_sequential_edit_is_not_offloaded_twice(tmp_path: Path):
    """edit_sequential(offload=folder) maps every chunk's record to a file; the runner offloaded the
    result again, rewriting the records and reporting bytes that were never in memory."""
    from dataclasses import replace

    from factlens.components import Mask
    from factlens.editing import EditConfig, edit_sequential
    from factlens.runner.pipeline import _offload_record
    from factlens.testing import planted_fact_model

    p = planted_fact_model()
    t = replace(p.task, chunks=(p.task.forget[:4], p.task.forget[4:]))
    res = edit_sequential(p.model, Mask([p.lookup_mlp]), t, offload=tmp_path,
                          config=EditConfig(lr=1e-2, steps=1, batch_size=None, n_sft_chunks=4))
    cfg = RunConfig(task="planted", model="planted", out=str(tmp_path))
    assert _offload_record(res, cfg) == 0
