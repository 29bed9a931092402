"""The relearning attack's messages: the advice of its errors and its note say what is true of the call made."""

from __future__ import annotations

import pytest

from factlens.evaluation import EvalConfig
from factlens.evaluation.config import TextConfig
from factlens.evaluation.relearning import RelearningConfig, relearn, run_relearning
from factlens.testing import planted_fact_model

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = EvalConfig(relearning=RelearningConfig(steps=1, rank=2, both_halves=False))


def test_text_naming_every_subject_is_refused_with_advice_each_route_can_follow(tmp_path):
    """The error advised "set l_sft=0", an argument of relearn() only: the suite, its config and the CLI have
    no such setting. It names other text for each route, and relearn(..., l_sft=0), which does run."""
    p = planted_fact_model()
    subjects = [r.subject for r in (*p.task.forget, *p.task.maintain)]
    path = tmp_path / "all_subjects.txt"
    path.write_text("".join(f"{s} played a game last night .\n" for s in subjects * 3))
    cfg = CFG.replace(text=TextConfig(source=str(path)))
    with pytest.raises(ValueError, match="names a subject of the evaluated facts") as err:
        run_relearning(p.model, p.task, config=cfg)
    msg = str(err.value)
    assert "--text-source" in msg and "EvalConfig(text=TextConfig(source=" in msg and "relearn(..., l_sft=0)" in msg
    assert "set l_sft=0" not in msg
    rel = relearn(p.model, p.task.forget, config=cfg, l_sft=0, avoid_subjects=subjects)  # the advice holds
    rel.lora.remove()
    assert rel.sft_kind.startswith("skipped")


def test_the_note_says_the_forget_baselines_are_the_originals_only_when_one_is_given():
    """Without the original the forget/train metrics have no baseline, but the note said they were the
    original model's."""
    p = planted_fact_model()
    without = run_relearning(p.model, p.task, config=CFG)
    assert without["relearn_forget_accuracy"].baseline is None
    assert "original model without relearning" not in without.extra["note"]
    assert "forget/train accuracies = none (original=None" in without.extra["note"]
    given = run_relearning(p.model, p.task, original=p.model, config=CFG)
    assert given["relearn_forget_accuracy"].baseline is not None
    assert "forget/train accuracies = the original model without relearning" in given.extra["note"]
