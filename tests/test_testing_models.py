"""Tests of the test models in ``factlens.testing``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from factlens.testing import PlantedFactModel, planted_fact_model, tiny_model, word_tokenizer
from factlens.testing.tiny import builtin_words

BUILTIN = Path(__file__).resolve().parent.parent / "factlens" / "data" / "builtin"
FEW_SHOT = "Fact: Tiger Woods plays the sport of golf\nFact: LeBron James plays the sport of"


# --- tokenizer -------------------------------------------------------------------------


def test_word_tokenizer_round_trip_and_offsets():
    tok = word_tokenizer(["Fact: Tiger Woods plays the sport of golf", "LeBron James"])
    enc = tok(FEW_SHOT, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    pieces = tok.convert_ids_to_tokens(ids)
    assert "\n" in pieces
    for piece, (a, b) in zip(pieces[1:], offsets[1:]):
        assert FEW_SHOT[a:b] == piece
    assert tok(" golf", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids("golf")]
    assert tok.decode(ids, skip_special_tokens=True).split(" ") == pieces[1:]
    assert word_tokenizer(["b a", "c"]).get_vocab() == word_tokenizer(["c", "a b"]).get_vocab()
    assert tok("Zebra", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_builtin_prompts_have_no_unk():
    tok = word_tokenizer(builtin_words())
    rows = json.loads((BUILTIN / "sports.json").read_text())
    texts = [FEW_SHOT]
    for r in rows:
        texts += [f"Fact: Tiger Woods plays the sport of golf\nFact: {r['athlete']} plays the sport of",
                  f" {r['sport']}"]
    for case in json.loads((BUILTIN / "counterfact.json").read_text()):
        texts += [case["prompt"].format(case["subject"]), " " + case["target_true"], " " + case["target_new"]]
        texts += case["paraphrase_prompts"] + [n["prompt"] for n in case["neighborhood_prompts"]]
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    bad = [t for t, ids in zip(texts, enc) if tok.unk_token_id in ids]
    assert not bad, bad[:5]
    for sport in {r["sport"] for r in rows} | {"golf"}:
        assert len(tok(" " + sport, add_special_tokens=False)["input_ids"]) == 1


# --- tiny models -----------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["standard", "gqa", "gated", "gqa_gated"])
def test_tiny_variants_forward(variant):
    model = tiny_model(variant=variant)
    logits = model(FEW_SHOT)
    n_tokens = model.to_tokens(FEW_SHOT).shape[1]
    assert logits.shape == (1, n_tokens, model.cfg.d_vocab)
    assert torch.isfinite(logits).all()
    assert model.cfg.dtype == torch.float32 and model.W_E.device.type == "cpu"
    assert "<unk>" not in model.to_str_tokens(FEW_SHOT)
    if "gqa" in variant:
        assert model.cfg.n_key_value_heads is not None and model.cfg.n_key_value_heads < model.cfg.n_heads
    if "gated" in variant:
        assert model.cfg.gated_mlp and model.blocks[0].mlp.W_gate.shape == (model.cfg.d_model, model.cfg.d_mlp)


def test_tiny_options_and_determinism():
    a = tiny_model(normalization_type="LN", positional_embedding_type="standard", seed=3)
    b = tiny_model(normalization_type="LN", positional_embedding_type="standard", seed=3)
    c = tiny_model(normalization_type="LN", positional_embedding_type="standard", seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.W_E, c.W_E)
    assert torch.isfinite(a(FEW_SHOT)).all()
    small = tiny_model(vocab_texts=["a b c"], n_layers=1)
    assert small.cfg.d_vocab == len(small.tokenizer) and small.cfg.n_layers == 1
    with pytest.raises(ValueError):
        tiny_model(variant="moe")  # type: ignore[arg-type]


# --- planted model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted() -> PlantedFactModel:
    return planted_fact_model()


def _final_logits(pf: PlantedFactModel, prompts: list[str], hooks=()) -> torch.Tensor:
    model = pf.model
    try:
        with torch.no_grad():
            logits = model.run_with_hooks(model.to_tokens(prompts), fwd_hooks=list(hooks))
    finally:
        model.reset_hooks()
    assert all(not h.fwd_hooks and not h.bwd_hooks for h in model.hook_dict.values())
    return logits[:, -1]


def _candidate_accuracy(pf: PlantedFactModel, hooks=(), paraphrase: bool = False) -> float:
    model, ds = pf.model, pf.dataset
    prompts = [r.paraphrases[0] if paraphrase else r.prompt for r in ds]
    logits = _final_logits(pf, prompts, hooks)
    cands = ds.candidates
    cand_ids = torch.tensor([model.to_single_token(" " + c) for c in cands])
    pred = logits[:, cand_ids].argmax(-1)
    truth = torch.tensor([cands.index(r.answer) for r in ds])
    return (pred == truth).float().mean().item()


def _zero(act, hook):
    return torch.zeros_like(act)


def _zero_head(head: int):
    def fn(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    return fn


def test_planted_structure(planted):
    pf = planted
    from factlens.components import Component

    assert pf.lookup_layer == 1 and pf.n_layers == 4 == pf.model.cfg.n_layers
    assert pf.extraction_head == Component("head", 2, 1) and pf.lookup_mlp == Component("mlp", 1)
    ds = pf.dataset
    assert ds.name == "planted" and ds.candidates == ("basketball", "baseball", "football")
    assert len(ds) == 48 and [r.id for r in ds] == [str(i) for i in range(48)]
    assert {r.answer for r in ds} == set(ds.candidates)
    assert all(r.template == "{} plays the sport of" and r.relation == "sport" for r in ds)
    tok = pf.model.tokenizer
    for r in ds:
        assert len(tok(" " + r.subject, add_special_tokens=False)["input_ids"]) == 1
    assert pf.model.cfg.d_mlp >= len(ds)


def test_planted_accuracy_and_probability(planted):
    assert _candidate_accuracy(planted) == 1.0
    assert _candidate_accuracy(planted, paraphrase=True) == 1.0
    model, ds = planted.model, planted.dataset
    probs = _final_logits(planted, [r.prompt for r in ds]).softmax(-1)
    answer_ids = torch.tensor([model.to_single_token(" " + r.answer) for r in ds])
    assert probs[torch.arange(len(ds)), answer_ids].min() > 0.5


@pytest.mark.parametrize(
    "hook_name, fn, keeps",
    [
        ("blocks.1.hook_mlp_out", _zero, False),
        ("blocks.2.attn.hook_z", _zero_head(1), False),
        ("blocks.0.hook_mlp_out", _zero, True),
        ("blocks.3.hook_mlp_out", _zero, True),
        ("blocks.2.attn.hook_z", _zero_head(0), True),
    ],
)
def test_planted_ablations(planted, hook_name, fn, keeps):
    acc = _candidate_accuracy(planted, hooks=[(hook_name, fn)])
    if keeps:
        assert acc == 1.0
    else:
        assert acc <= 0.5


def test_planted_probe(planted):
    from sklearn.linear_model import LogisticRegression

    model, ds = planted.model, planted.dataset
    names = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    try:
        with torch.no_grad():
            _, cache = model.run_with_cache(model.to_tokens([r.prompt for r in ds]), names_filter=names)
    finally:
        model.reset_hooks()
    y = np.array([ds.candidates.index(r.answer) for r in ds])
    train, test = np.arange(0, len(ds), 2), np.arange(1, len(ds), 2)
    scores = {}
    for name in names:
        x = cache[name][:, 1].numpy()  # subject position (after <bos>)
        probe = LogisticRegression(max_iter=2000).fit(x[train], y[train])
        scores[name] = probe.score(x[test], y[test])
    assert scores["blocks.1.hook_resid_post"] >= 0.9, scores
    assert scores["blocks.0.hook_resid_post"] <= 0.6, scores


def test_planted_task(planted):
    try:
        import factlens.tasks  # noqa: F401
    except ImportError:
        pytest.skip("factlens.tasks is not available")
    assert planted.task is planted.task
