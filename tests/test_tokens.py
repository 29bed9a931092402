import torch

from factlens.data import sports_facts
from factlens.data.records import FactRecord
from factlens.tokens import answer_logprobs, answer_token_ids, encode_records, final_logits, tokenize_prompts
from factlens.testing import planted_fact_model, tiny_model


def test_subject_positions_exact():
    m = tiny_model()
    recs = list(sports_facts())[:5]
    b = encode_records(m, recs)
    tok = m.tokenizer
    for i, r in enumerate(recs):
        ids = b.tokens[i, b.subject_first[i]: b.subject_last[i] + 1].tolist()
        assert ids == tok(r.subject, add_special_tokens=False)["input_ids"]
        assert int(b.tokens[i, 0]) == tok.bos_token_id


def test_padding_equivalence():
    m = tiny_model(variant="gqa_gated")
    prompts = ["Fact: LeBron James plays the sport of", "Tom Brady is a professional",
               "The capital of France is", "Babe Ruth plays the sport of"]
    batch = tokenize_prompts(m, prompts)
    assert len(set(batch.lengths.tolist())) > 1  # really padded
    with torch.no_grad():
        padded = final_logits(m, batch)
        for i, p in enumerate(prompts):
            single = final_logits(m, tokenize_prompts(m, [p]))[0]
            torch.testing.assert_close(padded[i], single, atol=1e-5, rtol=1e-5)
            full = m(tokenize_prompts(m, [p]).tokens)[0, -1]
            torch.testing.assert_close(single, full, atol=1e-5, rtol=1e-5)


def test_answer_tokenization_and_multi_token_scores():
    m = tiny_model()
    assert len(answer_token_ids(m, "basketball")) == 1
    ids = answer_token_ids(m, "New York")
    assert len(ids) == 2
    prompt = "The capital of France is"
    lp = answer_logprobs(m, [prompt], ["New York"])[0]
    # hand-written teacher forcing
    toks = torch.tensor([[m.tokenizer.bos_token_id] + m.tokenizer(prompt, add_special_tokens=False)["input_ids"] + ids])
    with torch.no_grad():
        logp = torch.log_softmax(m(toks)[0], -1)
    n = toks.shape[1]
    ref = logp[n - 3, ids[0]] + logp[n - 2, ids[1]]
    torch.testing.assert_close(lp, ref, atol=1e-5, rtol=1e-5)
    # batching different answer lengths together gives the same numbers
    both = answer_logprobs(m, [prompt, prompt], ["New York", "Paris"], batch_size=2)
    torch.testing.assert_close(both[0], lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[1], answer_logprobs(m, [prompt], ["Paris"])[0], atol=1e-5, rtol=1e-5)


def test_bad_answers_rejected():
    m = tiny_model()
    import pytest

    with pytest.raises(ValueError, match="whitespace"):
        answer_token_ids(m, " basketball")
    with pytest.raises(ValueError, match="slot"):
        FactRecord(subject="A", template="no slot", answer="x")


def test_planted_known_via_scores():
    p = planted_fact_model()
    lp = answer_logprobs(p.model, [r.prompt for r in p.dataset], [r.answer for r in p.dataset])
    assert (lp.exp() > 0.5).all()


def test_length_batches_cover_every_prompt_once_within_size_and_spread():
    import random

    import pytest

    from factlens.tokens import length_batches

    rng = random.Random(0)
    lengths = [rng.choice([rng.randint(40, 130), rng.randint(150, 480)]) for _ in range(200)]
    batches = length_batches(lengths, 16, spread=1.25)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        ls = [lengths[i] for i in b]
        assert len(b) <= 16 and max(ls) <= 1.25 * min(ls) and ls == sorted(ls)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    order = sorted(range(200), key=lambda i: lengths[i])
    plain = sum(len(order[s:s + 16]) * max(lengths[i] for i in order[s:s + 16]) for s in range(0, 200, 16))
    assert sum(lengths) <= padded < plain
    with pytest.raises(ValueError, match="spread"):
        length_batches(lengths, 16, spread=0.5)


def test_mmlu_answers_do_not_depend_on_the_batches():
    """Grouping MMLU prompts by token length changes which prompts share a batch, not any answer."""
    import numpy as np

    from factlens.data.mmlu import MMLUQuestion, mmlu_accuracy

    m = tiny_model()
    qs = [MMLUQuestion("s", "Which one? " + "filler words here " * k, ("a", "b", "c", "d"), k % 4)
          for k in (0, 1, 2, 30, 3, 40, 4, 5)]
    one, many = mmlu_accuracy(m, qs, batch_size=1), mmlu_accuracy(m, qs, batch_size=8)
    assert np.array_equal(one.predicted, many.predicted)
    np.testing.assert_allclose(one.p_correct, many.p_correct, rtol=0, atol=1e-6)


def test_a_reduced_precision_model_scores_candidates_on_float32_logits():
    """In bfloat16 the logits are rounded to steps of 0.125 at 16-32, so candidates that differ less
    tied; the last positions' unembedding now runs in float32 (the model stays bfloat16)."""
    import torch

    from factlens.testing import tiny_model
    from factlens.tokens import final_logits, final_residual, tokenize_prompts, unembed

    m = tiny_model().to(torch.bfloat16)
    batch = tokenize_prompts(m, ["The river runs past", "The old mill stands by the"])
    logits = final_logits(m, batch)
    assert logits.dtype == torch.float32 and m.unembed.W_U.dtype == torch.bfloat16
    resid = m.ln_final(final_residual(m, batch.tokens, batch.last_pos)[:, None, :])[:, 0]
    exact = resid.float() @ m.unembed.W_U.float() + m.unembed.b_U.float()
    torch.testing.assert_close(logits, exact, rtol=1e-5, atol=1e-5)
    coarse = unembed(m, final_residual(m, batch.tokens, batch.last_pos)[:, None, :])[:, 0]  # the bfloat16 logits
    assert coarse.dtype == torch.bfloat16 and len(torch.unique(logits[0])) > len(torch.unique(coarse[0]))


def test_multi_token_answers_of_a_reduced_precision_model_are_scored_on_float32_logits(monkeypatch):
    import torch

    import factlens.tokens as T
    from factlens.testing import tiny_model
    from factlens.tokens import answer_logprobs

    calls, real = [], T._unembed_linear_float32
    monkeypatch.setattr(T, "_unembed_linear_float32", lambda u, h, **k: calls.append(h.shape) or real(u, h, **k))
    m = tiny_model()
    half = tiny_model().to(torch.bfloat16)
    a32 = answer_logprobs(m, ["The river runs past the"], ["old stone mill"])
    a16 = answer_logprobs(half, ["The river runs past the"], ["old stone mill"])
    assert a16.dtype == torch.float32 and torch.isfinite(a16).all()
    torch.testing.assert_close(a16, a32, rtol=0.05, atol=0.05)  # bfloat16 activations, float32 logits
    assert calls  # the teacher-forced positions went through the float32 unembedding
