"""The experiment runner end to end on the planted model, through the CLI entry point."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from factlens.runner import RunConfig, run_experiment
from factlens.runner import pipeline
from factlens.runner import workspace as workspace_module
from factlens.runner.cli import main
from factlens.runner.executor import ConfigMismatchError, RunDir, write_json_atomic
from factlens.strict_json import strict_loads

# fast settings: a couple of edit steps and the cheap suites (plus the mechanisms table)
FAST = ["--edit", "steps=2", "--suites", "standard,side_effects,mechanisms", "--no-progress",
        "--eval", "text.n_chunks=2"]
LOCS = "flu,random,all_mlps"


def _run(out: Path, *extra: str, locs: str = LOCS) -> int:
    return main(["run", "planted", "--model", "planted", "--out", str(out), "--localizations", locs, *FAST, *extra])


@pytest.fixture()
def counted(monkeypatch) -> list[str]:
    """Record the localizations that actually run."""
    calls: list[str] = []
    real = pipeline.run_localization

    def spy(config, seed, localization, **kw):
        calls.append(localization)
        return real(config, seed, localization, **kw)

    monkeypatch.setattr(pipeline, "run_localization", spy)
    return calls


def test_cli_writes_runs_and_report(run_dir: Path):
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*.json"))
    assert files == ["manifest.json", "plan/seed0.json", "run_config.json", "runs/seed0/all_mlps.json",
                     "runs/seed0/flu.json", "runs/seed0/random.json"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["files"] == sorted([*files, "report.html"])  # every file factlens wrote, nothing else
    assert not list(run_dir.glob(".*"))  # no temporary file left (offloaded records, atomic writes)
    plan = json.loads((run_dir / "plan/seed0.json").read_text())
    budget = plan["param_budget"]
    assert plan["budget_source"] == "flu" and budget > 0
    recs = {p.stem: json.loads(p.read_text()) for p in (run_dir / "runs/seed0").glob("*.json")}
    assert recs["flu"]["n_params"] == budget
    assert 0 < recs["random"]["n_params"] <= budget  # equal budget, never exceeded
    assert recs["all_mlps"]["budgeted"] is False and recs["all_mlps"]["n_params"] > budget
    for r in recs.values():
        assert r["restore"]["exact"], r["restore"]  # in-place edit reverted bit for bit
        assert r["edit"]["record_offloaded_bytes"] > 0  # the record sat in a mapped file while evaluated
        assert set(r["eval"]["suites"]) == {"standard", "side_effects", "mechanisms"}
        assert r["edit"]["config"]["steps"] == 2 and len(r["edit"]["history"]) == 2
        assert {"localize", "edit", "evaluate", "revert"} <= set(r["timings"])
        peaks = r["peak_rss_gb"]  # the process's peak resident memory in each stage
        assert set(peaks) == {"prepare", "localize", "edit", "evaluate", "revert"} and min(peaks.values()) > 0
        assert r["baseline_cache"]["store_hits"] == 0  # one process: no shared store
        assert r["versions"]["torch"]
    cfg = json.loads((run_dir / "run_config.json").read_text())
    assert cfg["config"]["localizations"] == ["flu", "random", "all_mlps"]
    assert cfg["resolved"]["edit"]["steps"] == 2 and cfg["resolved"]["eval"]["text"]["n_chunks"] == 2
    html = (run_dir / "report.html").read_text()
    assert html.count("plotly.js v") <= 2  # the library is embedded once (its banner)
    assert "Table 1" in html and "Run metadata" in html and "flu" in html and "all_mlps" in html
    assert "Plotly.newPlot" in html
    # `factlens report` rewrites it; Table 1 has the original row first and one row per localization
    from factlens.runner.report import load_run_dir, table1_rows

    other = run_dir.parent / "again.html"
    assert main(["report", str(run_dir), "--output", str(other)]) == 0 and other.stat().st_size > 1e6
    cols, rows = table1_rows(load_run_dir(run_dir)["runs"])
    assert [r["name"] for r in rows] == ["original", "flu", "random", "all_mlps"]
    assert [c[1] for c in cols][:3] == ["Forget ↑", "Edit ↑", "Maintain ↑"]
    assert rows[0]["cells"][0]["mean"] == pytest.approx(0.0)  # the unedited model knows every forget fact


def test_resume_skips_completed(copy_of_run: Path, counted: list[str]):
    assert _run(copy_of_run) == 0
    assert counted == []  # everything was done
    assert _run(copy_of_run, locs="flu,random,all_mlps,nonlocalized") == 0
    assert counted == ["nonlocalized"]  # only the new localization ran
    cfg = json.loads((copy_of_run / "run_config.json").read_text())["config"]
    assert cfg["localizations"] == ["flu", "random", "all_mlps", "nonlocalized"]
    assert (copy_of_run / "runs/seed0/nonlocalized.json").exists()
    assert "nonlocalized" in (copy_of_run / "report.html").read_text()


def test_no_report_warns_that_the_earlier_report_misses_the_new_runs(copy_of_run: Path, counted: list[str]):
    """``--no-report`` after new units kept the earlier report.html without a word: it looked
    current but lacked the new localization. It is kept (no result is lost) and named stale."""
    before = (copy_of_run / "report.html").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing new ran: the report is current, no warning
        assert _run(copy_of_run, "--no-report") == 0
    with pytest.warns(UserWarning, match=r"report.html was written before the 1 run\(s\).*factlens report"):
        assert _run(copy_of_run, "--no-report", locs="flu,random,all_mlps,nonlocalized") == 0
    assert counted == ["nonlocalized"] and (copy_of_run / "report.html").read_bytes() == before


def test_config_mismatch_errors(copy_of_run: Path, counted: list[str], capsys):
    before = {p: p.read_bytes() for p in copy_of_run.rglob("*.json")}
    assert _run(copy_of_run, "--forget-size", "4") == 2
    err = capsys.readouterr().err
    assert "forget_size" in err and "--overwrite" in err
    assert counted == [] and {p: p.read_bytes() for p in copy_of_run.rglob("*.json")} == before
    cfg = RunConfig(task="planted", model="planted", localizations=("all_mlps",), out=str(copy_of_run),
                    edit={"steps": 3}, suites=("standard",), show_progress=False)
    with pytest.raises(ConfigMismatchError, match="steps"):
        run_experiment(cfg)
    # --overwrite discards the old results and starts over
    assert _run(copy_of_run, "--overwrite", "--no-report", locs="all_mlps") == 0
    assert counted == ["all_mlps"]
    assert sorted(p.name for p in (copy_of_run / "runs/seed0").iterdir()) == ["all_mlps.json"]


def test_toml_config_replaces_flags(tmp_path: Path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(
        'task = "planted"\nmodel = "planted"\nlocalizations = ["all_mlps"]\nforget-size = 6\nsuites = ["standard"]\n'
        "show_progress = false\n[edit]\nsteps = 1\n[eval]\nbatch_size = 8\n")
    out = tmp_path / "out"
    assert main(["run", "--config", str(cfg_file), "--out", str(out), "--no-report"]) == 0
    stored = json.loads((out / "run_config.json").read_text())
    assert stored["config"]["forget_size"] == 6 and stored["config"]["localizations"] == ["all_mlps"]
    assert stored["resolved"]["edit"]["steps"] == 1 and stored["resolved"]["eval"]["batch_size"] == 8
    assert (out / "config.toml").read_text() == cfg_file.read_text()  # saved with the results
    rec = json.loads((out / "runs/seed0/all_mlps.json").read_text())
    assert rec["task"]["n_forget"] == 6
    # a flag given on the command line wins over the file
    from factlens.runner.cli import build_parser, config_from_args

    args = build_parser().parse_args(["run", "--config", str(cfg_file), "--forget-size", "9", "--seeds", "1,2"])
    c = config_from_args(args)
    assert c.forget_size == 9 and c.seeds == (1, 2) and c.localizations == ("all_mlps",) and c.edit == {"steps": 1}


def test_flags_that_change_the_config_file_are_named(tmp_path: Path, capsys):
    """The folder's config.toml kept the file's values when flags changed them, without a word: a
    rerun of the copy alone was refused as another configuration. The run names the changes at its
    start and heads the copy with them; the copy rerun with the same flags resumes."""
    import tomllib

    cfg_file = tmp_path / "run.toml"
    text = ('task = "planted"\nmodel = "planted"\nlocalizations = ["all_mlps"]\nforget-size = 6\n'
            'suites = ["standard"]\nshow_progress = false\n[edit]\nsteps = 1\nlr = 0.01\n')
    cfg_file.write_text(text)
    out = tmp_path / "out"
    flags = ["--forget-size", "5", "--edit", "steps=2", "--edit", "lr=0.01", "--no-report"]
    assert main(["run", "--config", str(cfg_file), "--out", str(out), *flags]) == 0
    err = capsys.readouterr().err
    assert "flags change 2 setting(s)" in err and "forget_size: 6 -> 5" in err and "edit.steps: 1 -> 2" in err
    copy = (out / "config.toml").read_text()
    assert copy.endswith(text) and "#   forget_size: 6 -> 5\n#   edit.steps: 1 -> 2\n" in copy
    assert "lr" not in copy[:-len(text)]  # given by a flag at the file's value: no change
    assert tomllib.loads(copy) == tomllib.loads(text)  # a comment: the file's settings are unchanged
    assert main(["run", "--config", str(out / "config.toml"), "--out", str(out), *flags]) == 0
    assert "ran 0 run(s)" in capsys.readouterr().err
    assert main(["run", "--config", str(cfg_file), "--out", str(tmp_path / "same"), "--forget-size", "6",
                 "--no-report"]) == 0
    assert "flags change" not in capsys.readouterr().err and (tmp_path / "same/config.toml").read_text() == text


def test_overrides_header_is_replaced_not_stacked():
    from factlens.runner.run_dir import _with_overrides_header

    once = _with_overrides_header(b"a = 1\n", ["a: 1 -> 2", "b: 3 -> 4"])
    assert _with_overrides_header(once, ["a: 1 -> 5"]) == _with_overrides_header(b"a = 1\n", ["a: 1 -> 5"])


def test_yaml_config_and_bad_settings(tmp_path: Path, capsys):
    from factlens.runner.cli import build_parser, config_from_args

    y = tmp_path / "run.yaml"
    y.write_text("task: planted\nmodel: planted\nseeds: [0, 1]\nedit: {steps: 4}\n")
    c = config_from_args(build_parser().parse_args(["run", "--config", str(y)]))
    assert c.seeds == (0, 1) and c.edit == {"steps": 4} and c.out == str(Path("results") / "planted")
    assert c.edit_config(1).steps == 4 and c.edit_config(1).seed == 1
    c = config_from_args(build_parser().parse_args(["run", "planted", "--edit", "methods.rome.prefix_lengths=[[10, 5]]",
                                                     "--edit", "methods.rome.v_num_grad_steps=10"]))
    rc = c.edit_config(0).method_config("rome")
    assert rc.prefix_lengths == ((10, 5),) and rc.v_num_grad_steps == 10 and rc.v_lr == 0.5  # the rest: defaults
    bad = tmp_path / "bad.toml"
    bad.write_text('task = "planted"\nmodel = "planted"\nlearning_rate = 1\n')
    assert main(["run", "--config", str(bad)]) == 2
    assert "learning_rate" in capsys.readouterr().err
    assert main(["run", "planted", "--model", "planted", "--localizations", "flu,magic"]) == 2
    assert "magic" in capsys.readouterr().err
    assert main(["run", "planted", "--model", "gemma-3-270m"]) == 2
    with pytest.raises(ValueError, match="EditConfig"):
        RunConfig(task="planted", model="planted", edit={"nope": 1}).edit_config(0)


def test_defaults_are_the_main_job():
    from factlens.runner.cli import build_parser, config_from_args

    c = config_from_args(build_parser().parse_args(["run", "sports-athlete-editing"]))
    assert (c.task, c.model, c.forget_size, c.seeds) == ("sports-athlete-editing", "gemma-3-270m", 16, (0,))
    assert c.localizations == ("flu", "causal_tracing", "attribution_patching", "random", "all_mlps", "nonlocalized")
    # the CPU preset with its blocks checkpointed (the main job's peak memory; docs/performance.md)
    assert c.edit_config(0) == __import__("factlens").EditConfig.fast(checkpoint=True)


def test_interrupt_keeps_finished_runs(tmp_path: Path, monkeypatch, capsys):
    real = pipeline.run_localization
    calls: list[str] = []

    def flaky(config, seed, localization, **kw):
        calls.append(localization)
        if localization == "nonlocalized":
            raise KeyboardInterrupt
        return real(config, seed, localization, **kw)

    monkeypatch.setattr(pipeline, "run_localization", flaky)
    out = tmp_path / "run"
    assert _run(out, locs="all_mlps,nonlocalized") == 130
    assert "resume" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "runs/seed0").iterdir()) == ["all_mlps.json"]  # no partial file
    monkeypatch.setattr(pipeline, "run_localization", real)
    cfg = RunConfig.from_dict(json.loads((out / "run_config.json").read_text())["config"])
    s = run_experiment(cfg, report=False)
    assert s.ran == ("seed0/nonlocalized",) and s.skipped == ("seed0/all_mlps",)


def test_restore_check_and_atomic_json(tmp_path: Path):
    import torch

    from factlens.testing import planted_fact_model

    m = planted_fact_model(n_subjects=6).model
    import copy

    orig = copy.deepcopy(m)
    assert pipeline.check_restored(m, orig)["exact"]
    with torch.no_grad():
        next(m.parameters()).add_(1e-3)
    res = pipeline.check_restored(m, orig)
    assert not res["exact"] and res["n_changed"] == 1 and res["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    p = tmp_path / "a" / "x.json"
    write_json_atomic(p, {"v": float("nan")})
    assert strict_loads(p.read_text()) == {"v": None}  # standard JSON: NaN as null
    assert [q.name for q in p.parent.iterdir()] == ["x.json"]
    assert RunDir(tmp_path / "none").stored() is None


def test_local_executor_loads_the_model_once_per_workspace(tmp_path: Path, monkeypatch):
    """No module-level cache: the LocalExecutor's Workspace holds the model, shared by its jobs."""
    from factlens.runner import LocalExecutor, Workspace

    loads: list[str] = []
    real = workspace_module._load_models

    def spy(cfg):
        loads.append(cfg.model)
        return real(cfg)

    monkeypatch.setattr(workspace_module, "_load_models", spy)
    cfg = RunConfig(task="planted", model="planted", localizations=("random", "all_mlps"), suites=("standard",),
                    out=str(tmp_path / "a"), show_progress=False, edit={"steps": 1})
    ws = Workspace()
    run_experiment(cfg, executor=LocalExecutor(ws), report=False)
    assert loads == ["planted"] and "model_key" in ws  # plan + 2 jobs, one load
    run_experiment(cfg.replace(out=str(tmp_path / "b")), executor=LocalExecutor(ws), report=False)
    assert loads == ["planted"]  # reused by a second run with the same workspace
    run_experiment(cfg.replace(out=str(tmp_path / "c")), executor=LocalExecutor(), report=False)
    assert loads == ["planted", "planted"]  # a new executor, a new workspace
    # another dtype is another model: a bf16 run reusing the workspace evaluated the float32 model
    run_experiment(cfg.replace(out=str(tmp_path / "d"), dtype="bfloat16"), executor=LocalExecutor(ws), report=False)
    assert loads == ["planted"] * 3 and next(ws.models(cfg.replace(dtype="bfloat16"))[0].parameters()).dtype == torch.bfloat16
    ws.clear()
    assert "model_key" not in ws


def test_report_markdown_summary(run_dir: Path, capsys):
    assert main(["report", str(run_dir), "--markdown"]) == 0
    md = capsys.readouterr().out
    lines = md.splitlines()
    assert lines[0].startswith("| localization | params edited | Standard Forget")
    names = [l.split("|")[1].strip() for l in lines[2:] if l.startswith("| ") and "original" not in l][:3]
    assert names == ["flu", "random", "all_mlps"]
    assert "| original |" in md and "relearned forget acc" not in md.split("\n\n")[0]
    attacks = next(l for l in lines if l.startswith("| localization | components |"))
    assert "relearned, net of bias ↓" in attacks and "soft prompt, net of bias ↓" in attacks
    assert "flu (seed 0): localize" in md
    # every metric of every suite, with its interval (the markdown had only Table 1's fixed columns and the
    # headline comparisons; a suite's other metrics were in the HTML report only)
    assert "## All metrics" in md and "### standard" in md and "### side_effects" in md
    kl = next(l for l in lines if l.startswith("| kl_divergence |"))
    assert kl.count("[") == kl.count("]") >= 2  # the localizations' cells carry intervals
    assert "<details><summary>all " in md and md.count("</details>") == md.count("<details>")


def test_report_reads_typed_results(run_dir: Path, copy_of_run: Path):
    """The report reads each run's evaluation as an EvalResult: ``from_dict`` is the exact inverse
    of what the runner wrote, and raw JSON records give the same Table 1 as the typed ones."""
    from factlens.evaluation.result import EvalResult
    from factlens.runner.executor import read_json
    from factlens.runner.report import load_run_dir, table1_rows

    raw = [read_json(f) for f in sorted((run_dir / "runs").glob("seed*/*.json"))]
    for rec in raw:
        assert EvalResult.from_dict(rec["eval"]).to_dict() == rec["eval"]
    typed = load_run_dir(run_dir)["runs"]
    assert all(isinstance(r["eval"], EvalResult) for r in typed)
    by_name = {r["localization"]: r for r in raw}
    same = lambda runs: json.dumps(table1_rows(runs), default=str)  # noqa: E731 - NaN equals NaN here
    assert same([by_name[r["localization"]] for r in typed]) == same(typed)
    # a damaged run file is named in the error
    bad = copy_of_run / "runs/seed0/random.json"
    rec = json.loads(bad.read_text())
    del rec["eval"]["suites"]["standard"]["metrics"][0]["n"]
    bad.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"random\.json.*suite 'standard'.*lacks \['n'\]"):
        load_run_dir(copy_of_run)


def test_the_unedited_model_is_fingerprinted_once_per_workspace(tmp_path: Path, monkeypatch):
    """Not at every evaluate(): that pass read an offloaded edit's old values back into memory."""
    from factlens.evaluation import baseline_cache
    from factlens.runner import LocalExecutor, Workspace

    calls: list[int] = []
    real = baseline_cache._fingerprint

    def spy(model, *a, **kw):
        calls.append(id(model))
        return real(model, *a, **kw)

    monkeypatch.setattr(baseline_cache, "_fingerprint", spy)
    cfg = RunConfig(task="planted", model="planted", localizations=("random", "all_mlps", "nonlocalized"),
                    suites=("standard",), out=str(tmp_path / "a"), show_progress=False, edit={"steps": 1})
    ws = Workspace()
    run_experiment(cfg, executor=LocalExecutor(ws), report=False)
    assert len(calls) == 1 and ws.baselines().hits > 0  # three evaluations, one fingerprint, numbers reused
    for loc in ("random", "all_mlps", "nonlocalized"):
        rec = json.loads((tmp_path / "a" / "runs" / "seed0" / f"{loc}.json").read_text())
        assert rec["restore"]["exact"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_forget_size_larger_than_the_known_facts_is_a_clear_error_that_leaves_no_folder(
        tmp_path: Path, capsys, workers: str):
    """Exit code 2 and the largest forget size that fits instead of a traceback (with several
    workers the error comes from a worker process too); the folder the failed run created is
    gone, so the corrected command runs without --overwrite."""
    out = tmp_path / "bad"
    assert _run(out, "--forget-size", "1000", "--no-report", "--workers", workers, locs="random") == 2
    assert "use at most 46 (--forget-size)" in capsys.readouterr().err
    assert not out.exists()
    assert _run(out, "--forget-size", "8", "--no-report", "--workers", workers, locs="random") == 0


def test_a_forget_size_larger_than_the_max_facts_cap_names_the_cap(tmp_path: Path, capsys):
    """``--max-facts 5`` made the dataset 5 facts, and the error said "a dataset of 5 (the facts
    the model knows)": the user's cap read as the model's knowledge. The message names the cap."""
    assert _run(tmp_path / "bad", "--max-facts", "5", "--no-report", locs="random") == 2
    err = capsys.readouterr().err
    assert "use at most 3 (--forget-size)" in err and "capped at 5 facts by --max-facts" in err


def test_a_failed_first_run_keeps_the_folder_it_found_and_the_users_files(tmp_path: Path):
    out = tmp_path / "bad"
    out.mkdir()
    (out / "config.toml").write_text(
        'task = "planted"\nmodel = "planted"\nlocalizations = ["random"]\nsuites = ["standard"]\nforget_size = 1000\n')
    assert main(["run", "--config", str(out / "config.toml"), "--out", str(out), "--no-progress", "--no-report"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["config.toml"]  # the user's file, nothing of the failed run


def test_a_failed_resume_keeps_the_folder_and_its_results(copy_of_run: Path, monkeypatch):
    """Only a run that opened a fresh folder removes what it wrote: adding a seed whose plan fails
    leaves the stored configuration and every result in place."""
    from factlens.tasks import TaskSizeError

    def fail(*a, **k):
        raise TaskSizeError("planted failure")

    before = {p.relative_to(copy_of_run).as_posix(): p.read_bytes() for p in copy_of_run.rglob("*") if p.is_file()}
    monkeypatch.setattr(pipeline, "build_task", fail)
    assert _run(copy_of_run, "--seeds", "0,1", "--no-report") == 2
    after = {p.relative_to(copy_of_run).as_posix(): p.read_bytes() for p in copy_of_run.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    assert {k for k in after if after[k] != before[k]} <= {"run_config.json"}  # its seeds now include 1; nothing lost


def test_a_table_given_on_the_command_line_changes_only_its_keys_of_the_config_files_table(tmp_path: Path):
    from factlens.runner.cli import build_parser, config_from_args

    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('task = "planted"\nmodel = "planted"\n[eval.relearning]\nsteps = 7\nlr = 0.002\n')
    args = build_parser().parse_args(["run", "--config", str(cfg_file), "--eval", 'relearning={"both_halves": true}'])
    relearning = config_from_args(args).resolved()["eval"]["relearning"]
    assert (relearning["steps"], relearning["lr"], relearning["both_halves"]) == (7, 0.002, True)


def test_a_run_of_several_seeds_writes_its_report_and_compares_over_both_seeds(tmp_path: Path):
    """Each seed's evaluation runs with that seed; the one-setup check took the differing eval seeds
    for files of two configurations, so every multi-seed run ended without a report and with a
    folder that neither factlens report nor factlens compare would read."""
    from factlens.comparison import compare

    out = tmp_path / "two"
    assert main(["run", "planted", "--model", "planted", "--out", str(out), "--localizations", "flu,random",
                 "--seeds", "0,1", "--edit", "steps=2", "--suites", "standard", "--no-progress"]) == 0
    assert (out / "report.html").exists()
    table = compare(out, reference="flu")
    assert set(table["n_seeds"]) == {2}
    rec = json.loads((out / "runs/seed1/random.json").read_text())
    rec["eval"]["meta"]["config"]["seed"] = 0  # a seed-1 unit evaluated with seed 0: not this folder's
    write_json_atomic(out / "runs/seed1/random.json", rec)
    with pytest.raises(ValueError, match="a run of seed 1 evaluated with seed 0"):
        compare(out, reference="flu")


def test_the_report_header_counts_known_facts_and_the_ones_max_facts_kept(tmp_path: Path):
    out = tmp_path / "cut"
    assert main(["run", "planted", "--model", "planted", "--out", str(out), "--localizations", "random",
                 "--max-facts", "40", "--edit", "steps=1", "--suites", "standard", "--no-progress"]) == 0
    html = (out / "report.html").read_text()
    assert "48 known of 48, 40 used (--max-facts)" in html  # said "40 known of 48"


def test_report_and_compare_outputs_never_replace_a_run_file_or_a_file_of_ones_own(copy_of_run: Path, tmp_path: Path,
                                                                                   capsys):
    """``report --output DIR/run_config.json`` and ``compare --csv DIR/run_config.json`` wrote over the run's
    own files (exit 0; the folder could no longer be reported or resumed); an existing file of someone
    else was overwritten; a folder as --output was a traceback."""
    run_config = copy_of_run / "run_config.json"
    before = run_config.read_bytes()
    unit = next((copy_of_run / "runs" / "seed0").glob("*.json"))
    for argv in (["report", str(copy_of_run), "--output", str(run_config)],
                 ["report", str(copy_of_run), "--output", str(unit)],
                 ["report", str(copy_of_run), "--markdown", "--output", str(unit)],
                 ["compare", str(copy_of_run), "--reference", "flu", "--csv", str(run_config)]):
        assert main(argv) == 2
        assert "inside the run folder" in capsys.readouterr().err
    assert run_config.read_bytes() == before and json.loads(unit.read_text())
    mine = tmp_path / "notes.csv"
    mine.write_text("my own notes\n")
    assert main(["compare", str(copy_of_run), "--reference", "flu", "--csv", str(mine)]) == 2
    assert "is not a comparison CSV factlens wrote" in capsys.readouterr().err and mine.read_text() == "my own notes\n"
    assert main(["report", str(copy_of_run), "--output", str(tmp_path)]) == 2  # a folder
    assert "is a folder" in capsys.readouterr().err
    csv, html, md = tmp_path / "new" / "cmp.csv", tmp_path / "new" / "r.html", tmp_path / "r.md"
    for _ in range(2):  # written into a new folder, then over its own earlier output
        assert main(["compare", str(copy_of_run), "--reference", "flu", "--csv", str(csv)]) == 0
        assert main(["report", str(copy_of_run), "--output", str(html)]) == 0
        assert main(["report", str(copy_of_run), "--markdown", "--output", str(md)]) == 0
    capsys.readouterr()
    assert csv.read_text().startswith("localization,metric,") and "<title>factlens" in html.read_text()
    assert md.read_text().startswith("| localization") and main(["report", str(copy_of_run)]) == 0  # report.html
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["cmp.csv", "r.html"]  # no temporary file left


def test_a_recovery_metric_with_a_negative_baseline_does_not_stop_the_report(copy_of_run: Path):
    """A quantization forget recovery (after - before per fact) whose edited facts were all 0 or 1 was
    labelled "wilson"; its baseline (the unedited model's mean recovery) is negative when quantization
    costs the unedited model facts, and the report's "All metrics" cells then failed (k = -9 of 16)."""
    from factlens.evaluation.attacks import attack_metrics
    from factlens.runner.report import build_report
    from factlens.runner.report_markdown import markdown_summary

    f = next((copy_of_run / "runs" / "seed0").glob("*.json"))
    rec = json.loads(f.read_text())
    samples = {str(i): float(i < 4) for i in range(16)}
    rec["eval"]["suites"]["quantization"] = {"suite": "quantization", "metrics": [
        {"name": "quant_int4_forget_recovery", "value": 0.25, "n": 16, "unit": "facts", "baseline": -0.5625,
         "at_chance": False, "higher_is_better": False, "stderr": 0.1, "ci_low": 0.1, "ci_high": 0.5,
         "ci_method": "wilson", "samples": samples, "weights": None}]}  # as folders before proportion=False have it
    f.write_text(json.dumps(rec))
    assert "quant_int4_forget_recovery" in markdown_summary(copy_of_run) and build_report(copy_of_run)
    # and today's attacks label a recovery as the difference it is, whatever values it happens to take
    from factlens.evaluation.attacks import TaskScores

    before = TaskScores(forget={k: 0.0 for k in samples}, edit={}, maintain={"m": 1.0})
    after = TaskScores(forget=samples, edit={}, maintain={"m": 1.0})
    rec_metric = next(m for m in attack_metrics("quant_int4", after, before) if m.name.endswith("forget_recovery"))
    assert rec_metric.ci_method == "bootstrap"
    assert next(m for m in attack_metrics("quant_int4", after, before)
                if m.name.endswith("forget_accuracy")).ci_method == "wilson"


def test_every_file_of_a_run_is_standard_json_and_undefined_values_load_as_nan(tmp_path: Path):
    """Attribution patching's by_role is NaN for a token role no prompt has; the unit record held
    the token NaN, which strict parsers (JavaScript's JSON.parse, jq < 1.7) reject. It is null now
    and loads as NaN again."""
    from factlens.runner.report import load_run_dir

    out = tmp_path / "run"
    assert main(["run", "planted", "--model", "planted", "--out", str(out), "--localizations", "attribution_patching",
                 "--suites", "standard", "--edit", "steps=1", "--no-progress"]) == 0
    files = sorted(out.rglob("*.json"))
    assert len(files) == 4  # manifest, run_config, plan, the unit
    for f in files:
        strict_loads(f.read_text())
    rec = strict_loads((out / "runs" / "seed0" / "attribution_patching.json").read_text())
    assert any(v is None for row in rec["scores"]["resid"]["by_role"] for v in row)  # the role without tokens
    from factlens.scores import ComponentScores

    scores = ComponentScores.from_dict(load_run_dir(out)["runs"][0]["scores"])
    assert np.isnan(scores.resid.by_role).any() and np.isfinite(scores.resid.values).all()


def test_the_report_reads_records_whose_undefined_values_are_null(copy_of_run: Path):
    """NaN is written as null now; the report's tables format what they read (a repaired restore's
    max |delta| and a diverged loss were formatted as numbers)."""
    from factlens.runner.report import build_report
    from factlens.runner.report_markdown import markdown_summary

    f = copy_of_run / "runs" / "seed0" / "random.json"
    rec = json.loads(f.read_text())
    rec["restore"] = {"exact": False, "max_abs_diff": float("nan"), "n_changed": 1}
    rec["edit"]["history"][-1]["loss"] = float("nan")
    rec["eval"]["suites"]["standard"]["metrics"][0]["value"] = float("nan")
    write_json_atomic(f, rec)
    assert strict_loads(f.read_text())["restore"]["max_abs_diff"] is None
    html = build_report(copy_of_run)
    assert "no (max |Δ| –; repaired)" in html
    assert "random" in markdown_summary(copy_of_run)


def test_the_markdown_robustness_table_has_the_unedited_model_of_every_seed(copy_of_run: Path):
    """Each seed samples its own facts, so the unedited model's relearning accuracy differs by seed;
    the markdown robustness table's one "original" row showed the first run's (seed 0) for all."""
    from factlens.runner.report_markdown import markdown_summary

    seed0 = copy_of_run / "runs" / "seed0"
    (copy_of_run / "runs" / "seed1").mkdir()
    for f in sorted(seed0.glob("*.json")):
        for seed, baseline in ((0, 0.875), (1, 0.625)):
            rec = json.loads(f.read_text())
            rec["seed"] = rec["eval"]["meta"]["config"]["seed"] = seed
            rec["eval"]["suites"]["relearning"] = {"suite": "relearning", "metrics": [
                {"name": "relearn_forget_accuracy", "value": 0.5, "n": 8, "unit": "facts", "baseline": baseline,
                 "at_chance": False, "higher_is_better": False, "ci_low": 0.2, "ci_high": 0.8, "ci_method": "wilson",
                 "samples": {str(i): float(i < 4) for i in range(8)}, "weights": None}]}
            write_json_atomic(copy_of_run / "runs" / f"seed{seed}" / f.name, rec)
    cfg = json.loads((copy_of_run / "run_config.json").read_text())
    cfg["config"]["seeds"] = [0, 1]
    write_json_atomic(copy_of_run / "run_config.json", cfg)
    lines = markdown_summary(copy_of_run).splitlines()
    assert next(l for l in lines if l.startswith("| original (seed 0) |")).split("|")[3].strip() == "0.875"
    assert next(l for l in lines if l.startswith("| original (seed 1) |")).split("|")[3].strip() == "0.625"


def test_markdown_probe_columns_name_the_answer_not_a_sport(run_dir: Path):
    """CounterFact runs have the same probe metrics; the columns said "true sport" / "new sport"."""
    from factlens.runner.report_markdown import markdown_summary

    header = next(l for l in markdown_summary(run_dir).splitlines() if l.startswith("| localization | components |"))
    assert "probe: true answer, last layer" in header and "sport" not in header


def test_a_run_with_the_logit_lens_takes_its_settings_and_draws_its_curves(tmp_path: Path):
    """An opt-in suite without an EvalConfig field: its table in other_suites comes from --eval,
    its metrics are compared and its per-layer figure joins the report's latent-knowledge section.
    With two seeds the figure draws the first seed's curves (``extra`` is not pooled) and its
    title says so."""
    from factlens.comparison import compare

    out = tmp_path / "lens"
    assert main(["run", "planted", "--model", "planted", "--out", str(out), "--localizations", "flu,random",
                 "--edit", "steps=2", "--suites", "standard,logit_lens,linear_lens", "--eval",
                 "other_suites.logit_lens.top_k=1", "--eval", "other_suites.linear_lens.n_chunks=8",
                 "--seeds", "0,1", "--no-progress"]) == 0
    rec = json.loads((out / "runs/seed0/flu.json").read_text())
    lens = rec["eval"]["suites"]["logit_lens"]
    assert lens["extra"]["settings"]["top_k"] == 1 and lens["extra"]["layers"] == [0, 1, 2, 3]
    html = (out / "report.html").read_text()
    assert "Logit lens on the forget facts per layer (first seed of each localization)" in html
    assert "Logit lens on the forget facts per layer (mean" not in html
    assert "Linear lens on the forget facts per layer (first seed of each localization)" in html
    assert rec["eval"]["suites"]["linear_lens"]["extra"]["fit"]["model"]["n_tokens"] == 8 * 63
    table = compare(out, reference="flu")
    assert {"logit_lens_forget_accuracy", "logit_lens_selective_recovery"} <= set(table["metric"])


def test_a_run_with_the_in_context_attack_takes_its_settings_and_compares_its_metrics(tmp_path: Path):
    """The in-context attack is one module and one registry entry: ``--suites`` runs it, ``--eval
    other_suites.in_context...`` sets it, and ``factlens compare`` pairs its per-fact metrics."""
    from factlens.comparison import compare

    out = tmp_path / "icl"
    assert main(["run", "planted", "--model", "planted", "--out", str(out), "--localizations", "flu,random",
                 "--edit", "steps=2", "--suites", "standard,in_context", "--eval", "other_suites.in_context.n_shots=[2]",
                 "--no-progress"]) == 0
    rec = json.loads((out / "runs/seed0/flu.json").read_text())
    icl = rec["eval"]["suites"]["in_context"]
    assert icl["extra"]["settings"]["n_shots"] == [2] and set(icl["extra"]["variants"]) == {
        "in_context_forget_2", "in_context_retain_2"}
    table = compare(out, reference="flu")
    assert {"in_context_forget_2_forget_accuracy", "in_context_retain_2_selective_recovery"} <= set(table["metric"])
    html = (out / "report.html").read_text()
    assert "Forget facts asked after solved forget facts" in html and "Forget facts asked after solved retain facts" in html
    assert "in-context curves could not be drawn" not in html


def test_report_reference_flag_and_the_legend_of_runs_without_flu(copy_of_run: Path, capsys):
    """``factlens report --reference UNIT`` picks the units compared against; without a flu unit Table 1's
    legend said "* the difference from flu is significant" beside no mark (audit run5), and a run of
    one unit said "No reference localization (flu, random)" (audit run6)."""
    assert main(["report", str(copy_of_run), "--markdown", "--reference", "all_mlps"]) == 0
    md = capsys.readouterr().out
    assert "### Against all_mlps" in md and "### Against flu" not in md and "difference from all_mlps" in md
    assert main(["report", str(copy_of_run), "--markdown", "--reference", "nope"]) == 2
    assert "--reference 'nope' is not a unit of this run; its units are flu, random, all_mlps" in capsys.readouterr().err
    seed = copy_of_run / "runs" / "seed0"
    (seed / "flu.json").unlink()
    assert main(["report", str(copy_of_run), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "difference from random is significant" in md and "difference from flu" not in md
    (seed / "all_mlps.json").unlink()
    assert main(["report", str(copy_of_run), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "No comparisons: only one unit (random) in this run: nothing to compare." in md
    assert "No \\* marks: only one unit (random)" in md and "difference from" not in md


def test_an_output_under_an_existing_file_is_refused_before_any_work(copy_of_run: Path, tmp_path: Path, capsys,
                                                                    monkeypatch):
    """Audit confirm_parent_file.sh: ``--csv notes.csv/x.csv`` (a folder that is a file) was a FileExistsError
    traceback, and compare lost the table it had computed first."""
    import factlens.comparison

    def never(*a, **kw):
        raise AssertionError("computed before the output path was checked")

    monkeypatch.setattr(factlens.comparison, "compare", never)
    mine = tmp_path / "notes.csv"
    mine.write_text("mine\n")
    for argv in (["compare", str(copy_of_run), "--csv", str(mine / "x.csv")],
                 ["report", str(copy_of_run), "--output", str(mine / "sub" / "r.html")],
                 ["report", str(copy_of_run), "--markdown", "--output", str(mine / "r.md")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{mine} is a file, not a folder" in err and "Traceback" not in err
    assert mine.read_text() == "mine\n"
