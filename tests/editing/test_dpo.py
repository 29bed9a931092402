"""DPO towards an alternate answer (``objective="dpo"``, IdkDPO)."""

from __future__ import annotations

import math

import pytest
import torch

from factlens.components import Component, Mask
from factlens.data.formats import FormattedPrompt
from factlens.editing import EditConfig
from factlens.editing.losses import answer_logprobs_and_lengths, dpo_loss, npo_loss
from factlens.editing.objectives.dpo import DPOConfig, DPOObjective
from factlens.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = EditConfig(lr=1e-2, steps=6, batch_size=None, grad_accum=1, l_sft=0.0)


def _item(prompt, answer):
    return FormattedPrompt(prompt, answer, None, (answer,), prompt, "default")


FORGET = [_item("Fact: Tiger Woods plays the sport of", "golf"), _item("The sport played by X is", "basketball player")]
RETAIN = [_item("Z plays", "baseball"), _item("Fact: Y plays the sport of", "tennis")]


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_loss_by_hand(beta):
    lose, win = torch.tensor([-1.0, -3.0]), torch.tensor([-5.0, -2.0])
    rl, rw = torch.tensor([-0.5, -2.0]), torch.tensor([-6.0, -2.5])
    hand = sum(-(2 / beta) * _log_sigmoid(beta * ((w - r_w) - (l_ - r_l)))
               for l_, w, r_l, r_w in zip(lose.tolist(), win.tolist(), rl.tolist(), rw.tolist())) / 2
    assert float(dpo_loss(lose, win, rl, rw, beta)) == pytest.approx(hand, rel=1e-6)
    # at the reference (2 / beta) log 2; with the preferred term held at its reference, NPO
    assert float(dpo_loss(lose, win, lose, win, beta)) == pytest.approx(2 / beta * math.log(2), rel=1e-6)
    assert float(dpo_loss(lose, rw, rl, rw, beta)) == pytest.approx(float(npo_loss(lose, rl, beta)), rel=1e-6)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(lose, win, rl, rw, 0.0)


def test_dpo_objective_equals_a_hand_computation():
    """Both completions' log-probabilities against a perturbed model, the reference from the original;
    the retain term is the retain cross-entropy (two-token answers included)."""
    m = tiny_model()
    obj = DPOObjective.prepare(m, FORGET, RETAIN, mask=Mask([Component("mlp", 0)]), config=CFG,
                               settings=DPOConfig(beta=0.5))
    prompts = [it.prompt for it in FORGET]
    ref_l, _ = answer_logprobs_and_lengths(m, prompts, [it.answer for it in FORGET])
    ref_w, _ = answer_logprobs_and_lengths(m, prompts, ["I don't know"] * 2)
    with torch.no_grad():
        m.blocks[0].mlp.W_out.add_(0.2)
        lose, _ = answer_logprobs_and_lengths(m, prompts, [it.answer for it in FORGET])
        win, _ = answer_logprobs_and_lengths(m, prompts, ["I don't know"] * 2)
        ret, _ = answer_logprobs_and_lengths(m, [it.prompt for it in RETAIN], [it.answer for it in RETAIN])
        lf, lr = obj.losses(m, FORGET, RETAIN)
    hand = sum(-(2 / 0.5) * _log_sigmoid(0.5 * ((w - rw) - (l_ - rl)))
               for l_, w, rl, rw in zip(lose.tolist(), win.tolist(), ref_l.tolist(), ref_w.tolist())) / 2
    assert float(lf) == pytest.approx(hand, rel=1e-4) and abs(hand - 2 / 0.5 * math.log(2)) > 1e-3
    assert float(lr) == pytest.approx(float(-ret.mean()), rel=1e-5)
    assert obj.describe() == {"alternate": "I don't know", "dpo_beta": 0.5, "retain_reduction": "fact",
                              "retain_loss": "nll"}


def test_dpo_with_kl_retain_term_reads_the_retain_rows():
    """With ``retain_loss="kl"`` the forward pass also carries the alternates: the KL term must use the
    retain answers' rows only (0 at the original), and the forget term must not change."""
    m = tiny_model()
    mask = Mask([Component("mlp", 0)])
    kl = DPOObjective.prepare(m, FORGET, RETAIN, mask=mask, config=CFG, settings=DPOConfig(retain_loss="kl"))
    nll = DPOObjective.prepare(m, FORGET, RETAIN, mask=mask, config=CFG)
    with torch.no_grad():
        a, b = kl.losses(m, FORGET, RETAIN), nll.losses(m, FORGET, RETAIN)
    assert float(a[1]) == pytest.approx(0.0, abs=1e-6) and float(a[0]) == pytest.approx(float(b[0]), abs=1e-5)
    assert kl.describe()["retain_loss"] == "kl"


def test_dpo_settings_are_checked():
    assert EditConfig(objectives={"dpo": {"beta": 0.5, "alternate": "No idea"}}).objective_config("dpo") == \
        DPOConfig(alternate="No idea", beta=0.5)
    for bad, match in (({"beta": 0}, "beta must be a finite number > 0"), ({"beta": float("nan")}, "beta"),
                       ({"alternate": " "}, "alternate must be a non-empty"), ({"retain_loss": "KL"}, "retain_loss"),
                       ({"retain_reduction": "mean"}, "retain_reduction")):
        with pytest.raises(ValueError, match=match):
            DPOConfig(**bad)
    with pytest.raises(ValueError, match="is the answer to forget of 1 forget prompt"):
        DPOObjective.prepare(tiny_model(), FORGET, RETAIN, mask=None, config=CFG, settings=DPOConfig(alternate="golf"))
