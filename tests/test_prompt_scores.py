"""factlens.prompt_scores: scoring formatted prompts among their candidates."""

from __future__ import annotations

import copy

import pytest
import torch

from factlens.data.formats import format_prompts
from factlens.prompt_scores import score_prompts
from factlens.testing import planted_fact_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_nan_log_probabilities_raise_instead_of_picking_the_first_candidate():
    """A model with NaN weights gave NaN log-probs for every candidate; argmax picked index 0, the true
    answer, so a diverged model scored as knowing every fact (or, in an unlearning run, as forgetting none)."""
    p = planted_fact_model()
    broken = copy.deepcopy(p.model)
    with torch.no_grad():
        broken.blocks[1].mlp.W_out.fill_(float("nan"))
    items = format_prompts(p.dataset)
    assert score_prompts(p.model, items).accuracy() == 1.0
    with pytest.raises(FloatingPointError, match="NaN log-probabilities"):
        score_prompts(broken, items)


def test_candidates_tied_at_the_top_are_a_win_for_none():
    """argmax gave a tie to the first candidate, the true answer here: a model whose unembedding
    cannot tell the answers apart scored every fact as known (in bfloat16 Gemma 3 270M tied at the
    top on 52 of 600 athletes). A tie is now no answer: neither the answer nor the target wins."""
    from factlens.data.mmlu import MMLUQuestion, mmlu_accuracy
    from factlens.evaluation.soft_prompts import soft_prompt_scores
    from factlens.tokens import unique_argmax

    p = planted_fact_model()
    blind = copy.deepcopy(p.model)
    with torch.no_grad():
        blind.unembed.W_U.zero_()
        blind.unembed.b_U.zero_()
    items = format_prompts(p.dataset)
    s = score_prompts(blind, items)
    assert s.accuracy() == 0.0 and not s.target_wins.any() and (s.winner == -1).all()
    assert s.predicted() == [None] * len(items)
    assert unique_argmax(torch.tensor([1.0, 3.0, 2.0])) == 1 and unique_argmax(torch.tensor([3.0, 3.0])) == -1
    soft = soft_prompt_scores(blind, torch.zeros(2, blind.cfg.d_model), items[:4])
    assert not soft["answer_wins"].any() and (soft["winner"] == -1).all()
    q = MMLUQuestion("a subject", "Which letter?", ("one", "two", "three", "four"), 0)
    res = mmlu_accuracy(blind, [q])
    assert int(res.predicted[0]) == -1 and not res.correct[0]  # argmax answered "A", the right letter here
