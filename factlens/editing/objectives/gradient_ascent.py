"""Gradient ascent (GA) and gradient difference (GradDiff) unlearning.

GA maximizes the cross-entropy of the forget answers, i.e. minimizes ``mean(log p(answer))``
(:func:`factlens.editing.losses.gradient_ascent_loss`); it has no retain term and is unbounded
below. GradDiff (gradient difference, the ``GradDiff`` baseline of TOFU, Maini et al. 2024,
and of open-unlearning) adds cross-entropy on the retain facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor

from factlens.data.formats import FormattedPrompt
from factlens.editing.losses import gradient_ascent_loss
from factlens.editing.objectives.base import TrainingObjective, answer_logprobs, retain_cross_entropy

__all__ = ["GradientAscentObjective", "GradDiffObjective"]


@dataclass(frozen=True)
class GradientAscentObjective(TrainingObjective):
    """``L_forget = mean(log p(answer))``; no retain term (its registry entry has ``uses_retain=False``)."""

    def losses(self, model, forget_batch: Sequence[FormattedPrompt],
               retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, Tensor]:
        logp_f, _, _ = answer_logprobs(model, forget_batch, [])
        return gradient_ascent_loss(logp_f), logp_f.new_zeros(())


@dataclass(frozen=True)
class GradDiffObjective(TrainingObjective):
    """``L_forget = mean(log p(answer))`` on the forget facts, ``L_retain = -mean(log p(answer))`` on the retain facts."""

    def losses(self, model, forget_batch: Sequence[FormattedPrompt],
               retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, Tensor]:
        logp_f, _, logp_r = answer_logprobs(model, forget_batch, retain_batch)
        return gradient_ascent_loss(logp_f), retain_cross_entropy(logp_r)
