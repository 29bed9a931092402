"""The interface of a training objective and the log-probability helper the baselines share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from torch import Tensor

from factlens.data.formats import FormattedPrompt
from factlens.editing.losses import answer_logprobs_and_lengths

__all__ = ["TrainingObjective", "answer_logprobs", "BatchLogprobs", "batch_logprobs", "retain_loss", "REDUCTIONS"]

#: What a mean over answers is over: ``"fact"`` (each answer's log-probability summed over its
#: tokens, averaged over the facts) or ``"token"`` (averaged over all answer tokens of the
#: micro-batch, as a Hugging Face model's loss and so open-unlearning's NLL terms).
REDUCTIONS: tuple[str, ...] = ("fact", "token")


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


def batch_logprobs(model, forget_batch: Sequence[FormattedPrompt], retain_batch: Sequence[FormattedPrompt]
                   ) -> BatchLogprobs:
    """:class:`BatchLogprobs` of both batches, from one forward pass."""
    items = list(forget_batch) + list(retain_batch)
    logp, n_tok = answer_logprobs_and_lengths(model, [it.prompt for it in items], [it.answer for it in items])
    nf = len(forget_batch)
    return BatchLogprobs(logp[:nf], n_tok[:nf], logp[nf:], n_tok[nf:])


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


def retain_loss(lp: BatchLogprobs, reduction: str = "fact") -> Tensor:
    """The retain cross-entropy ``-mean(log p(answer))`` over the retain facts or tokens
    (:func:`mean_logprob`); 0 without retain facts. With one-token answers both are equal."""
    return -mean_logprob(lp.retain, lp.retain_tokens, reduction)
