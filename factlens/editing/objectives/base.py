"""The interface of a training objective and the log-probability helper the baselines share."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from factlens.data.formats import FormattedPrompt
from factlens.editing.losses import answer_logprobs_and_lengths

__all__ = ["TrainingObjective", "answer_logprobs"]


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
    items = list(forget_batch) + list(retain_batch)
    logp, n_tok = answer_logprobs_and_lengths(model, [it.prompt for it in items], [it.answer for it in items])
    nf = len(forget_batch)
    return logp[:nf], n_tok[:nf], logp[nf:]


def retain_cross_entropy(logp_retain: Tensor) -> Tensor:
    """``-mean(log p(answer))`` of the retain facts; 0 without retain facts."""
    return -logp_retain.mean() if logp_retain.numel() else logp_retain.new_zeros(())
