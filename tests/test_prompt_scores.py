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


def test_token_mean_compares_candidates_per_token_as_rome_does():
    """Candidates were compared only by the whole answer's log-probability, which favours the shorter
    answer; ROME's and MEMIT's CounterFact scores compare the mean log-probability per token.
    ``candidate_score="token_mean"`` does that; the summed log-probabilities stay as they were."""
    from factlens.data.formats import FormattedPrompt
    from factlens.evaluation.soft_prompts import soft_prompt_scores
    from factlens.testing import tiny_model
    from factlens.tokens import answer_token_ids, candidate_logprobs

    m = tiny_model()
    cands = ("tennis", "basketball player", "ice hockey team")
    n_tok = torch.tensor([len(answer_token_ids(m, c)) for c in cands], dtype=torch.float64)
    assert n_tok.tolist()[0] == 1 and min(n_tok.tolist()[1:]) > 1
    prompts = [f"Fact {i}: player {i} plays" for i in range(12)]
    items = [FormattedPrompt(p, cands[i % 3], cands[(i + 1) % 3], cands, str(i), "default")
             for i, p in enumerate(prompts)]
    lps = [lp.double() for lp in candidate_logprobs(m, prompts, [cands] * len(prompts))]
    summed, per_token = score_prompts(m, items), score_prompts(m, items, candidate_score="token_mean")
    want = [int(torch.argmax(lp / n_tok)) for lp in lps]
    assert per_token.winner.tolist() == want
    assert summed.winner.tolist() == [int(torch.argmax(lp)) for lp in lps]
    assert summed.winner.tolist() != want  # the rule matters on this model
    assert (per_token.logp_answer == summed.logp_answer).all()
    # the probabilities stay the whole answers' (a softmax of per-token means is the probability of nothing)
    assert (per_token.p_answer_norm == summed.p_answer_norm).all()
    torch.testing.assert_close(torch.tensor(per_token.p_answer_norm),
                               torch.stack([torch.softmax(lp, 0)[i % 3] for i, lp in enumerate(lps)]))
    soft = torch.randn(2, m.cfg.d_model, generator=torch.Generator().manual_seed(0))
    with_soft = {how: soft_prompt_scores(m, soft, items, candidate_score=how)["winner"].tolist()
                 for how in ("sum", "token_mean")}
    assert with_soft["sum"] != with_soft["token_mean"]  # the attack's scoring follows the rule too
    with pytest.raises(ValueError, match=r"candidate_score must be one of \['sum', 'token_mean'\]"):
        score_prompts(m, items, candidate_score="mean")


def test_one_token_candidates_rank_the_same_either_way():
    p = planted_fact_model()
    items = format_prompts(p.dataset)
    a, b = score_prompts(p.model, items), score_prompts(p.model, items, candidate_score="token_mean")
    assert (a.winner == b.winner).all() and (a.p_answer_norm == b.p_answer_norm).all()
