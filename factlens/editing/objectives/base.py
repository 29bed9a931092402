"""The interface of a training objective and the log-probability helper the baselines share."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from factlens.data.formats import FormattedPrompt
from factlens.editing.losses import answer_kl, answer_logprobs_and_lengths, answer_logprobs_and_rows

__all__ = ["TrainingObjective", "answer_logprobs", "BatchLogprobs", "batch_logprobs", "retain_loss", "REDUCTIONS", "check_retain_loss",
           "RETAIN_LOSSES", "RetainKL", "RETAIN_KL_CACHE_BYTES", "check_retain_kl_size",
           "prepare_retain_kl", "retain_term"]

#: What a mean over answers is over: ``"fact"`` (each answer's log-probability summed over its
#: tokens, averaged over the facts) or ``"token"`` (averaged over all answer tokens of the
#: micro-batch, as a Hugging Face model's loss and so open-unlearning's NLL terms).
REDUCTIONS: tuple[str, ...] = ("fact", "token")

#: The retain term of GradDiff, NPO and SimNPO: ``"nll"`` (cross-entropy of the retain answers)
#: or ``"kl"`` (:class:`RetainKL`, open-unlearning's ``retain_loss_type: KL``; TOFU's "KL" baseline).
RETAIN_LOSSES: tuple[str, ...] = ("nll", "kl")

#: The most bytes :class:`RetainKL` keeps of the original model's next-token distributions
#: (float32 rows of ``d_vocab``: 1 MiB per answer token at Gemma's 262,144 tokens, so 640 retain
#: answer tokens); a larger retain set is refused before training, with the fix.
RETAIN_KL_CACHE_BYTES = 640 * 2**20


class TrainingObjective:
    """A training objective: prepared once from the original model, then two losses per micro-batch.

    Subclasses are frozen dataclasses. :meth:`prepare` is called once before the first
    optimizer step, on the model *as it is before training* (the original: a reference the
    objective needs is computed there, not from a second model copy); :meth:`losses` is
    called on every micro-batch and must return differentiable scalars. ``forget_batch``
    is never empty; ``retain_batch`` may be (no retain facts, ``l_retain=0``, or an
    objective whose registry entry says ``uses_retain=False``).

    Example:
        >>> from dataclasses import dataclass
        >>> import torch
        >>> @dataclass(frozen=True)
        ... class Zero(TrainingObjective):
        ...     def losses(self, model, forget_batch, retain_batch):
        ...         return torch.zeros(()), torch.zeros(())
        >>> Zero.prepare(None, [], [], mask=None, config=None).losses(None, [], [])
        (tensor(0.), tensor(0.))
    """

    @classmethod
    def prepare(cls, model, forget_items: Sequence[FormattedPrompt], retain_items: Sequence[FormattedPrompt], *,
                mask, config) -> "TrainingObjective":
        """Build the objective from the original model (default: no state)."""
        return cls()

    def losses(self, model, forget_batch: Sequence[FormattedPrompt],
               retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, Tensor]:
        """``(L_forget, L_retain)`` of ``model`` on one micro-batch."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts about the prepared objective for ``EditResult.meta`` (default: none)."""
        return {}


def answer_logprobs(model, forget_batch: Sequence[FormattedPrompt], retain_batch: Sequence[FormattedPrompt]
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """True-answer log-probabilities of both batches in one forward pass.

    Returns:
        ``(logp_forget, n_tokens_forget, logp_retain)`` (differentiable; ``n_tokens`` is the
        answer's token count).
    """
    lp = batch_logprobs(model, forget_batch, retain_batch)
    return lp.forget, lp.forget_tokens, lp.retain


@dataclass(frozen=True)
class BatchLogprobs:
    """True-answer log-probabilities (each summed over the answer's tokens) of a forget and a
    retain batch, with the answers' token counts (differentiable)."""

    forget: Tensor
    forget_tokens: Tensor
    retain: Tensor
    retain_tokens: Tensor
    retain_rows: Tensor | None = None


def batch_logprobs(model, forget_batch: Sequence[FormattedPrompt], retain_batch: Sequence[FormattedPrompt], *,
                   retain_rows: bool = False) -> BatchLogprobs:
    """:class:`BatchLogprobs` of both batches, from one forward pass; ``retain_rows=True`` also
    keeps the next-token log-probability rows at the retain answer positions (``retain_rows``
    ``[retain answer tokens, d_vocab]``, for :class:`RetainKL`; otherwise ``None``)."""
    items = list(forget_batch) + list(retain_batch)
    prompts, answers = [it.prompt for it in items], [it.answer for it in items]
    nf = len(forget_batch)
    if retain_rows and retain_batch:
        logp, n_tok, rows = answer_logprobs_and_rows(model, prompts, answers, rows_from=nf)
    else:
        logp, n_tok = answer_logprobs_and_lengths(model, prompts, answers)
        rows = None
    return BatchLogprobs(logp[:nf], n_tok[:nf], logp[nf:], n_tok[nf:], rows)


def check_reduction(reduction: Any, *, where: str = "reduction") -> None:
    """Raise ``ValueError`` unless ``reduction`` is one of :data:`REDUCTIONS` (``where``: the field)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{where} must be one of {list(REDUCTIONS)}, got {reduction!r}")


def mean_logprob(logp: Tensor, n_tokens: Tensor, reduction: str) -> Tensor:
    """Mean of the answers' log-probabilities over the facts (``"fact"``) or over their tokens
    (``"token"``: ``sum(logp) / sum(n_tokens)``); 0 without answers."""
    check_reduction(reduction)
    if not logp.numel():
        return logp.new_zeros(())
    return logp.mean() if reduction == "fact" else logp.sum() / n_tokens.sum()


def check_retain_loss(retain_loss: Any, *, where: str = "retain_loss") -> None:
    """Raise ``ValueError`` unless ``retain_loss`` is one of :data:`RETAIN_LOSSES`."""
    if retain_loss not in RETAIN_LOSSES:
        raise ValueError(f"{where} must be one of {list(RETAIN_LOSSES)}, got {retain_loss!r}")


def retain_loss(lp: BatchLogprobs, reduction: str = "fact") -> Tensor:
    """The retain cross-entropy ``-mean(log p(answer))`` over the retain facts or tokens
    (:func:`mean_logprob`); 0 without retain facts. With one-token answers both are equal."""
    return -mean_logprob(lp.retain, lp.retain_tokens, reduction)


def _key(it: FormattedPrompt) -> tuple[str, str]:
    return it.prompt, it.answer


@dataclass(frozen=True)
class RetainKL:
    """The KL retain term: ``KL(p_original || p_model)`` of the next-token distributions at the
    positions that predict each retain answer's tokens (answers teacher-forced).

    Where the cross-entropy retain term only asks the retain answers to stay likely, the KL
    term asks the whole next-token distribution there to stay the original's (open-unlearning's
    ``retain_loss_type: KL`` of GradDiff, NPO and SimNPO; with gradient ascent, TOFU's "KL"
    baseline). The original's log-probability rows are computed once, by :meth:`prepare` on the
    model before training, and kept on the CPU: no second model. open-unlearning takes the KL
    at every position of the retain question and answer (padding included, averaged over rows);
    factlens at the answer positions only, since its fact prompts share long few-shot prefixes
    whose distributions the mask rarely moves and whose rows would cost ``d_vocab`` floats each.

    Attributes:
        reference: ``(prompt, answer)`` -> the original's rows ``[answer tokens, d_vocab]``.
        reduction: ``"fact"`` (each fact's KL summed over its answer tokens, averaged over the
            facts) or ``"token"`` (averaged over the answer tokens): :func:`factlens.editing.losses.answer_kl`.
    """

    reference: Mapping[tuple[str, str], Tensor]
    reduction: str = "fact"

    @classmethod
    def prepare(cls, model, retain_items: Sequence[FormattedPrompt], *, reduction: str = "fact",
                cache_bytes: int | None = None, batch: int = 16) -> "RetainKL":
        """The original model's rows for every retain item (``model`` as it is before training).

        Raises:
            ValueError: The rows would take more than ``cache_bytes`` (default
                :data:`RETAIN_KL_CACHE_BYTES`); checked from the answers' token counts first.
        """
        check_reduction(reduction, where="RetainKL.reduction")
        items = list(dict.fromkeys(_key(it) for it in retain_items))
        check_retain_kl_size(model, retain_items, cache_bytes=cache_bytes)
        ref: dict[tuple[str, str], Tensor] = {}
        with torch.no_grad():
            for i in range(0, len(items), batch):
                chunk = items[i:i + batch]
                _, n_tok, rows = answer_logprobs_and_rows(model, [p for p, _ in chunk], [a for _, a in chunk],
                                                          rows_from=0)
                for key, piece in zip(chunk, torch.split(rows.float().cpu(), [int(n) for n in n_tok.tolist()])):
                    ref[key] = piece.clone()
        return cls(MappingProxyType(ref), reduction)

    def loss(self, lp: BatchLogprobs, retain_batch: Sequence[FormattedPrompt]) -> Tensor:
        """The KL term of one micro-batch (``lp`` from :func:`batch_logprobs` with ``retain_rows=True``);
        0 without retain facts."""
        if not len(retain_batch):
            return lp.forget.new_zeros(())
        if lp.retain_rows is None:
            raise ValueError("RetainKL.loss needs the retain rows: batch_logprobs(..., retain_rows=True)")
        try:
            ref = torch.cat([self.reference[_key(it)] for it in retain_batch])
        except KeyError as e:
            raise ValueError(f"retain_loss='kl' has no reference distribution for retain prompt {e.args[0]!r}: "
                             "build the objective with prepare() on the same retain prompts") from None
        return answer_kl(lp.retain_rows, ref, lp.retain_tokens, self.reduction)


def check_retain_kl_size(model, retain_items: Sequence[FormattedPrompt], *, cache_bytes: int | None = None) -> int:
    """The bytes :meth:`RetainKL.prepare` keeps for ``retain_items`` (one float32 row of ``d_vocab``
    per answer token of each distinct prompt and answer), counted from the answers' tokens alone.

    Raises:
        ValueError: Above ``cache_bytes`` (default :data:`RETAIN_KL_CACHE_BYTES`), with the numbers.
    """
    from factlens.tokens import answer_token_ids

    items = list(dict.fromkeys(_key(it) for it in retain_items))
    limit = RETAIN_KL_CACHE_BYTES if cache_bytes is None else cache_bytes
    n_rows = sum(len(answer_token_ids(model, a)) for _, a in items)
    need = n_rows * int(model.cfg.d_vocab) * 4
    if need > limit:
        raise ValueError(f"retain_loss='kl' keeps the original model's next-token distribution at each retain "
                         f"answer token: {len(items)} retain facts, {n_rows} answer tokens x {model.cfg.d_vocab} "
                         f"= {need / 2**20:.0f} MiB, above the {limit / 2**20:.0f} MiB limit; use fewer retain "
                         "facts (the task's retain set), or retain_loss='nll'")
    return need


def prepare_retain_kl(model, retain_items: Sequence[FormattedPrompt], config, retain_loss: str,
                      reduction: str) -> RetainKL | None:
    """The prepared :class:`RetainKL` when ``retain_loss == "kl"`` and it can matter (``config.l_retain != 0``
    and retain facts); otherwise ``None`` (the cross-entropy retain term, or none)."""
    if retain_loss != "kl" or config.l_retain == 0 or not len(retain_items):
        return None
    return RetainKL.prepare(model, retain_items, reduction=reduction)


def retain_term(lp: BatchLogprobs, retain_batch: Sequence[FormattedPrompt], kl: RetainKL | None,
                reduction: str) -> Tensor:
    """The retain term of one micro-batch: the cross-entropy (:func:`retain_loss`) or ``kl``'s KL term."""
    return retain_loss(lp, reduction) if kl is None else kl.loss(lp, retain_batch)
