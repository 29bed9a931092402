"""benchmarks/load_model.py measures the tokenizer also after a converting load."""

from __future__ import annotations

from types import SimpleNamespace


def test_tokenizer_sizes_read_the_cached_tokenizer_not_the_models_own_folder(load_benchmark, monkeypatch, tmp_path):
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for c in "abcdefghijklmnopqrstuvwxyz \u2581":
        vocab.setdefault(c, len(vocab))
    vocab["ab"] = len(vocab)
    GemmaTokenizer(vocab=vocab, merges=[("a", "b")]).save_pretrained(str(tmp_path / "gemma-3-270m-tl-v1" / "tokenizer"))
    monkeypatch.setenv("FACTLENS_CACHE", str(tmp_path))
    lm = load_benchmark("load_model")
    # a model converted from GGUF: its tokenizer's folder holds no tokenizer files (failed before 74b424a)
    model = SimpleNamespace(tokenizer=SimpleNamespace(name_or_path=str(tmp_path / "gguf")))
    sizes = lm.tokenizer_sizes(model)
    assert sizes["build_copy_entries"] == len(vocab) + 1
    assert sizes["loaded_rss_gb"] > 0
