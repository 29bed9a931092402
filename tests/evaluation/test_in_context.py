"""The in-context relearning attack (``in_context``): prompts, shot order, selectivity wiring and checks."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest

from factlens.data.formats import FormattedPrompt, format_prompts
from factlens.evaluation import EvalConfig, evaluate
from factlens.evaluation.in_context import InContextConfig, run_in_context, shot_order, with_shots
from factlens.prompt_scores import PromptScores
from factlens.testing.invariants import assert_unchanged, no_hooks, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def test_shots_are_solved_lines_before_the_last_line_of_the_prompt():
    sports = FormattedPrompt("Fact: Tiger Woods plays the sport of golf\nFact: X plays the sport of", "tennis", "golf",
                             ("tennis", "golf"), "x", "default", (47, 48))
    shot = FormattedPrompt("Fact: Tiger Woods plays the sport of golf\nFact: Y plays the sport of", "golf", None,
                           ("tennis", "golf"), "y", "default")
    one_line = FormattedPrompt("The capital of Italy is", "Rome", "Paris", ("Rome", "Paris"), "it", "default")
    fr = FormattedPrompt("The capital of France is", "Paris", None, ("Rome", "Paris"), "fr", "default")
    q = with_shots(sports, [shot, shot])
    assert q.prompt == ("Fact: Tiger Woods plays the sport of golf\nFact: Y plays the sport of golf\n"
                        "Fact: Y plays the sport of golf\nFact: X plays the sport of")
    assert (q.answer, q.target, q.candidates, q.record_id, q.format, q.subject_span) == (
        "tennis", "golf", ("tennis", "golf"), "x", "in_context", None)  # the old span no longer points at X
    assert with_shots(one_line, [fr]).prompt == "The capital of France is Paris\nThe capital of Italy is"
    assert with_shots(one_line, []).prompt == one_line.prompt


def test_shot_order_is_seeded_per_fact_skips_its_subject_and_ignores_the_pool_order(planted):
    items = format_prompts(planted.task.forget)
    subject = {r.id: r.subject for r in planted.task.forget}
    subject[items[1].record_id] = subject[items[0].record_id]  # a second fact about item 0's subject
    order = shot_order(items[0], items, subject, seed=0, source="forget")
    ids = [s.record_id for s in order]
    assert len(ids) == len(items) - 2 and items[0].record_id not in ids and items[1].record_id not in ids
    assert [s.record_id for s in shot_order(items[0], items[::-1], subject, seed=0, source="forget")] == ids
    others = [[s.record_id for s in shot_order(items[0], items, subject, seed=seed, source=src)]
              for seed, src in ((1, "forget"), (0, "retain"))]
    assert all(sorted(o) == sorted(ids) for o in others) and any(o != ids for o in others)


def _fake_scores(say):
    """A stand-in for ``score_items``: the "model" answers ``say(model, item)`` among the candidates."""
    def score_items(model, items, config):
        said = [say(model, it) for it in items]
        winner = np.array([it.candidates.index(s) for it, s in zip(items, said)])
        wins = np.array([s == it.answer for it, s in zip(items, said)])
        target = np.array([it.target is not None and s == it.target for it, s in zip(items, said)])
        z = np.zeros(len(items))
        return PromptScores(tuple(items), z, z, wins, target, wins.astype(float), target.astype(float), winner)
    return score_items


def _last_shot_answer(prompt: str) -> str | None:
    lines = prompt.split("\n")
    return lines[-2].rsplit(" ", 1)[1]


def test_a_suppressed_fact_comes_back_and_a_copying_context_recovers_nothing(planted, monkeypatch):
    """Two stand-in edited models: one whose edit gives way to any solved example (the true answer
    comes back, the controls keep theirs) and one that copies the last shot's answer (its "recovery"
    is bias). The selective recovery tells them apart exactly; the unedited model answers truly."""
    task, forget = planted.task, {r.id for r in planted.task.forget}
    edited, copier, original = object(), object(), object()

    def say(model, it):
        shots = it.format == "in_context"  # every in-context prompt has at least one shot
        if model is copier and shots:
            return _last_shot_answer(it.prompt)  # to every fact, forget, maintain and control alike
        if model is original or it.record_id not in forget:
            return it.answer
        return it.answer if model is edited and shots else it.target

    monkeypatch.setattr("factlens.evaluation.standard.score_items", _fake_scores(say))
    cfg = InContextConfig(n_shots=(1, 3), sources=("forget",))
    r = run_in_context(edited, task, original=original, in_context_config=cfg)
    for k in (1, 3):
        pre = f"in_context_forget_{k}"
        assert r[f"{pre}_forget_accuracy"].value == 1.0 and r[f"{pre}_forget_recovery"].value == 1.0
        assert r[f"{pre}_selective_recovery"].value == 1.0 and r[f"{pre}_control_bias"].value == 0.0
        assert r[f"{pre}_edit_accuracy"].value == 0.0 and r[f"{pre}_maintain_accuracy"].value == 1.0
        assert r[f"{pre}_forget_accuracy"].baseline == 1.0  # the unedited model asked the same prompts
    assert r.extra["damaged"] == []
    c = run_in_context(copier, task, original=original, in_context_config=cfg)
    for k in (1, 3):
        pre = f"in_context_forget_{k}"
        sel = c[f"{pre}_selective_recovery"]
        assert sel.value == 0.0 and set(sel.samples.values()) == {0.0}  # every win is matched by its controls
        assert c[f"{pre}_control_bias"].value == c[f"{pre}_forget_accuracy"].value > 0
        assert c[f"{pre}_maintain_accuracy"].value < 1
        # a copier recovers only facts whose answer a shot showed; the recall above is split as shown
        back = c.extra["variants"][pre]["recovered"]
        assert back["answer_not_shown"] == 0 and back["answer_shown"] == round(c[f"{pre}_forget_accuracy"].value *
                                                                                len(task.forget))
        rows = {row["record_id"]: row for row in r.per_fact}
        split = r.extra["variants"][pre]["recovered"]
        assert split["removed"] == back["removed"] == len(forget)  # the stand-in edit removed every forget fact
        assert split["answer_shown"] == sum(rows[rid][f"{pre}_answer_shown"] for rid in forget) \
            == split["forget_facts_answer_shown"] and split["answer_not_shown"] == len(forget) - split["answer_shown"]
    shots = c.extra["shots"]["forget"]
    assert all(len(v) == 3 for v in shots.values())  # the 1-shot variant showed the first of these


def test_on_the_planted_model_nothing_changes_and_a_context_that_breaks_the_original_is_flagged(planted):
    """The planted model's extraction head reads fixed positions, so solved lines before the prompt
    break the unedited model too: the damage flags say so instead of calling it recovery."""
    edited, original = copy.deepcopy(planted.model), planted.model
    before = {m: snapshot(m) for m in (edited, original)}
    r = run_in_context(edited, planted.task, original=original,
                       in_context_config=InContextConfig(n_shots=(2,), sources=("retain",)))
    for m, snap in before.items():
        assert_unchanged(m, snap)
        assert no_hooks(m)
    v = r.extra["variants"]["in_context_retain_2"]
    assert v["attack_damage"]["damaged"] and r.extra["damaged"] == ["in_context_retain_2"]
    assert v["example_prompt"].count("\n") == 2 and v["n_prompts"] >= len(planted.task.forget) + len(planted.task.maintain)
    row = next(x for x in r.per_fact if x["split"] == "forget")
    assert {"answer_wins_before", "in_context_retain_2_answer_wins",
            "baseline_in_context_retain_2_answer_wins"} <= set(row)
    json.dumps(r.extra)


def test_too_few_facts_for_the_shots_are_refused_before_scoring(planted, monkeypatch):
    def never(*a, **k):
        raise AssertionError("scored before the sizes were checked")

    monkeypatch.setattr("factlens.evaluation.standard.score_items", never)
    with pytest.raises(ValueError, match=r"fewer than 8 forget facts to show as shots .* n_shots=\[7\]"):
        run_in_context(planted.model, planted.task, in_context_config=InContextConfig(n_shots=(8,), sources=("forget",)))


@pytest.mark.parametrize("bad, match", [({"n_shots": [0]}, "distinct integers >= 1"),
                                        ({"n_shots": [2, 2]}, "distinct integers"),
                                        ({"n_shots": []}, "distinct integers"),
                                        ({"sources": ["maintain"]}, "subset of"),
                                        ({"damage_tolerance": 2.0}, r"in \[0, 1\]")])
def test_bad_settings_are_refused_with_what_to_write(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        InContextConfig(**bad)


def test_evaluate_reads_the_settings_from_other_suites(planted):
    cfg = EvalConfig(other_suites={"in_context": {"n_shots": [1], "sources": ["retain"]}})
    res = evaluate(planted.model, planted.task, suites=["in_context"], config=cfg, original=planted.model)
    names = [m.name for m in res.suites["in_context"].metrics]
    assert names[0] == "in_context_retain_1_forget_accuracy" and "in_context_retain_1_selective_recovery" in names
    assert res.meta["config"]["other_suites"]["in_context"]["n_shots"] == [1]


def test_the_shot_curves_draw_each_localization_and_the_unedited_model(planted):
    from factlens.evaluation.plots import in_context_curves

    cfg = InContextConfig(n_shots=(1, 2), sources=("retain",))
    edited = copy.deepcopy(planted.model)
    r = {"a": run_in_context(edited, planted.task, original=planted.model, in_context_config=cfg),
         "b": run_in_context(planted.model, planted.task, original=planted.model, in_context_config=cfg)}
    fig = in_context_curves(r, source="retain")
    names = [t.name for t in fig.data]
    assert names == ["a: forget accuracy", "a: selective recovery", "unedited model", "b: forget accuracy",
                     "b: selective recovery"]
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[2].y) == [r["a"]["in_context_retain_1_forget_accuracy"].baseline,
                                                                     r["a"]["in_context_retain_2_forget_accuracy"].baseline]
    with pytest.raises(ValueError, match="no 'in_context' suite with shots from 'forget'"):
        in_context_curves(r, source="forget")
    assert "own answer" not in fig.layout.title.text
    other = run_in_context(edited, planted.task, original=planted.model,
                           in_context_config=InContextConfig(n_shots=(1,), sources=("retain",), shot_answers="other"))
    assert "(no shot with the fact's own answer)" in in_context_curves({"a": other}, source="retain").layout.title.text


def test_the_unedited_models_scores_round_trip_through_the_workers_store(planted, tmp_path):
    """With several workers the original's in-context scores are shared through a BaselineStore (JSON +
    safetensors): they must come back equal, or a second worker would fail or read other numbers."""
    from factlens.evaluation import BaselineCache, BaselineStore

    store = BaselineStore(tmp_path)
    cfg = InContextConfig(n_shots=(2,), sources=("retain",))
    edited = copy.deepcopy(planted.model)
    first = run_in_context(edited, planted.task, original=planted.model, in_context_config=cfg,
                           baselines=BaselineCache(store=store))
    again = run_in_context(edited, planted.task, original=planted.model, in_context_config=cfg,
                           baselines=BaselineCache(store=store))
    assert [(m.name, m.value, m.baseline) for m in first.metrics] == [(m.name, m.value, m.baseline)
                                                                      for m in again.metrics]
    assert any(tmp_path.rglob("*.json"))


def test_a_source_with_no_fact_to_show_is_refused_with_advice_that_works(planted):
    # the advice was "n_shots=[1]" even when a fact had no fact of that source to show at all,
    # which fails the same way
    task = dataclasses.replace(planted.task, retain=planted.task.retain.subset([]))
    with pytest.raises(ValueError, match=r"has 0\b.*drop the 'retain' source") as e:
        run_in_context(planted.model, task, in_context_config=InContextConfig(n_shots=(2,), sources=("retain",)))
    assert "n_shots=[" not in str(e.value)


def _two_relations(task):
    """``task`` with every other fact of each split under a second relation."""
    def split(ds):
        return dataclasses.replace(ds, records=tuple(dataclasses.replace(r, relation="P2") if i % 2 else r
                                                     for i, r in enumerate(ds.records)))
    return dataclasses.replace(task, forget=split(task.forget), retain=split(task.retain),
                               maintain=split(task.maintain))


def test_shots_of_the_asked_facts_relation_come_first_and_one_relation_keeps_the_old_order(planted):
    task = _two_relations(planted.task)
    relation = {r.id: r.relation for ds in (task.forget, task.retain, task.maintain) for r in ds}
    subject = {r.id: r.subject for ds in (task.forget, task.retain, task.maintain) for r in ds}
    pool = format_prompts(task.forget, "default", seed=0)
    item = pool[0]
    kw = dict(seed=0, source="forget")
    anyrel = shot_order(item, pool, subject, **kw, relation=relation, shot_relation="any")
    first = shot_order(item, pool, subject, **kw, relation=relation, shot_relation="prefer_same")
    only = shot_order(item, pool, subject, **kw, relation=relation, shot_relation="same")
    mine = relation[item.record_id]
    n_same = sum(relation[s.record_id] == mine for s in anyrel)
    assert 0 < n_same < len(anyrel)
    assert [relation[s.record_id] for s in first[:n_same]] == [mine] * n_same
    assert [s.record_id for s in only] == [s.record_id for s in first[:n_same]] \
        == [s.record_id for s in anyrel if relation[s.record_id] == mine]  # the seeded order within the relation
    # a task of one relation (the sports tasks): the order is the one without relations
    one = {rid: "sport" for rid in relation}
    assert shot_order(item, pool, subject, **kw, relation=one) == shot_order(item, pool, subject, **kw)


def test_shots_of_one_relation_only_refuse_a_fact_with_too_few_and_say_how_to_widen(planted):
    task = _two_relations(planted.task)
    n_forget = len(task.forget)
    st = InContextConfig(n_shots=(n_forget // 2 + 1,), sources=("forget",), shot_relation="same")
    with pytest.raises(ValueError, match=r"nor with one of another relation.*shot_relation='prefer_same'"):
        st.check_task(task)
    InContextConfig(n_shots=(n_forget // 2 + 1,), sources=("forget",)).check_task(task)  # others follow: enough
    with pytest.raises(ValueError, match="shot_relation must be one of"):
        InContextConfig(shot_relation="similar")


def test_shots_with_the_asked_facts_own_answer_can_be_left_out(planted):
    """On open-vocabulary tasks a shot with the fact's own answer lets the model copy it; the
    selectivity controls need candidate sets, so ``shot_answers="other"`` removes the channel."""
    subject = {r.id: r.subject for ds in (planted.task.forget, planted.task.retain) for r in ds}
    pool = format_prompts(planted.task.forget, "default", seed=0)
    item = pool[0]
    every = shot_order(item, pool, subject, seed=0, source="forget")
    other = shot_order(item, pool, subject, seed=0, source="forget", shot_answers="other")
    assert any(s.answer == item.answer for s in every)
    assert other == [s for s in every if s.answer != item.answer]  # the same seeded order, minus the copies
    one_answer = dataclasses.replace(planted.task, forget=planted.task.forget.filter(
        lambda r: r.answer == planted.task.forget[0].answer))
    with pytest.raises(ValueError, match=r"has 0; .*nor with one of its own answer\); drop the 'forget' source.*"
                                         r"shot_answers='any'"):
        InContextConfig(n_shots=(1,), sources=("forget",), shot_answers="other").check_task(one_answer)
    with pytest.raises(ValueError, match="shot_answers must be one of"):
        InContextConfig(shot_answers="different")
