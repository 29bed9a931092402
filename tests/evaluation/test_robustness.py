"""Robustness / mechanism suites: LoRA, relearning, soft prompts, probes, mechanisms."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from factlens.testing.invariants import no_hooks, snapshot, unchanged
from factlens.components import Mask
from factlens.evaluation.config import EvalConfig
from factlens.evaluation.lora import add_lora
from factlens.evaluation.mechanisms import default_mechanisms, mechanism_counts, mechanism_table, run_mechanisms
from factlens.evaluation.probes import ProbesConfig, _cv_accuracy, _probe, run_probes
from factlens.evaluation.relearning import RelearningConfig, run_relearning, split_halves
from factlens.data.formats import format_prompts
from factlens.data.records import FactDataset, FactRecord
from factlens.evaluation.soft_prompts import (SoftPromptsConfig, _soft_logprobs, run_soft_prompts, soft_prompt_scores,
                                              train_soft_prompt)
from factlens.prompt_scores import score_prompts
from factlens.tasks import sports_athlete_editing
from factlens.testing import tiny_model
from factlens.tokens import _encode, answer_logprobs, final_logits, tokenize_prompts


@pytest.fixture(scope="module")
def unlearned(planted):
    """The planted model with the lookup neurons of the forget subjects zeroed (a perfect 'unlearning' edit)."""
    m = copy.deepcopy(planted.model)
    ids = [int(r.id) for r in planted.task.forget]  # neuron i belongs to subject i (record id i)
    with torch.no_grad():
        m.blocks[planted.lookup_layer].mlp.W_out[ids] = 0.0
    return m


# -- LoRA ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["standard", "gqa_gated"])
def test_lora_starts_as_noop_and_removes_bitwise(variant):
    m = tiny_model(variant=variant)
    snap = snapshot(m)
    batch = tokenize_prompts(m, ["LeBron James plays the sport of", "Fact: Tiger Woods plays the sport of golf"])
    before = final_logits(m, batch)
    h = add_lora(m, rank=512)
    # rank capped at the matrix view: W_Q [4, 32, 8] -> [32, 32]; grouped _W_K [2, 32, 8] -> [32, 16]
    assert h.ranks["blocks.0.attn.W_Q"] == 32
    key = "blocks.0.attn._W_K" if variant == "gqa_gated" else "blocks.0.attn.W_K"
    assert h.ranks[key] == (16 if variant == "gqa_gated" else 32)
    assert ("blocks.1.mlp.W_gate" in h.ranks) == (variant == "gqa_gated")
    assert torch.equal(final_logits(m, batch), before)  # B = 0: exact no-op
    with torch.no_grad():
        for p in h.parameters():
            p.add_(0.05)
    assert not torch.allclose(final_logits(m, batch), before)
    h.remove()
    h.remove()  # idempotent
    assert unchanged(m, snap)
    assert torch.equal(final_logits(m, batch), before)


def test_lora_bad_input():
    m = tiny_model()
    with pytest.raises(ValueError, match="rank"):
        add_lora(m, rank=0)
    with pytest.raises(ValueError, match="no parameter matches"):
        add_lora(m, rank=2, targets=["W_nonexistent"])


def test_probe_cv_accuracy_is_the_share_of_facts_predicted_right_when_held_out():
    # the interval counts accuracy * n correct facts; the mean of unequal folds' accuracies was off by one
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rng = np.random.default_rng(0)
    for n in (17, 19, 22):
        y = np.array(["a", "b", "c"])[np.arange(n) % 3]
        X = rng.normal(size=(n, 5)) + (y[:, None] == "a") * 0.7
        right = cross_val_predict(_probe(1.0, "global"), X, y, cv=StratifiedKFold(n_splits=5)) == y
        assert _cv_accuracy(X, y, 1.0, "global") * n == pytest.approx(right.sum()), n


# -- relearning -------------------------------------------------------------------------------------
def test_split_halves_seeded(planted):
    a, b = split_halves(planted.task.forget, seed=3)
    a2, b2 = split_halves(planted.task.forget, seed=3)
    assert a == a2 and b == b2 and len(a) + len(b) == len(planted.task.forget)
    with pytest.raises(ValueError, match="at least 2"):
        split_halves(planted.task.forget[:1], seed=0)


def _two_facts_per_subject(n_subjects: int, singles: int = 0) -> FactDataset:
    recs = [FactRecord(subject=f"S{i}", template=t, answer="a", candidates=("a", "b"))
            for i in range(n_subjects) for t in ("{} plays", "{} lives in")]
    recs += [FactRecord(subject=f"T{i}", template="{} plays", answer="b", candidates=("a", "b")) for i in range(singles)]
    return FactDataset(tuple(recs))


def test_split_halves_keeps_the_facts_of_a_subject_in_one_half():
    # an attack trained on "The capital of Italy" must not be scored on "The official language of Italy"
    facts = _two_facts_per_subject(6, singles=3)
    for seed in range(20):
        a, b = split_halves(facts, seed=seed)
        assert {r.subject for r in a}.isdisjoint(r.subject for r in b), seed
        assert len(a) + len(b) == len(facts) and abs(len(a) - 8) <= 2  # off by at most one group
    distinct = FactDataset(tuple(FactRecord(subject=f"S{i}", template="{} x", answer="a") for i in range(9)))
    for seed in range(5):  # one fact per subject (the sports tasks): the split is what it was
        assert split_halves(distinct, seed=seed) == distinct.split(5, seed=seed)
    with pytest.raises(ValueError, match="about one subject"):
        split_halves(_two_facts_per_subject(1), seed=0)
    # one fact about "Solo", four about "Italy" (too many for either half): still split, for every seed
    two = FactDataset(tuple(FactRecord(subject=s, template=f"{{}} has {i}", answer="a")
                            for i, s in enumerate(["Solo"] + ["Italy"] * 4)))
    assert all(len(split_halves(two, seed=seed)[1]) for seed in range(10))


def test_relearning_on_unedited_model_is_noop_in_effect(planted):
    snap = snapshot(planted.model)
    cfg = EvalConfig(relearning=RelearningConfig(steps=3, rank=8), text={"n_chunks": 4, "seq_len": 16})
    r = run_relearning(planted.model, planted.task, original=planted.model, config=cfg)
    assert r["relearn_forget_accuracy"].value == 1.0
    assert r["relearn_forget_accuracy_before"].value == 1.0
    assert r["relearn_forget_accuracy"].baseline == 1.0
    assert r["relearn_maintain_accuracy"].value == 1.0
    assert len(r.extra["history"]) == 3 and r.extra["sft"].startswith("text:")
    assert unchanged(planted.model, snap) and no_hooks(planted.model)


@pytest.mark.parametrize("both", [False, True])
def test_relearning_after_unlearning(planted, unlearned, both):
    snap = snapshot(unlearned)
    cfg = EvalConfig(relearning=RelearningConfig(steps=8, rank=8, lr=1e-2, both_halves=both),
                     text={"n_chunks": 4, "seq_len": 16})
    r = run_relearning(unlearned, planted.task, original=planted.model, config=cfg)
    names = {m.name: m for m in r.metrics}
    for m in names.values():
        assert (-1.0 if m.name == "relearn_selective_recovery" else 0.0) <= m.value <= 1.0
    assert names["relearn_forget_accuracy_before"].value == 0.0  # the unlearning worked
    assert names["relearn_forget_accuracy"].baseline == 1.0  # the original knew the facts
    # per-fact rows agree with the aggregates
    b_rows = [row for row in r.per_fact if row["half"] == "B"]
    a_rows = [row for row in r.per_fact if row["half"] == "A"]
    held = [row for row in r.per_fact if row["held_out"]]
    assert len(a_rows) + len(b_rows) == len(planted.task.forget)
    assert held == (a_rows + b_rows if both else b_rows)
    assert names["relearn_forget_accuracy"].value == pytest.approx(np.mean([x["answer_wins_after"] for x in held]))
    assert names["relearn_forget_accuracy"].n == len(held)
    assert len(r.extra["attacks"]) == r.extra["budget"]["n_attacks"] == (2 if both else 1)
    assert all(("answer_wins_after_trained" in row) == both for row in r.per_fact)
    # retraining a half brings that half back
    assert names["relearn_train_accuracy"].value > names["relearn_train_accuracy_before"].value
    assert names["relearn_train_accuracy"].n == len(planted.task.forget if both else a_rows)
    mc = r.extra["maintain_collapse"]
    assert mc["maintain_after"] == pytest.approx(names["relearn_maintain_accuracy"].value)
    assert mc["collapsed"] == (mc["maintain_after"] < mc["chance"] + 2 * np.sqrt(mc["chance"] * (1 - mc["chance"]) / mc["n"]))
    assert unchanged(unlearned, snap) and no_hooks(unlearned)


def test_relearning_flags_a_collapsed_model(planted, monkeypatch):
    """A relearned model that gives one answer to everyone (maintain accuracy at chance) is flagged."""
    from factlens.evaluation import relearning as rl
    from factlens.prompt_scores import PromptScores

    real = rl.forget_scores
    calls = []

    def one_answer(model, facts, config):  # the maintain facts after relearning: every answer wrong
        s = real(model, facts, config)
        calls.append(1)
        if len(calls) == 1:
            s = PromptScores(**{**s.__dict__, "answer_wins": np.zeros_like(s.answer_wins)})
        return s

    monkeypatch.setattr(rl, "forget_scores", one_answer)
    cfg = EvalConfig(relearning=RelearningConfig(steps=1, rank=4, both_halves=False), text={"n_chunks": 4, "seq_len": 16})
    r = run_relearning(planted.model, planted.task, original=planted.model, config=cfg)
    assert r["relearn_maintain_accuracy"].value == 0.0 and r.extra["maintain_collapse"]["collapsed"] is True
    assert r.extra["maintain_collapse"]["maintain_before"] == 1.0


def test_relearning_both_halves_extends_the_one_half_attack(planted, unlearned):
    """Cross-fitting adds the attack trained on half B; the attack trained on A is the same one."""
    cfg = EvalConfig(relearning=RelearningConfig(steps=4, rank=8, lr=1e-2, both_halves=False),
                     text={"n_chunks": 4, "seq_len": 16})
    one = run_relearning(unlearned, planted.task, original=planted.model, config=cfg)
    two = run_relearning(unlearned, planted.task, original=planted.model,
                         config=cfg.override({"relearning.both_halves": True}))
    b_one = [row for row in one.per_fact if row["half"] == "B"]
    b_two = [{k: v for k, v in row.items() if k != "answer_wins_after_trained"} for row in two.per_fact
             if row["half"] == "B"]
    assert b_one == b_two
    assert two.extra["attacks"][0]["history"] == one.extra["attacks"][0]["history"] == one.extra["history"]
    assert [a["train"] for a in two.extra["attacks"]] == ["A", "B"]
    assert two["relearn_maintain_accuracy"].value == one["relearn_maintain_accuracy"].value


# -- soft prompts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["planted", "tiny_rotary"])
def test_soft_tokens_equal_real_tokens(planted, which):
    """Soft vectors equal to real token embeddings reproduce the ordinary prompt (positions handled)."""
    m = planted.model if which == "planted" else tiny_model(variant="gqa_gated")
    ids = _encode(m, " plays the sport of")[0]
    soft = m.embed(torch.tensor(ids)[None])[0].detach()
    subj = [planted.dataset[0].subject, planted.dataset[1].subject]
    got = _soft_logprobs(m, soft, subj, ["basketball", "football golf"])
    want = answer_logprobs(m, [s + " plays the sport of" for s in subj], ["basketball", "football golf"])
    torch.testing.assert_close(got.detach(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("which", ["planted", "tiny_rotary"])
def test_prepended_soft_tokens_equal_real_tokens(planted, which):
    """position="prepend": soft vectors equal to a real prefix reproduce ``prefix + prompt``."""
    m = planted.model if which == "planted" else tiny_model(variant="gqa_gated")
    ids = _encode(m, "Fact:")[0]
    soft = m.embed(torch.tensor(ids)[None])[0].detach()
    prompts = [planted.dataset[0].subject + " plays the sport of", planted.dataset[1].subject + " plays the sport of"]
    got = _soft_logprobs(m, soft, prompts, ["basketball", "football golf"], "prepend")
    want = answer_logprobs(m, ["Fact:" + p for p in prompts], ["basketball", "football golf"])
    torch.testing.assert_close(got.detach(), want, rtol=1e-4, atol=1e-4)
    items = format_prompts(planted.task.forget, "default")
    scores = soft_prompt_scores(m, soft, items, position="prepend")
    ref = score_prompts(m, [dataclasses.replace(it, prompt="Fact:" + it.prompt) for it in items])
    np.testing.assert_allclose(scores["p_answer"], ref.p_answer_norm, rtol=1e-4)
    with pytest.raises(ValueError, match="position"):
        soft_prompt_scores(m, soft, items, position="middle")
    with pytest.raises(ValueError, match="SoftPromptsConfig.position"):
        SoftPromptsConfig(position="middle")


def test_soft_prompt_scores_match_ordinary_scoring(planted):
    """The one-forward-per-prompt candidate path agrees with score_prompts on the written-out prompt."""
    m = planted.model
    soft = m.embed(torch.tensor(_encode(m, " plays the sport of")[0])[None])[0].detach()
    items = format_prompts(planted.task.forget, "default")
    short = [dataclasses.replace(it, prompt=it.prompt.removesuffix(" plays the sport of")) for it in items]
    got = soft_prompt_scores(m, soft, short)
    want = score_prompts(m, items)
    assert np.array_equal(got["answer_wins"], want.answer_wins) and got["answer_wins"].all()
    assert np.array_equal(got["winner"], want.winner)
    np.testing.assert_allclose(got["p_answer"], want.p_answer_norm, rtol=1e-4)


def test_soft_prompts_runs_deterministic_model_unchanged(planted, unlearned):
    snap = snapshot(unlearned)
    cfg = EvalConfig(soft_prompts=SoftPromptsConfig(steps=3, seeds=2, length=3))
    r1 = run_soft_prompts(unlearned, planted.task, original=planted.model, config=cfg)
    r2 = run_soft_prompts(unlearned, planted.task, config=cfg)
    assert [s["losses"] for s in r1.extra["per_seed"]] == [s["losses"] for s in r2.extra["per_seed"]]
    assert [m.value for m in r1.metrics] == [m.value for m in r2.metrics]
    assert len(r1.extra["per_seed"]) == 2 and r1.extra["max_norm"] > 0
    m = r1["soft_prompt_forget_accuracy"]
    assert 0 <= m.value <= 1 and m.n == len(split_halves(planted.task.forget, seed=0)[1])
    assert m.baseline is not None and r2["soft_prompt_forget_accuracy"].baseline is None
    assert r1["soft_prompt_forget_accuracy_before"].value == 0.0
    assert unchanged(unlearned, snap) and no_hooks(unlearned)
    assert all(p.grad is None for p in unlearned.parameters())


def test_soft_prompt_attack_trains_and_brings_back_unlearned_facts(planted, unlearned):
    """The attack trains its prompt (not a no-op): on the planted model with the forget subjects' lookup
    neurons zeroed, 20 steps lower the loss on half A (about 5.4 -> 4.3) and the trained prompt makes
    the model answer facts of both halves that it gets wrong without it (half B: 0 -> 0.5)."""
    cfg = EvalConfig(soft_prompts=SoftPromptsConfig(steps=20, seeds=1, length=3))
    r = run_soft_prompts(unlearned, planted.task, config=cfg)
    losses = r.extra["per_seed"][0]["losses"]
    assert len(losses) == 20 and losses[-1] < 0.9 * losses[0]
    assert r["soft_prompt_forget_accuracy_before"].value == 0.0
    assert r["soft_prompt_forget_accuracy"].value > r["soft_prompt_forget_accuracy_before"].value
    assert r["soft_prompt_train_accuracy"].value > 0.0


def test_soft_prompts_flag_the_halves_the_original_does_not_know(planted):
    """at_chance: the original (no soft prompt) is not above chance on the scored half, as in relearning.
    An "original" that lost half B's facts flags the half-B metrics (forget, before, edit) but not the train
    accuracy on half A, which it still knows (4 facts of 3 candidates each: above chance needs 4 of 4)."""
    task = planted.task
    half_b = split_halves(task.forget, seed=0)[1]
    lost_b = copy.deepcopy(planted.model)
    with torch.no_grad():
        lost_b.blocks[planted.lookup_layer].mlp.W_out[[int(r.id) for r in half_b]] = 0.0
    cfg = EvalConfig(soft_prompts=SoftPromptsConfig(steps=1, seeds=1, length=3))
    r = run_soft_prompts(planted.model, task, original=lost_b, config=cfg)
    flags = {m.name: m.at_chance for m in r.metrics}
    assert flags == {"soft_prompt_forget_accuracy": True, "soft_prompt_forget_accuracy_before": True,
                     "soft_prompt_train_accuracy": False, "soft_prompt_edit_accuracy": True,
                     "soft_prompt_selective_recovery": True, "soft_prompt_control_bias": False}
    assert r["soft_prompt_forget_accuracy_before"].baseline == 0.0
    for original in (planted.model, None):  # an original that knows every fact, and none: no flags
        assert not any(m.at_chance for m in run_soft_prompts(planted.model, task, original=original,
                                                             config=cfg).metrics)


def test_soft_prompt_norm_bound(planted):
    cfg = EvalConfig(soft_prompts=SoftPromptsConfig(steps=3, length=4, lr=1.0))
    soft, losses = train_soft_prompt(planted.model, planted.task.forget, config=cfg, max_norm=0.3)
    assert soft.shape == (4, planted.model.cfg.d_model) and len(losses) == 3
    assert float(soft.norm(dim=-1).max()) <= 0.3 + 1e-5


# -- probes ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_forget_task(planted):
    return sports_athlete_editing(planted.dataset, n_forget=24, seed=0)


def test_probes_find_the_planted_attribute(planted, big_forget_task):
    snap = snapshot(planted.model)
    subj = run_probes(planted.model, big_forget_task, original=planted.model, position="subject_last")
    true = subj.extra["true"]
    assert true[0] < 0.6  # before the lookup MLP: only the subject identity
    assert all(t >= 0.9 for t in true[planted.lookup_layer:])
    final = run_probes(planted.model, big_forget_task, position="final")
    t = final.extra["true"]
    assert max(t[:2]) < 0.6 and min(t[2:]) >= 0.9  # after the extraction head (layer 2)
    assert final["probe_true_accuracy_last"].value >= 0.9
    # the unedited model never "believes" the edit target
    assert final["probe_target_accuracy_last"].value <= 0.1
    assert len(final.extra["maintain_cv"]) == planted.n_layers and len(final.per_fact) == 24
    assert subj["probe_true_accuracy_max"].baseline == subj["probe_true_accuracy_max"].value
    assert unchanged(planted.model, snap) and no_hooks(planted.model)


def test_probes_after_unlearning_and_bad_input(planted, unlearned):
    r = run_probes(unlearned, planted.task, original=planted.model, config=EvalConfig(probes=ProbesConfig(layers=(2, 3))))
    assert r.extra["layers"] == [2, 3]
    assert r["probe_true_accuracy_last"].baseline >= 0.8 and r["probe_true_accuracy_last"].value <= 0.6
    with pytest.raises(ValueError, match="out of range"):
        run_probes(planted.model, planted.task, config=EvalConfig(probes={"layers": 7}))
    with pytest.raises(ValueError, match="position"):
        run_probes(planted.model, planted.task, position="middle")


def test_probes_last_metrics_are_the_deepest_layer(planted):
    """``_last`` is the deepest probed layer whatever order ProbesConfig.layers lists (it used to be the last
    listed one: layers=(3, 0) reported layer 0, where the planted attribute is not yet written)."""
    def run(layers):
        return run_probes(planted.model, planted.task, original=planted.model, position="subject_last",
                          config=EvalConfig(probes=ProbesConfig(layers=layers)))

    ref = run((0, 3))
    for layers in ((3, 0), (3, 0, 3)):
        r = run(layers)
        assert r.extra["layers"] == [0, 3] and r.extra["true"] == ref.extra["true"] == [0.0, 1.0]
        assert r["probe_true_accuracy_last"].value == r["probe_true_accuracy_last"].baseline == 1.0
        assert [(m.name, m.value, m.baseline) for m in r.metrics] == [(m.name, m.value, m.baseline) for m in ref.metrics]


def test_probes_flag_an_original_whose_probe_reads_no_answer(planted):
    """at_chance: the original's probe accuracy is not above the majority-class share of the training facts.
    At layer 0 (subject_last) the planted attribute is not written yet: the original's probe predicts the
    majority sport (football) for every fact, true accuracy 0 of 8, cross-validated 0.45 of 40 (chance 0.4).
    The target metrics are flagged by the original's TRUE-answer accuracy: its target accuracy there is 0.875
    only because most edit targets are football."""
    def run(layers, original):
        return run_probes(planted.model, planted.task, original=original, position="subject_last",
                          config=EvalConfig(probes=ProbesConfig(layers=layers)))

    dead = run((0,), planted.model)
    assert dead.extra["chance"] == 0.4 and dead["probe_target_accuracy_last"].baseline == 0.875
    assert {m.name: m.at_chance for m in dead.metrics} == {
        "probe_true_accuracy_max": True, "probe_true_accuracy_last": True, "probe_target_accuracy_max": True,
        "probe_target_accuracy_last": True, "probe_maintain_cv_max": True}
    # the deepest layer reads every answer: nothing flagged, "max" included (best layer 3)
    assert not any(m.at_chance for m in run((0, 3), planted.model).metrics)
    assert not any(m.at_chance for m in run((0,), None).metrics)  # no original: no flags


def test_probe_target_maximum_skips_layers_where_the_original_reads_nothing(planted):
    """With layers 0 and 3, the unedited model's edit-target accuracy over layers was 0.875: layer 0's
    probe predicts the majority sport, which most edit targets are, and it was not flagged (the flag
    came from the original's best layer, 3). The maximum is now over the layers where the original's
    probe reads the true answer above chance (layer 3 here)."""
    r = run_probes(planted.model, planted.task, original=planted.model, position="subject_last",
                   config=EvalConfig(probes=ProbesConfig(layers=(0, 3))))
    t = r["probe_target_accuracy_max"]
    assert r.extra["target"][0] == 0.875  # the layer the maximum picked
    assert t.value == t.baseline == r.extra["target"][1] == r["probe_target_accuracy_last"].value
    assert not t.at_chance


def test_probe_cross_validation_leaves_out_answers_only_one_fact_has(planted):
    """One training fact of a rare answer made every layer's cross-validated accuracy NaN (a stratified
    fold needs two of each answer), and the metric was flagged "at chance" where the probes read
    every held-out answer: CounterFact's answers are mostly rare."""
    from factlens.data import FactDataset
    from factlens.evaluation.probes import probe_layers

    train = list(planted.task.maintain) + list(planted.task.retain)
    rare = dataclasses.replace(train[0], template="Known for the sport, {} plays", answer="hockey", id="rare-answer")
    out = probe_layers(planted.model, FactDataset([*train, rare]), planted.task.forget, layers=(3,),
                       position="subject_last")
    assert out["n_cv"] == len(train) and out["maintain_cv"][0] == 1.0
    r = run_probes(planted.model, dataclasses.replace(planted.task, retain=FactDataset([*planted.task.retain, rare])),
                   original=planted.model, position="subject_last", config=EvalConfig(probes=ProbesConfig(layers=(3,))))
    m = r["probe_maintain_cv_max"]
    assert m.value == 1.0 and m.n == len(train) and not m.at_chance


# -- mechanisms ---------------------------------------------------------------------------------------
def test_mechanism_table_and_suite(planted):
    mech = {"fact_lookup_mlps": Mask.from_labels(["L1.mlp"]), "extraction_heads": Mask.from_labels(["L2H1"]),
            "extraction_mlps": Mask.empty()}
    masks = {"flu": Mask.from_labels(["L1.mlp"]), "all_mlps": Mask.all_mlps(planted.model),
             "nonlocalized": Mask.everything(planted.model)}
    df = mechanism_table(masks, mech, planted.model).set_index("localization")
    assert df.loc["flu", "fact_lookup_mlps_share"] == 1.0
    assert df.loc["all_mlps", "fact_lookup_mlps_share"] == pytest.approx(0.25)
    assert df.loc["all_mlps", "extraction_heads_params"] == 0
    n_all = Mask.everything(planted.model).n_params(planted.model)
    assert df.loc["nonlocalized", "n_params"] == n_all
    assert df.loc["nonlocalized", "extraction_heads_params"] == Mask.from_labels(["L2H1"]).n_params(planted.model)
    row = df.loc["nonlocalized"]
    assert row["fact_lookup_mlps_params"] + row["extraction_heads_params"] + row["other_params"] == n_all

    class FakeWeightMask:  # the interface of factlens.editing.weight_mask results
        def counts_per_mechanism(self, threshold, mechanisms):
            return {k: 10 * i for i, k in enumerate(mechanisms)}

        def n_masked(self, threshold=None):
            return 40

    r = run_mechanisms(planted.model, planted.task, mask=masks["all_mlps"], mechanisms=mech, weight_mask=FakeWeightMask())
    assert r["fact_lookup_mlps_share"].value == pytest.approx(0.25)
    assert r["weight_mask_extraction_heads_count"].value == 10 and r["weight_mask_extraction_heads_share"].value == 0.25
    with pytest.raises(ValueError, match="mechanisms"):
        run_mechanisms(planted.model, planted.task, mask=masks["flu"])
    with pytest.raises(ValueError, match="mask="):
        run_mechanisms(planted.model, planted.task, mechanisms=mech)


def test_mechanism_counts_gqa_shared_kv_counted_once():
    m = tiny_model(variant="gqa")  # 4 heads, 2 KV groups: heads 0 and 1 share K/V
    c = mechanism_counts(Mask.from_labels(["L0H0", "L0H1"]), {"h1": Mask.from_labels(["L0H1"])}, m)
    assert c["n_params"] == Mask.from_labels(["L0H0", "L0H1"]).n_params(m)
    assert c["h1_params"] == Mask.from_labels(["L0H1"]).n_params(m)  # includes the shared K/V slice
    assert c["other_params"] == c["n_params"] - c["h1_params"]


def test_a_mechanism_named_like_a_result_key_is_refused(planted):
    """A mechanism named "other" overwrote other_params / other_share with its own count (the rest
    of the mask vanished from the table); "n" overwrote nothing but sat beside n_params, and "mask"
    gave run_mechanisms a second "mask_params" metric."""
    m, mask = planted.model, Mask.from_labels(["L0.mlp", "L1.mlp"])
    for name in ("other", "n", "mask"):
        mech = {"fact_lookup_mlps": Mask.from_labels(["L1.mlp"]), name: Mask.from_labels(["L0.mlp"])}
        with pytest.raises(ValueError, match=rf"mechanisms: the names \['{name}'\] are reserved.*rename"):
            mechanism_counts(mask, mech, m)
        with pytest.raises(ValueError, match="reserved"):
            run_mechanisms(m, mask=mask, mechanisms=mech)
        with pytest.raises(ValueError, match="reserved"):
            mechanism_table({"flu": mask}, mech, m)
    c = mechanism_counts(mask, {"other_mlps": Mask.from_labels(["L0.mlp"])}, m)  # a name that only starts so
    assert c["other_mlps_params"] == c["other_params"] == c["n_params"] // 2


def test_default_mechanisms_planted(planted):
    mech = default_mechanisms(planted.model, planted.dataset[:24], flu_scores=Mask.from_labels(["L1.mlp"]))
    assert mech["fact_lookup_mlps"].labels == ["L1.mlp"]
    assert mech["extraction_heads"].labels == [planted.extraction_head.label]
    assert planted.lookup_mlp not in mech["extraction_mlps"]


# -- real model (slow) ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gemma_task():
    from factlens.data import sports_facts

    return sports_athlete_editing(sports_facts(), n_forget=8, seed=0, n_retain=12, n_maintain=8)


@pytest.mark.slow
def test_gemma_attacks_and_probes_leave_model_unchanged(gemma, gemma_task):
    watched = ("blocks.0.attn.W_Q", "blocks.0.attn._W_K", "blocks.9.mlp.W_gate", "blocks.17.attn.W_O", "embed.W_E")
    before = {n: p.detach().clone() for n, p in gemma.named_parameters() if n in watched}
    names = [n for n, _ in gemma.named_parameters()]
    flags = [p.requires_grad for p in gemma.parameters()]
    assert set(before) == set(watched)
    # soft tokens equal to real embeddings reproduce the written-out prompt (Gemma: scaled embeddings, rotary)
    ids = _encode(gemma, " plays the sport of")[0]
    with torch.no_grad():
        soft_tokens = gemma.embed(torch.tensor(ids)[None])[0]
        subjects = ["Fact: Tiger Woods plays the sport of golf\nFact: LeBron James", "Fact: Tom Brady"]
        got = _soft_logprobs(gemma, soft_tokens, subjects, ["basketball", "football"])
    want = answer_logprobs(gemma, [s + " plays the sport of" for s in subjects], ["basketball", "football"])
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    cfg = EvalConfig(relearning=RelearningConfig(steps=1, rank=64, batch_size=4),
                     soft_prompts=SoftPromptsConfig(steps=2, seeds=1), probes=ProbesConfig(layers=(3, 9, 17)),
                     text={"n_chunks": 2, "seq_len": 32}, batch_size=16)
    rel = run_relearning(gemma, gemma_task, config=cfg)
    assert all(0.0 <= m.value <= 1.0 for m in rel.metrics)
    # rank 64 on every matrix of 18 layers: W_Q/_W_K/_W_V/W_O, W_in/W_gate/W_out
    assert rel.extra["lora_params"] > 10_000_000 and len(rel.extra["history"]) == 1
    soft = run_soft_prompts(gemma, gemma_task, config=cfg)
    assert 0.0 <= soft["soft_prompt_forget_accuracy"].value <= 1.0 and soft.extra["max_norm"] > 0
    probes = run_probes(gemma, gemma_task, config=cfg)
    assert probes.extra["layers"] == [3, 9, 17] and len(probes.extra["true"]) == 3
    assert [n for n, _ in gemma.named_parameters()] == names and no_hooks(gemma)
    assert [p.requires_grad for p in gemma.parameters()] == flags and all(p.grad is None for p in gemma.parameters())
    for n, p in gemma.named_parameters():
        if n in before:
            assert torch.equal(p, before[n]), n


def test_evaluate_passes_a_learned_weight_mask_to_mechanisms(planted):
    """evaluate(weight_mask=...) counts the learned mask's ablated weights per mechanism (Table 3)."""
    from factlens.editing.weight_mask import WeightMaskConfig, learn_weight_mask
    from factlens.evaluation import evaluate

    mask = Mask.from_labels(["L1.mlp", "L2H1"])
    wm = learn_weight_mask(planted.model, mask, planted.task,
                           config=WeightMaskConfig(steps=5, lr=0.5, n_sft_chunks=2, l_sft=0.0))
    mech = {"fact_lookup_mlps": Mask.from_labels(["L1.mlp"]), "extraction_heads": Mask.from_labels(["L2H1"])}
    res = evaluate(planted.model, planted.task, suites=["mechanisms"], mask=mask, mechanisms=mech, weight_mask=wm,
                   weight_mask_threshold=0.9, show_progress=False)
    counts = wm.counts_per_mechanism(0.9, mech)
    r = res["mechanisms"]
    assert r["weight_mask_masked"].value == wm.n_masked(0.9) > 0
    for k in mech:
        assert r[f"weight_mask_{k}_count"].value == counts[k]
    assert res.meta["weight_mask_threshold"] == 0.9


def test_probe_global_scale_ignores_a_feature_offset():
    """The global scale is the RMS of the centred features: a constant offset in one dimension (real
    residual streams have such dimensions) carries no information and must not shrink every feature;
    X.std() counted it and cost the planted probe a quarter of its accuracy."""
    from factlens.evaluation.probes import _standardizer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    shifted = X.copy()
    shifted[:, 2] += 100.0
    a, b = _standardizer("global").fit(X), _standardizer("global").fit(shifted)
    np.testing.assert_allclose(b.transform(shifted), a.transform(X), atol=1e-9)
    assert a.scale_[0] == pytest.approx(np.sqrt(((X - X.mean(0)) ** 2).mean()))


def test_probes_say_when_forget_answers_are_absent_from_training(planted):
    """Sports-Unlearning forgets one whole sport: no training fact has it, the probe can never predict it,
    and its true-answer accuracy is 0 on both models; the suite says so instead of a bare at-chance flag."""
    from factlens.tasks import sports_unlearning

    task = sports_unlearning(planted.dataset, n_forget=8)
    cfg = EvalConfig(probes=ProbesConfig(layers=(3,)))
    r = run_probes(planted.model, task, original=planted.model, config=cfg)
    assert r.extra["true_in_classes"] == 0 and "can never predict it" in r.extra["note"]
    assert "note" not in run_probes(planted.model, planted.task, original=planted.model, config=cfg).extra


def test_probes_never_train_on_the_facts_they_are_tested_on(planted):
    """train_on=("forget",) was accepted (and a hand-built task may share facts): the probes then trained on
    the very facts they scored."""
    from dataclasses import replace

    from factlens.evaluation.probes import _train_facts

    with pytest.raises(ValueError, match="never train on them"):
        run_probes(planted.model, planted.task, train_on=("forget",))
    shared = replace(planted.task, maintain=planted.task.maintain.concat(planted.task.forget))
    train = _train_facts(shared, ("maintain",))
    assert not {r.id for r in train} & {r.id for r in planted.task.forget} and len(train) == len(planted.task.maintain)


def test_probes_train_on_one_split_named_by_a_string(planted):
    """train_on="maintain" was iterated letter by letter and refused as the splits 'm', 'a', 'i', ...; one
    name is one split, as ("maintain",) is."""
    one = run_probes(planted.model, planted.task, train_on="maintain", config=EvalConfig(probes={"layers": [1]}))
    both = run_probes(planted.model, planted.task, train_on=("maintain",), config=EvalConfig(probes={"layers": [1]}))
    assert one.extra["train_on"] == ["maintain"]
    assert one["probe_true_accuracy_last"].value == both["probe_true_accuracy_last"].value


def test_forward_pass_batch_sizes_leave_the_attacks_unchanged_their_own_batch_sizes_do_not(planted, unlearned):
    """``EvalConfig.batch_size`` and ``text.batch_size`` are forward-pass sizes; the soft-prompt attack
    trained on ``batch_size`` facts per step and relearning on ``text.batch_size`` chunks per step, so
    lowering them to save memory changed the attacks (selective recovery 0.0 -> 0.5, relearned forget
    accuracy 0.50 -> 0.75 on this model). Each attack's training batch is now its own setting, recorded."""
    sp = SoftPromptsConfig(steps=5, seeds=1, length=3)
    soft = {bs: run_soft_prompts(unlearned, planted.task, config=EvalConfig(batch_size=bs, soft_prompts=sp))
            for bs in (16, 1)}
    assert soft[16].extra["per_seed"][0]["losses"] == soft[1].extra["per_seed"][0]["losses"]
    own = run_soft_prompts(unlearned, planted.task, config=EvalConfig(soft_prompts=sp.replace(batch_size=1)))
    assert own.extra["per_seed"][0]["losses"] != soft[16].extra["per_seed"][0]["losses"]
    with pytest.raises(ValueError, match="SoftPromptsConfig.lr must be > 0"):
        SoftPromptsConfig(lr=0.0)

    rc = RelearningConfig(steps=4, rank=8, lr=1e-2, both_halves=False)
    rel = {tbs: run_relearning(unlearned, planted.task, config=EvalConfig(
        relearning=rc, text={"n_chunks": 4, "seq_len": 16, "batch_size": tbs})) for tbs in (4, 1)}
    assert rel[4].extra["history"] == rel[1].extra["history"]
    own = run_relearning(unlearned, planted.task, config=EvalConfig(
        relearning=rc.replace(text_batch_size=1), text={"n_chunks": 4, "seq_len": 16}))
    assert own.extra["history"] != rel[4].extra["history"] and own.extra["budget"]["text_batch_size"] == 1


def test_soft_prompt_stderr_is_over_facts_and_the_seed_spread_is_kept_apart(planted, unlearned):
    """The metrics' stderr was the spread over soft-prompt seeds (0.0 beside an interval over facts of
    [0.21, 1.00] when the seeds agreed); it is over facts now, as the interval, and the seeds'
    spread is ``extra["seed_stderr"]``."""
    cfg = EvalConfig(soft_prompts=SoftPromptsConfig(steps=2, seeds=2, length=3))
    r = run_soft_prompts(unlearned, planted.task, config=cfg)
    m = r["soft_prompt_forget_accuracy"]
    x = np.array(list(m.samples.values()))
    assert m.stderr == pytest.approx(x.std(ddof=1) / np.sqrt(len(x)))
    accs = [s["forget_accuracy"] for s in r.extra["per_seed"]]
    assert r.extra["seed_stderr"]["soft_prompt_forget_accuracy"] == pytest.approx(np.std(accs, ddof=1) / np.sqrt(2))
    assert r.extra["batch_size"] == 16


def test_training_attacks_give_the_same_numbers_under_inference_mode(planted, unlearned):
    """A notebook's evaluation block under torch.inference_mode(): torch.enable_grad() alone does not
    leave it, and the relearning and soft-prompt attacks failed ("Inference tensors cannot be saved
    for backward", "element 0 of tensors does not require grad"); edit() already ran there."""
    cfg = EvalConfig(relearning=RelearningConfig(steps=3, rank=4, lr=1e-2, both_halves=False),
                     soft_prompts=SoftPromptsConfig(steps=3, seeds=1, length=3), text={"n_chunks": 2, "seq_len": 16})
    for run in (run_relearning, run_soft_prompts):
        plain = run(unlearned, planted.task, original=planted.model, config=cfg)
        with torch.inference_mode():
            inside = run(unlearned, planted.task, original=planted.model, config=cfg)
        assert [(m.name, m.value) for m in inside.metrics] == [(m.name, m.value) for m in plain.metrics]


def test_a_blind_layer_does_not_read_removed_facts_as_latent(planted):
    """10 football facts truly removed (their lookup neurons zeroed), probes trained on facts whose
    majority answer is football: layer 0 carries no sport and says football to everyone, so the
    true-answer maximum over layers read 1.0 ("still latent") at it, unflagged, because the bar
    was the training facts' majority share (0.375). The bar is now what a blind probe scores on
    these facts, and the maxima skip layers where the unedited model's probe does not beat it."""
    import collections

    from factlens.evaluation.probes import blind_chance
    from factlens.tasks import Task
    from factlens.testing import planted_fact_model

    p = planted_fact_model(n_subjects=48)
    football = p.dataset.filter(lambda r: r.answer == "football")
    forget = football.split(10, seed=0)[0]
    fid = {r.id for r in forget}
    rest, seen, keep = p.dataset.filter(lambda r: r.id not in fid), collections.Counter(), set()
    for r in rest:
        if r.answer == "football" or seen[r.answer] < 5:
            keep.add(r.id)
            seen[r.answer] += 1
    maintain, retain = rest.filter(lambda r: r.id in keep).split(8, seed=1)
    mixed = forget.concat(rest.filter(lambda r: r.id not in keep))  # forget facts of every sport
    edited = copy.deepcopy(p.model)
    index = {s: i for i, s in enumerate(p.subjects)}
    with torch.no_grad():
        for r in mixed:
            edited.blocks[1].mlp.W_in[:, index[r.subject]] = 0
            edited.blocks[1].mlp.b_in[index[r.subject]] = -1
    one_answer = run_probes(edited, Task("custom", "unlearn", forget, retain, maintain), original=p.model,
                            position="subject_last")
    m = one_answer["probe_true_accuracy_max"]
    assert one_answer.extra["forget_chance"] == 1.0 and m.at_chance  # all football: a blind probe is right on all
    task = Task("custom", "unlearn", mixed, retain, maintain)
    r = run_probes(edited, task, original=p.model, position="subject_last")
    chance = blind_chance([x.answer for x in mixed], r.extra["classes"])
    assert r.extra["forget_chance"] == chance < 1.0
    blind = [j for j, a in enumerate(r.extra["baseline"]["true"]) if a <= chance]
    assert blind == [0]  # layer 0 reads no sport on the unedited model either: left out of the maximum
    assert r["probe_true_accuracy_max"].value == max(a for j, a in enumerate(r.extra["true"]) if j not in blind)


def test_the_best_cross_validated_layer_gets_the_interval_of_a_maximum(planted):
    """The best of the layers' cross-validated accuracies got one layer's Wilson interval and a
    2-standard-error chance bar; noise over 12 layers read above chance in 17 of 40 draws."""
    from factlens.stats import max_wilson_interval

    r = run_probes(planted.model, planted.task, original=planted.model, position="subject_last")
    m = r["probe_maintain_cv_max"]
    ks = [round(a * m.n) for a in r.extra["maintain_cv"]]
    assert m.ci_method == "wilson-max" and (m.ci_low, m.ci_high) == pytest.approx(max_wilson_interval(ks, m.n))


def test_probe_cross_validation_keeps_a_subjects_facts_in_one_fold():
    """Two templates of one subject have the same activations at its last token; the folds split
    facts, so a probe memorised the subject in one fold and read it back in the other: 0.67
    cross-validated at layer 0, which carries no sport (0.08 on new subjects)."""
    from factlens.data.records import FactDataset, FactRecord
    from factlens.evaluation.probes import probe_layers
    from factlens.testing import planted_fact_model

    p = planted_fact_model(n_subjects=48)
    recs = []
    for r in list(p.dataset)[:36]:
        recs += [r, FactRecord(subject=r.subject, template="{} is a professional", answer=r.answer, relation="sport",
                               id=r.id + "b")]
    train = FactDataset(tuple(recs), name="two_templates", candidates=p.dataset.candidates)
    test = FactDataset(tuple(list(p.dataset)[36:]), name="new_subjects", candidates=p.dataset.candidates)
    out = probe_layers(p.model, train, test, layers=[0], position="subject_last")
    assert out["true"][0] < 0.2  # layer 0 reads no sport of a new subject
    assert out["maintain_cv"][0] < out["cv_chance"] + 0.15  # nor, now, of a held-out subject (was 0.67)


def test_grouped_cross_validation_leaves_out_an_answer_only_one_subject_has():
    """Keeping a subject's facts in one fold, an answer whose two facts are one subject's had a
    single group: every layer's cross-validated accuracy became NaN (what leaving out answers of
    one fact was for)."""
    from factlens.data.records import FactDataset, FactRecord
    from factlens.evaluation.probes import probe_layers
    from factlens.testing import planted_fact_model

    p = planted_fact_model(n_subjects=48)
    base = list(p.dataset)[:30]
    twin = FactRecord(subject=base[0].subject, template="{} is a professional", answer="hockey", relation="sport",
                      id="twin-a")
    twin2 = dataclasses.replace(twin, template="Known for the sport, {} plays", id="twin-b")
    train = FactDataset((*base, twin, twin2), name="t", candidates=p.dataset.candidates)
    out = probe_layers(p.model, train, FactDataset(tuple(list(p.dataset)[30:]), name="u", candidates=p.dataset.candidates),
                       layers=[3], position="subject_last")
    assert out["n_cv"] == len(base) and out["maintain_cv"][0] > 0.9  # hockey (one subject) left out, not NaN
