"""Bad and unusual input to the runner and the CLI (issue 11: items 4, 5, 9 and the clear errors).

Most checks refuse before any job runs, so they open run directories directly
(:meth:`RunDir.open`) or stop ``run_experiment`` from being reached.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from factlens.runner import RunConfig, RunDir
from factlens.runner.cli import build_parser, config_from_args, main
from factlens.runner.inputs import hash_input
from factlens.runner.executor import ConfigMismatchError, Executor, RunDirError, run_experiment
from factlens.runner.run_dir import SET_ASIDE
from factlens.runner.config_checks import unread_settings

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(out: Path, **kw) -> RunConfig:
    base = dict(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",), out=str(out),
                show_progress=False, edit={"steps": 1})
    return RunConfig(**{**base, **kw})


@pytest.fixture()
def no_run(monkeypatch):
    """``run_experiment`` must not be reached: bad settings are refused before."""
    import factlens.runner.executor as ex

    def refuse(*a, **k):
        raise AssertionError("run_experiment was called: the bad setting was not refused up front")

    monkeypatch.setattr(ex, "run_experiment", refuse)


def _main(*argv: str) -> int:
    return main(["run", *argv, "--no-progress"])


# -- item 4: a changed input file is detected on resume ----------------------------------------


def test_changed_text_source_refused_on_resume(tmp_path: Path):
    text = tmp_path / "general.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n" * 20)
    cfg = _cfg(tmp_path / "run", suites=("standard", "side_effects"), eval={"text": {"source": str(text)}})
    RunDir(tmp_path / "run").open(cfg)
    stored = json.loads((tmp_path / "run/run_config.json").read_text())
    assert stored["inputs"]["eval.text.source"]["sha256"] == hash_input(text)["sha256"]
    RunDir(tmp_path / "run").open(cfg)  # same content: resumes
    text.write_text("Another text entirely.\n" * 20)  # same path, other content
    with pytest.raises(ConfigMismatchError, match=r"eval.text.source.*changed"):
        RunDir(tmp_path / "run").open(cfg)


def test_a_resume_naming_the_text_file_under_another_spelling_says_which_spelling_resumes(tmp_path: Path,
                                                                                            monkeypatch):
    """A resume with ``--eval text.source=../x/general.txt`` of a folder run with the absolute path is refused
    (every unit records the path): the error showed the two paths and nothing more; it now says they are the
    same file and which spelling resumes."""
    (tmp_path / "x").mkdir()
    text = tmp_path / "x" / "general.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n" * 20)
    cfg = _cfg(tmp_path / "run", suites=("standard", "side_effects"), eval={"text": {"source": str(text)}})
    RunDir(tmp_path / "run").open(cfg)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    respelled = _cfg(tmp_path / "run", suites=("standard", "side_effects"), eval={"text": {"source": "../x/general.txt"}})
    with pytest.raises(ConfigMismatchError) as e:
        RunDir(tmp_path / "run").open(respelled)
    assert (f"input eval.text.source: '../x/general.txt' is the stored {str(text)!r} (the same content, sha256 "
            f"{hash_input(text)['sha256'][:12]}): give it as {str(text)!r} to resume") in str(e.value)
    text.write_text("Another text entirely.\n" * 20)  # other content: no such line
    with pytest.raises(ConfigMismatchError) as e:
        RunDir(tmp_path / "run").open(respelled)
    assert "the same content" not in str(e.value) and "changed" in str(e.value)


def test_a_changed_method_covariance_text_is_refused_on_resume(tmp_path: Path):
    """--edit methods.rome.text_source=FILE was not hashed: rewriting the file between two invocations
    resumed the folder, and its units estimated ROME's covariance on different text."""
    text = tmp_path / "cov.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n" * 20)
    cfg = _cfg(tmp_path / "run", methods=("finetune", "rome"), edit={"methods": {"rome": {"text_source": str(text)}}})
    assert "edit.methods.rome.text_source" not in _cfg(tmp_path, edit=cfg.edit.to_dict()).input_files()  # rome unused
    RunDir(tmp_path / "run").open(cfg)
    stored = json.loads((tmp_path / "run/run_config.json").read_text())
    assert stored["inputs"]["edit.methods.rome.text_source"]["sha256"] == hash_input(text)["sha256"]
    RunDir(tmp_path / "run").open(cfg)  # same content: resumes
    text.write_text("Another text entirely.\n" * 20)
    with pytest.raises(ConfigMismatchError, match=r"edit.methods.rome.text_source.*changed"):
        RunDir(tmp_path / "run").open(cfg)
    # a folder written before these inputs were hashed has no entry for them: it resumes
    stored["inputs"].pop("edit.methods.rome.text_source")
    (tmp_path / "run/run_config.json").write_text(json.dumps(stored))
    RunDir(tmp_path / "run").open(cfg)


def test_changed_data_file_refused_on_resume(tmp_path: Path):
    data = tmp_path / "facts.csv"
    data.write_text("athlete,sport\nA B,basketball\n")
    cfg = _cfg(tmp_path / "run", task="sports-athlete-editing", model="gemma-3-270m", data=str(data))  # never loaded
    RunDir(tmp_path / "run").open(cfg)
    data.write_text("athlete,sport\nC D,football\n")
    with pytest.raises(ConfigMismatchError, match=r"input data .*facts\.csv.*changed"):
        RunDir(tmp_path / "run").open(cfg)


def test_folder_inputs_hash_every_file_in_sorted_order(tmp_path: Path):
    mmlu = tmp_path / "mmlu"
    (mmlu / "sub").mkdir(parents=True)
    (mmlu / "b.csv").write_text("q,a,b,c,d,A\n")
    (mmlu / "sub" / "a.csv").write_text("q2,a,b,c,d,B\n")
    h0 = hash_input(mmlu)
    assert h0["kind"] == "folder" and h0["n_files"] == 2 and hash_input(mmlu) == h0
    (mmlu / "sub" / "a.csv").write_text("q2,a,b,c,d,C\n")  # one file's content
    h1 = hash_input(mmlu)
    assert h1["sha256"] != h0["sha256"]
    (mmlu / "sub" / "a.csv").rename(mmlu / "sub" / "z.csv")  # a rename changes it too
    assert hash_input(mmlu)["sha256"] != h1["sha256"]
    cfg = _cfg(tmp_path / "run", suites=("side_effects",), eval={"side_effects.mmlu_source": str(mmlu)})
    RunDir(tmp_path / "run").open(cfg)
    (mmlu / "extra.csv").write_text("q3,a,b,c,d,A\n")  # a file added
    with pytest.raises(ConfigMismatchError, match="mmlu_source"):
        RunDir(tmp_path / "run").open(cfg)


# -- item 5: options a task does not use are refused ----------------------------------------------


def test_planted_task_refuses_data(tmp_path: Path, no_run, capsys):
    args = build_parser().parse_args(["run", "planted", "--data", "no/such/file.csv"])
    with pytest.raises(ValueError, match="planted.*never reads --data"):
        config_from_args(args)
    existing = tmp_path / "facts.csv"
    existing.write_text("athlete,sport\n")
    assert _main("planted", "--data", str(existing), "--out", str(tmp_path / "out")) == 2
    assert "--data" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_text_source_read_only_by_the_linear_lens_is_accepted(tmp_path: Path):
    """The linear lens fits its maps on the general text: a run with it and --text-source was
    refused as if no suite read the text (the readers were a string table without it)."""
    from factlens.evaluation import text_readers

    cfg = _cfg(tmp_path / "run", eval={"text.source": "wikitext"}, suites=("standard", "linear_lens"))
    assert cfg.eval.get_path("text.source") == "wikitext" and "linear_lens" in text_readers()


def test_side_effects_on_the_editors_own_text_are_warned(tmp_path: Path):
    """One file as the editor's KL text and the evaluation's general text: the side effects were
    measured where the edit was trained to keep the text, without a word."""
    text = tmp_path / "general.txt"
    text.write_text("A passage of general text.\n" * 40)
    both = _cfg(tmp_path / "run", suites=("standard", "side_effects"), edit={"sft_source": str(text)},
                eval={"text": {"source": str(tmp_path / "." / "general.txt")}})
    (warning,) = [w for w in unread_settings(both) if "edit.sft_source" in w]
    assert "understates the damage" in warning
    other = _cfg(tmp_path / "b", suites=("standard", "side_effects"), edit={"sft_source": str(text)},
                 eval={"text": {"source": "wikitext"}})
    no_suite = _cfg(tmp_path / "c", suites=("standard", "relearning"), edit={"sft_source": str(text)},
                    eval={"text": {"source": str(text)}})
    assert not [w for c in (other, no_suite) for w in unread_settings(c) if "edit.sft_source" in w]


def test_text_settings_the_linear_lens_does_not_read_are_warned(tmp_path: Path):
    """The linear lens reads the text's source alone (its chunks are its own settings): with it as
    the only text reader, ``text.n_chunks`` changed nothing and passed without a word (the suites
    were counted as reading the whole text or none of it)."""
    cfg = _cfg(tmp_path / "run", eval={"text": {"source": "wikitext", "n_chunks": 4}}, suites=("standard", "linear_lens"))
    (warning,) = [w for w in unread_settings(cfg) if "general text" in w]
    assert "['n_chunks']" in warning and "text.n_chunks is read by" in warning and "side_effects" in warning
    assert "'source'" in warning.split("reads only")[1]  # the source is read: not listed as unread
    read_all = _cfg(tmp_path / "b", eval={"text": {"source": "wikitext", "n_chunks": 4}},
                    suites=("linear_lens", "side_effects"))
    assert not [w for w in unread_settings(read_all) if "general text" in w]
    # the key covariance of ROME reads the source only, too
    rome = _cfg(tmp_path / "c", suites=("standard",), methods=("finetune", "rome"),
                eval={"text": {"source": "wikitext", "seq_len": 16}})
    (warning,) = [w for w in unread_settings(rome) if "general text" in w]
    assert "['seq_len']" in warning and "no suite" not in warning


def test_a_suite_entry_names_only_text_fields_that_exist():
    from factlens.evaluation import Suite

    assert Suite("x", print, reads_text=True).reads_text == ("source", "n_chunks", "seq_len", "batch_size")
    assert Suite("x", print).reads_text == () and Suite("x", print, reads_text=False).reads_text == ()
    with pytest.raises(ValueError, match=r"reads_text must be True, False or a tuple of TextConfig fields"):
        Suite("x", print, reads_text=("sources",))
    with pytest.raises(ValueError, match="reads_text must be"):
        Suite("x", print, reads_text="source")  # a string, not a tuple of one


def test_the_planted_model_refuses_data_for_any_task(tmp_path: Path):
    """A sports task on --model planted ran on the planted facts while run_config.json recorded
    --data (and its sha256) as the data used."""
    facts = tmp_path / "facts.csv"
    facts.write_text("athlete,sport\n")
    with pytest.raises(ValueError, match="--model planted uses the planted model's built-in facts and never reads --data"):
        _cfg(tmp_path / "run", task="sports-athlete-editing", data=str(facts))


@pytest.mark.parametrize("kw, word", [
    ({"task": "sports-athlete-editing", "mcq_data": "mcq.jsonl"}, "mcq_data"),
    ({"ray_address": "auto"}, "ray_address"),
    ({"gpus_per_job": 1.0}, "gpus_per_job"),
    ({"eval": {"side_effects": {"mmlu_source": "cais/mmlu:all"}}}, "side_effects.mmlu_source"),
    ({"eval": {"text.source": "wikitext"}, "suites": ("standard",)}, "text.source"),
    ({"eval": {"text_source": "wikitext"}, "suites": ("standard",)}, "text.source"),  # the old flat key
    ({"task_options": {"sport": "golf"}}, "sport"),
    ({"task_options": {"n_forget": 4}}, "forget_size"),
    ({"localizations": ("flu", "all_mlps"), "param_budget": 5000}, "param_budget=5000: only budgeted"),
])
def test_unused_options_refused(tmp_path: Path, kw, word):
    if "mcq_data" in kw:
        (tmp_path / "mcq.jsonl").write_text("{}\n")
        kw = {**kw, "mcq_data": str(tmp_path / "mcq.jsonl")}
    with pytest.raises(ValueError, match=word):
        _cfg(tmp_path / "run", **kw)


def test_used_options_still_accepted(tmp_path: Path):
    _cfg(tmp_path / "a", executor="ray", ray_address="auto", gpus_per_job=1.0)
    _cfg(tmp_path / "b", task_options={"n_maintain": 4}, suites=("standard", "relearning"),
         eval={"text": {"source": "wikitext"}})
    _cfg(tmp_path / "c", suites=("unrelated_finetune",), eval={"text": {"source": "wikitext"}})  # its "text" data
    # every edit method whose settings have a covariance text reads the run's text (AlphaEdit was refused)
    for method in ("rome", "memit", "alphaedit"):
        cfg = _cfg(tmp_path / method, suites=("standard",), methods=("finetune", method),
                   eval={"text": {"source": "wikitext"}})
        assert not [w for w in unread_settings(cfg) if "general text" in w]


# -- item 9: --overwrite deletes only factlens's files ------------------------------------------


def _user_files(root: Path) -> dict[str, str]:
    files = {"config.py": "x = 1\n", "config.ini": "[a]\n", "plan/roadmap.md": "# plan\n", "runs/mine/notes.txt": "mine",
             "notes.txt": "keep me"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return files


def _fake_results(rd: RunDir) -> None:
    rd.write_json(rd.plan_path(0), {"seed": 0, "param_budget": 10})
    rd.write_json(rd.run_path(0, "all_mlps"), {"kind": "factlens.run"})


def test_overwrite_keeps_the_users_files(tmp_path: Path):
    out = tmp_path / "run"
    rd = RunDir(out)
    rd.open(_cfg(out))
    _fake_results(rd)
    (out / "report.html").write_text("<html/>")
    mine = _user_files(out)
    rd.open(_cfg(out, edit={"steps": 2}), overwrite=True)
    for rel, text in mine.items():
        assert (out / rel).read_text() == text, rel
    assert not rd.run_path(0, "all_mlps").exists() and not rd.plan_path(0).exists()
    assert not (out / "report.html").exists() and not (out / "runs/seed0").exists()
    assert json.loads((out / "run_config.json").read_text())["config"]["edit"] == {"steps": 2}


def test_overwrite_of_a_folder_written_before_manifests(tmp_path: Path):
    """Old run folders (run_config.json, no manifest.json): only factlens's known files go."""
    out = tmp_path / "old"
    rd = RunDir(out)
    rd.open(_cfg(out))
    _fake_results(rd)
    (out / "config.toml").write_text('task = "planted"\n')
    (out / "manifest.json").unlink()
    mine = _user_files(out)
    rd.open(_cfg(out), overwrite=True)
    assert {rel: (out / rel).read_text() for rel in mine} == mine
    assert not (out / "config.toml").exists() and not rd.run_path(0, "all_mlps").exists()


def test_overwrite_refuses_a_folder_that_is_not_a_run_folder(tmp_path: Path, capsys):
    out = tmp_path / "project"
    mine = _user_files(out)
    with pytest.raises(RunDirError, match="not a factlens run folder"):
        RunDir(out).open(_cfg(out), overwrite=True)
    assert {rel: (out / rel).read_text() for rel in mine} == mine
    assert main(["run", "planted", "--out", str(out), "--overwrite", "--no-progress", "--localizations", "all_mlps",
                 "--suites", "standard", "--edit", "steps=1", "--no-report"]) == 2
    assert "not a factlens run folder" in capsys.readouterr().err
    assert {rel: (out / rel).read_text() for rel in mine} == mine and not (out / "run_config.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    RunDir(empty).open(_cfg(empty), overwrite=True)  # an empty folder is fine


def test_config_file_inside_the_run_folder_is_not_claimed(tmp_path: Path, monkeypatch):
    """``--out . --config config.toml``: the user's file is the config; --overwrite keeps it."""
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text('task = "planted"\n')
    rd = RunDir(tmp_path)
    rd.open(_cfg(tmp_path), config_file=cfg_file)
    assert "config.toml" not in rd.owned()
    rd.open(_cfg(tmp_path), overwrite=True, config_file=cfg_file)
    assert cfg_file.read_text() == 'task = "planted"\n'


def test_overwrite_with_the_run_folders_own_config_copy_keeps_it(tmp_path: Path):
    """Editing ``<out>/config.toml`` and running it with ``--overwrite``: the copy was factlens's
    file, but it is also the ``--config`` being run, so clearing the folder must not lose it."""
    src = tmp_path / "run.toml"
    src.write_text('task = "planted"\n')
    out = tmp_path / "run"
    rd = RunDir(out)
    rd.open(_cfg(out), config_file=src)
    copy = out / "config.toml"
    assert copy.read_text() == src.read_text() and "config.toml" in rd.owned()
    copy.write_text('task = "planted"\n# edited\n')
    rd.open(_cfg(out, edit={"steps": 2}), overwrite=True, config_file=copy)
    assert copy.read_text() == 'task = "planted"\n# edited\n' and "config.toml" in rd.owned()


def test_a_failed_overwrite_run_of_the_folders_own_config_keeps_it(tmp_path: Path):
    """The same, when that --overwrite run fails before its first result (a forget size the facts
    cannot fill): the cleanup of the failed run deleted the edited config.toml with the rest."""
    src = tmp_path / "run.toml"
    src.write_text('task = "planted"\nmodel = "planted"\nlocalizations = ["all_mlps"]\nsuites = ["standard"]\n'
                   '[edit]\nsteps = 1\n')
    out = tmp_path / "run"
    assert main(["run", "--config", str(src), "--out", str(out), "--no-progress", "--no-report"]) == 0
    copy = out / "config.toml"
    edited = "forget_size = 1000  # my edits\n" + copy.read_text()
    copy.write_text(edited)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "config.toml"}
    with pytest.warns(UserWarning, match="earlier results are back"):
        assert main(["run", "--config", str(copy), "--out", str(out), "--overwrite", "--no-progress",
                     "--no-report"]) == 2
    assert copy.read_text() == edited  # and the finished run is back (see the test below)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "config.toml"} \
        == before


_PLANTED = ["--no-progress", "--no-report", "--localizations", "all_mlps", "--suites", "standard", "--edit", "steps=1"]


def test_a_failed_overwrite_run_keeps_the_finished_results(tmp_path: Path):
    """``--overwrite`` deleted a finished run before the new settings were known to work: a forget
    size the facts cannot fill ended with exit 2 and an empty folder. The old files are set aside
    and come back when the new run fails before its first result."""
    out = tmp_path / "run"
    assert main(["run", "planted", "--out", str(out), *_PLANTED]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert any(p.parts[0] == "runs" for p in before)
    with pytest.warns(UserWarning, match="ended before its first result.*earlier results are back"):
        assert main(["run", "planted", "--out", str(out), "--forget-size", "1000", "--overwrite", *_PLANTED]) == 2
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert main(["run", "planted", "--out", str(out), *_PLANTED]) == 0  # resumes as before: nothing to redo
    # an --overwrite run that succeeds replaces them, and nothing stays set aside
    assert main(["run", "planted", "--out", str(out), "--overwrite", *_PLANTED[:-1], "steps=2"]) == 0
    assert not (out / SET_ASIDE).exists()
    assert json.loads((out / "run_config.json").read_text())["config"]["edit"] == {"steps": 2}


def test_an_overwrite_run_killed_outright_is_settled_by_the_next_run(tmp_path: Path):
    """A killed --overwrite run leaves the old results set aside: the next run puts them back when
    the killed run had no result yet, and deletes them when it had one."""
    out = tmp_path / "run"
    rd = RunDir(out)
    rd.open(_cfg(out))
    _fake_results(rd)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    RunDir(out).open(_cfg(out, edit={"steps": 2}), overwrite=True)  # ... and killed before its first result
    assert (out / SET_ASIDE).is_dir() and not rd.run_path(0, "all_mlps").exists()
    with pytest.warns(UserWarning, match="stopped before its first result"):
        RunDir(out).open(_cfg(out))  # (rewrites run_config.json's "updated" time, as every open does)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    assert {k: v for k, v in after.items() if k.name != "run_config.json"} \
        == {k: v for k, v in before.items() if k.name != "run_config.json"}
    assert rd.stored()["config"] == json.loads(before[Path("run_config.json")])["config"]
    RunDir(out).open(_cfg(out, edit={"steps": 2}), overwrite=True)
    rd.write_json(rd.run_path(0, "all_mlps"), {"kind": "factlens.run"})  # killed after its first result
    RunDir(out).open(_cfg(out, edit={"steps": 2}))
    assert not (out / SET_ASIDE).exists() and rd.stored()["config"]["edit"] == {"steps": 2}


@pytest.mark.parametrize("seeds", [(1,), (1, 0), (0, 1)])
def test_adding_seeds_resumes_the_folder(tmp_path: Path, seeds):
    """docs/runner.md: adding seeds adds runs; the stored settings are those of the first seed,
    so the new command's settings are compared at that seed, not at its own first seed."""
    out = tmp_path / "run"
    RunDir(out).open(_cfg(out, seeds=(0,)))
    merged = RunDir(out).open(_cfg(out, seeds=seeds))
    assert merged.seeds == tuple(dict.fromkeys((0, *seeds)))
    with pytest.raises(ConfigMismatchError, match="steps"):  # a real change is still refused
        RunDir(out).open(_cfg(out, seeds=(2,), edit={"steps": 3}))


def test_a_folder_of_the_users_files_is_refused(tmp_path: Path):
    """Without ``--overwrite`` too: run files are not scattered among a folder's other files."""
    out = tmp_path / "project"
    out.mkdir()
    mine = {"notes.txt": "keep me", "results.csv": "a,b\n"}
    for rel, text in mine.items():
        (out / rel).write_text(text)
    with pytest.raises(RunDirError, match="not a factlens run folder.*holds other files"):
        RunDir(out).open(_cfg(out))
    assert {p.name: p.read_text() for p in out.iterdir()} == mine
    alone = tmp_path / "alone"  # a folder holding only the --config file is fine
    alone.mkdir()
    (alone / "my.toml").write_text('task = "planted"\n')
    RunDir(alone).open(_cfg(alone), config_file=alone / "my.toml")
    assert (alone / "run_config.json").exists() and (alone / "config.toml").exists()


# -- clear errors -------------------------------------------------------------------------------


def test_out_pointing_at_a_file(tmp_path: Path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("not a folder")
    for out in (f, f / "sub"):
        assert _main("planted", "--out", str(out), "--localizations", "all_mlps", "--suites", "standard") == 2
        assert "is a file, not a folder" in capsys.readouterr().err
    assert f.read_text() == "not a folder"


@pytest.mark.parametrize("flag, words", [
    (["--edit", "lr=-1"], ["lr must be > 0"]),
    (["--edit", "nosuchfield=1"], ["nosuchfield", "EditConfig fields"]),
    (["--edit", "steps=abc"], ["steps='abc'", "int"]),
    (["--edit", "methods.rome.v_lrr=1"], ["v_lrr", "RomeConfig fields", "EditConfig.methods['rome']"]),
    (["--edit", "methods.romee.v_lr=1"], ["settings for ['romee']", "neither a registered edit method"]),
    (["--eval", "text.n_chunks=two"], ["text.n_chunks='two'", "int"]),
    (["--eval", "relearning.stepz=1"], ["stepz", "RelearningConfig fields", "EvalConfig.relearning", "steps"]),
    (["--param-budget", "0"], ["param_budget", ">= 1"]),
    (["--max-facts", "0"], ["max_facts", ">= 1"]),
])
def test_bad_settings_are_clear_errors(tmp_path: Path, no_run, capsys, flag, words):
    assert _main("planted", "--out", str(tmp_path / "out"), *flag) == 2
    err = capsys.readouterr().err
    assert err.startswith("factlens: error:") and "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "out").exists()


def test_missing_model_path_fails_fast_without_the_hub(tmp_path: Path, monkeypatch, no_run, capsys):
    import transformer_lens

    def hub(*a, **k):
        raise AssertionError("the Hugging Face Hub was asked for a local path")

    monkeypatch.setattr(transformer_lens.HookedTransformer, "from_pretrained", hub)
    monkeypatch.chdir(tmp_path)
    assert _main("sports-athlete-editing", "--model", "./models/my-gemma") == 2
    err = capsys.readouterr().err
    assert "./models/my-gemma" in err and "does not exist" in err and str(tmp_path) in err
    import factlens

    with pytest.raises(FileNotFoundError, match="does not exist"):
        factlens.load_model("../checkpoints/model")
    with pytest.raises(ValueError, match="not a local path.*TransformerLens"):
        factlens.load_model("models/my-gemma")  # not a local folder, not a model name
    with pytest.raises(FileNotFoundError, match="does not exist"):
        factlens.load_model(path="./my-checkpoint")  # before: "needs tl_name"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        factlens.load_model(gguf="model.gguf")
    (tmp_path / "local").mkdir()
    with pytest.raises(ValueError, match=r"load_model\(path='local'"):
        factlens.load_model("local")  # an existing folder given as a name: say how to load it


def test_missing_data_file_is_a_clear_error(tmp_path: Path, no_run, capsys):
    assert _main("sports-athlete-editing", "--model", "gemma-3-270m", "--data", "data/athletes.csv",
                 "--out", str(tmp_path / "o")) == 2
    assert "data/athletes.csv" in capsys.readouterr().err


def test_report_on_a_truncated_run_json_names_the_file(tmp_path: Path, capsys):
    out = tmp_path / "run"
    rd = RunDir(out)
    rd.open(_cfg(out))
    bad = rd.run_path(0, "all_mlps")
    bad.parent.mkdir(parents=True)
    bad.write_text('{"kind": "factlens.run", "localization": "all_')
    for extra in ([], ["--markdown"]):
        assert main(["report", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert str(bad) in err and "not valid JSON" in err


def test_damaged_or_outdated_run_config_is_a_clear_error(tmp_path: Path, capsys):
    out = tmp_path / "run"
    RunDir(out).open(_cfg(out))
    stored = json.loads((out / "run_config.json").read_text())
    stored["config"]["data"] = "facts.csv"  # written by a version that recorded --data for the planted task
    (out / "run_config.json").write_text(json.dumps(stored))
    with pytest.raises(ConfigMismatchError, match="(?s)no longer accepted.*--overwrite"):
        RunDir(out).open(_cfg(out))
    (out / "run_config.json").write_text('{"config": {"task": ')
    with pytest.raises(RunDirError, match="run_config.json is not valid JSON"):
        RunDir(out).open(_cfg(out))
    RunDir(out).open(_cfg(out), overwrite=True)  # --overwrite still starts over
    assert json.loads((out / "run_config.json").read_text())["config"]["data"] is None


def test_method_that_cannot_edit_a_mask_is_a_clear_error(tmp_path: Path, capsys):
    """ROME crossed with a several-MLP localization: the unit is named, no traceback, exit 2;
    the units before it are saved (they raised a bare ValueError with a traceback before)."""
    out = tmp_path / "run"
    rc = _main("planted", "--out", str(out), "--localizations", "all_mlps", "--methods", "finetune,rome",
               "--suites", "standard", "--edit", "steps=1", "--no-report")
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "factlens: error: 1 unit(s) could not be edited: ['seed0/all_mlps+rome']" in err
    assert "unit 'all_mlps+rome' (seed 0): ROME edits exactly one MLP layer" in err
    assert (out / "runs" / "seed0" / "all_mlps.json").is_file()
    assert not (out / "runs" / "seed0" / "all_mlps+rome.json").exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_every_unit_a_method_cannot_edit_is_named_after_the_others_ran(tmp_path: Path, capsys, workers: str):
    """MEMIT crossed with localizations whose masks it cannot edit: the run stopped at the first
    such unit, so the units after it never ran and the user met the next refusal only on the next
    run. Now every other unit runs and is saved, and one error (exit 2) names them all."""
    out = tmp_path / "run"
    rc = _main("planted", "--out", str(out), "--localizations", "causal_tracing,flu,all_mlps,nonlocalized",
               "--methods", "memit", "--suites", "standard", "--workers", workers,
               "--edit", "methods.memit.v_num_grad_steps=2", "--edit", "methods.memit.n_cov_tokens=256")
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    for unit in ("causal_tracing", "all_mlps", "nonlocalized"):
        assert f"unit '{unit}+memit' (seed 0): MEMIT" in err, unit
    assert "3 unit(s) could not be edited" in err and "1 other unit(s) finished and are saved" in err
    assert sorted(p.name for p in (out / "runs" / "seed0").iterdir()) == ["flu+memit.json"]
    html = (out / "report.html").read_text()  # the finished unit's report, naming the others as unfinished
    assert "a unit whose edit method cannot edit its mask stays unfinished" in html and "nonlocalized+memit" in html


def test_a_resume_spelling_out_the_values_the_folder_ran_with_is_not_refused(tmp_path: Path):
    """relearning.steps=5 where the planted preset says 5, or the fast preset's own lr, changes no
    setting; the raw overrides were compared besides the resolved settings and refused it."""
    out = tmp_path / "run"
    a = _cfg(out, suites=("standard", "relearning"))
    RunDir(out).open(a)
    for extra in ({"eval": {"relearning.steps": 5}}, {"edit": {"steps": 1, "lr": a.edit_config(0).lr}}):
        RunDir(out).open(_cfg(out, suites=("standard", "relearning"), **extra))
    with pytest.raises(ConfigMismatchError, match="relearning"):
        RunDir(out).open(_cfg(out, suites=("standard", "relearning"), eval={"relearning.steps": 6}))


# -- settings that failed inside a job (a traceback after files were written) are refused up front -------------


@pytest.mark.parametrize("kw, message", [
    ({"seeds": (-1,)}, r"seeds must be whole numbers from 0 to 2\*\*32 - 1, got -1"),  # numpy traceback in a job
    ({"seeds": (2**32,)}, r"got 4294967296"),
    ({"seeds": (0.5,)}, r"got 0.5"),  # silently run as seed 0
    ({"forget_size": "8"}, r"forget_size must be a whole number >= 1 .*got '8'"),  # TypeError traceback
    ({"forget_size": 8.7}, r"forget_size must be a whole number >= 1 .*got 8.7"),  # a misleading error after loading
    ({"localizations": ("manual",)}, r"localization 'manual' needs the option\(s\) \['components'\]"),
    ({"task": "sports-unlearning", "objectives": ("inject",)}, r"objective 'inject' trains towards a new answer"),
    ({"executor": "ray", "gpus_per_job": -1}, r"gpus_per_job must be >= 0"),
])
def test_settings_that_failed_inside_a_job_are_refused_up_front(tmp_path: Path, kw, message):
    with pytest.raises(ValueError, match=message):
        _cfg(tmp_path / "run", **kw)
    assert not (tmp_path / "run").exists()


def test_input_files_that_failed_inside_a_job_are_refused_up_front(tmp_path: Path):
    empty, folder = tmp_path / "empty.txt", tmp_path / "texts"
    empty.write_text("")
    folder.mkdir()
    side = dict(suites=("standard", "side_effects"))
    with pytest.raises(ValueError, match=r"eval.text.source=.*texts' is a folder; give a text file"):
        _cfg(tmp_path / "run", eval={"text": {"source": str(folder)}}, **side)
    with pytest.raises(ValueError, match=r"empty.txt' is an empty file"):
        _cfg(tmp_path / "run", eval={"text": {"source": str(empty)}}, **side)
    # a device exists but is no text file: it was called missing ("does not exist")
    with pytest.raises(ValueError, match=r"/dev/null. is not a regular file"):
        _cfg(tmp_path / "run", eval={"text": {"source": "/dev/null"}}, **side)
    with pytest.raises(ValueError, match=r"has no .csv files"):
        _cfg(tmp_path / "run", eval={"side_effects": {"mmlu_source": str(folder)}}, **side)
    assert _cfg(tmp_path / "run", seeds="0,1").seeds == (0, 1)  # a config file's "0,1" string is a list
    assert _cfg(tmp_path / "run", localizations=("manual",),
                localize_options={"manual": {"components": ["L1.mlp"]}}).localizations == ("manual",)


def test_a_device_this_machine_lacks_is_refused_for_the_run_asked_for_not_for_a_stored_one(tmp_path: Path, capsys):
    """An unknown device or CUDA without CUDA failed inside a job; a stored folder's device is not
    checked (a GPU run resumed through Ray from a CPU-only driver was refused, with --overwrite advised)."""
    import numpy as np
    import torch

    from factlens.runner import run_experiment
    from factlens.runner.config import check_device

    with pytest.raises(ValueError, match=r"device='bogus' is not a device torch knows"):
        check_device(_cfg(tmp_path / "run", device="bogus"))
    assert _main("planted", "--model", "planted", "--out", str(tmp_path / "b"), "--device", "bogus") == 2
    assert "is not a device torch knows" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert _cfg(tmp_path / "run", seeds=np.arange(2)).seeds == (0, 1) == _cfg(tmp_path / "r", seeds=(0.0, 1.0)).seeds
    if torch.cuda.is_available():
        return
    gpu = _cfg(tmp_path / "run", device="cuda")  # a config, e.g. a stored folder's: not refused
    with pytest.raises(ValueError, match=r"device='cuda': this torch has no usable CUDA device here"):
        run_experiment(gpu)
    assert not (tmp_path / "run").exists()
    check_device(gpu.replace(executor="ray", gpus_per_job=1))  # Ray workers may have the GPUs
    check_device(gpu, local=False)  # an executor passed to run_experiment that runs elsewhere (docs' Ray snippet)
    with pytest.raises(ValueError, match="no usable CUDA device"):
        check_device(gpu.replace(executor="ray", gpus_per_job=1), local=True)


def test_a_run_that_fails_after_its_plan_leaves_no_settings_that_refuse_the_corrected_command(tmp_path: Path, capsys):
    """A budget smaller than any component failed after the plan was written (RuntimeError traceback);
    the folder kept the bad settings and refused the corrected command as "a different configuration"."""
    out = tmp_path / "run"
    assert _main("planted", "--model", "planted", "--out", str(out), "--localizations", "random",
                 "--param-budget", "10", "--suites", "standard", "--edit", "steps=1", "--no-report") == 2
    assert "selected no component at the parameter budget 10" in capsys.readouterr().err
    assert not out.exists()  # nothing of the failed attempt stays
    assert _main("planted", "--model", "planted", "--out", str(out), "--localizations", "random",
                 "--suites", "standard", "--edit", "steps=1", "--no-report") == 0


def test_a_budget_too_small_after_finished_runs_names_the_command_that_works(tmp_path: Path, capsys):
    """FLU finished, then random selected nothing at --param-budget 3000; the message said "give a larger
    --param-budget, or leave it out", which the folder (holding FLU's run at 3000) then refused."""
    out = tmp_path / "run"
    args = ["planted", "--model", "planted", "--out", str(out), "--localizations", "flu,random", "--suites",
            "standard", "--edit", "steps=1", "--no-report"]
    assert _main(*args, "--param-budget", "3000") == 2
    assert "with --overwrite or another --out" in capsys.readouterr().err
    assert (out / "runs" / "seed0" / "flu.json").exists()
    assert _main(*args) == 2  # what the message's first half alone suggests
    assert _main(*args, "--overwrite") == 0


def test_damaged_run_folder_files_and_config_files_are_exit_2_naming_them(tmp_path: Path, capsys):
    """``run`` showed a traceback for a truncated plan file (``report`` gave exit 2 for it); a --config
    folder or malformed YAML was a traceback, malformed JSON did not name the file; the advice for a
    damaged run_config.json (delete it and rerun) left a folder that was refused as not a run folder."""
    out = tmp_path / "run"
    common = ["--model", "planted", "--out", str(out), "--suites", "standard", "--edit", "steps=1", "--no-report"]
    assert _main("planted", *common, "--localizations", "flu") == 0
    plan = out / "plan" / "seed0.json"
    plan.write_text(plan.read_text()[:40])
    assert _main("planted", *common, "--localizations", "flu,random") == 2  # needs the plan: reads it
    assert f"{plan} is not valid JSON" in capsys.readouterr().err
    (out / "run_config.json").write_text('{"config": ')
    with pytest.raises(RunDirError, match=r"(?s)settings cannot be read.*--overwrite"):
        RunDir(out).open(_cfg(out))
    bad_yaml, bad_json = tmp_path / "c.yaml", tmp_path / "c.json"
    bad_yaml.write_text("task: [planted\n")
    bad_json.write_text("{")
    for config, message in ((tmp_path, "is a folder"), (bad_yaml, "invalid YAML"), (bad_json, "invalid JSON")):
        assert _main("--config", str(config), "--out", str(tmp_path / "other")) == 2
        err = capsys.readouterr().err
        assert message in err and str(config) in err


def test_no_or_duplicate_suites_and_the_edit_prefix_once(tmp_path: Path):
    with pytest.raises(ValueError, match=r"give at least one evaluation suite"):  # localized and edited, measured nothing
        _cfg(tmp_path / "run", suites=())
    with pytest.raises(ValueError, match=r"suites listed twice: \['standard', 'standard'\]"):
        _cfg(tmp_path / "run", suites=("standard", "standard"))
    with pytest.raises(ValueError) as e:
        _cfg(tmp_path / "run", edit={"lr": -1.0})
    assert str(e.value).count("bad edit option") == 1 and "lr" in str(e.value)


def test_settings_of_a_suite_the_run_does_not_run_do_not_stop_a_resume(tmp_path: Path, capsys):
    """``--eval relearning.steps=3`` on a run without relearning was recorded, and the same command
    without it was refused ("resolved eval relearning steps 3 (stored) != 5 (now)")."""
    out = tmp_path / "run"
    common = ["--model", "planted", "--out", str(out), "--suites", "standard", "--localizations", "all_mlps",
              "--edit", "steps=1", "--no-report"]
    assert _main("planted", *common, "--eval", "relearning.steps=3") == 0
    assert _main("planted", *common) == 0, capsys.readouterr().err
    assert "skipped 1 completed" in capsys.readouterr().err
    assert _main("planted", *common, "--eval", "soft_prompts.steps=7") == 0  # nor soft prompts (not run)
    assert _main("planted", *common[:-3], "--edit", "steps=2", "--no-report") == 2  # a setting that counts
    assert "resolved edit" in capsys.readouterr().err


def test_a_run_that_fails_for_another_reason_keeps_its_plan(tmp_path: Path, monkeypatch):
    """Only a failure that says a setting must change discards the plan with the failed attempt; out of
    memory, a crashed worker or a defect in a suite kept it before and keeps it now (the FLU is the
    expensive part of a plan)."""
    import factlens.evaluation.standard as standard

    def boom(*a, **k):
        raise RuntimeError("a defect in a suite")

    monkeypatch.setattr(standard, "run_standard", boom)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="a defect in a suite"):
        _main("planted", "--model", "planted", "--out", str(out), "--localizations", "flu", "--suites", "standard",
              "--edit", "steps=1", "--no-report")
    assert (out / "plan" / "seed0.json").exists() and (out / "run_config.json").exists()


@pytest.mark.parametrize("kw, message", [
    ({"filter_known": "no"}, r"'filter_known' must be true or false, got 'no'"),  # truthy: kept the filter on
    ({"show_progress": "false"}, r"'show_progress' must be true or false"),  # truthy: bars shown
    ({"executor": "ray", "gpus_per_job": float("nan")}, r"'gpus_per_job' must be a finite number, got nan"),
    ({"executor": "ray", "ray_address": 3}, r"'ray_address' must be a string \(or left out\), got 3"),
    ({"task": ["planted"]}, r"'task' must be a string, got \['planted'\]"),  # unhashable: TypeError traceback
])
def test_run_config_fields_of_the_wrong_type_are_refused(tmp_path: Path, kw, message):
    with pytest.raises(ValueError, match=message):
        _cfg(tmp_path / "run", **kw)


def test_config_file_mistakes_are_clear_errors(tmp_path: Path, capsys, monkeypatch):
    """A config file's ``eval = 3`` (or ``edit = 3``) was a TypeError traceback; a non-UTF-8 file's
    error did not name it; ``--seeds 0,,1`` ran seeds 0 and 1 silently; ``out = "~/x"`` made a
    folder named ``~`` in the working folder."""
    for name in ("eval", "edit"):
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(f'task = "planted"\nmodel = "planted"\n{name} = 3\n')
        assert _main("--config", str(cfg), "--out", str(tmp_path / "o")) == 2
        err = capsys.readouterr().err
        assert f"{cfg}: {name} must be a table" in err and "Traceback" not in err
    latin = tmp_path / "latin.toml"
    latin.write_bytes('task = "planted"\n# café\n'.encode("latin-1"))
    assert _main("--config", str(latin), "--out", str(tmp_path / "o")) == 2
    assert f"config file {latin} is not UTF-8 text" in capsys.readouterr().err
    assert _main("planted", "--model", "planted", "--seeds", "0,,1", "--out", str(tmp_path / "o")) == 2
    assert "--seeds '0,,1' has an empty item" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    args = build_parser().parse_args(["run", "planted", "--seeds", "0,1,"])
    assert config_from_args(args).seeds == (0, 1)  # a trailing comma is no value left out
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _cfg(Path("~/runs/x")).out == str(tmp_path / "home" / "runs" / "x")


def test_settings_only_a_job_can_check_leave_no_folder_that_refuses_the_corrected_command(tmp_path: Path, capsys):
    """A --text-source too short for one chunk (the tokenizer decides) failed inside the job with a
    traceback; the folder kept the settings and refused the corrected command as "a different
    configuration"; a config file's wrongly typed localization or task option and settings for an
    unregistered suite failed the same way, after the folder was written."""
    short, out = tmp_path / "short.txt", tmp_path / "run"
    short.write_text("short text only.\n")
    common = ["--model", "planted", "--out", str(out), "--localizations", "random", "--edit", "steps=1",
              "--no-report", "--suites", "standard,side_effects"]
    assert _main("planted", *common, "--text-source", str(short)) == 2
    err = capsys.readouterr().err
    assert "fewer than one chunk" in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(ValueError, match=r"localize_options.causal_tracing.n_samples='5': takes int, got str"):
        _cfg(out, localizations=("causal_tracing_mlps",), localize_options={"causal_tracing": {"n_samples": "5"}})
    with pytest.raises(ValueError, match=r"task_options.n_maintain='8': takes int \| None, got str"):
        _cfg(out, task_options={"n_maintain": "8"})
    with pytest.raises(ValueError, match=r"eval.other_suites has settings for \['foo'\], which is no registered suite"):
        _cfg(out, eval={"other_suites": {"foo": {"x": 1}}})
    assert not out.exists()
    assert _main("planted", *common[:-1], "standard") == 0  # the corrected command


def test_run_folder_files_of_another_json_shape_are_exit_2_naming_them(tmp_path: Path, capsys):
    """Valid JSON of the wrong shape (``[]``, ``{"config": 3}``) in run_config.json or a plan file was an
    AttributeError/KeyError traceback from run, report and compare."""
    out = tmp_path / "run"
    common = ["--model", "planted", "--out", str(out), "--suites", "standard", "--edit", "steps=1", "--no-report"]
    assert _main("planted", *common, "--localizations", "random,all_mlps") == 0
    cfg, plan = out / "run_config.json", out / "plan" / "seed0.json"
    good = {p: p.read_text() for p in (cfg, plan)}
    for path, text, words in ((plan, "[]", "holds a JSON list"), (cfg, "[]", "holds a JSON list"),
                              (cfg, '{"config": 3}', "lacks the table(s) ['config']")):
        path.write_text(text)
        for argv in (["run", "planted", *common, "--localizations", "random,all_mlps,flu", "--no-progress"],
                     ["report", str(out), "--markdown"], ["compare", str(out), "--reference", "random"]):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert f"{path} {words}" in err and "Traceback" not in err, (argv, err)
        path.write_text(good[path])


def test_settings_that_change_nothing_and_unequal_budgets_are_named(tmp_path: Path):
    """Settings of a suite or edit method the run does not use passed without a word (a user read no
    relearning number and no reason), and with --param-budget beside FLU the comparisons with FLU were
    at unequal budgets with nothing in the run or the report saying so."""
    from factlens.runner.report_markdown import markdown_summary

    out = tmp_path / "run"
    with pytest.warns(UserWarning) as caught:
        assert _main("planted", "--model", "planted", "--out", str(out), "--localizations", "flu,random",
                     "--param-budget", "20000", "--suites", "standard", "--edit", "steps=1", "--eval",
                     "relearning.steps=3", "--edit", "methods.rome.v_num_grad_steps=3", "--no-report") == 0
    said = " | ".join(str(w.message) for w in caught)
    assert "eval settings of suite(s) ['relearning'] change nothing" in said
    assert "edit settings of method(s) ['rome'] change nothing" in said
    assert "param_budget=20,000 sizes ['random']; flu keeps its own mask" in said
    flu = json.loads((out / "runs/seed0/flu.json").read_text())["n_params"]
    assert flu != 20000
    assert f"> Unequal budgets (seed 0: flu {flu:,} parameters, the budgeted localizations 20,000)" \
        in markdown_summary(out)
    plain = tmp_path / "plain"  # FLU's budget: no note
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _main("planted", "--model", "planted", "--out", str(plain), "--localizations", "flu,random",
                     "--suites", "standard", "--edit", "steps=1", "--no-report") == 0
    assert "Unequal budgets" not in markdown_summary(plain)


class _Interrupted(Executor):
    """An executor interrupted (Ctrl-C) before its first job."""

    def map(self, fn, items, *, on_result, desc="jobs"):
        raise KeyboardInterrupt


def test_a_failed_resume_after_a_killed_overwrite_run_keeps_the_restored_settings(tmp_path: Path):
    """The folder's state that a failed resume restores was read before the killed --overwrite run's
    set-aside results came back: an interrupted resume that added random recorded random for good."""
    out = tmp_path / "run"
    assert main(["run", "planted", "--out", str(out), *_PLANTED]) == 0
    RunDir(out).open(_cfg(out, edit={"steps": 2}), overwrite=True)  # ... and killed before its first result
    with pytest.warns(UserWarning, match="stopped before its first result"), pytest.raises(KeyboardInterrupt):
        run_experiment(_cfg(out, edit={"steps": 1}, localizations=("all_mlps", "random")), executor=_Interrupted(),
                       report=False)
    assert RunDir(out).stored()["config"]["localizations"] == ["all_mlps"]


def test_a_set_aside_that_fails_part_way_moves_everything_back(tmp_path: Path, monkeypatch):
    """The move of --overwrite that failed part way (a file it may not move, Ctrl-C) escaped as an
    OSError traceback, and the next run deleted the half it had moved (the folder's settings and plan)."""
    import shutil

    out = tmp_path / "run"
    rd = RunDir(out)
    rd.open(_cfg(out))
    _fake_results(rd)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real = shutil.move

    def refused(src, dst):
        if "runs" in Path(src).parts and SET_ASIDE in Path(dst).parts:
            raise PermissionError(13, "Permission denied")
        return real(src, dst)

    monkeypatch.setattr(shutil, "move", refused)
    with pytest.raises(RunDirError, match="could not set the results .* aside .*they are where they were"):
        RunDir(out).open(_cfg(out, edit={"steps": 2}), overwrite=True)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    monkeypatch.setattr(shutil, "move", real)
    # killed during the move: no marker, so the next run puts the moved files back, whatever is still in place
    aside = out / SET_ASIDE
    (aside / "plan").mkdir(parents=True)
    (out / "plan/seed0.json").replace(aside / "plan/seed0.json")
    (out / "run_config.json").replace(aside / "run_config.json")
    with pytest.warns(UserWarning, match="stopped before its first result"):
        RunDir(out).open(_cfg(out))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after.keys() == before.keys() and not aside.exists()
    assert after[Path("plan/seed0.json")] == before[Path("plan/seed0.json")]


def test_overwrite_sets_aside_results_on_another_disk(tmp_path: Path, monkeypatch):
    """``runs/`` linked to another disk: a rename cannot move its files into the set-aside folder
    (EXDEV), so --overwrite could not start at all; they are copied and deleted instead, and come back."""
    import os

    out = tmp_path / "run"
    assert main(["run", "planted", "--out", str(out), *_PLANTED]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for name in ("rename", "replace"):
        def no_cross_device(src, dst, *a, _real=getattr(os, name), **k):
            if "runs" in Path(src).parts or "runs" in Path(dst).parts:
                raise OSError(18, "Invalid cross-device link")
            return _real(src, dst, *a, **k)

        monkeypatch.setattr(os, name, no_cross_device)
    with pytest.warns(UserWarning, match="earlier results are back"):
        assert main(["run", "planted", "--out", str(out), "--forget-size", "1000", "--overwrite", *_PLANTED]) == 2
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_the_config_copy_header_keeps_a_bom_first_and_goes_without_changes():
    from factlens.runner.run_dir import _with_overrides_header

    bom = b"\xef\xbb\xbfforget_size: 6\n"
    headed = _with_overrides_header(bom, ["forget_size: 6 -> 5"])
    assert headed.startswith(b"\xef\xbb\xbf# factlens:") and headed.endswith(b"forget_size: 6\n")
    import yaml

    assert yaml.safe_load(headed.decode("utf-8")) == {"forget_size": 6}
    assert _with_overrides_header(headed, []) == bom  # rerun without flags: the stale header goes


def test_flag_overrides_compare_values_as_the_config_holds_them(tmp_path: Path):
    """``--seeds 0`` against the file's ``seeds = [0]`` was named as a change ([0] -> ['0']), and so was
    ``--out x/`` against ``out = "x"``."""
    from factlens.runner.cli import flag_overrides

    f = tmp_path / "run.toml"
    f.write_text('task = "planted"\nmodel = "planted"\nseeds = [0]\nout = "x"\nforget_size = 6\n')
    parse = lambda *a: build_parser().parse_args(["run", "--config", str(f), *a])  # noqa: E731
    assert flag_overrides(parse("--seeds", "0", "--out", "x/")) == ()
    assert flag_overrides(parse("--seeds", "0,1", "--forget-size", "6")) == ("seeds: [0] -> [0, 1]",)
    # a file that is no valid config alone, which the flags correct: compared as written, and the run goes
    f.write_text('task = "planted"\nmodel = "./no-such-checkpoint"\nseeds = [0]\nlocalizations = ["all_mlps", "x"]\n'
                 'suites = ["standard"]\n[edit]\nsteps = 1\n')
    assert flag_overrides(parse("--seeds", "0", "--localizations", "all_mlps", "--model", "planted")) == (
        "model: './no-such-checkpoint' -> 'planted'", "localizations: ['all_mlps', 'x'] -> ['all_mlps']")
    assert main(["run", "--config", str(f), "--model", "planted", "--localizations", "all_mlps", "--out",
                 str(tmp_path / "out"), "--no-progress", "--no-report"]) == 0


def test_settings_of_a_method_the_folder_stores_are_not_called_unused(tmp_path: Path):
    """A folder with rome units resumed with --methods finetune compares the stored rome settings: the
    warning that they change nothing was false (and removing them was then refused)."""
    out = tmp_path / "run"
    table = ["--edit", "methods.rome.v_num_grad_steps=3"]
    common = ["planted", "--model", "planted", "--out", str(out), "--localizations", "flu", "--suites", "standard",
              "--edit", "steps=1", "--no-report", *table]
    assert _main(*common, "--methods", "finetune,rome") == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _main(*common, "--methods", "finetune") == 0


def test_the_suites_help_names_every_attack_that_runs_only_when_listed(capsys):
    """``factlens run --help`` (where docs/extending.md sends users) listed four of the six attack
    suites that run only when asked for: the logit and linear lenses were missing."""
    from factlens.evaluation import SUITES
    from factlens.runner.config import ALL_SUITES

    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    builtin = [s.name for s in SUITES if s.fn.module.startswith("factlens.") and s.name not in ALL_SUITES]
    assert len(builtin) >= 6 and all(name in text for name in builtin)


def test_the_compare_help_names_the_interval_of_several_seeds_of_0_1_outcomes(capsys):
    """``factlens compare --help`` said "Newcombe's for 0/1 outcomes of one seed, else a paired bootstrap";
    with several seeds of 0/1 outcomes the interval is the hull of both (stats.paired_diff)."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "of one seed, else" not in text and "with several seeds its hull with the paired bootstrap" in text


@pytest.mark.parametrize("suffix, text", [(".toml", 'task = "planted"\nseeds = [2]\n'),
                                          (".json", '{"task": "planted", "seeds": [2]}'),
                                          (".yaml", "task: planted\nseeds: [2]\n")])
def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path: Path, suffix, text):
    """Notepad's "UTF-8 with BOM": a TOML file was "invalid TOML (Invalid statement (at line 1, column 1))", a
    JSON file "Unexpected UTF-8 BOM"; the data loaders already read such files."""
    from factlens.runner.inputs import load_config_file

    p = tmp_path / f"run{suffix}"
    p.write_text(text, encoding="utf-8-sig")
    assert p.read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_config_file(p) == {"task": "planted", "seeds": [2]}


def test_full_sports_editing_to_its_own_sport_is_refused_up_front(tmp_path: Path):
    """``task_options.target = "basketball"`` passed the checks; the task (now) or the edit refused it in the job."""
    for options in ({"target": "basketball"}, {"sport": "football", "target": "football"}):
        with pytest.raises(ValueError, match=r"bad settings \(found before any file is written\):\n  task_options: the "
                                             rf"edit target '{options['target']}' is the edited athletes' sport"):
            _cfg(tmp_path / "run", task="full-sports-editing", model="gemma-3-270m", task_options=options)
    assert _cfg(tmp_path / "run", task="full-sports-editing", model="gemma-3-270m",
                task_options={"target": "football"}).task_options == {"target": "football"}


def test_a_suite_needing_more_forget_facts_than_the_run_edits_is_refused_before_any_job(tmp_path: Path):
    """The in-context attack shows each forget fact max(n_shots) other forget facts: with --forget-size 8
    and the default n_shots [2, 8] it failed inside the first job, after its localization and edit."""
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"suite 'in_context' needs at least 9 forget facts with its settings "
                                         r"\(InContextConfig\), and --forget-size is 8.*other_suites.in_context"):
        _cfg(out, forget_size=8, suites=("standard", "in_context"))
    _cfg(out, forget_size=8, suites=("standard", "in_context"), eval={"other_suites": {"in_context": {"n_shots": [7]}}})
    _cfg(out, forget_size=8, suites=("standard", "in_context"),
         eval={"other_suites": {"in_context": {"sources": ["retain"]}}})  # no forget facts shown
    assert not out.exists()


def test_a_task_too_small_for_a_suites_settings_is_refused_before_localizing(tmp_path: Path, monkeypatch):
    """The in-context attack's retain shots: a seed's task with fewer retain facts than n_shots (known
    only once the task is built) failed inside the first unit's evaluation, after the FLU, its
    localization and its edit."""
    import factlens.runner.pipeline as pipeline

    def no_budget(*a, **k):
        raise AssertionError("the FLU ran before the suites' settings were checked against the task")

    monkeypatch.setattr(pipeline, "plan_budget", no_budget)
    cfg = _cfg(tmp_path / "run", localizations=("flu", "random"), suites=("standard", "in_context"),
               eval={"other_suites": {"in_context": {"sources": ["retain"], "n_shots": [500]}}})
    with pytest.raises(ValueError, match=r"in_context: \d+ fact\(s\) have fewer than 500 retain facts"):
        run_experiment(cfg, report=False)
    assert not list((tmp_path / "run").glob("runs/seed0/*.json"))
