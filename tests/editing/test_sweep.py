"""Hyper-parameter sweep (``factlens.editing.sweep``) on the planted-fact model."""

from __future__ import annotations

import json
import math

import pytest

import factlens.editing.sweep as sweep_mod
from factlens.components import Mask
from factlens.editing.config import EditConfig
from factlens.editing.sweep import SweepResult, config_key, score_edit, sweep, text_accuracy
from factlens.strict_json import strict_loads
from factlens.tasks import sports_unlearning
from factlens.testing import planted_fact_model
from factlens.testing.invariants import assert_unchanged, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = EditConfig(steps=15, batch_size=None, grad_accum=1, l_sft=0.0)
LRS = (1e-4, 3e-2)


@pytest.fixture(scope="module")
def mask(planted):
    return Mask(frozenset({planted.lookup_mlp}))


@pytest.fixture
def calls(monkeypatch):
    """Counts the editor calls made by the sweep."""
    n = []
    real = sweep_mod.edit

    def counting(*args, **kwargs):
        assert kwargs.get("inplace") is False
        n.append(kwargs["config"])
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_mod, "edit", counting)
    return n


def test_table_best_and_resume(tmp_path, planted, mask, calls):
    before = snapshot(planted.model)
    res = sweep(planted.model, mask, planted.task, lrs=LRS, base_config=BASE, out_dir=tmp_path, show_progress=False)
    assert isinstance(res, SweepResult) and len(calls) == 2 and len(res.table) == 2
    t = res.table
    assert list(t["lr"]) == list(LRS) and not t["cached"].any()
    for col in ("forget_acc", "edit_acc", "maintain_acc", "text_acc", "score", "key"):
        assert col in t.columns
    assert res.best_score == t["score"].max() and res.best_config.lr == t["lr"][t["score"].idxmax()]
    assert res.best_config == BASE.replace(lr=res.best_config.lr)
    # the low lr leaves the facts alone, the high one edits them
    assert t["forget_acc"][0] == 1.0 and t["edit_acc"][0] == 0.0 and t["edit_acc"][1] >= 0.9
    assert res.best_config.lr == 3e-2
    row = t.iloc[1]
    assert math.isclose(row["score"], (1 - row["forget_acc"]) + row["edit_acc"] + row["maintain_acc"] + row["text_acc"])
    assert_unchanged(planted.model, before)

    # a rerun does nothing new and gives the same table
    again = sweep(planted.model, mask, planted.task, lrs=LRS, base_config=BASE, out_dir=tmp_path, show_progress=False)
    assert len(calls) == 2 and again.table["cached"].all()
    assert again.table.drop(columns="cached").equals(t.drop(columns="cached"))
    # a bigger grid runs only the new config; a torn last line is ignored
    with (tmp_path / "sweep.jsonl").open("a") as f:
        f.write('{"type": "run", "key": "tor')
    more = sweep(planted.model, mask, planted.task, lrs=(*LRS, 1e-3), base_config=BASE, out_dir=tmp_path, show_progress=False)
    assert len(calls) == 3 and calls[-1].lr == 1e-3 and list(more.table["cached"]) == [True, True, False]
    lines = [json.loads(l) for l in (tmp_path / "sweep.jsonl").read_text().splitlines()[:3]]
    assert lines[0]["type"] == "header" and lines[0]["mask"] == ["L1.mlp"]
    assert {l["key"] for l in lines[1:]} == {config_key(BASE.replace(lr=lr)) for lr in LRS}


def test_mismatch_raises(tmp_path, planted, mask, calls):
    sweep(planted.model, mask, planted.task, lrs=LRS[:1], base_config=BASE, out_dir=tmp_path, show_progress=False)
    n = len(calls)
    with pytest.raises(ValueError, match="mask"):
        sweep(planted.model, Mask(frozenset({planted.extraction_head})), planted.task, lrs=LRS[:1], base_config=BASE, out_dir=tmp_path,
              show_progress=False)
    with pytest.raises(ValueError, match="task"):
        sweep(planted.model, mask, sports_unlearning(planted.dataset), lrs=LRS[:1], base_config=BASE, out_dir=tmp_path,
              show_progress=False)
    other = planted_fact_model(n_subjects=60)
    with pytest.raises(ValueError, match="different setup"):
        sweep(other.model, mask, planted.task, lrs=LRS[:1], base_config=BASE, out_dir=tmp_path, show_progress=False)
    assert len(calls) == n
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sweep.jsonl").write_text('{"type": "run"}\n')
    with pytest.raises(ValueError, match="header"):
        sweep(planted.model, mask, planted.task, lrs=LRS[:1], base_config=BASE, out_dir=tmp_path / "bad", show_progress=False)


def test_unlearning_grid_plot_and_dict(planted, mask, calls):
    task = sports_unlearning(planted.dataset)
    res = sweep(planted.model, mask, task, lrs=(3e-2,), l_forget=(0.5, 1.0), base_config=BASE, show_progress=False)
    t = res.table
    assert len(calls) == 2 and list(t["l_forget"]) == [0.5, 1.0]
    assert t["edit_acc"].isna().all()  # no edit target: NaN, adds 0 to the score
    for _, row in t.iterrows():
        assert math.isclose(row["score"], (1 - row["forget_acc"]) + row["maintain_acc"] + row["text_acc"])
    d = res.to_dict()
    json.dumps(d)
    assert len(d["table"]) == 2 and d["best_score"] == res.best_score
    fig = res.plot()
    assert len(fig.data) == 3  # one line per l_forget + the best point


def test_score_edit_and_text_accuracy(planted):
    from factlens.data.text import load_texts, token_chunks

    chunks = token_chunks(planted.model, load_texts(None, n=20), seq_len=16, n_chunks=3)
    acc = text_accuracy(planted.model, chunks)
    assert 0.0 <= acc <= 1.0
    s = score_edit(planted.model, planted.task, chunks=chunks)
    assert s["forget_acc"] == 1.0 and s["edit_acc"] == 0.0 and s["maintain_acc"] == 1.0
    assert math.isclose(s["score"], 1.0 + acc)
    assert math.isnan(score_edit(planted.model, planted.task)["text_acc"])


def test_bad_input(planted, mask):
    with pytest.raises(ValueError, match="empty"):
        sweep(planted.model, mask, planted.task, lrs=(), show_progress=False)
    with pytest.raises(ValueError, match="mask"):
        sweep(planted.model, Mask.empty(), planted.task, lrs=LRS, show_progress=False)


@pytest.mark.parametrize("where", ["file", "under_file", "log_is_folder"])
def test_an_out_dir_that_cannot_hold_the_log_is_refused_before_any_edit(tmp_path, planted, mask, calls, where):
    """``out_dir`` a file failed in mkdir with a bare FileExistsError (under a file: NotADirectoryError),
    naming no argument; the file is left as it was."""
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    out = {"file": f, "under_file": f / "sweep", "log_is_folder": tmp_path / "d"}[where]
    if where == "log_is_folder":
        (out / sweep_mod.SWEEP_FILE).mkdir(parents=True)
    with pytest.raises(ValueError, match="is a file, not a folder|is a folder"):
        sweep(planted.model, mask, planted.task, lrs=LRS, base_config=BASE, out_dir=out, show_progress=False)
    assert f.read_text() == "mine" and calls == []


def test_a_resumed_sweep_reuses_runs_only_for_the_same_weights_facts_and_batch_size(tmp_path, planted, mask, calls):
    """The header named the model and the forget ids only: other weights, other maintain facts or other
    edit targets got the stored numbers back as cached (maintain 0.55 instead of 0.2, ...)."""
    import copy
    from dataclasses import replace

    import torch

    sweep(planted.model, mask, planted.task, lrs=LRS[:1], base_config=BASE, out_dir=tmp_path, show_progress=False)
    other = copy.deepcopy(planted.model)
    with torch.no_grad():
        other.blocks[0].mlp.W_out.mul_(0.5)
    fewer = replace(planted.task, maintain=planted.task.maintain[:-1])
    retarget = replace(planted.task, forget=planted.task.forget.map(lambda r: replace(r, target_new=r.answer)))
    for what, model, task, bs in (("weights", other, planted.task, 16), ("facts", planted.model, fewer, 16),
                                  ("facts", planted.model, retarget, 16),
                                  ("batch_size", planted.model, planted.task, 4)):
        with pytest.raises(ValueError, match=f"different setup \\({what}: stored"):
            sweep(model, mask, task, lrs=LRS[:1], base_config=BASE, out_dir=tmp_path, batch_size=bs,
                  show_progress=False)
    assert len(calls) == 1


def test_a_sweep_of_a_chunked_task_edits_chunk_by_chunk(planted, mask):
    """sweep() called edit(), which trains every chunk at once: a sweep of Sequential-CounterFact-Editing
    tuned a one-shot edit (score 1.00 where the chunk-by-chunk edit it is for scores 2.18 on this model)."""
    from dataclasses import replace

    from factlens.editing import edit_sequential

    f = planted.task.forget
    seq = replace(planted.task, chunks=tuple(f[i:i + 1] for i in range(len(f))))
    base = EditConfig(steps=5, batch_size=None, grad_accum=1, l_sft=0.0)
    res = sweep(planted.model, mask, seq, lrs=(1e-2,), base_config=base, show_progress=False, n_text_chunks=2,
                text_seq_len=16)
    real = score_edit(edit_sequential(planted.model, mask, seq, config=res.best_config).model, seq)
    assert res.table.iloc[0]["score"] == pytest.approx(real["score"])


def test_a_diverging_learning_rate_is_a_row_not_the_end_of_the_sweep(tmp_path, planted, mask, calls):
    """A learning rate that diverged raised out of sweep(): no table, the later grid points never ran,
    and a resume hit the same rate again (it was not recorded)."""
    base = EditConfig(steps=5, batch_size=None, grad_accum=1, l_sft=0.0, clip_grad=None)
    grid = dict(lrs=(3e-2, 1e10, 1e-3), base_config=base, out_dir=tmp_path, show_progress=False, n_text_chunks=2,
                text_seq_len=16)
    res = sweep(planted.model, mask, planted.task, **grid)
    assert list(res.table["diverged"]) == [False, True, False] and math.isnan(res.table["score"].iloc[1])
    assert res.best_config.lr in (3e-2, 1e-3) and len(calls) == 3
    again = sweep(planted.model, mask, planted.task, **grid)
    assert len(calls) == 3 and again.table["cached"].all()  # the diverged run is stored too
    lines = [strict_loads(line) for line in (tmp_path / "sweep.jsonl").read_text().splitlines()]  # standard JSON
    assert [r.get("final_loss") for r in lines[1:]][1] is None  # the diverged run's NaN loss, written as null
    assert math.isnan(again.table["score"].iloc[1]) and math.isnan(again.table["final_loss"].iloc[1])
    twice = sweep(planted.model, mask, planted.task, **{**grid, "lrs": (1e-3, 1e-3), "out_dir": None})
    assert list(twice.table["cached"]) == [False, False] and len(calls) == 4  # run once, not "cached"


def test_the_sweep_scores_text_and_maintenance_it_can_keep_out_of_the_evaluation(tmp_path, planted, mask, monkeypatch):
    """text_acc scored the editor's first 16 KL training chunks of the built-in text (the score
    favoured configs that keep exactly that text); maintain_acc scored task.maintain, the split the
    evaluation reports as held out, with no way to select on another. Now the built-in held-out
    passages, and ``maintain=`` a validation split; the stored header says which, so an older
    sweep file is not mixed in."""
    from factlens.data.text import load_texts, token_chunks

    seen = []
    real = sweep_mod.score_edit
    monkeypatch.setattr(sweep_mod, "score_edit", lambda *a, **k: seen.append(k) or real(*a, **k))
    val = planted.task.maintain[:5]
    res = sweep(planted.model, mask, planted.task, lrs=(3e-2,), base_config=BASE, out_dir=tmp_path, n_text_chunks=2,
                text_seq_len=16, maintain=val, show_progress=False)
    held = token_chunks(planted.model, load_texts(None, held_out=True), seq_len=16, n_chunks=2)
    assert (seen[0]["chunks"] == held).all() and seen[0]["maintain"] is val
    assert len(res.table) == 1
    header = json.loads((tmp_path / "sweep.jsonl").read_text().splitlines()[0])
    assert header["format"] == 3 and header["maintain"] is not None
    with pytest.raises(ValueError, match="different setup"):  # another maintain split: not the same sweep
        sweep(planted.model, mask, planted.task, lrs=(3e-2,), base_config=BASE, out_dir=tmp_path, n_text_chunks=2,
              text_seq_len=16, show_progress=False)
    text = tmp_path / "t.txt"
    text.write_text("The old mill stands by the river and the town sleeps .\n" * 30)
    with pytest.warns(UserWarning, match="sft_source"):
        sweep(planted.model, mask, planted.task, lrs=(3e-2,), base_config=BASE.replace(sft_source=str(text)),
              general_text=str(text), n_text_chunks=2, text_seq_len=16, show_progress=False)


def test_a_run_finished_after_a_cut_off_line_is_kept_on_the_next_resume(tmp_path, planted, mask, calls):
    """The record of the first run after an interrupted write went straight after the cut-off line (no
    newline between): unreadable too, that finished run was redone at every resume."""
    grid = dict(base_config=EditConfig(steps=2, batch_size=None, grad_accum=1, l_sft=0.0), out_dir=tmp_path,
                show_progress=False, n_text_chunks=2, text_seq_len=16)
    sweep(planted.model, mask, planted.task, lrs=(1e-3,), **grid)
    with (tmp_path / "sweep.jsonl").open("a") as f:
        f.write('{"type": "run", "key": "tor')
    first = sweep(planted.model, mask, planted.task, lrs=(1e-3, 3e-2), **grid)
    assert list(first.table["cached"]) == [True, False] and len(calls) == 2
    again = sweep(planted.model, mask, planted.task, lrs=(1e-3, 3e-2), **grid)
    assert again.table["cached"].all() and len(calls) == 2  # the run of 3e-2 is read back, not redone
    lines = (tmp_path / "sweep.jsonl").read_text().split("\n")
    assert lines[2] == '{"type": "run", "key": "tor' and lines[-1] == ""  # the torn line stays, on its own


def test_the_sweep_scores_with_the_evaluations_candidate_rule(tmp_path, planted, mask, calls, monkeypatch):
    """The sweep always ranked candidates by summed log-probability, so for an evaluation with
    ``candidate_score="token_mean"`` it picked settings by other accuracies than those reported. It takes the
    rule now, passes it to its scoring, keys a resumed sweep by it and refuses an unknown one before editing."""
    seen = []
    real = sweep_mod.score_edit
    monkeypatch.setattr(sweep_mod, "score_edit", lambda *a, **k: seen.append(k["candidate_score"]) or real(*a, **k))
    with pytest.raises(ValueError, match=r"candidate_score must be one of \['sum', 'token_mean'\]"):
        sweep(planted.model, mask, planted.task, lrs=LRS[:1], base_config=BASE, candidate_score="mean")
    assert not calls
    sweep(planted.model, mask, planted.task, lrs=LRS[:1], base_config=BASE, out_dir=tmp_path, show_progress=False)
    with pytest.raises(ValueError, match=r"different setup \(candidate_score"):
        sweep(planted.model, mask, planted.task, lrs=LRS[:1], base_config=BASE, out_dir=tmp_path,
              candidate_score="token_mean", show_progress=False)
    sweep(planted.model, mask, planted.task, lrs=LRS[:1], base_config=BASE, out_dir=tmp_path / "tok",
          candidate_score="token_mean", show_progress=False)
    assert seen == ["sum", "token_mean"] and len(calls) == 2
