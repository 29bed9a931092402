"""Tiny randomly initialised ``HookedTransformer`` models for tests.

:func:`tiny_model` builds a small, seeded, float32, CPU model with the offline word-level
tokenizer of :mod:`factlens.testing.tokenizer`. Its default vocabulary covers every word of
the built-in data sets (``factlens/data/builtin/sports.json`` and ``counterfact.json``) plus
common prompt-template words, the newline, digits and punctuation, so the built-in prompts
tokenize without ``<unk>``. The weights are random: the model knows no facts, it only has
the right *shapes* (standard, grouped-query and gated-MLP variants).

Example:
    >>> model = tiny_model(variant="gqa")
    >>> model.cfg.n_key_value_heads
    2
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from factlens.testing.tokenizer import word_tokenizer

__all__ = ["tiny_model", "builtin_words", "build_hooked", "COMMON_WORDS", "Variant"]

Variant = Literal["standard", "gqa", "gated", "gqa_gated", "attn_only"]

#: Words used by prompt templates (few-shot facts, multiple-choice formats...).
COMMON_WORDS: tuple[str, ...] = (
    "Fact", "plays", "the", "sport", "of", "is", "a", "professional", "player", "golf",
    "Question", "Answer", "Options", "A", "B", "C", "D", "Which", "does", "play", "What",
    "known", "for", "playing", "athlete", "who", "sports", "team", "in", "and", "The",
    "basketball", "baseball", "football", "soccer", "tennis", "hockey", "\n",
    # golfers and other names used in few-shot prompts
    "Tiger Woods", "Phil Mickelson", "Rory McIlroy", "Jack Nicklaus", "Arnold Palmer",
)


def _builtin_text(name: str) -> str:
    """Text of ``factlens/data/builtin/<name>`` (package resource, with a file-path fallback)."""
    try:
        return (resources.files("factlens.data") / "builtin" / name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, TypeError, AttributeError):
        path = Path(__file__).resolve().parent.parent / "data" / "builtin" / name
        return path.read_text(encoding="utf-8")


def _strings(obj: Any) -> Iterator[str]:
    """Every string value inside a JSON object (recursively; keys are skipped)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


@functools.lru_cache(maxsize=1)
def builtin_words() -> tuple[str, ...]:
    """Texts whose words make up the default tiny-model vocabulary.

    Returns:
        The athletes and sports of ``sports.json``, every string field of
        ``counterfact.json`` (prompts, subjects, targets, paraphrases, neighborhood prompts
        and answers, multiple-choice questions and options) and :data:`COMMON_WORDS`.
    """
    texts: list[str] = list(COMMON_WORDS)
    for row in json.loads(_builtin_text("sports.json")):
        texts += [row["athlete"], row["sport"]]
    texts += list(_strings(json.loads(_builtin_text("counterfact.json"))))
    return tuple(texts)


def build_hooked(cfg: Any, tokenizer: PreTrainedTokenizerFast):
    """``HookedTransformer(cfg, tokenizer=tokenizer)`` on CPU, without TransformerLens' deprecation warning."""
    from transformer_lens import HookedTransformer

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*", category=DeprecationWarning)
        return HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch/numpy/random inside the block and restore the global RNG states after it."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def tiny_model(
    *,
    variant: Variant = "standard",
    n_layers: int = 2,
    d_model: int = 32,
    n_heads: int = 4,
    d_head: int = 8,
    d_mlp: int = 64,
    n_ctx: int = 128,
    seed: int = 0,
    vocab_texts: Iterable[str] | None = None,
    normalization_type: Literal["RMS", "LN"] = "RMS",
    positional_embedding_type: Literal["rotary", "standard"] = "rotary",
    tokenizer: PreTrainedTokenizerFast | None = None,
):
    """A small random ``HookedTransformer`` with a word-level tokenizer.

    Args:
        variant: ``"standard"``; ``"gqa"`` (grouped-query attention with
            ``n_key_value_heads = n_heads // 2``); ``"gated"`` (gated MLP, ``W_gate``);
            ``"gqa_gated"`` (both); ``"attn_only"`` (no MLPs, as TransformerLens's
            ``attn-only-*`` models).
        n_layers: Number of blocks.
        d_model: Residual width.
        n_heads: Attention heads per layer.
        d_head: Head width.
        d_mlp: MLP width.
        n_ctx: Context length.
        seed: Seed of the weight initialisation (same seed, same weights). The global RNG
            states are left as they were.
        vocab_texts: Texts whose words form the vocabulary (default: :func:`builtin_words`).
        normalization_type: ``"RMS"`` or ``"LN"``.
        positional_embedding_type: ``"rotary"`` or ``"standard"``.
        tokenizer: Use this tokenizer instead of building one from ``vocab_texts``.

    Returns:
        The model (float32, CPU, eval mode).

    Raises:
        ValueError: Unknown ``variant``, or ``n_heads`` odd for a GQA variant.
    """
    from transformer_lens import HookedTransformerConfig

    if variant not in ("standard", "gqa", "gated", "gqa_gated", "attn_only"):
        raise ValueError(f"unknown variant {variant!r}; use 'standard', 'gqa', 'gated', 'gqa_gated' or 'attn_only'")
    gqa = variant in ("gqa", "gqa_gated")
    gated = variant in ("gated", "gqa_gated")
    if gqa and (n_heads < 2 or n_heads % 2):
        raise ValueError(f"a GQA variant needs an even n_heads >= 2, got {n_heads}")
    tok = tokenizer if tokenizer is not None else word_tokenizer(
        builtin_words() if vocab_texts is None else vocab_texts
    )
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_head,
        d_mlp=None if variant == "attn_only" else d_mlp,
        attn_only=variant == "attn_only",
        n_ctx=n_ctx,
        d_vocab=len(tok),
        act_fn="silu" if gated else "gelu",
        gated_mlp=gated,
        n_key_value_heads=n_heads // 2 if gqa else None,
        normalization_type=normalization_type,
        positional_embedding_type=positional_embedding_type,
        rotary_dim=d_head if positional_embedding_type == "rotary" else None,
        default_prepend_bos=True,
        seed=None,  # seeding is done below without touching the global RNG state
        device="cpu",
        dtype=torch.float32,
        model_name=f"factlens-tiny-{variant}",
    )
    with seeded(seed):
        model = build_hooked(cfg, tok)
    cfg.seed = seed
    model.eval()
    return model
