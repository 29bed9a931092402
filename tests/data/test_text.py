"""factlens.data.text: where general text comes from, and the clear errors for what is not text."""

from __future__ import annotations

import pytest

from factlens.data.text import load_texts


def test_a_device_is_refused_as_a_text_source_not_called_missing(tmp_path):
    """/dev/null exists; it was reported as "does not exist", which sent the user looking for a typo."""
    with pytest.raises(ValueError, match="/dev/null is not a regular file"):
        load_texts("/dev/null")
    with pytest.raises(ValueError, match="is a folder"):
        load_texts(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_texts(tmp_path / "missing.txt")
    (tmp_path / "t.txt").write_text("One passage of text.\nAnother passage here.\n")
    assert load_texts(tmp_path / "t.txt") == ["One passage of text.", "Another passage here."]


# --- WikiText's "<unk>" and literal special-token strings (audit 2026-12-06) ---------------------------


def _word_model(words: str):
    """A stand-in model for token_chunks: the offline word tokenizer, BOS prepended."""
    from types import SimpleNamespace

    from factlens.testing.tokenizer import word_tokenizer

    return SimpleNamespace(tokenizer=word_tokenizer([words]), cfg=SimpleNamespace(default_prepend_bos=True, device="cpu"))


@pytest.fixture(scope="module")
def gemma_tok():
    """The Gemma 3 tokenizer from the factlens model cache, loaded once (skips when the model was never
    loaded on this machine)."""
    from factlens.models import _CACHE_VERSION, cache_dir

    folder = cache_dir() / f"gemma-3-270m-tl-v{_CACHE_VERSION}" / "tokenizer"
    if not folder.is_dir():
        pytest.skip(f"no cached Gemma tokenizer at {folder} (factlens.load_model('gemma-3-270m') makes it)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def test_wikitext_unk_placeholders_are_dropped_without_double_spaces(tmp_path):
    """WikiText-2 (tokenized v1) writes rare words as " <unk> "; they were kept, and the Gemma tokenizer read
    each as its special <unk> id 3 (never trained: 28 nats each, 45 of 1,008 targets of the default chunks)."""
    f = tmp_path / "wiki.txt"
    f.write_text(" = Robert Boulter = \n\n Robert <unk> is an English actor . \n <unk> <unk> \n"
                 " He starred in <unk> <unk> by Paris <unk> , and <unk> Punch . \n Plain text , as before . \n")
    assert load_texts(f) == ["Robert is an English actor.", "He starred in by Paris, and Punch.",
                             "Plain text, as before."]


def test_token_chunks_never_reads_literal_special_strings_as_special_tokens():
    """token_chunks promised "no special tokens", yet a literal "<unk>" or "<bos>" in a passage became the
    tokenizer's special token. Text without such strings gives the same ids as before."""
    from factlens.data.text import token_chunks
    from factlens.tokens import _encode

    m = _word_model("the cat sat on a mat unk bos pad")
    tok = m.tokenizer
    special = set(tok.all_special_ids)
    ch = token_chunks(m, ["the cat <unk> sat <bos> on a <pad> mat"] * 4, seq_len=8)
    assert ch[:, 0].tolist() == [tok.bos_token_id] * len(ch)
    assert not special & set(ch[:, 1:].flatten().tolist()), tok.convert_ids_to_tokens(ch[0])
    assert tok.convert_ids_to_tokens(ch[0])[1:5] == ["the", "cat", "<", "unk"]
    plain = ["the cat sat on a mat", "a cat sat"] * 3
    ids = _encode(m, plain[0])[0] + _encode(m, "\n\n")[0] + _encode(m, plain[1])[0]
    assert token_chunks(m, plain, seq_len=len(ids) + 1, n_chunks=1)[0, 1:].tolist() == ids


def test_a_tokenizer_that_ignores_split_special_tokens_is_caught():
    """A tokenizer that does not know split_special_tokens would still read "<unk>" as its special token:
    refused, naming the string, rather than training on it without a word."""
    from factlens.data.text import token_chunks

    m = _word_model("the cat sat on a mat")
    tok = m.tokenizer

    class Ignores:  # the word tokenizer, with split_special_tokens dropped
        bos_token_id, all_special_tokens, all_special_ids = tok.bos_token_id, tok.all_special_tokens, tok.all_special_ids

        def __call__(self, text, split_special_tokens=False, **kw):
            return tok(text, **kw)

    m.tokenizer = Ignores()
    assert token_chunks(m, ["the cat sat on a mat"] * 2, seq_len=4).shape[1] == 4
    with pytest.raises(ValueError, match=r"turned the text '<unk>' in a passage into its special token \(id 2\)"):
        token_chunks(m, ["the cat <unk> sat on a mat"] * 2, seq_len=4)


def test_token_chunks_spells_out_special_strings_with_the_gemma_tokenizer(gemma_tok):
    from types import SimpleNamespace

    from factlens.data.text import token_chunks

    tok = gemma_tok
    m = SimpleNamespace(tokenizer=tok, cfg=SimpleNamespace(default_prepend_bos=True, device="cpu"))
    ch = token_chunks(m, ["a <unk> b <bos> c <eos> d <pad> e <start_of_turn> f " * 4], seq_len=16)
    assert not set(tok.all_special_ids) & set(ch[:, 1:].flatten().tolist())
    assert 3 not in ch.flatten().tolist()  # <unk>


def test_real_wikitext_gives_no_unk_passages(shared_data):
    texts = load_texts(shared_data / "wikitext2" / "test.txt")
    assert len(texts) == 2152 and not any("<unk>" in t or "  " in t for t in texts)


def test_real_wikitext_chunks_have_no_special_token_targets(shared_data, gemma_tok):
    """The audit's numbers: 45 of the 1,008 targets of 16 chunks of 64 tokens were <unk> (id 3)."""
    from types import SimpleNamespace

    from factlens.data.text import token_chunks

    tok = gemma_tok
    m = SimpleNamespace(tokenizer=tok, cfg=SimpleNamespace(default_prepend_bos=True, device="cpu"))
    ch = token_chunks(m, load_texts(shared_data / "wikitext2" / "test.txt", n=64, seed=0), seq_len=64, n_chunks=16)
    assert ch.shape == (16, 64) and not set(tok.all_special_ids) & set(ch[:, 1:].flatten().tolist())


def test_one_string_instead_of_a_list_of_passages_is_refused():
    """A string was read one character at a time: token_chunks made chunks of single letters and <unk>,
    passages_without tested every character as a subject."""
    from factlens.data.text import passages_without, token_chunks
    from factlens.testing import tiny_model

    with pytest.raises(TypeError, match=r"token_chunks: texts must be a list of passages, got one str"):
        token_chunks(tiny_model(), "Tiger Woods won. It rained.", seq_len=4)
    with pytest.raises(TypeError, match=r"passages_without: texts must be a list of passages"):
        passages_without("Tiger Woods won.", ["Tiger Woods"])
    with pytest.raises(TypeError, match=r"passages_without: subjects must be a list of subject names"):
        passages_without(["Tiger Woods won.", "It rained."], "Tiger Woods")
    assert passages_without(["Tiger Woods won.", "It rained."], ("Tiger Woods",)) == ["It rained."]


def test_a_missing_local_text_path_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    """"data/wikitext2/wiki.test.tokens" (two slashes, .tokens) went to the Hugging Face Hub, which failed with
    "could not load the text dataset ... the Hub may be unreachable"; the MMLU and fact loaders call it a
    missing file (factlens.files.looks_local)."""
    import factlens.data.text as text

    def hub(source):
        raise AssertionError(f"{source!r} was sent to the Hugging Face Hub")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(text, "_dataset_lines", hub)
    for source in ("data/wikitext2/wiki.test.tokens", "wiki.test.tokens", "wiki.test.raw", "data/w/test.txt"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_texts(source)
    with pytest.raises(AssertionError, match="sent to the Hugging Face Hub"):
        load_texts("wikitext:wikitext-2-raw-v1")  # a dataset name still goes to the Hub
