"""The KL retain term of GradDiff, NPO and SimNPO (``retain_loss="kl"``, :class:`RetainKL`)."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch

from factlens.components import Component, Mask
from factlens.data.formats import FormattedPrompt, format_prompts
from factlens.editing import EditConfig, edit
from factlens.editing.objectives.base import RetainKL, batch_logprobs
from factlens.editing.objectives.gradient_ascent import GradDiffConfig, GradDiffObjective, GradientAscentConfig
from factlens.editing.objectives.npo import NPOConfig, NPOObjective, SimNPOObjective
from factlens.testing import tiny_model
from factlens.testing.invariants import assert_unchanged, no_hooks, snapshot
from factlens.tokens import _bos_id, _encode, answer_token_ids

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = EditConfig(lr=1e-2, steps=6, batch_size=None, grad_accum=1, n_sft_chunks=4)


def _item(prompt, answer):
    return FormattedPrompt(prompt, answer, None, (answer,), prompt, "default")


# every prompt starts with the same few-shot example (the shared-prefix cache runs), answers of 1-4 tokens
PRE = "Fact: Tiger Woods plays the sport of golf\nFact:"
FORGET = [_item(PRE + " A plays the sport of", "golf"), _item(PRE + " B is", "the sport of tennis")]
RETAIN = [_item(PRE + " D plays the sport of", "basketball player"), _item(PRE + " E plays", "baseball"),
          _item(PRE + " F plays the sport of", "tennis")]
# a micro-batch in another order than prepare's, with a duplicate
BATCH = [RETAIN[2], RETAIN[0], RETAIN[2], RETAIN[1]]


def _hand_rows(model, it) -> torch.Tensor:
    """Next-token log-probabilities at the positions predicting ``it``'s answer tokens, from one plain forward."""
    bos = _bos_id(model)
    ids = ([bos] if bos is not None else []) + _encode(model, it.prompt)[0]
    a = answer_token_ids(model, it.answer)
    with torch.no_grad():
        lg = model(torch.tensor([ids + a[:-1]]))[0].float().log_softmax(-1)
    return lg[len(ids) - 1: len(ids) - 1 + len(a)]


def _perturbed(model, seed=0, scale=0.3):
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in m.blocks:
            b.mlp.W_out.add_(scale * torch.randn(b.mlp.W_out.shape, generator=g))
    return m


@pytest.mark.parametrize("reduction", ["fact", "token"])
@pytest.mark.parametrize("cls,settings", [(GradDiffObjective, GradDiffConfig), (NPOObjective, NPOConfig),
                                          (SimNPOObjective, NPOConfig)])
def test_kl_retain_term_equals_a_hand_computation(cls, settings, reduction):
    """``KL(p_original || p_model)`` at each retain answer token, summed over a fact's tokens and averaged over
    facts ("fact") or averaged over tokens ("token"), against full forwards of both models; a two-token
    answer makes the two reductions differ. The forget term is the one of ``retain_loss="nll"``."""
    from factlens.editing.losses import shared_prompt_tokens

    m = tiny_model()
    assert shared_prompt_tokens(m, [it.prompt for it in FORGET + RETAIN]) > 5
    field = "reduction" if cls is GradDiffObjective else "retain_reduction"
    obj = cls.prepare(m, FORGET, RETAIN, mask=Mask([Component("mlp", 0)]), config=FAST,
                      settings=settings(retain_loss="kl", **{field: reduction}))
    assert obj.describe()["retain_loss"] == "kl"
    edited = _perturbed(m)
    lf, lr = (x.detach() for x in obj.losses(edited, FORGET, BATCH))
    per = []
    for it in BATCH:
        ref, cur = _hand_rows(m, it), _hand_rows(edited, it)
        per.append((ref.exp() * (ref - cur)).sum(-1))
    assert [len(x) for x in per] == [1, 2, 1, 1]
    hand = torch.stack([x.sum() for x in per]).mean() if reduction == "fact" else torch.cat(per).mean()
    assert float(lr) == pytest.approx(float(hand), rel=1e-4, abs=1e-7) and float(hand) > 1e-4
    nll = cls.prepare(m, FORGET, RETAIN, mask=Mask([Component("mlp", 0)]), config=FAST,
                      settings=settings(**{field: reduction}))
    assert float(lf) == pytest.approx(float(nll.losses(edited, FORGET, BATCH)[0].detach()), abs=1e-5)


def test_kl_retain_term_is_zero_with_zero_gradient_at_the_original():
    """At the model it was prepared on the KL term and its gradient vanish (a minimum), unlike the cross-entropy."""
    m = tiny_model()
    obj = GradDiffObjective.prepare(m, FORGET, RETAIN, mask=None, config=FAST,
                                    settings=GradDiffConfig(retain_loss="kl"))
    w = m.blocks[0].mlp.W_out
    before = w.requires_grad
    w.requires_grad_(True)
    try:
        _, lr = obj.losses(m, FORGET, RETAIN)
        (g,) = torch.autograd.grad(lr, w)
    finally:
        w.requires_grad_(before)
    assert abs(float(lr.detach())) < 1e-6 and float(g.abs().max()) < 1e-5


def test_kl_retain_edits_only_the_mask_and_records_itself(planted):
    """Masked fine-tuning with GradDiff-KL: the user's model is unchanged, only masked entries move, no hooks
    remain, the retain term starts at 0 and the result's meta says which retain term ran."""
    task = replace(planted.task, objective="unlearn")
    mask = Mask([planted.lookup_mlp])
    snap = snapshot(planted.model)
    for name, settings in (("graddiff", GradDiffConfig(retain_loss="kl")), ("npo", NPOConfig(retain_loss="kl")),
                           ("simnpo", NPOConfig(retain_loss="kl"))):
        res = edit(planted.model, mask, task, objective=name, config=FAST.replace(objectives={name: settings}),
                   show_progress=False)
        assert_unchanged(planted.model, snap)
        assert res.meta["retain_loss"] == "kl" and res.history[0]["loss_retain"] == pytest.approx(0.0, abs=1e-7)
        assert all(math.isfinite(h["loss"]) for h in res.history) and res.history[-1]["loss_retain"] > 0
        pm = mask.to_param_masks(res.model)
        for n, p in res.model.named_parameters():
            same = p.detach()[~pm[n]] if n in pm else p.detach()
            old = snap.state[n][~pm[n]] if n in pm else snap.state[n]
            assert torch.equal(same, old), (name, n)
        assert no_hooks(res.model)
    # the default stays the cross-entropy, and says so
    res = edit(planted.model, mask, task, objective="graddiff", config=FAST, show_progress=False)
    assert res.meta["retain_loss"] == "nll" and res.history[0]["loss_retain"] > 0


def test_kl_retain_settings_are_checked():
    assert EditConfig(objectives={"graddiff": {"retain_loss": "kl"}}).objective_config("graddiff") == \
        GradDiffConfig(retain_loss="kl")
    assert EditConfig(objectives={"npo": {"retain_loss": "kl"}}).objective_config("npo").retain_loss == "kl"
    with pytest.raises(ValueError, match=r"GradDiffConfig.retain_loss must be one of \['nll', 'kl'\], got 'KL'"):
        GradDiffConfig(retain_loss="KL")
    with pytest.raises(ValueError, match="NPOConfig.retain_loss must be one of"):
        EditConfig(objectives={"simnpo": {"retain_loss": "mse"}})
    with pytest.raises((TypeError, ValueError), match="retain_loss"):  # plain gradient ascent has no retain term
        EditConfig(objectives={"gradient_ascent": {"retain_loss": "kl"}})
    assert GradientAscentConfig().reduction == GradDiffConfig().reduction == "fact"


def test_kl_retain_is_not_prepared_without_a_retain_term():
    """``l_retain=0`` or no retain facts: nothing is cached (the term is 0 either way)."""
    m = tiny_model()
    kl = GradDiffConfig(retain_loss="kl")
    assert GradDiffObjective.prepare(m, FORGET, RETAIN, mask=None, config=FAST.replace(l_retain=0.0),
                                     settings=kl).retain_kl is None
    assert GradDiffObjective.prepare(m, FORGET, [], mask=None, config=FAST, settings=kl).retain_kl is None
    assert NPOObjective.prepare(m, FORGET, [], mask=None, config=FAST,
                                settings=NPOConfig(retain_loss="kl")).retain_kl is None


def test_kl_retain_refuses_a_cache_above_its_limit_and_unknown_prompts():
    m = tiny_model()
    rows = sum(len(answer_token_ids(m, it.answer)) for it in RETAIN)
    with pytest.raises(ValueError, match=rf"3 retain facts, {rows} answer tokens x {m.cfg.d_vocab}.*retain_loss='nll'"):
        RetainKL.prepare(m, RETAIN, cache_bytes=rows * m.cfg.d_vocab * 4 - 1)
    kl = RetainKL.prepare(m, RETAIN, cache_bytes=rows * m.cfg.d_vocab * 4)
    other = [_item("Someone else plays", "golf")]
    with pytest.raises(ValueError, match="no reference distribution for retain prompt"):
        kl.loss(batch_logprobs(m, FORGET, other, retain_rows=True), other)
    with pytest.raises(ValueError, match="retain_rows=True"):
        kl.loss(batch_logprobs(m, FORGET, RETAIN), RETAIN)


def test_the_edit_records_the_retain_term_asked_for_without_retain_facts(planted):
    """With ``l_retain=0`` no KL term is prepared, and the edit's meta said ``retain_loss: "nll"`` (a term
    neither asked for nor run); it records what was asked, beside ``n_retain_prompts = 0``."""
    task = replace(planted.task, objective="unlearn")
    cfg = FAST.replace(l_retain=0.0, objectives={"npo": NPOConfig(retain_loss="kl")})
    res = edit(planted.model, Mask([planted.lookup_mlp]), task, objective="npo", config=cfg, show_progress=False)
    assert res.meta["retain_loss"] == "kl" and res.meta["n_retain_prompts"] == 0
