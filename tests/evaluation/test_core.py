"""Evaluation entry point and the standard / formats / side-effects suites (tiny and planted models)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from factlens.data import counterfact, sports_facts
from factlens.data.formats import format_prompts
from factlens.data.known import prompt_chance
from factlens.data.mmlu import MMLUQuestion, load_mmlu, mmlu_accuracy, mmlu_prompt
from factlens.editing import EditConfig
from factlens.evaluation import SUITES, EvalConfig, EvalResult, evaluate, suite_function
from factlens.evaluation.formats import FormatsConfig, run_formats
from factlens.evaluation.side_effects import SideEffectsConfig, run_side_effects
from factlens.evaluation.standard import chance_flags, not_above_chance, run_standard, tally
from factlens.prompt_scores import score_prompts
from factlens.tasks import counterfact_editing, sports_athlete_editing, sports_unlearning
from factlens.testing import tiny_model
from factlens.testing.invariants import assert_unchanged, snapshot

FAST_TEXT = EvalConfig(text={"n_chunks": 3, "seq_len": 16})


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edited(planted):
    """A copy of the planted model whose lookup MLP maps every forget subject to its edit target."""
    m = copy.deepcopy(planted.model)
    attr = planted.layout["attr"]
    with torch.no_grad():
        W_out = m.blocks[planted.lookup_layer].mlp.W_out
        for r in planted.task.forget:
            i = int(r.id)  # planted ids are subject indices = lookup neuron indices
            W_out[i, attr[r.answer]] -= 2.0
            W_out[i, attr[r.target_new]] += 2.0
    return m


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


# --- config -----------------------------------------------------------------------------------


def test_eval_config_round_trip_and_validation():
    cfg = EvalConfig(formats={"formats": ["mcq", "paraphrase"]}, probes={"layers": [1, 2]},
                     side_effects={"mmlu_source": "x"})
    assert cfg.formats.formats == ("mcq", "paraphrase") and cfg.probes.layers == (1, 2)
    assert EvalConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(seed=3).seed == 3 and cfg.seed == 0
    assert hash(cfg) == hash(EvalConfig.from_dict(cfg.to_dict()))
    with pytest.raises(ValueError, match="unknown formats"):
        EvalConfig(formats={"formats": ["nope"]})
    with pytest.raises(ValueError, match="batch_size"):
        EvalConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown EvalConfig fields"):
        EvalConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="unknown EvalConfig fields"):
        cfg.replace(bogus=1)


# --- standard ---------------------------------------------------------------------------------


def test_standard_unedited_planted(planted):
    t = planted.task
    r = run_standard(planted.model, t, original=planted.model)
    assert r["forget_accuracy"].value == 1.0 and r["forget_accuracy"].n == len(t.forget)
    assert r["edit_accuracy"].value == 0.0 and r["edit_prob"].value < 0.01
    assert r["maintain_accuracy"].value == 1.0 and r["maintain_accuracy"].n == len(t.maintain)
    assert r["forget_prob"].value > 0.99 and r["maintain_prob"].value > 0.99
    for m in r.metrics:
        assert m.baseline == pytest.approx(m.value) and not m.at_chance and m.unit == "facts"
    assert not r["forget_accuracy"].higher_is_better and r["edit_accuracy"].higher_is_better
    splits = [row["split"] for row in r.per_fact]
    assert splits.count("forget") == len(t.forget) and splits.count("maintain") == len(t.maintain)
    row = r.per_fact[0]
    assert {"record_id", "subject", "answer", "target", "answer_wins", "p_answer", "baseline_p_answer"} <= set(row)
    assert row["record_id"] == t.forget[0].id and row["target"] == t.forget[0].target_new


def test_standard_edited_planted_and_no_original(planted, edited):
    t = planted.task
    r = run_standard(edited, t, original=planted.model)
    assert r["forget_accuracy"].value == 0.0 and r["forget_accuracy"].baseline == 1.0
    assert r["edit_accuracy"].value == 1.0 and r["edit_accuracy"].baseline == 0.0
    assert r["maintain_accuracy"].value == 1.0
    r0 = run_standard(edited, t)
    assert all(m.baseline is None and not m.at_chance for m in r0.metrics)
    assert "original=None" in r0.extra["baseline_note"]
    assert "baseline_p_answer" not in r0.per_fact[0]


def test_standard_unlearning_has_no_edit_metrics(planted):
    t = sports_unlearning(planted.dataset, "basketball", n_maintain=8)
    r = run_standard(planted.model, t, original=planted.model)
    names = [m.name for m in r.metrics]
    assert "forget_accuracy" in names and not any(n.startswith("edit_") for n in names)


@pytest.fixture(scope="module")
def says_basketball(planted):
    """An "original" that says basketball to every athlete (it knows no fact), and Sports-Unlearning on the
    planted facts: every forget fact is a basketball player, so it scores 1.0 on the forget facts."""
    from factlens.tokens import answer_token_ids

    m = copy.deepcopy(planted.model)
    with torch.no_grad():
        m.unembed.b_U[answer_token_ids(m, "basketball")[0]] += 100.0
    return m, sports_unlearning(planted.dataset, n_forget=12)


def test_standard_flags_an_original_that_gives_one_answer_to_everyone(planted, says_basketball):
    """Uniform chance is 1/3 and the forget split's accuracy 1.0, so the split's own check passed it; the
    model says basketball on every maintain prompt too, so a reader that answers like it elsewhere scores
    1.0 on the forget facts (the answer-bias bar). An original that knows the facts is not flagged."""
    biased, task = says_basketball
    r = run_standard(biased, task, original=biased)
    assert r["forget_accuracy"].value == 1.0 and r["forget_accuracy"].at_chance and r["forget_prob"].at_chance
    assert r["maintain_accuracy"].at_chance and r.extra["forget_baseline"]["at_chance"]
    bar = r.extra["at_chance_bar"]
    assert {k: v["decided_by"] for k, v in bar.items()} == {"forget": "answer bias", "maintain": "split chance"}
    assert bar["forget"] == {"bar": 1.0, "accuracy": 1.0, "chance": pytest.approx(1 / 3), "n": 12,
                             "decided_by": "answer bias"}
    known = run_standard(biased, task, original=planted.model)
    assert not any(m.at_chance for m in known.metrics)
    assert {k: v["decided_by"] for k, v in known.extra["at_chance_bar"].items()} == {"forget": None, "maintain": None}
    assert known.extra["at_chance_bar"]["forget"]["bar"] < 1 / 3
    alone = score_prompts(biased, format_prompts(task.forget, "default"))  # no other split: its own chance alone
    assert chance_flags({"forget": tally(alone)}, {"forget": False}) == (
        {"forget": False}, {"forget": {"bar": None, "accuracy": 1.0, "chance": pytest.approx(1 / 3), "n": 12,
                                       "decided_by": None}})


def _knows_forget_not_maintain(planted):
    """A CounterFact-like task on the planted facts: two candidates per fact (its answer and another
    sport). The model knows the 8 forget facts; half of the 40 maintain facts are given the sport it
    does not predict as their answer, so it is at chance (0.5) on them."""
    from dataclasses import replace

    from factlens.data.records import FactDataset
    from factlens.tasks import Task

    recs = list(planted.dataset)
    sports = planted.dataset.candidates
    other = {a: sports[(sports.index(a) + 1) % len(sports)] for a in sports}
    forget = [replace(r, target_new=other[r.answer], candidates=(r.answer, other[r.answer])) for r in recs[:8]]
    maintain = [replace(r, candidates=(r.answer, other[r.answer])) if i % 2 else
                replace(r, answer=other[r.answer], candidates=(other[r.answer], r.answer)) for i, r in enumerate(recs[8:])]
    return Task("cf_like", "inject", FactDataset(forget, name="forget"), FactDataset((), name="retain"),
                FactDataset(maintain, name="maintain"))


def test_at_chance_keeps_a_known_split_when_the_other_split_is_unknown(planted):
    """The rule that pooled forget and maintain facts flagged the known forget facts here: pooled 0.583 is
    not above 0.5 + 2 SE (0.644). The answer-bias bar of the forget facts (what a reader answering like the
    model does on the maintain facts scores) is about 1/3, below chance: only the maintain facts are flagged,
    by their own chance check, in the standard suite and in the attacks' TaskScores alike."""
    from factlens.evaluation.attacks import score_task

    task = _knows_forget_not_maintain(planted)
    r = run_standard(planted.model, task, original=planted.model)
    assert r["forget_accuracy"].value == 1.0 and r["maintain_accuracy"].value == 0.5
    assert not r["forget_accuracy"].at_chance and not r["edit_accuracy"].at_chance and r["maintain_accuracy"].at_chance
    bar = r.extra["at_chance_bar"]
    assert {k: v["decided_by"] for k, v in bar.items()} == {"forget": None, "maintain": "split chance"}
    assert bar["forget"]["bar"] < 0.5 and (bar["forget"]["n"], bar["maintain"]["n"]) == (8, 40)
    flags, why = score_task(planted.model, task, EvalConfig()).chance_flags()
    assert flags == {"forget": False, "maintain": True} and why == bar


@pytest.mark.parametrize("suite", ["relearning", "soft_prompts", "logit_lens", "quantization", "unrelated_finetune"])
def test_every_suite_flags_the_forget_metrics_of_an_original_that_gives_one_answer(planted, says_basketball, suite):
    """The attack suites take their at-chance flags from the same rule (standard.chance_flags) as the
    standard suite: each split's own chance, and the answer-bias bar of the model's answers on the task's
    other facts. Their forget metrics were not flagged for the basketball-to-everyone original. The knowing
    original's bars stay below chance: relearning scores every forget fact in both roles (held out, trained
    on), so a role's bar comes from the maintain facts alone (with the other role's basketball players it
    would be 0.43)."""
    import json

    biased, task = says_basketball
    cfg = EvalConfig(text={"n_chunks": 2, "seq_len": 16}, relearning={"steps": 1, "rank": 4},
                     soft_prompts={"steps": 1, "seeds": 1, "length": 2})

    def forget_flags(original):
        r = evaluate(biased, task, original=original, suites=[suite], config=cfg, show_progress=False)[suite]
        bar = json.loads(json.dumps(r.extra["at_chance_bar"]))  # per split (quantization: per format, then split)
        splits = list(bar.get("default", bar).values())
        return {m.name: m.at_chance for m in r.metrics if "forget_acc" in m.name or "train_acc" in m.name}, splits

    flags, splits = forget_flags(biased)
    assert flags and all(flags.values()) and "answer bias" in [v["decided_by"] for v in splits], (flags, splits)
    flags, splits = forget_flags(planted.model)
    assert not any(flags.values()) and not any(v["decided_by"] for v in splits), (flags, splits)
    assert all(v["bar"] < v["chance"] for v in splits), splits


@pytest.mark.parametrize("suite", ["soft_prompts", "relearning"])
def test_halves_of_the_forget_facts_are_not_read_against_each_other(suite):
    """The halves of Sports-Unlearning's forget facts are all basketball players: a model that knows the
    other half says basketball there, so a half's answer-bias bar read from it measured knowledge, not
    bias (bar 0.8 with 2 maintain facts): a knowing original was flagged at chance. A half is read
    against the maintain facts only."""
    import copy

    from factlens.tasks import sports_unlearning
    from factlens.testing import planted_fact_model

    p = planted_fact_model(n_subjects=48)
    task = sports_unlearning(p.dataset, n_maintain=2)
    cfg = EvalConfig(text={"n_chunks": 2, "seq_len": 16}, soft_prompts={"steps": 1, "seeds": 1, "length": 2},
                     relearning={"steps": 1, "rank": 4, "both_halves": False})
    r = evaluate(p.model, task, original=copy.deepcopy(p.model), suites=[suite], config=cfg, show_progress=False)[suite]
    assert not any(m.at_chance for m in r.metrics if "maintain" not in m.name), r.extra["at_chance_bar"]
    assert all(v is None or v["decided_by"] is None for v in r.extra["at_chance_bar"].values())


def test_formats_flag_a_format_whose_forget_facts_are_read_by_answer_bias():
    """The formats suite flagged a format only by its pooled accuracy against uniform chance: with 48
    subjects and Sports-Unlearning's default sizes the basketball-to-everyone original was above it, and
    its forget facts in every other phrasing were read as known."""
    from factlens.tasks import sports_unlearning
    from factlens.testing import planted_fact_model
    from factlens.tokens import answer_token_ids

    p = planted_fact_model(n_subjects=48)
    task = sports_unlearning(p.dataset)
    with torch.no_grad():
        p.model.unembed.b_U[answer_token_ids(p.model, "basketball")[0]] += 100.0
    r = evaluate(p.model, task, original=p.model, suites=["formats"], show_progress=False)["formats"]
    forget = [m for m in r.metrics if m.name.endswith("_forget_error")]
    assert forget and all(m.at_chance for m in forget), [(m.name, m.at_chance) for m in forget]
    assert r.extra["at_chance_formats"]


# --- formats ----------------------------------------------------------------------------------


def test_formats_planted(planted, edited):
    t = planted.task
    r = run_formats(planted.model, t, original=planted.model, config=EvalConfig(formats=FormatsConfig(
                        formats=["mcq", "paraphrase", "professional"])))
    assert r.extra["formats"] == ["paraphrase", "professional"] and r.extra["unavailable_formats"] == ["mcq"]
    assert not any(m.name.startswith("mcq") for m in r.metrics)
    assert r["paraphrase_forget_error"].value == 0.0 and r["paraphrase_edit_accuracy"].value == 0.0
    assert r["professional_maintain_accuracy"].value == 1.0
    assert r.extra["at_chance_formats"] == [] and not any(m.at_chance for m in r.metrics)
    fb = {(b["format"], b["split"]): b for b in r.extra["format_baselines"]}
    assert set(fb) == {(f, s) for f in ("paraphrase", "professional") for s in ("forget", "maintain")}
    assert fb[("paraphrase", "forget")]["accuracy"] == 1.0 and fb[("paraphrase", "maintain")]["n_facts"] == len(t.maintain)
    # the planted edit lives in the lookup MLP, so it generalizes to the other phrasing
    e = run_formats(edited, t, original=planted.model, config=EvalConfig(formats=FormatsConfig(formats="professional")))
    assert e["professional_edit_accuracy"].value == 1.0 and e["professional_edit_accuracy"].baseline == 0.0
    assert e["professional_forget_error"].value == 1.0 and e["professional_forget_error"].baseline == 0.0
    # without the original: no baselines, no flags, a note
    n = run_formats(edited, t, config=EvalConfig(formats=FormatsConfig(formats="professional")))
    assert all(m.baseline is None for m in n.metrics) and "baseline_note" in n.extra


def test_formats_random_tiny_model_is_at_chance(tiny):
    task = sports_athlete_editing(sports_facts(), n_forget=16, seed=1, n_retain=0, n_maintain=32)
    r = run_formats(tiny, task, original=tiny)
    assert set(r.extra["formats"]) == {"mcq", "zero_shot", "professional", "sport_played"}
    assert sorted(r.extra["at_chance_formats"]) == sorted(r.extra["formats"])
    assert r.metrics and all(m.at_chance for m in r.metrics)
    assert r["mcq_forget_error"].n == 16 and r["mcq_maintain_accuracy"].n == 32
    mcq = [b for b in r.extra["format_baselines"] if b["format"] == "mcq"]
    # at least uniform guessing among 4 letters, and at least always giving the commonest right letter
    assert mcq and all(0.25 <= b["chance"] < 1 for b in mcq)
    items = format_prompts(task.forget, "mcq", seed=0)
    assert any(b["chance"] == pytest.approx(prompt_chance(items)) for b in mcq)


def test_formats_records_the_solved_examples_its_mcq_prompts_hold(tiny):
    """extra["mcq_shots"]: n_shots=5 asked for more solved examples than the 2 sports ones there are; the
    prompts held 2 and nothing said so."""
    task = sports_athlete_editing(sports_facts(), n_forget=4, seed=1, n_retain=0, n_maintain=4)
    cfg = EvalConfig(n_shots=5, formats={"formats": ["mcq"]})
    with pytest.warns(UserWarning, match="hold fewer than the 5 solved examples"):
        r = run_formats(tiny, task, config=cfg)
    assert r.extra["mcq_shots"] == {"asked": 5, "source": "fixed", "min_used": 2, "max_used": 2}
    r2 = run_formats(tiny, task, config=EvalConfig(n_shots=1, formats={"formats": ["mcq"]}))
    assert r2.extra["mcq_shots"] == {"asked": 1, "source": "fixed", "min_used": 1, "max_used": 1}


def test_formats_counterfact_tiny(tiny):
    task = counterfact_editing(counterfact(), n_forget=6, n_retain=0, n_maintain=6)
    r = run_formats(tiny, task, original=tiny, config=EvalConfig(formats={"formats": ["paraphrase", "neighborhood"]}))
    m = r["neighborhood_edit_error"]
    assert m.n == 6 and not m.higher_is_better and 0 <= m.value <= 1
    assert r["paraphrase_edit_accuracy"].n == 6
    # CounterFact candidates are (true, target): chance 0.5; prompts whose answer is the target are skipped
    assert all(b["chance"] == pytest.approx(0.5) for b in r.extra["format_baselines"])
    rows = [row for row in r.per_fact if row["format"] == "neighborhood"]
    assert all(row["answer"] != row["target"] for row in rows)


def test_not_above_chance():
    assert not_above_chance(0.30, 0.25, 57) and not not_above_chance(0.6, 0.25, 57)
    assert not_above_chance(float("nan"), 0.25, 10)


# --- side effects -----------------------------------------------------------------------------


def test_side_effects_text(tiny):
    r = run_side_effects(tiny, original=tiny, config=FAST_TEXT)
    kl, acc, loss = r["kl_divergence"], r["next_token_accuracy"], r["next_token_loss"]
    assert kl.value == 0.0 and kl.unit == "tokens" and kl.n == 3 * 15
    assert 0.0 <= acc.value <= 1.0 and acc.baseline == acc.value
    assert math.isfinite(loss.value) and loss.value > 0 and not loss.higher_is_better
    assert "MMLU skipped" in r.extra["mmlu_note"] and len(r.extra["text_chunks"]) == 3
    # a separate but identical copy: KL ~ 0
    r2 = run_side_effects(copy.deepcopy(tiny), original=tiny, config=FAST_TEXT)
    assert abs(r2["kl_divergence"].value) < 1e-6
    # a perturbed model: KL > 0; without an original: no KL, with a note
    noisy = copy.deepcopy(tiny)
    with torch.no_grad():
        noisy.blocks[0].mlp.W_out.add_(0.5 * torch.randn_like(noisy.blocks[0].mlp.W_out))
    r3 = run_side_effects(noisy, original=tiny, config=FAST_TEXT)
    assert r3["kl_divergence"].value > 0 and r3["next_token_loss"].baseline == pytest.approx(loss.value)
    r4 = run_side_effects(tiny, config=FAST_TEXT)
    assert "kl_note" in r4.extra and [m.name for m in r4.metrics] == ["next_token_accuracy", "next_token_loss"]


def test_kl_is_never_negative_for_two_nearly_equal_models(tiny):
    """Float32 rounding of two almost equal distributions made per-token KL values of -1e-8 and
    a negative kl_divergence (and interval); KL is never below 0, so each token's is clamped at 0."""
    near = copy.deepcopy(tiny)
    with torch.no_grad():
        near.blocks[1].attn.W_O.mul_(1 + 1e-6)
    kl = run_side_effects(near, original=tiny, config=FAST_TEXT)["kl_divergence"]
    assert min(kl.samples.values()) >= 0 and kl.value >= 0 and kl.ci_low >= 0
    assert kl.value < 1e-6  # still the noise floor, not a difference


def test_kl_adds_nothing_for_a_token_the_original_never_gives():
    """A vocabulary entry of log-prob -inf in both models (a masked or unused id) made every KL term
    0 * (-inf - -inf) = NaN: the KL metric vanished from the result without a note. By convention
    0 * log(0 / q) = 0 (scipy.special.rel_entr(0, q)); a NaN the original gives now raises."""
    from scipy.special import rel_entr

    from factlens.evaluation.side_effects import _kl, text_chunks

    lpo = torch.tensor([[float("-inf"), math.log(0.5), math.log(0.5)], [float("-inf"), 0.0, float("-inf")]])
    lp = torch.tensor([[float("-inf"), math.log(0.25), math.log(0.75)], [math.log(0.5), math.log(0.5), float("-inf")]])
    want = rel_entr(lpo.double().exp().numpy(), lp.double().exp().numpy()).sum(-1)
    torch.testing.assert_close(_kl(lpo, lp), torch.tensor(want, dtype=torch.float32))
    orig = tiny_model()
    cfg = EvalConfig(text={"n_chunks": 3, "seq_len": 16})
    used = set(text_chunks(orig, cfg).flatten().tolist())
    with torch.no_grad():
        orig.unembed.b_U[next(i for i in range(orig.cfg.d_vocab) if i not in used)] = float("-inf")
    ed = copy.deepcopy(orig)
    with torch.no_grad():
        ed.blocks[0].mlp.W_out.add_(0.5 * torch.randn_like(ed.blocks[0].mlp.W_out))
    assert run_side_effects(orig, original=orig, config=cfg)["kl_divergence"].value == 0.0
    kl = run_side_effects(ed, original=orig, config=cfg)["kl_divergence"]
    assert kl.n == 3 * 15 and math.isfinite(kl.value) and kl.value > 0
    with torch.no_grad():
        orig.blocks[0].mlp.W_out[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="original model gave non-finite log-probabilities on text chunk 0"):
        run_side_effects(ed, original=orig, config=cfg)


def test_text_metrics_refuse_chunks_that_are_not_2d(tiny):
    """One chunk of token ids (1-D) failed with 'IndexError: too many indices for tensor of dimension 1'."""
    from factlens.evaluation.side_effects import text_metrics

    with pytest.raises(ValueError, match=r"\[n_chunks, seq_len\] tensor of token ids, got \(5,\).*chunks\[None\]"):
        text_metrics(tiny, torch.tensor([0, 5, 6, 7, 8]), original=tiny)
    with pytest.raises(ValueError, match=r"got list"):
        text_metrics(tiny, [[0, 5, 6]])
    assert len(text_metrics(tiny, torch.tensor([0, 5, 6, 7, 8])[None], original=tiny)) == 1


def test_mmlu_local_csv(tmp_path, tiny):
    (tmp_path / "high_school_physics_dev.csv").write_text('"What is 2+2?",3,4,5,6,B\nWhy?,a,b,c,d,D\n')
    (tmp_path / "anatomy_dev.csv").write_text("Bones?,1,2,3,4,A\n")
    qs = load_mmlu(tmp_path)
    assert len(qs) == 3 and qs[0].subject == "anatomy" and qs[1].choices == ("3", "4", "5", "6")
    assert qs[1].answer_index == 1
    assert {q.subject for q in load_mmlu(tmp_path, n=2, seed=0)} == {"anatomy", "high_school_physics"}
    assert mmlu_prompt(qs[1]).startswith("The following are multiple choice questions (with answers) about high "
                                         "school physics.\n\nWhat is 2+2?\nA. 3\nB. 4")
    assert mmlu_prompt(qs[1], [qs[2]]).count("Answer:") == 2
    res = mmlu_accuracy(tiny, qs, n_shots=1)
    assert res.n == 3 and 0 <= res.accuracy <= 1
    assert res.chance == pytest.approx(1 / 3)  # answers A, B, D: always "A" gets one of three, above 1/4
    (tmp_path / "bad.csv").write_text("q,a,b\n")
    with pytest.raises(ValueError, match="6 columns"):
        load_mmlu(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError):
        load_mmlu(tmp_path / "missing")
    with pytest.raises(ValueError, match="4 choices"):
        MMLUQuestion("x", "q", ("a", "b"), 0)


def test_mmlu_unreachable_dataset(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(OSError, match="could not load MMLU dataset 'cais/mmlu:all'.*local folder"):
        load_mmlu("cais/mmlu:all")


def test_side_effects_mmlu_shared(shared_data, tiny):
    src = shared_data / "mmlu" / "dev"
    if not src.is_dir():
        pytest.skip("no MMLU dev CSVs")
    assert len(load_mmlu(src)) == 57 * 5
    cfg = FAST_TEXT.replace(side_effects=SideEffectsConfig(mmlu_source=str(src), n_mmlu=57))
    r = run_side_effects(tiny, original=tiny, config=cfg)
    m = r["mmlu_accuracy"]
    assert m.n == 57 and m.unit == "questions" and 0 <= m.value <= 1 and m.baseline == m.value
    assert m.at_chance  # a random model
    # the 57 questions' best constant letter (17 of them) is above 1/4: an always-one-letter model gets it
    letters = [q["answer"] for q in r.extra["mmlu_questions"]]
    assert r.extra["mmlu_chance"] == max(letters.count(x) for x in "ABCD") / 57 > 0.25
    assert len(r.extra["mmlu_questions"]) == 57
    assert len(r.extra["mmlu_by_subject"]) == 57


# --- evaluate() -------------------------------------------------------------------------------


def test_evaluate_errors(planted):
    with pytest.raises(ValueError, match="unknown evaluation suite.*known"):
        evaluate(planted.model, planted.task, suites=["standard", "nope"], show_progress=False)
    with pytest.raises(ValueError, match="mechanisms.*mask"):
        evaluate(planted.model, planted.task, suites=["mechanisms"], show_progress=False)
    with pytest.raises(ValueError, match="known"):
        suite_function("nope")
    assert set(SUITES.names()) >= {"standard", "formats", "side_effects", "relearning", "probes", "soft_prompts", "mechanisms"}


def test_evaluate_round_trip_and_hygiene(planted, edited, tmp_path):
    before, before_orig = snapshot(edited), snapshot(planted.model)
    cfg = FAST_TEXT.override({"formats.formats": ("professional",)})
    res = evaluate(edited, planted.task, original=planted.model, suites=("standard", "formats", "side_effects"),
                   config=cfg, show_progress=False)
    assert_unchanged(edited, before)
    assert_unchanged(planted.model, before_orig)
    assert list(res.suites) == ["standard", "formats", "side_effects"]
    assert res.meta["model"] == "factlens-planted" and set(res.meta["seconds"]) == set(res.suites)
    assert res.meta["config"] == cfg.to_dict() and res.task["n_forget"] == len(planted.task.forget)
    assert res.metric("edit_accuracy").value == 1.0
    assert res["formats"]["professional_edit_accuracy"].value == 1.0
    path = tmp_path / "res.json"
    res.save(path)
    back = EvalResult.load(path)
    assert back.to_dict() == EvalResult.from_dict(res.to_dict()).to_dict()
    assert back.flat() == pytest.approx(res.flat())
    assert back["standard"].per_fact == res["standard"].per_fact
    frame = res.to_frame()
    assert {"suite", "name", "value", "n", "baseline", "at_chance"} <= set(frame.columns)
    assert np.isfinite(frame["value"]).all()


def test_baseline_cache_reuses_the_original_and_changes_nothing():
    """evaluate(baselines=cache): identical numbers, the original's computations done once."""
    import copy

    import torch

    from factlens.evaluation import BaselineCache, EvalConfig, evaluate
    from factlens.testing import planted_fact_model

    p = planted_fact_model()
    edited = copy.deepcopy(p.model)
    with torch.no_grad():
        edited.blocks[1].mlp.W_out.mul_(0.5)
    cfg = EvalConfig(text={"n_chunks": 2, "seq_len": 16}, relearning={"steps": 2, "rank": 4},
                     soft_prompts={"steps": 2, "seeds": 1})
    suites = ("standard", "formats", "side_effects", "relearning", "probes", "soft_prompts")
    plain = evaluate(edited, p.task, original=p.model, suites=suites, config=cfg, show_progress=False)
    cache = BaselineCache()
    first = evaluate(edited, p.task, original=p.model, suites=suites, config=cfg, baselines=cache, show_progress=False)
    misses = cache.misses
    assert misses > 0 and cache.hits < misses
    second = evaluate(edited, p.task, original=p.model, suites=suites, config=cfg, baselines=cache, show_progress=False)
    assert cache.misses == misses and cache.hits >= misses  # everything on the original came from the cache
    for res in (first, second):
        a, b = plain.to_frame(), res.to_frame()
        assert a[["suite", "name", "n"]].equals(b[["suite", "name", "n"]])
        np.testing.assert_allclose(a["value"].astype(float), b["value"].astype(float), equal_nan=True)
        np.testing.assert_allclose(a["baseline"].astype(float), b["baseline"].astype(float), equal_nan=True)
    # the original changes -> its entries are dropped, not served
    with torch.no_grad():
        p.model.blocks[0].mlp.b_out.add_(0.0)  # no change: still cached
    evaluate(edited, p.task, original=p.model, suites=("standard",), config=cfg, baselines=cache, show_progress=False)
    assert cache.misses == misses
    other = copy.deepcopy(p.model)
    with pytest.raises(ValueError, match="another original"):
        evaluate(edited, p.task, original=other, suites=("standard",), config=cfg, baselines=cache, show_progress=False)
    saved = p.model.blocks[0].mlp.b_out.detach().clone()
    with torch.no_grad():
        p.model.blocks[0].mlp.b_out.add_(1.0)
    try:
        evaluate(edited, p.task, original=p.model, suites=("standard",), config=cfg, baselines=cache, show_progress=False)
        assert cache.misses > misses  # recomputed on the changed original
    finally:
        with torch.no_grad():
            p.model.blocks[0].mlp.b_out.copy_(saved)


def _swap_columns(w: torch.Tensor, a: int, b: int) -> None:
    with torch.no_grad():
        col = w[:, a].clone()
        w[:, a] = w[:, b]
        w[:, b] = col


def test_fingerprint_sees_values_that_move_buffers_and_the_config():
    """In-place changes that keep every parameter's sum (two unembedding columns swapped, two neurons
    permuted) change the fingerprint; so do a buffer and the architecture config. The former
    fingerprint (one float64 sum per parameter) missed the first two."""
    from factlens.evaluation.baseline_cache import _fingerprint
    from factlens.testing.shaped import gemma3_shaped

    m = gemma3_shaped()
    first = _fingerprint(m)
    assert _fingerprint(copy.deepcopy(m)) == first
    _swap_columns(m.unembed.W_U, 3, 5)
    assert _fingerprint(m) != first
    _swap_columns(m.unembed.W_U, 3, 5)
    assert _fingerprint(m) == first  # back as it was
    mlp, perm = m.blocks[0].mlp, torch.arange(m.cfg.d_mlp)
    perm[[0, 1]] = perm[[1, 0]]
    saved = {n: w.detach().clone() for n, w in mlp.named_parameters()}
    with torch.no_grad():  # a permutation of neurons: the same function, other parameters
        for name in ("W_in", "W_gate", "b_in"):
            getattr(mlp, name).copy_(getattr(mlp, name)[..., perm])
        mlp.W_out.copy_(mlp.W_out[perm])
    assert _fingerprint(m) != first
    with torch.no_grad():
        for n, w in mlp.named_parameters():
            w.copy_(saved[n])
    assert _fingerprint(m) == first
    sin = m.blocks[0].attn.rotary_sin
    saved_sin = sin.clone()
    sin[[0, 1]] = sin[[1, 0]]
    assert _fingerprint(m) != first
    sin.copy_(saved_sin)
    m.cfg.window_size += 1
    assert _fingerprint(m) != first
    m.cfg.window_size -= 1
    assert _fingerprint(m) == first


def test_baseline_cache_drops_entries_when_the_original_swaps_two_answers():
    """Swapping two sports' unembedding columns of the original keeps every parameter's sum: the
    cache used to serve the old baselines (maintain 1.0 where 0.2 is right)."""
    from factlens.evaluation import BaselineCache
    from factlens.testing import planted_fact_model
    from factlens.tokens import answer_token_ids

    p = planted_fact_model()
    edited = copy.deepcopy(p.model)
    cache = BaselineCache()
    evaluate(edited, p.task, original=p.model, suites=["standard"], baselines=cache, show_progress=False)
    a, b = (answer_token_ids(p.model, s)[0] for s in p.task.forget.candidates[:2])
    _swap_columns(p.model.unembed.W_U, a, b)
    try:
        cached_run = evaluate(edited, p.task, original=p.model, suites=["standard"], baselines=cache,
                              show_progress=False)
        fresh = evaluate(edited, p.task, original=p.model, suites=["standard"], show_progress=False)
    finally:
        _swap_columns(p.model.unembed.W_U, a, b)
    for name in ("forget_accuracy", "maintain_accuracy"):
        assert cached_run["standard"][name].baseline == fresh["standard"][name].baseline
    assert fresh["standard"]["maintain_accuracy"].baseline != 1.0  # the swap matters (measured: 0.2)


def test_baseline_cache_without_recheck_fingerprints_only_at_the_first_bind(planted, monkeypatch):
    import copy

    from factlens.evaluation import BaselineCache, baseline_cache

    calls = []
    real = baseline_cache._fingerprint
    monkeypatch.setattr(baseline_cache, "_fingerprint", lambda m, *a, **k: calls.append(1) or real(m, *a, **k))
    original = copy.deepcopy(planted.model)
    once, every = BaselineCache(recheck=False), BaselineCache()
    for cache in (once, every):
        cache.bind(original)
        cache.get("k", lambda: 1.0)
    with torch.no_grad():
        original.blocks[0].mlp.b_out.add_(1.0)  # the caller broke its promise: only the rechecking cache notices
    n = len(calls)
    once.bind(original)
    assert len(calls) == n and len(once) == 1
    every.bind(original)
    assert len(calls) == n + 1 and len(every) == 0
    with pytest.raises(ValueError, match="another original"):
        once.bind(copy.deepcopy(original))


def test_baseline_cache_keys_the_prompts_record_ids():
    """Two prompt lists with the same texts but other fact ids must not share the unedited
    model's cached scores: the scores carry their items, and the ids key every per-fact value
    (items_key used to omit them, so the second list got scores keyed by the first one's ids)."""
    import dataclasses

    from factlens.data.formats import format_prompts
    from factlens.evaluation import BaselineCache, EvalConfig
    from factlens.evaluation.standard import fact_means, score_both
    from factlens.testing import planted_fact_model

    p = planted_fact_model()
    edited = copy.deepcopy(p.model)
    items = format_prompts(p.task.forget, "default", seed=0)
    renamed = [dataclasses.replace(it, record_id=f"renamed:{it.record_id}") for it in items]
    cache = BaselineCache()
    cache.bind(p.model)
    cfg = EvalConfig()
    score_both(edited, p.model, items, cfg, cache)
    _, base = score_both(edited, p.model, renamed, cfg, cache)
    assert [it.record_id for it in base.items] == [it.record_id for it in renamed]
    assert set(fact_means(base, base.answer_wins)) == {it.record_id for it in renamed}


def test_text_metrics_count_real_tokens_that_share_the_pad_id():
    """Only trailing padding is left out of the text metrics: a token of the text that has the
    pad id (a tokenizer without a pad token pads with EOS, or with 0) is a real target. Every
    target equal to the pad id used to be dropped, wherever it stood."""
    from factlens.evaluation.side_effects import text_metrics
    from factlens.tokens import _bos_id, _pad_id

    m = tiny_model()
    pad, bos = _pad_id(m), _bos_id(m)
    words = [t for t in range(5, 40) if t not in (pad, bos)]
    chunk = torch.tensor([[bos, *words[:4], pad, *words[4:8], pad, pad]])  # one real pad-id token, two of padding
    rows = text_metrics(m, chunk)
    assert rows[0]["n_tokens"] == 9  # 8 words + the pad-id token inside the text; the trailing two are padding


def test_mmlu_reports_the_shots_its_prompts_hold():
    """MMLUResult.n_shots said 5 where every prompt held 0 (one question per subject) or 4 (the
    dev split's 5 per subject); the result now keeps each prompt's count and warns."""
    m = tiny_model()
    qs = [MMLUQuestion(s, f"Q{i} of {s}?", ("a", "b", "c", "d"), i % 4) for s in ("x", "y") for i in range(5)]
    with pytest.warns(UserWarning, match="10 of 10 prompts hold fewer than the 5 solved examples"):
        r = mmlu_accuracy(m, qs, n_shots=5)
    assert r.n_shots == 5 and r.shots_used == (4,) * 10
    one = [qs[0], qs[5]]  # one question per subject, the default pool: no examples at all
    with pytest.warns(UserWarning, match="between 0 and 0"):
        assert mmlu_accuracy(m, one, n_shots=2).shots_used == (0, 0)
    assert mmlu_accuracy(m, qs, n_shots=3).shots_used == (3,) * 10


def test_side_effects_refuse_a_model_with_non_finite_outputs(tmp_path):
    """A NaN chunk was dropped from loss and KL but counted as wrong in accuracy (the three metrics then
    covered different chunks), and MMLU's argmax over NaN answered 'A' to every question."""
    broken = tiny_model()
    with torch.no_grad():
        broken.blocks[0].mlp.W_out[0, 0] = float("nan")
    cfg = EvalConfig(text={"n_chunks": 2, "seq_len": 16})
    with pytest.raises(FloatingPointError, match="text chunk 0"):
        run_side_effects(broken, original=tiny_model(), config=cfg)
    (tmp_path / "anatomy_dev.csv").write_text("Bones?,1,2,3,4,B\n")
    with pytest.raises(FloatingPointError, match="MMLU answer letters"):
        mmlu_accuracy(broken, load_mmlu(tmp_path))


def test_a_formats_at_chance_flag_uses_the_chance_of_all_prompts_together():
    """A model that always gives one letter gives it in every split: the bar is the best constant letter of
    the pooled prompts, not the mean of each split's best letter (0.479 against 0.333 on this split, which
    flagged a format answered above chance)."""
    from factlens.evaluation.formats import _format_baselines
    from factlens.prompt_scores import PromptScores

    ds = sports_facts()
    f, rest = ds.split(16, seed=136)
    m, _ = rest.split(32, seed=136)
    fi, mi = format_prompts(f, "mcq", seed=0), format_prompts(m, "mcq", seed=0)
    pooled = prompt_chance(fi + mi)
    mean_of_splits = (prompt_chance(fi) * len(fi) + prompt_chance(mi) * len(mi)) / (len(fi) + len(mi))
    assert mean_of_splits > pooled + 0.1  # the split this test needs

    def scores(items, k):  # right on the first k prompts, the next option on the others
        z = np.zeros(len(items))
        right = [it.candidates.index(it.answer) for it in items]
        winner = np.array([a if i < k else (a + 1) % len(it.candidates) for i, (a, it) in enumerate(zip(right, items))])
        return PromptScores(tuple(items), z, z, np.arange(len(items)) < k, np.zeros(len(items), bool), z + .5, z,
                            winner)

    n = len(fi) + len(mi)
    hits = math.ceil((pooled + 2 * math.sqrt(pooled * (1 - pooled) / n)) * n + 1e-9)  # just above the pooled bar
    assert not not_above_chance(hits / n, pooled, n)
    _, flag, why = _format_baselines("mcq", {"forget": (fi, None, scores(fi, hits // 3)),
                                             "maintain": (mi, None, scores(mi, hits - hits // 3))})
    assert flag is False and why["decided_by"] is None


def test_a_formats_answer_bias_flag_is_one_pooled_test_as_the_format_flag_is():
    """The answer-bias bar was tested per split and any flagged split flagged the format: Gemma 3
    270M's "The sport played by {} is" (0.500 on 32 forget athletes against a bar of 0.371, 0.484 on
    64 maintain athletes against 0.381) was flagged, though over its 96 prompts it is 0.490 against
    0.378, 2.3 standard errors above. Two tests on parts of the prompts flag a known format more
    often than the pooled test that the format's one flag stands for."""
    from factlens.evaluation.formats import _format_baselines
    from factlens.evaluation.standard import answer_bias_bar
    from factlens.prompt_scores import PromptScores

    ds = sports_facts()
    f, rest = ds.split(32, seed=2)
    m, _ = rest.split(64, seed=2)
    fi, mi = format_prompts(f, "sport_played", seed=0), format_prompts(m, "sport_played", seed=0)

    def scores(items, k):  # right on the first k prompts, basketball on the others (the next sport for its players)
        z = np.zeros(len(items))
        right = np.array([it.candidates.index(it.answer) for it in items])
        bb = np.array([it.candidates.index("basketball") for it in items])
        wrong = np.where(bb == right, (right + 1) % 3, bb)
        winner = np.where(np.arange(len(items)) < k, right, wrong)
        return PromptScores(tuple(items), z, z, winner == right, np.zeros(len(items), bool), z + .5, z, winner)

    sf, sm = scores(fi, 16), scores(mi, 31)  # 0.500 and 0.484, as measured
    chance = prompt_chance(fi + mi)
    tf, tm = tally(sf, chance=chance), tally(sm, chance=chance)
    bars = answer_bias_bar(tf, [tm]), answer_bias_bar(tm, [tf])
    # the premise: each split alone is not above its bar by 2 SE, the pooled prompts are
    assert all(b > chance for b in bars)
    assert not_above_chance(16 / 32, bars[0], 32) or not_above_chance(31 / 64, bars[1], 64), bars
    pooled_bar = (32 * bars[0] + 64 * bars[1]) / 96
    assert not not_above_chance(47 / 96, pooled_bar, 96), pooled_bar
    rows, flag, why = _format_baselines("sport_played", {"forget": (fi, None, sf), "maintain": (mi, None, sm)})
    assert flag is False and why["decided_by"] is None and why["bar"] == pytest.approx(pooled_bar)
    assert any(r["at_chance"] for r in rows)  # the per-split rows keep the stricter reading
    # a model that says basketball to everyone, on forget athletes who all play it: its pooled accuracy
    # (0.56 with a third of the maintain athletes basketball players) is above chance, and is its pooled bar
    bf = ds.filter(lambda r: r.answer == "basketball").split(32, seed=3)[0]
    in_bf = {x.id for x in bf}
    bm = ds.filter(lambda r: r.id not in in_bf).split(64, seed=3)[0]
    blind = {}
    for split, items in (("forget", format_prompts(bf, "sport_played", seed=0)),
                         ("maintain", format_prompts(bm, "sport_played", seed=0))):
        z = np.zeros(len(items))
        said = np.array([it.candidates.index("basketball") for it in items])
        hit = np.array([it.answer == "basketball" for it in items])
        blind[split] = (items, None, PromptScores(tuple(items), z, z, hit, np.zeros(len(items), bool), z + .5, z, said))
    _, flag, why = _format_baselines("sport_played", blind)
    assert not not_above_chance(why["accuracy"], why["chance"], why["n"])  # the chance check alone passes it
    assert flag is True and why["decided_by"] == "answer bias" and why["bar"] == pytest.approx(why["accuracy"])


def test_side_effects_on_the_builtin_text_are_measured_on_text_the_editor_never_trained_on():
    """With the defaults (no text source for the editor's KL term nor for the evaluation) every
    side-effects chunk lay inside the editor's 32 training chunks of the built-in text, so the
    damage was measured on text the edit was trained to keep. Now the suite reads built-in
    passages nothing trains on; older folders resume with the shared text."""
    import torch

    from factlens.data.text import load_texts, token_chunks
    from factlens.editing.sampling import GeneralText
    from factlens.evaluation.side_effects import text_chunks

    tiny = tiny_model()
    held, train = load_texts(None, held_out=True), load_texts(None)
    assert len(held) == 48 and not set(held) & set(train)
    edit_cfg = EditConfig()
    trained = GeneralText.prepare(tiny, source=edit_cfg.sft_source, seq_len=edit_cfg.sft_seq_len,
                                  n_chunks=edit_cfg.n_sft_chunks, n_positions=None, batch_size=None,
                                  gen=torch.Generator().manual_seed(0), cache_bytes=0).tokens
    stream = trained[:, 1:].reshape(-1).tolist()  # the editor's training text, BOS dropped
    seen = {tuple(stream[i:i + 12]) for i in range(len(stream) - 11)}
    cfg = EvalConfig(text={"n_chunks": 4})

    def inside(chunks):  # share of the chunks' 12-token pieces that occur in the editor's training text
        pieces = [tuple(c[i:i + 12]) for c in chunks[:, 1:].tolist() for i in range(len(c) - 11)]
        return sum(p in seen for p in pieces) / len(pieces)

    assert inside(text_chunks(tiny, cfg)) < 0.1  # (the tiny tokenizer's runs of unknown-word ids match by chance)
    assert inside(text_chunks(tiny, cfg.override({"side_effects.held_out_text": False}))) > 0.8  # as before
    r = run_side_effects(tiny, original=tiny, config=cfg)
    assert r.extra["text_source"] == "builtin (held out)"
    with pytest.raises(ValueError, match="held_out=True selects the built-in held-out text"):
        load_texts("wikitext", held_out=True)
    assert torch.equal(text_chunks(tiny, cfg), token_chunks(tiny, load_texts(None, n=32, seed=0, held_out=True),
                                                            seq_len=cfg.text.seq_len, n_chunks=4))


def test_side_effects_warn_when_the_text_gives_fewer_chunks_than_asked():
    """The built-in held-out passages give about 25 chunks of 64 Gemma tokens: asking for more
    measured on fewer with no word but a count in ``extra``."""
    from factlens.evaluation.side_effects import text_chunks

    tiny = tiny_model()
    with pytest.warns(UserWarning, match="fewer than text.n_chunks=500"):
        chunks = text_chunks(tiny, EvalConfig(text={"n_chunks": 500}))
    assert 0 < chunks.shape[0] < 500


def test_evaluate_checks_its_arguments_before_anything_runs(planted, edited):
    """An edit's result as model or original failed with "the model has no tokenizer", a dataset as
    task with "AttributeError: 'objective'", suites=None with "'NoneType' object is not iterable",
    and suites=[] returned an empty result."""
    from factlens.editing import edit

    res = edit(planted.model, [planted.lookup_mlp], planted.task, config=EditConfig(steps=1, batch_size=None, grad_accum=1),
               show_progress=False)
    run = lambda **kw: evaluate(**{"model": res.model, "task": planted.task, "original": planted.model,
                                   "suites": ["standard"], "show_progress": False, **kw})
    for kw, error, match in (
            ({"model": res}, TypeError, r"model is an edit's result \(EditResult\), not a model: pass result.model"),
            ({"original": res}, TypeError, r"original is an edit's result .*pass the unedited model"),
            ({"model": "gemma"}, TypeError, r"model must be a TransformerLens HookedTransformer, got str"),
            ({"task": planted.dataset}, TypeError, r"evaluate\(\) needs a factlens Task, got FactDataset.*"
                                                   r"sports_athlete_editing\(dataset\)"),
            ({"suites": None}, TypeError, r"suites must be a list of suite names, got NoneType None; leave it out"),
            ({"suites": []}, ValueError, r"suites is empty: name at least one of \['standard'")):
        with pytest.raises(error, match=match):
            run(**kw)
    assert run()["standard"]["forget_accuracy"].baseline == 1.0  # the unedited model as original


def test_evaluate_refuses_an_original_of_another_model(planted, edited):
    """An unrelated original was accepted: the baselines and at-chance flags described it (forget
    accuracy baseline 0.375 instead of 1.0) without a word."""
    from factlens.testing import planted_fact_model

    other = planted_fact_model(n_subjects=20, seed=1).model  # the same architecture, another vocabulary
    for orig, what in ((other, r"another vocabulary \(unembedding rows, tokenizer size: \(113, 113\); the model: "),
                       (tiny_model(), r"another architecture \(original, model: \{'n_layers': \(2, 4\)")):
        with pytest.raises(ValueError, match=rf"original must be the unedited copy of the same model, .*{what}"):
            evaluate(edited, planted.task, original=orig, suites=["standard"], show_progress=False)
    same = evaluate(edited, planted.task, original=copy.deepcopy(planted.model), suites=["standard"],
                    show_progress=False)
    assert same["standard"]["forget_accuracy"].baseline == 1.0
