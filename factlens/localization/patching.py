"""Parts shared by the patching methods (activation patching, causal tracing, attribution and
path patching); the clean/corrupted prompt pairs themselves are built in :mod:`~factlens.localization.pairs`.

* :func:`metric_from_residual`: the patching metric read from final-position residuals.
* :func:`normalization_gap`: ``mean(clean) - mean(corrupted)``, the unit of normalized scores.
* :func:`patches_per_pass`, :data:`MAX_ROW_TOKENS`: how many patched copies of a batch one
  forward pass holds (bounds peak memory, never changes results).
* :func:`prefix_cache`, :func:`repeated_cache`: the frozen key/value cache of the prompt
  prefix that the clean, corrupted and patched runs share.
* :func:`position_summary`, :func:`position_tokens`, :func:`resid_map`, :data:`ROLES`:
  layer x position traces averaged over prompts of different lengths.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from factlens.localization.pairs import PatchingMetric
from factlens.scores import ResidMap
from factlens.tokens import PromptBatch

__all__ = ["metric_from_residual", "normalization_gap", "patches_per_pass", "MAX_ROW_TOKENS", "prefix_cache",
           "repeated_cache", "position_summary", "position_tokens", "resid_map", "ROLES"]

#: Upper bound on (rows x positions) of one patched forward pass; patches are split into
#: several passes beyond it (bounds peak memory, never changes results).
MAX_ROW_TOKENS = 8192
#: Rows unembedded at once for the ``"prob"`` metric.
_UNEMBED_ROWS = 64

#: ROME's token roles for averaging traces over prompts of different lengths.
ROLES: tuple[str, ...] = ("first_subject", "middle_subject", "last_subject", "first_subsequent", "further", "last")


# --- metric and normalization ---------------------------------------------------------------


def metric_from_residual(
    model,
    resid: Float[Tensor, "batch d_model"],
    clean_answer: Int[Tensor, "batch"],
    corrupted_answer: Int[Tensor, "batch"],
    metric: PatchingMetric = "logit_diff",
) -> Float[Tensor, "batch"]:
    """The patching metric from final-position residuals (before the final norm).

    Equal to :func:`factlens.localization.pairs.patching_metric` applied to the full logits, but
    ``"logit_diff"`` only computes the two answer columns of the unembedding.

    Example:
        >>> from factlens.testing import tiny_model
        >>> m = tiny_model()
        >>> r = torch.randn(3, m.cfg.d_model)
        >>> metric_from_residual(m, r, torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])).shape
        torch.Size([3])
    """
    from transformer_lens.utilities import apply_softcap  # type: ignore

    from factlens.tokens import unembed

    x = resid
    if metric == "logit_diff":
        if model.cfg.normalization_type is not None:
            x = model.ln_final(x)
        W_U, b_U = model.W_U, model.b_U

        def logit(ids: Tensor) -> Tensor:
            ids = ids.to(W_U.device)
            return apply_softcap((x * W_U[:, ids].T).sum(-1) + b_U[ids], model.cfg.output_logits_soft_cap)

        return (logit(clean_answer) - logit(corrupted_answer)).float()
    if metric == "prob":
        out = []
        for s in range(0, x.shape[0], _UNEMBED_ROWS):
            logits = unembed(model, x[s: s + _UNEMBED_ROWS]).float()
            ids = clean_answer[s: s + _UNEMBED_ROWS].to(logits.device)
            out.append(torch.softmax(logits, dim=-1)[torch.arange(len(ids), device=logits.device), ids])
        return torch.cat(out)
    raise ValueError(f"unknown metric {metric!r}; use 'logit_diff' or 'prob'")


def normalization_gap(clean: np.ndarray, corrupted: np.ndarray) -> float:
    """``mean(clean) - mean(corrupted)``, the unit of normalized patching scores.

    Raises:
        ValueError: When the gap is (nearly) zero or not finite: normalized scores are then undefined.

    Example:
        >>> normalization_gap(np.array([3.0, 5.0]), np.array([-1.0, 1.0]))
        4.0
    """
    gap = float(clean.mean() - corrupted.mean())
    if not np.isfinite(gap) or abs(gap) < 1e-9:
        raise ValueError(f"mean clean metric equals mean corrupted metric ({clean.mean():.4g}); normalized "
                         "scores are undefined - pass normalize=False or use other facts/corrupted prompts")
    return gap


# --- batching and the shared prefix ------------------------------------------------------------


def patches_per_pass(rows: int, positions: int) -> int:
    """Patched copies of a ``rows x positions`` batch that one forward pass may hold (>= 1)."""
    return max(1, MAX_ROW_TOKENS // max(1, rows * positions))


def prefix_cache(model, tokens: Int[Tensor, "batch pos"], p0: int):
    """Frozen key/value cache of the first ``p0`` tokens (shared by base, source and patched runs)."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, tokens.shape[0])
    # an explicit all-ones mask: without one TransformerLens masks every prefix token equal to the pad id,
    # and where pad = BOS (GPT-2, Pythia) a prefix of just the BOS is masked in every run that reads the cache
    ones = torch.ones(tokens.shape[0], p0, dtype=torch.long, device=tokens.device)
    model(tokens[:, :p0], past_kv_cache=cache, attention_mask=ones, return_type=None)
    cache.freeze()
    return cache


def repeated_cache(cache, rows: Int[Tensor, "rows"], start: int):
    """``cache`` with the entries of layers ``>= start`` taken at batch ``rows`` (one row per patched copy).

    Entries below ``start`` are kept as they are: a run that starts at layer ``start`` never reads them.
    """
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry as Entry

    def take(t: Tensor) -> Tensor:
        return t[rows.to(t.device)]

    entries = [e if i < start else Entry(take(e.past_keys), take(e.past_values), frozen=True)
               for i, e in enumerate(cache.entries)]
    return TransformerLensKeyValueCache(entries, take(cache.previous_attention_mask), frozen=True)


# --- position traces --------------------------------------------------------------------------


def position_summary(maps: Sequence[np.ndarray], lengths: Sequence[int], subject_first: Sequence[int],
                     subject_last: Sequence[int]) -> dict:
    """Average per-example ``[rows, length_i]`` traces over examples.

    Prompts are right-aligned on their last token (the convention of
    :func:`~factlens.localization.activation.activation_patching`): column ``j`` is the position
    ``offsets[j]`` relative to the end (``-1`` = last token) and averages the ``counts[j]``
    examples long enough to have it; for prompts of equal length the columns are the
    absolute positions. ``by_role`` averages over ROME's token roles (:data:`ROLES`)
    instead: a single-token subject counts as both first and last subject token, tokens
    before the subject are left out, and a role that no prompt has is NaN.

    Args:
        maps: One ``[rows, length_i]`` array per example (``rows`` = layers).
        lengths: Token count of each prompt.
        subject_first: First subject position of each prompt (``-1``: none).
        subject_last: Last subject position of each prompt.

    Returns:
        A dict with ``by_position`` (``[rows][T]`` where ``T = max(lengths)``), ``offsets`` and
        ``counts`` (``[T]``), ``by_role`` (``[rows][len(ROLES)]``) and ``roles`` (:data:`ROLES`).

    Example:
        >>> s = position_summary([np.ones((2, 3)), np.zeros((2, 2))], [3, 2], [1, 0], [1, 0])
        >>> s["by_position"][0], s["offsets"], s["counts"]
        ([1.0, 0.5, 0.5], [-3, -2, -1], [1, 2, 2])
    """
    if not maps:
        raise ValueError("no traces to summarize")
    lengths = [int(x) for x in lengths]
    rows = np.asarray(maps[0]).shape[0]
    T = max(lengths)
    total = np.zeros((rows, T))
    cnt = np.zeros(T)
    sums = np.zeros((rows, len(ROLES)))
    counts = np.zeros(len(ROLES))
    for m, n, sf, sl in zip(maps, lengths, subject_first, subject_last):
        m = np.asarray(m, dtype=np.float64)[:, :n]
        total[:, T - n:] += m
        cnt[T - n:] += 1
        last = n - 1
        groups: dict[int, list[int]] = defaultdict(list)
        groups[5].append(last)
        if sf >= 0:
            groups[0].append(sf)
            groups[2].append(sl)
            groups[1].extend(range(sf + 1, sl))
            if sl + 1 < last:
                groups[3].append(sl + 1)
                groups[4].extend(range(sl + 2, last))
        for role, pos in groups.items():
            if pos:
                sums[:, role] += m[:, pos].mean(axis=1)
                counts[role] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        by_role = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return {"by_position": (total / np.maximum(cnt, 1)).tolist(), "offsets": list(range(-T, 0)),
            "counts": cnt.astype(int).tolist(), "by_role": by_role.tolist(), "roles": list(ROLES)}


def position_tokens(model, batch: PromptBatch) -> list[str]:
    """Tokens of the longest prompt of ``batch`` (column labels of right-aligned traces)."""
    i = int(torch.argmax(batch.lengths))
    ids = batch.tokens[i, : int(batch.lengths[i])].tolist()
    try:
        return [str(t) for t in model.tokenizer.convert_ids_to_tokens(ids)]
    except Exception:  # pragma: no cover - tokenizer without an id -> token mapping
        return [str(t) for t in ids]


def resid_map(model, maps: Sequence[np.ndarray], batch: PromptBatch, *, scale: float | None = None) -> ResidMap:
    """The :class:`~factlens.scores.ResidMap` of per-example ``[n_layers, length_i]`` traces of ``batch``'s prompts.

    Args:
        model: The model (its tokenizer labels the columns).
        maps: One trace per prompt of ``batch``, in order.
        batch: The prompts (lengths and subject positions).
        scale: Divide the averaged map by this (a normalization gap); ``None``: as they are.
    """
    s = position_summary(maps, batch.lengths.tolist(), batch.subject_first.tolist(), batch.subject_last.tolist())
    by_position, by_role = np.asarray(s["by_position"]), np.asarray(s["by_role"])
    if scale is not None:
        by_position, by_role = by_position / scale, by_role / scale
    return ResidMap(by_position, s["offsets"], s["counts"], position_tokens(model, batch), by_role, s["roles"])
