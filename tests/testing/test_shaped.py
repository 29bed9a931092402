"""factlens.testing.shaped: the random Gemma-3-shaped models of the scaling benchmark."""

from __future__ import annotations

import pytest
import torch

from factlens.testing import shaped
from factlens.testing.invariants import no_hooks


def _cfg_and_tok(monkeypatch, **kw):
    """The config and tokenizer gemma3_shaped builds, for calling _build_on on the CPU."""
    made = {}

    def capture(cfg, tok, device, *, seed, init_range):
        made.update(cfg=cfg, tok=tok, device=device, seed=seed, init_range=init_range)
        return "captured"

    with monkeypatch.context() as mp:
        mp.setattr(shaped, "_build_on", capture)
        assert shaped.gemma3_shaped(device="meta", **kw) == "captured"  # any device but the CPU takes this path
    assert made["device"] == torch.device("meta")
    return made


def test_a_model_for_another_device_is_made_and_drawn_there_not_on_the_cpu(monkeypatch):
    made = _cfg_and_tok(monkeypatch, n_layers=2, d_model=64, d_mlp=256, init_range=0.05, seed=3)
    state = torch.random.get_rng_state()
    m = shaped._build_on(made["cfg"], made["tok"], torch.device("cpu"), seed=3, init_range=0.05)
    assert torch.equal(state, torch.random.get_rng_state())  # the device's own generator, no global state
    again = shaped._build_on(_cfg_and_tok(monkeypatch, n_layers=2, d_model=64, d_mlp=256, seed=3)["cfg"], made["tok"],
                             torch.device("cpu"), seed=3, init_range=0.05)
    weights = {n: p for n, p in m.named_parameters() if "W_" in n}
    assert weights and all(torch.equal(p, dict(again.named_parameters())[n]) for n, p in weights.items())
    big = torch.cat([p.detach().flatten() for p in weights.values()])
    assert abs(float(big.std()) - 0.05) < 0.002 and abs(float(big.mean())) < 0.002  # N(0, init_range), not empty memory
    norms = torch.cat([p.detach().flatten() for n, p in m.named_parameters() if n.endswith(".w")])
    assert abs(float(norms.mean()) - 1.0) < 0.02 and 0.08 < float(norms.std()) < 0.12
    biases = [n for n, _ in m.named_parameters() if n.rsplit(".", 1)[-1].lstrip("_").startswith("b_")]
    assert "blocks.0.attn._b_K" in biases and all(float(m.get_parameter(n).abs().max()) == 0.0 for n in biases)
    assert m.cfg.seed == 3 and m.cfg.init_weights and torch.device(m.cfg.device) == torch.device("cpu") and not m.training and no_hooks(m)
    with torch.no_grad():
        out = m(m.to_tokens("the athlete plays"))
    assert torch.isfinite(out).all()


def test_the_cpu_path_is_transformer_lens_own_initialization():
    a, b = shaped.gemma3_shaped(seed=1), shaped.gemma3_shaped(seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(AssertionError):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), shaped.gemma3_shaped(seed=2).parameters()))
