"""factlens.runner.run_files: a run folder's records must come from one configuration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from factlens.runner.report import load_run_dir


def _edit(path: Path, fn) -> None:
    rec = json.loads(path.read_text())
    fn(rec)
    path.write_text(json.dumps(rec))


def test_a_run_file_from_another_forget_size_is_refused(copy_of_run: Path):
    """Run files copied in from a run with another forget size were pooled into one report and comparison."""
    assert len(load_run_dir(copy_of_run)["runs"]) == 3
    _edit(copy_of_run / "runs" / "seed0" / "random.json",
          lambda r: r["task"].update(n_forget=r["task"]["n_forget"] // 2))
    with pytest.raises(ValueError, match="different settings.*n_forget"):
        load_run_dir(copy_of_run)


def test_a_run_file_with_other_evaluation_settings_is_refused(copy_of_run: Path):
    _edit(copy_of_run / "runs" / "seed0" / "random.json",
          lambda r: r["eval"]["meta"]["config"]["text"].update(n_chunks=3))
    with pytest.raises(ValueError, match="different settings.*n_chunks"):
        load_run_dir(copy_of_run)


def test_a_run_file_of_a_seed_the_folder_never_ran_is_refused(copy_of_run: Path):
    (copy_of_run / "runs" / "seed7").mkdir()
    shutil.copy(copy_of_run / "runs" / "seed0" / "flu.json", copy_of_run / "runs" / "seed7" / "flu.json")
    _edit(copy_of_run / "runs" / "seed7" / "flu.json", lambda r: r.update(seed=7))
    with pytest.raises(ValueError, match="seed 7 is not one of this folder's seeds"):
        load_run_dir(copy_of_run)


@pytest.mark.parametrize("name", ["flu (copy).json", "renamed.json"])
def test_a_copied_or_renamed_run_file_is_refused(copy_of_run: Path, name: str):
    """A copy of seed 0's FLU record beside it was read as one more run: Table 1 averaged it in
    (seed 0 counted twice) while the intervals, keyed by seed, did not."""
    src = copy_of_run / "runs" / "seed0" / "flu.json"
    shutil.copy(src, src.with_name(name))
    with pytest.raises(ValueError, match=r"run of 'flu' at seed 0, which the runner writes to runs/seed0/flu\.json"):
        load_run_dir(copy_of_run)
    if name == "renamed.json":  # moved rather than copied: still not where the runner put it
        src.unlink()
        with pytest.raises(ValueError, match="a copied or renamed file"):
            load_run_dir(copy_of_run)


@pytest.mark.parametrize("change, match", [
    (lambda r: r["edit"]["config"].update(lr=0.1), "edited with different settings.*lr"),
    (lambda r: r.update(param_budget=30000), "different parameter budgets.*30,000"),
    (lambda r: r["unit"].update(localization="random_mlps"), "'random_mlps' is not one of this folder's"),
])
def test_a_run_file_of_another_edit_budget_or_localization_is_refused(copy_of_run: Path, change, match):
    """A random_mlps run copied in from a folder run with --edit lr=0.1 --param-budget 30000 was pooled
    into the report and compared with FLU as if at one budget (significant, -0.625 forget accuracy);
    only the evaluation settings, task and seed were checked."""
    _edit(copy_of_run / "runs" / "seed0" / "random.json", change)
    with pytest.raises(ValueError, match=match):
        load_run_dir(copy_of_run)


def test_a_users_own_json_under_runs_is_left_out_with_a_warning(copy_of_run: Path):
    """--overwrite keeps a user's files; report and compare crashed on one with KeyError: 'localization'."""
    (copy_of_run / "runs" / "seed0" / "mynotes.json").write_text('{"mine": 1}')
    with pytest.warns(UserWarning, match="not a factlens run file"):
        runs = load_run_dir(copy_of_run)["runs"]
    assert sorted(r["localization"] for r in runs) == ["all_mlps", "flu", "random"]


def test_completed_runs_leaves_a_users_json_out(copy_of_run: Path):
    """completed_runs() yielded a user's JSON under runs/ as a finished run (the report left it out)."""
    from factlens.runner.executor import completed_runs

    (copy_of_run / "runs" / "seed0" / "mynotes.json").write_text('{"mine": 1}')
    with pytest.warns(UserWarning, match="not a factlens run file"):
        runs = list(completed_runs(copy_of_run))
    assert sorted(r["localization"] for r in runs) == ["all_mlps", "flu", "random"]


@pytest.mark.parametrize("markdown", [False, True])
def test_the_report_warns_once_about_a_users_json(copy_of_run: Path, markdown: bool):
    """The report read the folder twice (its tables, then its comparisons) and warned twice."""
    import warnings

    from factlens.runner.report import build_report
    from factlens.runner.report_markdown import markdown_summary

    (copy_of_run / "runs" / "seed0" / "mynotes.json").write_text('{"mine": 1}')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (markdown_summary if markdown else build_report)(copy_of_run)
    assert [str(w.message).count("mynotes.json") for w in caught if "not a factlens run file" in str(w.message)] == [1]


def test_a_run_written_before_an_edit_setting_existed_is_not_refused(copy_of_run: Path):
    """An older run file lacks edit fields added since (``checkpoint``); comparing every field refused
    a folder resumed with today's code as "edited with different settings"."""
    _edit(copy_of_run / "runs" / "seed0" / "random.json", lambda r: r["edit"]["config"].pop("checkpoint"))
    assert len(load_run_dir(copy_of_run)["runs"]) == 3


def test_units_edited_with_and_without_checkpointing_are_one_runs_units(copy_of_run: Path):
    """Gradient checkpointing changes how an edit is computed, not the edit: a folder started before
    the runner's CPU preset turned it on, and resumed after, was refused as "edited with different
    settings"."""
    _edit(copy_of_run / "runs" / "seed0" / "random.json", lambda r: r["edit"]["config"].update(checkpoint=True))
    assert len(load_run_dir(copy_of_run)["runs"]) == 3
    _edit(copy_of_run / "runs" / "seed0" / "random.json", lambda r: r["edit"]["config"].update(lr=0.5))
    with pytest.raises(ValueError, match="edited with different settings"):
        load_run_dir(copy_of_run)


def test_the_markdown_report_names_unfinished_units(copy_of_run: Path):
    """The HTML report listed units not finished; the Markdown report (the docs' tables) said nothing."""
    from factlens.runner.report_markdown import markdown_summary

    assert "Not finished" not in markdown_summary(copy_of_run)
    (copy_of_run / "runs" / "seed0" / "random.json").unlink()
    assert "> Not finished: seed0/random" in markdown_summary(copy_of_run)


def _source(commit: str):
    def set_source(rec):
        rec["versions"]["factlens_source"] = commit
    return set_source


def test_units_of_one_code_carry_no_code_note(copy_of_run: Path):
    from factlens.runner.report import build_report
    from factlens.runner.report_markdown import markdown_summary

    assert "computed by different code" not in markdown_summary(copy_of_run)
    assert "computed by different code" not in build_report(copy_of_run)


def test_units_computed_by_different_factlens_code_are_named_in_report_and_compare(copy_of_run: Path):
    """factlens's version stays 0.1.0 between commits, so a folder resumed after an update (or folders of
    two sessions merged by compare) pooled units of different code without a word."""
    import warnings

    from factlens.comparison import compare
    from factlens.runner.report import build_report
    from factlens.runner.report_markdown import markdown_summary

    for name, source in (("flu", "tree " + "1" * 40), ("all_mlps", "tree " + "1" * 40),
                         ("random", "tree " + "2" * 40 + " +changes 0a1b2c3d4e5f")):
        _edit(copy_of_run / "runs" / "seed0" / f"{name}.json", _source(source))
    md = markdown_summary(copy_of_run)
    assert "> The units here were computed by different code" in md
    assert ("factlens_source: tree 111111111111 (seed 0 flu, seed 0 all_mlps); tree 222222222222 +changes 0a1b2c3d4e5f "
            "(seed 0 random)") in md
    assert "computed by different code" in build_report(copy_of_run)
    with pytest.warns(UserWarning, match="computed by different code"):
        compare(copy_of_run, reference="flu")
    with warnings.catch_warnings(record=True) as caught:  # the report says it once, in the page
        warnings.simplefilter("always")
        build_report(copy_of_run)
    assert not [w for w in caught if "different code" in str(w.message)]


def test_the_factlens_source_is_the_package_tree_and_its_uncommitted_changes(tmp_path: Path):
    """The commit changed with every docs-only commit (a resumed folder read as "different code"), and two
    different uncommitted states both read "<commit>+changes" (the same code)."""
    import subprocess

    import factlens
    from factlens.runner import provenance

    assert "factlens_source" in provenance.versions()
    repo = tmp_path / "checkout"
    pkg = repo / "factlens"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (repo / "README.md").write_text("docs\n")

    def git(*a):
        subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *a], check=True,
                       capture_output=True)

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "one")
    real = factlens.__file__
    try:
        factlens.__file__ = str(pkg / "__init__.py")
        clean = provenance.factlens_source()
        (repo / "README.md").write_text("more docs\n")
        git("commit", "-qam", "docs only")
        assert provenance.factlens_source() == clean and clean.startswith("tree ") and "+changes" not in clean
        (pkg / "__init__.py").write_text("x = 2\n")
        two = provenance.factlens_source()
        (pkg / "__init__.py").write_text("x = 3\n")
        three = provenance.factlens_source()
        assert two.startswith(clean + " +changes ") and three.startswith(clean + " +changes ") and two != three
        (pkg / "__init__.py").write_text("x = 1\n")
        (pkg / "new_module.py").write_text("y = 1\n")  # an untracked module is a change too
        assert provenance.factlens_source().startswith(clean + " +changes ")
    finally:
        factlens.__file__ = real
    outside = tmp_path / "elsewhere" / "factlens"
    outside.mkdir(parents=True)
    (outside / "__init__.py").write_text("")
    try:
        factlens.__file__ = str(outside / "__init__.py")
        assert provenance.factlens_source() is None  # not in a git checkout: the version number says it
    finally:
        factlens.__file__ = real


def test_html_and_markdown_give_a_unit_the_same_total_time(copy_of_run: Path):
    """The HTML report's total added the plan wait (405 s against the Markdown's 362 s for one unit)."""
    import re

    from factlens.runner.report import build_report
    from factlens.runner.report_markdown import markdown_summary
    from factlens.runner.report_runs import unit_seconds

    def timed(rec):
        rec["timings"] = {"localize": 35.4, "edit": 167.8, "evaluate": 154.9, "evaluate.standard": 20.0,
                          "revert": 3.7, "plan_wait": 43.1}
    _edit(copy_of_run / "runs" / "seed0" / "flu.json", timed)
    assert unit_seconds({"localize": 35.4, "edit": 167.8, "evaluate": 154.9, "revert": 3.7, "plan_wait": 43.1}) \
        == pytest.approx(361.8)
    assert re.search(r"\| flu \(seed 0\): localize 35 \+ edit 168 \+ evaluate 155 \| 362 \|", markdown_summary(copy_of_run))
    html = build_report(copy_of_run)
    assert "<td>361.8</td>" in html and "<td>404.9</td>" not in html


@pytest.mark.parametrize("record", ["null", "[]", "3"])
def test_a_run_file_that_is_json_but_no_object_is_not_a_finished_unit(copy_of_run: Path, record: str):
    """A run file holding ``null``, ``[]`` or ``3`` (valid JSON, no object) crashed the resume check
    with an AttributeError ('NoneType' object has no attribute 'get')."""
    from factlens.runner.run_dir import RunDir

    path = copy_of_run / "runs" / "seed0" / "random.json"
    assert RunDir(copy_of_run).completed(0, "random")
    path.write_text(record)
    assert not RunDir(copy_of_run).completed(0, "random")
    assert RunDir(copy_of_run).completed(0, "flu")


@pytest.mark.parametrize("note", ["unfinished", "other code"])
def test_the_markdown_report_rewrites_its_own_file_that_begins_with_a_note(copy_of_run: Path, tmp_path: Path,
                                                                           capsys, note: str):
    """``report --markdown --output F`` knew its own file only by a first line '| localization'; a
    summary headed by a '> Not finished' or '> ... different code' note was refused the second time
    ("exists and is not a markdown report factlens wrote"). Someone else's file stays refused."""
    from factlens.runner.cli import main

    if note == "unfinished":
        (copy_of_run / "runs" / "seed0" / "random.json").unlink()
    else:
        _edit(copy_of_run / "runs" / "seed0" / "random.json", _source("tree " + "2" * 40))
    md = tmp_path / "summary.md"
    for _ in range(2):  # written, then over its own earlier output
        assert main(["report", str(copy_of_run), "--markdown", "--output", str(md)]) == 0, capsys.readouterr().err
    assert md.read_text().startswith("> ")
    mine = tmp_path / "mine.md"
    for text in ("> my own notes\n\n| localization | mine |\n", "> Not finished: but mine\n\n# my notes\n"):
        mine.write_text(text)
        assert main(["report", str(copy_of_run), "--markdown", "--output", str(mine)]) == 2
        assert "is not a markdown report factlens wrote" in capsys.readouterr().err and mine.read_text() == text


def test_a_long_list_of_unfinished_units_still_marks_the_markdown_report_as_factlens_own():
    """Only a file's first 4 KiB are read: a note longer than that still names the file as a summary."""
    from factlens.runner.report_markdown import is_markdown_summary

    head = ("> Not finished: " + ", ".join(f"seed{s}/flu+npo" for s in range(400)))[:4096]
    assert is_markdown_summary(head)
    assert not is_markdown_summary("") and not is_markdown_summary("\n\n") and not is_markdown_summary("| loc")


def test_a_folder_from_before_candidate_score_is_not_paired_with_a_token_mean_one(copy_of_run: Path, tmp_path: Path):
    """A folder written before ``candidate_score`` existed ran ``"sum"``; compare paired it with a folder run
    with ``--eval candidate_score=token_mean`` without a word (the setting was not among the added ones)."""
    from factlens.comparison import load_evaluations

    other = tmp_path / "tokmean"
    shutil.copytree(copy_of_run, other)
    (copy_of_run / "runs" / "seed0" / "random.json").unlink()  # each unit in one folder
    for name in ("flu", "all_mlps"):
        (other / "runs" / "seed0" / f"{name}.json").unlink()
    for f in (copy_of_run / "runs" / "seed0").glob("*.json"):
        _edit(f, lambda r: r["eval"]["meta"]["config"].pop("candidate_score"))
    for f in (other / "runs" / "seed0").glob("*.json"):
        _edit(f, lambda r: r["eval"]["meta"]["config"].update(candidate_score="token_mean"))
    with pytest.raises(ValueError, match=r"measured seed 0 differently \(eval\.candidate_score: 'sum' vs 'token_mean'\)"):
        load_evaluations([copy_of_run, other])


def _spell_text_source(folder: Path, path: str, sha256: str) -> None:
    """Make ``folder`` a run that read its general text from ``path`` (with content ``sha256``)."""
    for f in (folder / "runs" / "seed0").glob("*.json"):
        _edit(f, lambda r: r["eval"]["meta"]["config"]["text"].update(source=path))
    _edit(folder / "run_config.json", lambda c: c.update(inputs={"eval.text.source": {
        "path": path, "kind": "file", "bytes": 1, "sha256": sha256}}))


def test_compare_pairs_folders_that_read_one_text_file_under_two_spellings(copy_of_run: Path, tmp_path: Path):
    """A folder run with ``--eval text.source=../data/text.txt`` and one run with that file's absolute path
    read the same text, but compare refused to pair them as "measured differently" (the sha256 each
    run_config.json keeps says they are one file). Other contents are still refused, and paths without a
    digest are compared as given."""
    from factlens.comparison import load_evaluations

    other = tmp_path / "absolute"
    shutil.copytree(copy_of_run, other)
    (copy_of_run / "runs" / "seed0" / "random.json").unlink()  # each unit in one folder
    for name in ("flu", "all_mlps"):
        (other / "runs" / "seed0" / f"{name}.json").unlink()
    digest = "d790b833ef8c" + "0" * 52
    _spell_text_source(copy_of_run, "../data/text.txt", digest)
    _spell_text_source(other, "/work/data/text.txt", digest)
    assert set(load_evaluations([copy_of_run, other])) == {"flu", "random", "all_mlps"}
    a, b = load_evaluations(copy_of_run), load_evaluations(other)  # and results of the two paired in a mapping
    assert set(load_evaluations({"flu": a["flu"], "random": b["random"]})) == {"flu", "random"}
    _spell_text_source(other, "/work/data/text.txt", "ab" * 32)  # another file's content
    with pytest.raises(ValueError, match=r"measured seed 0 differently \(eval\.text\.source: '\.\./data/text\.txt' "
                                         r"\(sha256 d790b833ef8c\) vs '/work/data/text\.txt' \(sha256 abababababab\)"):
        load_evaluations([copy_of_run, other])
    with pytest.raises(ValueError, match=r"eval\.text\.source: '\.\./data/text\.txt' \(sha256 d790b833ef8c\) vs"):
        load_evaluations({"flu": a["flu"], "random": load_evaluations(other)["random"]})
    _spell_text_source(other, "/work/data/text.txt", None)  # not hashed: the paths as given
    with pytest.raises(ValueError, match=r"eval\.text\.source: '\.\./data/text\.txt' \(sha256 d790b833ef8c\) vs "
                                         r"'/work/data/text\.txt'\)"):
        load_evaluations([copy_of_run, other])


def test_a_run_names_the_code_it_imported_even_when_the_files_change_during_it(tmp_path: Path, monkeypatch):
    """The label was computed from the files on disk after each unit: a run during which the checkout changed
    gave its units different labels (code that never ran), and its report warned "computed by different code"."""
    import itertools

    from factlens.runner import RunConfig, provenance
    from factlens.runner.executor import run_experiment

    counter = itertools.count()
    monkeypatch.setattr(provenance, "factlens_source", lambda: f"tree {'a' * 40} +changes {next(counter):012d}")
    clear = getattr(getattr(provenance, "running_source", None), "cache_clear", lambda: None)
    clear()  # a label cached by an earlier test of this process
    try:
        cfg = RunConfig(task="planted", model="planted", localizations=("all_mlps", "random", "nonlocalized"),
                        suites=("standard",), out=str(tmp_path / "run"), show_progress=False, edit={"steps": 1})
        run_experiment(cfg, report=False)
        labels = {json.loads(p.read_text())["versions"]["factlens_source"]
                  for p in (tmp_path / "run" / "runs" / "seed0").glob("*.json")}
        stored = json.loads((tmp_path / "run" / "run_config.json").read_text())["versions"]["factlens_source"]
    finally:
        clear()
    assert labels == {stored}


def test_a_resume_refuses_another_seeds_record_at_a_units_path_before_running(copy_of_run: Path, monkeypatch):
    """A run file copied in from another seed sat at seed0/random.json: with --no-report the resume
    counted it as the finished unit ("skipped 3 completed") and seed 0's random unit was never computed."""
    from factlens.runner import executor
    from factlens.runner.cli import main
    from tests.runner.conftest import FAST

    rec = copy_of_run / "runs" / "seed0" / "random.json"
    _edit(rec, lambda r: r.update(seed=1))
    before = rec.read_bytes()
    monkeypatch.setattr(executor, "make_executor", lambda *a, **k: pytest.fail("the resume started jobs"))
    assert main(["run", "planted", "--model", "planted", "--out", str(copy_of_run), "--localizations",
                 "flu,random,all_mlps", *FAST, "--no-report"]) == 2
    assert rec.read_bytes() == before


def test_compare_names_the_units_that_have_not_finished(copy_of_run: Path, capsys):
    """factlens compare left a missing unit out without a word (the report listed it)."""
    from factlens.runner.cli import main

    (copy_of_run / "runs" / "seed0" / "random.json").unlink()
    assert main(["compare", str(copy_of_run), "--metrics", "forget_accuracy"]) == 0
    assert "not finished: seed0/random" in capsys.readouterr().err
    assert main(["compare", str(copy_of_run), "--reference", "random"]) == 2  # the planned reference: named too
    err = capsys.readouterr().err
    assert "not finished: seed0/random" in err and "error" in err


def test_compare_does_not_call_a_unit_unfinished_that_another_folder_holds(copy_of_run: Path, tmp_path: Path, capsys):
    """Merged folders: a unit planned in one folder and finished in another is in the comparison; the note
    still called it "not finished ... not in the comparison" (seeds 7-9 planned in one folder, run into
    another, session 56)."""
    from factlens.runner.cli import main

    other = tmp_path / "random_only"
    shutil.copytree(copy_of_run, other)
    (copy_of_run / "runs" / "seed0" / "random.json").unlink()
    for f in (other / "runs" / "seed0").glob("*.json"):
        if f.name != "random.json":
            f.unlink()
    assert main(["compare", str(copy_of_run), str(other), "--metrics", "forget_accuracy"]) == 0
    out = capsys.readouterr()
    assert "| random | forget_accuracy |" in out.out and "not finished" not in out.err
    (other / "runs" / "seed0" / "random.json").unlink()  # now nobody holds it: named again
    assert main(["compare", str(copy_of_run), str(other), "--metrics", "forget_accuracy"]) == 0
    assert "not finished: seed0/random" in capsys.readouterr().err


def test_compare_refuses_folders_of_other_seeds_measured_with_other_settings(copy_of_run: Path, tmp_path: Path):
    """A folder of seed 0 and one of seed 1 with other evaluation settings were pooled into one mean
    over seeds and one test (the settings were compared only between units of the same seed)."""
    import factlens

    other = tmp_path / "seed1"
    shutil.copytree(copy_of_run, other)
    (other / "runs" / "seed0").rename(other / "runs" / "seed1")
    for f in (other / "runs" / "seed1").glob("*.json"):
        def to_seed1(r):
            r["seed"] = 1
            r["task"]["seed"] = 1
            r["eval"]["meta"]["config"]["seed"] = 1
        _edit(f, to_seed1)
    _edit(other / "run_config.json", lambda c: c["config"].update(seeds=[1]))
    (copy_of_run / "runs" / "seed0" / "random.json").unlink()
    (other / "runs" / "seed1" / "flu.json").unlink()
    assert set(factlens.compare([copy_of_run, other], reference="flu").localization) == {"random", "all_mlps"}
    for f in (other / "runs" / "seed1").glob("*.json"):  # the same seed-1 units, measured on 3 text chunks
        _edit(f, lambda r: r["eval"]["meta"]["config"]["text"].update(n_chunks=3))
    with pytest.raises(ValueError, match="measured differently.*n_chunks.*one model and evaluation setup for every seed"):
        factlens.compare([copy_of_run, other], reference="flu")
