"""Real-model tests on the embedded Gemma 3 270M."""

import pytest
import torch

import factlens
from factlens.models import cache_dir

pytestmark = pytest.mark.slow


def test_gemma_shape_and_cached_reload(gemma, monkeypatch):
    """The second load reads the cache and never converts the GGUF file again. (It asserted a load
    under 30 s, a timed unit test: on a machine busy with other jobs it took 55 s and failed CI; the
    load time is measured in docs/performance.md, not asserted here.)"""
    cfg = gemma.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads, cfg.d_model, cfg.d_mlp, cfg.d_vocab) == (18, 4, 1, 640, 2048, 262144)
    from factlens import models
    from factlens.models import _CACHE_VERSION, fold_scales

    assert (cache_dir() / f"gemma-3-270m-tl-v{_CACHE_VERSION}" / "model.safetensors").exists()

    def no_conversion(*a, **k):
        raise AssertionError("the cached model was converted from the GGUF file again")

    monkeypatch.setattr(models, "_load_gguf_hf", no_conversion)
    again = factlens.load_model("gemma-3-270m")
    for (n1, p1), (n2, p2) in zip(gemma.state_dict().items(), again.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    # the RMS norm scales folded into W_Q/K/V and W_in/W_gate, kept for the quantization attack
    scales = fold_scales(gemma)
    assert sorted(scales) == sorted(f"blocks.{i}.{n}.w" for i in range(18) for n in ("ln1", "ln2"))
    assert all(torch.equal(v, fold_scales(again)[k]) for k, v in scales.items())
    s6 = scales["blocks.6.ln2.w"]
    assert float(s6.min()) < 0.05 * float(s6.max())  # one matrix mixes scales 0 to ~27: why it matters


def test_gemma_logits_match_hf(gemma):
    from factlens.models import _load_gguf_hf, embedded_gguf_path

    (hf,), tok = _load_gguf_hf(embedded_gguf_path(), torch.float32)
    prompts = ["Fact: Tiger Woods plays the sport of golf\nFact: LeBron James plays the sport of",
               "The capital of France is"]
    for p in prompts:
        toks = gemma.to_tokens(p)
        with torch.no_grad():
            a = gemma(toks)[0].double()
            b = hf(toks).logits[0].double()
        # TransformerLens centers the unembedding: logits equal up to a per-position constant
        diff = (a - a.mean(-1, keepdim=True)) - (b - b.mean(-1, keepdim=True))
        assert diff.abs().max() < 1e-3
        assert torch.equal(a[-1].argmax(), b[-1].argmax())


def test_gemma_knows_sports(gemma):
    from factlens.data import filter_known, sports_facts

    ds = sports_facts()[:60]
    known = filter_known(gemma, ds)
    assert len(known) / len(ds) > 0.8


def test_hub_unreachable_error_names_offline_options(monkeypatch):
    from transformer_lens import HookedTransformer

    def boom(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(HookedTransformer, "from_pretrained", boom)
    with pytest.raises(OSError, match="Offline options"):
        factlens.load_model("gpt2")
