"""Checks of the attack suites' guards and settings: relearning's collapse bar, the quantization
suite's formats, settings that name unknown or repeated things, and the notes the suites write."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from factlens.data.formats import format_prompts
from factlens.editing.result import ParamDelta, full_mask
from factlens.evaluation.config import EvalConfig
from factlens.evaluation.direction_ablation import DirectionAblationConfig
from factlens.evaluation.quantization import QUANTIZED_WEIGHTS, QuantizationConfig, run_quantization
from factlens.evaluation.relearning import RelearningConfig, run_relearning
from factlens.evaluation.relearning_collapse import collapse_check as _collapse
from factlens.evaluation.standard import constant_bar, not_above_chance
from factlens.evaluation.soft_prompts import run_soft_prompts
from factlens.evaluation.unrelated_finetune import UnrelatedFinetuneConfig
from factlens.evaluation.update_size import UpdateSizeConfig, run_update_size
from factlens.prompt_scores import PromptScores, score_prompts
from factlens.tasks import Task
from factlens.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _says(scores: PromptScores, answer: str) -> PromptScores:
    """``scores`` of a model that gives ``answer`` to every prompt."""
    wins = np.array([it.answer == answer for it in scores.items])
    winner = np.array([it.candidates.index(answer) for it in scores.items])
    return PromptScores(**{**scores.__dict__, "answer_wins": wins, "p_answer_norm": wins.astype(float),
                           "winner": winner})


def _right_on_first(scores: PromptScores, k: int) -> PromptScores:
    """``scores`` of a model right on the first ``k`` prompts and on each other one giving the next
    candidate: its answers are spread as the true answers are, not one answer for everyone."""
    right = np.array([it.candidates.index(it.answer) for it in scores.items])
    winner = np.where(np.arange(len(right)) < k, right, (right + 1) % np.array([len(it.candidates)
                                                                              for it in scores.items]))
    wins = winner == right
    return PromptScores(**{**scores.__dict__, "answer_wins": wins, "p_answer_norm": wins.astype(float),
                           "winner": winner})


@pytest.fixture(scope="module")
def half_baseball(planted):
    """A task whose 32 maintain facts are 16 baseball and 16 basketball players (uniform chance 1/3,
    one answer for everyone scores 0.5), with football players to forget and retain."""
    football = planted.dataset.filter(lambda r: r.answer == "football")
    forget, retain = football.split(8, seed=0)
    maintain = planted.dataset.filter(lambda r: r.answer != "football")
    return Task("half_baseball", "unlearn", forget, retain, maintain, seed=0)


# -- relearning: a model that answers regardless of the athlete has collapsed ------------------------
def test_collapse_bar_is_one_answer_for_everyone(planted, half_baseball):
    """Maintain facts half baseball: a relearned model that says baseball to everyone scores 0.5,
    above uniform chance + 2 SE (0.5 vs 0.333 + 0.167) but exactly what its answers score regardless
    of the athlete (the expected agreement of its answers with the true ones)."""
    items = format_prompts(half_baseball.maintain, "default", seed=0)
    before = score_prompts(planted.model, items)
    mc = _collapse(before, _says(before, "baseball"))
    assert mc["maintain_after"] == 0.5 and mc["chance"] == pytest.approx(1 / 3)
    assert mc["collapsed"] is True and mc["bar"] == "answer agreement" and mc["bar_value"] == 0.5
    kept = _collapse(before, before)  # the model before the attack knows them all
    assert kept["collapsed"] is False and kept["bar"] == "answer agreement"


def test_collapse_reads_the_models_answers_not_the_commonest_true_answer(planted):
    """40 athletes, 16 baseball, 16 basketball, 8 football players; a model right on 20 of them that
    gives the next sport on the others spreads its answers over the sports: 0.5, above uniform chance
    + 2 SE (0.479) and above what its answers score regardless of the athlete, so not collapsed. The
    commonest true answer's share (0.4 + 2 SE = 0.555) says nothing about what the model answers; as
    the bar it flagged this model (on the main job's 64 athletes: any model below 0.51)."""
    football = [r.id for r in planted.dataset if r.answer == "football"][:8]
    facts = planted.dataset.filter(lambda r: r.answer != "football" or r.id in football)
    before = score_prompts(planted.model, format_prompts(facts, "default", seed=0))
    spread = _right_on_first(before, 20)
    assert not_above_chance(0.5, constant_bar(spread.items), 40)  # the commonest-answer bar would flag it
    mc = _collapse(before, spread)
    assert mc["maintain_after"] == 0.5 and mc["collapsed"] is False and mc["bar_value"] <= 0.5
    assert _collapse(before, _says(before, "baseball"))["collapsed"] is True


def test_collapse_falls_back_to_uniform_chance_when_the_agreement_bar_is_out_of_reach(planted, half_baseball):
    """4 maintain facts, 3 of them baseball: a model that knows them scores 1.0, its answers' agreement is
    0.625, and 0.625 + 2 SE is above 1: every model would count as collapsed; the bar is then uniform
    chance (as standard.readable does)."""
    facts = half_baseball.maintain
    four = facts.filter(lambda r: r.id in {x.id for x in list(facts.filter(lambda r: r.answer == "baseball"))[:3]}
                        | {x.id for x in list(facts.filter(lambda r: r.answer == "basketball"))[:1]})
    before = score_prompts(planted.model, format_prompts(four, "default", seed=0))
    mc = _collapse(before, before)
    assert mc["n"] == 4 and mc["bar"] == "uniform chance" and mc["bar_value"] == pytest.approx(1 / 3)
    assert mc["collapsed"] is False
    assert _collapse(before, _says(before, "football"))["collapsed"] is True


def test_relearning_flags_a_model_that_says_the_commonest_answer(planted, half_baseball, monkeypatch):
    """End to end: the maintain facts after the attack all answered "baseball" -> collapsed."""
    from factlens.evaluation import relearning as rl

    real, calls = rl.forget_scores, []

    def baseball_for_all(model, facts, config):  # only the maintain facts are scored through it
        calls.append(1)
        return _says(real(model, facts, config), "baseball")

    monkeypatch.setattr(rl, "forget_scores", baseball_for_all)
    cfg = EvalConfig(relearning=RelearningConfig(steps=1, rank=4, both_halves=False), text={"n_chunks": 4, "seq_len": 16})
    r = run_relearning(planted.model, half_baseball, config=cfg)
    mc = r.extra["maintain_collapse"]
    assert calls and r["relearn_maintain_accuracy"].value == 0.5 == mc["maintain_after"]
    assert mc["collapsed"] is True and mc["bar"] == "answer agreement" and mc["bar_value"] == 0.5


# -- quantization: formats the facts lack ----------------------------------------------------------
def test_quantization_refuses_when_no_requested_format_exists(planted):
    """The planted facts have no multiple-choice questions: formats=("mcq",) scored nothing and
    reported no metric, a NaN recovery and no note."""
    qc = QuantizationConfig(schemes=("int8",), formats=("mcq",))
    with pytest.raises(ValueError, match=r"formats \['mcq'\].*none of them.*'default'"):
        run_quantization(planted.model, planted.task, original=planted.model, quantization_config=qc)


def test_quantization_skips_and_lists_a_format_the_facts_lack(planted):
    """default + mcq on facts without MCQ: the default results, bit for bit, and mcq listed as unavailable."""
    runs = [run_quantization(planted.model, planted.task, original=planted.model,
                             quantization_config=QuantizationConfig(schemes=("int8",), formats=fmts))
            for fmts in (("default",), ("default", "mcq"))]
    only, both = runs
    assert [m.to_dict() for m in both.metrics] == [m.to_dict() for m in only.metrics] and both.metrics
    assert both.per_fact == only.per_fact and both.extra["schemes"] == only.extra["schemes"]
    assert both.extra["unavailable_formats"] == ["mcq"] and only.extra["unavailable_formats"] == []
    assert list(both.extra["settings"]["formats"]) == ["default", "mcq"]  # the settings as asked


# -- settings that name unknown or repeated things ---------------------------------------------------
@pytest.mark.parametrize("layers", [(1.5,), (True,), ("x",), (-1,), (), 1.5, "x"])
def test_direction_ablation_layers_must_be_integer_indices(layers):
    """1.5 ran at layer 1, True as layer 1, "x" gave int()'s bare error (as LogitLensConfig refuses them)."""
    with pytest.raises(ValueError, match=r"DirectionAblationConfig\.layers must be non-negative integer"):
        DirectionAblationConfig(layers=layers)


def test_direction_ablation_layers_keep_valid_input():
    assert DirectionAblationConfig(layers=(np.int64(3), 1)).layers == (3, 1)
    assert type(DirectionAblationConfig(layers=np.int64(2)).layers[0]) is int
    assert DirectionAblationConfig(layers=2).layers == (2,)


def test_quantization_targets_must_be_quantized_weights():
    """A typo ("W_ou") was dropped silently: the run quantized W_in only."""
    with pytest.raises(ValueError, match=r"unknown weights \['W_ou'\].*'W_out'"):
        QuantizationConfig(targets=("W_in", "W_ou"))
    with pytest.raises(ValueError, match="targets"):
        QuantizationConfig(targets=())
    assert QuantizationConfig(targets="W_in").targets == ("W_in",)
    assert QuantizationConfig().targets == QUANTIZED_WEIGHTS


def test_repeated_schemes_and_data_sources_are_refused():
    """A repeat ran twice under one metric name."""
    with pytest.raises(ValueError, match=r"QuantizationConfig\.schemes .*each named once.*'nf4', 'nf4'"):
        QuantizationConfig(schemes=("nf4", "nf4"))
    with pytest.raises(ValueError, match=r"UnrelatedFinetuneConfig\.data .*each named once.*'retain', 'retain'"):
        UnrelatedFinetuneConfig(data=("retain", "retain"))
    assert QuantizationConfig(schemes=("nf4", "int8")).schemes == ("nf4", "int8")
    assert UnrelatedFinetuneConfig(data=("text", "retain")).data == ("text", "retain")


# -- what the suites say about their numbers ---------------------------------------------------------
def test_update_size_note_says_erased_counts_codes():
    """A tiny update of a whole weight keeps every nf4 code (erased 1.0) while most dequantized values
    move with their block's absmax; the note said 'same quantized value'."""
    import torch

    m, name = tiny_model(), "blocks.1.mlp.W_in"
    p = dict(m.named_parameters())[name].detach()
    old = p.reshape(-1).clone()
    new = old + torch.randn(old.shape, generator=torch.Generator().manual_seed(0)) * 1e-5

    class Edit:
        model, deltas = m, {name: ParamDelta(full_mask(p.shape), old, new)}

        def check_compatible(self, model):
            pass

    r = run_update_size(m, None, edit_result=Edit(), update_size_config=UpdateSizeConfig(schemes=("nf4",)))
    assert r["update_erased_nf4"].value == 1.0
    note = r.extra["note"]
    assert "same quantization code" in note and "absmax" in note and "same quantized value" not in note


def test_soft_prompt_docstring_says_attack_damage_covers_maintain_facts():
    """``_attack_damage`` compares half B and the maintain facts; the docstring said half B."""
    doc = " ".join(inspect.getdoc(run_soft_prompts).split())
    sentence = doc[doc.index('``extra["attack_damage"]``'):].split(").")[0]
    assert "half B and the maintain facts" in sentence


def test_train_soft_prompt_docstring_names_the_batch_size_it_trains_with():
    """The facts per step are ``config.soft_prompts.batch_size``; the docstring said ``EvalConfig.batch_size``,
    which changes no training loss."""
    from factlens.evaluation.soft_prompts import SoftPromptsConfig, train_soft_prompt
    from factlens.testing import planted_fact_model

    doc = " ".join(inspect.getdoc(train_soft_prompt).split())
    config_arg = doc[doc.index("config: "):doc.index("seed: ")]
    assert "``batch_size``, the facts per step" in config_arg and "``EvalConfig.batch_size`` is not used" in config_arg
    p = planted_fact_model()
    cfg = EvalConfig(soft_prompts=SoftPromptsConfig(steps=2, length=2))
    _, losses = train_soft_prompt(p.model, p.task.forget, config=cfg)
    assert train_soft_prompt(p.model, p.task.forget, config=cfg.replace(batch_size=2))[1] == losses
    small = cfg.replace(soft_prompts=SoftPromptsConfig(steps=2, length=2, batch_size=2))
    assert train_soft_prompt(p.model, p.task.forget, config=small)[1] != losses


# -- probes: the best layer of a blind original is tested over every layer ----------------------------
def test_a_blind_originals_best_probe_layer_is_tested_over_every_layer(planted, monkeypatch):
    """32 forget facts, 12 layers where the original's probe reads nothing (blind chance 13/32, the
    commonest answer's share): 12 of 32 right at 11 layers, 19 of 32 at one (above chance + 2 SE
    alone, 0.58). The flag tested only the layers kept as informative, chosen on the same facts (that
    one: its plain 95 % Wilson bound 0.42 > 0.41), so a blind original passed; over all 12 layers
    (Bonferroni) its bound is 0.35: at chance."""
    import factlens.evaluation.probes as P

    ds = planted.dataset
    forget = ds.subset(range(32))
    task = Task("t", "inject", forget, ds.subset(range(32, 40)), ds.subset(range(40, 48)), seed=0)
    classes = sorted(ds.candidates)
    layers = 12
    right = np.zeros((32, layers), bool)
    right[:12, :] = True
    right[:19, 5] = True  # one layer at 19/32 by luck

    def blind(model, train, test, **kw):
        true = np.array([r.answer for r in test])
        wrong = np.array([classes[(classes.index(a) + 1) % 3] for a in true])
        preds = np.where(right, true[:, None], wrong[:, None])
        tgt = np.array([r.target_new for r in test])
        return {"layers": list(range(layers)), "classes": classes, "true": list(right.mean(0)),
                "target": list((preds == tgt[:, None]).mean(0)), "maintain_cv": [float("nan")] * layers, "n_cv": 0,
                "cv_chance": float("nan"), "predictions": preds.tolist(), "chance": 1 / 3,
                "true_in_classes": len(test), "target_in_classes": len(test), "n_train": 16, "n_test": len(test)}

    monkeypatch.setattr(P, "probe_layers", blind)
    r = P.run_probes(planted.model, task, original=object())
    chance = r.extra["forget_chance"]
    assert chance == 13 / 32
    assert not not_above_chance(19 / 32, chance, 32)  # the lucky layer alone passes the uncorrected test
    assert r["probe_true_accuracy_max"].at_chance is True
    assert r["probe_true_accuracy_last"].at_chance is True
