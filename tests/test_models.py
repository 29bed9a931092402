"""Loading a converted checkpoint tensor by tensor (factlens.models._load_weights) equals load_state_dict."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from factlens.models import _load_weights
from factlens.testing import tiny_model


def test_streamed_load_equals_load_state_dict(tmp_path):
    src = tiny_model(seed=1)
    path = tmp_path / "model.safetensors"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    state["not.in.the.model"] = torch.zeros(3)  # skipped, as load_state_dict(strict=False) does
    save_file(state, str(path))
    a, b = tiny_model(seed=2), tiny_model(seed=2)
    _load_weights(a, path, torch.float32)
    b.load_state_dict({k: v for k, v in state.items() if k != "not.in.the.model"}, strict=False)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
    assert all(torch.equal(p, src.get_parameter(n)) for n, p in a.named_parameters())


def test_other_dtype_and_truncated_file(tmp_path):
    import pytest

    src = tiny_model(seed=1)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    b = tiny_model(seed=2).to(torch.bfloat16)
    _load_weights(b, path, torch.bfloat16)
    assert all(torch.equal(p, src.get_parameter(n).to(torch.bfloat16)) for n, p in b.named_parameters())
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        _load_weights(tiny_model(seed=2), tmp_path / "cut.safetensors", torch.float32)


def _tiny_gemma_tokenizer():
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for c in "abcdefghijklmnopqrstuvwxyz \u2581":
        vocab.setdefault(c, len(vocab))
    for m in ("ab", "abc", "th", "the"):
        vocab[m] = len(vocab)
    return GemmaTokenizer(vocab=vocab, merges=[("a", "b"), ("ab", "c"), ("t", "h"), ("th", "e")])


def test_tokenizer_build_copies_are_dropped_and_tokenizing_is_unchanged():
    from factlens.models import drop_tokenizer_build_copies

    tok = _tiny_gemma_tokenizer()
    texts = ["the abc", "abcabc the", "xyz", ""]
    before = [tok.encode(t) for t in texts]
    assert drop_tokenizer_build_copies(tok) == len(tok.get_vocab()) + 4
    assert tok._vocab == {} and tok._merges == []
    assert [tok.encode(t) for t in texts] == before and tok.decode(before[0]) == tok.decode(tok.encode("the abc"))
    assert drop_tokenizer_build_copies(tok) == 0  # nothing left to drop


def test_tokenizer_build_copies_are_put_back_when_tokenizing_would_change():
    from factlens.models import drop_tokenizer_build_copies

    class ReadsItsVocab:  # a tokenizer whose encode still reads the copies: they must stay
        _tokenizer = object()

        def __init__(self):
            self._vocab, self._merges = {"a": 1, "b": 2}, [("a", "b")]

        def encode(self, text):
            return [self._vocab.get(c, 0) for c in text]

    tok = ReadsItsVocab()
    assert drop_tokenizer_build_copies(tok) == 0
    assert tok._vocab == {"a": 1, "b": 2} and tok._merges == [("a", "b")]


@pytest.mark.parametrize("gqa", [None, 2])
def test_late_processing_steps_give_transformer_lens_weights_bit_for_bit(gqa):
    """The conversion runs TransformerLens's unembedding centering and value-bias folding after
    loading, on only the tensors they change (lower peak); the weights must be the ones
    TransformerLens's full processing gives, bit for bit, including a transposed ``W_U`` (the
    Hugging Face ``lm_head`` view) and non-zero value and unembedding biases."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from factlens.models import _finish_processing

    cfg = dict(n_layers=2, d_model=16, n_ctx=8, d_head=4, n_heads=4, d_mlp=32, d_vocab=50, act_fn="gelu",
               normalization_type="RMS", gated_mlp=True, positional_embedding_type="rotary",
               n_key_value_heads=gqa, seed=0)
    torch.manual_seed(0)
    src = HookedTransformer(HookedTransformerConfig(**cfg))
    sd = {k: v.detach().clone() for k, v in src.state_dict().items()}
    for k in sd:
        if k.endswith(("b_V", "unembed.b_U", "ln1.w", "ln2.w", "ln_final.w")):
            sd[k] = torch.randn_like(sd[k])
    sd["unembed.W_U"] = sd["unembed.W_U"].t().contiguous().t()
    models = []
    for late in (True, False):
        m = HookedTransformer(HookedTransformerConfig(**cfg))
        m.load_and_process_state_dict(dict(sd), fold_ln=True, center_writing_weights=True, center_unembed=late,
                                      fold_value_biases=late)
        if not late:
            _finish_processing(m, center_unembed=True, fold_value_biases=True)
        models.append(m.state_dict())
    ref, lean = models
    assert ref.keys() == lean.keys()
    changed = [k for k in ref if not torch.equal(ref[k], lean[k])]
    assert not changed, changed
    assert not torch.equal(ref["unembed.W_U"], sd["unembed.W_U"])  # the steps did change something
