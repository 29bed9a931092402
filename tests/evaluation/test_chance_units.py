"""The at-chance rule counts facts, not prompts; filter_known judges each fact by its own candidates.

A CounterFact fact has ~10 neighborhood prompts and 2 paraphrases sharing one answer: they are not
independent trials (docs/statistics.md: "Units are facts"). 16 facts with 10 prompts each, 11 facts
right (accuracy 0.6875), passed chance + 2 SE with n = 160 (0.579), not with n = 16 (0.75).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import factlens.data.known as known
import factlens.evaluation.formats as formats_mod
import factlens.evaluation.standard as standard_mod
from factlens.data import filter_known, format_accuracy, sports_facts
from factlens.data.formats import FormattedPrompt
from factlens.data.records import FactDataset, FactRecord, Neighbor
from factlens.evaluation import EvalConfig
from factlens.evaluation.formats import _format_baselines, run_formats
from factlens.evaluation.standard import SplitTally, chance_flags, not_above_chance, run_standard, tally
from factlens.prompt_scores import PromptScores
from factlens.tasks import sports_athlete_editing
from factlens.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

N_FACTS, PER_FACT, RIGHT = 16, 10, 11  # 11/16 = 0.6875: above chance + 2 SE over prompts, not over facts


def _scores(items, right: set[str]) -> PromptScores:
    """Scores that get every prompt of the facts in ``right`` right, and no other."""
    items = tuple(items)
    aw = np.array([it.record_id in right for it in items])
    z = np.zeros(len(items))
    right = [it.candidates.index(it.answer) for it in items]
    winner = np.array([a if ok else (a + 1) % len(it.candidates) for a, it, ok in zip(right, items, aw)])
    return PromptScores(items, z, z, aw, ~aw, z + 0.5, z, winner)


def _clustered_items(prefix: str = "f", answer: str = "Paris", cands=("Paris", "Rome")) -> list[FormattedPrompt]:
    return [FormattedPrompt(f"{prefix}{i} neighbor {k} is in", answer, None, cands, f"{prefix}{i}", "neighborhood")
            for i in range(N_FACTS) for k in range(PER_FACT)]


def _right() -> set[str]:
    return {f"f{i}" for i in range(RIGHT)}


def test_the_premise_prompts_pass_facts_do_not():
    acc = RIGHT / N_FACTS
    assert not not_above_chance(acc, 0.5, N_FACTS * PER_FACT) and not_above_chance(acc, 0.5, N_FACTS)


def test_format_accuracy_counts_facts_not_prompts(monkeypatch):
    """format_accuracy called 16 facts with 10 neighborhood prompts each above chance (n = 160)."""
    recs = [FactRecord(subject=f"S{i}", template="{} is in", answer="Paris", target_new="Rome", id=f"f{i}",
                       neighborhood=tuple(Neighbor(f"N{i}_{k} is in", "Paris") for k in range(PER_FACT)))
            for i in range(N_FACTS)]
    monkeypatch.setattr(known, "score_prompts",
                        lambda model, items, batch_size=16, candidate_score="sum": _scores(items, _right()))
    row = format_accuracy(None, FactDataset(tuple(recs)), formats=["neighborhood"])["neighborhood"]
    assert row["n"] == N_FACTS * PER_FACT and row["accuracy"] == RIGHT / N_FACTS  # accuracy as before: over prompts
    assert row["at_chance"] is True


def test_format_accuracy_with_one_prompt_per_fact_is_unchanged():
    """Sports formats have one prompt per fact: the flag is the prompt-count rule's, bit for bit."""
    ds = sports_facts().subset(range(60))
    rep = format_accuracy(tiny_model(), ds, formats=["default", "mcq", "zero_shot", "professional"])
    assert len(rep.rows) == 4
    for row in rep.rows:
        assert row["n"] == len(ds)
        se = np.sqrt(max(row["chance"] * (1 - row["chance"]), 1e-12) / row["n"])
        assert row["at_chance"] == bool(row["accuracy"] < row["chance"] + 2 * se)


def test_format_accuracy_refuses_an_unknown_group_by():
    """group_by="relation" returned per_group == {} without a word."""
    with pytest.raises(ValueError, match=r"group_by='relation'.*\['answer', None\]"):
        format_accuracy(tiny_model(), sports_facts().subset(range(3)), group_by="relation")


def test_tally_counts_facts_and_the_answer_bias_test_uses_them():
    """The answer-bias bar (0.5: the model says Paris on half the maintain prompts, chance 1/3) was tested
    with n = 160 prompts: 0.6875 passed it (bar + 2 SE = 0.579); over 16 facts it does not (0.75)."""
    cands = ("Paris", "Rome", "Oslo")
    forget = tally(_scores(_clustered_items(cands=cands), _right()))
    maintain = SplitTally(0.9, N_FACTS * PER_FACT, 1 / 3, {"Rome": 1.0}, {"Paris": 0.5, "Rome": 0.5},
                          frozenset(f"m{i}" for i in range(N_FACTS)))
    flags, why = chance_flags({"forget": forget, "maintain": maintain}, {"forget": False})
    assert why["forget"]["bar"] == pytest.approx(0.5)
    assert flags["forget"] is True and why["forget"]["decided_by"] == "answer bias" and why["forget"]["n"] == N_FACTS
    assert (forget.n, forget.units) == (N_FACTS * PER_FACT, N_FACTS)
    # without fact ids (attacks' TaskScores) the prompt count stays the sample size
    assert SplitTally(0.6875, 160, 1 / 3, {}, None).units == 160


def test_formats_baselines_count_facts_not_prompts():
    """The formats suite's pooled flag and per-split rows tested 160 neighborhood prompts of 16 facts."""
    items = _clustered_items()
    rows, flag, why = _format_baselines("neighborhood", {"forget": (items, None, _scores(items, _right()))})
    assert flag is True and why["decided_by"] == "chance" and why["n"] == N_FACTS
    assert rows[0]["n_prompts"] == N_FACTS * PER_FACT and rows[0]["n_facts"] == N_FACTS and rows[0]["at_chance"]


def _prompt_count_rule(monkeypatch) -> None:
    """The rule before the fix: every test's sample size is the number of prompts."""
    monkeypatch.setattr(formats_mod, "n_facts", len)
    monkeypatch.setattr(standard_mod, "n_facts", len)
    monkeypatch.setattr(SplitTally, "units", property(lambda self: self.n))


def test_one_prompt_per_fact_results_are_unchanged(monkeypatch, planted):
    """Sports formats, mcq and the standard suite's default format have one prompt per fact: flags and
    extra values equal those of the prompt-count rule."""
    tiny = tiny_model()
    task = sports_athlete_editing(sports_facts(), n_forget=16, seed=1, n_retain=0, n_maintain=32)
    cfg = EvalConfig(formats={"formats": ["mcq", "zero_shot", "professional", "sport_played"]})
    runs = [lambda: run_formats(tiny, task, original=tiny, config=cfg),
            lambda: run_standard(tiny, task, original=tiny),
            lambda: run_standard(planted.model, planted.task, original=planted.model)]
    now = [run() for run in runs]
    assert all(b["n_prompts"] == b["n_facts"] for b in now[0].extra["format_baselines"])
    with monkeypatch.context() as mp:
        _prompt_count_rule(mp)
        before = [run() for run in runs]
    def key(r):
        return [(m.name, m.value, m.at_chance) for m in r.metrics]

    for a, b in zip(now, before):
        assert a.extra == b.extra and key(a) == key(b)
    assert now[0].extra["at_chance_formats"]  # the random tiny model is flagged: the comparison covers flags


# -- filter_known: each fact by its own candidates ------------------------------------------------
def _sports_sample() -> FactDataset:
    full = sports_facts()
    return full.subset([j for s in full.candidates for j in [i for i, r in enumerate(full) if r.answer == s][:10]])


def test_filter_known_judges_facts_with_own_candidates_by_the_top_candidate():
    """A list of records, each with the sports candidates, was judged by p(answer) > 0.5 (the dataset had
    no candidates), while format_accuracy scored the same facts among their candidates."""
    m, ds = tiny_model(), _sports_sample()
    a = filter_known(m, ds)
    b = filter_known(m, [replace(r, candidates=ds.candidates) for r in ds])
    assert b.meta["known"]["criterion"] == a.meta["known"]["criterion"] == "argmax among candidates"
    assert [r.id for r in b] == [r.id for r in a] and len(a) > 0
    assert b.meta["known"]["by_group"] == a.meta["known"]["by_group"]


def test_filter_known_with_dataset_candidates_is_unchanged():
    """FactDataset with candidates: kept facts are those whose answer wins among them, as before."""
    from factlens.data.formats import format_prompts
    from factlens.prompt_scores import score_prompts

    m, ds = tiny_model(), _sports_sample()
    s = score_prompts(m, format_prompts(ds, "default"))
    for thr in (None, 0.01):
        keep = s.answer_wins if thr is None else s.answer_wins & (s.p_answer > thr)
        k = filter_known(m, ds, p_threshold=thr)
        assert [r.id for r in k] == [r.id for r, ok in zip(ds, keep) if ok]
        assert set(k.meta["known"]["by_group"]) == {r.answer for r in ds}


def test_filter_known_records_the_criterion_per_group_when_mixed(planted):
    """Facts with candidates of their own and open-vocabulary facts in one dataset: each by its own test."""
    ov = planted.dataset.with_candidates(())
    half = len(ov) // 2
    mixed = FactDataset(tuple(replace(r, candidates=planted.dataset.candidates) if i < half else r
                              for i, r in enumerate(ov)))
    k = filter_known(planted.model, mixed)
    crit = k.meta["known"]["criterion"]
    assert isinstance(crit, dict) and set(crit.values()) == {"argmax among candidates", "p > 0.5"}
    assert {r.answer for r in list(mixed)[:half]} <= set(crit)
    assert {r.relation for r in list(mixed)[half:]} <= set(crit)


def test_the_attacks_task_scores_count_facts_not_prompts():
    """TaskScores (quantization, lens, ablation, unrelated fine-tuning, per format) tested its splits with
    the prompt count: 16 facts of 10 paraphrase-like prompts each, 11 right, passed with n = 160."""
    from factlens.evaluation.attacks import TaskScores

    forget = {f"f{i}": float(i < RIGHT) for i in range(N_FACTS)}
    maintain = {f"m{i}": 1.0 for i in range(N_FACTS)}
    s = TaskScores(forget, {}, maintain, chance={"forget": 0.5, "maintain": 0.5},
                   n_prompts={"forget": N_FACTS * PER_FACT, "maintain": N_FACTS * PER_FACT})
    flags, why = s.chance_flags()
    assert flags == {"forget": True, "maintain": False}
    assert why["forget"]["n"] == N_FACTS and why["forget"]["decided_by"] == "split chance"
