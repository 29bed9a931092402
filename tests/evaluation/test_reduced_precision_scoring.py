"""Soft prompts, the logit lens and the side-effects text read their wins from float32 logits in a
bfloat16 model, as prompt scoring does (bfloat16 logits tie the top candidates: Gemma 3 270M in
bfloat16 tied 9 of 160 sports prompts at the soft-prompt read-out, float32 none)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import factlens.tokens as T
from factlens.data.formats import format_prompts
from factlens.evaluation.logit_lens import lens_scores
from factlens.evaluation.soft_prompts import soft_prompt_scores
from factlens.prompt_scores import score_prompts

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def counted(monkeypatch):
    calls, real = [], T._unembed_linear_float32
    monkeypatch.setattr(T, "_unembed_linear_float32", lambda u, h, **k: calls.append(h.shape) or real(u, h, **k))
    return calls


@pytest.mark.parametrize("multi_token", [False, True])
def test_soft_prompt_wins_of_a_bfloat16_model_come_from_float32_logits(planted, counted, multi_token):
    import copy

    m = copy.deepcopy(planted.model).to(torch.bfloat16)
    items = format_prompts(planted.task.forget, "default")
    if multi_token:  # a two-token candidate takes the teacher-forced path
        items = [dataclasses.replace(it, candidates=(*it.candidates, "football golf")) for it in items]
    soft = torch.zeros(2, m.cfg.d_model, dtype=torch.bfloat16)
    scores = soft_prompt_scores(m, soft, items, position="prepend")
    assert counted, "the soft-prompt read-out used the bfloat16 unembedding"
    assert np.isfinite(scores["p_answer"]).all()


def test_logit_lens_of_a_bfloat16_model_reads_float32_logits(planted, counted):
    import copy

    m = copy.deepcopy(planted.model).to(torch.bfloat16)
    items = format_prompts(planted.task.forget, "default")
    last = lens_scores(m, items, layers=[m.cfg.n_layers - 1])
    assert counted, "the lens read the bfloat16 unembedding"
    # at the last layer the lens is the model's output: the same winners as prompt scoring
    np.testing.assert_array_equal(last.winner[:, 0], score_prompts(m, items).winner)


def test_side_effects_text_of_a_bfloat16_model_reads_float32_logits(planted, counted):
    import copy

    from factlens.evaluation.side_effects import text_metrics

    m = copy.deepcopy(planted.model).to(torch.bfloat16)
    toks = torch.randint(1, m.cfg.d_vocab, (2, 8))
    text_metrics(m, toks)
    assert counted


def test_side_effects_kl_reads_both_models_in_float32_and_training_keeps_the_model_dtype(planted, counted):
    import copy

    from factlens.editing.sweep import text_accuracy
    from factlens.evaluation.side_effects import text_metrics
    from factlens.evaluation.soft_prompts import _soft_logprobs

    m = copy.deepcopy(planted.model).to(torch.bfloat16)
    original = copy.deepcopy(planted.model).to(torch.bfloat16)
    toks = torch.randint(1, m.cfg.d_vocab, (2, 8))
    text_metrics(m, toks, original=original)
    assert len(counted) == 4  # two chunks, the edited and the original model each
    counted.clear()
    text_accuracy(m, toks)
    assert len(counted) == 2
    counted.clear()
    # training a soft prompt: autograd would keep a float32 copy of W_U, so the model's own dtype there
    soft = torch.zeros(2, m.cfg.d_model, dtype=torch.bfloat16, requires_grad=True)
    lp = _soft_logprobs(m, soft, ["Michael Jordan plays the sport of"], ["basketball"], "prepend")
    lp.sum().backward()
    assert not counted and soft.grad is not None
    with torch.no_grad():
        _soft_logprobs(m, soft, ["Michael Jordan plays the sport of"], ["basketball"], "prepend")
    assert counted  # scoring without gradients: float32
