"""Seeded batches for training: fact prompts and general-text chunks.

Shared by masked fine-tuning (:mod:`factlens.editing.editor`) and learned weight masks
(:mod:`factlens.editing.weight_mask`), so that both draw batches the same way:

* :class:`BatchSampler` cycles through reshuffled passes over a list (one seeded
  ``torch.Generator`` is shared by all samplers of a run, so a run is reproducible from one
  seed).
* :class:`GeneralText` holds the general-text chunks of the SFT term and hands out
  ``(tokens, positions, reference)`` batches: ``reference`` is the original model's
  next-token log-probabilities for the KL term (``source=None``), precomputed once when they
  fit in :data:`KL_CACHE_BYTES`, else recomputed per batch with ``functional_call`` on the
  original parameter values; ``None`` for next-token cross-entropy on a text source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Mapping, Sequence, TypeVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from factlens.editing.losses import reference_logprobs, sft_loss, sft_positions

__all__ = ["BatchSampler", "GeneralText", "KL_CACHE_BYTES"]

#: Precompute the original model's KL-reference log-probs once when they fit in this many
#: bytes (the paper's 32 chunks x 16 positions x 262k vocabulary take 537 MB); otherwise
#: they are recomputed per micro-batch with ``functional_call`` (one extra no-grad forward).
KL_CACHE_BYTES = 640 * 2**20

T = TypeVar("T")


class BatchSampler(Generic[T]):
    """Endless seeded batches from ``items``: reshuffled passes, a batch may span two passes.

    Each item comes once per pass, but a batch that spans two passes can hold an item twice (the
    end of one pass and the start of the next: 17 items in batches of 16, most batches): that
    step weighs it twice. Kept as it is because every measured edit in the docs drew its batches
    this way (a change would change them all); a batch size that divides the number of items
    never spans two passes.

    ``size=None`` (or ``size >= len(items)``): every call returns all items in order, without
    drawing from the generator. An empty list gives empty batches.

    Example:
        >>> s = BatchSampler(list("abcde"), 2, torch.Generator().manual_seed(0))
        >>> batches = [s.next() for _ in range(5)]
        >>> sorted(sum(batches[:2], []) + batches[2][:1]) == list("abcde")  # one full pass first
        True
        >>> BatchSampler([1, 2], None, torch.Generator()).next()
        [1, 2]
    """

    def __init__(self, items: Sequence[T], size: int | None, gen: torch.Generator) -> None:
        self.items, self.size, self.gen = list(items), size, gen
        self._queue: list[int] = []

    def __len__(self) -> int:
        return len(self.items)

    def indices(self) -> list[int]:
        """The indices of the next batch."""
        n = len(self.items)
        if n == 0:
            return []
        if self.size is None or self.size >= n:
            return list(range(n))
        while len(self._queue) < self.size:
            self._queue += torch.randperm(n, generator=self.gen).tolist()
        out, self._queue = self._queue[: self.size], self._queue[self.size:]
        return out

    def next(self) -> list[T]:
        """The items of the next batch."""
        return [self.items[i] for i in self.indices()]


@dataclass
class GeneralText:
    """General-text chunks of the SFT term and their seeded batches.

    Build it with :meth:`prepare` on the *original* model (before any training step).

    Attributes:
        tokens: ``[n_chunks, seq_len]`` token chunks (BOS first).
        positions: Positions at which the loss reads the next-token distribution.
        kl: ``True``: KL to the original model; ``False``: next-token cross-entropy.
        sampler: Batches of chunk indices.
        cache: The original model's log-probabilities ``[n_chunks, k, d_vocab]`` when
            precomputed (KL only).
    """

    tokens: Int[Tensor, "n seq"]
    positions: Int[Tensor, "k"]
    kl: bool
    sampler: BatchSampler[int]
    cache: Float[Tensor, "n k d_vocab"] | None = None

    @classmethod
    def prepare(cls, model, *, source: str | None, seq_len: int, n_chunks: int, n_positions: int | None,
                batch_size: int | None, gen: torch.Generator, cache_bytes: int | None = None) -> "GeneralText":
        """Tokenize the text, choose the positions and, for KL, cache the reference if it fits.

        Args:
            model: The original model (its log-probabilities are the KL reference).
            source: ``None``: built-in text, KL to the original; else a text file or dataset
                name (:func:`factlens.data.text.load_texts`), next-token cross-entropy.
            seq_len: Tokens per chunk (BOS included).
            n_chunks: Number of chunks.
            n_positions: Positions per chunk (:func:`factlens.editing.losses.sft_positions`).
            batch_size: Chunks per batch (``None``: all).
            gen: The run's batch generator.
            cache_bytes: Precompute the KL reference when it takes at most this many bytes
                (default :data:`KL_CACHE_BYTES`).
        """
        from factlens.data.text import load_texts, token_chunks

        tokens = token_chunks(model, load_texts(source), seq_len=seq_len, n_chunks=n_chunks)
        kl = source is None
        text = cls(tokens, sft_positions(tokens.shape[1], n_positions, kl=kl), kl,
                   BatchSampler(list(range(tokens.shape[0])), batch_size, gen))
        limit = KL_CACHE_BYTES if cache_bytes is None else cache_bytes
        if kl and tokens.shape[0] * len(text.positions) * model.cfg.d_vocab * 4 <= limit:
            text.cache = torch.cat([reference_logprobs(model, tokens[i:i + 8], text.positions)
                                    for i in range(0, tokens.shape[0], 8)])
        return text

    def batch(self, model, originals: Mapping[str, Tensor] | None = None):
        """The next ``(tokens, positions, reference)``; ``reference`` is ``None`` for cross-entropy.

        ``originals``: the original values of the parameters that changed since :meth:`prepare`
        (used only when the reference is not cached; ``None``: ``model`` is the original).
        """
        idx = torch.tensor(self.sampler.indices(), dtype=torch.long)
        toks = self.tokens[idx.to(self.tokens.device)]
        ref = None
        if self.kl:
            ref = self.cache[idx.to(self.cache.device)] if self.cache is not None else \
                reference_logprobs(model, toks, self.positions, originals)
        return toks, self.positions, ref

    def loss(self, model, originals: Mapping[str, Tensor] | None = None) -> Tensor:
        """The SFT loss of ``model`` on the next batch (:func:`factlens.editing.losses.sft_loss`)."""
        toks, positions, ref = self.batch(model, originals)
        return sft_loss(model, toks, positions, reference=ref)
