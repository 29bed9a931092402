"""One progress setting: ``factlens.progress`` reaches every bar, ``show_progress=`` lasts one call,
and the runner's ``--no-progress`` reaches its worker processes."""

from __future__ import annotations

import pytest

import factlens
from factlens.components import Mask
from factlens.editing import EditConfig
from factlens.prompt_scores import score_prompts
from factlens.data.formats import format_prompts
from factlens.progress_bars import progress_bar, progress_enabled, show_progress_option, takes_show_progress

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = EditConfig(lr=1e-2, steps=3, batch_size=None, grad_accum=1, n_sft_chunks=2)


def _bars(text: str, desc: str) -> bool:
    return f"{desc}:" in text  # tqdm writes "<desc>: ..." on every refresh


def test_the_setting_nests_and_restores():
    with factlens.progress(True):
        assert progress_enabled()
        with factlens.progress(False):
            assert not progress_enabled()
            with pytest.raises(RuntimeError):
                with factlens.progress(True):
                    raise RuntimeError("restored even on an error")
            assert not progress_enabled()
        assert progress_enabled()


def test_bad_values_are_refused():
    with pytest.raises(TypeError, match="takes True or False"):
        with factlens.progress("no"):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match="show_progress must be True, False or None"):
        show_progress_option(0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no disable="):
        progress_bar(range(2), disable=True)
    with pytest.raises(TypeError, match="keyword-only parameter show_progress"):
        takes_show_progress(lambda x, show_progress=None: x)


def test_a_context_silences_a_bar_deep_inside(planted, capsys):
    items = format_prompts(planted.dataset)
    with factlens.progress(True):
        score_prompts(planted.model, items, batch_size=2)  # the bar of the innermost helper
        assert _bars(capsys.readouterr().err, "scoring")
        with factlens.progress(False):
            factlens.evaluate(planted.model, planted.task, original=planted.model, suites=["standard"])
        err = capsys.readouterr().err
    assert err == ""


def test_show_progress_on_a_verb_lasts_one_call(planted, capsys):
    mask = Mask([planted.lookup_mlp])
    with factlens.progress(True):
        factlens.edit(planted.model, mask, planted.task, config=CFG, show_progress=False)
        assert capsys.readouterr().err == ""
        assert progress_enabled()  # not leaked
        factlens.edit(planted.model, mask, planted.task, config=CFG)  # None: the surrounding setting
        assert _bars(capsys.readouterr().err, "editing")
    with factlens.progress(False):
        factlens.evaluate(planted.model, planted.task, original=planted.model, suites=["standard"],
                          show_progress=True)
        assert _bars(capsys.readouterr().err, "evaluate")
        assert not progress_enabled()
        factlens.localize(planted.model, planted.dataset, method="probing", cv=2)
        assert capsys.readouterr().err == ""


def test_a_job_carries_its_own_setting(capsys):
    """A worker process does not inherit the driver's context: the job's ``show_progress`` decides."""
    from factlens.runner import RunConfig
    from factlens.runner.pipeline import PlanJob, Workspace, plan_job

    cfg = RunConfig(task="planted", model="planted", localizations=("flu",), suites=("standard",)).to_dict()
    ws = Workspace()
    with factlens.progress(False):
        plan_job(PlanJob(cfg, 0, show_progress=True), ws)
    assert _bars(capsys.readouterr().err, "probes (subject_last)")
    with factlens.progress(True):
        plan_job(PlanJob(cfg, 0, show_progress=False), ws)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("workers", [1, 2])
def test_no_progress_silences_the_run_and_its_workers(tmp_path, capfd, workers):
    from factlens.runner.cli import main

    args = ["run", "planted", "--model", "planted", "--localizations", "all_mlps,nonlocalized", "--suites", "standard",
            "--edit", "steps=1", "--workers", str(workers), "--no-report", "--out"]
    with factlens.progress(True):
        assert main([*args, str(tmp_path / "quiet"), "--no-progress"]) == 0
        quiet = capfd.readouterr().err  # the file descriptor: worker processes write there too
        assert main([*args, str(tmp_path / "loud")]) == 0
        loud = capfd.readouterr().err
    assert "%|" not in quiet and not _bars(quiet, "localizations"), quiet  # the CLI's own lines remain
    assert _bars(loud, "localizations") and "%|" in loud


def test_a_bar_into_a_log_file_updates_every_half_minute_not_ten_times_a_second(tmp_path):
    """`factlens run ... 2> log` (nohup, a cluster job): a bar redrawn every 0.1 s wrote an
    update per 0.1 s of a long run into the log. Into a file or pipe it updates every 30 s; a
    terminal keeps tqdm's interval, and a bar's own mininterval= is kept."""
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    with factlens.progress(True), open(tmp_path / "log.txt", "w") as log:
        bar = progress_bar(range(3), file=log)
        assert bar.mininterval == 30.0
        bar.close()
        bar = progress_bar(range(3), file=log, mininterval=1.0)
        assert bar.mininterval == 1.0
        bar.close()
        bar = progress_bar(range(3), file=Terminal())
        assert bar.mininterval == 0.1
        bar.close()


def test_the_edit_bar_in_a_log_file_keeps_its_interval(planted, capsys):
    """Audit (session 50): the edit bar's loss postfix redrew it at every step, past the 30 s interval
    that bars written to a file or pipe keep (docs/runner.md): a 30-step edit wrote 31 lines, all
    "0/30"."""
    with factlens.progress(True):
        factlens.edit(planted.model, Mask([planted.lookup_mlp]), planted.task,
                      config=EditConfig(lr=1e-2, steps=30, batch_size=4, grad_accum=1, l_sft=0.0))
    err = capsys.readouterr().err
    lines = [x for x in err.replace("\r", "\n").split("\n") if x.startswith("editing")]
    assert 1 <= len(lines) <= 3, lines  # the first draw (and a last one), not one per step
