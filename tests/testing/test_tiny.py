"""Tiny random HookedTransformers (factlens.testing.tiny)."""

from __future__ import annotations

import pytest
import torch

from factlens.testing import tiny_model


FEW_SHOT = "Fact: Tiger Woods plays the sport of golf\nFact: LeBron James plays the sport of"


@pytest.mark.parametrize("variant", ["standard", "gqa", "gated", "gqa_gated", "attn_only"])
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
    if variant == "attn_only":
        assert model.cfg.attn_only and not any(".mlp." in n for n, _ in model.named_parameters())


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
