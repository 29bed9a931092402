"""Selective recovery: relearned forget accuracy net of the attack's bias towards the forget answers."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from factlens.comparison import compare
from factlens.data.formats import FormattedPrompt, format_prompts
from factlens.evaluation.config import EvalConfig
from factlens.evaluation.relearning import RelearningConfig, run_relearning
from factlens.evaluation.result import EvalResult
from factlens.evaluation.relearning import split_halves
from factlens.evaluation.selectivity import Selectivity, deal_controls, mean_selectivity, selectivity, selectivity_of
from factlens.evaluation.soft_prompts import SoftPromptsConfig, run_soft_prompts
from factlens.prompt_scores import PromptScores, score_prompts
from factlens.testing.invariants import no_hooks, snapshot, unchanged

SPORTS = ("basketball", "baseball", "football")


def _scores(rows: list[tuple[str, str, str]]) -> PromptScores:
    """Scores of prompts ``(record_id, answer, said)``: the model answers ``said`` among SPORTS."""
    items = tuple(FormattedPrompt(f"{rid} plays", y, None, SPORTS, rid, "default") for rid, y, _ in rows)
    win = np.array([SPORTS.index(said) for _, _, said in rows])
    aw = np.array([said == y for _, y, said in rows])
    nan = np.full(len(rows), np.nan)
    return PromptScores(items, nan, nan, aw, np.zeros(len(rows), bool), aw.astype(float), nan, win)


def _basketball_model(planted):
    """The planted model with a large unembedding bias towards "basketball": it says basketball to everyone."""
    m = copy.deepcopy(planted.model)
    tok = int(m.to_tokens(" basketball", prepend_bos=False)[0, 0])
    with torch.no_grad():
        m.b_U[tok] += 50.0
    return m


def test_deal_controls_gives_each_fact_its_own_controls():
    maintain = _scores([(f"m{i}", SPORTS[1 + i % 2], SPORTS[1 + i % 2]) for i in range(6)]).items
    c = deal_controls([(f"f{i}", "basketball") for i in range(3)], maintain, seed=0)
    assert sorted(len(v) for v in c.values()) == [2, 2, 2]
    assert sorted(u for v in c.values() for u in v) == [f"m{i}" for i in range(6)]  # each control used once
    assert c == deal_controls([(f"f{i}", "basketball") for i in range(3)][::-1], maintain, seed=0)  # order-free
    # more facts than controls: every fact still gets one (shared); a control never has the fact's answer
    c = deal_controls([(f"f{i}", "baseball") for i in range(5)], maintain, seed=1)
    assert all(len(v) == 1 and int(v[0][1:]) % 2 == 1 for v in c.values())  # the football players only


def test_selectivity_separates_recovery_from_bias():
    held = _scores([("f0", "basketball", "basketball"), ("f1", "basketball", "basketball"),
                    ("f2", "basketball", "baseball"), ("f3", "basketball", "basketball")])
    maintain = [(f"m{i}", SPORTS[1 + i % 2]) for i in range(8)]
    honest = _scores([(rid, y, y) for rid, y in maintain])  # the controls keep their sports
    biased = _scores([(rid, y, "basketball") for rid, y in maintain])  # everyone is a basketball player
    half = _scores([(rid, y, "basketball" if i < 4 else y) for i, (rid, y) in enumerate(maintain)])
    s = selectivity(held, ["A"] * 4, {"A": honest})
    assert s.recovery == {"f0": 1.0, "f1": 1.0, "f2": 0.0, "f3": 1.0} and set(s.bias.values()) == {0.0}
    s = selectivity(held, ["A"] * 4, {"A": biased})
    assert s.value == pytest.approx(-0.25) and set(s.bias.values()) == {1.0}
    s = selectivity(held, ["A"] * 4, {"A": half})
    assert np.mean(list(s.bias.values())) == pytest.approx(0.5)  # 8 controls, 2 per fact, each used once
    assert s.value == pytest.approx(0.75 - 0.5)
    # each fact is scored against the attack that held it out
    s = selectivity(held, ["A", "A", "B", "B"], {"A": honest, "B": biased})
    assert s.bias == {"f0": 0.0, "f1": 0.0, "f2": 1.0, "f3": 1.0}


def test_selectivity_bad_input():
    held = _scores([("f0", "basketball", "basketball")])
    with pytest.raises(ValueError, match="attack_of has 2 entries"):
        selectivity(held, ["A", "B"], {"A": held})
    with pytest.raises(ValueError, match="no control scores for the attacks"):
        selectivity(held, ["B"], {"A": held})
    twice = _scores([("f0", "basketball", "basketball")] * 2)
    with pytest.raises(ValueError, match="one prompt per held-out fact"):
        selectivity(twice, ["A", "A"], {"A": held})
    only_basketball = _scores([("m0", "basketball", "basketball")])
    assert selectivity(held, ["A"], {"A": only_basketball}) is None  # no control: no metric


def test_relearning_reports_selective_recovery_of_a_biased_model(planted):
    """A model that says basketball to everyone 'relearns' the basketball players; net of its bias it recovers nothing."""
    biased = _basketball_model(planted)
    snap = snapshot(biased)
    cfg = EvalConfig(relearning=RelearningConfig(steps=0, rank=4), text={"n_chunks": 4, "seq_len": 16})
    r = run_relearning(biased, planted.task, original=planted.model, config=cfg)
    acc, sel, bias = r["relearn_forget_accuracy"], r["relearn_selective_recovery"], r["relearn_control_bias"]
    n_basketball = sum(x.answer == "basketball" for x in planted.task.forget)
    assert n_basketball > 0 and acc.value == pytest.approx(n_basketball / len(planted.task.forget))
    assert sel.value == 0.0 and set(sel.samples.values()) == {0.0}
    assert sel.baseline == 1.0 and bias.baseline == 0.0  # the original knows every fact and biases no control
    answers = {x.id: x.answer for x in planted.task.forget}
    assert bias.samples == {rid: float(y == "basketball") for rid, y in answers.items()}
    assert sel.n == bias.n == len(planted.task.forget)
    controls = r.extra["selectivity"]["controls"]
    maintain = {x.id: x.answer for x in planted.task.maintain}
    assert all(maintain[u] != answers[rid] for rid, us in controls.items() for u in us)
    assert unchanged(biased, snap) and no_hooks(biased)


def test_compare_pairs_selective_recovery_fact_by_fact(planted):
    """The honest planted model against the biased one: equal-ish relearned accuracy on basketball players,
    but compare sees the selective recovery differ on every fact."""
    cfg = EvalConfig(relearning=RelearningConfig(steps=0, rank=4), text={"n_chunks": 4, "seq_len": 16})
    runs = {name: [EvalResult(suites={"relearning": run_relearning(m, planted.task, original=planted.model, config=cfg)})]
            for name, m in (("honest", planted.model), ("biased", _basketball_model(planted)))}
    df = compare(runs, reference="honest", metrics=["relearn_selective_recovery"])
    row = df.set_index("metric").loc["relearn_selective_recovery"]
    assert row["diff"] == pytest.approx(-1.0) and row["n_facts"] == len(planted.task.forget)


def test_selectivity_of_plain_predictions_matches_selectivity():
    held = _scores([("f0", "basketball", "basketball"), ("f1", "baseball", "football"), ("f2", "football", "football")])
    maintain = _scores([(f"m{i}", SPORTS[i % 3], SPORTS[(i + 1) % 3]) for i in range(9)])  # every control wrong
    want = selectivity(held, ["A"] * 3, {"A": maintain}, seed=3)
    said = {"A": dict(zip((u.record_id for u in maintain.items), maintain.predicted()))}
    assert selectivity_of(held.items, held.answer_wins, ["A"] * 3, said, maintain.items, seed=3) == want
    with pytest.raises(ValueError, match="wins 2 for 3 held-out"):
        selectivity_of(held.items, held.answer_wins[:2], ["A"] * 3, said, maintain.items, seed=3)
    with pytest.raises(ValueError, match="no control predictions"):
        selectivity_of(held.items, held.answer_wins, ["B"] * 3, said, maintain.items, seed=3)


def test_mean_selectivity_averages_fact_by_fact():
    a = Selectivity({"f": 1.0, "g": 0.0}, {"f": 0.0, "g": 1.0}, {"f": ("m",), "g": ("n",)})
    b = Selectivity({"f": 0.5, "g": 1.0}, {"f": 0.5, "g": 0.0}, {"f": ("m",), "g": ("n",)})
    m = mean_selectivity([a, b])
    assert m.recovery == {"f": 0.75, "g": 0.5} and m.bias == {"f": 0.25, "g": 0.5} and m.value == 0.625
    with pytest.raises(ValueError, match="same facts and controls"):
        mean_selectivity([a, Selectivity({"f": 1.0}, {"f": 0.0}, {"f": ("x",)})])
    with pytest.raises(ValueError, match="at least one"):
        mean_selectivity([])


def test_soft_prompts_report_selective_recovery_of_a_biased_model(planted):
    """A soft prompt on a model that says basketball to everyone 'recovers' the held-out basketball players;
    net of what it gives their controls it recovers nothing, on every fact and every seed."""
    biased = _basketball_model(planted)
    snap = snapshot(biased)
    cfg = EvalConfig(soft_prompts=SoftPromptsConfig(steps=2, seeds=2, length=3))
    r = run_soft_prompts(biased, planted.task, original=planted.model, config=cfg)
    half_b = split_halves(planted.task.forget, seed=0)[1]
    is_b = {x.id: float(x.answer == "basketball") for x in half_b}
    assert 0 < sum(is_b.values()) < len(half_b)  # the held-out half has basketball players and others
    acc, sel, bias = r["soft_prompt_forget_accuracy"], r["soft_prompt_selective_recovery"], r["soft_prompt_control_bias"]
    assert acc.samples == is_b
    assert sel.samples == dict.fromkeys(is_b, 0.0) and bias.samples == is_b
    assert sel.n == bias.n == len(half_b) and sel.baseline is not None and not sel.higher_is_better
    rows = {row["record_id"]: row for row in r.per_fact if row["half"] == "B"}
    assert {k: rows[k]["selective_recovery"] for k in is_b} == sel.samples
    maintain = {x.id: x.answer for x in planted.task.maintain}
    answers = {x.id: x.answer for x in half_b}
    controls = r.extra["selectivity"]["controls"]
    assert set(controls) == set(is_b) and all(maintain[u] != answers[f] for f, us in controls.items() for u in us)
    assert unchanged(biased, snap) and no_hooks(biased)


def test_soft_prompts_without_maintain_facts_have_no_selectivity(planted):
    task = dataclasses.replace(planted.task, maintain=planted.task.maintain.subset([]))
    r = run_soft_prompts(planted.model, task, config=EvalConfig(soft_prompts=SoftPromptsConfig(steps=1, seeds=1)))
    assert "soft_prompt_selective_recovery" not in {m.name for m in r.metrics}
    assert "no held-out fact has a control" in r.extra["selectivity"]["note"]
