"""RunConfig.edit / .eval are typed overrides (validated when the RunConfig is made, nested
tables per suite), and run folders written with the flat evaluation keys of older versions
still resume and report."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from factlens.config import Overrides
from factlens.evaluation import EvalConfig
from factlens.evaluation.config import RENAMED
from factlens.evaluation.relearning import RelearningConfig
from factlens.runner import RunConfig, run_experiment
from factlens.runner.executor import ConfigMismatchError
from factlens.runner.cli import build_parser, config_from_args
from factlens.runner.config import CPU_EVAL_DEFAULTS, PLANTED_EVAL_DEFAULTS
from factlens.runner.stored import upgrade_stored
from factlens.runner.executor import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw) -> RunConfig:
    base = dict(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",),
                show_progress=False)
    return RunConfig(**{**base, **kw})


def test_eval_overrides_are_typed_and_merge_into_the_preset():
    c = _cfg(eval={"relearning": {"steps": 3}})
    assert isinstance(c.eval, Overrides) and c.eval.config_type is EvalConfig
    assert isinstance(c.edit, Overrides) and c.edit == {}
    assert c.eval == {"relearning": {"steps": 3}}
    ec = c.eval_config(2)
    # only the field named changes: the planted preset's relearning batch size and text sizes stay
    assert ec.relearning == RelearningConfig(steps=3, batch_size=PLANTED_EVAL_DEFAULTS["relearning"]["batch_size"],
                                             both_halves=PLANTED_EVAL_DEFAULTS["relearning"]["both_halves"])
    assert ec.text.n_chunks == PLANTED_EVAL_DEFAULTS["text"]["n_chunks"] and ec.seed == 2
    d = c.to_dict()
    assert d["eval"] == {"relearning": {"steps": 3}} and d["edit"] == {}
    back = RunConfig.from_dict(json.loads(json.dumps(d)))
    assert back == c and back.eval_config(2) == ec


def test_bad_overrides_fail_when_the_run_config_is_made():
    with pytest.raises(ValueError) as e:
        _cfg(eval={"relearning": {"stepz": 3}})
    msg = str(e.value)
    assert "unknown RelearningConfig fields ['stepz'] (in EvalConfig.relearning)" in msg
    assert ("valid fields: ['batch_size', 'both_halves', 'checkpoint', 'lora_forward', 'lr', 'rank', "
            "'retain_avoids_subjects', 'steps', 'text_batch_size']") in msg
    with pytest.raises(ValueError, match=r"eval option relearning.steps='3' has the wrong type \(str\)"):
        _cfg(eval={"relearning.steps": "3"})
    with pytest.raises(ValueError, match="unknown EditConfig fields"):
        _cfg(edit={"nope": 1})
    with pytest.raises(ValueError, match="RelearningConfig.steps must be >= 0"):
        _cfg(eval={"relearning": {"steps": -1}})
    with pytest.raises(ValueError, match="must be a table/mapping of EvalConfig options"):
        _cfg(eval=[1])


def test_old_flat_eval_keys_still_accepted():
    with pytest.warns(FutureWarning, match="relearn_steps"):
        old = _cfg(eval={"relearn_steps": 3, "text_source": "wikitext"}, suites=("relearning",))
    new = _cfg(eval={"relearning": {"steps": 3}, "text": {"source": "wikitext"}}, suites=("relearning",))
    assert old == new and old.to_dict() == new.to_dict() and old.eval_config(0) == new.eval_config(0)
    assert old.input_files() == {"eval.text.source": "wikitext"}


def test_an_old_flat_eval_key_on_the_command_line_is_reported_to_the_user():
    """Python's default filters hide a DeprecationWarning raised inside a library, so
    ``--eval relearn_steps=2`` was renamed without a word on the command line; a FutureWarning
    (meant for end users) is shown. Run in a fresh interpreter: pytest's own filters differ."""
    import subprocess
    import sys

    code = ("from factlens.runner.cli import build_parser, config_from_args\n"
            "config_from_args(build_parser().parse_args(['run', 'planted', '--eval', 'relearn_steps=2']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "'relearn_steps' is deprecated; it is now 'relearning.steps'" in res.stderr


def test_an_eval_config_fixes_every_field():
    ec = EvalConfig(relearning=RelearningConfig(steps=2))
    assert _cfg(eval=ec).eval_config(0) == ec  # the planted preset does not apply: every field is given


def test_migrated_presets_equal_the_old_flat_ones():
    """The presets moved to the nested form with the same values (no behaviour change)."""
    old_cpu = {"batch_size": 16, "n_text_chunks": 16, "text_seq_len": 64, "n_mmlu": 57, "relearn_steps": 10,
               "relearn_batch_size": 8, "soft_prompt_steps": 25, "soft_prompt_seeds": 1}
    old_planted = {"batch_size": 16, "n_text_chunks": 4, "text_seq_len": 16, "n_mmlu": 8, "relearn_steps": 5,
                   "relearn_batch_size": 8, "soft_prompt_steps": 10, "soft_prompt_seeds": 1}
    one_half = {"relearning.both_halves": False}  # added since; the presets keep the old one-half attack
    with pytest.warns(FutureWarning):
        assert EvalConfig.from_dict(old_cpu).override(one_half) == EvalConfig.from_dict(CPU_EVAL_DEFAULTS)
        assert EvalConfig.from_dict(old_planted).override(one_half) == EvalConfig.from_dict(PLANTED_EVAL_DEFAULTS)
    assert EvalConfig.from_dict(CPU_EVAL_DEFAULTS) != EvalConfig()


def test_cli_dotted_keys_tables_and_source_flags():
    args = build_parser().parse_args(["run", "planted", "--suites", "standard,relearning,side_effects",
                                      "--eval", "relearning.steps=3", "--eval", 'soft_prompts={"seeds": 2}',
                                      "--text-source", "wikitext", "--mmlu-source", "cais/mmlu:all"])
    c = config_from_args(args)
    assert c.eval == {"relearning": {"steps": 3}, "soft_prompts": {"seeds": 2}, "text": {"source": "wikitext"},
                      "side_effects": {"mmlu_source": "cais/mmlu:all"}}
    assert c.eval_config(0).relearning.steps == 3


def test_report_of_a_run_without_a_budget(tmp_path: Path):
    """Only unbudgeted localizations: the plan has no parameter budget and the report still renders
    (it failed formatting ``None`` as a number)."""
    s = run_experiment(_cfg(out=str(tmp_path / "run"), edit={"steps": 1}))
    assert s.report is not None and "none (only unbudgeted localizations)" in s.report.read_text()


def _flat_eval(nested: dict) -> dict:
    """An evaluation settings table as versions before the nested sections wrote it."""
    out = {k: nested[k] for k in ("seed", "batch_size", "n_shots")}
    for old, new in RENAMED.items():
        section, field = new.split(".")
        out[old] = nested[section][field]
    return out


def test_run_folder_of_an_older_version_resumes_and_reports(tmp_path: Path):
    text = tmp_path / "general.txt"
    text.write_text("The quick brown fox jumps over the lazy dog near the river bank.\n" * 40)
    out = tmp_path / "run"
    def cfg_with(**forms):  # a setting added since, at its old value (only the suites run decide)
        return _cfg(out=str(out), suites=("standard", "relearning"), edit={"steps": 1},
                    eval={"relearning": {"steps": 2, **forms}, "text": {"source": str(text)}})

    cfg, cfg_old_form = cfg_with(), cfg_with(lora_forward="merged", retain_avoids_subjects=False)
    first = run_experiment(cfg_old_form, report=False)  # trained as versions before lora_forward did
    assert first.ran == ("seed0/all_mlps",)
    # rewrite run_config.json as an older version wrote it: flat eval keys, old input labels
    path = out / "run_config.json"
    stored = json.loads(path.read_text())
    stored["config"]["eval"] = {"relearn_steps": 2, "text_source": str(text)}
    stored["resolved"]["eval"] = _flat_eval(stored["resolved"]["eval"])
    stored["inputs"] = {("eval.text_source" if k == "eval.text.source" else k): v for k, v in stored["inputs"].items()}
    for added in ("methods", "rmu_adaptive_scale", "checkpoint"):  # edit settings added since folders were written
        del stored["resolved"]["edit"][added]
    path.write_text(json.dumps(stored))
    assert upgrade_stored(stored)["resolved"]["edit"] == cfg.resolved()["edit"]
    # today's default LoRA form differs from the one the folder ran with: refused, with the flags that resume;
    # settings added since to suites the run does not run decide nothing and are not asked for (they were)
    with pytest.raises(ConfigMismatchError, match="pass --eval relearning.lora_forward=merged "
                                                  "--eval relearning.retain_avoids_subjects=false \\(") as refused:
        run_experiment(cfg)
    assert "unrelated_finetune" not in str(refused.value) and "unfold_norms" not in str(refused.value)
    cfg = cfg_old_form
    up, now_ev = upgrade_stored(stored)["resolved"]["eval"], cfg.resolved()["eval"]
    assert up["relearning"] == now_ev["relearning"] and up["text"] == now_ev["text"]
    assert up["quantization"]["unfold_norms"] is False and now_ev["quantization"]["unfold_norms"] is True  # not run

    again = run_experiment(cfg)  # same settings, written the old way: resumes, nothing reruns
    assert again.ran == () and again.skipped == ("seed0/all_mlps",) and again.report is not None
    now = json.loads(path.read_text())
    assert now["config"]["eval"] == {"relearning": {"steps": 2, "lora_forward": "merged", "retain_avoids_subjects": False},
                                     "text": {"source": str(text)}}
    assert now["resolved"]["eval"]["relearning"]["steps"] == 2 and "eval.text.source" in now["inputs"]
    # other settings are still refused
    with pytest.raises(Exception, match="relearning"):
        RunDir(out).open(_cfg(out=str(out), suites=("standard", "relearning"), edit={"steps": 1},
                              eval={"relearning": {"steps": 3}, "text": {"source": str(text)}}))


def test_upgrade_fills_added_settings_with_their_old_behaviour():
    """A run folder written before ``relearning.both_halves`` existed ran one half: its upgraded
    record says so (today's default, two halves, would make an unchanged folder look changed)."""
    old = {"resolved": {"eval": {"relearning": {"steps": 2, "rank": 512, "lr": 1e-4, "batch_size": 8}}}}
    assert RelearningConfig().both_halves  # the default now
    assert upgrade_stored(old)["resolved"]["eval"]["relearning"]["both_halves"] is False
    flat = {"resolved": {"eval": {"relearn_steps": 2}}}
    assert upgrade_stored(flat)["resolved"]["eval"]["relearning"] == {**RelearningConfig(steps=2).to_dict(),
                                                                        "both_halves": False, "lora_forward": "merged",
                                                                        "retain_avoids_subjects": False}
    # the attacks' chunks / facts per step were the shared forward-pass sizes: the folder's own values
    up = upgrade_stored({"resolved": {"eval": {"batch_size": 4, "text": {"batch_size": 2}, "relearning": {"steps": 2}}}})
    ev = up["resolved"]["eval"]
    assert (ev["relearning"]["text_batch_size"], ev["unrelated_finetune"]["text_batch_size"],
            ev["soft_prompts"]["batch_size"]) == (2, 2, 4)
    new = {"resolved": {"eval": {"relearning": {"both_halves": True, "lora_forward": "factored"}}}}
    assert upgrade_stored(new)["resolved"]["eval"]["relearning"]["both_halves"] is True
    assert upgrade_stored(new)["resolved"]["eval"]["relearning"]["lora_forward"] == "factored"


def test_upgrade_keeps_the_lora_form_of_older_folders():
    """Folders written before ``lora_forward`` existed trained merged adapters; today's default is
    factored (float rounding apart, the same attack). The upgraded record says merged, so a
    resume with today's default is reported as a difference instead of mixing both forms."""
    old = {"resolved": {"eval": {"relearning": {"steps": 2, "both_halves": True}}}}
    up = upgrade_stored(old)["resolved"]["eval"]
    assert RelearningConfig().lora_forward == "factored"
    assert up["relearning"]["lora_forward"] == "merged" and up["unrelated_finetune"]["lora_forward"] == "merged"


def test_method_options_reach_every_localization_of_that_method():
    """``localize_options["causal_tracing"]`` (the default run's 5 samples, no residual traces) applies
    to causal_tracing_mlps and causal_tracing_top_mlp too; before, those two silently ran
    causal tracing's own defaults (10 samples plus residual traces, ~4x the time) and so scored
    components differently from ``causal_tracing`` in the same run."""
    from factlens.runner.pipeline import _localize_options

    cfg = RunConfig(task="planted", model="planted")
    want = {"include_resid": False, "n_samples": 5}
    for loc in ("causal_tracing", "causal_tracing_mlps", "causal_tracing_top_mlp"):
        assert _localize_options(cfg, loc) == want, loc
    own = RunConfig(task="planted", model="planted", localize_options={
        "causal_tracing": {"n_samples": 5}, "causal_tracing_mlps": {"n_samples": 3}, "batch_size": 4})
    # (the given tables go on top of the defaults': include_resid=False stays)
    assert _localize_options(own, "causal_tracing_mlps") == {"include_resid": False, "n_samples": 3, "batch_size": 4}
    assert _localize_options(own, "causal_tracing_top_mlp") == {"include_resid": False, "n_samples": 5,
                                                                "batch_size": 4}
    assert _localize_options(own, "random") == {}


def test_rome_and_memit_estimate_their_covariance_on_the_runs_text(tmp_path):
    """``--text-source`` reaches ROME's and MEMIT's key covariance (issue: "the same --text-source as
    the side-effects suite"); before, they used the built-in text (2,667 tokens on Gemma 3 270M)."""
    from factlens.runner.pipeline import method_edit_config

    text = tmp_path / "t.txt"
    text.write_text("Some general text.\n")
    cfg = RunConfig(task="planted", model="planted", methods=("rome",), localizations=("causal_tracing_top_mlp",),
                    eval={"text.source": str(text)})
    for method in ("rome", "memit"):
        assert method_edit_config(cfg, 0, method).method_config(method).text_source == str(text)
    assert method_edit_config(cfg, 0, "finetune") == cfg.edit_config(0)
    other = tmp_path / "other.txt"
    other.write_text("Other general text.\n")
    own = cfg.replace(edit={"methods": {"rome": {"text_source": str(other)}}})
    assert method_edit_config(own, 0, "rome").method_config("rome").text_source == str(other)
    with pytest.raises(ValueError, match="edit.methods.rome.text_source=.*no such file"):  # hashed, so checked up front
        cfg.replace(edit={"methods": {"rome": {"text_source": str(tmp_path / "missing.txt")}}})
    plain = RunConfig(task="planted", model="planted", methods=("rome",), localizations=("causal_tracing_top_mlp",))
    assert method_edit_config(plain, 0, "rome").method_config("rome").text_source is None
    # so a run whose suites do not read the text still accepts it for ROME / MEMIT, and refuses it otherwise
    RunConfig(task="planted", model="planted", methods=("memit",), suites=("standard",), eval={"text.source": str(text)})
    with pytest.raises(ValueError, match="key covariance"):
        RunConfig(task="planted", model="planted", suites=("standard",), eval={"text.source": str(text)})


def test_config_file_localize_options_are_on_top_of_the_defaults(tmp_path):
    """docs/runner.md's example sets only ``n_samples`` for causal tracing: the file's table must
    keep the default ``include_resid = false`` (it was dropped, so the run traced the residual
    stream too, about 4x the time), like ``[edit]``/``[eval]`` tables on top of their presets."""
    f = tmp_path / "run.toml"
    f.write_text('task = "planted"\n[localize_options]\nbatch_size = 4\n[localize_options.causal_tracing]\n'
                 'n_samples = 4\n[localize_options.causal_tracing_mlps]\nn_samples = 8\n')
    cfg = config_from_args(build_parser().parse_args(["run", "--config", str(f)]))
    assert cfg.localize_options == {"causal_tracing": {"include_resid": False, "n_samples": 4},
                                    "causal_tracing_mlps": {"n_samples": 8}, "batch_size": 4}
    f.write_text('task = "planted"\n[localize_options.causal_tracing]\ninclude_resid = true\n')
    cfg = config_from_args(build_parser().parse_args(["run", "--config", str(f)]))
    assert cfg.localize_options == {"causal_tracing": {"include_resid": True, "n_samples": 5}}


def test_a_seed_listed_twice_is_refused():
    """--seeds 0,0 was accepted and ran every job of seed 0 twice (localizations listed twice were refused)."""
    with pytest.raises(ValueError, match="seeds listed twice"):
        _cfg(seeds=(0, 0))
    assert _cfg(seeds=(0, 1)).seeds == (0, 1)


@pytest.mark.parametrize("kind", ["edit", "eval"])
def test_a_seed_inside_edit_or_eval_options_is_refused(kind):
    """--eval seed=5 / --edit seed=5 were recorded in run_config.json and then replaced by each job's seed."""
    with pytest.raises(ValueError, match="choose the seeds with --seeds"):
        _cfg(**{kind: {"seed": 5}})


def test_the_model_dtype_is_a_run_setting(tmp_path):
    """The runner loaded every model in float32 (no --dtype): Gemma-2-9B took ~37 GB before any
    edit; and the planted model ignored --device. A bf16 run loads, edits and records bf16."""
    import torch

    args = build_parser().parse_args(["run", "planted", "--model", "planted", "--dtype", "bfloat16"])
    assert config_from_args(args).dtype == "bfloat16"
    with pytest.raises(ValueError, match="dtype must be one of"):
        _cfg(dtype="float64")
    with pytest.raises(ValueError, match="needs --gpus-per-job > 0"):
        _cfg(executor="ray", device="cuda")
    from factlens.runner.workspace import _load_models

    model, _, meta = _load_models(_cfg(dtype="bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and meta["dtype"] == "bfloat16"
    summary = run_experiment(_cfg(dtype="bfloat16", out=str(tmp_path / "bf16")))
    rec = json.loads(next((tmp_path / "bf16" / "runs" / "seed0").glob("all_mlps.json")).read_text())
    assert rec["data"]["dtype"] == "bfloat16" and summary.ran
    with pytest.raises(ConfigMismatchError, match="dtype"):  # a folder holds one dtype
        run_experiment(_cfg(out=str(tmp_path / "bf16")))


def test_the_multiple_choice_examples_decide_a_resume_only_where_multiple_choice_is_scored():
    """``mcq_shots`` is a shared setting: a folder that never scored multiple choice (standard and
    relearning) was refused for it; one whose formats suite, or an attack's formats, score it is not
    resumed with other examples."""
    from factlens.runner.run_dir import _ran_only

    ev = {"mcq_shots": "dataset", "n_shots": 2, "formats": {"formats": None}, "quantization": {"formats": ["mcq"]}}
    assert "mcq_shots" not in _ran_only(ev, ("standard", "relearning"))
    assert _ran_only(ev, ("standard", "formats"))["mcq_shots"] == "dataset"
    assert _ran_only(ev, ("quantization",))["mcq_shots"] == "dataset"
    assert "mcq_shots" not in _ran_only({**ev, "quantization": {"formats": ["default"]}}, ("quantization",))


def test_the_flag_a_resume_refusal_suggests_is_accepted_as_printed(tmp_path: Path):
    """A folder written before ``side_effects.held_out_text`` existed ran with ``False``; the refusal
    suggested ``--eval side_effects.held_out_text=False`` (``str``), which ``--eval`` (JSON values)
    refused as a string. The flag as printed now resumes the folder."""
    argv = ["run", "planted", "--out", str(tmp_path / "run"), "--localizations", "all_mlps",
            "--suites", "standard,side_effects", "--no-progress"]
    RunDir(tmp_path / "run").open(config_from_args(build_parser().parse_args(argv)))
    path = tmp_path / "run" / "run_config.json"
    rec = json.loads(path.read_text())
    del rec["resolved"]["eval"]["side_effects"]["held_out_text"]  # as an older version wrote it
    path.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="pass --eval side_effects.held_out_text=false") as refused:
        RunDir(tmp_path / "run").open(config_from_args(build_parser().parse_args(argv)))
    flag = re.search(r"pass (--eval \S+)", str(refused.value)).group(1).split(" ", 1)
    RunDir(tmp_path / "run").open(config_from_args(build_parser().parse_args(argv + flag)))  # resumes


@pytest.mark.parametrize("body, match", [
    ("seeds = 0.5", r"config field 'seeds' must be a list \(or a comma-separated string\) of seeds"),
    ("localizations = 1.5", "config field 'localizations' must be a list .* of localization names, got 1.5"),
    ('localizations = [["flu"]]', r"config field 'localizations' must be a list of localization names \(strings\)"),
    ("suites = [{a = 1}]", r"config field 'suites' must be a list of evaluation suite names \(strings\)"),
])
def test_a_list_field_of_the_wrong_type_in_a_config_file_is_a_clear_error(tmp_path: Path, capsys, body, match):
    """``seeds = 0.5`` / ``localizations = 1.5`` were a TypeError traceback ('float' object is not
    iterable), ``suites = [{a = 1}]`` one of 'unhashable type: dict' (exit 1, not 2)."""
    from factlens.runner.cli import main

    (tmp_path / "run.toml").write_text(f'task = "planted"\n{body}\n')
    assert main(["run", "--config", str(tmp_path / "run.toml"), "--out", str(tmp_path / "never")]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "never").exists()
    assert _cfg(seeds="0, 1").seeds == (0, 1) and _cfg(seeds=3).seeds == (3,)  # the forms that were read stay read


def test_a_run_configs_option_tables_cannot_be_changed_in_place():
    """``cfg.localize_options["causal_tracing"]["n_samples"] = -3`` passed (no check) and, the default
    being a shallow copy, rewrote DEFAULT_LOCALIZE_OPTIONS for every later RunConfig;
    ``cfg.task_options["n_maintain"] = "eight"`` took a value the constructor refuses."""
    import copy
    import pickle

    from factlens.runner.config import DEFAULT_LOCALIZE_OPTIONS

    default = copy.deepcopy(DEFAULT_LOCALIZE_OPTIONS)
    c = _cfg(task_options={"n_maintain": 8}, localize_options={**DEFAULT_LOCALIZE_OPTIONS, "batch_size": 4})
    with pytest.raises(TypeError, match="RunConfig.localize_options is read-only"):
        _cfg().localize_options["causal_tracing"]["n_samples"] = -3
    with pytest.raises(TypeError, match="RunConfig.task_options is read-only"):
        c.task_options["n_maintain"] = "eight"
    with pytest.raises(TypeError, match="read-only"):
        c.localize_options.update(batch_size=2)
    assert DEFAULT_LOCALIZE_OPTIONS == default and _cfg().localize_options == default
    assert RunConfig.from_dict(json.loads(c.to_json())) == c and pickle.loads(pickle.dumps(c)) == c
    d = c.to_dict()  # plain tables the caller may change
    d["localize_options"]["causal_tracing"]["n_samples"] = 9
    assert type(d["task_options"]) is dict and c.localize_options["causal_tracing"]["n_samples"] == 5
    assert c.replace(seeds=(1,)).task_options == {"n_maintain": 8}


@pytest.mark.parametrize("given, value", [("lr=.5", 0.5), ("lr=5.", 5.0), ("steps=+1", 1), ("lr=-.5", -0.5),
                                          ("optimizer=adamw", "adamw"), ("lr=1e-3", 1e-3), ("x=nan", "nan")])
def test_numbers_python_spells_are_read_as_numbers(given, value):
    """``--edit lr=.5`` (also ``5.`` and ``+1``: no JSON) was kept as a string and refused as
    'wrong type (str)'; a word stays a string (and ``nan``: no finite number)."""
    from factlens.runner.cli_parser import _kv

    key, got = _kv(given)
    assert got == value and type(got) is type(value)


def test_a_run_folders_run_config_json_reproduces_the_run_as_a_config_file(tmp_path: Path):
    """docs/runner.md: a run is reproduced from its ``run_config.json``; ``--config RUN/run_config.json``
    was refused ("unknown config key 'config'"). Its ``config`` table is read, less ``out``."""
    argv = ["run", "planted", "--model", "planted", "--localizations", "all_mlps,random", "--seeds", "0,3",
            "--edit", "steps=2", "--eval", "relearning.steps=3", "--suites", "standard,relearning", "--no-progress"]
    cfg = config_from_args(build_parser().parse_args([*argv, "--out", str(tmp_path / "run")]))
    RunDir(tmp_path / "run").open(cfg)
    record = str(tmp_path / "run" / "run_config.json")
    again = config_from_args(build_parser().parse_args(["run", "--config", record, "--out", str(tmp_path / "new")]))
    assert again == cfg.replace(out=str(tmp_path / "new"))
    assert config_from_args(build_parser().parse_args(["run", "--config", record])).out == str(Path("results/planted"))
    flagged = config_from_args(build_parser().parse_args(["run", "--config", record, "--seeds", "1"]))
    assert flagged.seeds == (1,) and flagged.edit == {"steps": 2}  # flags change it as any config file's settings


@pytest.mark.parametrize("task, options", [("full-sports-editing", {}), ("sports-unlearning", {}),
                                           ("full-sports-editing", {"sport": "football"})])
def test_the_small_presets_maintain_cap_counts_the_real_forget_set(task, options):
    """With forget_size=None (a whole sport) the cap counted no forget facts: 70 basketball players of 134 known facts
    left 64 others, all kept to maintain, and retain was empty. The cap applies when the task leaves
    at least twice SMALL_N_MAINTAIN facts to retain and maintain; the main job's splits are as before."""
    from factlens.data import sports_facts
    from factlens.data.records import FactDataset
    from factlens.runner.config import SMALL_N_MAINTAIN
    from factlens.runner.pipeline import build_task

    sp = sports_facts()
    sport = options.get("sport", "basketball")
    mine, other = [r for r in sp if r.answer == sport][:70], [r for r in sp if r.answer != sport]
    small = FactDataset(tuple(mine + other[:64]), name="sports", candidates=sp.candidates)
    t = build_task(_cfg(task=task, model="gemma-3-270m", forget_size=None, task_options=options), small, 0)
    assert (len(t.forget), len(t.retain), len(t.maintain)) == (70, 32, 32)
    t = build_task(_cfg(task=task, model="gemma-3-270m", forget_size=None, task_options=options), FactDataset(
        tuple(mine + other[:2 * SMALL_N_MAINTAIN]), name="sports", candidates=sp.candidates), 0)
    assert (len(t.forget), len(t.retain), len(t.maintain)) == (70, 2 * SMALL_N_MAINTAIN - 64, 64)  # capped
    main_job = build_task(_cfg(task="sports-athlete-editing", model="gemma-3-270m", forget_size=32), sp, 0)
    assert (len(main_job.forget), len(main_job.retain), len(main_job.maintain)) == (32, 289, 64)


def test_task_options_the_runner_sets_itself_are_refused_up_front(monkeypatch):
    """task_options.seed (or .dataset) passed the checks and failed in the job: "does not accept options
    ['n_forget', 'n_maintain', 'seed'] (... got multiple values for keyword argument 'seed')", naming
    options the user never gave. A task's TypeError now names the user's task_options only."""
    import factlens.tasks
    from factlens.data import sports_facts
    from factlens.runner.pipeline import build_task

    for key, why in (("seed", "set per run by --seeds"), ("dataset", "set by the data options")):
        with pytest.raises(ValueError, match=rf"options this run does not use.*\n  task_options.{key}: .*{why}"):
            _cfg(task="sports-athlete-editing", task_options={key: 1})
    entry = factlens.tasks.task_entry("sports-athlete-editing")

    def fails(*a, **k):
        raise TypeError("a task's own TypeError")

    cfg = _cfg(task="sports-athlete-editing", forget_size=8, task_options={"n_retain": 4})
    monkeypatch.setattr(factlens.tasks, "task_entry", lambda name: dataclasses.replace(entry, fn=fails))
    with pytest.raises(ValueError, match=re.escape("does not accept options ['n_retain'] (a task's own TypeError)")):
        build_task(cfg, sports_facts(), 0)


def test_the_paper_preset_trains_each_sequential_chunk_for_the_papers_steps():
    """Audit (session 50): ``--edit-preset paper`` gave sequential-counterfact-editing 50 steps per
    chunk (``EditConfig()``'s), twice the 25 that ``edit_sequential`` documents as the paper's."""
    from factlens.editing.sequential import edit_sequential
    import inspect

    per_chunk = inspect.signature(edit_sequential).parameters["config"].default.steps
    seq = RunConfig(task="sequential-counterfact-editing", model="gemma-3-270m", edit_preset="paper")
    assert seq.edit_config(0).steps == per_chunk == 25
    assert RunConfig(task="counterfact-editing", model="gemma-3-270m", edit_preset="paper").edit_config(0).steps == 50
    assert RunConfig(task="sequential-counterfact-editing", model="gemma-3-270m", edit_preset="paper",
                     edit={"steps": 40}).edit_config(0).steps == 40  # the user's setting wins
    assert RunConfig(task="sequential-counterfact-editing", model="gemma-3-270m").edit_config(0).steps == 20  # fast


def test_the_cpu_preset_checkpoints_the_edit_of_a_real_model_unless_told_not_to():
    """The non-localized unit's edit set the main job's peak memory; the runner's CPU preset now
    checkpoints every edit's blocks (the same gradients), but not the planted model's, and an
    ``[edit] checkpoint = false`` still turns it off."""
    real = dict(task="sports-athlete-editing", model="gemma-3-270m", localizations=("flu",))
    assert RunConfig(**real).edit_config(0).checkpoint is True
    assert RunConfig(**real, edit={"checkpoint": False}).edit_config(0).checkpoint is False
    assert _cfg().edit_config(0).checkpoint is False  # planted
    assert RunConfig(**real, edit_preset="paper").edit_config(0).checkpoint is False  # EditConfig()'s default
