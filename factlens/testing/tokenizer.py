"""An offline word-level tokenizer for the test models.

The tokenizer is built with the ``tokenizers`` library (no hub access): every word of the
vocabulary is one token, text is split on spaces/tabs (dropped), on newlines (kept, ``"\\n"``
is a token), on punctuation (each punctuation character is a token) and on digits (each digit
is a token). A ``<bos>`` token is prepended to every encoded sequence, as TransformerLens
expects. Unknown words map to ``<unk>``.

Example:
    >>> tok = word_tokenizer(["LeBron James plays basketball"])
    >>> tok(" basketball", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids("basketball")]
    True
"""

from __future__ import annotations

import string
from typing import Iterable

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

__all__ = ["word_tokenizer", "split_words", "SPECIAL_TOKENS", "BASE_TOKENS"]

#: Special tokens, always ids 0, 1, 2.
SPECIAL_TOKENS: tuple[str, ...] = ("<bos>", "<pad>", "<unk>")

#: Tokens always in the vocabulary: newline, digits, ASCII punctuation.
BASE_TOKENS: tuple[str, ...] = ("\n", *string.digits, *string.punctuation)


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Split on non-newline whitespace (removed), newlines, punctuation and digits (kept)."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), "removed"),
            pre_tokenizers.Split("\n", "isolated"),
            pre_tokenizers.Punctuation(),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )


def split_words(text: str) -> list[str]:
    """Split ``text`` the way :func:`word_tokenizer` does (one string per token).

    Args:
        text: Any text.

    Returns:
        The pieces, e.g. ``["Fact", ":", "LeBron", "\\n"]`` for ``"Fact: LeBron\\n"``.
    """
    return [piece for piece, _ in _pre_tokenizer().pre_tokenize_str(text)]


def word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """Build a word-level fast tokenizer whose vocabulary covers ``words``.

    Each item of ``words`` may be a single word or a whole text; it is split with
    :func:`split_words`. The vocabulary is ``<bos>, <pad>, <unk>`` (ids 0-2) followed by
    :data:`BASE_TOKENS` and the split words, deduplicated and sorted, so the same inputs
    always give the same ids.

    Args:
        words: Words or texts to cover.

    Returns:
        A :class:`~transformers.PreTrainedTokenizerFast` that prepends ``<bos>`` (also used as
        EOS), pads with ``<pad>`` and supports offset mappings. Usable as
        ``HookedTransformer(cfg, tokenizer=tok)``.
    """
    pieces: set[str] = set(BASE_TOKENS)
    for w in words:
        pieces.update(split_words(w))
    pieces.difference_update(SPECIAL_TOKENS)
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for t in sorted(pieces):
        vocab[t] = len(vocab)

    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = _pre_tokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<bos>",
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<bos>",
        name_or_path="factlens-word",
        add_bos_token=True,
    )
