"""General text for the editor's SFT loss and for side-effect measurements.

:func:`load_texts` reads passages of general English from the built-in file
``factlens/data/builtin/general_text.txt`` (about 80 short encyclopedic, news-like and
narrative passages written for factlens), from a local text file (WikiText-style files are
cleaned: blank lines, ``" = Heading = "`` lines and ``"<unk>"`` placeholders are dropped) or
from a Hugging Face dataset (``"name"`` or ``"name:config"``, column ``text``). :func:`token_chunks` turns
passages into equal-length token chunks, each starting with BOS.

Example:
    >>> from factlens.testing import tiny_model
    >>> texts = load_texts(None, n=10)
    >>> len(texts)
    10
    >>> token_chunks(tiny_model(), texts, seq_len=16, n_chunks=3).shape
    torch.Size([3, 16])
"""

from __future__ import annotations

import random
import re
from importlib import resources
from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from factlens.files import looks_local

__all__ = ["load_texts", "token_chunks", "passages_without", "BUILTIN_TEXT"]

#: Name of the built-in general-text file inside ``factlens/data/builtin``.
BUILTIN_TEXT = "general_text.txt"
#: Built-in passages that no factlens trainer reads (see :func:`load_texts`'s ``held_out``).
HELD_OUT_TEXT = "general_text_held_out.txt"
# local text files that factlens.files.looks_local does not know: WikiText's wiki.test.tokens / .raw
_TEXT_SUFFIXES = (".text", ".raw", ".tokens")

_HEADING = re.compile(r"^\s*=+\s.*\s=+\s*$")
# WikiText's tokenized form: " @-@ " inside words and numbers, spaces before punctuation
_WIKI_FIXES = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" ,", ","), (" .", "."), (" ;", ";"),
               (" :", ":"), (" 's", "'s"), (" )", ")"), ("( ", "("))
# WikiText's placeholder for a rare word, a word of its own (" <unk> "), with the space after it
_UNK = re.compile(r"(?:(?<=\s)|^)<unk>(?:\s+|$)")


def _builtin_lines(name: str = BUILTIN_TEXT) -> list[str]:
    try:
        text = resources.files("factlens.data").joinpath("builtin", name).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError, TypeError):  # pragma: no cover - source checkout fallback
        text = (Path(__file__).resolve().parent / "builtin" / name).read_text(encoding="utf-8")
    return [l.strip() for l in text.splitlines() if l.strip()]


def _clean_wiki(line: str) -> str:
    """``line`` with WikiText's tokenization undone: its ``"<unk>"`` placeholders (rare words the
    corpus replaced) are dropped with one adjacent space, then the ``" @-@ "`` escapes and spaces
    before punctuation are undone. A tokenizer reads a literal ``"<unk>"`` as its special unknown
    token (Gemma: id 3, never trained, about 28 nats of loss each), which no model is meant to predict."""
    if "<unk>" in line:
        line = _UNK.sub("", line)
    for a, b in _WIKI_FIXES:
        line = line.replace(a, b)
    return line.strip()


def _file_lines(path: Path) -> list[str]:
    """The passages of a text file. Not UTF-8 raises, as every other factlens loader does (bad bytes were
    replaced by U+FFFD, silently training on mangled text); a byte-order mark is dropped (``utf-8-sig``)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e}); save the file as UTF-8") from e
    out = []
    for line in text.splitlines():
        if not line.strip() or _HEADING.match(line):
            continue
        if line := _clean_wiki(line):  # a line of placeholders only is no passage
            out.append(line)
    return out


def _looks_like_path(source: str) -> bool:
    """Whether ``source`` names a local file, not a Hugging Face dataset: the rule of the MMLU and fact
    loaders (:func:`factlens.files.looks_local`: ``"data/wikitext2/wiki.test.tokens"`` went to the Hub and
    failed there with a misleading error) and WikiText's own suffixes."""
    return looks_local(source) or source.lower().endswith(_TEXT_SUFFIXES)


def _dataset_lines(source: str) -> list[str]:
    name, _, config = source.partition(":")
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise ImportError(f"loading the Hugging Face dataset {source!r} needs the datasets package "
                          "(pip install datasets), or pass a local .txt file") from e
    try:
        ds = datasets.load_dataset(name, config or None, split="train")
    except Exception as e:
        raise OSError(f"could not load the text dataset {source!r} ({type(e).__name__}: {e}). The Hugging Face Hub "
                      "may be unreachable: pass a local text file instead (e.g. '../shared/data/wikitext2/test.txt') "
                      "or None for factlens' built-in general text") from e
    if "text" not in ds.column_names:
        raise ValueError(f"dataset {source!r} has no 'text' column (columns: {ds.column_names})")
    lines = (_clean_wiki(t) for t in ds["text"] if t and t.strip() and not _HEADING.match(t))
    return [t for t in lines if t]


def load_texts(source: str | Path | None, *, n: int | None = None, seed: int = 0, held_out: bool = False) -> list[str]:
    """Passages of general text.

    Args:
        source: ``None`` for the built-in general English text (what the editor's KL term,
            ROME/MEMIT's covariance and the attacks read by default); a local text file (one
            passage per line; blank lines, WikiText ``" = Heading = "`` lines and its
            ``"<unk>"`` placeholders for rare words are dropped and its ``" @-@ "`` escapes
            undone); or a Hugging Face dataset ``"name"`` / ``"name:config"`` with a ``text``
            column (needs the Hub).
        n: Keep ``n`` passages chosen at random (seeded; original order kept). ``None``: all.
        seed: Seed of that choice.
        held_out: With ``source=None``, the built-in passages that nothing in factlens trains
            on (48 passages, about 1,600 Gemma 3 tokens; :data:`HELD_OUT_TEXT`): the side
            effects of an edit are measured there, not on the text its KL term was trained
            to keep.

    Returns:
        The passages (non-empty strings).

    Raises:
        FileNotFoundError: ``source`` looks like a path but does not exist.
        OSError: The dataset could not be loaded (e.g. no internet).
        ValueError: The file is not UTF-8 text (or holds no text).

    Example:
        >>> texts = load_texts(None)
        >>> len(texts) >= 80 and all(t.strip() for t in texts)
        True
    """
    if held_out and source is not None:
        raise ValueError(f"held_out=True selects the built-in held-out text; it cannot be combined with "
                         f"source={source!r} (give source=None, or drop held_out)")
    if source is None:
        lines = _builtin_lines(HELD_OUT_TEXT if held_out else BUILTIN_TEXT)
    else:
        p = Path(source).expanduser()
        if p.is_file():
            lines = _file_lines(p)
        elif p.is_dir():
            raise ValueError(f"{p} is a folder; give a text file (e.g. {p}/train.txt)")
        elif p.exists():  # a device, a pipe, a socket: read once or never, so not a reproducible source
            raise ValueError(f"{p} is not a regular file (a device or pipe cannot be read again to resume or "
                             "reproduce a run); give a .txt file")
        elif isinstance(source, Path) or _looks_like_path(str(source)):
            raise FileNotFoundError(f"text file {p} does not exist (give an existing .txt file, a Hugging Face "
                                    "dataset name like 'wikitext:wikitext-2-raw-v1', or None for the built-in text)")
        else:
            lines = _dataset_lines(str(source))
    if not lines:
        raise ValueError(f"no text found in {source!r}")
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be >= 1 (or None for all passages), got {n}")
        if n < len(lines):
            keep = sorted(random.Random(seed).sample(range(len(lines)), n))
            lines = [lines[i] for i in keep]
    return lines


def same_text_source(a: str | Path | None, b: str | Path | None) -> bool:
    """Whether two given text sources name the same text (the same string, or paths of one file);
    ``None`` (the built-in text, by caller's choice) never counts.

    Example:
        >>> same_text_source("wikitext", "wikitext"), same_text_source(None, None)
        (True, False)
    """
    if a is None or b is None:
        return False
    if str(a) == str(b):
        return True
    pa, pb = Path(str(a)).expanduser(), Path(str(b)).expanduser()
    return pa.is_file() and pb.is_file() and pa.resolve() == pb.resolve()


def passages_without(texts: Sequence[str], subjects: Sequence[str]) -> list[str]:
    """The passages that name none of ``subjects`` (exact substring): the attacks' general text
    must not teach the facts they are judged on.

    Example:
        >>> passages_without(["Tiger Woods won.", "It rained."], ["Tiger Woods"])
        ['It rained.']
    """
    _check_sequence(texts, "passages_without", "texts", "passages")
    _check_sequence(subjects, "passages_without", "subjects", "subject names")
    subjects = tuple(dict.fromkeys(s for s in subjects if s))
    return [t for t in texts if not any(s in t for s in subjects)]


def _check_sequence(value, fn: str, name: str, what: str) -> None:
    """Refuse one string where a list of strings belongs: it was read one character at a time."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{fn}: {name} must be a list of {what}, got one {type(value).__name__} "
                        f"{str(value)[:60]!r}; wrap it in a list ([text]) or pass load_texts(...)")


def _plain_ids(model, text: str) -> list[int]:
    """Token ids of ``text`` read as plain text: a literal ``"<unk>"`` or ``"<bos>"`` in a passage is
    spelled with ordinary tokens (``split_special_tokens``), never turned into the special token, which
    the model was never trained to predict in running text (Gemma's ``<unk>``: about 28 nats).

    Raises:
        ValueError: The tokenizer ignores ``split_special_tokens`` and turned such a string into its
            special token (found from the offsets, where the tokenizer gives them).
    """
    from factlens.tokens import _encode, _tokenizer

    tok = _tokenizer(model)
    try:
        ids, offsets = _encode(model, text, split_special_tokens=True)
    except NotImplementedError:  # slow tokenizers give no offsets
        return list(tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    special = {i: t for t, i in zip(tok.all_special_tokens, tok.all_special_ids) if i is not None}
    for i, (a, b) in zip(ids, offsets):
        if i in special and text[a:b] == special[i]:
            raise ValueError(f"token_chunks: the tokenizer turned the text {special[i]!r} in a passage into its "
                             f"special token (id {i}), which it does even with split_special_tokens=True; remove "
                             f"such strings from the text (passage starts {text[:60]!r})")
    return ids


def token_chunks(model, texts: Sequence[str], *, seq_len: int = 64, n_chunks: int | None = None) -> Int[Tensor, "n seq_len"]:
    """Cut concatenated passages into equal chunks of ``seq_len`` tokens, each starting with BOS.

    The passages are tokenized one by one as plain text (no special tokens: a literal ``"<unk>"``
    or ``"<bos>"`` in a passage is spelled with ordinary tokens), joined with a blank line and
    cut into pieces of ``seq_len - 1`` tokens; BOS is put in front of each piece (when the
    model prepends BOS; otherwise pieces have ``seq_len`` tokens). A trailing partial piece
    is dropped.

    Args:
        model: A ``HookedTransformer`` with a tokenizer.
        texts: Passages, e.g. from :func:`load_texts`.
        seq_len: Tokens per chunk, BOS included (>= 2).
        n_chunks: Stop after this many chunks (``None``: as many as the text gives).

    Returns:
        ``[n, seq_len]`` token ids on the model's device.

    Raises:
        TypeError: ``texts`` is one string, not a list of passages.
        ValueError: The text is too short for a single chunk.
    """
    from factlens.tokens import _bos_id

    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    if n_chunks is not None and n_chunks < 1:
        raise ValueError(f"n_chunks must be >= 1 (or None), got {n_chunks}")
    _check_sequence(texts, "token_chunks", "texts", "passages")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("no text given to token_chunks")
    bos = _bos_id(model)
    piece = seq_len - 1 if bos is not None else seq_len
    sep = _plain_ids(model, "\n\n")
    need = None if n_chunks is None else n_chunks * piece
    ids: list[int] = []
    for i, t in enumerate(texts):
        if i:
            ids.extend(sep)
        ids.extend(_plain_ids(model, t))
        if need is not None and len(ids) >= need:
            break
    n = len(ids) // piece if n_chunks is None else min(n_chunks, len(ids) // piece)
    if n == 0:
        raise ValueError(f"the text gives only {len(ids)} tokens, fewer than one chunk of {piece}; give more text "
                         "or a smaller seq_len")
    body = torch.tensor(ids[: n * piece], dtype=torch.long).view(n, piece)
    if bos is not None:
        body = torch.cat([torch.full((n, 1), bos, dtype=torch.long), body], dim=1)
    return body.to(model.cfg.device)
