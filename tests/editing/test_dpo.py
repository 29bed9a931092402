"""DPO towards an alternate answer (``objective="dpo"``, IdkDPO)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from factlens.components import Component, Mask
from factlens.data.formats import FormattedPrompt
from factlens.editing import EditConfig
from factlens.editing.losses import answer_kl, dpo_loss, npo_loss
from factlens.editing.objectives.dpo import DPOConfig, DPOObjective
from factlens.testing import tiny_model
from factlens.tokens import _bos_id, _encode, answer_token_ids

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = EditConfig(lr=1e-2, steps=6, batch_size=None, grad_accum=1, l_sft=0.0)


def _item(prompt, answer):
    return FormattedPrompt(prompt, answer, None, (answer,), prompt, "default")


PRE = "Fact: Tiger Woods plays the sport of golf\nFact:"  # shared by every prompt: the prefix cache runs
FORGET = [_item(PRE + " A plays the sport of", "golf"), _item(PRE + " B plays the sport of", "basketball player")]
RETAIN = [_item(PRE + " Z plays", "baseball"), _item(PRE + " Y is", "the sport of tennis")]
ALT = "a professional"  # words the word-level test tokenizer knows (it spells "I don't know" as unknown tokens)


def _rows(model, it, answer=None):
    """Next-token log-probabilities at the positions predicting the answer's tokens, from one plain forward."""
    bos = _bos_id(model)
    ids = ([bos] if bos is not None else []) + _encode(model, it.prompt)[0]
    a = answer_token_ids(model, it.answer if answer is None else answer)
    with torch.no_grad():
        lg = model(torch.tensor([ids + a[:-1]]))[0].float().log_softmax(-1)
    return lg[len(ids) - 1: len(ids) - 1 + len(a)], a


def _logp(model, it, answer=None) -> float:
    r, a = _rows(model, it, answer)
    return float(r[torch.arange(len(a)), torch.tensor(a)].sum())


def _perturbed(model):
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.blocks[0].mlp.W_out.add_(0.2)
        m.blocks[1].mlp.W_out.mul_(1.5)
    return m


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
    """Both completions' log-probabilities from plain forwards of a perturbed model, the reference from the
    original's; the retain term is the retain cross-entropy (a four-token answer included)."""
    m = tiny_model()
    obj = DPOObjective.prepare(m, FORGET, RETAIN, mask=Mask([Component("mlp", 0)]), config=CFG,
                               settings=DPOConfig(beta=0.5, alternate=ALT))
    e = _perturbed(m)
    with torch.no_grad():
        lf, lr = obj.losses(e, FORGET[::-1], RETAIN)
    hand = sum(-(2 / 0.5) * _log_sigmoid(0.5 * ((_logp(e, it, ALT) - _logp(m, it, ALT)) - (_logp(e, it) - _logp(m, it))))
               for it in FORGET) / 2
    assert float(lf) == pytest.approx(hand, rel=1e-4) and abs(hand - 2 / 0.5 * math.log(2)) > 1e-3
    assert float(lr) == pytest.approx(-sum(_logp(e, it) for it in RETAIN) / 2, rel=1e-4)
    assert obj.describe() == {"alternate": ALT, "dpo_beta": 0.5, "retain_reduction": "fact", "retain_loss": "nll"}


@pytest.mark.parametrize("reduction", ["fact", "token"])
def test_dpo_with_kl_retain_term_reads_the_retain_rows(reduction):
    """With ``retain_loss="kl"`` the forward pass also carries the alternates behind the retain rows: the KL
    term must read the retain answers' rows only. Against plain forwards of a perturbed model, with a
    three-token retain answer that makes the two reductions differ; the forget term is the NLL variant's."""
    m = tiny_model()
    mask = Mask([Component("mlp", 0)])
    kl = DPOObjective.prepare(m, FORGET, RETAIN, mask=mask, config=CFG,
                              settings=DPOConfig(alternate=ALT, retain_loss="kl", retain_reduction=reduction))
    nll = DPOObjective.prepare(m, FORGET, RETAIN, mask=mask, config=CFG, settings=DPOConfig(alternate=ALT))
    e = _perturbed(m)
    batch = [RETAIN[1], RETAIN[0], RETAIN[1]]
    with torch.no_grad():
        a, b = kl.losses(e, FORGET, batch), nll.losses(e, FORGET, batch)
        at_original = kl.losses(m, FORGET, batch)[1]
    per = [(r0.exp() * (r0 - r1)).sum(-1) for r0, r1 in ((_rows(m, it)[0], _rows(e, it)[0]) for it in batch)]
    assert [len(x) for x in per] == [4, 1, 4]
    hand = torch.stack([x.sum() for x in per]).mean() if reduction == "fact" else torch.cat(per).mean()
    assert float(a[1]) == pytest.approx(float(hand), rel=1e-4) and float(hand) > 1e-4
    assert float(a[0]) == pytest.approx(float(b[0]), abs=1e-5) and abs(float(at_original)) < 1e-6
    assert kl.describe()["retain_loss"] == "kl"


def test_dpo_warns_about_an_alternate_of_unknown_tokens():
    """The word-level test tokenizer spells "I don't know" as unknown tokens: DPO would prefer those."""
    with pytest.warns(UserWarning, match="has words this tokenizer does not know"):
        DPOObjective.prepare(tiny_model(), FORGET, RETAIN, mask=None, config=CFG)


def test_dpo_settings_are_checked():
    assert EditConfig(objectives={"dpo": {"beta": 0.5, "alternate": "No idea"}}).objective_config("dpo") == \
        DPOConfig(alternate="No idea", beta=0.5)
    for bad, match in (({"beta": 0}, "beta must be a finite number > 0"), ({"beta": float("nan")}, "beta"),
                       ({"alternate": " "}, "alternate must be a non-empty"), ({"retain_loss": "KL"}, "retain_loss"),
                       ({"retain_reduction": "mean"}, "retain_reduction")):
        with pytest.raises(ValueError, match=match):
            DPOConfig(**bad)
    with pytest.raises(ValueError, match=r"without surrounding whitespace.*use \"I don't know\""):
        DPOConfig(alternate=" I don't know")
    with pytest.raises(ValueError, match="is the answer to forget of 1 forget prompt"):
        DPOObjective.prepare(tiny_model(), FORGET, RETAIN, mask=None, config=CFG, settings=DPOConfig(alternate="golf"))


def test_answer_kl_refuses_an_unknown_reduction():
    """Any reduction but "token" was silently the per-fact mean ("tokens", "sum", None)."""
    r = torch.log_softmax(torch.tensor([[0.0, 1.0]]), dim=-1)
    with pytest.raises(ValueError, match="reduction must be one of"):
        answer_kl(r, r, torch.tensor([1.0]), "tokens")
